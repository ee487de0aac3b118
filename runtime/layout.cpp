#include "runtime/layout.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <string>

#include "kernels/op_schema.hpp"
#include "kernels/ops/nn_geometry.hpp"

namespace troupe::runtime {
namespace {

using kernels::is_channels_last;
using kernels::logical_to_channels_last;

enum class role : uint8_t { none, conv, pool, unary, binary, concat, reduce };

/// How a node would run inside a region.
struct node_plan {
  role kind = role::none;
  size_t rank = 0;                   // rank of the node's layout tensors
  std::vector<int> layout_inputs;    // input positions read in the stored layout
  bool layout_output = true;         // output 0 stored channels-last (false: Reduce, keepdims = 0)
  std::vector<int64_t> reduce_axes;  // Reduce: logical axes reduced (normalised, sorted)
  bool reduce_axes_from_input = false;
};

/// Logical axis -> its position in the stored order (N, D1..Dn, C).
int64_t stored_axis(int64_t logical, size_t rank) {
  if (logical == 0) return 0;
  if (logical == 1) return static_cast<int64_t>(rank) - 1;
  return logical - 1;
}

/// Transpose perms: logical -> stored, stored -> logical (output axis i takes input axis perm[i]).
std::vector<int64_t> perm_to_stored(size_t rank) {
  std::vector<int64_t> p{0};
  for (size_t i = 2; i < rank; ++i) p.push_back(static_cast<int64_t>(i));
  p.push_back(1);
  return p;
}
std::vector<int64_t> perm_to_logical(size_t rank) {
  std::vector<int64_t> p{0, static_cast<int64_t>(rank) - 1};
  for (size_t i = 1; i + 1 < rank; ++i) p.push_back(static_cast<int64_t>(i));
  return p;
}

/// A crossing between layouts moves no byte when every spatial dim is 1.
bool spatial_ones(const shape_t& logical) {
  for (size_t i = 2; i < logical.size(); ++i) {
    if (logical[i] != 1) return false;
  }
  return true;
}

/// A constant operand of a region node in the stored layout: left-padded with 1s to `rank`, then
/// permuted like the region's tensors, so that broadcasting on stored shapes means what it meant.
tensor to_stored_constant(const tensor& c, size_t rank) {
  shape_t logical(rank - c.rank(), 1);
  logical.insert(logical.end(), c.shape().begin(), c.shape().end());
  const shape_t stored = logical_to_channels_last(logical);
  tensor out = tensor::allocate(c.type(), stored);
  const size_t es = dtype_size(c.type());
  std::vector<int64_t> logical_stride(rank, 1);
  for (size_t i = rank - 1; i-- > 0;) logical_stride[i] = logical_stride[i + 1] * logical[i + 1];
  const std::vector<int64_t> perm = perm_to_stored(rank);
  std::vector<int64_t> index(rank, 0);
  const auto* src = static_cast<const uint8_t*>(c.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t o = 0; o < out.elements(); ++o) {
    int64_t from = 0;
    for (size_t k = 0; k < rank; ++k)
      from += index[k] * logical_stride[static_cast<size_t>(perm[k])];
    std::memcpy(dst + static_cast<size_t>(o) * es, src + static_cast<size_t>(from) * es, es);
    for (size_t k = rank; k-- > 0;) {
      if (++index[k] < stored[k]) break;
      index[k] = 0;
    }
  }
  return out;
}

const std::set<std::string>& unary_ops() {
  static const std::set<std::string> ops{
      "Relu",  "Sigmoid", "Tanh",     "HardSigmoid", "HardSwish", "LeakyRelu", "Elu",
      "Selu",  "Celu",    "Softplus", "Softsign",    "Mish",      "Gelu",      "Clip",
      "Neg",   "Abs",     "Sqrt",     "Exp",         "Log",       "Erf",       "Reciprocal",
      "Floor", "Ceil",    "Round",    "Sign",        "Sin",       "Cos",       "ThresholdedRelu",
      "Shrink"};
  return ops;
}

const std::set<std::string>& binary_ops() {
  static const std::set<std::string> ops{"Add", "Sub", "Mul", "Div",  "Pow",
                                         "Max", "Min", "Sum", "Mean", "PRelu"};
  return ops;
}

class layout_planner {
 public:
  layout_planner(graph& g, kernels::backend where) : g_(g), where_(where) {}

