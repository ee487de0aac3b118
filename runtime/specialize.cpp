#include "runtime/specialize.hpp"

#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"

namespace troupe::runtime {
namespace {

bool is_shape_only_op(const op_node& op) {
  return op.domain.empty() && (op.op_type == "Shape" || op.op_type == "Size");
}

/// Runs the node's CPU kernel on known inputs. Returns false (no error) when the CPU backend cannot
/// run it at plan time; the node then stays in the graph.
expected<bool> fold_node(graph& g, const node& n, const std::vector<tensor_info>& in_infos,
                         const std::vector<const tensor*>& in_values,
                         const std::vector<tensor_info>& out_infos) {
  size_t out_bytes = 0;
  for (const auto& oi : out_infos) out_bytes += oi.bytes();
  if (out_bytes > max_folded_bytes) return false;

  kernels::kernel_create_context cc{n.op, in_infos, in_values, out_infos, nullptr};
  auto k = kernels::kernel_registry::standard().create(kernels::backend::cpu, cc);
  if (!k) {
    if (k.error().code() == error_code::unsupported) return false;
    return k.error();
  }
  std::vector<tensor> inputs(in_infos.size());
  for (size_t i = 0; i < in_infos.size(); ++i) {
    if (!in_infos[i].present()) continue;
    inputs[i] = in_values[i] ? *in_values[i]
                             : tensor::borrow(in_infos[i].type, in_infos[i].shape, nullptr);  // Shape/Size
  }
  std::vector<tensor> outputs;
  outputs.reserve(out_infos.size());
  if ((*k)->is_view()) {
    outputs.push_back(inputs[0].reshaped(out_infos[0].shape).clone());
  } else {
    for (const auto& oi : out_infos) outputs.push_back(tensor::allocate(oi.type, oi.shape));
    std::vector<uint8_t> workspace((*k)->workspace_bytes() + 64);
    kernels::kernel_run_context rc{inputs, outputs, workspace.data(), nullptr};
    TROUPE_RETURN_IF_ERROR((*k)->compute(rc));
  }
  for (size_t o = 0; o < n.outputs.size() && o < outputs.size(); ++o) {
    if (n.outputs[o] >= 0) g.values[n.outputs[o]].constant = std::move(outputs[o]);
  }
  return true;
}

}  // namespace

status check_input(const value& declared, const tensor_info& given) {
  if (given.type != declared.type) {
    return invalid_argument("input '" + declared.name + "' must be " + std::string(dtype_name(declared.type)) +
                            ", got " + std::string(dtype_name(given.type)));
  }
  if (!declared.declared_shape) return status::ok();
  const auto& ds = *declared.declared_shape;
  if (ds.size() != given.shape.size()) {
    return invalid_argument("input '" + declared.name + "' must have rank " + std::to_string(ds.size()) + " " +
                            symbolic_shape_to_string(ds) + ", got " + shape_to_string(given.shape));
  }
  for (size_t i = 0; i < ds.size(); ++i) {
    if (given.shape[i] < 0) return invalid_argument("input '" + declared.name + "' has a negative dimension");
    if (ds[i].is_static() && ds[i].size != given.shape[i]) {
      return invalid_argument("input '" + declared.name + "' dimension " + std::to_string(i) + " must be " +
                              std::to_string(ds[i].size) + ", got " + shape_to_string(given.shape) +
                              " (declared " + symbolic_shape_to_string(ds) + ")");
    }
  }
  return status::ok();
}

namespace {

status propagate(graph& g, const std::vector<tensor_info>& input_infos, std::vector<char>& folded) {
  if (input_infos.size() != g.inputs.size()) {
    return invalid_argument("the model takes " + std::to_string(g.inputs.size()) + " inputs, got " +
                            std::to_string(input_infos.size()));
  }
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    value& v = g.values[g.inputs[i]];
    TROUPE_RETURN_IF_ERROR(check_input(v, input_infos[i]));
    v.shape = input_infos[i].shape;
  }
  for (auto& v : g.values) {
    if (v.constant) {
      v.type = v.constant->type();
      v.shape = v.constant->shape();
    }
  }

  const auto& schemas = kernels::schema_registry::standard();
  folded.assign(g.nodes.size(), 0);
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const node& n = g.nodes[ni];
    const kernels::op_schema* schema = schemas.find(n.op.domain, n.op.op_type);
    if (!schema) return unsupported(n.op.describe() + " is not supported by troupe");
    if (n.op.opset < schema->min_opset || n.op.opset > schema->max_opset) {
      return unsupported(n.op.describe() + " at opset " + std::to_string(n.op.opset) +
                         " is not supported (troupe implements opsets " + std::to_string(schema->min_opset) +
                         " to " + std::to_string(schema->max_opset) + " of it)");
    }
    std::vector<tensor_info> in_infos(n.inputs.size());
    std::vector<const tensor*> in_values(n.inputs.size(), nullptr);
    bool all_known = true;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (n.inputs[i] < 0) continue;
      const value& v = g.values[n.inputs[i]];
      if (v.type == dtype::undefined) {
        return internal_error(n.op.describe() + ": input '" + v.name + "' has no inferred type");
      }
      in_infos[i] = v.info();
      if (v.constant) in_values[i] = &*v.constant;
      else all_known = false;
    }
    kernels::infer_context ic{n.op, in_infos, in_values, n.outputs.size()};
    auto out_infos = schema->infer(ic);
    if (!out_infos) return out_infos.error();
    if (out_infos->size() < n.outputs.size()) {
      return internal_error(n.op.describe() + ": shape inference gave " + std::to_string(out_infos->size()) +
                            " outputs, the node has " + std::to_string(n.outputs.size()));
    }
    out_infos->resize(n.outputs.size());
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      if (n.outputs[o] < 0) continue;
      value& v = g.values[n.outputs[o]];
      v.type = (*out_infos)[o].type;
      v.shape = (*out_infos)[o].shape;
    }
    if (schema->foldable && (all_known || is_shape_only_op(n.op))) {
      TROUPE_ASSIGN_OR_RETURN(bool did_fold, fold_node(g, n, in_infos, in_values, *out_infos));
      folded[ni] = did_fold;
    }
  }

  return status::ok();
}

}  // namespace

status infer_concrete_shapes(graph& g, const std::vector<tensor_info>& input_infos) {
  std::vector<char> folded;
  return propagate(g, input_infos, folded);
}

status specialize(graph& g, const std::vector<tensor_info>& input_infos) {
  std::vector<char> folded;
  TROUPE_RETURN_IF_ERROR(propagate(g, input_infos, folded));
  std::vector<node> kept;
  kept.reserve(g.nodes.size());
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    if (!folded[ni]) kept.push_back(std::move(g.nodes[ni]));
  }
  g.nodes = std::move(kept);
  g.remove_dead();
  return status::ok();
}

}  // namespace troupe::runtime
