// bfloat16 on the CUDA backend against the CPU backend in float32: every op family the precision
// pass can hand the GPU in bf16 (elementwise and fused epilogues, reductions / Softmax /
// LayerNormalization, the byte movers, cuBLASLt products, cuDNN convolutions, pooling,
// BatchNormalization, troupe.Attention on both of its kernels), each on bf16 copies of random
// inputs with the CPU running the same rounded values in f32, within 2e-2 relative L2 (bf16 keeps
// 8 bits of mantissa; accumulation is fp32 everywhere). Then a whole graph through a bf16 session,
// and values beyond float16's range, which bf16 holds.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/gpu/test_cuda_graphs_models.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

const parity_options kBf16{.bf16 = true};

tensor ints(std::vector<int64_t> x) {
  return tensor::from_vector<int64_t>(x, {static_cast<int64_t>(x.size())});
}

// ---- elementwise -------------------------------------------------------------------------------

TEST(CudaBf16, UnaryFunctions) {
  TROUPE_REQUIRE_GPU();
  expect_unary_float_parity(kBf16);
  op_node leaky = make_node("LeakyRelu");
  leaky.attrs.set("alpha", 0.37f);
  expect_parity(leaky, {random_tensor(dtype::f32, {1000}, -2, 2)}, kBf16);
  op_node hs = make_node("HardSigmoid");
  hs.attrs.set("alpha", 0.3f);
  hs.attrs.set("beta", 0.4f);
  expect_parity(hs, {random_tensor(dtype::f32, {1000}, -5, 5)}, kBf16);
}

TEST(CudaBf16, Clip) {
  TROUPE_REQUIRE_GPU();
  op_node n = make_node("Clip", 13);
  const tensor x = random_tensor(dtype::f32, {4, 100}, -2, 2);
  const tensor lo = tensor::from_vector<float>({-0.5f}, {});
  const tensor hi = tensor::from_vector<float>({0.75f}, {});
  expect_parity(n, {x, lo, hi}, {.constant_inputs = {false, true, true}, .bf16 = true});
  expect_parity(n, {x, lo, hi}, kBf16);  // limits read on the device
  expect_parity(n, {x, tensor(), hi}, {.constant_inputs = {false, true, true}, .bf16 = true});
}

TEST(CudaBf16, BroadcastingBinaryOps) {
  TROUPE_REQUIRE_GPU();
  struct shapes {
    shape_t a, b;
  };
  const shapes cases[] = {
      {{4, 129}, {4, 129}},         // same shape: packets and a tail
      {{2, 128, 64}, {64}},         // a row (bias)
      {{3, 5, 7}, {}},              // a scalar
      {{3, 1, 7}, {1, 5, 1}},       // general broadcast on both sides
      {{2, 16, 9, 9}, {16, 1, 1}},  // per channel
  };
  for (const char* op : {"Add", "Sub", "Mul", "Div", "Min", "Max", "Pow", "PRelu"}) {
    for (const auto& c : cases) {
      const bool pow = std::string(op) == "Pow";
      // PRelu's slope broadcasts one way only: to X's shape.
      const bool prelu = std::string(op) == "PRelu";
      if (prelu && c.a.size() == c.b.size() && c.a != c.b) continue;
      SCOPED_TRACE(std::string(op) + " " + shape_to_string(c.a) + " " + shape_to_string(c.b));
      tensor a = random_tensor(dtype::f32, c.a, pow ? 0.1 : -3, 3);
      tensor b = random_tensor(dtype::f32, c.b, pow ? -2 : 0.5, 2);
      expect_parity(make_node(op, 16), {a, b}, kBf16);
    }
  }
  // A bf16 base with an integer exponent.
  expect_parity(make_node("Pow", 15),
                {random_tensor(dtype::f32, {100}, -2, 2), random_tensor(dtype::i64, {100}, 0, 4)},
                kBf16);
}