  expected<layout_stats> run();

 private:
  node_plan classify(const node& n) const;
  bool reads_stored(int n, int pos) const;
  /// Border transposes a set of region nodes needs (free crossings excluded).
  int border_cost(const std::vector<int>& members, const std::vector<char>& in) const;
  std::vector<std::vector<int>> components(const std::vector<int>& nodes,
                                           const std::vector<char>& in) const;
  bool produces_stored(int v, const std::vector<char>& in) const;
  bool is_exit(int v, const std::vector<char>& in) const;
  bool is_free(int v) const { return spatial_ones(g_.values[v].shape); }
  std::string unique_name(const std::string& base) const;
  status rewrite(const std::vector<char>& in, layout_stats& stats);

  graph& g_;
  kernels::backend where_;
  std::vector<node_plan> plans_;
  std::vector<int> producer_;                           // value -> node, -1 for none
  std::vector<std::vector<std::pair<int, int>>> uses_;  // value -> (node, input position)
};

node_plan layout_planner::classify(const node& n) const {
  node_plan p;
  if (n.outputs.empty() || n.outputs[0] < 0 || n.inputs.empty() || n.inputs[0] < 0) return p;
  const auto& registry = kernels::kernel_registry::standard();
  const value& x = g_.values[n.inputs[0]];
  const value& y = g_.values[n.outputs[0]];
  const size_t r = x.shape.size();
  const std::string& op = n.op.op_type;

  const bool fused_conv = n.op.domain == "troupe" && op == "FusedConv" && !is_channels_last(n.op);
  if (fused_conv || is_onnx_op(n, "Conv")) {
    if (!registry.has_op(where_, "troupe", "FusedConv")) return p;
    if (n.inputs.size() < 2 || n.outputs.size() != 1 || r < 3 || r > 5 || !is_floating(x.type) ||
        y.shape.size() != r) {
      return p;
    }
    p.kind = role::conv;
    p.rank = r;
    p.layout_inputs = {0};
    if (fused_conv && n.inputs.size() > 3 && n.inputs[3] >= 0) p.layout_inputs.push_back(3);
    return p;
  }
  if (n.op.domain.empty() && (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool" ||
                              op == "GlobalMaxPool")) {
    if (!registry.has_op(where_, "troupe", op) || r < 3 || r > 5 || !is_floating(x.type)) return p;
    for (size_t o = 1; o < n.outputs.size(); ++o) {
      const int v = n.outputs[o];
      if (v >= 0 && (!uses_[v].empty() || g_.values[v].is_graph_output)) return p;  // Indices
    }
    p.kind = role::pool;
    p.rank = r;
    p.layout_inputs = {0};
    return p;
  }
  if (!n.op.domain.empty() || n.outputs.size() != 1 || y.shape.size() < 3) return p;
  const size_t out_rank = y.shape.size();
  if (unary_ops().count(op)) {
    if (r != out_rank) return p;
    for (size_t i = 1; i < n.inputs.size(); ++i) {
      if (n.inputs[i] >= 0 && g_.values[n.inputs[i]].info().elements() != 1) return p;
    }
    p.kind = role::unary;
    p.rank = r;
    p.layout_inputs = {0};
    return p;
  }
  if (binary_ops().count(op) || op == "Concat") {
    const bool concat = op == "Concat";
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const int v = n.inputs[i];
      if (v < 0) continue;
      const value& in = g_.values[v];
      if (concat && in.shape.size() != out_rank) return p;
      if (!concat && in.info().elements() == 1 && in.shape.size() <= out_rank) continue;  // scalar
      if (in.constant ? in.shape.size() > out_rank : in.shape.size() != out_rank) return p;
      p.layout_inputs.push_back(static_cast<int>(i));
    }
    if (p.layout_inputs.empty()) return p;
    if (concat) {
      auto axis =
          kernels::normalize_axis(n.op.attrs.get_int("axis", 1), static_cast<int64_t>(out_rank));
      if (!axis || !n.op.attrs.has("axis")) return p;
    }
    p.kind = concat ? role::concat : role::binary;
    p.rank = out_rank;
    return p;
  }
  return p;
}

// Reduce{Mean,Max,Min,Sum} are classified apart: their output may be logical (keepdims = 0).
node_plan classify_reduce(const graph& g, const node& n) {
  node_plan p;
  const std::string& op = n.op.op_type;
  if (!n.op.domain.empty() || n.outputs.size() != 1 || n.inputs.empty() || n.inputs[0] < 0 ||
      !(op == "ReduceMean" || op == "ReduceMax" || op == "ReduceMin" || op == "ReduceSum")) {
    return p;
  }
  const value& x = g.values[n.inputs[0]];
  const size_t r = x.shape.size();
  if (r < 3 || !is_floating(x.type)) return p;
  std::vector<int64_t> axes;
  bool from_input = false;
  if (n.inputs.size() > 1 && n.inputs[1] >= 0) {
    const value& a = g.values[n.inputs[1]];
    if (!a.constant) return p;
    axes = a.constant->to_int64_vector();
    from_input = true;
  } else {
    axes = n.op.attrs.get_ints("axes");
  }
  if (axes.empty()) {
    if (n.op.attrs.get_int("noop_with_empty_axes", 0) != 0) return p;
    axes.resize(r);
    std::iota(axes.begin(), axes.end(), 0);
  }
  std::vector<char> reduced(r, 0);
  for (int64_t& a : axes) {
    auto na = kernels::normalize_axis(a, static_cast<int64_t>(r));
    if (!na) return p;
    a = *na;
    reduced[static_cast<size_t>(a)] = 1;
  }
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  p.layout_output = n.op.attrs.get_int("keepdims", 1) != 0;
  if (!p.layout_output && !reduced[1]) {
    // Without keepdims the output is in logical order only when C goes last among the kept axes
    // in both orders: every spatial axis is reduced.
    for (size_t i = 2; i < r; ++i) {
      if (!reduced[i]) return p;
    }
  }
  p.kind = role::reduce;
  p.rank = r;
  p.layout_inputs = {0};
  p.reduce_axes = std::move(axes);
  p.reduce_axes_from_input = from_input;
  return p;
}

bool layout_planner::reads_stored(int n, int pos) const {
  const auto& li = plans_[static_cast<size_t>(n)].layout_inputs;
  return std::find(li.begin(), li.end(), pos) != li.end();
}

bool layout_planner::produces_stored(int v, const std::vector<char>& in) const {
  const int p = producer_[static_cast<size_t>(v)];
  return p >= 0 && in[static_cast<size_t>(p)] && plans_[static_cast<size_t>(p)].layout_output &&
         g_.nodes[static_cast<size_t>(p)].outputs[0] == v;
}

bool layout_planner::is_exit(int v, const std::vector<char>& in) const {
  if (g_.values[static_cast<size_t>(v)].is_graph_output) return true;
  for (const auto& [m, pos] : uses_[static_cast<size_t>(v)]) {
    if (!in[static_cast<size_t>(m)] || !reads_stored(m, pos)) return true;
  }
  return false;
}

int layout_planner::border_cost(const std::vector<int>& members,
                                const std::vector<char>& in) const {
  std::set<int> entries, exits;
  for (int n : members) {
    if (!in[static_cast<size_t>(n)]) continue;
    const node& nd = g_.nodes[static_cast<size_t>(n)];
    for (int pos : plans_[static_cast<size_t>(n)].layout_inputs) {
      const int v = nd.inputs[static_cast<size_t>(pos)];
      if (v < 0 || g_.values[static_cast<size_t>(v)].constant || produces_stored(v, in) ||
          is_free(v)) {
        continue;
      }
      entries.insert(v);
    }
    if (plans_[static_cast<size_t>(n)].layout_output) {
      const int v = nd.outputs[0];
      if (!is_free(v) && is_exit(v, in)) exits.insert(v);
    }
  }
  return static_cast<int>(entries.size() + exits.size());
}

std::vector<std::vector<int>> layout_planner::components(const std::vector<int>& nodes,
                                                         const std::vector<char>& in) const {
  std::vector<int> parent(g_.nodes.size());
  std::iota(parent.begin(), parent.end(), 0);
  auto find = [&](int a) {
    while (parent[static_cast<size_t>(a)] != a) {
      parent[static_cast<size_t>(a)] = parent[static_cast<size_t>(parent[static_cast<size_t>(a)])];
      a = parent[static_cast<size_t>(a)];
    }
    return a;
  };
  for (int n : nodes) {
    for (int pos : plans_[static_cast<size_t>(n)].layout_inputs) {
      const int v = g_.nodes[static_cast<size_t>(n)].inputs[static_cast<size_t>(pos)];
      if (v >= 0 && produces_stored(v, in)) {
        parent[static_cast<size_t>(find(n))] = find(producer_[static_cast<size_t>(v)]);
      }
    }
  }
  std::vector<std::vector<int>> groups;
  std::vector<int> group_of(g_.nodes.size(), -1);
  for (int n : nodes) {
    const int root = find(n);
    if (group_of[static_cast<size_t>(root)] < 0) {
      group_of[static_cast<size_t>(root)] = static_cast<int>(groups.size());
      groups.emplace_back();
    }
    groups[static_cast<size_t>(group_of[static_cast<size_t>(root)])].push_back(n);
  }
  return groups;
}

std::string layout_planner::unique_name(const std::string& base) const {
  if (g_.find(base) < 0) return base;
  for (int i = 1;; ++i) {
    std::string s = base + "." + std::to_string(i);
    if (g_.find(s) < 0) return s;
  }
}

expected<layout_stats> layout_planner::run() {
  layout_stats stats;
  const size_t node_count = g_.nodes.size();
  producer_.assign(g_.values.size(), -1);
  uses_.assign(g_.values.size(), {});
  for (size_t n = 0; n < node_count; ++n) {
    for (int v : g_.nodes[n].outputs) {
      if (v >= 0) producer_[static_cast<size_t>(v)] = static_cast<int>(n);
    }
    for (size_t i = 0; i < g_.nodes[n].inputs.size(); ++i) {
      const int v = g_.nodes[n].inputs[i];
      if (v >= 0)
        uses_[static_cast<size_t>(v)].emplace_back(static_cast<int>(n), static_cast<int>(i));
    }
  }
  plans_.resize(node_count);
  std::vector<int> candidates;
  std::vector<char> in(node_count, 0);
  for (size_t n = 0; n < node_count; ++n) {
    plans_[n] = classify(g_.nodes[n]);
    if (plans_[n].kind == role::none) plans_[n] = classify_reduce(g_, g_.nodes[n]);
    if (plans_[n].kind != role::none) {
      candidates.push_back(static_cast<int>(n));
      in[n] = 1;
    }
  }
  const bool debug = std::getenv("TROUPE_LAYOUT_DEBUG") != nullptr;
  std::vector<char> converted(node_count, 0);
  for (std::vector<int>& region : components(candidates, in)) {
    ++stats.regions;
    // Without a convolution nothing pays (elementwise chains of a transformer form such regions).
    if (std::none_of(region.begin(), region.end(),
                     [&](int n) { return plans_[static_cast<size_t>(n)].kind == role::conv; })) {
      continue;
    }
    // Drop neutral nodes (not convolutions) whose leaving lowers the border count; repeat until
    // no single removal helps.
    int cost = border_cost(region, in);
    for (bool changed = true; changed;) {
      changed = false;
      for (int n : region) {
        if (!in[static_cast<size_t>(n)] || plans_[static_cast<size_t>(n)].kind == role::conv)
          continue;
        in[static_cast<size_t>(n)] = 0;
        const int without = border_cost(region, in);
        if (without < cost) {
          cost = without;
          changed = true;
        } else {
          in[static_cast<size_t>(n)] = 1;
        }
      }
    }
    std::vector<int> kept;
    for (int n : region) {
      if (in[static_cast<size_t>(n)]) kept.push_back(n);
    }
    for (const std::vector<int>& part : components(kept, in)) {
      int convs = 0;
      for (int n : part) convs += plans_[static_cast<size_t>(n)].kind == role::conv;
      const int part_cost = border_cost(part, in);
      const bool pays = part_cost < 2 * convs;
      if (debug) {
        std::fprintf(
            stderr,
            "[troupe layout] region of %zu nodes, %d convolutions: %d border transposes -> %s\n",
            part.size(), convs, part_cost, pays ? "channels-last" : "kept");
      }
      if (!pays) continue;
      ++stats.converted_regions;
      stats.convolutions += convs;
      stats.converted_nodes += static_cast<int>(part.size());
      for (int n : part) converted[static_cast<size_t>(n)] = 1;
    }
  }
  if (stats.converted_nodes == 0) return stats;
  TROUPE_RETURN_IF_ERROR(rewrite(converted, stats));
  if (debug) {
    std::fprintf(stderr,
                 "[troupe layout] %d of %d regions channels-last: %d nodes, %d convolutions, %d "
                 "transposes, %d reshapes\n",
                 stats.converted_regions, stats.regions, stats.converted_nodes, stats.convolutions,
                 stats.transposes, stats.reshapes);
  }
  return stats;
}

/// Runs the node's schema on the graph's current infos and checks that the outputs match.
status check_node(const graph& g, const node& n) {
  const auto* schema = kernels::schema_registry::standard().find(n.op.domain, n.op.op_type);
  if (!schema) return internal_error("layout: no schema for " + n.op.describe());
  std::vector<tensor_info> infos(n.inputs.size());
  std::vector<const tensor*> values(n.inputs.size(), nullptr);
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (n.inputs[i] < 0) continue;
    const value& v = g.values[static_cast<size_t>(n.inputs[i])];
    infos[i] = v.info();
    if (v.constant) values[i] = &*v.constant;
  }
  kernels::infer_context ic{n.op, infos, values, n.outputs.size()};
  auto out = schema->infer(ic);
  if (!out) return internal_error("layout: " + out.error().message());
  for (size_t o = 0; o < n.outputs.size() && o < out->size(); ++o) {
    if (n.outputs[o] < 0) continue;
    const value& v = g.values[static_cast<size_t>(n.outputs[o])];
    if ((*out)[o] != v.info()) {
      return internal_error("layout: " + n.op.describe() + " infers " + (*out)[o].to_string() +
                            " for '" + v.name + "', the pass stored " + v.info().to_string());
    }
  }
  return status::ok();
}

