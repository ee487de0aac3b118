// Shape/type inference for reductions (Reduce*, ArgMax/ArgMin, TopK), the Softmax family,
// LayerNormalization and CumSum, plus the parameter resolvers of reduction_params.hpp that the
// kernels share.
#include <algorithm>
#include <string>

#include "kernels/ops/reduction_params.hpp"

namespace troupe::kernels {
namespace {

using infer_result = expected<std::vector<tensor_info>>;

/// A schema of the default domain, foldable when its inputs are constant.
op_schema schema(const char* op, int64_t min_opset, int64_t max_opset, infer_fn infer,
                 std::vector<int> value_inputs = {}) {
  op_schema s;
  s.op_type = op;
  s.min_opset = min_opset;
  s.max_opset = max_opset;
  s.infer = infer;
  s.value_inputs = std::move(value_inputs);
  return s;
}

/// Axis attribute/input value checked against the rank and made non-negative.
expected<int64_t> axis_in_range(const reduction_view& v, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) {
    return v.bad("axis " + std::to_string(axis) + " is out of range for rank " +
                 std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

/// Reduce* take axes from input 1 from opset 18 (ReduceSum from 13), from the attribute before.
bool axes_from_input(const op_node& n) {
  return n.opset >= 18 || (n.op_type == "ReduceSum" && n.opset >= 13);
}

}  // namespace

expected<reduce_params> resolve_reduce(const reduction_view& v) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const tensor_info& x = v.inputs[0];
  const int64_t rank = static_cast<int64_t>(x.rank());
  std::vector<int64_t> axes;
  bool have_axes = false;
  if (axes_from_input(v.node) && v.has_input(1)) {
    const tensor* t = v.value(1);
    if (!t)
      return v.fail(error_code::unsupported, "axes (input 1) must be known when the plan is built");
    if (t->type() != dtype::i64 && t->type() != dtype::i32) return v.bad("axes must be int64");
    if (t->rank() > 1) return v.bad("axes must be 1-D");
    axes = t->to_int64_vector();
    have_axes = !axes.empty();
  } else if (v.node.attrs.has("axes")) {
    axes = v.node.attrs.get_ints("axes");
    have_axes = !axes.empty();
  }
  reduce_params p;
  p.reduced.assign(static_cast<size_t>(rank), false);
  if (!have_axes) {
    if (v.node.attrs.get_int("noop_with_empty_axes", 0) != 0) {
      p.noop = true;
      p.out_shape = x.shape;
      return p;
    }
    std::fill(p.reduced.begin(), p.reduced.end(), true);
  }
  for (int64_t a : axes) {
    TROUPE_ASSIGN_OR_RETURN(int64_t axis, axis_in_range(v, a, rank));
    if (p.reduced[static_cast<size_t>(axis)]) {
      return v.bad("axis " + std::to_string(a) + " is repeated");
    }
    p.reduced[static_cast<size_t>(axis)] = true;
  }
  const bool keepdims = v.node.attrs.get_int("keepdims", 1) != 0;
  for (int64_t d = 0; d < rank; ++d) {
    if (!p.reduced[static_cast<size_t>(d)]) {
      p.out_shape.push_back(x.shape[static_cast<size_t>(d)]);
    } else if (keepdims) {
      p.out_shape.push_back(1);
    }
  }
  return p;
}

expected<arg_reduce_params> resolve_arg_reduce(const reduction_view& v) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const tensor_info& x = v.inputs[0];
  const int64_t rank = static_cast<int64_t>(x.rank());
  if (rank == 0) return v.bad("input must have rank >= 1");
  arg_reduce_params p;
  TROUPE_ASSIGN_OR_RETURN(p.axis, axis_in_range(v, v.node.attrs.get_int("axis", 0), rank));
  p.select_last_index = v.node.attrs.get_int("select_last_index", 0) != 0;
  const bool keepdims = v.node.attrs.get_int("keepdims", 1) != 0;
  if (x.shape[static_cast<size_t>(p.axis)] == 0)
    return v.bad("cannot take the arg max/min of an empty axis");
  for (int64_t d = 0; d < rank; ++d) {
    if (d != p.axis) {
      p.out_shape.push_back(x.shape[static_cast<size_t>(d)]);
    } else if (keepdims) {
      p.out_shape.push_back(1);
    }
  }
  return p;
}

expected<topk_params> resolve_topk(const reduction_view& v) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const tensor_info& x = v.inputs[0];
  const int64_t rank = static_cast<int64_t>(x.rank());
  if (rank == 0) return v.bad("input must have rank >= 1");
  topk_params p;
  TROUPE_ASSIGN_OR_RETURN(p.axis, axis_in_range(v, v.node.attrs.get_int("axis", -1), rank));
  if (v.node.opset < 10) {
    auto k = v.node.attrs.require_int("k");
    if (!k) return v.bad(k.error().message());
    p.k = *k;
  } else {
    if (!v.has_input(1)) return v.bad("input K is required");
    const tensor* t = v.value(1);
    if (!t)
      return v.fail(error_code::unsupported, "K (input 1) must be known when the plan is built");
    if (t->elements() != 1 || (t->type() != dtype::i64 && t->type() != dtype::i32)) {
      return v.bad("K must be a one-element int64 tensor, not " + t->info().to_string());
    }
    p.k = t->value_as_int64(0);
  }
  const int64_t dim = x.shape[static_cast<size_t>(p.axis)];
  if (p.k < 0 || p.k > dim) {
    return v.bad("k = " + std::to_string(p.k) + " is outside [0, " + std::to_string(dim) + "]");
  }
  p.largest = v.node.attrs.get_int("largest", 1) != 0;
  p.sorted = v.node.attrs.get_int("sorted", 1) != 0;
  p.out_shape = x.shape;
  p.out_shape[static_cast<size_t>(p.axis)] = p.k;
  return p;
}

