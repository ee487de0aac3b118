// Shape/type inference for elementwise ops: unary math and activations, broadcasting binary and
// variadic ops, comparisons and logic, Clip, Cast/CastLike, Where.
#include <string>

#include "kernels/op_schema.hpp"

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

infer_result same_as_input0(const infer_context& c) {
  if (!c.has_input(0)) return c.bad("input 0 is required");
  return std::vector<tensor_info>{c.inputs[0]};
}

infer_result bool_like_input0(const infer_context& c) {
  if (!c.has_input(0)) return c.bad("input 0 is required");
  return std::vector<tensor_info>{{dtype::boolean, c.inputs[0].shape}};
}

infer_result bool_input_bool_output(const infer_context& c) {
  if (!c.has_input(0)) return c.bad("input 0 is required");
  if (c.inputs[0].type != dtype::boolean)
    return c.bad("input must be bool, not " + c.inputs[0].to_string());
  return std::vector<tensor_info>{c.inputs[0]};
}

expected<shape_t> broadcast_two(const infer_context& c) {
  if (!c.has_input(0) || !c.has_input(1)) return c.bad("two inputs are required");
  auto shape = broadcast_shapes(c.inputs[0].shape, c.inputs[1].shape);
  if (!shape) return c.bad(shape.error().message());
  return shape;
}

status same_types(const infer_context& c) {
  for (size_t i = 1; i < c.inputs.size(); ++i) {
    if (c.inputs[i].present() && c.inputs[i].type != c.inputs[0].type) {
      return c.bad("input dtypes differ: " + c.inputs[0].to_string() + " vs " +
                   c.inputs[i].to_string());
    }
  }
  return status::ok();
}

infer_result broadcast_binary(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto shape, broadcast_two(c));
  TROUPE_RETURN_IF_ERROR(same_types(c));
  return std::vector<tensor_info>{{c.inputs[0].type, std::move(shape)}};
}

infer_result broadcast_logic(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto shape, broadcast_two(c));
  TROUPE_RETURN_IF_ERROR(same_types(c));
  if (c.inputs[0].type != dtype::boolean)
    return c.bad("inputs must be bool, not " + c.inputs[0].to_string());
  return std::vector<tensor_info>{{dtype::boolean, std::move(shape)}};
}

infer_result broadcast_compare(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto shape, broadcast_two(c));
  TROUPE_RETURN_IF_ERROR(same_types(c));
  return std::vector<tensor_info>{{dtype::boolean, std::move(shape)}};
}

/// Pow: the exponent's dtype may differ from the base's (opset 12+); the output has the base's.
infer_result pow_infer(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto shape, broadcast_two(c));
  return std::vector<tensor_info>{{c.inputs[0].type, std::move(shape)}};
}

/// PRelu: the slope broadcasts to X (unidirectionally), so Y has X's shape.
infer_result prelu_infer(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto shape, broadcast_two(c));
  TROUPE_RETURN_IF_ERROR(same_types(c));
  if (shape != c.inputs[0].shape) {
    return c.bad("slope " + shape_to_string(c.inputs[1].shape) + " does not broadcast to X " +
                 shape_to_string(c.inputs[0].shape));
  }
  return std::vector<tensor_info>{c.inputs[0]};
}

/// Sum, Mean, Max, Min: one or more inputs of one dtype, broadcast together.
infer_result variadic_infer(const infer_context& c) {
  if (c.inputs.empty()) return c.bad("at least one input is required");
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!c.inputs[i].present()) return c.bad("input " + std::to_string(i) + " is absent");
  }
  TROUPE_RETURN_IF_ERROR(same_types(c));
  auto shape = broadcast_all(c.inputs);
  if (!shape) return c.bad(shape.error().message());
  return std::vector<tensor_info>{{c.inputs[0].type, std::move(*shape)}};
}

infer_result where_infer(const infer_context& c) {
  if (c.inputs.size() != 3 || !c.has_input(0) || !c.has_input(1) || !c.has_input(2)) {
    return c.bad("three inputs are required");
  }
  if (c.inputs[0].type != dtype::boolean)
    return c.bad("condition must be bool, not " + c.inputs[0].to_string());
  if (c.inputs[1].type != c.inputs[2].type) {
    return c.bad("X and Y dtypes differ: " + c.inputs[1].to_string() + " vs " +
                 c.inputs[2].to_string());
  }
  auto shape = broadcast_all(c.inputs);
  if (!shape) return c.bad(shape.error().message());
  return std::vector<tensor_info>{{c.inputs[1].type, std::move(*shape)}};
}

