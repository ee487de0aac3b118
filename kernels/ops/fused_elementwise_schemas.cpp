// troupe.FusedElementwise's program resolver and shape function; the op is documented in
// fused_elementwise_params.hpp.
#include <limits>
#include <string>

#include "kernels/ops/fused_elementwise_params.hpp"

namespace troupe::kernels {
namespace {

status bad(const op_node& node, const std::string& what) {
  return status(error_code::invalid_model, node.describe() + ": " + what);
}

expected<std::vector<tensor_info>> infer_fused_elementwise(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_fused_elementwise(c.node, c.inputs));
  return std::vector<tensor_info>{{p.output_type, p.shape}};
}

}  // namespace

bool fused_elementwise_input_supported(dtype t) {
  switch (t) {
    case dtype::u8:
    case dtype::i8:
    case dtype::u16:
    case dtype::i16:
    case dtype::f16:
    case dtype::bf16:
    case dtype::f32:
      return true;
    default:
      return false;
  }
}

bool ew_op_is_binary(ew_op op) {
  switch (op) {
    case ew_op::add:
    case ew_op::sub:
    case ew_op::rsub:
    case ew_op::mul:
    case ew_op::div:
    case ew_op::rdiv:
      return true;
    default:
      return false;
  }
}

std::vector<int64_t> broadcast_strides(const shape_t& constant_shape, const shape_t& out) {
  std::vector<int64_t> strides(out.size(), 0);
  int64_t step = 1;
  const size_t offset = out.size() - constant_shape.size();  // constant rank <= out rank
  for (size_t k = constant_shape.size(); k-- > 0;) {
    strides[offset + k] = constant_shape[k] == 1 ? 0 : step;
    step *= constant_shape[k];
  }
  return strides;
}

fused_elementwise_layout merge_fused_elementwise_layout(const shape_t& out,
                                                        const std::vector<shape_t>& constants) {
  std::vector<std::vector<int64_t>> full;
  for (const auto& c : constants) full.push_back(broadcast_strides(c, out));
  fused_elementwise_layout m;
  m.strides.resize(constants.size());
  for (size_t d = 0; d < out.size(); ++d) {
    if (out[d] == 1) continue;
    bool merge = !m.dims.empty();
    for (size_t c = 0; c < full.size() && merge; ++c)
      merge = m.strides[c].back() == full[c][d] * out[d];
    if (merge) {
      m.dims.back() *= out[d];
      for (size_t c = 0; c < full.size(); ++c) m.strides[c].back() = full[c][d];
    } else {
      m.dims.push_back(out[d]);
      for (size_t c = 0; c < full.size(); ++c) m.strides[c].push_back(full[c][d]);
    }
  }
  if (m.dims.empty()) {  // one element
    m.dims.push_back(1);
    for (auto& s : m.strides) s.push_back(0);
  }
  return m;
}

expected<fused_elementwise_program> resolve_fused_elementwise(const op_node& node,
                                                              std::span<const tensor_info> inputs) {
  if (inputs.empty() || !inputs[0].present()) return bad(node, "input 0 is required");
  fused_elementwise_program p;
  p.input_type = inputs[0].type;
  p.shape = inputs[0].shape;
  if (p.shape.size() > fused_elementwise_max_rank) {
    return status(error_code::unsupported,
                  node.describe() + ": rank above " + std::to_string(fused_elementwise_max_rank));
  }
  if (!fused_elementwise_input_supported(p.input_type)) {
    return status(error_code::unsupported,
                  node.describe() + ": input dtype " + std::string(dtype_name(p.input_type)));
  }
  auto to = dtype_from_onnx(static_cast<int32_t>(node.attrs.get_int("to", 0)));
  if (!to || !is_compute_float(*to))
    return bad(node, "attribute 'to' must be float/float16/bfloat16");
  p.output_type = *to;
  const auto ops = node.attrs.get_ints("ops");
  const auto operands = node.attrs.get_ints("operands");
  const auto params = node.attrs.get_floats("params");
  if (ops.empty() || ops.size() > static_cast<size_t>(fused_elementwise_max_steps)) {
    return bad(node, "needs 1 to " + std::to_string(fused_elementwise_max_steps) + " ops");
  }
  if (operands.size() != ops.size() || params.size() != 2 * ops.size()) {
    return bad(node, "'operands' needs one entry and 'params' two per op");
  }
  p.num_constants = static_cast<int>(inputs.size()) - 1;
  if (p.num_constants > fused_elementwise_max_constants) {
    return bad(node, "more than " + std::to_string(fused_elementwise_max_constants) + " constants");
  }
  for (int i = 1; i <= p.num_constants; ++i) {
    const tensor_info& ci = inputs[static_cast<size_t>(i)];
    if (!ci.present() || ci.type != p.output_type) {
      return bad(node, "constant input " + std::to_string(i) + " must be " +
                           std::string(dtype_name(p.output_type)));
    }
    auto b = broadcast_shapes(ci.shape, p.shape);
    if (!b || *b != p.shape) {
      return bad(node, "constant " + ci.to_string() + " does not broadcast to " +
                           shape_to_string(p.shape));
    }
  }
  for (size_t s = 0; s < ops.size(); ++s) {
    if (ops[s] < 0 || ops[s] >= ew_op_count)
      return bad(node, "unknown op code " + std::to_string(ops[s]));
    ew_step step;
    step.op = static_cast<ew_op>(ops[s]);
    step.lo = params[2 * s];
    step.hi = params[2 * s + 1];
    if (step.op == ew_op::cast && s != 0)
      return bad(node, "a cast is only allowed as the first op");
    if (ew_op_is_binary(step.op)) {
      if (operands[s] < 1 || operands[s] > p.num_constants) {
        return bad(node,
                   "op " + std::to_string(s) + " names constant " + std::to_string(operands[s]));
      }
      step.operand = static_cast<int>(operands[s]);
    } else if (operands[s] != 0) {
      return bad(node, "unary op " + std::to_string(s) + " names an operand");
    }
    p.steps.push_back(step);
  }
  if (p.input_type != p.output_type && p.steps[0].op != ew_op::cast) {
    return bad(node, "input dtype differs from 'to' without a leading cast");
  }
  return p;
}

void register_fused_elementwise_schema(schema_registry& r) {
  // The troupe domain is versioned by troupe itself: any opset is accepted.
  r.add({"troupe",
         "FusedElementwise",
         1,
         std::numeric_limits<int64_t>::max(),
         infer_fused_elementwise,
         true,
         {}});
}

}  // namespace troupe::kernels
