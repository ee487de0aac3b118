// MaxPool / AveragePool: one thread per output element walks its window.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/pool.cuh"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void pool_kernel(const T* x, T* y, pool_plan p) {
  const int64_t out_plane = p.out[0] * p.out[1] * p.out[2];
  const int64_t in_plane = p.in[0] * p.in[1] * p.in[2];
  TROUPE_GRID_LOOP(i, p.planes * out_plane) {
    const int64_t plane = i / out_plane;
    int64_t r = i % out_plane;
    const int64_t o2 = r % p.out[2];
    r /= p.out[2];
    const int64_t o1 = r % p.out[1];
    const int64_t o0 = r / p.out[1];
    const int64_t s0 = o0 * p.stride[0] - p.pad_begin[0];
    const int64_t s1 = o1 * p.stride[1] - p.pad_begin[1];
    const int64_t s2 = o2 * p.stride[2] - p.pad_begin[2];
    const T* in = x + plane * in_plane;
    float best = -INFINITY;
    float sum = 0.0f;
    int64_t inside = 0;
    int64_t padded = 0;  // window positions inside the padded extent
    for (int64_t k0 = 0; k0 < p.kernel[0]; ++k0) {
      const int64_t c0 = s0 + k0 * p.dilation[0];
      if (c0 >= p.in[0] + p.pad_end[0]) break;
      const bool in0 = c0 >= 0 && c0 < p.in[0];
      for (int64_t k1 = 0; k1 < p.kernel[1]; ++k1) {
        const int64_t c1 = s1 + k1 * p.dilation[1];
        if (c1 >= p.in[1] + p.pad_end[1]) break;
        const bool in1 = in0 && c1 >= 0 && c1 < p.in[1];
        for (int64_t k2 = 0; k2 < p.kernel[2]; ++k2) {
          const int64_t c2 = s2 + k2 * p.dilation[2];
          if (c2 >= p.in[2] + p.pad_end[2]) break;
          ++padded;
          if (!in1 || c2 < 0 || c2 >= p.in[2]) continue;
          const float v = load(in, (c0 * p.in[1] + c1) * p.in[2] + c2);
          best = (v > best || v != v) ? v : best;
          sum += v;
          ++inside;
        }
      }
    }
    if (p.is_max) {
      store(y, i, best);
    } else {
      const int64_t count = p.count_include_pad ? padded : inside;
      store(y, i, count > 0 ? sum / static_cast<float>(count) : 0.0f);
    }
  }
}

/// V consecutive elements, loaded and stored as one (16-, 8- or 4-byte) access.
template <class T, int V>
struct alignas(sizeof(T) * V) vec {
  T v[V];
};

/// Channels-last pooling: thread i handles channels [c0, c0 + V) of one output position; the
/// window walk is the NCHW kernel's, with positions C elements apart.
template <class T, int V>
__global__ void pool_channels_last_kernel(const T* x, T* y, pool_plan p) {
  const int64_t vectors = p.channels / V;
  const int64_t positions = p.out[0] * p.out[1] * p.out[2];
  TROUPE_GRID_LOOP(i, p.planes * positions * vectors) {
    const int64_t c0 = (i % vectors) * V;
    int64_t r = i / vectors;
    const int64_t o2 = r % p.out[2];
    r /= p.out[2];
    const int64_t o1 = r % p.out[1];
    r /= p.out[1];
    const int64_t o0 = r % p.out[0];
    const int64_t n = r / p.out[0];
    const int64_t s0 = o0 * p.stride[0] - p.pad_begin[0];
    const int64_t s1 = o1 * p.stride[1] - p.pad_begin[1];
    const int64_t s2 = o2 * p.stride[2] - p.pad_begin[2];
    const T* in = x + n * p.in[0] * p.in[1] * p.in[2] * p.channels + c0;
    float best[V], sum[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      best[k] = -INFINITY;
      sum[k] = 0.0f;
    }
    int64_t inside = 0;
    int64_t padded = 0;
    for (int64_t k0 = 0; k0 < p.kernel[0]; ++k0) {
      const int64_t c0i = s0 + k0 * p.dilation[0];
      if (c0i >= p.in[0] + p.pad_end[0]) break;
      const bool in0 = c0i >= 0 && c0i < p.in[0];
      for (int64_t k1 = 0; k1 < p.kernel[1]; ++k1) {
        const int64_t c1i = s1 + k1 * p.dilation[1];
        if (c1i >= p.in[1] + p.pad_end[1]) break;
        const bool in1 = in0 && c1i >= 0 && c1i < p.in[1];
        for (int64_t k2 = 0; k2 < p.kernel[2]; ++k2) {
          const int64_t c2i = s2 + k2 * p.dilation[2];
          if (c2i >= p.in[2] + p.pad_end[2]) break;
          ++padded;
          if (!in1 || c2i < 0 || c2i >= p.in[2]) continue;
          const vec<T, V> v = *reinterpret_cast<const vec<T, V>*>(
              in + ((c0i * p.in[1] + c1i) * p.in[2] + c2i) * p.channels);
#pragma unroll
          for (int k = 0; k < V; ++k) {
            const float f = load(v.v, k);
            best[k] = (f > best[k] || f != f) ? f : best[k];
            sum[k] += f;
          }
          ++inside;
        }
      }
    }
    const int64_t count = p.count_include_pad ? padded : inside;
    vec<T, V> out;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      store(out.v, k, p.is_max ? best[k] : (count > 0 ? sum[k] / static_cast<float>(count) : 0.0f));
    }
    *reinterpret_cast<vec<T, V>*>(
        y + ((n * p.out[0] + o0) * p.out[1] + o1) * p.out[2] * p.channels + o2 * p.channels + c0) =
        out;
  }
}

