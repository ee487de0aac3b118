// Reductions, Softmax and LayerNormalization. Accumulation is fp32 whatever the storage type.
// Rows (inner == 1) go to a warp per row when short, a block per row when long; strided
// reductions (inner > 1) give each thread one output and walk the extent, which keeps the
// threads of a warp on consecutive addresses.
#include <cfloat>
#include <type_traits>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/reduction.cuh"

namespace troupe::kernels::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowBlockThreads = 512;
constexpr int64_t kWarpRowLimit = 1024;  // longest row one warp handles

/// A running reduction: `a` is the value; log_sum_exp keeps (a = max, b = sum of exp(x - max)).
struct acc {
  float a;
  float b;
};

__device__ __forceinline__ acc acc_init(reduce_op op) {
  switch (op) {
    case reduce_op::max:
      return {-INFINITY, 0.0f};
    case reduce_op::min:
      return {INFINITY, 0.0f};
    case reduce_op::prod:
      return {1.0f, 0.0f};
    case reduce_op::log_sum_exp:
      return {-INFINITY, 0.0f};
    default:
      return {0.0f, 0.0f};
  }
}

__device__ __forceinline__ acc combine(reduce_op op, acc x, acc y) {
  switch (op) {
    case reduce_op::max:
      return {(x.a != x.a || x.a > y.a) ? x.a : y.a, 0.0f};
    case reduce_op::min:
      return {(x.a != x.a || x.a < y.a) ? x.a : y.a, 0.0f};
    case reduce_op::prod:
      return {x.a * y.a, 0.0f};
    case reduce_op::log_sum_exp: {
      const float m = fmaxf(x.a, y.a);
      if (m == -INFINITY) return {m, 0.0f};
      return {m, x.b * expf(x.a - m) + y.b * expf(y.a - m)};
    }
    default:
      return {x.a + y.a, 0.0f};
  }
}

__device__ __forceinline__ acc acc_of(reduce_op op, float v) {
  switch (op) {
    case reduce_op::sum_square:
    case reduce_op::l2:
      return {v * v, 0.0f};
    case reduce_op::l1:
      return {fabsf(v), 0.0f};
    case reduce_op::log_sum_exp:
      return {v, 1.0f};
    default:
      return {v, 0.0f};
  }
}

__device__ __forceinline__ float finish(reduce_op op, acc x, int64_t count) {
  switch (op) {
    case reduce_op::mean:
      return x.a / static_cast<float>(count);
    case reduce_op::l2:
      return sqrtf(x.a);
    case reduce_op::log_sum:
      return logf(x.a);
    case reduce_op::log_sum_exp:
      return x.a + logf(x.b);
    default:
      return x.a;
  }
}

__device__ __forceinline__ acc warp_combine(reduce_op op, acc v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    acc other{__shfl_xor_sync(0xffffffffu, v.a, o), __shfl_xor_sync(0xffffffffu, v.b, o)};
    v = combine(op, v, other);
  }
  return v;
}

/// Combines one value per thread over the block; every thread gets the result. `scratch` holds
/// one acc per warp.
__device__ acc block_combine(reduce_op op, acc v, acc* scratch) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = warp_combine(op, v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  acc r = lane < warps ? scratch[lane] : acc_init(op);
  r = warp_combine(op, r);
  return r;
}

// ---- reductions --------------------------------------------------------------------------------

template <class T>
__global__ void reduce_rows_warp(reduce_op op, const T* x, T* y, int64_t rows, int64_t cols) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const T* in = x + row * cols;
  acc v = acc_init(op);
  for (int64_t c = lane; c < cols; c += kWarp) v = combine(op, v, acc_of(op, load(in, c)));
  v = warp_combine(op, v);
  if (lane == 0) store(y, row, finish(op, v, cols));
}

