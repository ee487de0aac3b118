// CUDA troupe.Attention against the CPU kernel (itself checked against the op's definition in
// tests/kernels/test_cpu_attention.cpp): f32 within 1e-4 and f16 within 1e-2 relative L2, on the
// tensor-core path (f16, head dims 32/64/128) and the SIMT path (f32; f16 with other head dims),
// with masks of every broadcast form, packed and sequence-first operands, and sequence lengths
// that leave partial query blocks and key tiles.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/attention_test_cases.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

/// Random operands; the mask masks every fifth key with `masked` (never key 0, so no row is
/// masked entirely).
std::vector<tensor> inputs_for(const attention_case& c, float masked) {
  std::vector<tensor> in = random_attention_operands(c);
  if (!c.mask.empty()) {
    tensor& m = in.back();
    const int64_t last = c.mask.back();
    for (int64_t i = 0; i < m.elements(); ++i) {
      if (last > 1 && i % last % 5 == 4) m.data<float>()[i] = masked;
    }
  }
  return in;
}

const attention_case kCases[] = {
    {2, 12, 128, 128, 64, false, false, {2, 1, 1, 128}},   // BERT, key-padding mask
    {2, 12, 128, 128, 64, true, false, {2, 1, 128, 128}},  // BERT as exported, packed QKV
    {2, 3, 49, 49, 32, true, false, {1, 3, 49, 49}},       // Swin window, position bias
    {2, 4, 197, 197, 64, true, true, {}},                  // ViT: sequence-first packed
    {2, 2, 77, 131, 128, false, false, {2, 2, 77, 131}},   // D 128, full mask, partial tiles
    {1, 2, 200, 1, 64, false, false, {}},                  // one key
    {2, 2, 65, 64, 64, false, false, {64}},                // one row past a query block
    {2, 2, 64, 65, 32, false, true, {64, 65}},             // one key past a tile
    {3, 2, 7, 13, 40, false, false, {}},                   // head dim 40: SIMT
    {1, 1, 1, 1, 8, false, false, {1}},                    // one of everything
    {2, 2, 33, 70, 24, false, true, {33, 70}},             // seq-first, odd head dim
    {2, 2, 70, 33, 256, false, false, {2, 1, 70, 1}},      // largest head dim; per-row mask
    // Grids of >= 512 blocks of 128 rows take the 8-warp tensor-core blocks:
    {32, 16, 128, 128, 64, false, false, {32, 1, 1, 128}},  // BERT-like, key-padding mask
    {22, 12, 197, 197, 64, true, true, {}},                 // ViT-like: a partial second block
    {8, 32, 130, 70, 128, false, false, {8, 32, 130, 70}},  // D 128, full mask
};

TEST(CudaAttention, Float32MatchesCpu) {
  TROUPE_REQUIRE_GPU();
  for (const auto& c : kCases) {
    SCOPED_TRACE(describe(c));
    expect_parity(attention_node(c), inputs_for(c, -3.4028234e38f));
  }
}

TEST(CudaAttention, Float16MatchesCpu) {
  TROUPE_REQUIRE_GPU();
  for (const auto& c : kCases) {
    SCOPED_TRACE(describe(c));
    // -65504: torch.finfo(float32).min after the fp16 conversion saturates it.
    expect_parity(attention_node(c), inputs_for(c, -65504.0f), {.half = true});
  }
}

TEST(CudaAttention, Float16InfiniteMaskValues) {
  TROUPE_REQUIRE_GPU();
  // -inf entries (a mask converted without saturation) must give zero weight, not NaN.
  const attention_case c{2, 4, 50, 90, 64, false, false, {2, 1, 50, 90}};
  expect_parity(attention_node(c), inputs_for(c, -std::numeric_limits<float>::infinity()),
                {.half = true});
}

TEST(CudaAttention, UnsupportedHeadDimIsATypedError) {
  TROUPE_REQUIRE_GPU();
  const attention_case c{1, 1, 4, 4, 264, false, false, {}};
  auto out = run_op_cuda(attention_node(c), inputs_for(c, 0.0f));
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code(), error_code::unsupported);
}

