// The kernels behind extra_ops.cpp; see extra.cuh for what each computes.
#include <cuda_fp16.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/extra.cuh"

namespace troupe::kernels::cuda {
namespace {

/// Calls f(W{}) with W the unsigned word of `bytes` bytes.
template <class F>
status with_word(size_t bytes, F&& f) {
  switch (bytes) {
    case 1:
      return f(uint8_t{});
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    case 8:
      return f(uint64_t{});
    default:
      return unsupported(std::to_string(bytes) + "-byte elements");
  }
}

/// Calls f(T{}) with T the device type of a float dtype (f32, f16).
template <class F>
status with_float(dtype t, F&& f) {
  switch (t) {
    case dtype::f32:
      return f(float{});
    case dtype::f16:
      return f(__half{});
    default:
      return unsupported("dtype " + std::string(dtype_name(t)));
  }
}

/// f32 f16 i32 i64.
template <class F>
status with_numeric(dtype t, F&& f) {
  switch (t) {
    case dtype::f32:
      return f(float{});
    case dtype::f16:
      return f(__half{});
    case dtype::i32:
      return f(int32_t{});
    case dtype::i64:
      return f(int64_t{});
    default:
      return unsupported("dtype " + std::string(dtype_name(t)));
  }
}

template <class T>
using acc_t = typename compute_of<T>::type;

// ---- Resize ------------------------------------------------------------------------------------

template <class W>
__global__ void resize_nearest_kernel(const W* x, W* y, resize_device_plan p, int64_t n) {
  W extrap;
  memcpy(&extrap, &p.extrapolation_bytes, sizeof(W));
  TROUPE_GRID_LOOP(i, n) {
    const int64_t b = i / p.out_plane;
    int64_t rest = i - b * p.out_plane;
    int64_t off = b * p.in_plane;
    bool outside = false;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t c = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      off += p.offsets[p.table[d] + c];
      if (p.any_outside) outside |= p.outside[p.outside_at[d] + c] != 0;
    }
    y[i] = outside ? extrap : x[off];
  }
}

template <class T>
__global__ void resize_interp_kernel(const T* x, T* y, resize_device_plan p, int64_t n) {
  TROUPE_GRID_LOOP(i, n) {
    const int64_t b = i / p.out_plane;
    int64_t rest = i - b * p.out_plane;
    int64_t coord[kMaxExtraRank];
    bool outside = false;
    int64_t combos = 1;
    for (int d = p.rank - 1; d >= 0; --d) {
      coord[d] = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      if (p.any_outside) outside |= p.outside[p.outside_at[d] + coord[d]] != 0;
      combos *= p.k[d];
    }
    if (outside) {
      store(y, i, p.extrapolation);
      continue;
    }
    const T* plane = x + b * p.in_plane;
    float acc = 0.0f;
    for (int64_t c = 0; c < combos; ++c) {
      int64_t t = c;
      float w = 1.0f;
      int64_t off = 0;
      for (int d = p.rank - 1; d >= 0; --d) {
        const int64_t tap = t % p.k[d];
        t /= p.k[d];
        const int64_t e = p.table[d] + coord[d] * p.k[d] + tap;
        w *= p.weights[e];
        off += p.offsets[e];
      }
      if (w != 0.0f) acc += w * static_cast<float>(load(plane, off));
    }
    store(y, i, acc);
  }
}

// ---- ArgMax / ArgMin / Hardmax -----------------------------------------------------------------

template <class V>
__device__ __forceinline__ bool is_nan_value(V v) {
  return v != v;
}

/// The CPU scan: v replaces best when strictly better (or equal with select_last).
template <bool IsMax, class V>
__device__ __forceinline__ bool arg_better(V v, V best, bool last) {
  if (last) return IsMax ? v >= best : v <= best;
  return IsMax ? v > best : v < best;
}

template <class T, bool IsMax>
__global__ void arg_reduce_strided_kernel(const T* x, int64_t* y, int64_t outer, int64_t n,
                                          int64_t inner, bool last) {
  TROUPE_GRID_LOOP(i, outer * inner) {
    const int64_t o = i / inner, c = i - o * inner;
    const T* base = x + o * n * inner + c;
    auto best = load(base, 0);
    int64_t at = 0;
    for (int64_t a = 1; a < n; ++a) {
      const auto v = load(base, a * inner);
      if (arg_better<IsMax>(v, best, last)) {
        best = v;
        at = a;
      }
    }
    y[i] = at;
  }
}

/// One warp per row (inner == 1): each lane scans a strided part of the row with the CPU's rule,
/// then lanes combine by (value, index) with the same tie rule. NaNs never replace a best, so a
/// row whose first element is NaN answers 0 and other NaNs are skipped.
template <class T, bool IsMax>
__global__ void arg_reduce_rows_kernel(const T* x, int64_t* y, int64_t rows, int64_t n, bool last) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
       r < rows; r += warps) {
    const T* row = x + r * n;
    using V = acc_t<T>;
    const V first = load(row, 0);
    if (is_nan_value(first)) {
      if (lane == 0) y[r] = 0;
      continue;
    }
    bool have = false;
    V best = first;
    int64_t at = -1;
    for (int64_t a = lane; a < n; a += 32) {
      const V v = load(row, a);
      if (is_nan_value(v)) continue;
      if (!have || arg_better<IsMax>(v, best, last)) {
        best = v;
        at = a;
        have = true;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const V ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int64_t oa = __shfl_xor_sync(0xffffffffu, at, o);
      if (oa < 0) continue;
      if (at < 0) {
        best = ob;
        at = oa;
        continue;
      }
      const bool other_wins = IsMax ? ob > best : ob < best;
      if (other_wins || (ob == best && (last ? oa > at : oa < at))) {
        best = ob;
        at = oa;
      }
    }
    if (lane == 0) y[r] = at;
  }
}

