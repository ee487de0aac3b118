// The attention pass (runtime/attention.hpp) on the CPU: small transformer graphs in the shapes
// torch.onnx exports them (BERT, ViT's sequence-first packed QKV, Swin's packed windows) run with
// and without the pass; the outputs must agree and the node counts prove the rewrite. Graphs the
// pass must leave alone (a score tensor read elsewhere, a head split it cannot read in place...)
// must keep their nodes and their results.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "runtime/device.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/passes.hpp"
#include "runtime/plan.hpp"
#include "runtime/specialize.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

void add_int64_initializer(onnx::ModelProto& m, const std::string& name,
                           const std::vector<int64_t>& values) {
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  if (values.size() != 1 || name.find("scalar") == std::string::npos)
    t->add_dims(static_cast<int64_t>(values.size()));
  for (int64_t v : values) t->add_int64_data(v);
}

void add_scalar(onnx::ModelProto& m, const std::string& name, float v) {
  add_float_initializer(m, name, {}, {v});
}

/// y = x @ W + b with fresh weights, HF-style (bias first in the Add).
std::string linear(onnx::ModelProto& m, const std::string& x, const std::string& name, int64_t in,
                   int64_t out, const std::string& shared_weights = "") {
  const std::string w = (shared_weights.empty() ? name : shared_weights) + ".w";
  const std::string b = (shared_weights.empty() ? name : shared_weights) + ".b";
  if (shared_weights.empty() || name == shared_weights) {
    add_float_initializer(
        m, w, {in, out},
        random_values(in * out, -1.0f / std::sqrt(float(in)), 1.0f / std::sqrt(float(in))));
    add_float_initializer(m, b, {out}, random_values(out, -0.1f, 0.1f));
  }
  add_node(m, "MatMul", {x, w}, {name + ".mm"});
  add_node(m, "Add", {b, name + ".mm"}, {name + ".out"});
  return name + ".out";
}

enum class scale_mode { div_scores, mul_scores, sqrt_on_q_and_k, mul_q };
enum class mask_mode { none, key_padding_input, causal_constant, add_before_scale };

struct bert_options {
  int64_t heads = 4, head_dim = 16;
  scale_mode scale = scale_mode::div_scores;
  mask_mode mask = mask_mode::key_padding_input;
  bool scores_are_output = false;       // the score tensor is also a graph output
  bool probs_read_twice = false;        // the probabilities feed another node too
  bool q_projection_is_output = false;  // blocks the QKV merge, not the fusion
  bool heads_not_contiguous = false;    // heads split as [B,S,D,H]: no in-place read
  int layers = 1;
  bool share_weights = false;  // ALBERT: every layer uses layer 0's weights
};

