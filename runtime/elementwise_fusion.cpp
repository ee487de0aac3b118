#include "runtime/elementwise_fusion.hpp"

#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "kernels/ops/fused_elementwise_params.hpp"

namespace troupe::runtime {
namespace {

using kernels::ew_op;
using kernels::ew_step;

/// One node read as a step of a chain: its main input and, for binary steps, its constant.
struct candidate {
  ew_step step;
  int main = -1;      // value flowing through the chain
  int constant = -1;  // value id of the constant operand (binary steps)
};

/// Reads node `n` as a chain step; nullopt when it is none of the fusable forms.
std::optional<candidate> as_step(const graph& g, const node& n) {
  if (!n.op.domain.empty() || n.outputs.size() != 1 || n.outputs[0] < 0 || n.inputs.empty()) {
    return std::nullopt;
  }
  const value& out = g.values[n.outputs[0]];
  if (!is_compute_float(out.type) || out.shape.size() > kernels::fused_elementwise_max_rank) {
    return std::nullopt;
  }
  candidate c;
  const std::string& op = n.op.op_type;
  if (op == "Cast") {
    const int x = n.inputs[0];
    if (x < 0 || !kernels::fused_elementwise_input_supported(g.values[x].type)) return std::nullopt;
    c.step.op = ew_op::cast;
    c.main = x;
  } else if (op == "Relu" || op == "Sigmoid" || op == "Tanh") {
    if (n.inputs.size() != 1) return std::nullopt;
    c.step.op = op == "Relu" ? ew_op::relu : op == "Sigmoid" ? ew_op::sigmoid : ew_op::tanh;
    c.main = n.inputs[0];
  } else if (op == "Clip") {
    const auto bounds = constant_clip_bounds(g, n);
    if (!bounds) return std::nullopt;
    const auto [lo, hi] = *bounds;
    c.step = {ew_op::clip, 0, lo, hi};
    c.main = n.inputs[0];
  } else if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    if (n.inputs.size() != 2 || n.inputs[0] < 0 || n.inputs[1] < 0 || n.inputs[0] == n.inputs[1]) {
      return std::nullopt;
    }
    const bool c0 = g.values[n.inputs[0]].constant.has_value();
    const bool c1 = g.values[n.inputs[1]].constant.has_value();
    if (c0 == c1) return std::nullopt;  // two computed operands, or a foldable node
    const bool swapped = c0;            // the constant is the left operand
    c.main = n.inputs[swapped ? 1 : 0];
    c.constant = n.inputs[swapped ? 0 : 1];
    const value& k = g.values[c.constant];
    if (k.type != out.type) return std::nullopt;
    auto b = kernels::broadcast_shapes(k.shape, out.shape);
    if (!b || *b != out.shape) return std::nullopt;
    if (op == "Add") c.step.op = ew_op::add;
    if (op == "Mul") c.step.op = ew_op::mul;
    if (op == "Sub") c.step.op = swapped ? ew_op::rsub : ew_op::sub;
    if (op == "Div") c.step.op = swapped ? ew_op::rdiv : ew_op::div;
  } else {
    return std::nullopt;
  }
  const value& m = g.values[c.main];
  if (m.shape != out.shape || m.constant)
    return std::nullopt;  // the main operand has the full shape
  if (c.step.op != ew_op::cast && m.type != out.type) return std::nullopt;
  return c;
}

}  // namespace

bool elementwise_fusion_enabled(kernels::backend where) {
  if (const char* env = std::getenv("TROUPE_FUSE_ELEMENTWISE"); env && *env) {
    return std::string(env) != "0";
  }
  (void)where;  // on for every backend that registers troupe.FusedElementwise (CPU and CUDA)
  return true;
}

int fuse_elementwise_chains(graph& g, kernels::backend where) {
  const auto& registry = kernels::kernel_registry::standard();
  if (!registry.has_op(where, "troupe", "FusedElementwise")) return 0;
  const auto readers = g.readers();
  std::vector<char> removed(g.nodes.size(), 0);
  int count = 0;
  // Nodes are in topological order, so a chain's first node is met before its others: a node
  // that could extend an earlier chain has been absorbed (removed) by the time the loop gets here.
  for (size_t first = 0; first < g.nodes.size(); ++first) {
    if (removed[first]) continue;
    auto head = as_step(g, g.nodes[first]);
    if (!head) continue;
    const dtype input_type = g.values[head->main].type;
    const dtype type = g.values[g.nodes[first].outputs[0]].type;
    if (!registry.has_op_for(where, "troupe", "FusedElementwise", input_type)) continue;
    std::vector<int> chain{static_cast<int>(first)};
    std::vector<candidate> steps{*head};
    std::vector<int> constants;  // value ids; input k + 1 of the fused node
    auto constant_slot = [&](int v) {
      for (size_t k = 0; k < constants.size(); ++k) {
        if (constants[k] == v) return static_cast<int>(k) + 1;
      }
      return -1;
    };
    if (head->constant >= 0) constants.push_back(head->constant);
    int out = g.nodes[first].outputs[0];
    while (static_cast<int>(steps.size()) < kernels::fused_elementwise_max_steps) {
      const value& ov = g.values[out];
      if (ov.is_graph_output || readers[out].size() != 1) break;
      const int next = readers[out][0];
      if (removed[next]) break;
      auto s = as_step(g, g.nodes[next]);
      if (!s || s->main != out || s->step.op == ew_op::cast) break;
      if (g.values[g.nodes[next].outputs[0]].type != type) break;
      if (s->constant >= 0 && constant_slot(s->constant) < 0) {
        if (static_cast<int>(constants.size()) == kernels::fused_elementwise_max_constants) break;
        constants.push_back(s->constant);
      }
      chain.push_back(next);
      steps.push_back(*s);
      out = g.nodes[next].outputs[0];
    }
    if (chain.size() < 2) continue;

    node fused;
    fused.op.op_type = "FusedElementwise";
    fused.op.domain = "troupe";
    fused.op.name = g.nodes[first].op.name + ".fused_elementwise";
    fused.op.opset = 1;
    std::vector<int64_t> ops, operands;
    std::vector<float> params;
    for (const candidate& c : steps) {
      ops.push_back(static_cast<int64_t>(c.step.op));
      operands.push_back(c.constant >= 0 ? constant_slot(c.constant) : 0);
      params.push_back(c.step.lo);
      params.push_back(c.step.hi);
    }
    fused.op.attrs.set("to", int64_t{dtype_to_onnx(type)});
    fused.op.attrs.set("ops", ops);
    fused.op.attrs.set("operands", operands);
    fused.op.attrs.set("params", params);
    fused.inputs.push_back(head->main);
    for (int v : constants) fused.inputs.push_back(v);
    fused.outputs = {out};
    // The fused node sits where the last node of the chain was: its constants and main input
    // are defined before the first node, so everything it reads exists by then.
    for (int n : chain) removed[n] = 1;
    removed[chain.back()] = 0;
    g.nodes[chain.back()] = std::move(fused);
    // The rewritten slot holds a troupe node now; as_step refuses non-default domains, so the
    // loop never reads it as a chain head again.
    ++count;
  }
  if (count) {
    g.remove_nodes(removed);
    g.remove_dead();
  }
  return count;
}

}  // namespace troupe::runtime
