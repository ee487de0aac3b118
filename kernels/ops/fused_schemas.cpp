// troupe's fused ops (domain "troupe"), emitted by the runtime's fusion passes:
//   FusedConv   [X, W, B?, Z?]      Y = act(Conv(X, W) + B + Z)
//   FusedMatMul [A, B, bias?, Z?]   Y = act(A @ B + bias + Z), bias 1-D over the last dim
//   FusedGemm   [A, B, C?]          Y = act(alpha * A' @ B' + beta * C)
// Each takes its base op's attributes plus `activation` (string: "" | Relu | Clip | LeakyRelu |
// Sigmoid | HardSigmoid | HardSwish | Tanh | Gelu) and `activation_params` (floats: Clip [min,
// max]; LeakyRelu [alpha]; HardSigmoid [alpha, beta]). Z has the output's shape.
// FusedConv also takes `channels_last` (int, default 0): when 1, X, Z and Y are stored
// channels-last, (N, D1..Dn, C), W stays (M, C/group, k...), and no layout change happens at the
// kernel boundary (oneDNN's convolutions run channels-last natively).
#include <limits>

#include "kernels/op_schema.hpp"
#include "kernels/ops/fused_elementwise_params.hpp"
#include "kernels/ops/nn_geometry.hpp"
#include "kernels/ops/nn_schemas_common.hpp"

namespace troupe::kernels {
namespace {

using infos = std::vector<tensor_info>;

expected<infos> infer_fused_conv(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2, 3}));
  TROUPE_RETURN_IF_ERROR(resolve_activation(c.node).take_status());
  const bool channels_last = is_channels_last(c.node);
  tensor_info x = c.inputs[0];
  if (channels_last) {
    if (x.rank() < 3) return c.bad("X must have rank >= 3, got " + x.to_string());
    x.shape = channels_last_to_logical(x.shape);
  }
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_conv(c.node, x, c.inputs[1]));
  TROUPE_RETURN_IF_ERROR(check_channel_vector(c, 2, g.output_shape[1], "B"));
  const shape_t y = channels_last ? logical_to_channels_last(g.output_shape) : g.output_shape;
  TROUPE_RETURN_IF_ERROR(check_residual(c, 3, y));
  return infos{{c.inputs[0].type, y}};
}

expected<infos> infer_fused_matmul(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2, 3}));
  TROUPE_RETURN_IF_ERROR(resolve_activation(c.node).take_status());
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_matmul(c.node, c.inputs[0], c.inputs[1]));
  if (c.inputs[1].rank() == 1 && c.has_input(2)) {
    return c.fail(error_code::unsupported, "bias with a 1-D B operand");
  }
  TROUPE_RETURN_IF_ERROR(check_channel_vector(c, 2, g.n, "bias"));
  TROUPE_RETURN_IF_ERROR(check_residual(c, 3, g.output_shape));
  return infos{{c.inputs[0].type, g.output_shape}};
}

expected<infos> infer_fused_gemm(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2}));
  TROUPE_RETURN_IF_ERROR(resolve_activation(c.node).take_status());
  const tensor_info none;
  TROUPE_ASSIGN_OR_RETURN(
      auto g, resolve_gemm(c.node, c.inputs[0], c.inputs[1], c.has_input(2) ? c.inputs[2] : none));
  return infos{{c.inputs[0].type, {g.m, g.n}}};
}

// The troupe domain is versioned by troupe itself; any opset the passes stamp on a node is
// accepted.
constexpr int64_t any_opset = std::numeric_limits<int64_t>::max();

}  // namespace

void register_fused_schemas(schema_registry& r) {
  r.add({"troupe", "FusedConv", 1, any_opset, infer_fused_conv, true, {}});
  r.add({"troupe", "FusedMatMul", 1, any_opset, infer_fused_matmul, true, {}});
  r.add({"troupe", "FusedGemm", 1, any_opset, infer_fused_gemm, true, {}});
  register_fused_elementwise_schema(r);  // ops/fused_elementwise_schemas.cpp
}

}  // namespace troupe::kernels
