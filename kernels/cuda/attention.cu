// Flash-style multi-head attention (see attention.cuh for the two kernels and when each runs).
//
// Both kernels keep, per query row, the running maximum m and sum l of the exponentials seen so
// far and an fp32 output accumulator o; a new tile of scores s rescales them by e^(m_old - m_new)
// (FlashAttention's online softmax), so each key and value is read once per block of query rows.
// Exponentials are base 2 with log2(e) folded into the scale and the mask. A row whose scores
// are all -inf ends with l = 0 and gives 0/0 = NaN, as Softmax does.
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/device_common.cuh"

namespace troupe::kernels::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kSimtThreads = 128;  // 4 warps

template <class T>
struct attention_args {
  const T* q;  // operand bases with the geometry's offsets applied
  const T* k;
  const T* v;
  const T* mask;  // null without a mask
  T* y;
  int64_t q_b, q_s, q_h;  // element strides of (batch, seq, head)
  int64_t k_b, k_s, k_h;
  int64_t v_b, v_s, v_h;
  int64_t y_b, y_s, y_h;
  int64_t m_b, m_h, m_q, m_k;  // mask strides, 0 where it broadcasts
  int q_len, kv_len, head_dim;
  float scale_log2;  // scale * log2(e)
};

// ---- tensor-core kernel (f16, bf16) ------------------------------------------------------------

// Query rows per block, 16 per warp: 64 (4 warps), or 128 (8 warps) where the grid has blocks to
// spare, so that each K/V tile loaded into shared memory serves twice the rows (BERT-base at batch
// 128 reads K and V once per head instead of twice).
constexpr int kRowsSmall = 64;
constexpr int kRowsLarge = 128;
constexpr int64_t kLargeRowsMinBlocks = 512;  // about four blocks per SM on an H100 (132 SMs)
constexpr int kKeysPerTile = 64;

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/// 16 bytes global -> shared, asynchronously; src_bytes 0 writes zeros (rows past the end).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

/// d += a (16x16 T, row-major fragment) * b (16x8 T, column fragment), fp32 accumulators; T is
/// __half or __nv_bfloat16 (the same fragment layouts, only the operand type differs).
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>);
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

/// Two floats rounded to T, lo in the low 16 bits (the lower column).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

template <int D>
__host__ __device__ constexpr int smem_pitch() {
  return D + 8;  // 16-bit elements; 16 bytes of padding move each row to another bank group
}

template <int D, int kRows>
constexpr size_t tensor_core_smem_bytes() {
  // Q tile, then two K tiles, then two V tiles (16-bit elements), then two key-mask rows (f32).
  return static_cast<size_t>(kRows + 4 * kKeysPerTile) * smem_pitch<D>() * sizeof(__half) +
         2 * kKeysPerTile * sizeof(float);
}

// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16): {row g, k 2t..2t+1}, {row g+8, k 2t..}, {row g, k 2t+8..}, {row g+8, k 2t+8..}
//   B (16x8):  {k 2t..2t+1, col g}, {k 2t+8..2t+9, col g}
//   C (16x8):  c0,c1 = row g, cols 2t, 2t+1; c2,c3 = row g+8, same cols
// so the C fragments of two neighbouring 8-key score tiles, rounded to f16, are exactly the A
// fragment of P for the next product with V: P never leaves registers.
// Head dim <= 64: at most 128 registers, so 16 warps share an SM (without the bound ptxas takes
// 129 and only 12 fit). At 128 the bound would spill, so it is left to ptxas.
template <class T, int D, int kRows>
__global__ void __launch_bounds__(kRows * 2, D <= 64 ? 256 / kRows : 1)
    attention_tensor_core(attention_args<T> p) {
  constexpr int kRowsPerBlock = kRows;
  constexpr int kThreads = kRows * 2;  // a warp per 16 rows
  constexpr int pitch = smem_pitch<D>();
  constexpr int chunks = D / 8;  // 16-byte chunks per row
  constexpr int key_tiles = kKeysPerTile / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_tile = reinterpret_cast<T*>(smem_raw);
  T* k_tiles = q_tile + kRowsPerBlock * pitch;
  T* v_tiles = k_tiles + 2 * kKeysPerTile * pitch;
  // A mask that does not vary over query rows (BERT's [B,1,1,S] padding mask) is staged per key
  // tile, scaled by log2(e), with -inf past the last key: one load per key and block instead of one
  // per score, and no index arithmetic in the score loop.
  float* key_mask = reinterpret_cast<float*>(v_tiles + 2 * kKeysPerTile * pitch);
  const bool row_free_mask = p.mask != nullptr && p.m_q == 0;

  const int tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int q0 = blockIdx.x * kRowsPerBlock;
  const int h = blockIdx.y, b = blockIdx.z;
  const T* qg = p.q + b * p.q_b + h * p.q_h;
  const T* kg = p.k + b * p.k_b + h * p.k_h;
  const T* vg = p.v + b * p.v_b + h * p.v_h;

  for (int c = tid; c < kRowsPerBlock * chunks; c += kThreads) {
    const int r = c / chunks, col = (c % chunks) * 8;
    const bool in = q0 + r < p.q_len;
    cp_async16(q_tile + r * pitch + col, in ? qg + (q0 + r) * p.q_s + col : qg, in ? 16 : 0);
  }
  auto load_kv = [&](int tile, int buf) {
    const int j0 = tile * kKeysPerTile;
    T* kd = k_tiles + buf * kKeysPerTile * pitch;
    T* vd = v_tiles + buf * kKeysPerTile * pitch;
    for (int c = tid; c < kKeysPerTile * chunks; c += kThreads) {
      const int r = c / chunks, col = (c % chunks) * 8;
      const bool in = j0 + r < p.kv_len;
      cp_async16(kd + r * pitch + col, in ? kg + (j0 + r) * p.k_s + col : kg, in ? 16 : 0);
      cp_async16(vd + r * pitch + col, in ? vg + (j0 + r) * p.v_s + col : vg, in ? 16 : 0);
    }
    if (row_free_mask) {
      // Plain loads: visible to the block after the __syncthreads that follows the wait.
      for (int r = tid; r < kKeysPerTile; r += kThreads) {
        const int key = j0 + r;
        key_mask[buf * kKeysPerTile + r] =
            key < p.kv_len ? load(p.mask, b * p.m_b + h * p.m_h + key * p.m_k) * kLog2e : -INFINITY;
      }
    }
  };
  const int tiles = (p.kv_len + kKeysPerTile - 1) / kKeysPerTile;
  load_kv(0, 0);
  cp_async_commit();  // group 0: Q and the first K/V tile

  uint32_t qf[D / 16][4];
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // rows g and g + 8 of this warp's 16
  float l_run[2] = {0.0f, 0.0f};            // this thread's share; the quad sums at the end
  const int row0 = q0 + warp * 16 + g;      // and row0 + 8

  for (int tile = 0; tile < tiles; ++tile) {
    const int buf = tile & 1;
    if (tile + 1 < tiles) load_kv(tile + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // everything but the tile just requested has landed
    __syncthreads();
    if (tile == 0) {
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        ldmatrix_x4(qf[ks], q_tile + (warp * 16 + (lane & 15)) * pitch + ks * 16 + (lane >> 4) * 8);
      }
    }
    const T* kt = k_tiles + buf * kKeysPerTile * pitch;
    const T* vt = v_tiles + buf * kKeysPerTile * pitch;

    // S = Q K^T for 16 rows x 64 keys.
    float s[key_tiles][4];
#pragma unroll
    for (int j = 0; j < key_tiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
      for (int np = 0; np < key_tiles / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, kt + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * pitch + ks * 16 +
                            ((lane >> 3) & 1) * 8);
        mma_16816<T>(s[2 * np], qf[ks], kb[0], kb[1]);
        mma_16816<T>(s[2 * np + 1], qf[ks], kb[2], kb[3]);
      }
    }

    // Scale, mask, keys past the end; then the online softmax update of rows g and g + 8.
    const int key0 = tile * kKeysPerTile;
    float mx[2] = {m_run[0], m_run[1]};
    if (row_free_mask) {
      const float* km = key_mask + buf * kKeysPerTile;
#pragma unroll
      for (int j = 0; j < key_tiles; ++j) {
        const float2 mk = *reinterpret_cast<const float2*>(km + j * 8 + 2 * t);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float x = fmaf(s[j][e], p.scale_log2, (e & 1) ? mk.y : mk.x);
          s[j][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < key_tiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = row0 + (e >> 1) * 8;
          const int key = key0 + j * 8 + 2 * t + (e & 1);
          float x = s[j][e] * p.scale_log2;
          if (key >= p.kv_len) {
            x = -INFINITY;
          } else if (p.mask != nullptr && row < p.q_len) {
            x += load(p.mask, b * p.m_b + h * p.m_h + row * p.m_q + key * p.m_k) * kLog2e;
          }
          s[j][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      }
    }
    float base[2], corr[2], row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];  // all -inf so far: e^(-inf - 0) = 0, no NaN
      corr[r] = exp2f(m_run[r] - base[r]);
      m_run[r] = mx[r];
    }
#pragma unroll
    for (int j = 0; j < key_tiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2f(s[j][e] - base[e >> 1]);
        s[j][e] = pe;
        row_sum[e >> 1] += pe;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] = l_run[r] * corr[r] + row_sum[r];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= corr[0];
      o[n][1] *= corr[0];
      o[n][2] *= corr[1];
      o[n][3] *= corr[1];
    }

    // O += P V, P from the score fragments.