TEST(CudaBf16, ComparisonsAndWhere) {
  TROUPE_REQUIRE_GPU();
  // Few distinct values, so that equal elements occur after rounding.
  const tensor a = random_tensor(dtype::i64, {6, 40}, -3, 3);
  const tensor b = random_tensor(dtype::i64, {40}, -3, 3);
  auto as_float = [](const tensor& t) {
    tensor f = tensor::allocate(dtype::f32, t.shape());
    for (int64_t i = 0; i < t.elements(); ++i) f.data<float>()[i] = 0.5f * t.data<int64_t>()[i];
    return f;
  };
  for (const char* op : {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"}) {
    SCOPED_TRACE(op);
    expect_parity(make_node(op, 16), {as_float(a), as_float(b)}, kBf16);
  }
  expect_parity(make_node("Where", 16),
                {random_tensor(dtype::boolean, {6, 1}), random_tensor(dtype::f32, {6, 40}),
                 random_tensor(dtype::f32, {40})},
                kBf16);
}

TEST(CudaBf16, Cast) {
  TROUPE_REQUIRE_GPU();
  auto cast_to = [](int64_t onnx_type) {
    op_node n = make_node("Cast", 13);
    n.attrs.set("to", onnx_type);
    return n;
  };
  const tensor x = random_tensor(dtype::f32, {3, 77}, -50, 50);
  expect_parity(cast_to(16), {x});         // f32 -> bf16 on the GPU
  expect_parity(cast_to(1), {x}, kBf16);   // bf16 -> f32
  expect_parity(cast_to(10), {x}, kBf16);  // bf16 -> f16
  expect_parity(cast_to(7), {x}, kBf16);   // bf16 -> i64 (truncates)
  expect_parity(cast_to(16), {random_tensor(dtype::i32, {300}, -1000, 1000)});  // i32 -> bf16
}

// ---- reductions, Softmax, LayerNormalization ---------------------------------------------------

TEST(CudaBf16, Reductions) {
  TROUPE_REQUIRE_GPU();
  struct reduce_case {
    shape_t shape;
    std::vector<int64_t> axes;
  };
  const reduce_case cases[] = {
      {{4, 6, 40}, {-1}},    // rows: warp per row
      {{3, 3000}, {1}},      // long rows: block per row
      {{4, 6, 40}, {0}},     // leading axis: strided
      {{4, 6, 40}, {1, 2}},  // trailing block
  };
  for (const char* op : {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare",
                         "ReduceL2", "ReduceLogSumExp"}) {
    for (const auto& c : cases) {
      SCOPED_TRACE(std::string(op) + " " + shape_to_string(c.shape));
      op_node n = make_node(op, 18);
      n.attrs.set("keepdims", int64_t{1});
      expect_parity(n, {random_tensor(dtype::f32, c.shape), ints(c.axes)},
                    {.constant_inputs = {false, true}, .bf16 = true});
    }
  }
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    expect_parity(make_node(op), {random_tensor(dtype::f32, {2, 16, 40, 40})}, kBf16);
  }
}

TEST(CudaBf16, Softmax) {
  TROUPE_REQUIRE_GPU();
  struct softmax_case {
    shape_t shape;
    int64_t axis;
  };
  const softmax_case cases[] = {{{2, 12, 128, 128}, -1}, {{4, 3000}, 1}, {{4, 5, 6}, 1}};
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    for (const auto& c : cases) {
      SCOPED_TRACE(std::string(op) + " " + shape_to_string(c.shape));
      op_node n = make_node(op, 13);
      n.attrs.set("axis", c.axis);
      expect_parity(n, {random_tensor(dtype::f32, c.shape, -4, 4)}, kBf16);
    }
  }
}

TEST(CudaBf16, LayerNormalization) {
  TROUPE_REQUIRE_GPU();
  // Register path (rows of 16-byte chunks: 8 bf16 each, up to 8 chunks per lane), the scalar
  // warp kernel (a row length that is no multiple of 8) and the block kernel (long rows).
  const shape_t shapes[] = {{2, 128, 768}, {3, 2048}, {7, 8}, {4, 100}, {2, 20}, {3, 4000}};
  for (const auto& s : shapes) {
    SCOPED_TRACE(shape_to_string(s));
    op_node n = make_node("LayerNormalization", 17);
    n.attrs.set("axis", int64_t{-1});
    n.attrs.set("epsilon", 1e-5f);
    tensor x = random_tensor(dtype::f32, s, -4, 4);
    // An offset far from zero: the variance must not cancel (bf16 keeps 30 + x only to ~0.1, the
    // CPU sees the same rounded values).
    for (int64_t i = 0; i < x.elements(); ++i) x.data<float>()[i] += 30.0f;
    tensor scale = random_tensor(dtype::f32, {s.back()}, 0.5, 1.5);
    tensor bias = random_tensor(dtype::f32, {s.back()});
    expect_parity(n, {x, scale, bias}, kBf16);
    expect_parity(n, {x, scale, tensor()}, kBf16);
  }
}

