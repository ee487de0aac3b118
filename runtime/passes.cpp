#include "runtime/passes.hpp"

#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>

#include "runtime/attention.hpp"
#include "runtime/elementwise_fusion.hpp"
#include "runtime/layout.hpp"

namespace troupe::runtime {
namespace {

/// The single node reading `v`, when exactly one node reads it and it is not a graph output.
int sole_consumer(const graph& g, const std::vector<std::vector<int>>& cons, int v) {
  if (v < 0 || g.values[v].is_graph_output || cons[v].size() != 1) return -1;
  return cons[v][0];
}

/// Does `where` have a kernel for the fused op on this compute type?
bool fusable(kernels::backend where, std::string_view op, dtype t) {
  return is_compute_float(t) && kernels::kernel_registry::standard().has_op_for(where, "troupe", op, t);
}

bool near(std::optional<double> x, double want, double tol = 1e-3) {
  return x && std::fabs(*x - want) <= tol * std::fabs(want);
}


/// Bookkeeping shared by the fusion passes: which nodes were absorbed into a fused node (removed),
/// which hold a fused node now (claimed: never fused again), and committing a fusion at the
/// position of its last absorbed node, so every input of the fused node is defined before it.
struct fusion_state {
  explicit fusion_state(graph& graph_ref)
      : g(graph_ref), cons(graph_ref.readers()), removed(graph_ref.nodes.size(), 0),
        claimed(graph_ref.nodes.size(), 0) {}

  bool available(size_t n) const { return !removed[n] && !claimed[n]; }
  /// The single unclaimed reader of `v`, or -1.
  int next(int v) const {
    const int n = sole_consumer(g, cons, v);
    return n >= 0 && available(static_cast<size_t>(n)) ? n : -1;
  }
  /// Replaces `first` and every node of `absorbed` by `fused`, placed where the last one was.
  void commit(int first, const std::vector<int>& absorbed, node fused, int out) {
    while (fused.inputs.size() > 2 && fused.inputs.back() < 0) fused.inputs.pop_back();  // kernel arity
    fused.outputs = {out};
    const int tail = absorbed.empty() ? first : absorbed.back();
    removed[first] = 1;
    for (int a : absorbed) removed[a] = 1;
    removed[tail] = 0;
    claimed[tail] = 1;
    g.nodes[tail] = std::move(fused);
    ++count;
  }
  int finish() {
    if (count) {
      g.remove_nodes(removed);
      g.remove_dead();
    }
    return count;
  }

  graph& g;
  std::vector<std::vector<int>> cons;
  std::vector<char> removed;
  std::vector<char> claimed;
  int count = 0;
};

/// Activation that can ride in a fused kernel's epilogue, with its parameters.
struct activation {
  std::string name;
  std::vector<float> params;
};

std::optional<activation> as_activation(const graph& g, const node& n) {
  if (!n.op.domain.empty() || n.inputs.empty() || n.outputs.size() != 1) return std::nullopt;
  const std::string& op = n.op.op_type;
  if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "HardSwish") return activation{op, {}};
  if (op == "Gelu") {
    if (n.op.attrs.get_string("approximate", "none") != "none") return std::nullopt;
    return activation{op, {}};
  }
  if (op == "LeakyRelu") return activation{op, {n.op.attrs.get_float("alpha", 0.01f)}};
  if (op == "HardSigmoid") {
    return activation{op, {n.op.attrs.get_float("alpha", 0.2f), n.op.attrs.get_float("beta", 0.5f)}};
  }
  if (op == "Clip") {
    if (!is_compute_float(g.values[n.inputs[0]].type)) return std::nullopt;
    const auto bounds = constant_clip_bounds(g, n);
    if (!bounds) return std::nullopt;
    return activation{op, {bounds->first, bounds->second}};
  }
  return std::nullopt;
}

void set_activation(op_node& op, const activation& a) {
  op.attrs.set("activation", a.name);
  op.attrs.set("activation_params", a.params);
}

}  // namespace