/// Clip: optional min/max inputs (opset 11+) must be one-element tensors of X's dtype.
infer_result clip_infer(const infer_context& c) {
  if (!c.has_input(0)) return c.bad("input 0 is required");
  for (size_t i = 1; i < c.inputs.size() && i <= 2; ++i) {
    if (!c.inputs[i].present()) continue;
    if (c.inputs[i].type != c.inputs[0].type || c.inputs[i].elements() != 1) {
      return c.bad("input " + std::to_string(i) + " must be a one-element " +
                   std::string(dtype_name(c.inputs[0].type)) + " tensor, not " +
                   c.inputs[i].to_string());
    }
  }
  return std::vector<tensor_info>{c.inputs[0]};
}

infer_result cast_infer(const infer_context& c) {
  if (!c.has_input(0)) return c.bad("input 0 is required");
  auto to = c.node.attrs.require_int("to");
  if (!to) return c.bad(to.error().message());
  auto type = dtype_from_onnx(static_cast<int32_t>(*to));
  if (!type) return c.fail(error_code::unsupported, type.error().message());
  return std::vector<tensor_info>{{*type, c.inputs[0].shape}};
}

infer_result castlike_infer(const infer_context& c) {
  if (!c.has_input(0) || !c.has_input(1)) return c.bad("two inputs are required");
  return std::vector<tensor_info>{{c.inputs[1].type, c.inputs[0].shape}};
}

}  // namespace

void register_elementwise_schemas(schema_registry& r) {
  struct entry {
    const char* op;
    int64_t min_opset;
  };
  // One input, output of the same dtype and shape.
  for (entry e : {entry{"Neg", 1},   {"Abs", 1},       {"Sqrt", 1},     {"Exp", 1},
                  {"Log", 1},        {"Erf", 9},       {"Tanh", 1},     {"Sigmoid", 1},
                  {"Relu", 1},       {"LeakyRelu", 1}, {"Elu", 1},      {"Selu", 1},
                  {"Celu", 12},      {"Softplus", 1},  {"Softsign", 1}, {"Reciprocal", 1},
                  {"Floor", 1},      {"Ceil", 1},      {"Round", 11},   {"Sign", 9},
                  {"Sin", 7},        {"Cos", 7},       {"Tan", 7},      {"Asin", 7},
                  {"Acos", 7},       {"Atan", 7},      {"Sinh", 9},     {"Cosh", 9},
                  {"Asinh", 9},      {"Acosh", 9},     {"Atanh", 9},    {"HardSigmoid", 1},
                  {"HardSwish", 14}, {"Mish", 18},     {"Shrink", 9},   {"ThresholdedRelu", 1}}) {
    r.add(schema(e.op, e.min_opset, 18, same_as_input0));
  }
  // Gelu is opset 20; the fusion pass emits it for the erf/tanh subgraphs at any opset.
  r.add(schema("Gelu", 1, 20, same_as_input0));
  r.add(schema("Clip", 1, 18, clip_infer));
  r.add(schema("IsNaN", 9, 18, bool_like_input0));
  r.add(schema("IsInf", 10, 18, bool_like_input0));
  r.add(schema("Not", 1, 18, bool_input_bool_output));
  r.add(schema("Cast", 6, 18, cast_infer));
  r.add(schema("CastLike", 15, 18, castlike_infer));

  // Numpy broadcasting from opset 7 (before: the `broadcast`/`axis` attributes, unsupported).
  for (const char* op : {"Add", "Sub", "Mul", "Div"}) r.add(schema(op, 7, 18, broadcast_binary));
  r.add(schema("Mod", 10, 18, broadcast_binary));
  r.add(schema("Pow", 7, 18, pow_infer));
  r.add(schema("PRelu", 7, 18, prelu_infer));
  for (const char* op : {"And", "Or", "Xor"}) r.add(schema(op, 7, 18, broadcast_logic));
  for (const char* op : {"Equal", "Less", "Greater"}) r.add(schema(op, 7, 18, broadcast_compare));
  for (const char* op : {"LessOrEqual", "GreaterOrEqual"})
    r.add(schema(op, 12, 18, broadcast_compare));
  for (const char* op : {"Sum", "Mean", "Max", "Min"}) r.add(schema(op, 6, 18, variadic_infer));
  r.add(schema("Where", 9, 18, where_infer));
}

}  // namespace troupe::kernels