#pragma unroll
    for (int kk = 0; kk < kKeysPerTile / 16; ++kk) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]),
                              pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, vt + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * pitch +
                                  dp * 16 + (lane >> 4) * 8);
        mma_16816<T>(o[2 * dp], pa, vb[0], vb[1]);
        mma_16816<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // this tile's buffers are free for the load two tiles on
  }
  cp_async_wait<0>();

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
  }
  T* yb = p.y + b * p.y_b + h * p.y_h;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + r * 8;
    if (row >= p.q_len) continue;
    T* yr = yb + row * p.y_s;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<uint32_t*>(yr + n * 8 + 2 * t) =
          pack2<T>(o[n][2 * r] * inv[r], o[n][2 * r + 1] * inv[r]);
    }
  }
}

// ---- SIMT kernel (f32, f16, bf16) --------------------------------------------------------------

constexpr int kSimtRowsPerWarp = 4;
constexpr int kSimtRows = 4 * kSimtRowsPerWarp;  // per block
constexpr int kSimtKeys = 32;                    // per tile: one per lane

size_t simt_smem_bytes(int64_t head_dim) {
  // Q rows [16][D], K tile [32][D + 1] (padded: lanes read one row each), V tile [32][D].
  return static_cast<size_t>(kSimtRows * head_dim + kSimtKeys * (head_dim + 1) +
                             kSimtKeys * head_dim) *
         sizeof(float);
}

