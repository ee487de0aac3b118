// CUDA Conv / FusedConv (cuDNN), pooling, BatchNormalization, MatMul / Gemm / FusedMatMul /
// FusedGemm (cuBLASLt) against the CPU backend.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

const conv_case kConvCases[] = {
    {"3x3", {2, 8, 14, 14}, {16, 8, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, ""},
    {"stem 7x7/2", {1, 3, 32, 32}, {8, 3, 7, 7}, 1, {2, 2}, {1, 1}, {3, 3, 3, 3}, ""},
    {"1x1/2", {2, 16, 9, 9}, {8, 16, 1, 1}, 1, {2, 2}, {1, 1}, {0, 0, 0, 0}, ""},
    {"groups", {1, 8, 10, 10}, {12, 2, 3, 3}, 4, {1, 1}, {1, 1}, {1, 1, 1, 1}, ""},
    {"depthwise", {2, 16, 12, 12}, {16, 1, 3, 3}, 16, {2, 2}, {1, 1}, {1, 1, 1, 1}, ""},
    {"dilated", {1, 4, 16, 16}, {6, 4, 3, 3}, 1, {1, 1}, {2, 3}, {2, 3, 2, 3}, ""},
    {"asymmetric pads", {1, 4, 11, 11}, {5, 4, 3, 3}, 1, {2, 2}, {1, 1}, {0, 1, 1, 0}, ""},
    {"SAME_UPPER/2", {1, 4, 10, 10}, {5, 4, 3, 3}, 1, {2, 2}, {1, 1}, {}, "SAME_UPPER"},
    {"SAME_LOWER", {1, 4, 9, 9}, {5, 4, 4, 4}, 1, {1, 1}, {1, 1}, {}, "SAME_LOWER"},
    {"1-D", {2, 6, 30}, {4, 6, 5}, 1, {2}, {1}, {2, 2}, ""},
    {"3-D", {1, 3, 6, 7, 8}, {4, 3, 3, 3, 3}, 1, {1, 2, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, ""},
};

TEST(CudaConv, Conv) {
  TROUPE_REQUIRE_GPU();
  for (const auto& c : kConvCases) {
    for (bool half : {false, true}) {
      SCOPED_TRACE(std::string(c.name) + (half ? " f16" : " f32"));
      op_node n = conv_case_node(c, false);
      tensor x = random_tensor(dtype::f32, c.x);
      tensor w = random_tensor(dtype::f32, c.w);
      tensor b = random_tensor(dtype::f32, {c.w[0]});
      expect_parity(n, {x, w, b}, {.constant_inputs = {false, true, true}, .half = half});
      expect_parity(n, {x, w}, {.constant_inputs = {false, true}, .half = half});
      // W and B as run-time inputs.
      expect_parity(n, {x, w, b}, {.half = half});
    }
  }
}

TEST(CudaConv, FusedConvActivations) {
  TROUPE_REQUIRE_GPU();
  struct act_case {
    const char* name;
    std::vector<float> params;
  };
  const act_case acts[] = {{"", {}},
                           {"Relu", {}},
                           {"Clip", {0.0f, 6.0f}},
                           {"LeakyRelu", {0.1f}},
                           {"Sigmoid", {}},
                           {"HardSigmoid", {0.2f, 0.5f}},
                           {"HardSwish", {}},
                           {"Tanh", {}},
                           {"Gelu", {}}};
  const conv_case& geometry = kConvCases[0];
  const conv_case& asym = kConvCases[6];
  for (const auto& a : acts) {
    for (bool half : {false, true}) {
      for (const conv_case* g : {&geometry, &asym}) {
        SCOPED_TRACE(std::string(a.name) + " " + g->name + (half ? " f16" : " f32"));
        op_node n = conv_case_node(*g, true);
        n.attrs.set("activation", std::string(a.name));
        if (!a.params.empty()) n.attrs.set("activation_params", a.params);
        tensor x = random_tensor(dtype::f32, g->x);
        tensor w = random_tensor(dtype::f32, g->w);
        tensor b = random_tensor(dtype::f32, {g->w[0]});
        auto out = run_op(conv_case_node(*g, false), {x, w});
        ASSERT_TRUE(out.has_value()) << out.error().to_string();
        tensor z = random_tensor(dtype::f32, (*out)[0].shape());
        const std::vector<bool> consts{false, true, true, false};
        expect_parity(n, {x, w, b, z}, {.constant_inputs = consts, .half = half});  // bias + Z
        expect_parity(n, {x, w, b}, {.constant_inputs = consts, .half = half});     // bias only
        expect_parity(n, {x, w, tensor(), z}, {.constant_inputs = consts, .half = half});  // Z only
        expect_parity(n, {x, w}, {.constant_inputs = consts, .half = half});
      }
    }
  }
}

TEST(CudaPool, MaxAndAveragePool) {
  TROUPE_REQUIRE_GPU();
  struct pool_case {
    shape_t x;
    std::vector<int64_t> kernel, strides, pads, dilations;
    int64_t ceil_mode;
    std::string auto_pad;
  };
  const pool_case cases[] = {
      {{2, 8, 16, 16}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 0, ""},  // ResNet stem
      {{1, 4, 11, 11}, {3, 3}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 1, ""},  // ceil_mode
      {{1, 4, 10, 9}, {2, 3}, {2, 1}, {1, 0, 0, 2}, {1, 1}, 1, ""},   // asymmetric pads
      {{1, 3, 12, 12}, {3, 3}, {2, 2}, {}, {1, 1}, 0, "SAME_UPPER"},
      {{2, 3, 20}, {4}, {3}, {1, 2}, {1}, 0, ""},  // 1-D
      {{1, 2, 5, 6, 7}, {2, 2, 3}, {1, 2, 2}, {0, 1, 1, 1, 0, 1}, {1, 1, 1}, 0, ""},
      {{1, 3, 12, 12}, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, 0, ""},  // dilated (MaxPool)
  };
  for (const char* op : {"MaxPool", "AveragePool"}) {
    for (const auto& c : cases) {
      const bool dilated = c.dilations.size() > 0 && c.dilations[0] > 1;
      if (dilated && std::string(op) == "AveragePool") continue;
      for (int64_t include_pad : {0, 1}) {
        if (include_pad && std::string(op) == "MaxPool") continue;
        SCOPED_TRACE(std::string(op) + " " + shape_to_string(c.x) + " count_include_pad " +
                     std::to_string(include_pad));
        op_node n = make_node(op, 12);
        n.attrs.set("kernel_shape", c.kernel);
        n.attrs.set("strides", c.strides);
        if (!c.pads.empty()) n.attrs.set("pads", c.pads);
        if (!c.auto_pad.empty()) n.attrs.set("auto_pad", c.auto_pad);
        if (std::string(op) == "MaxPool") n.attrs.set("dilations", c.dilations);
        n.attrs.set("ceil_mode", c.ceil_mode);
        if (std::string(op) == "AveragePool") n.attrs.set("count_include_pad", include_pad);
        expect_parity(n, {random_tensor(dtype::f32, c.x)});
        expect_parity(n, {random_tensor(dtype::f32, c.x)}, {.half = true});
      }
    }
  }
}

TEST(CudaNorm, BatchNormalization) {
  TROUPE_REQUIRE_GPU();
  op_node n = make_node("BatchNormalization", 15);
  n.attrs.set("epsilon", 1e-3f);
  for (const shape_t& s : {shape_t{2, 16, 7, 7}, shape_t{3, 5}, shape_t{2, 4, 9}}) {
    const int64_t c = s[1];
    std::vector<tensor> in{random_tensor(dtype::f32, s, -3, 3),
                           random_tensor(dtype::f32, {c}, 0.5, 1.5), random_tensor(dtype::f32, {c}),
                           random_tensor(dtype::f32, {c}), random_tensor(dtype::f32, {c}, 0.1, 2)};
    const std::vector<bool> consts{false, true, true, true, true};
    expect_parity(n, in, {.constant_inputs = consts});
    expect_parity(n, in, {.constant_inputs = consts, .half = true});
  }
}

struct matmul_case {
  shape_t a, b;
};

TEST(CudaMatMul, MatMul) {
  TROUPE_REQUIRE_GPU();
  const matmul_case cases[] = {
      {{64, 96}, {96, 48}},
      {{2, 128, 768}, {768, 256}},            // BERT linear: batch folds into M
      {{2, 12, 128, 64}, {2, 12, 64, 128}},   // attention scores
      {{2, 12, 128, 128}, {2, 12, 128, 64}},  // attention context
      {{1, 5, 7}, {3, 7, 4}},                 // A broadcast over batch
      {{3, 5, 7}, {7, 4}},
      {{2, 1, 5, 7}, {1, 3, 7, 4}},  // partial broadcast: one call per batch
      {{7}, {7, 4}},                 // 1-D operands
      {{3, 5, 7}, {7}},
      {{7}, {7}},
      {{33, 17}, {17, 1}},  // odd sizes: unaligned strides
  };
  for (const auto& c : cases) {
    for (bool half : {false, true}) {
      SCOPED_TRACE(shape_to_string(c.a) + " @ " + shape_to_string(c.b) + (half ? " f16" : ""));
      op_node n = make_node("MatMul", 13);
      tensor a = random_tensor(dtype::f32, c.a), b = random_tensor(dtype::f32, c.b);
      expect_parity(n, {a, b}, {.half = half});
      expect_parity(n, {a, b}, {.constant_inputs = {false, true}, .half = half});
    }
  }
}

TEST(CudaMatMul, Gemm) {
  TROUPE_REQUIRE_GPU();
  struct gemm_case {
    int64_t m, k, n;
    int64_t trans_a, trans_b;
    float alpha, beta;
    shape_t c;  // empty rank with has_c=false: no C
    bool has_c;
  };
  const gemm_case cases[] = {
      {32, 64, 48, 0, 1, 1.0f, 1.0f, {48}, true},  // Linear: bias over N
      {32, 64, 48, 0, 0, 1.0f, 1.0f, {1, 48}, true},
      {20, 30, 40, 1, 0, 0.5f, 2.0f, {40}, true},      // bias scaled by beta
      {20, 30, 40, 1, 1, 1.5f, 0.5f, {20, 40}, true},  // full C
      {20, 30, 40, 0, 0, 1.0f, 1.0f, {20, 1}, true},   // column C
      {20, 30, 40, 0, 0, 1.0f, 3.0f, {}, true},        // scalar C
      {20, 30, 40, 0, 1, 2.0f, 1.0f, {}, false},       // no C
  };
  for (const auto& g : cases) {
    for (bool half : {false, true}) {
      for (bool c_const : {true, false}) {
        SCOPED_TRACE(std::to_string(g.m) + "x" + std::to_string(g.k) + "x" + std::to_string(g.n) +
                     " C " + shape_to_string(g.c) + (half ? " f16" : "") +
                     (c_const ? " const" : ""));
        op_node n = make_node("Gemm", 13);
        n.attrs.set("transA", g.trans_a);
        n.attrs.set("transB", g.trans_b);
        n.attrs.set("alpha", g.alpha);
        n.attrs.set("beta", g.beta);
        tensor a = random_tensor(dtype::f32, g.trans_a ? shape_t{g.k, g.m} : shape_t{g.m, g.k});
        tensor b = random_tensor(dtype::f32, g.trans_b ? shape_t{g.n, g.k} : shape_t{g.k, g.n});
        std::vector<tensor> in{a, b};
        if (g.has_c) in.push_back(random_tensor(dtype::f32, g.c));
        expect_parity(n, in, {.constant_inputs = {false, true, c_const}, .half = half});
      }
    }
  }
}

TEST(CudaMatMul, FusedMatMul) {
  TROUPE_REQUIRE_GPU();
  for (const char* act : {"", "Relu", "Gelu"}) {
    for (bool half : {false, true}) {
      for (const matmul_case& c :
           {matmul_case{{2, 16, 64}, {64, 96}}, matmul_case{{24, 32}, {32, 40}}}) {
        SCOPED_TRACE(std::string(act) + " " + shape_to_string(c.a) + (half ? " f16" : ""));
        op_node n = make_node("FusedMatMul", 1, "troupe");
        n.attrs.set("activation", std::string(act));
        tensor a = random_tensor(dtype::f32, c.a), b = random_tensor(dtype::f32, c.b);
        tensor bias = random_tensor(dtype::f32, {c.b[1]});
        auto out = run_op(make_node("MatMul", 13), {a, b});
        ASSERT_TRUE(out.has_value()) << out.error().to_string();
        tensor z = random_tensor(dtype::f32, (*out)[0].shape());
        const std::vector<bool> consts{false, true, true, false};
        expect_parity(n, {a, b, bias, z}, {.constant_inputs = consts, .half = half});
        expect_parity(n, {a, b, bias}, {.constant_inputs = consts, .half = half});
        expect_parity(n, {a, b, tensor(), z}, {.constant_inputs = consts, .half = half});
        expect_parity(n, {a, b, bias, z}, {.half = half});  // bias as a run-time input
      }
    }
  }
}

TEST(CudaMatMul, FusedGemm) {
  TROUPE_REQUIRE_GPU();
  for (const char* act : {"Relu", "Sigmoid", "LeakyRelu", "Gelu"}) {
    for (bool half : {false, true}) {
      SCOPED_TRACE(std::string(act) + (half ? " f16" : ""));
      op_node n = make_node("FusedGemm", 1, "troupe");
      n.attrs.set("transB", int64_t{1});
      n.attrs.set("activation", std::string(act));
      tensor a = random_tensor(dtype::f32, {16, 40}), b = random_tensor(dtype::f32, {24, 40});
      expect_parity(n, {a, b, random_tensor(dtype::f32, {24})},
                    {.constant_inputs = {false, true, true}, .half = half});
      expect_parity(n, {a, b, random_tensor(dtype::f32, {16, 24})},
                    {.constant_inputs = {false, true, true}, .half = half});
    }
  }
}

}  // namespace
}  // namespace troupe::testing