status layout_planner::rewrite(const std::vector<char>& in, layout_stats& stats) {
  const size_t node_count = g_.nodes.size();
  int64_t opset = g_.opset("");
  if (opset < 13) opset = 13;
  std::vector<node> added;
  std::vector<size_t> touched;

  // A Transpose, or a Reshape where no byte moves, from `from` to `to` (both typed and shaped).
  auto cross = [&](int from, int to, size_t rank, bool to_stored, bool free) {
    node b;
    b.op.opset = opset;
    b.op.name = "layout." + std::string(to_stored ? "to_nhwc." : "to_nchw.") +
                g_.values[static_cast<size_t>(to)].name;
    if (free) {
      b.op.op_type = "Reshape";
      const shape_t& target = g_.values[static_cast<size_t>(to)].shape;
      value s;
      s.name = unique_name(b.op.name + ".shape");
      s.type = dtype::i64;
      s.shape = {static_cast<int64_t>(target.size())};
      s.constant = tensor::from_vector<int64_t>(target, {static_cast<int64_t>(target.size())});
      const int s_id = g_.add_value(std::move(s));
      b.inputs = {from, s_id};
      ++stats.reshapes;
    } else {
      b.op.op_type = "Transpose";
      b.op.attrs.set("perm", to_stored ? perm_to_stored(rank) : perm_to_logical(rank));
      b.inputs = {from};
      ++stats.transposes;
    }
    b.outputs = {to};
    added.push_back(std::move(b));
  };
  auto new_value = [&](int like, const shape_t& shape, const std::string& suffix) {
    value v;
    v.name = unique_name(g_.values[static_cast<size_t>(like)].name + suffix);
    v.type = g_.values[static_cast<size_t>(like)].type;
    v.shape = shape;
    return g_.add_value(std::move(v));
  };

  // Outputs first: a region value whose readers are all region nodes reading it stored changes
  // its shape in place; one read elsewhere (or a graph output) keeps its logical self, produced
  // by a border node from a new stored value that the region's readers take instead.
  std::vector<char> stored(g_.values.size(), 0);
  for (size_t n = 0; n < node_count; ++n) {
    if (!in[n] || !plans_[n].layout_output) continue;
    const int v = g_.nodes[n].outputs[0];
    const shape_t logical = g_.values[static_cast<size_t>(v)].shape;
    const shape_t shape = logical_to_channels_last(logical);
    if (!is_exit(v, in)) {
      g_.values[static_cast<size_t>(v)].shape = shape;
      stored[static_cast<size_t>(v)] = 1;
      continue;
    }
    const int inner = new_value(v, shape, ".nhwc");
    stored.resize(g_.values.size(), 0);
    stored[static_cast<size_t>(inner)] = 1;
    g_.nodes[n].outputs[0] = inner;
    for (const auto& [m, pos] : uses_[static_cast<size_t>(v)]) {
      if (in[static_cast<size_t>(m)] && reads_stored(m, pos)) {
        g_.nodes[static_cast<size_t>(m)].inputs[static_cast<size_t>(pos)] = inner;
      }
    }
    cross(inner, v, logical.size(), false, spatial_ones(logical));
  }
  stored.resize(g_.values.size(), 0);

  // Inputs read stored: constants are rewritten once per (value, rank); other values from
  // outside get one border node each, shared by all their region readers.
  std::map<std::pair<int, size_t>, int> converted_constants;
  std::map<int, int> entries;
  for (size_t n = 0; n < node_count; ++n) {
    if (!in[n]) continue;
    touched.push_back(n);
    const size_t rank = plans_[n].rank;
    for (int pos : plans_[n].layout_inputs) {
      int& v = g_.nodes[n].inputs[static_cast<size_t>(pos)];
      if (v < 0 || stored[static_cast<size_t>(v)]) continue;
      const value& x = g_.values[static_cast<size_t>(v)];
      if (x.constant) {
        auto key = std::make_pair(v, rank);
        auto it = converted_constants.find(key);
        if (it == converted_constants.end()) {
          value c;
          c.name = unique_name(x.name + ".nhwc");
          c.type = x.type;
          c.constant = to_stored_constant(*x.constant, rank);
          c.shape = c.constant->shape();
          it = converted_constants.emplace(key, g_.add_value(std::move(c))).first;
        }
        v = it->second;
        continue;
      }
      auto it = entries.find(v);
      if (it == entries.end()) {
        const shape_t logical = x.shape;
        const int inner = new_value(v, logical_to_channels_last(logical), ".nhwc");
        cross(v, inner, logical.size(), true, spatial_ones(logical));
        it = entries.emplace(v, inner).first;
      }
      v = it->second;
    }
  }

  // The nodes themselves.
  for (size_t n : touched) {
    node& nd = g_.nodes[n];
    const node_plan& p = plans_[n];
    switch (p.kind) {
      case role::conv:
        if (nd.op.domain.empty()) {
          nd.op.domain = "troupe";
          nd.op.op_type = "FusedConv";
        }
        nd.op.attrs.set("channels_last", int64_t{1});
        break;
      case role::pool:
        nd.op.domain = "troupe";
        nd.op.attrs.set("channels_last", int64_t{1});
        nd.outputs.resize(1);
        break;
      case role::concat: {
        auto axis =
            kernels::normalize_axis(nd.op.attrs.get_int("axis", 1), static_cast<int64_t>(p.rank));
        if (!axis) return internal_error("layout: " + nd.op.describe() + ": bad axis");
        nd.op.attrs.set("axis", stored_axis(*axis, p.rank));
        break;
      }
      case role::reduce: {
        std::vector<int64_t> axes;
        for (int64_t a : p.reduce_axes) axes.push_back(stored_axis(a, p.rank));
        std::sort(axes.begin(), axes.end());
        if (p.reduce_axes_from_input) {
          value a;
          a.name = unique_name(g_.values[static_cast<size_t>(nd.inputs[1])].name + ".nhwc");
          a.type = dtype::i64;
          a.shape = {static_cast<int64_t>(axes.size())};
          a.constant = tensor::from_vector<int64_t>(axes, a.shape);
          nd.inputs[1] = g_.add_value(std::move(a));
        } else if (nd.op.attrs.has("axes")) {
          nd.op.attrs.set("axes", axes);
        }
        break;
      }
      default:
        break;
    }
  }

  for (size_t n : touched) TROUPE_RETURN_IF_ERROR(check_node(g_, g_.nodes[n]));
  for (const node& b : added) TROUPE_RETURN_IF_ERROR(check_node(g_, b));
  for (node& b : added) g_.nodes.push_back(std::move(b));
  TROUPE_RETURN_IF_ERROR(g_.sort_topologically());
  g_.remove_dead();
  return status::ok();
}

}  // namespace

expected<layout_stats> plan_channels_last(graph& g, kernels::backend where) {
  layout_planner planner(g, where);
  return planner.run();
}

}  // namespace troupe::runtime