/// HF BERT self-attention layers on x [batch, seq, E], mask [batch, 1, 1, seq] (additive).
onnx::ModelProto bert_like(const bert_options& o) {
  const int64_t e = o.heads * o.head_dim;
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "seq", std::to_string(e)});
  if (o.mask == mask_mode::key_padding_input || o.mask == mask_mode::add_before_scale) {
    *m.mutable_graph()->add_input() = make_value_info("mask", 1, {"batch", "1", "1", "seq"});
  }
  add_int64_initializer(m, "split_shape",
                        {0, -1, o.heads_not_contiguous ? o.head_dim : o.heads,
                         o.heads_not_contiguous ? o.heads : o.head_dim});
  add_int64_initializer(m, "merge_shape", {0, -1, e});
  add_scalar(m, "sqrt_d", std::sqrt(static_cast<float>(o.head_dim)));
  add_scalar(m, "inv_sqrt_d", 1.0f / std::sqrt(static_cast<float>(o.head_dim)));
  add_scalar(m, "quarter_root", std::pow(static_cast<float>(o.head_dim), -0.25f));
  std::string x = "x";
  for (int l = 0; l < o.layers; ++l) {
    std::string p = "l";
    p += std::to_string(l);
    p += '.';
    const std::string shared = o.share_weights ? "l0." : "";
    auto head_split = [&](const std::string& in, const std::string& tag,
                          std::vector<int64_t> perm) {
      add_node(m, "Reshape", {in, "split_shape"}, {p + tag + ".4d"});
      if (o.heads_not_contiguous) {  // [B,S,D,H] -> the same logical [B,H,S,D] / [B,H,D,S]
        perm = perm == std::vector<int64_t>{0, 2, 1, 3} ? std::vector<int64_t>{0, 3, 1, 2}
                                                        : std::vector<int64_t>{0, 3, 2, 1};
      }
      set_ints(add_node(m, "Transpose", {p + tag + ".4d"}, {p + tag + ".heads"}), "perm", perm);
      return p + tag + ".heads";
    };
    const std::string q = linear(m, x, p + "q", e, e, o.share_weights ? shared + "q" : "");
    const std::string k = linear(m, x, p + "k", e, e, o.share_weights ? shared + "k" : "");
    const std::string v = linear(m, x, p + "v", e, e, o.share_weights ? shared + "v" : "");
    if (o.q_projection_is_output && l == 0)
      *m.mutable_graph()->add_output() = make_value_info(q, 1, {"batch", "seq", std::to_string(e)});
    std::string qh = head_split(q, "q", {0, 2, 1, 3});
    std::string kh = head_split(k, "k", {0, 2, 3, 1});
    const std::string vh = head_split(v, "v", {0, 2, 1, 3});
    if (o.scale == scale_mode::sqrt_on_q_and_k) {
      add_node(m, "Mul", {qh, "quarter_root"}, {p + "q.scaled"});
      add_node(m, "Mul", {"quarter_root", kh}, {p + "k.scaled"});
      qh = p + "q.scaled";
      kh = p + "k.scaled";
    } else if (o.scale == scale_mode::mul_q) {
      add_node(m, "Mul", {qh, "inv_sqrt_d"}, {p + "q.scaled"});
      qh = p + "q.scaled";
    }
    add_node(m, "MatMul", {qh, kh}, {p + "scores"});
    if (o.scores_are_output && l == 0) {
      *m.mutable_graph()->add_output() =
          make_value_info(p + "scores", 1, {"batch", std::to_string(o.heads), "seq", "seq"});
    }
    std::string s = p + "scores";
    if (o.mask == mask_mode::add_before_scale) {
      add_node(m, "Add", {s, "mask"}, {p + "masked_first"});
      s = p + "masked_first";
    }
    if (o.scale == scale_mode::div_scores || o.mask == mask_mode::add_before_scale) {
      add_node(m, "Div", {s, "sqrt_d"}, {p + "scaled"});
      s = p + "scaled";
    } else if (o.scale == scale_mode::mul_scores) {
      add_node(m, "Mul", {"inv_sqrt_d", s}, {p + "scaled"});
      s = p + "scaled";
    }
    if (o.mask == mask_mode::key_padding_input) {
      add_node(m, "Add", {s, "mask"}, {p + "masked"});
      s = p + "masked";
    } else if (o.mask == mask_mode::causal_constant) {
      add_node(m, "Add", {"causal", s}, {p + "masked"});
      s = p + "masked";
    }
    set_int(add_node(m, "Softmax", {s}, {p + "probs"}), "axis", -1);
    add_node(m, "MatMul", {p + "probs", vh}, {p + "context"});
    if (o.probs_read_twice && l == 0) {
      set_int(add_node(m, "ReduceMax", {p + "probs"}, {"probs_max"}), "keepdims", 0);
      *m.mutable_graph()->add_output() = make_value_info("probs_max", 1, {});
    }
    set_ints(add_node(m, "Transpose", {p + "context"}, {p + "context.t"}), "perm", {0, 2, 1, 3});
    add_node(m, "Reshape", {p + "context.t", "merge_shape"}, {p + "merged"});
    x = linear(m, p + "merged", p + "o", e, e, o.share_weights ? shared + "o" : "");
  }
  *m.mutable_graph()->add_output() = make_value_info(x, 1, {"batch", "seq", std::to_string(e)});
  return m;
}

void add_causal_mask(onnx::ModelProto& m, int64_t seq) {
  std::vector<float> c(static_cast<size_t>(seq * seq));
  for (int64_t i = 0; i < seq; ++i) {
    for (int64_t j = 0; j < seq; ++j) c[static_cast<size_t>(i * seq + j)] = j <= i ? 0.0f : -1e9f;
  }
  add_float_initializer(m, "causal", {1, 1, seq, seq}, c);
}