template <class T>
__global__ void reduce_rows_block(reduce_op op, const T* x, T* y, int64_t cols) {
  __shared__ acc scratch[kWarp];
  const int64_t row = blockIdx.x;
  const T* in = x + row * cols;
  acc v = acc_init(op);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    v = combine(op, v, acc_of(op, load(in, c)));
  }
  v = block_combine(op, v, scratch);
  if (threadIdx.x == 0) store(y, row, finish(op, v, cols));
}

template <class T>
__global__ void reduce_strided(reduce_op op, const T* x, T* y, int64_t outer, int64_t extent,
                               int64_t inner) {
  TROUPE_GRID_LOOP(idx, outer * inner) {
    const int64_t o = idx / inner;
    const int64_t i = idx % inner;
    const T* in = x + o * extent * inner + i;
    acc v = acc_init(op);
    for (int64_t e = 0; e < extent; ++e) v = combine(op, v, acc_of(op, load(in, e * inner)));
    store(y, idx, finish(op, v, extent));
  }
}

template <class T>
status run_reduce(reduce_op op, const T* x, T* y, int64_t outer, int64_t extent, int64_t inner,
                  cudaStream_t s) {
  if (inner == 1 && extent <= kWarpRowLimit) {
    const int rows_per_block = kBlockThreads / kWarp;
    const int64_t blocks = (outer + rows_per_block - 1) / rows_per_block;
    reduce_rows_warp<T>
        <<<static_cast<unsigned>(blocks), kBlockThreads, 0, s>>>(op, x, y, outer, extent);
  } else if (inner == 1) {
    reduce_rows_block<T>
        <<<static_cast<unsigned>(outer), kRowBlockThreads, 0, s>>>(op, x, y, extent);
  } else {
    reduce_strided<T>
        <<<grid_for(outer * inner), kBlockThreads, 0, s>>>(op, x, y, outer, extent, inner);
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

// ---- softmax -----------------------------------------------------------------------------------

/// Online softmax statistics: running max m and sum of exp(x - m).
__device__ __forceinline__ acc softmax_step(acc s, float v) {
  return combine(reduce_op::log_sum_exp, s, acc{v, 1.0f});
}

template <class T>
__device__ __forceinline__ void softmax_write(const T* in, T* out, int64_t c, acc st, bool log) {
  const float v = load(in, c);
  if (log) {
    store(out, c, v - st.a - logf(st.b));
  } else {
    store(out, c, expf(v - st.a) / st.b);
  }
}

template <class T>
__global__ void softmax_rows_warp(const T* x, T* y, int64_t rows, int64_t cols, bool log) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const T* in = x + row * cols;
  T* out = y + row * cols;
  acc st{-INFINITY, 0.0f};
  for (int64_t c = lane; c < cols; c += kWarp) st = softmax_step(st, load(in, c));
  st = warp_combine(reduce_op::log_sum_exp, st);
  for (int64_t c = lane; c < cols; c += kWarp) softmax_write(in, out, c, st, log);
}

template <class T>
__global__ void softmax_rows_block(const T* x, T* y, int64_t cols, bool log) {
  __shared__ acc scratch[kWarp];
  const int64_t row = blockIdx.x;
  const T* in = x + row * cols;
  T* out = y + row * cols;
  acc st{-INFINITY, 0.0f};
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) st = softmax_step(st, load(in, c));
  st = block_combine(reduce_op::log_sum_exp, st, scratch);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) softmax_write(in, out, c, st, log);
}

template <class T>
__global__ void softmax_strided(const T* x, T* y, int64_t outer, int64_t extent, int64_t inner,
                                bool log) {
  TROUPE_GRID_LOOP(idx, outer * inner) {
    const int64_t o = idx / inner;
    const int64_t i = idx % inner;
    const T* in = x + o * extent * inner + i;
    T* out = y + o * extent * inner + i;
    acc st{-INFINITY, 0.0f};
    for (int64_t e = 0; e < extent; ++e) st = softmax_step(st, load(in, e * inner));
    for (int64_t e = 0; e < extent; ++e) softmax_write(in, out, e * inner, st, log);
  }
}

