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

}  // namespace

status launch_pool(dtype t, const void* x, void* y, const pool_plan& p, void* stream) {
  const int64_t n = p.planes * p.out[0] * p.out[1] * p.out[2];
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  if (t == dtype::f32) {
    pool_kernel<float><<<grid_for(n), kBlockThreads, 0, s>>>(static_cast<const float*>(x),
                                                             static_cast<float*>(y), p);
  } else if (t == dtype::f16) {
    pool_kernel<__half><<<grid_for(n), kBlockThreads, 0, s>>>(static_cast<const __half*>(x),
                                                              static_cast<__half*>(y), p);
  } else {
    return unsupported("pooling on dtype " + std::string(dtype_name(t)));
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

}  // namespace troupe::kernels::cuda
