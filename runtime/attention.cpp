#include "runtime/attention.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "kernels/op_schema.hpp"
#include "kernels/ops/attention_params.hpp"

namespace troupe::runtime {
namespace {

using consumer_lists = std::vector<std::vector<int>>;  // per value: the nodes reading it

/// The one output of `n` that anything may read, or -1 when it has others in use.
int single_output(const node& n) {
  if (n.outputs.empty() || n.outputs[0] < 0) return -1;
  for (size_t o = 1; o < n.outputs.size(); ++o) {
    if (n.outputs[o] >= 0) return -1;
  }
  return n.outputs[0];
}

std::vector<int64_t> contiguous_strides(const shape_t& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t k = s.size(); k-- > 1;) st[k - 1] = st[k] * s[k];
  return st;
}

/// Logical axes of an attention operand: (batch, head, sequence, head dim).
constexpr size_t kAxes = 4;

/// A logical 4-D operand read in place from a contiguous value: element i sits at
/// offset + sum_t i_t * strides[t] of `source`. Size-1 axes carry stride 0.
struct strided_view {
  int source = -1;
  int64_t offset = 0;
  std::array<int64_t, kAxes> sizes{};
  std::array<int64_t, kAxes> strides{};
  double scale = 1.0;      // scalar factors met on the way (Mul/Div by constants)
  std::vector<int> nodes;  // nodes walked through, which the fused node replaces
};

/// The view re-expressed in the coordinates of a contiguous tensor of `shape`: for each logical
/// axis the axis of `shape` it moves along and by how many steps, and the offset's coordinates.
/// Empty when some logical axis would carry into a neighbouring axis (then no per-axis mapping
/// exists).
struct axis_map {
  std::array<int, kAxes> axis{};
  std::array<int64_t, kAxes> steps{};
  std::vector<int64_t> base;
};

std::optional<axis_map> decompose(const strided_view& v, const shape_t& shape) {
  for (int64_t d : shape) {
    if (d <= 0) return std::nullopt;
  }
  const std::vector<int64_t> st = contiguous_strides(shape);
  axis_map m;
  m.base.resize(shape.size());
  if (v.offset < 0 || v.offset >= element_count(shape)) return std::nullopt;
  int64_t rest = v.offset;
  for (size_t k = 0; k < shape.size(); ++k) {
    m.base[k] = rest / st[k];
    rest %= st[k];
  }
  std::vector<int64_t> reach = m.base;
  for (size_t t = 0; t < kAxes; ++t) {
    m.axis[t] = -1;
    m.steps[t] = 0;
    if (v.sizes[t] == 1) continue;
    const int64_t s = v.strides[t];
    if (s <= 0) return std::nullopt;
    int k = -1;
    for (size_t a = 0; a < shape.size(); ++a) {
      if (shape[a] > 1 && st[a] <= s) {
        k = static_cast<int>(a);
        break;
      }
    }
    if (k < 0 || s % st[static_cast<size_t>(k)] != 0) return std::nullopt;
    m.axis[t] = k;
    m.steps[t] = s / st[static_cast<size_t>(k)];
    reach[static_cast<size_t>(k)] += (v.sizes[t] - 1) * m.steps[t];
  }
  for (size_t k = 0; k < shape.size(); ++k) {
    if (reach[k] >= shape[k]) return std::nullopt;
  }
  return m;
}

/// Rebuilds the view over a producer input of shape `in_shape`, given where each output axis
/// lives in it (`axis_of`, -1: nowhere) and a constant offset into it (a gathered index).
strided_view remap(const strided_view& v, const axis_map& m, const shape_t& in_shape,
                   const std::vector<int>& axis_of, int64_t extra_offset, int source) {
  const std::vector<int64_t> st = contiguous_strides(in_shape);
  strided_view r = v;
  r.source = source;
  r.offset = extra_offset;
  for (size_t k = 0; k < m.base.size(); ++k) {
    if (m.base[k] != 0) r.offset += m.base[k] * st[static_cast<size_t>(axis_of[k])];
  }
  for (size_t t = 0; t < kAxes; ++t) {
    r.strides[t] =
        m.axis[t] < 0
            ? 0
            : m.steps[t] * st[static_cast<size_t>(axis_of[static_cast<size_t>(m.axis[t])])];
  }
  return r;
}

bool is_view_op(const node& n) {
  return is_onnx_op(n, "Reshape") || is_onnx_op(n, "Flatten") || is_onnx_op(n, "Squeeze") ||
         is_onnx_op(n, "Unsqueeze") || is_onnx_op(n, "Identity");
}

/// One step towards the producer of `v.source`: the view over the producer's data input, or
/// nothing when the producer cannot be read through in place.
std::optional<strided_view> step_back(const graph& g, const strided_view& v) {
  const value& y = g.values[static_cast<size_t>(v.source)];
  if (y.producer < 0) return std::nullopt;
  const node& p = g.nodes[static_cast<size_t>(y.producer)];
  if (single_output(p) != v.source) return std::nullopt;
  strided_view r = v;
  r.nodes.push_back(y.producer);
  if (is_onnx_op(p, "Mul") || is_onnx_op(p, "Div")) {
    // A scalar constant factor: the layout is unchanged, the scale accumulates.
    if (p.inputs.size() != 2 || p.inputs[0] < 0 || p.inputs[1] < 0) return std::nullopt;
    int x = -1;
    std::optional<double> c = scalar_constant(g, p.inputs[1]);
    if (c) {
      x = p.inputs[0];
    } else if (is_onnx_op(p, "Mul") && (c = scalar_constant(g, p.inputs[0]))) {
      x = p.inputs[1];
    }
    if (x < 0) return std::nullopt;
    const value& xv = g.values[static_cast<size_t>(x)];
    if (xv.constant || xv.type != y.type || xv.shape != y.shape) return std::nullopt;
    if (is_onnx_op(p, "Div")) {
      if (*c == 0.0) return std::nullopt;
      r.scale /= *c;
    } else {
      r.scale *= *c;
    }
    r.source = x;
    return r;
  }
  if (p.inputs.empty() || p.inputs[0] < 0) return std::nullopt;
  const int x = p.inputs[0];
  const value& xv = g.values[static_cast<size_t>(x)];
  if (xv.constant || xv.type != y.type) return std::nullopt;
  if (is_view_op(p)) {
    // Same bytes in the same order: only the shape differs.
    r.source = x;
    return r;
  }
  if (is_onnx_op(p, "Transpose")) {
    auto m = decompose(v, y.shape);
    if (!m) return std::nullopt;
    std::vector<int64_t> perm = p.op.attrs.get_ints("perm");
    if (perm.empty()) {
      for (size_t k = xv.shape.size(); k-- > 0;) perm.push_back(static_cast<int64_t>(k));
    }
    if (perm.size() != y.shape.size() || xv.shape.size() != y.shape.size()) return std::nullopt;
    std::vector<int> axis_of(perm.size());
    for (size_t k = 0; k < perm.size(); ++k) {
      if (perm[k] < 0 || perm[k] >= static_cast<int64_t>(perm.size())) return std::nullopt;
      axis_of[k] = static_cast<int>(perm[k]);
    }
    return remap(r, *m, xv.shape, axis_of, 0, x);
  }
  if (is_onnx_op(p, "Gather")) {
    // A constant index along one axis: one slice of a packed tensor (qkv[0], qkv[1], qkv[2]).
    if (p.inputs.size() != 2 || p.inputs[1] < 0) return std::nullopt;
    const value& iv = g.values[static_cast<size_t>(p.inputs[1])];
    if (!iv.constant || iv.constant->elements() != 1 || !is_integer(iv.type) ||
        iv.shape.size() > 1) {
      return std::nullopt;
    }
    const int64_t rank = static_cast<int64_t>(xv.shape.size());
    int64_t axis = p.op.attrs.get_int("axis", 0);
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank) return std::nullopt;
    int64_t index = iv.constant->value_as_int64(0);
    if (index < 0) index += xv.shape[static_cast<size_t>(axis)];
    if (index < 0 || index >= xv.shape[static_cast<size_t>(axis)]) return std::nullopt;
    const bool scalar_index = iv.shape.empty();
    if (y.shape.size() != static_cast<size_t>(scalar_index ? rank - 1 : rank)) return std::nullopt;
    auto m = decompose(v, y.shape);
    if (!m) return std::nullopt;
    std::vector<int> axis_of(y.shape.size());
    for (size_t k = 0; k < y.shape.size(); ++k) {
      axis_of[k] = scalar_index && static_cast<int64_t>(k) >= axis ? static_cast<int>(k) + 1
                                                                   : static_cast<int>(k);
    }
    const int64_t extra = index * contiguous_strides(xv.shape)[static_cast<size_t>(axis)];
    return remap(r, *m, xv.shape, axis_of, extra, x);
  }
  return std::nullopt;
}

