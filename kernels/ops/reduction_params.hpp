#pragma once
/// Parameters of the reduction and normalisation ops that both their shape functions
/// (reduction_schemas.cpp, which defines these resolvers) and their kernels need, resolved once
/// from attributes and plan-time input values in every opset form (Reduce* axes as an attribute
/// or, from opset 18 - ReduceSum 13 - an input; TopK's k as an attribute before opset 10; the
/// Softmax family's 2-D coercion before 13). One resolver per op keeps a kernel from ever
/// disagreeing with the shape it was given.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/op_node.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"

namespace troupe::kernels {

/// The fields a resolver reads, the same in an infer_context and a kernel_create_context.
struct reduction_view {
  const op_node& node;
  std::span<const tensor_info> inputs;
  std::span<const tensor* const> values;

  explicit reduction_view(const infer_context& c)
      : node(c.node), inputs(c.inputs), values(c.input_values) {}
  explicit reduction_view(const kernel_create_context& c)
      : node(c.node), inputs(c.inputs), values(c.input_values) {}

  bool has_input(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const tensor* value(size_t i) const { return i < values.size() ? values[i] : nullptr; }
  status fail(error_code code, const std::string& what) const {
    return status(code, node.describe() + ": " + what);
  }
  status bad(const std::string& what) const { return fail(error_code::invalid_model, what); }
};

/// Reduce*: which input axes are reduced, or none at all (noop_with_empty_axes with no axes:
/// the output is the input).
struct reduce_params {
  std::vector<bool> reduced;  // one flag per input axis
  bool noop = false;
  shape_t out_shape;
};
expected<reduce_params> resolve_reduce(const reduction_view& v);

/// ArgMax / ArgMin.
struct arg_reduce_params {
  int64_t axis = 0;  // normalised
  bool select_last_index = false;
  shape_t out_shape;
};
expected<arg_reduce_params> resolve_arg_reduce(const reduction_view& v);

/// TopK: outputs values and int64 indices, both of out_shape.
struct topk_params {
  int64_t axis = 0;  // normalised
  int64_t k = 0;
  bool largest = true;
  bool sorted = true;
  shape_t out_shape;
};
expected<topk_params> resolve_topk(const reduction_view& v);

/// Softmax, LogSoftmax, Hardmax: rows of `axis_size` elements `inner` apart. Before opset 13 the
/// input is coerced to 2-D at the axis, so the row is everything from the axis on (inner = 1).
struct softmax_params {
  int64_t outer = 1;      // rows before the axis
  int64_t axis_size = 1;  // elements reduced per row
  int64_t inner = 1;      // elements after the axis (stride between a row's elements)
};
expected<softmax_params> resolve_softmax(const reduction_view& v);

/// LayerNormalization: normalises over axes [axis, rank); Scale and B broadcast to those axes.
struct layer_norm_params {
  int64_t axis = 0;      // normalised
  int64_t rows = 1;      // product of dims before the axis
  int64_t row_size = 1;  // product of dims from the axis
  float epsilon = 1e-5f;
  shape_t stat_shape;  // Mean / InvStdDev: X's dims before the axis, then 1s
};
expected<layer_norm_params> resolve_layer_norm(const reduction_view& v);

}  // namespace troupe::kernels