template <class T>
__global__ void one_hot_rows_kernel(const int64_t* index, T* y, int64_t outer, int64_t n,
                                    int64_t inner) {
  TROUPE_GRID_LOOP(i, outer * n * inner) {
    const int64_t c = i % inner;
    const int64_t rest = i / inner;
    const int64_t a = rest % n;
    const int64_t o = rest / n;
    store(y, i, index[o * inner + c] == a ? 1.0f : 0.0f);
  }
}

// ---- TopK --------------------------------------------------------------------------------------

/// The order of TopK: a before b. Invalid entries (index < 0, padding) come last; NaN ranks above
/// every number and equals NaN; ties go to the lower index.
template <class V>
__device__ __forceinline__ bool topk_before(V va, int64_t ia, V vb, int64_t ib, bool largest) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  const bool na = is_nan_value(va), nb = is_nan_value(vb);
  bool a_greater, b_greater;
  if (na || nb) {
    a_greater = na && !nb;
    b_greater = nb && !na;
  } else {
    a_greater = va > vb;
    b_greater = vb > va;
  }
  if (largest ? a_greater : b_greater) return true;
  if (largest ? b_greater : a_greater) return false;
  return ia < ib;
}

/// One block per (slice, chunk): the chunk's entries sorted in shared memory (bitonic, `chunk` a
/// power of two), the first `keep` written out. Sources: the input at stride `inner` (from_input)
/// or the previous round's candidates, `src_count` per slice. Destinations: candidates
/// (`keep` per chunk, chunks_out per slice) or, in the last round, the outputs at stride inner.
template <class T>
__global__ void topk_round_kernel(const T* x, const T* src_v, const int64_t* src_i,
                                  int64_t src_count, bool from_input, int64_t outer, int64_t inner,
                                  int64_t chunk, int64_t keep, bool largest, T* dst_v,
                                  int64_t* dst_i, bool to_output, int64_t k, int64_t slices) {
  using V = acc_t<T>;
  extern __shared__ unsigned char smem[];
  V* sv = reinterpret_cast<V*>(smem);
  int64_t* si = reinterpret_cast<int64_t*>(smem + ((chunk * sizeof(V) + 7) / 8) * 8);
  const int64_t chunk_id = blockIdx.x;
  const int64_t begin = chunk_id * chunk;
  for (int64_t slice = blockIdx.y; slice < slices; slice += gridDim.y) {
    const int64_t o = slice / inner, c = slice - o * inner;
    for (int64_t j = threadIdx.x; j < chunk; j += blockDim.x) {
      const int64_t pos = begin + j;
      if (pos < src_count) {
        if (from_input) {
          sv[j] = load(x, (o * src_count + pos) * inner + c);
          si[j] = pos;
        } else {
          sv[j] = load(src_v, slice * src_count + pos);
          si[j] = src_i[slice * src_count + pos];
        }
      } else {
        sv[j] = V{};
        si[j] = -1;
      }
    }
    __syncthreads();
    for (int64_t size = 2; size <= chunk; size <<= 1) {
      for (int64_t stride = size / 2; stride > 0; stride >>= 1) {
        for (int64_t j = threadIdx.x; j < chunk; j += blockDim.x) {
          const int64_t partner = j ^ stride;
          if (partner > j) {
            const bool forward = (j & size) == 0;
            const bool swap = forward
                                  ? topk_before(sv[partner], si[partner], sv[j], si[j], largest)
                                  : topk_before(sv[j], si[j], sv[partner], si[partner], largest);
            if (swap) {
              const V tv = sv[j];
              sv[j] = sv[partner];
              sv[partner] = tv;
              const int64_t ti = si[j];
              si[j] = si[partner];
              si[partner] = ti;
            }
          }
        }
        __syncthreads();
      }
    }
    for (int64_t j = threadIdx.x; j < keep; j += blockDim.x) {
      if (to_output) {
        const int64_t at = (o * k + j) * inner + c;
        store(dst_v, at, sv[j]);
        dst_i[at] = si[j];
      } else {
        const int64_t at = slice * (gridDim.x * keep) + chunk_id * keep + j;
        store(dst_v, at, sv[j]);
        dst_i[at] = si[j];
      }
    }
    __syncthreads();  // the next slice refills the shared arrays
  }
}

constexpr int64_t kTopKChunk = 2048;