int remove_identities(graph& g) {
  std::vector<char> removed(g.nodes.size(), 0);
  std::vector<int> replace(g.values.size(), -1);
  auto resolve = [&](int v) {
    while (v >= 0 && replace[v] >= 0) v = replace[v];
    return v;
  };
  auto cons = g.readers();
  int count = 0;
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    node& nd = g.nodes[n];
    for (int& in : nd.inputs) in = resolve(in);
    const bool identity = is_onnx_op(nd, "Identity");
    bool dropout = is_onnx_op(nd, "Dropout");
    if (dropout) {
      // training_mode (opset 12+) must be absent or a constant false; the mask must be unused.
      if (nd.inputs.size() > 2 && nd.inputs[2] >= 0) {
        const value& tm = g.values[nd.inputs[2]];
        dropout = tm.constant && tm.constant->elements() == 1 && tm.constant->value_as_double(0) == 0;
      }
      if (nd.outputs.size() > 1 && nd.outputs[1] >= 0 && (!cons[nd.outputs[1]].empty() || g.values[nd.outputs[1]].is_graph_output)) {
        dropout = false;
      }
    }
    if (!(identity || dropout) || nd.inputs.empty() || nd.inputs[0] < 0 || nd.outputs.empty() || nd.outputs[0] < 0) continue;
    if (g.values[nd.outputs[0]].is_graph_output) continue;  // keeps the output's name
    replace[nd.outputs[0]] = nd.inputs[0];
    removed[n] = 1;
    ++count;
  }
  if (count) g.remove_nodes(removed);
  return count;
}

expected<int> fold_batchnorm_into_conv(graph& g) {
  auto cons = g.readers();
  std::vector<char> removed(g.nodes.size(), 0);
  int count = 0;
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    node& conv = g.nodes[n];
    if (!is_onnx_op(conv, "Conv") || conv.inputs.size() < 2 || conv.outputs.size() != 1) continue;
    const int w_id = conv.inputs[1];
    const int b_id = conv.inputs.size() > 2 ? conv.inputs[2] : -1;
    if (!g.values[w_id].constant || g.values[w_id].type != dtype::f32) continue;
    if (b_id >= 0 && !g.values[b_id].constant) continue;
    const int bn_index = sole_consumer(g, cons, conv.outputs[0]);
    if (bn_index < 0) continue;
    node& bn = g.nodes[bn_index];
    if (!is_onnx_op(bn, "BatchNormalization") || bn.inputs.size() != 5 || bn.inputs[0] != conv.outputs[0]) continue;
    bool extra_outputs = false;
    for (size_t o = 1; o < bn.outputs.size(); ++o) extra_outputs |= bn.outputs[o] >= 0;
    if (extra_outputs || bn.op.attrs.get_int("training_mode", 0) != 0) continue;
    bool constants = true;
    for (int i = 1; i < 5; ++i) constants &= g.values[bn.inputs[i]].constant.has_value() && g.values[bn.inputs[i]].type == dtype::f32;
    if (!constants) continue;
    const tensor& w = *g.values[w_id].constant;
    const int64_t out_channels = w.shape().empty() ? 0 : w.dim(0);
    const tensor& scale = *g.values[bn.inputs[1]].constant;
    const tensor& shift = *g.values[bn.inputs[2]].constant;
    const tensor& mean = *g.values[bn.inputs[3]].constant;
    const tensor& var = *g.values[bn.inputs[4]].constant;
    if (scale.elements() != out_channels || shift.elements() != out_channels || mean.elements() != out_channels ||
        var.elements() != out_channels || (b_id >= 0 && g.values[b_id].constant->elements() != out_channels)) {
      continue;
    }
    const double eps = bn.op.attrs.get_float("epsilon", 1e-5f);
    tensor new_w = w.clone();
    tensor new_b = tensor::allocate(dtype::f32, {out_channels});
    const int64_t per_channel = out_channels ? w.elements() / out_channels : 0;
    for (int64_t c = 0; c < out_channels; ++c) {
      const double s = scale.data<float>()[c] / std::sqrt(static_cast<double>(var.data<float>()[c]) + eps);
      float* wc = new_w.data<float>() + c * per_channel;
      for (int64_t k = 0; k < per_channel; ++k) wc[k] = static_cast<float>(wc[k] * s);
      const double b0 = b_id >= 0 ? g.values[b_id].constant->data<float>()[c] : 0.0;
      new_b.data<float>()[c] = static_cast<float>((b0 - mean.data<float>()[c]) * s + shift.data<float>()[c]);
    }
    const std::string base = conv.op.name;
    const int nw = g.add_constant(base + ".folded_weight", std::move(new_w));
    const int nb = g.add_constant(base + ".folded_bias", std::move(new_b));
    conv.inputs.resize(3);
    conv.inputs[1] = nw;
    conv.inputs[2] = nb;
    conv.outputs[0] = bn.outputs[0];
    removed[bn_index] = 1;
    ++count;
  }
  if (count) {
    g.remove_nodes(removed);
    g.remove_dead();
  }
  return count;
}