/// Walks back from `v` while the value it stands on is read only by nodes in `inside` or by
/// nodes the walk has passed.
strided_view trace(const graph& g, const consumer_lists& cons, strided_view v,
                   const std::set<int>& inside) {
  for (;;) {
    const value& s = g.values[static_cast<size_t>(v.source)];
    if (s.is_graph_output || s.is_graph_input) return v;
    for (int c : cons[static_cast<size_t>(v.source)]) {
      if (!inside.count(c) && std::find(v.nodes.begin(), v.nodes.end(), c) == v.nodes.end())
        return v;
    }
    auto next = step_back(g, v);
    if (!next) return v;
    v = std::move(*next);
  }
}

/// The view of a contiguous 4-D value whose axes are `order` of (batch, head, seq, dim).
strided_view view_of(int value_index, const shape_t& shape, std::array<int, kAxes> order) {
  strided_view v;
  v.source = value_index;
  const std::vector<int64_t> st = contiguous_strides(shape);
  for (size_t t = 0; t < kAxes; ++t) {
    v.sizes[t] = shape[static_cast<size_t>(order[t])];
    v.strides[t] = v.sizes[t] == 1 ? 0 : st[static_cast<size_t>(order[t])];
  }
  return v;
}

enum layout_bits : unsigned { kBse = 1, kSbe = 2 };