int64_t pow2_at_least(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

/// Candidate counts per slice after each intermediate round (not the last).
template <class F>
void topk_rounds(const topk_plan& p, F&& each_round) {
  int64_t count = p.n;
  bool first = true;
  while (true) {
    const int64_t chunk =
        count <= kTopKChunk ? pow2_at_least(std::max<int64_t>(count, 2)) : kTopKChunk;
    const int64_t chunks = (count + chunk - 1) / chunk;
    const bool last = chunks == 1;
    each_round(count, chunk, chunks, first, last);
    if (last) break;
    count = chunks * p.k;
    first = false;
  }
}

template <class T>
status run_topk(const topk_plan& p, const void* x, void* values, int64_t* indices, void* ws,
                cudaStream_t s) {
  const int64_t slices = p.outer * p.inner;
  // Candidate buffers: values then indices, ping-pong; sized for the first round's output.
  int64_t max_candidates = 0;
  topk_rounds(p, [&](int64_t, int64_t, int64_t chunks, bool, bool last) {
    if (!last) max_candidates = std::max(max_candidates, chunks * p.k);
  });
  auto* base = static_cast<unsigned char*>(ws);
  const size_t v_bytes =
      (static_cast<size_t>(slices * max_candidates) * sizeof(T) + 255) / 256 * 256;
  const size_t i_bytes = static_cast<size_t>(slices * max_candidates) * sizeof(int64_t);
  T* buf_v[2] = {reinterpret_cast<T*>(base), reinterpret_cast<T*>(base + v_bytes + i_bytes)};
  int64_t* buf_i[2] = {reinterpret_cast<int64_t*>(base + v_bytes),
                       reinterpret_cast<int64_t*>(base + 2 * v_bytes + i_bytes)};
  int which = 0;
  status st = status::ok();
  topk_rounds(p, [&](int64_t count, int64_t chunk, int64_t chunks, bool first, bool last) {
    if (!st.is_ok()) return;
    using V = acc_t<T>;
    const size_t smem = ((static_cast<size_t>(chunk) * sizeof(V) + 7) / 8) * 8 +
                        static_cast<size_t>(chunk) * sizeof(int64_t);
    const int threads = static_cast<int>(std::min<int64_t>(512, std::max<int64_t>(32, chunk / 2)));
    const dim3 grid(static_cast<unsigned>(chunks),
                    static_cast<unsigned>(std::min<int64_t>(slices, 65535)));
    const T* src_v = first ? nullptr : buf_v[which];
    const int64_t* src_i = first ? nullptr : buf_i[which];
    T* dst_v = last ? static_cast<T*>(values) : buf_v[first ? 0 : 1 - which];
    int64_t* dst_i = last ? indices : buf_i[first ? 0 : 1 - which];
    const int64_t keep = std::min(p.k, chunk);
    topk_round_kernel<T><<<grid, threads, smem, s>>>(static_cast<const T*>(x), src_v, src_i, count,
                                                     first, p.outer, p.inner, chunk, keep,
                                                     p.largest, dst_v, dst_i, last, p.k, slices);
    st = TROUPE_CUDA_STATUS(cudaGetLastError());
    if (!first) which = 1 - which;
  });
  return st;
}

// ---- Tile, Sum/Mean, Mod -----------------------------------------------------------------------

template <class W>
__global__ void tile_kernel(const W* x, W* y, tile_plan p) {
  TROUPE_GRID_LOOP(i, p.out_elements) {
    int64_t rest = i, off = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t c = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      off += (c % p.in_dims[d]) * p.in_strides[d];
    }
    y[i] = x[off];
  }
}

struct nary_pointers {
  const void* x[kMaxNaryInputs];
};

template <class T>
__global__ void sum_kernel(nary_pointers ptrs, T* y, nary_plan p, bool accumulate, float scale) {
  using A = acc_t<T>;
  TROUPE_GRID_LOOP(i, p.out_elements) {
    int64_t off[kMaxNaryInputs] = {};
    int64_t rest = i;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t c = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      for (int k = 0; k < p.inputs; ++k) off[k] += c * p.strides[k][d];
    }
    A acc = accumulate ? load(y, i) : A{};
    for (int k = 0; k < p.inputs; ++k) acc += load(static_cast<const T*>(ptrs.x[k]), off[k]);
    if (scale != 1.0f) {
      if constexpr (std::is_same_v<A, float>) acc *= scale;
    }
    store(y, i, acc);
  }
}