// ---- byte movers -------------------------------------------------------------------------------

TEST(CudaBf16, DataMovement) {
  TROUPE_REQUIRE_GPU();
  op_node tr = make_node("Transpose", 13);
  tr.attrs.set("perm", std::vector<int64_t>{0, 2, 1, 3});
  expect_parity(tr, {random_tensor(dtype::f32, {2, 128, 12, 64})}, kBf16);
  op_node tr2 = make_node("Transpose", 13);
  tr2.attrs.set("perm", std::vector<int64_t>{0, 2, 3, 1});
  expect_parity(tr2, {random_tensor(dtype::f32, {4, 3, 37, 41})}, kBf16);

  expect_parity(
      make_node("Gather", 13),
      {random_tensor(dtype::f32, {100, 768}), random_tensor(dtype::i64, {2, 16}, -100, 100)},
      kBf16);

  op_node concat = make_node("Concat", 13);
  concat.attrs.set("axis", int64_t{1});
  expect_parity(
      concat, {random_tensor(dtype::f32, {2, 3, 4}), random_tensor(dtype::f32, {2, 5, 4})}, kBf16);

  op_node split = make_node("Split", 18);
  split.attrs.set("axis", int64_t{1});
  split.attrs.set("num_outputs", int64_t{3});
  expect_parity(split, {random_tensor(dtype::f32, {4, 9, 6})}, {.num_outputs = 3, .bf16 = true});

  expect_parity(make_node("Slice", 13),
                {random_tensor(dtype::f32, {6, 10, 8}), ints({-1, 8}), ints({-100, 1}),
                 ints({1, 2}), ints({-2, -3})},
                kBf16);
  expect_parity(make_node("Expand", 13), {random_tensor(dtype::f32, {3, 1}), ints({2, 3, 4})},
                kBf16);

  op_node pad = make_node("Pad", 13);
  const tensor x = random_tensor(dtype::f32, {2, 3, 4, 5});
  const tensor fill = tensor::from_vector<float>({2.5f}, {});
  expect_parity(pad, {x, ints({0, 1, -1, 0, 0, 0, 1, -2}), fill},
                {.constant_inputs = {false, true, true}, .bf16 = true});
  expect_parity(pad, {x, ints({0, 0, 1, 2, 0, 0, 3, 0}), fill}, kBf16);  // fill read on device
}

// ---- cuBLASLt ----------------------------------------------------------------------------------

TEST(CudaBf16, MatMul) {
  TROUPE_REQUIRE_GPU();
  struct matmul_case {
    shape_t a, b;
  };
  const matmul_case cases[] = {
      {{64, 96}, {96, 48}},
      {{2, 128, 768}, {768, 256}},           // BERT linear: batch folds into M
      {{2, 12, 128, 64}, {2, 12, 64, 128}},  // attention scores
      {{1, 5, 7}, {3, 7, 4}},                // A broadcast over batch
      {{2, 1, 5, 7}, {1, 3, 7, 4}},          // partial broadcast: one call per batch
      {{7}, {7, 4}},
      {{33, 17}, {17, 1}},  // odd sizes: the element-aligned algorithm
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(shape_to_string(c.a) + " @ " + shape_to_string(c.b));
    op_node n = make_node("MatMul", 13);
    tensor a = random_tensor(dtype::f32, c.a), b = random_tensor(dtype::f32, c.b);
    expect_parity(n, {a, b}, kBf16);
    expect_parity(n, {a, b}, {.constant_inputs = {false, true}, .bf16 = true});
  }
}

