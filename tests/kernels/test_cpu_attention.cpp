// CPU troupe.Attention against a direct double-precision evaluation of its definition
// (kernels/ops/attention_schemas.cpp), and its schema's typed errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "kernels/op_schema.hpp"
#include "tests/kernels/attention_test_cases.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

/// The op's definition, evaluated in double: for each (b, h, i), softmax over j of
/// scale * q_i . k_j + mask, then the weighted sum of the v_j.
tensor reference(const attention_case& c, const std::vector<tensor>& in) {
  const int64_t e = c.heads * c.head_dim;
  const float* q = in[0].data<float>();
  const float* k = c.packed ? q : in[1].data<float>();
  const float* v = c.packed ? q : in[2].data<float>();
  const int64_t row = c.packed ? 3 * e : e;
  const int64_t k_off = c.packed ? e : 0, v_off = c.packed ? 2 * e : 0;
  const double scale = c.scale != 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  auto at = [&](int64_t b, int64_t s, int64_t seq_len) {  // row start of (b, s)
    return c.seq_first ? (s * c.batch + b) * row : (b * seq_len + s) * row;
  };
  // Mask strides under numpy broadcasting to [B, H, Sq, Skv].
  int64_t ms[4] = {0, 0, 0, 0};
  if (!c.mask.empty()) {
    const int64_t full[4] = {c.batch, c.heads, c.q_len, c.kv_len};
    const size_t pad = 4 - c.mask.size();
    int64_t st = 1;
    for (size_t d = 4; d-- > 0;) {
      const int64_t size = d < pad ? 1 : c.mask[d - pad];
      ms[d] = size == 1 && full[d] != 1 ? 0 : st;
      st *= size;
    }
  }
  tensor y = tensor::zeros(dtype::f32, operand_shape(c, c.q_len, e));
  std::vector<double> s(static_cast<size_t>(c.kv_len));
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      for (int64_t i = 0; i < c.q_len; ++i) {
        const float* qi = q + at(b, i, c.q_len) + h * c.head_dim;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < c.kv_len; ++j) {
          const float* kj = k + k_off + at(b, j, c.kv_len) + h * c.head_dim;
          double dot = 0;
          for (int64_t d = 0; d < c.head_dim; ++d) dot += static_cast<double>(qi[d]) * kj[d];
          s[j] = dot * scale;
          if (!c.mask.empty())
            s[j] += in[3].data<float>()[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]];
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < c.kv_len; ++j) sum += (s[j] = std::exp(s[j] - mx));
        const int64_t y_row = c.seq_first ? (i * c.batch + b) * e : (b * c.q_len + i) * e;
        for (int64_t d = 0; d < c.head_dim; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < c.kv_len; ++j) {
            acc += s[j] / sum * v[v_off + at(b, j, c.kv_len) + h * c.head_dim + d];
          }
          y.data<float>()[y_row + h * c.head_dim + d] = static_cast<float>(acc);
        }
      }
    }
  }
  return y;
}

std::vector<tensor> inputs_for(const attention_case& c) {
  std::vector<tensor> in = random_attention_operands(c);
  if (!c.mask.empty()) {
    // Some masked-out keys, as attention masks have them.
    tensor& m = in.back();
    for (int64_t i = 0; i < m.elements(); i += 5) m.data<float>()[i] = -3.4e38f;
  }
  return in;
}

TEST(CpuAttention, MatchesTheDefinition) {
  const attention_case cases[] = {
      {2, 12, 16, 16, 64, false, false, {2, 1, 1, 16}},  // BERT-like, key-padding mask
      {2, 12, 16, 16, 64, true, false, {2, 1, 16, 16}},  // packed QKV, [B,1,S,S] mask
      {3, 2, 7, 13, 32, false, false, {}},               // cross lengths, no mask
      {2, 3, 49, 49, 32, true, false, {1, 3, 49, 49}},   // Swin window: per-head bias
      {2, 4, 197, 197, 16, true, true, {}},              // ViT: sequence-first packed
      {1, 1, 1, 1, 8, false, false, {1}},                // one of everything
      {2, 2, 37, 70, 24, false, true, {37, 70}, 0.3f},   // seq-first, [Sq,Skv] mask, scale
      {2, 2, 33, 5, 80, false, false, {2, 2, 33, 5}},    // full mask, 33 rows: a partial task
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(describe(c));
    const auto in = inputs_for(c);
    auto out = run_op(attention_node(c), in);
    ASSERT_TRUE(out) << out.error().to_string();
    const tensor want = reference(c, in);
    ASSERT_EQ((*out)[0].shape(), want.shape());
    EXPECT_LE(relative_l2((*out)[0], want), 1e-6);
  }
}