// The rest of a transformer block's own kernels: LayerNormalization's register path (rows held in
// 16-byte chunks per lane, up to 8 chunks: 2048 halves or 1024 floats) and its fallbacks.
TEST(CudaTransformerBlock, LayerNormalizationRowsInRegisters) {
  TROUPE_REQUIRE_GPU();
  const shape_t shapes[] = {{2, 128, 768}, {5, 1024}, {3, 2048}, {7, 8},
                            {4, 96},       {3, 4000}, {2, 20}};
  for (const auto& s : shapes) {
    SCOPED_TRACE(shape_to_string(s));
    op_node n = make_node("LayerNormalization", 17);
    n.attrs.set("axis", int64_t{-1});
    n.attrs.set("epsilon", 1e-12f);
    tensor x = random_tensor(dtype::f32, s, -4, 4);
    // A row offset far from zero: the variance must not cancel.
    for (int64_t i = 0; i < x.elements(); ++i) x.data<float>()[i] += 30.0f;
    tensor scale = random_tensor(dtype::f32, {s.back()}, 0.5, 1.5);
    tensor bias = random_tensor(dtype::f32, {s.back()});
    expect_parity(n, {x, scale, bias});
    expect_parity(n, {x, scale, tensor()});
    expect_parity(n, {x, scale, bias}, {.half = true});
    expect_parity(n, {x, scale, bias}, {.num_outputs = 3});
  }
}

// An f16 FusedMatMul's Gelu runs as cuBLASLt's GELU_BIAS epilogue (the tanh form) by default
// (TROUPE_GELU_TANH unset): still within the f16 bound of the exact (erf) CPU result.
TEST(CudaTransformerBlock, Fp16GeluTanhEpilogue) {
  TROUPE_REQUIRE_GPU();
  ::unsetenv("TROUPE_GELU_TANH");
  op_node n = make_node("FusedMatMul", 1, "troupe");
  n.attrs.set("activation", std::string("Gelu"));
  n.attrs.set("activation_params", std::vector<float>{});
  for (const shape_t& a : {shape_t{2, 16, 64}, shape_t{256, 96}}) {
    SCOPED_TRACE(shape_to_string(a));
    tensor x = random_tensor(dtype::f32, a, -2, 2);
    tensor w = random_tensor(dtype::f32, {a.back(), 48}, -0.3, 0.3);
    tensor b = random_tensor(dtype::f32, {48});
    expect_parity(n, {x, w, b}, {.constant_inputs = {false, true, true}, .half = true});
    expect_parity(n, {x, w}, {.constant_inputs = {false, true}, .half = true});
  }
}

// Timings: --gtest_also_run_disabled_tests --gtest_filter='*Bench*'.
TEST(CudaAttentionBench, DISABLED_Shapes) {
  TROUPE_REQUIRE_GPU();
  struct bench_case {
    const char* name;
    attention_case c;
  };
  const bench_case cases[] = {
      {"BERT-base b128 s128 packed [B,1,S,S] mask",
       {128, 12, 128, 128, 64, true, false, {128, 1, 128, 128}}},
      {"BERT-base b128 s128 separate [B,1,1,S] mask",
       {128, 12, 128, 128, 64, false, false, {128, 1, 1, 128}}},
      {"BERT-base b8 s512 packed", {8, 12, 512, 512, 64, true, false, {8, 1, 1, 512}}},
      {"ViT-B/16 b128 sbe packed", {128, 12, 197, 197, 64, true, true, {}}},
      {"Swin-T stage1 b32 windows", {32 * 64, 3, 49, 49, 32, true, false, {1, 3, 49, 49}}},
  };
  for (const auto& b : cases) {
    for (bool half : {true, false}) {
      std::vector<tensor> in = inputs_for(b.c, half ? -65504.0f : -3.4e38f);
      if (half) {
        for (auto& t : in) t = t.defined() ? to_f16(t) : t;
      }
      const double flop = 4.0 * b.c.batch * b.c.heads * b.c.q_len * b.c.kv_len * b.c.head_dim;
      auto us = time_op_cuda(attention_node(b.c), in);
      ASSERT_TRUE(us.has_value()) << b.name << ": " << us.error().to_string();
      std::printf("%-48s %s %9.1f us %7.1f TFLOP/s\n", b.name, half ? "f16" : "f32", *us,
                  flop / (*us * 1e6));
      std::fflush(stdout);
    }
  }
}

}  // namespace
}  // namespace troupe::testing
