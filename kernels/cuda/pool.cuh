#pragma once
/// Launchers of the pooling kernels (pool.cu): MaxPool / AveragePool over 1 to 3 spatial axes of an
/// NC... tensor (one thread per output element) or of a channels-last N...C tensor (one thread per
/// output position and vector of channels: neighbouring threads read neighbouring channels), and
/// channels-last global pooling. Asymmetric pads, dilations, ceil_mode and count_include_pad are
/// all plain index arithmetic here, which cuDNN's pooling cannot express.
/// Plain C++; pointers are device pointers, `stream` a cudaStream_t; f32/f16/bf16.

#include <cstdint>

#include "core/dtype.hpp"
#include "core/status.hpp"

namespace troupe::kernels::cuda {

/// Spatial arrays are padded to 3 axes with size-1 axes (kernel 1, stride 1, pad 0).
struct pool_plan {
  bool is_max = true;
  bool count_include_pad = false;  // AveragePool: divide by the window's size inside the pads
  bool channels_last = false;      // X, Y stored (N, D..., C)
  int64_t planes = 0;              // N * C (channels_last: N)
  int64_t channels = 1;            // C, read with channels_last only
  int64_t in[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  int64_t pad_begin[3] = {0, 0, 0};
  int64_t pad_end[3] = {0, 0, 0};
};
status launch_pool(dtype t, const void* x, void* y, const pool_plan& plan, void* stream);

/// GlobalAveragePool / GlobalMaxPool of X stored (N, D..., C): Y (N, C) = mean / max over the
/// `plane` positions of each (n, c).
status launch_global_pool_channels_last(dtype t, const void* x, void* y, int64_t batch,
                                        int64_t plane, int64_t channels, bool is_max, void* stream);

}  // namespace troupe::kernels::cuda
