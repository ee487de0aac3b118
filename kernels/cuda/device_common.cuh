#pragma once
/// Device-side helpers shared by the .cu files (CUDA syntax: include from .cu files only):
/// element loads/stores that compute in fp32 for f16 and bf16, launch geometry, and the one launch
/// check.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/status.hpp"
#include "kernels/cuda/cuda_common.hpp"

namespace troupe::kernels::cuda {

constexpr int kBlockThreads = 256;

/// Blocks for a grid-stride loop over n elements: enough to fill the device, never more than
/// the work needs.
inline unsigned grid_for(int64_t n, int threads = kBlockThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{1} << 16)));
}

/// The status of the last launch on this thread (a bad configuration shows here; faults inside
/// the kernel surface at the next synchronisation).
#define TROUPE_CUDA_LAUNCH_CHECK() TROUPE_CUDA_CHECK(cudaGetLastError())

/// fp32 compute type for every float element type; integers compute in their own type.
template <class T>
struct compute_of {
  using type = T;
};
template <>
struct compute_of<__half> {
  using type = float;
};
template <>
struct compute_of<__nv_bfloat16> {
  using type = float;
};

template <class T>
__device__ __forceinline__ typename compute_of<T>::type load(const T* p, int64_t i) {
  return p[i];
}
template <>
__device__ __forceinline__ float load<__half>(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
template <>
__device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

template <class T, class V>
__device__ __forceinline__ void store(T* p, int64_t i, V v) {
  p[i] = static_cast<T>(v);
}
template <>
__device__ __forceinline__ void store<__half, float>(__half* p, int64_t i, float v) {
  p[i] = __float2half_rn(v);
}
template <>
__device__ __forceinline__ void store<__nv_bfloat16, float>(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

/// Any arithmetic value converted to T.
template <class T, class V>
__device__ __forceinline__ T convert(V v) {
  return static_cast<T>(v);
}

/// Grid-stride loop over [0, n).
#define TROUPE_GRID_LOOP(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

/// Warp-level reductions over 32 lanes.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// The unsigned integer type of a given size in bytes (uint4 for 16): elements moved as raw bits.
template <size_t Bytes>
struct word;
template <>
struct word<1> {
  using type = uint8_t;
};
template <>
struct word<2> {
  using type = uint16_t;
};
template <>
struct word<4> {
  using type = uint32_t;
};
template <>
struct word<8> {
  using type = uint64_t;
};
template <>
struct word<16> {
  using type = uint4;
};

}  // namespace troupe::kernels::cuda