expected<softmax_params> resolve_softmax(const reduction_view& v) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const shape_t& s = v.inputs[0].shape;
  const int64_t rank = static_cast<int64_t>(s.size());
  const bool coerce_2d = v.node.opset < 13;
  const int64_t axis_attr = v.node.attrs.get_int("axis", coerce_2d ? 1 : -1);
  softmax_params p;
  if (rank == 0) {  // a scalar is one row of one element
    if (axis_attr != 0 && axis_attr != -1)
      return v.bad("axis " + std::to_string(axis_attr) + " for a scalar");
    return p;
  }
  int64_t axis = 0;
  if (coerce_2d) {  // axis may equal the rank: everything is one row per element
    if (axis_attr < -rank || axis_attr > rank) {
      return v.bad("axis " + std::to_string(axis_attr) + " is out of range for rank " +
                   std::to_string(rank));
    }
    axis = axis_attr < 0 ? axis_attr + rank : axis_attr;
  } else {
    TROUPE_ASSIGN_OR_RETURN(axis, axis_in_range(v, axis_attr, rank));
  }
  for (int64_t d = 0; d < axis; ++d) p.outer *= s[static_cast<size_t>(d)];
  if (coerce_2d) {
    for (int64_t d = axis; d < rank; ++d) p.axis_size *= s[static_cast<size_t>(d)];
  } else {
    p.axis_size = s[static_cast<size_t>(axis)];
    for (int64_t d = axis + 1; d < rank; ++d) p.inner *= s[static_cast<size_t>(d)];
  }
  return p;
}