template <class T>
status run_softmax(const T* x, T* y, int64_t outer, int64_t extent, int64_t inner, bool log,
                   cudaStream_t s) {
  if (inner == 1 && extent <= kWarpRowLimit) {
    const int rows_per_block = kBlockThreads / kWarp;
    const int64_t blocks = (outer + rows_per_block - 1) / rows_per_block;
    softmax_rows_warp<T>
        <<<static_cast<unsigned>(blocks), kBlockThreads, 0, s>>>(x, y, outer, extent, log);
  } else if (inner == 1) {
    softmax_rows_block<T>
        <<<static_cast<unsigned>(outer), kRowBlockThreads, 0, s>>>(x, y, extent, log);
  } else {
    softmax_strided<T>
        <<<grid_for(outer * inner), kBlockThreads, 0, s>>>(x, y, outer, extent, inner, log);
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

// ---- layer norm --------------------------------------------------------------------------------

template <class T>
__device__ __forceinline__ void layer_norm_write(const T* in, T* out, const T* scale, const T* bias,
                                                 int64_t c, float mean, float inv_std) {
  float v = (load(in, c) - mean) * inv_std * load(scale, c);
  if (bias) v += load(bias, c);
  store(out, c, v);
}

/// Two passes for the statistics (mean, then the mean of squared deviations: no cancellation),
/// a third to write; a row stays in L1/L2 between them.
template <class T>
__global__ void layer_norm_warp(const T* x, const T* scale, const T* bias, T* y, float* mean_out,
                                float* inv_std_out, int64_t rows, int64_t cols, float epsilon) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const T* in = x + row * cols;
  T* out = y + row * cols;
  float sum = 0.0f;
  for (int64_t c = lane; c < cols; c += kWarp) sum += load(in, c);
  const float mean = warp_sum(sum) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = lane; c < cols; c += kWarp) {
    const float d = load(in, c) - mean;
    sq += d * d;
  }
  const float inv_std = rsqrtf(warp_sum(sq) / static_cast<float>(cols) + epsilon);
  for (int64_t c = lane; c < cols; c += kWarp)
    layer_norm_write(in, out, scale, bias, c, mean, inv_std);
  if (lane == 0) {
    if (mean_out) mean_out[row] = mean;
    if (inv_std_out) inv_std_out[row] = inv_std;
  }
}

template <class T>
__global__ void layer_norm_block(const T* x, const T* scale, const T* bias, T* y, float* mean_out,
                                 float* inv_std_out, int64_t cols, float epsilon) {
  __shared__ acc scratch[kWarp];
  const int64_t row = blockIdx.x;
  const T* in = x + row * cols;
  T* out = y + row * cols;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += load(in, c);
  const float mean =
      block_combine(reduce_op::sum, acc{sum, 0.0f}, scratch).a / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = load(in, c) - mean;
    sq += d * d;
  }
  const float var =
      block_combine(reduce_op::sum, acc{sq, 0.0f}, scratch).a / static_cast<float>(cols);
  const float inv_std = rsqrtf(var + epsilon);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    layer_norm_write(in, out, scale, bias, c, mean, inv_std);
  }
  if (threadIdx.x == 0) {
    if (mean_out) mean_out[row] = mean;
    if (inv_std_out) inv_std_out[row] = inv_std;
  }
}

/// 16 bytes of a row as floats, and back (4 floats, or 8 halves / bfloat16s).
template <class T>
struct chunk_of {
  static constexpr int elems = 16 / sizeof(T);
};