int fuse_gelu(graph& g, kernels::backend where) {
  if (!kernels::kernel_registry::standard().has_op(where, "", "Gelu")) return 0;
  auto cons = g.readers();
  std::vector<char> removed(g.nodes.size(), 0);
  int count = 0;
  for (size_t e = 0; e < g.nodes.size(); ++e) {
    if (!is_onnx_op(g.nodes[e], "Erf") || removed[e]) continue;
    // Erf's input: x / sqrt(2) or x * (1/sqrt(2)).
    const int erf_in = g.nodes[e].inputs[0];
    const int scale_node = g.values[erf_in].producer;
    if (scale_node < 0 || sole_consumer(g, cons, erf_in) != static_cast<int>(e)) continue;
    const node& sc = g.nodes[scale_node];
    int x = -1;
    if (is_onnx_op(sc, "Div") && near(scalar_constant(g, sc.inputs[1]), std::sqrt(2.0))) x = sc.inputs[0];
    if (is_onnx_op(sc, "Mul") && near(scalar_constant(g, sc.inputs[1]), 1.0 / std::sqrt(2.0))) x = sc.inputs[0];
    if (is_onnx_op(sc, "Mul") && near(scalar_constant(g, sc.inputs[0]), 1.0 / std::sqrt(2.0))) x = sc.inputs[1];
    if (x < 0 || !is_compute_float(g.values[x].type)) continue;
    // Erf -> Add(1)
    const int add = sole_consumer(g, cons, g.nodes[e].outputs[0]);
    if (add < 0 || !is_onnx_op(g.nodes[add], "Add")) continue;
    const node& an = g.nodes[add];
    const int one_side = an.inputs[0] == g.nodes[e].outputs[0] ? 1 : 0;
    if (!near(scalar_constant(g, an.inputs[one_side]), 1.0)) continue;
    // Then either Mul(x, add) -> Mul(., 0.5), or Mul(Mul(x, 0.5), add).
    const int m1 = sole_consumer(g, cons, an.outputs[0]);
    if (m1 < 0 || !is_onnx_op(g.nodes[m1], "Mul")) continue;
    const node& mn = g.nodes[m1];
    const int other = mn.inputs[0] == an.outputs[0] ? mn.inputs[1] : mn.inputs[0];
    int last = -1;
    std::vector<int> chain{scale_node, static_cast<int>(e), add, m1};
    if (other == x) {
      const int m2 = sole_consumer(g, cons, mn.outputs[0]);
      if (m2 < 0 || !is_onnx_op(g.nodes[m2], "Mul")) continue;
      const node& m2n = g.nodes[m2];
      const int half = m2n.inputs[0] == mn.outputs[0] ? m2n.inputs[1] : m2n.inputs[0];
      if (!near(scalar_constant(g, half), 0.5)) continue;
      last = m2;
      chain.push_back(m2);
    } else {
      const int h = g.values[other].producer;
      if (h < 0 || !is_onnx_op(g.nodes[h], "Mul") || sole_consumer(g, cons, other) != m1) continue;
      const node& hn = g.nodes[h];
      const bool x_first = hn.inputs[0] == x;
      if (!(x_first || hn.inputs[1] == x) || !near(scalar_constant(g, hn.inputs[x_first ? 1 : 0]), 0.5)) continue;
      last = m1;
      chain.push_back(h);
    }
    // Scale node may have other readers of x (that's fine); every other link is single-use.
    node gelu;
    gelu.op.op_type = "Gelu";
    gelu.op.name = g.nodes[e].op.name + ".gelu";
    gelu.op.opset = g.nodes[e].op.opset;
    gelu.op.attrs.set("approximate", std::string("none"));
    gelu.inputs = {x};
    gelu.outputs = {g.nodes[last].outputs[0]};
    for (int c : chain) removed[c] = 1;
    removed[last] = 0;
    g.nodes[last] = std::move(gelu);
    ++count;
  }
  if (count) {
    g.remove_nodes(removed);
    g.remove_dead();
  }
  return count;
}