expected<layer_norm_params> resolve_layer_norm(const reduction_view& v) {
  if (!v.has_input(0) || !v.has_input(1)) return v.bad("inputs X and Scale are required");
  const tensor_info& x = v.inputs[0];
  const int64_t rank = static_cast<int64_t>(x.rank());
  if (rank == 0) return v.bad("X must have rank >= 1");
  layer_norm_params p;
  TROUPE_ASSIGN_OR_RETURN(p.axis, axis_in_range(v, v.node.attrs.get_int("axis", -1), rank));
  p.epsilon = v.node.attrs.get_float("epsilon", 1e-5f);
  const int64_t stash = v.node.attrs.get_int("stash_type", 1);
  if (stash != 1)
    return v.fail(error_code::unsupported,
                  "stash_type " + std::to_string(stash) + " (only 1, float)");
  const shape_t norm_shape(x.shape.begin() + p.axis, x.shape.end());
  for (size_t i = 1; i <= 2; ++i) {
    if (!v.has_input(i)) continue;
    const tensor_info& t = v.inputs[i];
    if (t.type != x.type)
      return v.bad("input " + std::to_string(i) + " dtype differs from X: " + t.to_string());
    auto b = broadcast_shapes(norm_shape, t.shape);
    if (!b || *b != norm_shape) {
      return v.bad("input " + std::to_string(i) + " " + shape_to_string(t.shape) +
                   " does not broadcast to the normalised shape " + shape_to_string(norm_shape));
    }
  }
  for (int64_t d = 0; d < rank; ++d) {
    const int64_t dim = x.shape[static_cast<size_t>(d)];
    if (d < p.axis) {
      p.rows *= dim;
      p.stat_shape.push_back(dim);
    } else {
      p.row_size *= dim;
      p.stat_shape.push_back(1);
    }
  }
  return p;
}

namespace {

infer_result reduce_infer(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_reduce(reduction_view(c)));
  return std::vector<tensor_info>{{c.inputs[0].type, std::move(p.out_shape)}};
}

infer_result arg_reduce_infer(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_arg_reduce(reduction_view(c)));
  return std::vector<tensor_info>{{dtype::i64, std::move(p.out_shape)}};
}

infer_result topk_infer(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_topk(reduction_view(c)));
  return std::vector<tensor_info>{{c.inputs[0].type, p.out_shape}, {dtype::i64, p.out_shape}};
}

infer_result softmax_infer(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(resolve_softmax(reduction_view(c)).take_status());
  return std::vector<tensor_info>{c.inputs[0]};
}

infer_result layer_norm_infer(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_layer_norm(reduction_view(c)));
  std::vector<tensor_info> out{c.inputs[0]};
  for (size_t i = 1; i < std::min<size_t>(c.num_outputs, 3); ++i)
    out.push_back({dtype::f32, p.stat_shape});
  return out;
}

infer_result cumsum_infer(const infer_context& c) {
  if (!c.has_input(0) || !c.has_input(1)) return c.bad("inputs x and axis are required");
  const tensor_info& axis = c.inputs[1];
  if ((axis.type != dtype::i64 && axis.type != dtype::i32) || axis.elements() != 1 ||
      axis.rank() > 1) {
    return c.bad("axis must be a one-element int32/int64 tensor, not " + axis.to_string());
  }
  if (const tensor* a = c.value(1)) {
    const int64_t rank = static_cast<int64_t>(c.inputs[0].rank());
    const int64_t v = a->value_as_int64(0);
    if (v < -rank || v >= rank)
      return c.bad("axis " + std::to_string(v) + " is out of range for rank " +
                   std::to_string(rank));
  }
  return std::vector<tensor_info>{c.inputs[0]};
}

}  // namespace

void register_reduction_schemas(schema_registry& r) {
  for (const char* op :
       {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}) {
    r.add(schema(op, 1, 18, reduce_infer, {1}));
  }
  r.add(schema("ArgMax", 1, 18, arg_reduce_infer));
  r.add(schema("ArgMin", 1, 18, arg_reduce_infer));
  r.add(schema("TopK", 1, 18, topk_infer, {1}));
  for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"})
    r.add(schema(op, 1, 18, softmax_infer));
  // Opset 17 in ai.onnx; ONNX Runtime's exporters emitted the same op in this domain earlier.
  r.add(schema("LayerNormalization", 1, 18, layer_norm_infer));
  r.add(schema("CumSum", 11, 18, cumsum_infer));
}

}  // namespace troupe::kernels