TEST(CudaBf16, Gemm) {
  TROUPE_REQUIRE_GPU();
  struct gemm_case {
    int64_t m, k, n, trans_a, trans_b;
    float alpha, beta;
    shape_t c;
  };
  const gemm_case cases[] = {
      {32, 64, 48, 0, 1, 1.0f, 1.0f, {48}},      // Linear: the BIAS epilogue
      {20, 30, 40, 1, 0, 0.5f, 2.0f, {40}},      // bias scaled by beta
      {20, 30, 40, 1, 1, 1.5f, 0.5f, {20, 40}},  // full C
      {20, 30, 40, 0, 0, 1.0f, 1.0f, {20, 1}},   // column C
  };
  for (const auto& g : cases) {
    for (bool c_const : {true, false}) {
      SCOPED_TRACE(std::to_string(g.m) + "x" + std::to_string(g.k) + "x" + std::to_string(g.n) +
                   " C " + shape_to_string(g.c) + (c_const ? " const" : ""));
      op_node n = make_node("Gemm", 13);
      n.attrs.set("transA", g.trans_a);
      n.attrs.set("transB", g.trans_b);
      n.attrs.set("alpha", g.alpha);
      n.attrs.set("beta", g.beta);
      tensor a = random_tensor(dtype::f32, g.trans_a ? shape_t{g.k, g.m} : shape_t{g.m, g.k});
      tensor b = random_tensor(dtype::f32, g.trans_b ? shape_t{g.n, g.k} : shape_t{g.k, g.n});
      expect_parity(n, {a, b, random_tensor(dtype::f32, g.c)},
                    {.constant_inputs = {false, true, c_const}, .bf16 = true});
    }
  }
}

TEST(CudaBf16, FusedMatMulAndGemm) {
  TROUPE_REQUIRE_GPU();
  for (const char* act : {"", "Relu", "Gelu"}) {
    SCOPED_TRACE(act);
    op_node n = make_node("FusedMatMul", 1, "troupe");
    n.attrs.set("activation", std::string(act));
    tensor a = random_tensor(dtype::f32, {2, 16, 64}), b = random_tensor(dtype::f32, {64, 96});
    tensor bias = random_tensor(dtype::f32, {96});
    tensor z = random_tensor(dtype::f32, {2, 16, 96});
    const std::vector<bool> consts{false, true, true, false};
    expect_parity(n, {a, b, bias, z}, {.constant_inputs = consts, .bf16 = true});
    expect_parity(n, {a, b, bias}, {.constant_inputs = consts, .bf16 = true});
    expect_parity(n, {a, b, tensor(), z}, {.constant_inputs = consts, .bf16 = true});
    expect_parity(n, {a, b, bias, z}, kBf16);  // bias as a run-time input
  }
  for (const char* act : {"Relu", "Sigmoid", "LeakyRelu", "Gelu"}) {
    SCOPED_TRACE(std::string("FusedGemm ") + act);
    op_node n = make_node("FusedGemm", 1, "troupe");
    n.attrs.set("transB", int64_t{1});
    n.attrs.set("activation", std::string(act));
    tensor a = random_tensor(dtype::f32, {16, 40}), b = random_tensor(dtype::f32, {24, 40});
    expect_parity(n, {a, b, random_tensor(dtype::f32, {24})},
                  {.constant_inputs = {false, true, true}, .bf16 = true});
  }
}

// ---- cuDNN, pooling, BatchNormalization --------------------------------------------------------

const conv_case kConvCases[] = {
    {"3x3", {2, 16, 14, 14}, {32, 16, 3, 3}, 1, {1, 1}, {}, {1, 1, 1, 1}},
    {"stem C=3 7x7/2", {1, 3, 32, 32}, {16, 3, 7, 7}, 1, {2, 2}, {}, {3, 3, 3, 3}},
    {"1x1/2", {2, 16, 9, 9}, {8, 16, 1, 1}, 1, {2, 2}, {}, {0, 0, 0, 0}},
    {"depthwise", {2, 16, 12, 12}, {16, 1, 3, 3}, 16, {2, 2}, {}, {1, 1, 1, 1}},
    {"1-D", {2, 8, 30}, {8, 8, 5}, 1, {2}, {}, {2, 2}},
};