/// Layouts ("bse", "sbe") in which `v` is the operand with rows of `row` elements at `offset`.
unsigned layouts_of(const graph& g, const strided_view& v, int64_t row, int64_t offset) {
  const int64_t batch = v.sizes[0], heads = v.sizes[1], seq = v.sizes[2], dim = v.sizes[3];
  auto matches = [](int64_t size, int64_t stride, int64_t want) {
    return size == 1 || stride == want;
  };
  if (v.offset != offset || !matches(dim, v.strides[3], 1) || !matches(heads, v.strides[1], dim))
    return 0;
  if (element_count(g.values[static_cast<size_t>(v.source)].shape) != batch * seq * row) return 0;
  unsigned bits = 0;
  if (matches(seq, v.strides[2], row) && matches(batch, v.strides[0], seq * row)) bits |= kBse;
  if (matches(batch, v.strides[0], row) && matches(seq, v.strides[2], batch * row)) bits |= kSbe;
  return bits;
}

/// Memory order of the attention output's (batch, head, seq, dim) axes as it flows through
/// Transpose and Reshape nodes. Axes of size 1 are left out: they do not move bytes.
struct output_order {
  std::vector<int> axes;       // logical axes in memory order, outermost first
  std::vector<int64_t> sizes;  // their sizes

  /// For each dim of `shape`, the run [first, last) of `axes` it spans; empty when a dim would
  /// split a logical axis.
  std::optional<std::vector<std::pair<size_t, size_t>>> groups(const shape_t& shape) const {
    std::vector<std::pair<size_t, size_t>> out;
    size_t a = 0;
    for (int64_t d : shape) {
      const size_t first = a;
      int64_t p = 1;
      while (p < d && a < axes.size()) p *= sizes[a++];
      if (p != d) return std::nullopt;
      out.emplace_back(first, a);
    }
    if (a != axes.size()) return std::nullopt;
    return out;
  }

  unsigned layouts() const {
    auto is = [&](std::array<int, 4> want) {
      std::vector<int> w;
      for (int t : want) {
        if (std::find(axes.begin(), axes.end(), t) != axes.end()) w.push_back(t);
      }
      return w == axes;
    };
    return (is({0, 2, 1, 3}) ? kBse : 0u) | (is({2, 0, 1, 3}) ? kSbe : 0u);
  }
};

/// What one match replaces and with what.
struct attention_match {
  std::vector<int> removed;   // every node of the subgraph
  int anchor = -1;            // the node whose position the fused node takes (the last one)
  std::vector<node> emitted;  // the fused node, with Reshape views around it where needed
};

int add_value(graph& g, const std::string& name, dtype type, shape_t shape) {
  value v;
  v.name = name;
  v.type = type;
  v.shape = std::move(shape);
  return g.add_value(std::move(v));
}

/// A Reshape node from `from` to `to` (a view: the planner aliases it).
node reshape_node(graph& g, const std::string& name, int from, int to, int64_t opset) {
  const shape_t& s = g.values[static_cast<size_t>(to)].shape;
  tensor shape = tensor::allocate(dtype::i64, {static_cast<int64_t>(s.size())});
  for (size_t i = 0; i < s.size(); ++i) shape.data<int64_t>()[i] = s[i];
  node n;
  n.op.op_type = "Reshape";
  n.op.name = name;
  n.op.opset = opset;
  n.inputs = {from, g.add_constant(name + ".shape", std::move(shape))};
  n.outputs = {to};
  return n;
}

