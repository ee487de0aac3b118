#include "runtime/graph.hpp"

#include <cmath>
#include <queue>
#include <utility>

namespace troupe::runtime {

std::string dim::to_string() const {
  if (size >= 0) return std::to_string(size);
  return symbol.empty() ? "?" : symbol;
}

std::string symbolic_shape_to_string(const symbolic_shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ",";
    out += s[i].to_string();
  }
  return out + "]";
}

int graph::add_value(value v) {
  const int id = static_cast<int>(values.size());
  if (!v.name.empty()) index_[v.name] = id;
  values.push_back(std::move(v));
  return id;
}

int graph::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? -1 : it->second;
}

int64_t graph::opset(const std::string& domain) const {
  auto it = opsets.find(domain == "ai.onnx" ? "" : domain);
  return it == opsets.end() ? 0 : it->second;
}

status graph::sort_topologically() {
  for (auto& v : values) v.producer = -1;
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (int out : nodes[n].outputs) {
      if (out < 0) continue;
      if (values[out].producer >= 0 || values[out].constant || values[out].is_graph_input) {
        return invalid_model("value '" + values[out].name + "' is defined more than once (node '" +
                             nodes[n].op.name + "')");
      }
      values[out].producer = static_cast<int>(n);
    }
  }
  // Kahn's algorithm, stable: among ready nodes the earliest in model order runs first.
  std::vector<int> pending(nodes.size(), 0);
  std::vector<std::vector<int>> consumers(nodes.size());
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (int in : nodes[n].inputs) {
      if (in < 0) continue;
      const value& v = values[in];
      if (v.producer >= 0) {
        ++pending[n];
        consumers[v.producer].push_back(static_cast<int>(n));
      } else if (!v.constant && !v.is_graph_input) {
        return invalid_model("node '" + nodes[n].op.name + "' (" + nodes[n].op.op_type +
                             ") uses '" + v.name +
                             "', which no node, input or initializer defines");
      }
    }
  }
  std::priority_queue<int, std::vector<int>, std::greater<int>> ready;
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (pending[n] == 0) ready.push(static_cast<int>(n));
  }
  std::vector<int> order;
  order.reserve(nodes.size());
  while (!ready.empty()) {
    const int n = ready.top();
    ready.pop();
    order.push_back(n);
    for (int c : consumers[n]) {
      if (--pending[c] == 0) ready.push(c);
    }
  }
  if (order.size() != nodes.size()) return invalid_model("the graph has a cycle");
  std::vector<node> sorted;
  sorted.reserve(nodes.size());
  for (int n : order) sorted.push_back(std::move(nodes[n]));
  nodes = std::move(sorted);
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (int out : nodes[n].outputs) {
      if (out >= 0) values[out].producer = static_cast<int>(n);
    }
  }
  for (int out : outputs) {
    const value& v = values[out];
    if (v.producer < 0 && !v.constant && !v.is_graph_input) {
      return invalid_model("graph output '" + v.name + "' is not produced by any node");
    }
  }
  return status::ok();
}

int graph::add_constant(const std::string& name, tensor t) {
  value v;
  v.name = name;
  v.type = t.type();
  v.shape = t.shape();
  v.constant = std::move(t);
  return add_value(std::move(v));
}

std::vector<std::vector<int>> graph::readers() const {
  std::vector<std::vector<int>> r(values.size());
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (int in : nodes[n].inputs) {
      if (in >= 0) r[static_cast<size_t>(in)].push_back(static_cast<int>(n));
    }
  }
  return r;
}

void graph::remove_nodes(const std::vector<char>& removed) {
  std::vector<node> kept;
  kept.reserve(nodes.size());
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (!removed[n]) kept.push_back(std::move(nodes[n]));
  }
  nodes = std::move(kept);
}

std::optional<double> scalar_constant(const graph& g, int v) {
  if (v < 0) return std::nullopt;
  const value& x = g.values[static_cast<size_t>(v)];
  if (!x.constant || x.constant->elements() != 1 || !is_floating(x.type)) return std::nullopt;
  return x.constant->value_as_double(0);
}

std::optional<std::pair<float, float>> constant_clip_bounds(const graph& g, const node& n) {
  float lo = -INFINITY, hi = INFINITY;
  if (n.op.opset < 11) {
    return std::make_pair(n.op.attrs.get_float("min", lo), n.op.attrs.get_float("max", hi));
  }
  if (n.inputs.size() > 1 && n.inputs[1] >= 0) {
    const auto v = scalar_constant(g, n.inputs[1]);
    if (!v) return std::nullopt;
    lo = static_cast<float>(*v);
  }
  if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
    const auto v = scalar_constant(g, n.inputs[2]);
    if (!v) return std::nullopt;
    hi = static_cast<float>(*v);
  }
  return std::make_pair(lo, hi);
}

std::vector<int> graph::use_counts() const {
  std::vector<int> uses(values.size(), 0);
  for (const auto& n : nodes) {
    for (int in : n.inputs) {
      if (in >= 0) ++uses[in];
    }
  }
  for (int out : outputs) ++uses[out];
  return uses;
}

void graph::remove_dead() {
  // Mark live values backwards from the outputs (nodes are in topological order).
  std::vector<char> live_value(values.size(), 0);
  for (int out : outputs) live_value[out] = 1;
  for (int in : inputs) live_value[in] = 1;  // inputs stay part of the signature
  std::vector<char> live_node(nodes.size(), 0);
  for (size_t i = nodes.size(); i-- > 0;) {
    bool needed = false;
    for (int out : nodes[i].outputs) needed |= out >= 0 && live_value[out];
    if (!needed) continue;
    live_node[i] = 1;
    for (int in : nodes[i].inputs) {
      if (in >= 0) live_value[in] = 1;
    }
  }
  std::vector<node> kept_nodes;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (live_node[i]) kept_nodes.push_back(std::move(nodes[i]));
  }
  // Values produced by live nodes stay (even unused optional outputs keep their slot).
  for (const auto& n : kept_nodes) {
    for (int out : n.outputs) {
      if (out >= 0) live_value[out] = 1;
    }
  }
  std::vector<int> remap(values.size(), -1);
  std::vector<value> kept_values;
  index_.clear();
  for (size_t i = 0; i < values.size(); ++i) {
    if (!live_value[i]) continue;
    remap[i] = static_cast<int>(kept_values.size());
    if (!values[i].name.empty()) index_[values[i].name] = remap[i];
    kept_values.push_back(std::move(values[i]));
  }
  for (auto& n : kept_nodes) {
    for (int& in : n.inputs) in = in >= 0 ? remap[in] : -1;
    for (int& out : n.outputs) out = out >= 0 ? remap[out] : -1;
  }
  for (int& in : inputs) in = remap[in];
  for (int& out : outputs) out = remap[out];
  values = std::move(kept_values);
  nodes = std::move(kept_nodes);
  for (auto& v : values) v.producer = -1;
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (int out : nodes[n].outputs) {
      if (out >= 0) values[out].producer = static_cast<int>(n);
    }
  }
}

}  // namespace troupe::runtime