struct run_result {
  std::vector<tensor> outputs;
  std::map<std::string, int> ops;  // op counts of the optimised graph
  int nodes = 0;
};

/// Loads, specialises for `inputs`, runs the passes (with or without attention fusion), plans
/// and runs on the CPU.
expected<run_result> run(const onnx::ModelProto& m, const std::vector<tensor>& inputs,
                         bool attention) {
  const std::string bytes = serialize(m);
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(bytes.data(), bytes.size(), ""));
  std::vector<tensor_info> infos;
  for (const auto& t : inputs) infos.push_back(t.info());
  TROUPE_RETURN_IF_ERROR(specialize(g, infos));
  pass_options po;
  po.enable_attention = attention;
  TROUPE_RETURN_IF_ERROR(run_graph_passes(g, po));
  run_result r;
  for (const auto& n : g.nodes)
    ++r.ops[n.op.domain.empty() ? n.op.op_type : n.op.domain + "." + n.op.op_type];
  r.nodes = static_cast<int>(g.nodes.size());
  TROUPE_ASSIGN_OR_RETURN(auto dev, make_device(kernels::backend::cpu, 0));
  TROUPE_ASSIGN_OR_RETURN(auto p, plan::build(std::move(g), dev));
  for (const auto& oi : p->output_infos()) r.outputs.push_back(tensor::allocate(oi.type, oi.shape));
  TROUPE_RETURN_IF_ERROR(p->run(inputs, r.outputs));
  return r;
}

/// Additive key-padding mask [batch, 1, 1, seq]: the last `padded` keys of odd batches masked
/// with torch.finfo(float32).min, as HF exports do.
tensor padding_mask(int64_t batch, int64_t seq, int64_t padded) {
  tensor t = tensor::zeros(dtype::f32, {batch, 1, 1, seq});
  for (int64_t b = 1; b < batch; b += 2) {
    for (int64_t j = seq - padded; j < seq; ++j) t.data<float>()[b * seq + j] = -3.4028234e38f;
  }
  return t;
}

/// Runs both ways and checks agreement; returns the fused run.
run_result expect_same(const onnx::ModelProto& m, const std::vector<tensor>& inputs) {
  auto plain = run(m, inputs, false);
  auto fused = run(m, inputs, true);
  EXPECT_TRUE(plain) << plain.error().to_string();
  EXPECT_TRUE(fused) << fused.error().to_string();
  if (!plain || !fused) return {};
  EXPECT_EQ(plain->ops.count("troupe.Attention"), 0u);
  EXPECT_EQ(plain->outputs.size(), fused->outputs.size());
  for (size_t i = 0; i < plain->outputs.size() && i < fused->outputs.size(); ++i) {
    EXPECT_EQ(plain->outputs[i].shape(), fused->outputs[i].shape());
    EXPECT_LE(rel_l2(fused->outputs[i], plain->outputs[i]), 1e-5) << "output " << i;
  }
  return std::move(*fused);
}

TEST(attention_pass, bert_layers_become_one_attention_node_each) {
  bert_options o;
  o.layers = 2;
  const auto m = bert_like(o);
  for (auto [batch, seq] : {std::pair<int64_t, int64_t>{2, 16}, {1, 13}, {3, 37}}) {
    SCOPED_TRACE(::testing::Message() << "batch " << batch << " seq " << seq);
    auto r = expect_same(m, {uniform_input({batch, seq, 64}), padding_mask(batch, seq, 3)});
    // Per layer: one packed QKV projection, the attention, the output projection.
    EXPECT_EQ(r.ops["troupe.Attention"], 2);
    EXPECT_EQ(r.ops["Softmax"], 0);
    EXPECT_EQ(r.ops["Transpose"], 0);
    EXPECT_EQ(r.ops["MatMul"], 0);
    EXPECT_EQ(r.ops["troupe.FusedMatMul"], 4);
    EXPECT_EQ(r.nodes, 6);
  }
}

