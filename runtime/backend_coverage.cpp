#include "runtime/backend_coverage.hpp"

#include <string>
#include <vector>

#include "kernels/op_schema.hpp"

namespace troupe::runtime {
namespace {

bool is_shape_only_op(const op_node& op) {
  return op.domain.empty() && (op.op_type == "Shape" || op.op_type == "Size");
}

}  // namespace

status check_backend_coverage(const graph& g, kernels::backend where) {
  const auto& schemas = kernels::schema_registry::standard();
  const auto& registry = kernels::kernel_registry::standard();
  // Values every plan knows on the host (specialize folds the nodes computing them with the CPU
  // kernels), in the nodes' topological order.
  std::vector<char> known(g.values.size(), 0);
  for (size_t v = 0; v < g.values.size(); ++v) known[v] = g.values[v].constant.has_value();
  std::string problems;
  auto add = [&](const std::string& p) { problems += (problems.empty() ? "" : "; ") + p; };
  for (const node& n : g.nodes) {
    const kernels::op_schema* schema = schemas.find(n.op.domain, n.op.op_type);
    bool inputs_known = true;
    for (int i : n.inputs)
      if (i >= 0 && !known[static_cast<size_t>(i)]) inputs_known = false;
    const bool folds = schema && schema->foldable && (inputs_known || is_shape_only_op(n.op)) &&
                       registry.has_op(kernels::backend::cpu, n.op.domain, n.op.op_type);
    if (folds)
      for (int o : n.outputs)
        if (o >= 0) known[static_cast<size_t>(o)] = 1;
    if (!folds && !registry.has_op(where, n.op.domain, n.op.op_type)) {
      add(n.op.describe() + " has no kernel on the " + std::string(kernels::backend_name(where)) +
          " backend");
    } else if (!schema) {
      add(n.op.describe() + " is not supported by troupe (no shape function)");
    } else if (n.op.opset < schema->min_opset || n.op.opset > schema->max_opset) {
      add(n.op.describe() + " at opset " + std::to_string(n.op.opset) +
          " is not supported (troupe implements opsets " + std::to_string(schema->min_opset) +
          " to " + std::to_string(schema->max_opset) + " of it)");
    }
  }
  if (!problems.empty()) return unsupported(problems);
  return status::ok();
}

}  // namespace troupe::runtime
