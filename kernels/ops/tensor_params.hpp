#pragma once
/// Parameters of data-movement ops that both their shape functions (tensor_schemas.cpp) and their
/// kernels need, resolved once from attributes and plan-time input values in every opset form
/// (Slice's attributes before opset 10 and inputs after, Pad's axes at 18, Resize's four forms...).
/// Keeping one resolver per op means a kernel can never disagree with the shape it was given.

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/op_node.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"

namespace troupe::kernels {

/// What a resolver reads of a node: the same fields in an infer_context and a
/// kernel_create_context.
struct op_view {
  const op_node& node;
  std::span<const tensor_info> inputs;
  std::span<const tensor* const> values;

  explicit op_view(const infer_context& c)
      : node(c.node), inputs(c.inputs), values(c.input_values) {}
  explicit op_view(const kernel_create_context& c)
      : node(c.node), inputs(c.inputs), values(c.input_values) {}

  bool has_input(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const tensor* value(size_t i) const { return i < values.size() ? values[i] : nullptr; }
  int64_t opset() const { return node.opset; }
  /// invalid_model, prefixed with the node's description.
  status bad(const std::string& what) const;
  /// unsupported, prefixed with the node's description.
  status unsupported_case(const std::string& what) const;
  /// The same error as infer_context::needs_constant.
  status needs_constant(size_t i) const;
};

/// Slice: per input axis, the first element read and the step (0 and 1 on axes not sliced).
/// Starts are clamped so that every read index stays inside the input.
struct slice_params {
  shape_t out_shape;
  std::vector<int64_t> starts;
  std::vector<int64_t> steps;
};
expected<slice_params> resolve_slice(const op_view& v);

enum class pad_mode : uint8_t { constant, reflect, edge };
/// Pad: per input axis, elements added before and after (negative values crop).
struct pad_params {
  pad_mode mode = pad_mode::constant;
  std::vector<int64_t> begin;
  std::vector<int64_t> end;
  shape_t out_shape;
  /// The constant before opset 11 (attribute 'value'); from 11 on it is input 2, read at run time.
  double attr_value = 0;
};
expected<pad_params> resolve_pad(const op_view& v);

/// Split: the normalized axis and the size of each output along it.
struct split_params {
  int64_t axis = 0;
  std::vector<int64_t> sizes;
};
expected<split_params> resolve_split(const op_view& v, size_t num_outputs);

enum class resize_mode : uint8_t { nearest, linear, cubic };
enum class resize_coord : uint8_t {
  half_pixel,
  half_pixel_symmetric,
  pytorch_half_pixel,
  align_corners,
  asymmetric,
  tf_half_pixel_for_nn,
  tf_crop_and_resize,
};
enum class nearest_rounding : uint8_t {
  round_prefer_floor,
  round_prefer_ceil,
  floor,
  ceil,
  simple,  // Resize-10 and Upsample: floor when upsampling, ceil when downsampling (as ONNX
           // Runtime)
};

/// Resize (opsets 10-18) and Upsample (7-9), reduced to one form: a scale, an output size and an
/// ROI per input axis. Scales are the model's (not out/in), as the spec's coordinate formulas use.
struct resize_params {
  resize_mode mode = resize_mode::nearest;
  resize_coord coord = resize_coord::half_pixel;
  nearest_rounding rounding = nearest_rounding::round_prefer_floor;
  float cubic_coeff_a = -0.75f;
  bool exclude_outside = false;
  bool antialias = false;
  float extrapolation_value = 0.0f;
  std::vector<double> scales;     // per axis
  std::vector<double> roi_start;  // per axis, only read by tf_crop_and_resize
  std::vector<double> roi_end;
  /// Per axis: the "length_resized" of the coordinate formulas: scale * in when scales were given
  /// (as ONNX's reference), the requested size when sizes were.
  std::vector<double> out_width;
  shape_t out_shape;
};
expected<resize_params> resolve_resize(const op_view& v);

/// Shape's [start, end) over an input of `rank` dims (opset 15 attributes; negative counts from
/// the end, clamped to [0, rank]; end <= start gives an empty range).
std::pair<int64_t, int64_t> shape_op_range(const op_node& node, int64_t rank);

/// Multiplies dims, failing on a negative dim or an element count past 2^62.
expected<int64_t> checked_element_count(const shape_t& shape);

}  // namespace troupe::kernels