/// Head-dim elements per lane: D <= 32 * per_lane.
template <class T, int per_lane>
__global__ void __launch_bounds__(kSimtThreads) attention_simt(attention_args<T> p) {
  extern __shared__ float smem_f[];
  const int dim = p.head_dim;
  float* q_rows = smem_f;
  float* k_tile = q_rows + kSimtRows * dim;
  float* v_tile = k_tile + kSimtKeys * (dim + 1);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = blockIdx.x * kSimtRows;
  const int h = blockIdx.y, b = blockIdx.z;
  const T* qg = p.q + b * p.q_b + h * p.q_h;
  const T* kg = p.k + b * p.k_b + h * p.k_h;
  const T* vg = p.v + b * p.v_b + h * p.v_h;
  for (int i = threadIdx.x; i < kSimtRows * dim; i += kSimtThreads) {
    const int r = i / dim, d = i % dim;
    q_rows[i] = q0 + r < p.q_len ? load(qg, static_cast<int64_t>(q0 + r) * p.q_s + d) : 0.0f;
  }
  float o[kSimtRowsPerWarp][per_lane];
  float m_run[kSimtRowsPerWarp], l_run[kSimtRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kSimtRowsPerWarp; ++r) {
    m_run[r] = -INFINITY;
    l_run[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < per_lane; ++i) o[r][i] = 0.0f;
  }
  const float* my_q = q_rows + warp * kSimtRowsPerWarp * dim;
  for (int j0 = 0; j0 < p.kv_len; j0 += kSimtKeys) {
    __syncthreads();  // the previous tile is consumed (and the Q rows written, the first time)
    for (int i = threadIdx.x; i < kSimtKeys * dim; i += kSimtThreads) {
      const int r = i / dim, d = i % dim;
      const bool in = j0 + r < p.kv_len;
      k_tile[r * (dim + 1) + d] = in ? load(kg, static_cast<int64_t>(j0 + r) * p.k_s + d) : 0.0f;
      v_tile[r * dim + d] = in ? load(vg, static_cast<int64_t>(j0 + r) * p.v_s + d) : 0.0f;
    }
    __syncthreads();
    const int key = j0 + lane;
    float s[kSimtRowsPerWarp] = {};
    const float* kr = k_tile + lane * (dim + 1);
    for (int d = 0; d < dim; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int r = 0; r < kSimtRowsPerWarp; ++r) s[r] += my_q[r * dim + d] * kd;
    }
    const int valid = min(kSimtKeys, p.kv_len - j0);
#pragma unroll
    for (int r = 0; r < kSimtRowsPerWarp; ++r) {
      const int row = q0 + warp * kSimtRowsPerWarp + r;
      float x = s[r] * p.scale_log2;
      if (key >= p.kv_len) {
        x = -INFINITY;
      } else if (p.mask != nullptr && row < p.q_len) {
        x += load(p.mask, b * p.m_b + h * p.m_h + row * p.m_q + key * p.m_k) * kLog2e;
      }
      const float mx = fmaxf(m_run[r], warp_max(x));
      const float base = mx == -INFINITY ? 0.0f : mx;
      const float pr = exp2f(x - base);
      const float corr = exp2f(m_run[r] - base);
      m_run[r] = mx;
      l_run[r] = l_run[r] * corr + warp_sum(pr);
#pragma unroll
      for (int i = 0; i < per_lane; ++i) o[r][i] *= corr;
      for (int jj = 0; jj < valid; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, pr, jj);
        const float* vr = v_tile + jj * dim;
#pragma unroll
        for (int i = 0; i < per_lane; ++i) {
          const int d = lane + 32 * i;
          if (d < dim) o[r][i] += pj * vr[d];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kSimtRowsPerWarp; ++r) {
    const int row = q0 + warp * kSimtRowsPerWarp + r;
    if (row >= p.q_len) continue;
    T* yr = p.y + b * p.y_b + static_cast<int64_t>(row) * p.y_s + h * p.y_h;
    const float inv = 1.0f / l_run[r];
#pragma unroll
    for (int i = 0; i < per_lane; ++i) {
      const int d = lane + 32 * i;
      if (d < dim) store(yr, d, o[r][i] * inv);
    }
  }
}

// ---- dispatch ----------------------------------------------------------------------------------

template <class T>
attention_args<T> make_args(const attention_geometry& g, const void* q, const void* k,
                            const void* v, const void* mask, void* y) {
  attention_args<T> a{};
  a.q = static_cast<const T*>(q) + g.q.offset;
  a.k = static_cast<const T*>(k) + g.k.offset;
  a.v = static_cast<const T*>(v) + g.v.offset;
  a.mask = g.has_mask ? static_cast<const T*>(mask) : nullptr;
  a.y = static_cast<T*>(y) + g.y.offset;
  a.q_b = g.q.batch_stride, a.q_s = g.q.seq_stride, a.q_h = g.q.head_stride;
  a.k_b = g.k.batch_stride, a.k_s = g.k.seq_stride, a.k_h = g.k.head_stride;
  a.v_b = g.v.batch_stride, a.v_s = g.v.seq_stride, a.v_h = g.v.head_stride;
  a.y_b = g.y.batch_stride, a.y_s = g.y.seq_stride, a.y_h = g.y.head_stride;
  a.m_b = g.mask_strides[0], a.m_h = g.mask_strides[1];
  a.m_q = g.mask_strides[2], a.m_k = g.mask_strides[3];
  a.q_len = static_cast<int>(g.q_len);
  a.kv_len = static_cast<int>(g.kv_len);
  a.head_dim = static_cast<int>(g.head_dim);
  a.scale_log2 = g.scale * kLog2e;
  return a;
}

dim3 grid_of(const attention_geometry& g, int rows_per_block) {
  return dim3(static_cast<unsigned>((g.q_len + rows_per_block - 1) / rows_per_block),
              static_cast<unsigned>(g.heads), static_cast<unsigned>(g.batch));
}

template <class T>
using simt_fn = void (*)(attention_args<T>);

template <class T>
simt_fn<T> simt_kernel(int64_t head_dim) {
  if (head_dim <= 32) return attention_simt<T, 1>;
  if (head_dim <= 64) return attention_simt<T, 2>;
  if (head_dim <= 128) return attention_simt<T, 4>;
  return attention_simt<T, 8>;
}

template <class T>
using tc_fn = void (*)(attention_args<T>);

template <class T>
tc_fn<T> tensor_core_kernel(int64_t head_dim, int rows, size_t* smem) {
#define TROUPE_ATT_TC(d, r)                 \
  if (head_dim == d && rows == r) {         \
    *smem = tensor_core_smem_bytes<d, r>(); \
    return attention_tensor_core<T, d, r>;  \
  }
  TROUPE_ATT_TC(32, kRowsSmall)
  TROUPE_ATT_TC(64, kRowsSmall)
  TROUPE_ATT_TC(128, kRowsSmall)
  TROUPE_ATT_TC(32, kRowsLarge)
  TROUPE_ATT_TC(64, kRowsLarge)
  TROUPE_ATT_TC(128, kRowsLarge)
#undef TROUPE_ATT_TC
  return nullptr;
}

/// 128 rows per block where the grid still has kLargeRowsMinBlocks blocks, else 64.
int tensor_core_rows(const attention_geometry& g) {
  const int64_t blocks = (g.q_len + kRowsLarge - 1) / kRowsLarge * g.heads * g.batch;
  return blocks >= kLargeRowsMinBlocks ? kRowsLarge : kRowsSmall;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <class T>
status run_simt(const attention_geometry& g, const attention_args<T>& a, cudaStream_t s) {
  simt_kernel<T>(
      g.head_dim)<<<grid_of(g, kSimtRows), kSimtThreads, simt_smem_bytes(g.head_dim), s>>>(a);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

/// The 16-bit float types: the SIMT kernel's shared-memory limit, and the tensor-core kernel's
/// where the geometry takes it.
template <class T>
status prepare_16bit(const attention_geometry& g) {
  TROUPE_CUDA_CHECK(cudaFuncSetAttribute(simt_kernel<T>(g.head_dim),
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(simt_smem_bytes(g.head_dim))));
  if (attention_uses_tensor_cores(g)) {
    size_t smem = 0;
    tc_fn<T> f = tensor_core_kernel<T>(g.head_dim, tensor_core_rows(g), &smem);
    TROUPE_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  }
  return status::ok();
}

template <class T>
status launch_16bit(const attention_geometry& g, const void* q, const void* k, const void* v,
                    const void* mask, void* y, cudaStream_t s) {
  const attention_args<T> a = make_args<T>(g, q, k, v, mask, y);
  if (attention_uses_tensor_cores(g) && aligned16(q) && aligned16(k) && aligned16(v) &&
      reinterpret_cast<uintptr_t>(y) % 4 == 0) {
    size_t smem = 0;
    const int rows = tensor_core_rows(g);
    tc_fn<T> f = tensor_core_kernel<T>(g.head_dim, rows, &smem);
    f<<<grid_of(g, rows), static_cast<unsigned>(rows * 2), smem, s>>>(a);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  }
  return run_simt(g, a, s);
}

}  // namespace

status check_attention(const attention_geometry& g) {
  if (g.type != dtype::f32 && g.type != dtype::f16 && g.type != dtype::bf16) {
    return unsupported(
        "troupe.Attention on the cuda backend takes float32, float16 or bfloat16, not " +
        std::string(dtype_name(g.type)));
  }
  if (g.head_dim > kMaxAttentionHeadDim) {
    return unsupported("troupe.Attention on the cuda backend takes head sizes up to " +
                       std::to_string(kMaxAttentionHeadDim) + ", got " +
                       std::to_string(g.head_dim));
  }
  if (g.batch > 65535 || g.heads > 65535 || g.q_len > (int64_t{1} << 30) ||
      g.kv_len > (int64_t{1} << 30)) {
    return unsupported("troupe.Attention: batch and heads up to 65535, sequences up to 2^30");
  }
  return status::ok();
}

bool attention_uses_tensor_cores(const attention_geometry& g) {
  if (g.type != dtype::f16 && g.type != dtype::bf16) return false;
  if (g.head_dim != 32 && g.head_dim != 64 && g.head_dim != 128) return false;
  // 16-byte rows: every row start of Q, K and V a multiple of 8 halves from the base.
  for (const attention_operand* o : {&g.q, &g.k, &g.v}) {
    if (o->offset % 8 || o->batch_stride % 8 || o->seq_stride % 8 || o->head_stride % 8)
      return false;
  }
  // Two-element (32-bit) stores of the output.
  return g.y.offset % 2 == 0 && g.y.batch_stride % 2 == 0 && g.y.seq_stride % 2 == 0 &&
         g.y.head_stride % 2 == 0;
}

status prepare_attention(const attention_geometry& g) {
  TROUPE_RETURN_IF_ERROR(check_attention(g));
  const size_t simt = simt_smem_bytes(g.head_dim);
  if (g.type == dtype::f32) {
    TROUPE_CUDA_CHECK(cudaFuncSetAttribute(simt_kernel<float>(g.head_dim),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(simt)));
    return status::ok();
  }
  if (g.type == dtype::bf16) return prepare_16bit<__nv_bfloat16>(g);
  return prepare_16bit<__half>(g);
}

status launch_attention(const attention_geometry& g, const void* q, const void* k, const void* v,
                        const void* mask, void* y, void* stream) {
  TROUPE_RETURN_IF_ERROR(check_attention(g));
  const cudaStream_t s = to_stream(stream);
  if (g.batch == 0 || g.heads == 0 || g.q_len == 0) return status::ok();
  if (g.kv_len == 0) {
    // No keys: the softmax is empty and the product with no values is zero, as unfused.
    const size_t bytes =
        static_cast<size_t>(g.batch * g.q_len * g.heads * g.head_dim) * dtype_size(g.type);
    TROUPE_CUDA_CHECK(cudaMemsetAsync(y, 0, bytes, s));
    return status::ok();
  }
  if (g.type == dtype::f32) {
    return run_simt(g, make_args<float>(g, q, k, v, mask, y), s);
  }
  if (g.type == dtype::bf16) return launch_16bit<__nv_bfloat16>(g, q, k, v, mask, y, s);
  return launch_16bit<__half>(g, q, k, v, mask, y, s);
}

}  // namespace troupe::kernels::cuda