expected<int> fuse_conv(graph& g, kernels::backend where) {
  if (!kernels::kernel_registry::standard().has_op(where, "troupe", "FusedConv")) return 0;
  fusion_state f(g);
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    if (!f.available(n) || !is_onnx_op(g.nodes[n], "Conv") || g.nodes[n].outputs.size() != 1) continue;
    const dtype type = g.values[g.nodes[n].inputs[0]].type;
    if (!fusable(where, "FusedConv", type) || g.values[g.nodes[n].outputs[0]].shape.size() < 3) continue;
    node fused;
    fused.op = g.nodes[n].op;
    fused.op.op_type = "FusedConv";
    fused.op.domain = "troupe";
    fused.inputs = g.nodes[n].inputs;
    fused.inputs.resize(4, -1);
    int out = g.nodes[n].outputs[0];
    const shape_t out_shape = g.values[out].shape;
    const int64_t channels = out_shape[1];
    std::vector<int> absorbed;
    // Add: a per-channel constant joins the bias; a same-shape tensor becomes the residual Z.
    int next = f.next(out);
    if (next >= 0 && is_onnx_op(g.nodes[next], "Add")) {
      const node& an = g.nodes[next];
      const int other = an.inputs[0] == out ? an.inputs[1] : an.inputs[0];
      const value& ov = g.values[other];
      if (an.inputs[0] != an.inputs[1] && ov.type == type) {
        bool per_channel = ov.constant.has_value() && ov.constant->elements() == channels && ov.shape.size() <= out_shape.size();
        if (per_channel) {
          // Shape must broadcast along axis 1 only: [C,1,1], [1,C,1,1].
          const size_t r = out_shape.size();
          for (size_t k = 0; k < ov.shape.size(); ++k) {
            const size_t axis = r - ov.shape.size() + k;
            if (ov.shape[k] != (axis == 1 ? channels : 1)) per_channel = false;
          }
        }
        const int b_id = fused.inputs[2];
        if (per_channel && b_id >= 0 && !g.values[b_id].constant) per_channel = false;  // bias computed at run time
        if (per_channel) {
          const tensor* old_bias = b_id >= 0 ? &*g.values[b_id].constant : nullptr;
          const dtype bias_type = old_bias ? old_bias->type() : type;
          if (old_bias && !is_compute_float(bias_type)) continue;
          tensor bias = tensor::allocate(bias_type, {channels});
          for (int64_t c = 0; c < channels; ++c) {
            bias.set_value_from_double(c, ov.constant->value_as_double(c) + (old_bias ? old_bias->value_as_double(c) : 0.0));
          }
          fused.inputs[2] = g.add_constant(fused.op.name + ".fused_bias", std::move(bias));
          absorbed.push_back(next);
          out = an.outputs[0];
        } else if (!ov.constant && ov.shape == out_shape) {
          fused.inputs[3] = other;
          absorbed.push_back(next);
          out = an.outputs[0];
        }
      }
    }
    next = f.next(out);
    if (next >= 0) {
      if (auto act = as_activation(g, g.nodes[next]); act && g.nodes[next].inputs[0] == out) {
        set_activation(fused.op, *act);
        absorbed.push_back(next);
        out = g.nodes[next].outputs[0];
      }
    }
    if (!absorbed.empty()) f.commit(static_cast<int>(n), absorbed, std::move(fused), out);
  }
  return f.finish();
}