/// OK when `where` can run this node with these input infos.
status check_node(const graph& g, const node& n, kernels::backend where) {
  std::vector<tensor_info> infos;
  for (int in : n.inputs)
    infos.push_back(in >= 0 ? g.values[static_cast<size_t>(in)].info() : tensor_info{});
  TROUPE_ASSIGN_OR_RETURN(kernels::attention_geometry geo, kernels::resolve_attention(n.op, infos));
  const std::vector<tensor_info> outs{{geo.type, geo.output_shape}};
  const std::vector<const tensor*> no_values(infos.size(), nullptr);
  kernels::kernel_create_context ctx{n.op, infos, no_values, outs, nullptr};
  return kernels::kernel_registry::standard().supports(where, ctx);
}

/// Tries to match the attention subgraph around Softmax node `sm`.
std::optional<attention_match> match_at(graph& g, const consumer_lists& cons, int sm,
                                        kernels::backend where) {
  const node& soft = g.nodes[static_cast<size_t>(sm)];
  if (!is_onnx_op(soft, "Softmax") || soft.inputs.size() != 1 || single_output(soft) < 0)
    return std::nullopt;
  const int probs = soft.outputs[0];
  if (g.values[static_cast<size_t>(soft.inputs[0])].shape.size() != kAxes) return std::nullopt;
  const bool legacy = soft.op.opset < 13;
  int64_t axis = soft.op.attrs.get_int("axis", legacy ? 1 : -1);
  if (axis < 0) axis += static_cast<int64_t>(kAxes);
  if (axis != 3) return std::nullopt;

  std::set<int> inside{sm};
  auto sole_reader = [&](int v, int reader) {
    const value& x = g.values[static_cast<size_t>(v)];
    const auto& c = cons[static_cast<size_t>(v)];
    return !x.is_graph_output && c.size() == 1 && c[0] == reader;
  };

  // Backwards from Softmax: an optional mask Add, then scalar scales, then the scores MatMul.
  double scale = 1.0;
  int mask = -1;
  int cur = soft.inputs[0];
  int reader = sm;
  int scores_mm = -1;
  for (int steps = 0; steps < 8 && scores_mm < 0; ++steps) {
    if (!sole_reader(cur, reader)) return std::nullopt;
    const int p = g.values[static_cast<size_t>(cur)].producer;
    if (p < 0) return std::nullopt;
    const node& pn = g.nodes[static_cast<size_t>(p)];
    if (single_output(pn) != cur || pn.inputs.size() != 2 || pn.inputs[0] < 0 || pn.inputs[1] < 0) {
      return std::nullopt;
    }
    const value& out = g.values[static_cast<size_t>(cur)];
    if (is_onnx_op(pn, "MatMul")) {
      scores_mm = p;
    } else if (is_onnx_op(pn, "Add") && mask < 0 && scale == 1.0) {
      // The scores side leads to the MatMul through scalar scales; the other side is the mask.
      auto leads_to_scores = [&](int v) {
        for (int hops = 0; hops < 8 && v >= 0; ++hops) {
          const int q = g.values[static_cast<size_t>(v)].producer;
          if (q < 0) return false;
          const node& qn = g.nodes[static_cast<size_t>(q)];
          if (is_onnx_op(qn, "MatMul")) return true;
          if (!(is_onnx_op(qn, "Mul") || is_onnx_op(qn, "Div")) || qn.inputs.size() != 2)
            return false;
          v = scalar_constant(g, qn.inputs[1])                              ? qn.inputs[0]
              : (is_onnx_op(qn, "Mul") && scalar_constant(g, qn.inputs[0])) ? qn.inputs[1]
                                                                            : -1;
        }
        return false;
      };
      const int side = leads_to_scores(pn.inputs[0]) ? 0 : leads_to_scores(pn.inputs[1]) ? 1 : -1;
      if (side < 0 || pn.inputs[0] == pn.inputs[1]) return std::nullopt;
      const int m = pn.inputs[static_cast<size_t>(1 - side)];
      const value& mv = g.values[static_cast<size_t>(m)];
      if (mv.type != out.type || mv.shape.size() > kAxes ||
          g.values[static_cast<size_t>(pn.inputs[static_cast<size_t>(side)])].shape != out.shape) {
        return std::nullopt;
      }
      mask = m;
      cur = pn.inputs[static_cast<size_t>(side)];
      inside.insert(p);
      reader = p;
    } else if (is_onnx_op(pn, "Mul") || is_onnx_op(pn, "Div")) {
      int x = -1;
      std::optional<double> c = scalar_constant(g, pn.inputs[1]);
      if (c) {
        x = pn.inputs[0];
      } else if (is_onnx_op(pn, "Mul") && (c = scalar_constant(g, pn.inputs[0]))) {
        x = pn.inputs[1];
      }
      if (x < 0 || g.values[static_cast<size_t>(x)].shape != out.shape) return std::nullopt;
      if (is_onnx_op(pn, "Div")) {
        if (*c == 0.0) return std::nullopt;
        scale /= *c;
      } else {
        scale *= *c;
      }
      cur = x;
      inside.insert(p);
      reader = p;
    } else {
      return std::nullopt;
    }
  }
  if (scores_mm < 0) return std::nullopt;
  inside.insert(scores_mm);
  const node& mm1 = g.nodes[static_cast<size_t>(scores_mm)];
  // Copies: adding values below may move g.values.
  const tensor_info a4 = g.values[static_cast<size_t>(mm1.inputs[0])].info();
  const tensor_info kt4 = g.values[static_cast<size_t>(mm1.inputs[1])].info();
  const shape_t scores_shape = g.values[static_cast<size_t>(mm1.outputs[0])].shape;
  if (a4.shape.size() != kAxes || kt4.shape.size() != kAxes || scores_shape.size() != kAxes)
    return std::nullopt;
  const int64_t batch = scores_shape[0], heads = scores_shape[1], q_len = scores_shape[2],
                kv_len = scores_shape[3];
  const int64_t dim = a4.shape[3];
  if (a4.shape != shape_t{batch, heads, q_len, dim} ||
      kt4.shape != shape_t{batch, heads, dim, kv_len}) {
    return std::nullopt;
  }
  if (batch * heads * q_len * kv_len * dim == 0) return std::nullopt;

  // Forwards from Softmax: the product with V, then the heads merged back.
  const auto& pcons = cons[static_cast<size_t>(probs)];
  if (g.values[static_cast<size_t>(probs)].is_graph_output || pcons.size() != 1)
    return std::nullopt;
  const int pv_mm = pcons[0];
  const node& mm2 = g.nodes[static_cast<size_t>(pv_mm)];
  if (!is_onnx_op(mm2, "MatMul") || mm2.inputs.size() != 2 || mm2.inputs[0] != probs ||
      mm2.inputs[1] == probs || single_output(mm2) < 0) {
    return std::nullopt;
  }
  inside.insert(pv_mm);
  const tensor_info v4 = g.values[static_cast<size_t>(mm2.inputs[1])].info();
  if (v4.shape != shape_t{batch, heads, kv_len, dim}) return std::nullopt;
  const dtype type = v4.type;
  if (a4.type != type || kt4.type != type || g.values[static_cast<size_t>(probs)].type != type)
    return std::nullopt;

  output_order order;
  for (int t = 0; t < 4; ++t) {
    const int64_t size = t == 0 ? batch : t == 1 ? heads : t == 2 ? q_len : dim;
    if (size != 1) {
      order.axes.push_back(t);
      order.sizes.push_back(size);
    }
  }
  int out = mm2.outputs[0];
  int last_node = pv_mm;
  // The furthest point of the chain whose memory order is one the kernel writes.
  int good_out = order.layouts() ? out : -1, good_node = pv_mm;
  unsigned good_layouts = order.layouts();
  std::vector<int> out_chain, good_chain;
  for (int hops = 0; hops < 8; ++hops) {
    const value& ov = g.values[static_cast<size_t>(out)];
    const auto& oc = cons[static_cast<size_t>(out)];
    if (ov.is_graph_output || oc.size() != 1) break;
    const node& n = g.nodes[static_cast<size_t>(oc[0])];
    if (n.inputs.empty() || n.inputs[0] != out || single_output(n) < 0) break;
    for (size_t i = 1; i < n.inputs.size(); ++i) {
      if (n.inputs[i] == out) return std::nullopt;
    }
    const shape_t& in_shape = ov.shape;
    if (is_onnx_op(n, "Transpose")) {
      auto groups = order.groups(in_shape);
      std::vector<int64_t> perm = n.op.attrs.get_ints("perm");
      if (perm.empty()) {
        for (size_t k = in_shape.size(); k-- > 0;) perm.push_back(static_cast<int64_t>(k));
      }
      if (!groups || perm.size() != in_shape.size()) break;
      output_order next;
      bool ok = true;
      for (int64_t k : perm) {
        if (k < 0 || k >= static_cast<int64_t>(groups->size())) {
          ok = false;
          break;
        }
        const auto [first, end] = (*groups)[static_cast<size_t>(k)];
        for (size_t a = first; a < end; ++a) {
          next.axes.push_back(order.axes[a]);
          next.sizes.push_back(order.sizes[a]);
        }
      }
      if (!ok) break;
      order = std::move(next);
    } else if (!is_view_op(n)) {
      break;
    }
    out = n.outputs[0];
    last_node = oc[0];
    out_chain.push_back(oc[0]);
    if (!order.groups(g.values[static_cast<size_t>(out)].shape)) break;
    if (order.layouts()) {
      good_out = out;
      good_node = last_node;
      good_layouts = order.layouts();
      good_chain = out_chain;
    }
  }
  if (good_out < 0) return std::nullopt;
  for (int n : good_chain) inside.insert(n);

  // Q, K and V back to where the projections wrote them. A value shared by the three walks
  // (a packed QKV before its Gathers) joins a walk only once every reader of it is inside, so
  // the walks are repeated until they stop growing.
  strided_view q0 = view_of(mm1.inputs[0], a4.shape, {0, 1, 2, 3});
  strided_view k0 = view_of(mm1.inputs[1], kt4.shape, {0, 1, 3, 2});
  strided_view v0 = view_of(mm2.inputs[1], v4.shape, {0, 1, 2, 3});
  strided_view q, k, v;
  for (int round = 0; round < 8; ++round) {
    const size_t before = inside.size();
    q = trace(g, cons, q0, inside);
    k = trace(g, cons, k0, inside);
    v = trace(g, cons, v0, inside);
    for (const auto* w : {&q, &k, &v}) inside.insert(w->nodes.begin(), w->nodes.end());
    if (inside.size() == before) break;
  }
  // Every value the fused node replaces must be read only inside: the walks guarantee it for
  // theirs; the core chain was checked above.
  if (v.scale != 1.0) return std::nullopt;
  scale *= q.scale * k.scale;

  const int64_t embed = heads * dim;
  const bool packed = q.source == k.source && k.source == v.source;
  const int64_t row = packed ? 3 * embed : embed;
  unsigned layouts = good_layouts;
  layouts &= layouts_of(g, q, row, 0);
  layouts &= layouts_of(g, k, row, packed ? embed : 0);
  layouts &= layouts_of(g, v, row, packed ? 2 * embed : 0);
  if (!layouts) return std::nullopt;
  const bool seq_first = !(layouts & kBse);
  if (packed && q_len != kv_len) return std::nullopt;

  // What the fused node reads must outlive the match: no source or mask made by a removed node.
  for (int in : {q.source, k.source, v.source, mask}) {
    if (in >= 0 && inside.count(g.values[static_cast<size_t>(in)].producer)) return std::nullopt;
  }
  attention_match m;
  m.removed.assign(inside.begin(), inside.end());
  m.anchor = good_node;
  const std::string name = soft.op.name + ".attention" + std::to_string(sm);
  const int64_t opset = soft.op.opset;
  auto canonical = [&](int64_t seq, int64_t r) {
    return seq_first ? shape_t{seq, batch, r} : shape_t{batch, seq, r};
  };
  // Sources whose shape is not the canonical [B, S, row] get a Reshape view in front.
  auto operand = [&](const strided_view& w, int64_t seq, const char* tag) {
    const shape_t want = canonical(seq, row);
    if (g.values[static_cast<size_t>(w.source)].shape == want) return w.source;
    const int r = add_value(g, name + "." + tag, type, want);
    m.emitted.push_back(reshape_node(g, name + "." + tag + ".reshape", w.source, r, opset));
    return r;
  };
  node fused;
  fused.op.op_type = "Attention";
  fused.op.domain = "troupe";
  fused.op.name = name;
  fused.op.opset = 1;
  fused.op.attrs.set("num_heads", heads);
  fused.op.attrs.set("scale", static_cast<float>(scale));
  fused.op.attrs.set("layout", std::string(seq_first ? "sbe" : "bse"));
  fused.inputs.push_back(operand(q, q_len, "q"));
  fused.inputs.push_back(packed ? -1 : operand(k, kv_len, "k"));
  fused.inputs.push_back(packed ? -1 : operand(v, kv_len, "v"));
  fused.inputs.push_back(mask);
  while (!fused.inputs.empty() && fused.inputs.back() < 0) fused.inputs.pop_back();
  const shape_t out_shape = canonical(q_len, embed);
  int y = good_out;
  if (g.values[static_cast<size_t>(good_out)].shape != out_shape)
    y = add_value(g, name + ".y", type, out_shape);
  fused.outputs = {y};
  const status ok = check_node(g, fused, where);
  if (!ok.is_ok()) return std::nullopt;
  m.emitted.push_back(std::move(fused));
  if (y != good_out) m.emitted.push_back(reshape_node(g, name + ".y.reshape", y, good_out, opset));
  return m;
}

