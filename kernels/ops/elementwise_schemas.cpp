// Shape/type inference for elementwise ops: unary, binary with numpy broadcasting, logic.
#include "kernels/op_schema.hpp"

namespace troupe::kernels {
namespace {

expected<std::vector<tensor_info>> same_as_input0(const infer_context& c) {
  if (!c.has_input(0)) return c.bad("input 0 is required");
  return std::vector<tensor_info>{c.inputs[0]};
}

expected<std::vector<tensor_info>> broadcast_binary(const infer_context& c) {
  if (!c.has_input(0) || !c.has_input(1)) return c.bad("two inputs are required");
  if (c.inputs[0].type != c.inputs[1].type) {
    return c.bad("input dtypes differ: " + c.inputs[0].to_string() + " vs " + c.inputs[1].to_string());
  }
  auto shape = broadcast_shapes(c.inputs[0].shape, c.inputs[1].shape);
  if (!shape) return c.bad(shape.error().message());
  return std::vector<tensor_info>{{c.inputs[0].type, *shape}};
}

}  // namespace

void register_elementwise_schemas(schema_registry& r) {
  r.add({"", "Relu", 1, 18, same_as_input0});
  r.add({"", "Add", 1, 18, broadcast_binary});
}

}  // namespace troupe::kernels