int fuse_matmul(graph& g, kernels::backend where) {
  if (!kernels::kernel_registry::standard().has_op(where, "troupe", "FusedMatMul")) return 0;
  fusion_state f(g);
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    if (!f.available(n) || !is_onnx_op(g.nodes[n], "MatMul") || g.nodes[n].inputs.size() != 2) continue;
    const node& mm = g.nodes[n];
    const value& b = g.values[mm.inputs[1]];
    const dtype type = b.type;
    if (!b.constant || b.shape.size() != 2 || !fusable(where, "FusedMatMul", type) || g.values[mm.inputs[0]].type != type) continue;
    int out = mm.outputs[0];
    const shape_t out_shape = g.values[out].shape;
    const int64_t cols = b.shape[1];
    node fused;
    fused.op = mm.op;
    fused.op.op_type = "FusedMatMul";
    fused.op.domain = "troupe";
    fused.inputs = {mm.inputs[0], mm.inputs[1], -1, -1};
    std::vector<int> absorbed;
    int next = f.next(out);
    // bias: Add with a constant of N elements broadcast along the last axis
    if (next >= 0 && is_onnx_op(g.nodes[next], "Add")) {
      const node& an = g.nodes[next];
      const int other = an.inputs[0] == out ? an.inputs[1] : an.inputs[0];
      const value& ov = g.values[other];
      const bool row = ov.constant && ov.type == type && ov.constant->elements() == cols && !ov.shape.empty() &&
                       ov.shape.back() == cols && ov.shape.size() <= out_shape.size();
      if (row) {
        fused.inputs[2] = g.add_constant(fused.op.name + ".bias", ov.constant->reshaped({cols}));
        absorbed.push_back(next);
        out = an.outputs[0];
        next = f.next(out);
      }
    }
    // residual: Add with a same-shape computed tensor
    if (next >= 0 && is_onnx_op(g.nodes[next], "Add")) {
      const node& an = g.nodes[next];
      const int other = an.inputs[0] == out ? an.inputs[1] : an.inputs[0];
      const value& ov = g.values[other];
      if (an.inputs[0] != an.inputs[1] && !ov.constant && ov.type == type && ov.shape == g.values[out].shape) {
        fused.inputs[3] = other;
        absorbed.push_back(next);
        out = an.outputs[0];
        next = f.next(out);
      }
    }
    if (next >= 0) {
      auto act = as_activation(g, g.nodes[next]);
      if (act && (act->name == "Relu" || act->name == "Gelu") && g.nodes[next].inputs[0] == out) {
        set_activation(fused.op, *act);
        absorbed.push_back(next);
        out = g.nodes[next].outputs[0];
      }
    }
    if (!absorbed.empty()) f.commit(static_cast<int>(n), absorbed, std::move(fused), out);
  }
  return f.finish();
}

int fuse_gemm(graph& g, kernels::backend where) {
  if (!kernels::kernel_registry::standard().has_op(where, "troupe", "FusedGemm")) return 0;
  fusion_state f(g);
  for (size_t n = 0; n < g.nodes.size(); ++n) {
    if (!f.available(n) || !is_onnx_op(g.nodes[n], "Gemm") || !fusable(where, "FusedGemm", g.values[g.nodes[n].inputs[0]].type)) continue;
    const int next = f.next(g.nodes[n].outputs[0]);
    if (next < 0) continue;
    auto act = as_activation(g, g.nodes[next]);
    if (!act) continue;
    node fused = g.nodes[n];
    fused.op.op_type = "FusedGemm";
    fused.op.domain = "troupe";
    set_activation(fused.op, *act);
    // Gemm's optional C stays where it is: the trailing-absent trim only drops missing inputs.
    f.commit(static_cast<int>(n), {next}, std::move(fused), g.nodes[next].outputs[0]);
  }
  return f.finish();
}

status run_graph_passes(graph& g, const pass_options& options) {
  remove_identities(g);
  g.remove_dead();
  if (!options.enable_fusion) return status::ok();
  TROUPE_RETURN_IF_ERROR(fold_batchnorm_into_conv(g).take_status());
  fuse_gelu(g, options.where);
  TROUPE_RETURN_IF_ERROR(fuse_conv(g, options.where).take_status());
  fuse_matmul(g, options.where);
  fuse_gemm(g, options.where);
  if (options.enable_attention) {
    TROUPE_ASSIGN_OR_RETURN(const int attention_nodes, fuse_attention(g, options.where));
    if (attention_nodes > 0) merge_qkv_projections(g, options.where);
  }
  if (channels_last_enabled(options)) {
    TROUPE_RETURN_IF_ERROR(plan_channels_last(g, options.where).take_status());
  }
  // Last: after the named fusions (which absorb their own bias/activation tails) and after the
  // layout pass, which lets plain Add/Sub/Mul/Relu... join channels-last regions (re-laying their
  // constants) but knows nothing of troupe.FusedElementwise. Every value's shape is its stored
  // shape by then, and the fused node is layout-blind, so chains inside a region fuse as well.
  if (elementwise_fusion_enabled(options.where)) fuse_elementwise_chains(g, options.where);
  return status::ok();
}

bool channels_last_enabled(const pass_options& options) {
  switch (options.layout) {
    case layout_mode::nchw: return false;
    case layout_mode::channels_last: return true;
    case layout_mode::automatic: break;
  }
  if (const char* env = std::getenv("TROUPE_CHANNELS_LAST"); env && *env) return std::string(env) != "0";
  return options.where == kernels::backend::cuda;
}

}  // namespace troupe::runtime