TEST(CpuAttention, FullyMaskedRowIsNanLikeSoftmax) {
  attention_case c{1, 1, 2, 3, 4, false, false, {1, 1, 2, 3}};
  auto in = inputs_for(c);
  float* m = in[3].data<float>();
  for (int j = 0; j < 3; ++j) m[j] = -std::numeric_limits<float>::infinity();  // row 0
  for (int j = 3; j < 6; ++j) m[j] = 0.0f;
  auto out = run_op(attention_node(c), in);
  ASSERT_TRUE(out) << out.error().to_string();
  const float* y = (*out)[0].data<float>();
  for (int d = 0; d < 4; ++d) EXPECT_TRUE(std::isnan(y[d])) << d;
  for (int d = 4; d < 8; ++d) EXPECT_TRUE(std::isfinite(y[d])) << d;
}

TEST(CpuAttention, LargeNegativeMaskKeepsRowsFinite) {
  // -3.4e38 (torch.finfo(float32).min, what HF exports add) must not overflow to -inf + NaN.
  attention_case c{1, 2, 4, 6, 8, false, false, {1, 1, 1, 6}};
  auto in = inputs_for(c);
  for (int j = 0; j < 6; ++j) in[3].data<float>()[j] = j < 3 ? 0.0f : -3.4028234e38f;
  auto out = run_op(attention_node(c), in);
  ASSERT_TRUE(out) << out.error().to_string();
  EXPECT_LE(relative_l2((*out)[0], reference(c, in)), 1e-6);
}

TEST(CpuAttention, SchemaRejectsMalformedNodes) {
  auto infer = [](const op_node& n, std::vector<tensor_info> in) {
    const auto* s = kernels::schema_registry::standard().find("troupe", "Attention");
    std::vector<const tensor*> values(in.size(), nullptr);
    kernels::infer_context ic{n, in, values, 1};
    return s->infer(ic);
  };
  const tensor_info q{dtype::f32, {2, 5, 64}};
  op_node n = make_node("Attention", 1, "troupe");
  auto missing_heads = infer(n, {q, q, q});
  ASSERT_FALSE(missing_heads);
  EXPECT_EQ(missing_heads.error().code(), error_code::invalid_model);
  n.attrs.set("num_heads", int64_t{3});  // 64 is not a multiple of 3
  auto bad_heads = infer(n, {q, q, q});
  ASSERT_FALSE(bad_heads);
  EXPECT_EQ(bad_heads.error().code(), error_code::invalid_model);
  n.attrs.set("num_heads", int64_t{4});
  EXPECT_TRUE(infer(n, {q, q, q}));
  EXPECT_FALSE(infer(n, {q, q, tensor_info{}}));                             // K without V
  EXPECT_FALSE(infer(n, {tensor_info{dtype::f32, {2, 5, 64}}}));             // packed: 64 % 3
  EXPECT_FALSE(infer(n, {tensor_info{dtype::f32, {10, 64}}, q, q}));         // rank 2
  EXPECT_FALSE(infer(n, {q, tensor_info{dtype::f32, {2, 5, 32}}, q}));       // K's width
  EXPECT_FALSE(infer(n, {q, q, q, tensor_info{dtype::f32, {2, 4, 5, 4}}}));  // mask width
  EXPECT_FALSE(infer(n, {q, q, q, tensor_info{dtype::f16, {2, 1, 1, 5}}}));  // mask dtype
  EXPECT_FALSE(infer(n, {tensor_info{dtype::i32, {2, 5, 64}}, q, q}));
  n.attrs.set("layout", std::string("bhsd"));
  EXPECT_FALSE(infer(n, {q, q, q}));
  n.attrs.set("layout", std::string("sbe"));
  auto sbe =
      infer(n, {q, tensor_info{dtype::f32, {7, 5, 64}}, tensor_info{dtype::f32, {7, 5, 64}}});
  ASSERT_TRUE(sbe) << sbe.error().to_string();
  EXPECT_EQ((*sbe)[0].shape, (shape_t{2, 5, 64}));
  // The packed form's output is E wide.
  n.attrs.set("layout", std::string("bse"));
  auto packed = infer(n, {tensor_info{dtype::f32, {2, 5, 192}}});
  ASSERT_TRUE(packed) << packed.error().to_string();
  EXPECT_EQ((*packed)[0].shape, (shape_t{2, 5, 64}));
}

}  // namespace
}  // namespace troupe::testing