TEST(CudaBf16, Conv) {
  TROUPE_REQUIRE_GPU();
  for (const auto& c : kConvCases) {
    SCOPED_TRACE(c.name);
    tensor x = random_tensor(dtype::f32, c.x);
    tensor w = random_tensor(dtype::f32, c.w);
    tensor b = random_tensor(dtype::f32, {c.w[0]});
    expect_parity(conv_case_node(c, false), {x, w, b},
                  {.constant_inputs = {false, true, true}, .bf16 = true});
    expect_parity(conv_case_node(c, false), {x, w, b}, kBf16);  // W and B as run-time inputs
  }
}

TEST(CudaBf16, FusedConvEpilogues) {
  TROUPE_REQUIRE_GPU();
  for (const char* act : {"", "Relu", "HardSwish", "Sigmoid"}) {
    for (const conv_case* c : {&kConvCases[0], &kConvCases[1]}) {
      SCOPED_TRACE(std::string(act) + " " + c->name);
      op_node n = conv_case_node(*c, true);
      n.attrs.set("activation", std::string(act));
      tensor x = random_tensor(dtype::f32, c->x);
      tensor w = random_tensor(dtype::f32, c->w);
      tensor b = random_tensor(dtype::f32, {c->w[0]});
      auto out = run_op(conv_case_node(*c, false), {x, w});
      ASSERT_TRUE(out.has_value()) << out.error().to_string();
      tensor z = random_tensor(dtype::f32, (*out)[0].shape());
      const std::vector<bool> consts{false, true, true, false};
      expect_parity(n, {x, w, b, z}, {.constant_inputs = consts, .bf16 = true});  // bias + Z
      expect_parity(n, {x, w, b}, {.constant_inputs = consts, .bf16 = true});     // bias only
    }
  }
}

TEST(CudaBf16, PoolingAndBatchNormalization) {
  TROUPE_REQUIRE_GPU();
  for (const char* op : {"MaxPool", "AveragePool"}) {
    SCOPED_TRACE(op);
    op_node n = make_node(op, 12);
    n.attrs.set("kernel_shape", std::vector<int64_t>{3, 3});
    n.attrs.set("strides", std::vector<int64_t>{2, 2});
    n.attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
    expect_parity(n, {random_tensor(dtype::f32, {2, 8, 16, 16})}, kBf16);
  }
  op_node bn = make_node("BatchNormalization", 15);
  bn.attrs.set("epsilon", 1e-3f);
  std::vector<tensor> in{random_tensor(dtype::f32, {2, 16, 7, 7}, -3, 3),
                         random_tensor(dtype::f32, {16}, 0.5, 1.5), random_tensor(dtype::f32, {16}),
                         random_tensor(dtype::f32, {16}), random_tensor(dtype::f32, {16}, 0.1, 2)};
  expect_parity(bn, in, {.constant_inputs = {false, true, true, true, true}, .bf16 = true});
}

// ---- attention ---------------------------------------------------------------------------------

struct attention_case {
  int64_t batch, heads, q_len, kv_len, head_dim;
  bool packed;
  shape_t mask;  // empty: no mask
};

std::vector<tensor> attention_inputs(const attention_case& c, float masked) {
  const int64_t e = c.heads * c.head_dim;
  std::vector<tensor> in;
  if (c.packed) {
    in.push_back(random_tensor(dtype::f32, {c.batch, c.q_len, 3 * e}, -2, 2));
    in.emplace_back();
    in.emplace_back();
  } else {
    in.push_back(random_tensor(dtype::f32, {c.batch, c.q_len, e}, -2, 2));
    in.push_back(random_tensor(dtype::f32, {c.batch, c.kv_len, e}, -2, 2));
    in.push_back(random_tensor(dtype::f32, {c.batch, c.kv_len, e}, -2, 2));
  }
  if (!c.mask.empty()) {
    tensor m = random_tensor(dtype::f32, c.mask, -3, 1);
    const int64_t last = c.mask.back();
    for (int64_t i = 0; i < m.elements(); ++i) {
      if (last > 1 && i % last % 5 == 4) m.data<float>()[i] = masked;  // never key 0
    }
    in.push_back(m);
  }
  return in;
}