/// Replaces matched nodes: each match's nodes go, its emitted nodes take the anchor's place.
void apply_matches(graph& g, const std::vector<attention_match>& matches) {
  std::vector<char> removed(g.nodes.size(), 0);
  std::vector<const attention_match*> at(g.nodes.size(), nullptr);
  for (const auto& m : matches) {
    for (int n : m.removed) removed[static_cast<size_t>(n)] = 1;
    at[static_cast<size_t>(m.anchor)] = &m;
  }
  std::vector<node> kept;
  kept.reserve(g.nodes.size());
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    if (at[n]) {
      for (const node& e : at[n]->emitted) kept.push_back(e);
    } else if (!removed[n]) {
      kept.push_back(std::move(g.nodes[n]));
    }
  }
  g.nodes = std::move(kept);
  g.remove_dead();
}

/// A projection Q/K/V can come from: y = x @ W (+ bias), W a 2-D constant.
struct projection {
  int node = -1;
  int x = -1, w = -1, bias = -1;
};

std::optional<projection> as_projection(const graph& g, int v) {
  const int p = g.values[static_cast<size_t>(v)].producer;
  if (p < 0) return std::nullopt;
  const node& n = g.nodes[static_cast<size_t>(p)];
  if (single_output(n) != v || n.inputs.size() < 2) return std::nullopt;
  const bool plain = is_onnx_op(n, "MatMul") && n.inputs.size() == 2;
  const bool fused = n.op.domain == "troupe" && n.op.op_type == "FusedMatMul" &&
                     n.op.attrs.get_string("activation", "").empty() &&
                     (n.inputs.size() < 4 || n.inputs[3] < 0);
  if (!plain && !fused) return std::nullopt;
  const value& w = g.values[static_cast<size_t>(n.inputs[1])];
  if (!w.constant || w.shape.size() != 2) return std::nullopt;
  projection r{p, n.inputs[0], n.inputs[1], -1};
  if (fused && n.inputs.size() > 2 && n.inputs[2] >= 0) {
    const value& b = g.values[static_cast<size_t>(n.inputs[2])];
    if (!b.constant || b.type != w.type || b.constant->elements() != w.shape[1])
      return std::nullopt;
    r.bias = n.inputs[2];
  }
  return r;
}