TEST(attention_pass, every_scale_placement_folds_into_the_node) {
  for (scale_mode s : {scale_mode::div_scores, scale_mode::mul_scores, scale_mode::sqrt_on_q_and_k,
                       scale_mode::mul_q}) {
    SCOPED_TRACE(static_cast<int>(s));
    bert_options o;
    o.scale = s;
    auto r = expect_same(bert_like(o), {uniform_input({2, 11, 64}, -3, 3), padding_mask(2, 11, 4)});
    EXPECT_EQ(r.ops["troupe.Attention"], 1);
    EXPECT_EQ(r.ops["Mul"] + r.ops["Div"], 0);
  }
}

TEST(attention_pass, masks_none_and_constant) {
  bert_options o;
  o.mask = mask_mode::none;
  auto r = expect_same(bert_like(o), {uniform_input({2, 9, 64})});
  EXPECT_EQ(r.ops["troupe.Attention"], 1);
  EXPECT_EQ(r.ops["Add"], 0);
  o.mask = mask_mode::causal_constant;
  auto m = bert_like(o);
  add_causal_mask(m, 9);
  r = expect_same(m, {uniform_input({2, 9, 64})});
  EXPECT_EQ(r.ops["troupe.Attention"], 1);
  EXPECT_EQ(r.ops["Add"], 0);
}

TEST(attention_pass, shared_weights_are_concatenated_once) {
  bert_options o;
  o.layers = 3;
  o.share_weights = true;
  const auto m = bert_like(o);
  const std::vector<tensor> in{uniform_input({2, 8, 64}), padding_mask(2, 8, 2)};
  auto r = expect_same(m, in);
  EXPECT_EQ(r.ops["troupe.Attention"], 3);
  const std::string bytes = serialize(m);
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_TRUE(g);
  ASSERT_TRUE(specialize(*g, {in[0].info(), in[1].info()}).is_ok());
  ASSERT_TRUE(run_graph_passes(*g, {}).is_ok());
  int packed_weights = 0;
  for (const auto& v : g->values) packed_weights += v.name.find("qkv_weight") != std::string::npos;
  EXPECT_EQ(packed_weights, 1);
}

// torchvision ViT (nn.MultiheadAttention, batch_first): x transposed to [S, B, E], one in-proj
// [S, B, 3E], unflattened and transposed to [3, S, B, E], q/k/v gathered, each viewed as
// [S, B*H, D] -> [B*H, S, D] -> [B, H, S, D]; sqrt of the scale on q and on k^T; the output
// permuted to [S, B, H, D] and flattened to [S*B, E] for the out-proj.
onnx::ModelProto vit_like(int64_t heads, int64_t dim, int64_t batch, int64_t seq) {
  const int64_t e = heads * dim;
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "seq", std::to_string(e)});
  add_float_initializer(m, "w_in", {e, 3 * e}, random_values(e * 3 * e, -0.2f, 0.2f));
  add_float_initializer(m, "b_in", {3 * e}, random_values(3 * e, -0.1f, 0.1f));
  add_int64_initializer(m, "unflatten", {0, 0, 3, e});
  add_int64_initializer(m, "axes0", {0});
  add_int64_initializer(m, "axes3", {3});
  add_int64_initializer(m, "per_head", {0, -1, dim});
  add_int64_initializer(m, "batch_heads", {batch, heads, seq, dim});
  add_int64_initializer(m, "flat", {-1, e});
  add_scalar(m, "root_scale", std::pow(static_cast<float>(dim), -0.25f));
  for (int i = 0; i < 3; ++i) add_int64_initializer(m, "scalar" + std::to_string(i), {i});
  set_ints(add_node(m, "Transpose", {"x"}, {"xs"}), "perm", {1, 0, 2});
  add_node(m, "MatMul", {"xs", "w_in"}, {"proj_mm"});
  add_node(m, "Add", {"proj_mm", "b_in"}, {"proj"});
  add_node(m, "Reshape", {"proj", "unflatten"}, {"proj4"});
  add_node(m, "Unsqueeze", {"proj4", "axes0"}, {"proj5"});
  set_ints(add_node(m, "Transpose", {"proj5"}, {"proj5t"}), "perm", {3, 1, 2, 0, 4});
  add_node(m, "Squeeze", {"proj5t", "axes3"}, {"qkv"});
  std::string heads_of[3];
  for (int i = 0; i < 3; ++i) {
    const std::string t = std::string(1, "qkv"[i]);
    set_int(add_node(m, "Gather", {"qkv", "scalar" + std::to_string(i)}, {t}), "axis", 0);
    add_node(m, "Reshape", {t, "per_head"}, {t + "3"});
    set_ints(add_node(m, "Transpose", {t + "3"}, {t + "3t"}), "perm", {1, 0, 2});
    add_node(m, "Reshape", {t + "3t", "batch_heads"}, {t + "4"});
    heads_of[i] = t + "4";
  }
  add_node(m, "Mul", {heads_of[0], "root_scale"}, {"qs"});
  set_ints(add_node(m, "Transpose", {heads_of[1]}, {"kt"}), "perm", {0, 1, 3, 2});
  add_node(m, "Mul", {"kt", "root_scale"}, {"kts"});
  add_node(m, "MatMul", {"qs", "kts"}, {"scores"});
  set_int(add_node(m, "Softmax", {"scores"}, {"probs"}), "axis", -1);
  add_node(m, "MatMul", {"probs", heads_of[2]}, {"ctx"});
  set_ints(add_node(m, "Transpose", {"ctx"}, {"ctx_t"}), "perm", {2, 0, 1, 3});
  add_node(m, "Reshape", {"ctx_t", "flat"}, {"ctx_flat"});
  add_float_initializer(m, "w_out", {e, e}, random_values(e * e, -0.2f, 0.2f));
  add_node(m, "MatMul", {"ctx_flat", "w_out"}, {"y"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"?", std::to_string(e)});
  return m;
}