template <class T, int V>
status launch_channels_last(const void* x, void* y, const pool_plan& p, cudaStream_t s) {
  const int64_t n = p.planes * p.out[0] * p.out[1] * p.out[2] * (p.channels / V);
  pool_channels_last_kernel<T, V>
      <<<grid_for(n), kBlockThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), p);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

/// The widest vector (up to 16 bytes) that divides C and keeps every access aligned.
template <class T>
int vector_width(const void* x, const void* y, int64_t channels) {
  const auto aligned = [&](size_t bytes) {
    return reinterpret_cast<uintptr_t>(x) % bytes == 0 &&
           reinterpret_cast<uintptr_t>(y) % bytes == 0;
  };
  for (int v = static_cast<int>(16 / sizeof(T)); v > 1; v /= 2) {
    if (channels % v == 0 && aligned(sizeof(T) * static_cast<size_t>(v))) return v;
  }
  return 1;
}

template <class T>
status launch_pool_channels_last(const void* x, void* y, const pool_plan& p, cudaStream_t s) {
  switch (vector_width<T>(x, y, p.channels)) {
    case 8:
      return launch_channels_last<T, 8>(x, y, p, s);
    case 4:
      return launch_channels_last<T, 4>(x, y, p, s);
    case 2:
      return launch_channels_last<T, 2>(x, y, p, s);
    default:
      return launch_channels_last<T, 1>(x, y, p, s);
  }
}

constexpr int kGlobalLanes = 32;  // channels per block
constexpr int kGlobalRows = 8;    // positions read at once per channel

/// Channels-last global pooling: block (n, 32-channel tile); its 8 rows of 32 lanes stride
/// through the positions (reads coalesced over channels), then fold their partials.
template <class T>
__global__ void global_pool_channels_last_kernel(const T* x, T* y, int64_t plane, int64_t channels,
                                                 bool is_max) {
  __shared__ float part[kGlobalRows][kGlobalLanes];
  const int64_t tiles = (channels + kGlobalLanes - 1) / kGlobalLanes;
  const int64_t n = blockIdx.x / tiles;
  const int64_t c = (blockIdx.x % tiles) * kGlobalLanes + threadIdx.x;
  float acc = is_max ? -INFINITY : 0.0f;
  if (c < channels) {
    const T* xn = x + n * plane * channels + c;
    for (int64_t j = threadIdx.y; j < plane; j += kGlobalRows) {
      const float v = load(xn, j * channels);
      acc = is_max ? ((v > acc || v != v) ? v : acc) : acc + v;
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= channels) return;
  for (int k = 1; k < kGlobalRows; ++k) {
    const float v = part[k][threadIdx.x];
    acc = is_max ? ((v > acc || v != v) ? v : acc) : acc + v;
  }
  store(y, n * channels + c, is_max ? acc : acc / static_cast<float>(plane));
}

template <class T>
status launch_global(const void* x, void* y, int64_t batch, int64_t plane, int64_t channels,
                     bool is_max, cudaStream_t s) {
  const int64_t blocks = batch * ((channels + kGlobalLanes - 1) / kGlobalLanes);
  if (blocks > INT32_MAX) return unsupported("global pooling over more than 2^31 blocks");
  global_pool_channels_last_kernel<T>
      <<<static_cast<unsigned>(blocks), dim3(kGlobalLanes, kGlobalRows), 0, s>>>(
          static_cast<const T*>(x), static_cast<T*>(y), plane, channels, is_max);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

}  // namespace

status launch_global_pool_channels_last(dtype t, const void* x, void* y, int64_t batch,
                                        int64_t plane, int64_t channels, bool is_max,
                                        void* stream) {
  if (batch * channels == 0) return status::ok();
  if (plane <= 0) return invalid_argument("global pooling over an empty plane");
  const cudaStream_t s = to_stream(stream);
  if (t == dtype::f32) return launch_global<float>(x, y, batch, plane, channels, is_max, s);
  if (t == dtype::f16) return launch_global<__half>(x, y, batch, plane, channels, is_max, s);
  if (t == dtype::bf16) {
    return launch_global<__nv_bfloat16>(x, y, batch, plane, channels, is_max, s);
  }
  return unsupported("pooling on dtype " + std::string(dtype_name(t)));
}

status launch_pool(dtype t, const void* x, void* y, const pool_plan& p, void* stream) {
  const int64_t n = p.planes * p.out[0] * p.out[1] * p.out[2];
  if (n == 0 || (p.channels_last && p.channels == 0)) return status::ok();
  const cudaStream_t s = to_stream(stream);
  if (p.channels_last) {
    if (t == dtype::f32) return launch_pool_channels_last<float>(x, y, p, s);
    if (t == dtype::f16) return launch_pool_channels_last<__half>(x, y, p, s);
    if (t == dtype::bf16) return launch_pool_channels_last<__nv_bfloat16>(x, y, p, s);
    return unsupported("pooling on dtype " + std::string(dtype_name(t)));
  }
  if (t == dtype::f32) {
    pool_kernel<float><<<grid_for(n), kBlockThreads, 0, s>>>(static_cast<const float*>(x),
                                                             static_cast<float*>(y), p);
  } else if (t == dtype::f16) {
    pool_kernel<__half><<<grid_for(n), kBlockThreads, 0, s>>>(static_cast<const __half*>(x),
                                                              static_cast<__half*>(y), p);
  } else if (t == dtype::bf16) {
    pool_kernel<__nv_bfloat16><<<grid_for(n), kBlockThreads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), p);
  } else {
    return unsupported("pooling on dtype " + std::string(dtype_name(t)));
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

}  // namespace troupe::kernels::cuda