/// Rows of the three [K, N] matrices side by side: [K, 3N]. Same dtype for all three.
tensor concat_columns(const std::array<const tensor*, 3>& parts) {
  const int64_t rows = parts[0]->dim(0);
  const int64_t cols = parts[0]->dim(1);
  const size_t row_bytes = static_cast<size_t>(cols) * dtype_size(parts[0]->type());
  tensor out = tensor::allocate(parts[0]->type(), {rows, 3 * cols});
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t r = 0; r < rows; ++r) {
    for (const tensor* t : parts) {
      std::memcpy(dst, static_cast<const uint8_t*>(t->raw()) + static_cast<size_t>(r) * row_bytes,
                  row_bytes);
      dst += row_bytes;
    }
  }
  return out;
}

}  // namespace

expected<int> fuse_attention(graph& g, kernels::backend where) {
  if (!kernels::kernel_registry::standard().has_op(where, "troupe", "Attention")) return 0;
  // TROUPE_ATTENTION=0 turns the pass off without a rebuild, for A/B timings and bisecting.
  if (const char* env = std::getenv("TROUPE_ATTENTION"); env && std::string(env) == "0") return 0;
  const consumer_lists cons = g.readers();
  const size_t values_before = g.values.size();
  std::vector<attention_match> matches;
  std::vector<char> taken(g.nodes.size(), 0);
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    if (!is_onnx_op(g.nodes[n], "Softmax")) continue;
    auto m = match_at(g, cons, static_cast<int>(n), where);
    if (!m) continue;
    bool overlap = false;
    for (int r : m->removed) overlap |= taken[static_cast<size_t>(r)] != 0;
    if (overlap) continue;  // cannot happen with sole-reader chains; kept as a guard
    for (int r : m->removed) taken[static_cast<size_t>(r)] = 1;
    matches.push_back(std::move(*m));
  }
  if (matches.empty()) {
    if (g.values.size() != values_before) g.remove_dead();  // views made for matches that failed
    return 0;
  }
  apply_matches(g, matches);
  return static_cast<int>(matches.size());
}