TEST(attention_pass, vit_sequence_first_packed_qkv) {
  for (auto [batch, seq] : {std::pair<int64_t, int64_t>{2, 17}, {1, 5}, {3, 1}}) {
    SCOPED_TRACE(::testing::Message() << "batch " << batch << " seq " << seq);
    const auto m = vit_like(4, 16, batch, seq);
    auto r = expect_same(m, {uniform_input({batch, seq, 64}, -2, 2)});
    EXPECT_EQ(r.ops["troupe.Attention"], 1);
    EXPECT_EQ(r.ops["Softmax"] + r.ops["Gather"] + r.ops["Squeeze"] + r.ops["Mul"], 0);
    EXPECT_EQ(r.ops["Transpose"], 1);  // only x -> [S, B, E] remains
  }
}

// torchvision Swin's window attention: qkv [B', N, 3E] reshaped [B', N, 3, H, D], permuted to
// [3, B', H, N, D], q/k/v = qkv[0..2]; q scaled; a relative position bias [1, H, N, N] added.
onnx::ModelProto swin_like(int64_t heads, int64_t dim, int64_t tokens) {
  const int64_t e = heads * dim;
  auto m = make_model();
  *m.mutable_graph()->add_input() =
      make_value_info("x", 1, {"windows", std::to_string(tokens), std::to_string(e)});
  add_float_initializer(m, "w_qkv", {e, 3 * e}, random_values(e * 3 * e, -0.3f, 0.3f));
  add_float_initializer(m, "b_qkv", {3 * e}, random_values(3 * e, -0.1f, 0.1f));
  add_float_initializer(m, "bias", {1, heads, tokens, tokens},
                        random_values(heads * tokens * tokens, -2, 2));
  add_int64_initializer(m, "split", {0, 0, 3, heads, dim});
  add_int64_initializer(m, "merge", {0, 0, e});
  add_scalar(m, "scale", 1.0f / std::sqrt(static_cast<float>(dim)));
  for (int i = 0; i < 3; ++i) add_int64_initializer(m, "scalar" + std::to_string(i), {i});
  add_node(m, "MatMul", {"x", "w_qkv"}, {"qkv_mm"});
  add_node(m, "Add", {"qkv_mm", "b_qkv"}, {"qkv"});
  add_node(m, "Reshape", {"qkv", "split"}, {"qkv5"});
  set_ints(add_node(m, "Transpose", {"qkv5"}, {"qkv5t"}), "perm", {2, 0, 3, 1, 4});
  for (int i = 0; i < 3; ++i) {
    set_int(add_node(m, "Gather", {"qkv5t", "scalar" + std::to_string(i)},
                     {std::string(1, "qkv"[i]) + "h"}),
            "axis", 0);
  }
  add_node(m, "Mul", {"qh", "scale"}, {"qhs"});
  set_ints(add_node(m, "Transpose", {"kh"}, {"kht"}), "perm", {0, 1, 3, 2});
  add_node(m, "MatMul", {"qhs", "kht"}, {"scores"});
  add_node(m, "Add", {"scores", "bias"}, {"biased"});
  set_int(add_node(m, "Softmax", {"biased"}, {"probs"}), "axis", -1);
  add_node(m, "MatMul", {"probs", "vh"}, {"ctx"});
  set_ints(add_node(m, "Transpose", {"ctx"}, {"ctx_t"}), "perm", {0, 2, 1, 3});
  add_node(m, "Reshape", {"ctx_t", "merge"}, {"y"});
  *m.mutable_graph()->add_output() =
      make_value_info("y", 1, {"windows", std::to_string(tokens), std::to_string(e)});
  return m;
}