template <class A>
__device__ __forceinline__ A mod_value(A a, A b, bool c_style) {
  if constexpr (std::is_same_v<A, float>) {
    float r = fmodf(a, b);
    if (!c_style && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  } else {
    if (b == 0 || b == -1) return 0;
    A r = a % b;
    if (!c_style && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
}

template <class T>
__global__ void mod_kernel(const T* a, const T* b, T* y, nary_plan p, bool c_style) {
  TROUPE_GRID_LOOP(i, p.out_elements) {
    int64_t oa = 0, ob = 0, rest = i;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t c = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      oa += c * p.strides[0][d];
      ob += c * p.strides[1][d];
    }
    store(y, i, mod_value(load(a, oa), load(b, ob), c_style));
  }
}

// ---- unaries -----------------------------------------------------------------------------------

template <class T>
__global__ void extra_unary_kernel(extra_unary op, const T* x, T* y, int64_t n) {
  TROUPE_GRID_LOOP(i, n) {
    const float v = static_cast<float>(load(x, i));
    float r = 0;
    switch (op) {
      case extra_unary::acos:
        r = acosf(v);
        break;
      case extra_unary::acosh:
        r = acoshf(v);
        break;
      case extra_unary::asin:
        r = asinf(v);
        break;
      case extra_unary::asinh:
        r = asinhf(v);
        break;
      case extra_unary::atan:
        r = atanf(v);
        break;
      case extra_unary::atanh:
        r = atanhf(v);
        break;
      case extra_unary::cosh:
        r = coshf(v);
        break;
      case extra_unary::sinh:
        r = sinhf(v);
        break;
      case extra_unary::tan:
        r = tanf(v);
        break;
    }
    store(y, i, r);
  }
}

template <class T>
__global__ void float_class_kernel(const T* x, uint8_t* y, int64_t n, bool is_nan, bool pos,
                                   bool neg) {
  TROUPE_GRID_LOOP(i, n) {
    const float v = static_cast<float>(load(x, i));
    if (is_nan) {
      y[i] = v != v ? 1 : 0;
    } else {
      y[i] = ((pos && v == INFINITY) || (neg && v == -INFINITY)) ? 1 : 0;
    }
  }
}

// ---- normalisations and CumSum -----------------------------------------------------------------

/// Sum over the block (any multiple of 32 threads up to 1024); every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float total = 0;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

template <class T>
__global__ void instance_norm_kernel(const T* x, const T* scale, const T* bias, T* y,
                                     int64_t planes, int64_t channels, int64_t inner,
                                     float epsilon) {
  __shared__ float scratch[32];
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
    const T* xp = x + p * inner;
    T* yp = y + p * inner;
    float s = 0;
    for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) s += static_cast<float>(load(xp, i));
    const float mean = block_sum(s, scratch) / static_cast<float>(inner);
    float sq = 0;
    for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
      const float d = static_cast<float>(load(xp, i)) - mean;
      sq += d * d;
    }
    const float var = block_sum(sq, scratch) / static_cast<float>(inner);
    const int64_t c = p % channels;
    const float a = static_cast<float>(load(scale, c)) / sqrtf(var + epsilon);
    const float b = static_cast<float>(load(bias, c)) - mean * a;
    for (int64_t i = threadIdx.x; i < inner; i += blockDim.x)
      store(yp, i, static_cast<float>(load(xp, i)) * a + b);
  }
}

template <class T>
__global__ void lp_norm_kernel(const T* x, T* y, int64_t outer, int64_t len, int64_t inner, int p) {
  TROUPE_GRID_LOOP(o, outer * inner) {
    const int64_t base = (o / inner) * len * inner + o % inner;
    float norm = 0;
    for (int64_t j = 0; j < len; ++j) {
      const float v = static_cast<float>(load(x, base + j * inner));
      norm += p == 1 ? fabsf(v) : v * v;
    }
    if (p == 2) norm = sqrtf(norm);
    const float inv = 1.0f / norm;
    for (int64_t j = 0; j < len; ++j)
      store(y, base + j * inner, static_cast<float>(load(x, base + j * inner)) * inv);
  }
}

template <class T>
__global__ void cumsum_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner,
                              bool exclusive, bool reverse) {
  using A = acc_t<T>;
  TROUPE_GRID_LOOP(i, outer * inner) {
    const int64_t o = i / inner, c = i - o * inner;
    A acc{};
    for (int64_t s = 0; s < n; ++s) {
      const int64_t a = reverse ? n - 1 - s : s;
      const int64_t off = (o * n + a) * inner + c;
      const A v = load(x, off);  // read first: y may alias x
      if (exclusive) {
        store(y, off, acc);
        acc = acc + v;
      } else {
        acc = acc + v;
        store(y, off, acc);
      }
    }
  }
}

// ---- index ops ---------------------------------------------------------------------------------

/// The data offset (axis term left out) of index element p, and the index value normalised, or
/// -1 when it is out of range.
template <class I>
__device__ __forceinline__ int64_t element_target(const element_index_plan& p, const I* idx,
                                                  int64_t i) {
  int64_t rest = i, off = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    const int64_t c = rest % p.idx_dims[d];
    rest /= p.idx_dims[d];
    if (d != p.axis) off += c * p.data_strides[d];
  }
  int64_t v = static_cast<int64_t>(idx[i]);
  if (v < 0) v += p.axis_dim;
  if (v < 0 || v >= p.axis_dim) return -1;
  return off + v * p.data_strides[p.axis];
}

template <class W, class I>
__global__ void gather_elements_kernel(const W* data, const I* idx, W* y, element_index_plan p,
                                       uint32_t* fault_word, uint32_t fault) {
  TROUPE_GRID_LOOP(i, p.count) {
    const int64_t t = element_target(p, idx, i);
    if (t < 0) {
      y[i] = W{};
      atomicOr(fault_word, fault);
    } else {
      y[i] = data[t];
    }
  }
}

/// Atomic read-modify-write of one element with a reduction, through compare-and-swap on its
/// word (float and the integers; f16 is refused by the factory).
template <class T>
__device__ T reduce_value(T a, T b, scatter_reduction red) {
  switch (red) {
    case scatter_reduction::add:
      return a + b;
    case scatter_reduction::mul:
      return a * b;
    case scatter_reduction::max:
      return a > b ? a : b;
    case scatter_reduction::min:
      return a < b ? a : b;
    default:
      return b;
  }
}