template <class T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&v)[chunk_of<T>::elems]) {
  if constexpr (std::is_same_v<T, float>) {
    v[0] = __uint_as_float(raw.x);
    v[1] = __uint_as_float(raw.y);
    v[2] = __uint_as_float(raw.z);
    v[3] = __uint_as_float(raw.w);
  } else if constexpr (std::is_same_v<T, __half>) {
    const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(h[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  } else {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  }
}
template <class T>
__device__ __forceinline__ uint4 pack(const float (&v)[chunk_of<T>::elems]) {
  if constexpr (std::is_same_v<T, float>) {
    return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]),
                      __float_as_uint(v[3]));
  } else if constexpr (std::is_same_v<T, __half>) {
    uint4 raw;
    __half2* h = reinterpret_cast<__half2*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
    return raw;
  } else {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    return raw;
  }
}

/// A warp per row held in registers: each lane loads up to kChunks 16-byte chunks once, and the
/// two statistics passes and the write run from registers (the scalar kernel above reads the row
/// three times, two bytes per load for f16). Rows of `cols` elements, cols a multiple of the
/// chunk, every pointer 16-byte aligned.
template <class T, int kChunks>
__global__ void layer_norm_warp_vec(const T* x, const T* scale, const T* bias, T* y,
                                    float* mean_out, float* inv_std_out, int64_t rows, int64_t cols,
                                    float epsilon) {
  constexpr int n = chunk_of<T>::elems;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int chunks = static_cast<int>(cols / n);
  const uint4* in = reinterpret_cast<const uint4*>(x + row * cols);
  float v[kChunks][n];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int c = lane + i * kWarp;
    if (c < chunks) {
      unpack<T>(in[c], v[i]);
#pragma unroll
      for (int e = 0; e < n; ++e) sum += v[i][e];
    }
  }
  const float mean = warp_sum(sum) / static_cast<float>(cols);
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    if (lane + i * kWarp < chunks) {
#pragma unroll
      for (int e = 0; e < n; ++e) {
        const float d = v[i][e] - mean;
        sq += d * d;
      }
    }
  }
  const float inv_std = rsqrtf(warp_sum(sq) / static_cast<float>(cols) + epsilon);
  uint4* out = reinterpret_cast<uint4*>(y + row * cols);
  const uint4* sc = reinterpret_cast<const uint4*>(scale);
  const uint4* bi = reinterpret_cast<const uint4*>(bias);
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int c = lane + i * kWarp;
    if (c >= chunks) continue;
    float g[n], b[n];
    unpack<T>(sc[c], g);
    if (bias) {
      unpack<T>(bi[c], b);
    } else {
#pragma unroll
      for (int e = 0; e < n; ++e) b[e] = 0.0f;
    }
#pragma unroll
    for (int e = 0; e < n; ++e) v[i][e] = (v[i][e] - mean) * inv_std * g[e] + b[e];
    out[c] = pack<T>(v[i]);
  }
  if (lane == 0) {
    if (mean_out) mean_out[row] = mean;
    if (inv_std_out) inv_std_out[row] = inv_std;
  }
}

/// The register kernel for rows of up to 8 chunks per lane, when the layout allows it; false
/// when the caller must take the scalar kernels.
template <class T>
bool try_layer_norm_vec(const T* x, const T* scale, const T* bias, T* y, float* mean,
                        float* inv_std, int64_t rows, int64_t cols, float epsilon, cudaStream_t s) {
  constexpr int n = chunk_of<T>::elems;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (cols % n != 0 || !aligned(x) || !aligned(y) || !aligned(scale) || (bias && !aligned(bias))) {
    return false;
  }
  const int64_t per_lane = (cols / n + kWarp - 1) / kWarp;
  const int rows_per_block = kBlockThreads / kWarp;
  const unsigned blocks = static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block);
#define TROUPE_LN_VEC(k)    \
  layer_norm_warp_vec<T, k> \
      <<<blocks, kBlockThreads, 0, s>>>(x, scale, bias, y, mean, inv_std, rows, cols, epsilon)
  if (per_lane <= 1) {
    TROUPE_LN_VEC(1);
  } else if (per_lane <= 2) {
    TROUPE_LN_VEC(2);
  } else if (per_lane <= 3) {
    TROUPE_LN_VEC(3);
  } else if (per_lane <= 4) {
    TROUPE_LN_VEC(4);
  } else if (per_lane <= 6) {
    TROUPE_LN_VEC(6);
  } else if (per_lane <= 8) {
    TROUPE_LN_VEC(8);
  } else {
    return false;
  }
