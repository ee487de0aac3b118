#pragma once
// Resize's per-axis tap tables, shared by the CPU and CUDA kernels so that both pick the same
// input elements and weights: for each output coordinate, K input coordinates (pre-multiplied by
// the input stride) and weights (K = 1 nearest, 2 linear, 4 cubic, more with antialias when
// downscaling). Coordinates are computed in double, as ONNX's reference implementation does, so
// ties in nearest rounding land the same way.
#include <cstdint>
#include <vector>

#include "kernels/ops/tensor_params.hpp"

namespace troupe::kernels {

struct axis_taps {
  int64_t k = 1;                 // taps per output coordinate
  std::vector<int64_t> offset;   // out * k: input coordinate * input stride
  std::vector<float> weight;     // out * k
  std::vector<uint8_t> outside;  // out: tf_crop_and_resize samples outside the input
  bool any_outside = false;
};

/// The taps of one axis of `p` (index `axis`): in_len input and out_len output coordinates,
/// input stride `stride` elements.
axis_taps make_resize_axis(const resize_params& p, size_t axis, int64_t in_len, int64_t out_len,
                           int64_t stride);

/// Whether the taps map every output coordinate to the same input one (an axis left as it is, which
/// a kernel may fold into its batch).
bool resize_axis_is_identity(const axis_taps& a, int64_t in_len, int64_t out_len, int64_t stride);

}  // namespace troupe::kernels