template <class T>
__device__ void atomic_reduce(T* addr, T v, scatter_reduction red) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  using U = std::conditional_t<sizeof(T) == 4, unsigned int, unsigned long long>;
  U* word_addr = reinterpret_cast<U*>(addr);
  U old = *word_addr, assumed;
  do {
    assumed = old;
    T cur;
    memcpy(&cur, &assumed, sizeof(T));
    const T next = reduce_value(cur, v, red);
    U next_bits;
    memcpy(&next_bits, &next, sizeof(T));
    old = atomicCAS(word_addr, assumed, next_bits);
  } while (old != assumed);
}

template <class I>
__global__ void scatter_elements_claim_kernel(const I* idx, element_index_plan p, int64_t* winner,
                                              uint32_t* fault_word, uint32_t fault) {
  TROUPE_GRID_LOOP(i, p.count) {
    const int64_t t = element_target(p, idx, i);
    if (t < 0) {
      atomicOr(fault_word, fault);
    } else if (winner) {
      atomicMax(reinterpret_cast<long long*>(winner + t), static_cast<long long>(i));
    }
  }
}

template <class T, class I>
__global__ void scatter_elements_kernel(const I* idx, const T* upd, T* y, element_index_plan p,
                                        scatter_reduction red, const int64_t* winner) {
  TROUPE_GRID_LOOP(i, p.count) {
    const int64_t t = element_target(p, idx, i);
    if (t < 0) continue;
    if (red == scatter_reduction::none) {
      if (winner[t] == i) y[t] = upd[i];
    } else {
      if constexpr (sizeof(T) == 4 || sizeof(T) == 8) atomic_reduce(y + t, upd[i], red);
    }
  }
}

/// The element offset of tuple t's slice, or -1 when a component is out of range.
__device__ __forceinline__ int64_t nd_target(const nd_index_plan& p, const int64_t* idx,
                                             int64_t t) {
  int64_t off = (t / p.per_batch) * p.batch_stride;
  for (int j = 0; j < p.k; ++j) {
    int64_t v = idx[t * p.k + j];
    if (v < 0) v += p.dims[j];
    if (v < 0 || v >= p.dims[j]) return -1;
    off += v * p.dim_strides[j];
  }
  return off;
}

template <class W>
__global__ void gather_nd_kernel(const W* data, const int64_t* idx, W* y, nd_index_plan p,
                                 uint32_t* fault_word, uint32_t fault) {
  TROUPE_GRID_LOOP(i, p.tuples * p.slice) {
    const int64_t t = i / p.slice, w = i - t * p.slice;
    const int64_t off = nd_target(p, idx, t);
    if (off < 0) {
      y[i] = W{};
      if (w == 0) atomicOr(fault_word, fault);
    } else {
      y[i] = data[off + w];
    }
  }
}

__global__ void scatter_nd_claim_kernel(const int64_t* idx, nd_index_plan p, int64_t* winner,
                                        uint32_t* fault_word, uint32_t fault) {
  TROUPE_GRID_LOOP(t, p.tuples) {
    const int64_t off = nd_target(p, idx, t);
    if (off < 0) {
      atomicOr(fault_word, fault);
    } else if (winner) {
      atomicMax(reinterpret_cast<long long*>(winner + off / p.slice), static_cast<long long>(t));
    }
  }
}

template <class T>
__global__ void scatter_nd_kernel(const int64_t* idx, const T* upd, T* y, nd_index_plan p,
                                  scatter_reduction red, const int64_t* winner) {
  TROUPE_GRID_LOOP(i, p.tuples * p.slice) {
    const int64_t t = i / p.slice, w = i - t * p.slice;
    const int64_t off = nd_target(p, idx, t);
    if (off < 0) continue;
    if (red == scatter_reduction::none) {
      if (winner[off / p.slice] == t) y[off + w] = upd[i];
    } else {
      if constexpr (sizeof(T) == 4 || sizeof(T) == 8) atomic_reduce(y + off + w, upd[i], red);
    }
  }
}

template <class I>
__device__ __forceinline__ int64_t one_hot_index(const I* idx, int64_t p) {
  if constexpr (std::is_integral_v<I>) {
    return static_cast<int64_t>(idx[p]);
  } else {
    const float v = static_cast<float>(load(idx, p));
    if (!(fabsf(v) < 9.0e15f)) return INT64_MIN;  // matches no depth: an all-off row
    return static_cast<int64_t>(v);
  }
}

template <class W, class I>
__global__ void one_hot_kernel(const I* idx, const W* values, W* y, int64_t outer, int64_t depth,
                               int64_t inner) {
  const W off_value = values[0], on_value = values[1];
  TROUPE_GRID_LOOP(i, outer * depth * inner) {
    const int64_t c = i % inner;
    const int64_t rest = i / inner;
    const int64_t d = rest % depth;
    const int64_t o = rest / depth;
    int64_t v = one_hot_index(idx, o * inner + c);
    bool on = v >= -depth && v < depth;
    if (v < 0) v += depth;
    on = on && v == d;
    y[i] = on ? on_value : off_value;
  }
}