int merge_qkv_projections(graph& g, kernels::backend where) {
  const consumer_lists cons = g.readers();
  std::vector<char> removed(g.nodes.size(), 0);
  // Shared weights (ALBERT's layers) are concatenated once, keyed by the constants' bytes (the
  // matmul fusion gives each layer its own bias value, viewing the same bytes).
  std::map<std::array<const void*, 6>, std::pair<int, int>> merged;
  int count = 0;
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    node& att = g.nodes[n];
    if (att.op.domain != "troupe" || att.op.op_type != "Attention" || att.inputs.size() < 3 ||
        att.inputs[1] < 0 || att.inputs[2] < 0) {
      continue;
    }
    std::array<projection, 3> p;
    bool ok = true;
    for (size_t i = 0; i < 3 && ok; ++i) {
      const int v = att.inputs[i];
      const value& vv = g.values[static_cast<size_t>(v)];
      const auto& c = cons[static_cast<size_t>(v)];
      auto proj = as_projection(g, v);
      ok = proj && !vv.is_graph_output && c.size() == 1 && c[0] == static_cast<int>(n) &&
           !removed[static_cast<size_t>(proj->node)];
      if (ok) p[i] = *proj;
    }
    if (!ok || p[0].x != p[1].x || p[1].x != p[2].x || p[0].node == p[1].node ||
        p[1].node == p[2].node || p[0].node == p[2].node) {
      continue;
    }
    const tensor_info w0 = g.values[static_cast<size_t>(p[0].w)].info();
    bool same = true;
    for (size_t i = 1; i < 3; ++i) {
      const value& wi = g.values[static_cast<size_t>(p[i].w)];
      same &= wi.shape == w0.shape && wi.type == w0.type;
    }
    if (!same) continue;
    const tensor_info q_out = g.values[static_cast<size_t>(att.inputs[0])].info();
    const bool any_bias = p[0].bias >= 0 || p[1].bias >= 0 || p[2].bias >= 0;
    auto bytes_of = [&](int v) -> const void* {
      return v < 0 ? nullptr : g.values[static_cast<size_t>(v)].constant->raw();
    };
    const std::array<const void*, 6> key{bytes_of(p[0].w),    bytes_of(p[1].w),
                                         bytes_of(p[2].w),    bytes_of(p[0].bias),
                                         bytes_of(p[1].bias), bytes_of(p[2].bias)};
    auto it = merged.find(key);
    if (it == merged.end()) {
      const int w =
          g.add_constant(g.nodes[static_cast<size_t>(p[0].node)].op.name + ".qkv_weight",
                         concat_columns({&*g.values[static_cast<size_t>(p[0].w)].constant,
                                         &*g.values[static_cast<size_t>(p[1].w)].constant,
                                         &*g.values[static_cast<size_t>(p[2].w)].constant}));
      int b = -1;
      if (any_bias) {
        const int64_t cols = w0.shape[1];
        std::array<tensor, 3> biases;
        for (size_t i = 0; i < 3; ++i) {
          biases[i] = p[i].bias >= 0
                          ? g.values[static_cast<size_t>(p[i].bias)].constant->reshaped({1, cols})
                          : tensor::zeros(w0.type, {1, cols});
        }
        tensor cat = concat_columns({&biases[0], &biases[1], &biases[2]});
        b = g.add_constant(g.nodes[static_cast<size_t>(p[0].node)].op.name + ".qkv_bias",
                           cat.reshaped({3 * cols}));
      }
      it = merged.emplace(key, std::make_pair(w, b)).first;
    }
    shape_t packed_shape = g.values[static_cast<size_t>(att.inputs[0])].shape;
    packed_shape.back() *= 3;
    node proj;
    const node& first = g.nodes[static_cast<size_t>(p[0].node)];
    proj.op = first.op;
    proj.op.name = first.op.name + ".qkv";
    proj.op.attrs = attribute_map{};
    if (any_bias) {
      proj.op.op_type = "FusedMatMul";
      proj.op.domain = "troupe";
      proj.op.attrs.set("activation", std::string());
      proj.op.attrs.set("activation_params", std::vector<float>{});
    } else {
      proj.op.op_type = "MatMul";
      proj.op.domain.clear();
    }
    const int qkv = add_value(g, att.op.name + ".qkv", q_out.type, packed_shape);
    proj.inputs = {p[0].x, it->second.first};
    if (any_bias) proj.inputs.push_back(it->second.second);
    proj.outputs = {qkv};

    node packed_att = att;
    packed_att.inputs = {qkv, -1, -1};
    if (att.inputs.size() > 3) packed_att.inputs.push_back(att.inputs[3]);
    if (!check_node(g, packed_att, where).is_ok()) continue;
    // The merged projection takes the place of the earliest of the three (its inputs are the
    // shared x and constants); the other two go.
    const int first_index = std::min({p[0].node, p[1].node, p[2].node});
    for (const auto& pi : p) removed[static_cast<size_t>(pi.node)] = 1;
    removed[static_cast<size_t>(first_index)] = 0;
    g.nodes[static_cast<size_t>(first_index)] = std::move(proj);
    removed[static_cast<size_t>(first_index)] = 2;  // replaced: never merged again
    g.nodes[n] = std::move(packed_att);
    ++count;
  }
  if (count) {
    std::vector<node> kept;
    for (size_t n = 0; n < g.nodes.size(); ++n) {
      if (removed[n] != 1) kept.push_back(std::move(g.nodes[n]));
    }
    g.nodes = std::move(kept);
    g.remove_dead();
  }
  return count;
}

}  // namespace troupe::runtime