TEST(CudaBf16, Attention) {
  TROUPE_REQUIRE_GPU();
  const attention_case cases[] = {
      {2, 12, 128, 128, 64, false, {2, 1, 1, 128}},   // BERT: tensor cores (bf16 mma)
      {2, 12, 128, 128, 64, true, {2, 1, 128, 128}},  // packed QKV
      {2, 2, 77, 131, 128, false, {2, 2, 77, 131}},   // D 128, partial tiles
      {2, 3, 49, 49, 32, true, {1, 3, 49, 49}},       // D 32
      {2, 2, 65, 64, 64, false, {64}},                // one row past a query block
      {3, 2, 7, 13, 40, false, {}},                   // head dim 40: SIMT
      {2, 2, 70, 33, 256, false, {2, 1, 70, 1}},      // largest head dim: SIMT
  };
  // float32's lowest after the precision pass's saturation to bf16's largest finite value.
  const float masked = -3.3895313892515355e38f;
  for (const auto& c : cases) {
    SCOPED_TRACE("B" + std::to_string(c.batch) + " H" + std::to_string(c.heads) + " Sq" +
                 std::to_string(c.q_len) + " Skv" + std::to_string(c.kv_len) + " D" +
                 std::to_string(c.head_dim) + (c.packed ? " packed" : ""));
    op_node n = make_node("Attention", 1, "troupe");
    n.attrs.set("num_heads", c.heads);
    expect_parity(n, attention_inputs(c, masked), kBf16);
  }
  // -inf mask entries give zero weight, not NaN.
  const attention_case c{2, 4, 50, 90, 64, false, {2, 1, 50, 90}};
  op_node n = make_node("Attention", 1, "troupe");
  n.attrs.set("num_heads", c.heads);
  expect_parity(n, attention_inputs(c, -std::numeric_limits<float>::infinity()), kBf16);
}

// ---- beyond float16's range --------------------------------------------------------------------

TEST(CudaBf16, ValuesBeyondFloat16Range) {
  TROUPE_REQUIRE_GPU();
  // Products near 1e5..1e9: float16 (largest 65504) would overflow to inf, bfloat16 keeps them.
  const tensor a = random_tensor(dtype::f32, {8, 256}, 300, 3000);
  const tensor b = random_tensor(dtype::f32, {8, 256}, 300, 3000);
  expect_parity(make_node("Mul", 14), {a, b}, kBf16);
  expect_parity(make_node("MatMul", 13), {a, random_tensor(dtype::f32, {256, 16}, 100, 1000)},
                kBf16);
  op_node sum = make_node("ReduceSum", 13);
  expect_parity(sum, {a, ints({1})}, {.constant_inputs = {false, true}, .bf16 = true});
}

// ---- whole graphs through a session ------------------------------------------------------------

TEST(CudaBf16, SessionRunsAGraphInBf16) {
  TROUPE_REQUIRE_GPU();
  const std::string bytes = conv_matmul_model();
  const tensor x = random_tensor(dtype::f32, {4, 8, 12, 12});
  auto cpu = make_session(bytes, kernels::backend::cpu);
  ASSERT_TRUE(cpu.has_value()) << cpu.error().to_string();
  auto want = (*cpu)->run({x});
  ASSERT_TRUE(want.has_value()) << want.error().to_string();
  auto gpu = make_session(bytes, kernels::backend::cuda, {}, runtime::precision::bf16);
  ASSERT_TRUE(gpu.has_value()) << gpu.error().to_string();
  std::shared_ptr<runtime::plan> plan = plan_for(**gpu, x);
  ASSERT_NE(plan, nullptr);
  // The plan computes in bf16: the weights and the activations between the boundary casts.
  int bf16_values = 0;
  for (const auto& v : plan->specialized_graph().values) bf16_values += v.type == dtype::bf16;
  EXPECT_GT(bf16_values, 5);
  auto got = (*gpu)->run({x});
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
  ASSERT_EQ(got->size(), want->size());
  // Callers keep float32 inputs and outputs (boundary casts inside the plan).
  EXPECT_EQ((*got)[0].type(), dtype::f32);
  EXPECT_LE(relative_l2((*got)[0], (*want)[0]), 3e-2);
}

TEST(CudaBf16, CpuBackendRefusesBf16) {
  auto s = make_session(conv_matmul_model(), kernels::backend::cpu, {}, runtime::precision::bf16);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), error_code::unsupported);
}

}  // namespace
}  // namespace troupe::testing