// ---- fills -------------------------------------------------------------------------------------

template <class T>
__global__ void range_kernel(T start, T delta, T* y, int64_t n) {
  TROUPE_GRID_LOOP(i, n) {
    if constexpr (std::is_same_v<T, float>) {
      y[i] = __fadd_rn(start, __fmul_rn(static_cast<float>(i), delta));
    } else {
      y[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    }
  }
}

template <class W>
__global__ void fill_kernel(W v, W* y, int64_t n) {
  TROUPE_GRID_LOOP(i, n) {
    y[i] = v;
  }
}

}  // namespace

// ---- launchers ---------------------------------------------------------------------------------

status launch_resize(dtype t, const void* x, void* y, const resize_device_plan& p, void* stream) {
  const int64_t n = p.batch * p.out_plane;
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  if (!p.interpolate) {
    return with_word(dtype_size(t), [&](auto w) -> status {
      using W = decltype(w);
      resize_nearest_kernel<W><<<grid_for(n), kBlockThreads, 0, s>>>(static_cast<const W*>(x),
                                                                     static_cast<W*>(y), p, n);
      TROUPE_CUDA_LAUNCH_CHECK();
      return status::ok();
    });
  }
  return with_float(t, [&](auto z) -> status {
    using T = decltype(z);
    resize_interp_kernel<T>
        <<<grid_for(n), kBlockThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), p, n);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_arg_reduce(dtype t, bool is_max, bool select_last, const void* x, int64_t* y,
                         int64_t outer, int64_t n, int64_t inner, void* stream) {
  if (outer * inner == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  return with_numeric(t, [&](auto z) -> status {
    using T = decltype(z);
    const T* xt = static_cast<const T*>(x);
    const bool rows = inner == 1 && n >= 64;
    if (rows) {
      const int warps_per_block = kBlockThreads / 32;
      const unsigned grid = grid_for(outer, warps_per_block);
      if (is_max) {
        arg_reduce_rows_kernel<T, true>
            <<<grid, kBlockThreads, 0, s>>>(xt, y, outer, n, select_last);
      } else {
        arg_reduce_rows_kernel<T, false>
            <<<grid, kBlockThreads, 0, s>>>(xt, y, outer, n, select_last);
      }
    } else if (is_max) {
      arg_reduce_strided_kernel<T, true>
          <<<grid_for(outer * inner), kBlockThreads, 0, s>>>(xt, y, outer, n, inner, select_last);
    } else {
      arg_reduce_strided_kernel<T, false>
          <<<grid_for(outer * inner), kBlockThreads, 0, s>>>(xt, y, outer, n, inner, select_last);
    }
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_one_hot_rows(dtype t, const int64_t* index, void* y, int64_t outer, int64_t n,
                           int64_t inner, void* stream) {
  const int64_t total = outer * n * inner;
  if (total == 0) return status::ok();
  return with_float(t, [&](auto z) -> status {
    using T = decltype(z);
    one_hot_rows_kernel<T><<<grid_for(total), kBlockThreads, 0, to_stream(stream)>>>(
        index, static_cast<T*>(y), outer, n, inner);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

size_t topk_workspace_bytes(dtype t, const topk_plan& p) {
  if (p.k == 0 || p.outer * p.inner == 0) return 0;
  int64_t max_candidates = 0;
  topk_rounds(p, [&](int64_t, int64_t, int64_t chunks, bool, bool last) {
    if (!last) max_candidates = std::max(max_candidates, chunks * p.k);
  });
  if (max_candidates == 0) return 0;
  const size_t slices = static_cast<size_t>(p.outer * p.inner);
  const size_t v_bytes =
      (slices * static_cast<size_t>(max_candidates) * dtype_size(t) + 255) / 256 * 256;
  const size_t i_bytes = slices * static_cast<size_t>(max_candidates) * sizeof(int64_t);
  return 2 * (v_bytes + i_bytes);
}

status launch_topk(dtype t, const topk_plan& p, const void* x, void* values, int64_t* indices,
                   void* workspace, void* stream) {
  if (p.k == 0 || p.outer * p.inner == 0) return status::ok();
  if (p.k > kMaxTopK) return unsupported("TopK with k above 1024");
  if ((p.n + kTopKChunk - 1) / kTopKChunk > 65535) return unsupported("TopK over a too long axis");
  const cudaStream_t s = to_stream(stream);
  return with_numeric(t, [&](auto z) -> status {
    using T = decltype(z);
    return run_topk<T>(p, x, values, indices, workspace, s);
  });
}

status launch_tile(size_t element_bytes, const void* x, void* y, const tile_plan& p, void* stream) {
  if (p.out_elements == 0) return status::ok();
  return with_word(element_bytes, [&](auto w) -> status {
    using W = decltype(w);
    tile_kernel<W><<<grid_for(p.out_elements), kBlockThreads, 0, to_stream(stream)>>>(
        static_cast<const W*>(x), static_cast<W*>(y), p);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_sum(dtype t, const void* const* x, void* y, const nary_plan& p, bool accumulate,
                  float scale, void* stream) {
  if (p.out_elements == 0) return status::ok();
  if (p.inputs < 1 || p.inputs > kMaxNaryInputs) return internal_error("sum: bad operand count");
  nary_pointers ptrs{};
  for (int k = 0; k < p.inputs; ++k) ptrs.x[k] = x[k];
  return with_numeric(t, [&](auto z) -> status {
    using T = decltype(z);
    sum_kernel<T><<<grid_for(p.out_elements), kBlockThreads, 0, to_stream(stream)>>>(
        ptrs, static_cast<T*>(y), p, accumulate, scale);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_mod(dtype t, bool c_style, const void* a, const void* b, void* y, const nary_plan& p,
                  void* stream) {
  if (p.out_elements == 0) return status::ok();
  return with_numeric(t, [&](auto z) -> status {
    using T = decltype(z);
    mod_kernel<T><<<grid_for(p.out_elements), kBlockThreads, 0, to_stream(stream)>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), p, c_style);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_extra_unary(extra_unary op, dtype t, const void* x, void* y, int64_t n,
                          void* stream) {
  if (n == 0) return status::ok();
  return with_float(t, [&](auto z) -> status {
    using T = decltype(z);
    extra_unary_kernel<T><<<grid_for(n), kBlockThreads, 0, to_stream(stream)>>>(
        op, static_cast<const T*>(x), static_cast<T*>(y), n);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_float_class(dtype t, bool is_nan, bool detect_positive, bool detect_negative,
                          const void* x, uint8_t* y, int64_t n, void* stream) {
  if (n == 0) return status::ok();
  return with_float(t, [&](auto z) -> status {
    using T = decltype(z);
    float_class_kernel<T><<<grid_for(n), kBlockThreads, 0, to_stream(stream)>>>(
        static_cast<const T*>(x), y, n, is_nan, detect_positive, detect_negative);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_instance_norm(dtype t, const void* x, const void* scale, const void* bias, void* y,
                            int64_t planes, int64_t channels, int64_t inner, float epsilon,
                            void* stream) {
  if (planes * inner == 0) return status::ok();
  const int threads = inner >= 1024 ? 1024 : inner >= 256 ? 256 : 64;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(planes, 65535));
  return with_float(t, [&](auto z) -> status {
    using T = decltype(z);
    instance_norm_kernel<T><<<grid, threads, 0, to_stream(stream)>>>(
        static_cast<const T*>(x), static_cast<const T*>(scale), static_cast<const T*>(bias),
        static_cast<T*>(y), planes, channels, inner, epsilon);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_lp_norm(dtype t, const void* x, void* y, int64_t outer, int64_t len, int64_t inner,
                      int p, void* stream) {
  if (outer * len * inner == 0) return status::ok();
  return with_float(t, [&](auto z) -> status {
    using T = decltype(z);
    lp_norm_kernel<T><<<grid_for(outer * inner), kBlockThreads, 0, to_stream(stream)>>>(
        static_cast<const T*>(x), static_cast<T*>(y), outer, len, inner, p);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_cumsum(dtype t, const void* x, void* y, int64_t outer, int64_t n, int64_t inner,
                     bool exclusive, bool reverse, void* stream) {
  if (outer * n * inner == 0) return status::ok();
  return with_numeric(t, [&](auto z) -> status {
    using T = decltype(z);
    cumsum_kernel<T><<<grid_for(outer * inner), kBlockThreads, 0, to_stream(stream)>>>(
        static_cast<const T*>(x), static_cast<T*>(y), outer, n, inner, exclusive, reverse);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_gather_elements(size_t element_bytes, const void* data, const void* indices,
                              bool index_is_64, void* y, const element_index_plan& p,
                              uint32_t* fault_word, uint32_t fault, void* stream) {
  if (p.count == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  return with_word(element_bytes, [&](auto w) -> status {
    using W = decltype(w);
    if (index_is_64) {
      gather_elements_kernel<W, int64_t><<<grid_for(p.count), kBlockThreads, 0, s>>>(
          static_cast<const W*>(data), static_cast<const int64_t*>(indices), static_cast<W*>(y), p,
          fault_word, fault);
    } else {
      gather_elements_kernel<W, int32_t><<<grid_for(p.count), kBlockThreads, 0, s>>>(
          static_cast<const W*>(data), static_cast<const int32_t*>(indices), static_cast<W*>(y), p,
          fault_word, fault);
    }
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

namespace {

/// Calls f(T{}) with the arithmetic type of a reduction (f32 i32 i64) or, for none, the word.
template <class F>
status with_scatter_type(dtype t, scatter_reduction red, F&& f) {
  if (red == scatter_reduction::none) return with_word(dtype_size(t), f);
  switch (t) {
    case dtype::f32:
      return f(float{});
    case dtype::i32:
      return f(int32_t{});
    case dtype::i64:
      return f(int64_t{});
    default:
      return unsupported("scatter reduction on dtype " + std::string(dtype_name(t)));
  }
}

}  // namespace

status launch_scatter_elements(dtype t, const void* indices, bool index_is_64, const void* updates,
                               void* y, const element_index_plan& p, scatter_reduction red,
                               int64_t* winner, int64_t data_elements, uint32_t* fault_word,
                               uint32_t fault, void* stream) {
  if (p.count == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  const bool claim = red == scatter_reduction::none;
  if (claim) {
    TROUPE_CUDA_CHECK(cudaMemsetAsync(winner, 0xff, static_cast<size_t>(data_elements) * 8, s));
  }
  auto run = [&](auto idx_zero) -> status {
    using I = decltype(idx_zero);
    const I* idx = static_cast<const I*>(indices);
    scatter_elements_claim_kernel<I><<<grid_for(p.count), kBlockThreads, 0, s>>>(
        idx, p, claim ? winner : nullptr, fault_word, fault);
    TROUPE_CUDA_LAUNCH_CHECK();
    return with_scatter_type(t, red, [&](auto z) -> status {
      using T = decltype(z);
      scatter_elements_kernel<T, I><<<grid_for(p.count), kBlockThreads, 0, s>>>(
          idx, static_cast<const T*>(updates), static_cast<T*>(y), p, red, winner);
      TROUPE_CUDA_LAUNCH_CHECK();
      return status::ok();
    });
  };
  return index_is_64 ? run(int64_t{}) : run(int32_t{});
}

status launch_gather_nd(size_t element_bytes, const void* data, const int64_t* indices, void* y,
                        const nd_index_plan& p, uint32_t* fault_word, uint32_t fault,
                        void* stream) {
  const int64_t n = p.tuples * p.slice;
  if (n == 0) return status::ok();
  return with_word(element_bytes, [&](auto w) -> status {
    using W = decltype(w);
    gather_nd_kernel<W><<<grid_for(n), kBlockThreads, 0, to_stream(stream)>>>(
        static_cast<const W*>(data), indices, static_cast<W*>(y), p, fault_word, fault);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_scatter_nd(dtype t, const int64_t* indices, const void* updates, void* y,
                         const nd_index_plan& p, scatter_reduction red, int64_t* winner,
                         int64_t data_slices, uint32_t* fault_word, uint32_t fault, void* stream) {
  if (p.tuples == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  const bool claim = red == scatter_reduction::none;
  if (claim) {
    TROUPE_CUDA_CHECK(cudaMemsetAsync(winner, 0xff, static_cast<size_t>(data_slices) * 8, s));
  }
  // With empty slices there is nothing to write; the indices are still checked.
  scatter_nd_claim_kernel<<<grid_for(p.tuples), kBlockThreads, 0, s>>>(
      indices, p, claim && p.slice > 0 ? winner : nullptr, fault_word, fault);
  TROUPE_CUDA_LAUNCH_CHECK();
  const int64_t n = p.tuples * p.slice;
  if (n == 0) return status::ok();
  return with_scatter_type(t, red, [&](auto z) -> status {
    using T = decltype(z);
    scatter_nd_kernel<T><<<grid_for(n), kBlockThreads, 0, s>>>(
        indices, static_cast<const T*>(updates), static_cast<T*>(y), p, red, winner);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

status launch_one_hot(dtype index_type, const void* indices, const void* values,
                      size_t element_bytes, void* y, int64_t outer, int64_t depth, int64_t inner,
                      void* stream) {
  const int64_t n = outer * depth * inner;
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  auto run = [&](auto idx_zero) -> status {
    using I = decltype(idx_zero);
    return with_word(element_bytes, [&](auto w) -> status {
      using W = decltype(w);
      one_hot_kernel<W, I><<<grid_for(n), kBlockThreads, 0, s>>>(
          static_cast<const I*>(indices), static_cast<const W*>(values), static_cast<W*>(y), outer,
          depth, inner);
      TROUPE_CUDA_LAUNCH_CHECK();
      return status::ok();
    });
  };
  switch (index_type) {
    case dtype::i64:
      return run(int64_t{});
    case dtype::i32:
      return run(int32_t{});
    case dtype::f32:
      return run(float{});
    case dtype::f16:
      return run(__half{});
    default:
      return unsupported("OneHot indices of dtype " + std::string(dtype_name(index_type)));
  }
}

status launch_range(dtype t, uint64_t start_bits, uint64_t delta_bits, void* y, int64_t n,
                    void* stream) {
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  auto run = [&](auto zero) -> status {
    using T = decltype(zero);
    T start, delta;
    std::memcpy(&start, &start_bits, sizeof(T));
    std::memcpy(&delta, &delta_bits, sizeof(T));
    range_kernel<T><<<grid_for(n), kBlockThreads, 0, s>>>(start, delta, static_cast<T*>(y), n);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  };
  switch (t) {
    case dtype::f32:
      return run(float{});
    case dtype::i32:
      return run(int32_t{});
    case dtype::i64:
      return run(int64_t{});
    default:
      return unsupported("Range of dtype " + std::string(dtype_name(t)));
  }
}

status launch_fill(size_t element_bytes, uint64_t bits, void* y, int64_t n, void* stream) {
  if (n == 0) return status::ok();
  return with_word(element_bytes, [&](auto w) -> status {
    using W = decltype(w);
    W v;
    memcpy(&v, &bits, sizeof(W));
    fill_kernel<W><<<grid_for(n), kBlockThreads, 0, to_stream(stream)>>>(v, static_cast<W*>(y), n);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  });
}

}  // namespace troupe::kernels::cuda