TEST(attention_pass, swin_window_packed_qkv_with_position_bias) {
  const auto m = swin_like(3, 32, 49);
  auto r = expect_same(m, {uniform_input({4, 49, 96}, -2, 2)});
  EXPECT_EQ(r.ops["troupe.Attention"], 1);
  EXPECT_EQ(r.ops["Transpose"] + r.ops["Gather"] + r.ops["Add"] + r.ops["Softmax"], 0);
  EXPECT_EQ(r.nodes, 2);  // the qkv projection and the attention
}

// ---- graphs the pass must leave alone --------------------------------------------------------

TEST(attention_pass, score_tensor_that_is_a_graph_output_blocks_the_rewrite) {
  bert_options o;
  o.scores_are_output = true;
  auto r = expect_same(bert_like(o), {uniform_input({2, 6, 64}), padding_mask(2, 6, 2)});
  EXPECT_EQ(r.ops["troupe.Attention"], 0);
  EXPECT_EQ(r.ops["Softmax"], 1);
}

TEST(attention_pass, probabilities_read_elsewhere_block_the_rewrite) {
  bert_options o;
  o.probs_read_twice = true;
  auto r = expect_same(bert_like(o), {uniform_input({2, 6, 64}), padding_mask(2, 6, 2)});
  EXPECT_EQ(r.ops["troupe.Attention"], 0);
  EXPECT_EQ(r.ops["Softmax"], 1);
}

TEST(attention_pass, heads_that_are_not_contiguous_are_left_alone) {
  bert_options o;
  o.heads_not_contiguous = true;
  auto r = expect_same(bert_like(o), {uniform_input({2, 6, 64}), padding_mask(2, 6, 2)});
  EXPECT_EQ(r.ops["troupe.Attention"], 0);
  EXPECT_EQ(r.ops["Softmax"], 1);
}

TEST(attention_pass, mask_added_before_the_scale_is_left_alone) {
  bert_options o;
  o.mask = mask_mode::add_before_scale;
  auto r = expect_same(bert_like(o), {uniform_input({2, 6, 64}), padding_mask(2, 6, 0)});
  EXPECT_EQ(r.ops["troupe.Attention"], 0);
}

TEST(attention_pass, projection_read_elsewhere_keeps_q_k_v_separate) {
  bert_options o;
  o.q_projection_is_output = true;
  auto r = expect_same(bert_like(o), {uniform_input({2, 6, 64}), padding_mask(2, 6, 2)});
  EXPECT_EQ(r.ops["troupe.Attention"], 1);
  EXPECT_EQ(r.ops["troupe.FusedMatMul"], 4);  // q, k, v and the output projection
}

TEST(attention_pass, disabled_by_option) {
  bert_options o;
  auto r = run(bert_like(o), {uniform_input({2, 6, 64}), padding_mask(2, 6, 2)}, false);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->ops["troupe.Attention"], 0);
  EXPECT_EQ(r->ops["Softmax"], 1);
}

}  // namespace
}  // namespace troupe::runtime