#undef TROUPE_LN_VEC
  return true;
}

template <class T>
status run_layer_norm(const T* x, const T* scale, const T* bias, T* y, float* mean, float* inv_std,
                      int64_t rows, int64_t cols, float epsilon, cudaStream_t s) {
  if (try_layer_norm_vec(x, scale, bias, y, mean, inv_std, rows, cols, epsilon, s)) {
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  }
  if (cols <= kWarpRowLimit) {
    const int rows_per_block = kBlockThreads / kWarp;
    const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
    layer_norm_warp<T><<<static_cast<unsigned>(blocks), kBlockThreads, 0, s>>>(
        x, scale, bias, y, mean, inv_std, rows, cols, epsilon);
  } else {
    layer_norm_block<T><<<static_cast<unsigned>(rows), kRowBlockThreads, 0, s>>>(
        x, scale, bias, y, mean, inv_std, cols, epsilon);
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

}  // namespace

status launch_reduce(reduce_op op, dtype t, const void* x, void* y, int64_t outer, int64_t extent,
                     int64_t inner, void* stream) {
  if (outer * inner == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  switch (t) {
    case dtype::f32:
      return run_reduce(op, static_cast<const float*>(x), static_cast<float*>(y), outer, extent,
                        inner, s);
    case dtype::f16:
      return run_reduce(op, static_cast<const __half*>(x), static_cast<__half*>(y), outer, extent,
                        inner, s);
    case dtype::bf16:
      return run_reduce(op, static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y),
                        outer, extent, inner, s);
    default:
      return unsupported("reduction on dtype " + std::string(dtype_name(t)));
  }
}

status launch_softmax(dtype t, bool log, const void* x, void* y, int64_t outer, int64_t extent,
                      int64_t inner, void* stream) {
  if (outer * inner * extent == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  switch (t) {
    case dtype::f32:
      return run_softmax(static_cast<const float*>(x), static_cast<float*>(y), outer, extent, inner,
                         log, s);
    case dtype::f16:
      return run_softmax(static_cast<const __half*>(x), static_cast<__half*>(y), outer, extent,
                         inner, log, s);
    case dtype::bf16:
      return run_softmax(static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y),
                         outer, extent, inner, log, s);
    default:
      return unsupported("Softmax on dtype " + std::string(dtype_name(t)));
  }
}

status launch_layer_norm(dtype t, const void* x, const void* scale, const void* bias, void* y,
                         float* mean, float* inv_std_dev, int64_t rows, int64_t cols, float epsilon,
                         void* stream) {
  if (rows == 0 || cols == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  switch (t) {
    case dtype::f32:
      return run_layer_norm(static_cast<const float*>(x), static_cast<const float*>(scale),
                            static_cast<const float*>(bias), static_cast<float*>(y), mean,
                            inv_std_dev, rows, cols, epsilon, s);
    case dtype::f16:
      return run_layer_norm(static_cast<const __half*>(x), static_cast<const __half*>(scale),
                            static_cast<const __half*>(bias), static_cast<__half*>(y), mean,
                            inv_std_dev, rows, cols, epsilon, s);
    case dtype::bf16:
      return run_layer_norm(static_cast<const __nv_bfloat16*>(x),
                            static_cast<const __nv_bfloat16*>(scale),
                            static_cast<const __nv_bfloat16*>(bias), static_cast<__nv_bfloat16*>(y),
                            mean, inv_std_dev, rows, cols, epsilon, s);
    default:
      return unsupported("LayerNormalization on dtype " + std::string(dtype_name(t)));
  }
}

}  // namespace troupe::kernels::cuda
