// Channels-last kernels of the CUDA backend against the CPU backend's NCHW results: FusedConv with
// channels_last = 1 (cuDNN NHWC, weights re-laid out to KRSC, fp16 channel padding) and the
// troupe-domain pools. Inputs are transposed to the stored layout in the test, outputs back.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/ops/nn_geometry.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

tensor round_f16(const tensor& t) {
  return t.defined() ? to_f32(to_f16(t)) : t;
}

/// Runs `cl_node` (channels-last) on CUDA with `stored` positions of `inputs` transposed, and
/// `ref_node` (NCHW) on the CPU; compares output 0 in logical layout.
void expect_channels_last(const op_node& ref_node, const op_node& cl_node,
                          std::vector<tensor> inputs, const std::vector<size_t>& stored,
                          const std::vector<bool>& constants, bool half) {
  if (half) {
    for (auto& t : inputs) t = round_f16(t);  // the CPU sees the values the GPU sees
  }
  auto ref = run_op(ref_node, inputs);
  ASSERT_TRUE(ref.has_value()) << ref.error().to_string();
  std::vector<tensor> gpu_inputs = inputs;
  for (size_t i : stored) {
    if (i < gpu_inputs.size() && gpu_inputs[i].defined())
      gpu_inputs[i] = permute_channels_last(gpu_inputs[i], true);
  }
  if (half) {
    for (auto& t : gpu_inputs) {
      if (t.defined()) t = to_f16(t);
    }
  }
  auto out = run_op_cuda(cl_node, gpu_inputs, 1, constants);
  ASSERT_TRUE(out.has_value()) << out.error().to_string();
  const tensor got = permute_channels_last(to_f32((*out)[0]), false);
  const double err = relative_l2(got, (*ref)[0]);
  EXPECT_LE(err, half ? 1e-2 : 1e-4) << cl_node.describe() << (half ? " f16" : " f32");
}

const conv_case kCases[] = {
    {"3x3", {2, 16, 14, 14}, {32, 16, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, ""},
    {"stem C=3 7x7/2", {2, 3, 32, 32}, {16, 3, 7, 7}, 1, {2, 2}, {1, 1}, {3, 3, 3, 3}, ""},
    {"C=3 3x3", {1, 3, 15, 15}, {8, 3, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, ""},
    {"C=5 K=6", {1, 5, 9, 9}, {6, 5, 3, 3}, 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, ""},
    {"1x1/2", {2, 16, 9, 9}, {8, 16, 1, 1}, 1, {2, 2}, {1, 1}, {0, 0, 0, 0}, ""},
    {"groups", {1, 8, 10, 10}, {12, 2, 3, 3}, 4, {1, 1}, {1, 1}, {1, 1, 1, 1}, ""},
    {"depthwise", {2, 16, 12, 12}, {16, 1, 3, 3}, 16, {2, 2}, {1, 1}, {1, 1, 1, 1}, ""},
    {"dilated", {1, 8, 16, 16}, {8, 8, 3, 3}, 1, {1, 1}, {2, 3}, {2, 3, 2, 3}, ""},
    {"asymmetric pads", {1, 8, 11, 11}, {8, 8, 3, 3}, 1, {2, 2}, {1, 1}, {0, 1, 1, 0}, ""},
    {"asymmetric pads C=3", {1, 3, 11, 11}, {8, 3, 3, 3}, 1, {2, 2}, {1, 1}, {0, 1, 1, 0}, ""},
    {"SAME_UPPER/2", {1, 8, 10, 10}, {8, 8, 3, 3}, 1, {2, 2}, {1, 1}, {}, "SAME_UPPER"},
    {"1-D", {2, 8, 30}, {8, 8, 5}, 1, {2}, {1}, {2, 2}, ""},
    {"3-D", {1, 8, 6, 7, 8}, {8, 8, 3, 3, 3}, 1, {1, 2, 1}, {1, 1, 1}, {1, 1, 1, 1, 1, 1}, ""},
};

TEST(CudaNhwc, FusedConvGeometries) {
  TROUPE_REQUIRE_GPU();
  for (const auto& c : kCases) {
    for (bool half : {false, true}) {
      SCOPED_TRACE(std::string(c.name) + (half ? " f16" : " f32"));
      const op_node ref = conv_case_node(c, true, false), cl = conv_case_node(c, true, true);
      tensor x = random_tensor(dtype::f32, c.x);
      tensor w = random_tensor(dtype::f32, c.w);
      tensor b = random_tensor(dtype::f32, {c.w[0]});
      expect_channels_last(ref, cl, {x, w, b}, {0}, {false, true, true}, half);
      expect_channels_last(ref, cl, {x, w}, {0}, {false, true}, half);
      // W and B as run-time inputs: W is re-laid out per run into the workspace.
      expect_channels_last(ref, cl, {x, w, b}, {0}, {false, false, false}, half);
    }
  }
}

TEST(CudaNhwc, FusedConvEpilogues) {
  TROUPE_REQUIRE_GPU();
  struct act_case {
    const char* name;
    std::vector<float> params;
  };
  const act_case acts[] = {
      {"", {}},        {"Relu", {}},          {"Clip", {0.0f, 6.0f}},       {"HardSwish", {}},
      {"Sigmoid", {}}, {"LeakyRelu", {0.1f}}, {"HardSigmoid", {0.2f, 0.5f}}};
  for (const conv_case* g : {&kCases[0], &kCases[1], &kCases[8]}) {
    for (const auto& a : acts) {
      for (bool half : {false, true}) {
        SCOPED_TRACE(std::string(g->name) + " " + a.name + (half ? " f16" : " f32"));
        op_node ref = conv_case_node(*g, true, false), cl = conv_case_node(*g, true, true);
        for (op_node* n : {&ref, &cl}) {
          n->attrs.set("activation", std::string(a.name));
          if (!a.params.empty()) n->attrs.set("activation_params", a.params);
        }
        tensor x = random_tensor(dtype::f32, g->x);
        tensor w = random_tensor(dtype::f32, g->w);
        tensor b = random_tensor(dtype::f32, {g->w[0]});
        auto y = run_op(conv_case_node(*g, true, false), {x, w});
        ASSERT_TRUE(y.has_value()) << y.error().to_string();
        tensor z = random_tensor(dtype::f32, (*y)[0].shape());
        const std::vector<bool> consts{false, true, true, false};
        expect_channels_last(ref, cl, {x, w, b, z}, {0, 3}, consts, half);         // bias + Z
        expect_channels_last(ref, cl, {x, w, b}, {0, 3}, consts, half);            // bias
        expect_channels_last(ref, cl, {x, w, tensor(), z}, {0, 3}, consts, half);  // Z only
      }
    }
  }
}

// The fp16 channel padding (C % 8 != 0) both ways, forced: each configuration must be right, not
// only the one the timing picks on this GPU.
TEST(CudaNhwc, ChannelPaddingForcedBothWays) {
  TROUPE_REQUIRE_GPU();
  for (const char* mode : {"0", "1"}) {
    setenv("TROUPE_CUDNN_PAD_CHANNELS", mode, 1);
    for (const conv_case* g : {&kCases[1], &kCases[2], &kCases[3], &kCases[9]}) {
      SCOPED_TRACE(std::string(g->name) + " TROUPE_CUDNN_PAD_CHANNELS=" + mode);
      op_node ref = conv_case_node(*g, true, false), cl = conv_case_node(*g, true, true);
      for (op_node* n : {&ref, &cl}) n->attrs.set("activation", std::string("Relu"));
      tensor x = random_tensor(dtype::f32, g->x);
      tensor w = random_tensor(dtype::f32, g->w);
      tensor b = random_tensor(dtype::f32, {g->w[0]});
      expect_channels_last(ref, cl, {x, w, b}, {0}, {false, true, true}, true);
      expect_channels_last(ref, cl, {x, w, b}, {0}, {false, false, false}, true);
    }
  }
  unsetenv("TROUPE_CUDNN_PAD_CHANNELS");
}

// The NHWC descriptors and the NCHW convolution between copies, each forced, over every geometry
// with an epilogue (bias, Z and an activation the fused call cannot do, then Relu, which it can).
TEST(CudaNhwc, EveryLayoutConfigurationIsRight) {
  TROUPE_REQUIRE_GPU();
  for (const char* mode : {"nhwc", "nchw"}) {
    setenv("TROUPE_CUDNN_LAYOUT", mode, 1);
    for (const auto& c : kCases) {
      for (const char* act : {"HardSwish", "Relu"}) {
        for (bool half : {false, true}) {
          SCOPED_TRACE(std::string(c.name) + " " + act + " TROUPE_CUDNN_LAYOUT=" + mode +
                       (half ? " f16" : " f32"));
          op_node ref = conv_case_node(c, true, false), cl = conv_case_node(c, true, true);
          for (op_node* n : {&ref, &cl}) n->attrs.set("activation", std::string(act));
          tensor x = random_tensor(dtype::f32, c.x);
          tensor w = random_tensor(dtype::f32, c.w);
          tensor b = random_tensor(dtype::f32, {c.w[0]});
          auto y = run_op(conv_case_node(c, true, false), {x, w});
          ASSERT_TRUE(y.has_value()) << y.error().to_string();
          tensor z = random_tensor(dtype::f32, (*y)[0].shape());
          expect_channels_last(ref, cl, {x, w, b, z}, {0, 3}, {false, true, true, false}, half);
          expect_channels_last(ref, cl, {x, w, b, z}, {0, 3}, {}, half);  // W, B at run time
        }
      }
    }
  }
  unsetenv("TROUPE_CUDNN_LAYOUT");
}

TEST(CudaNhwc, Pools) {
  TROUPE_REQUIRE_GPU();
  struct pool_case {
    shape_t x;
    std::vector<int64_t> kernel, strides, pads, dilations;
    int64_t ceil_mode;
    std::string auto_pad;
  };
  // Channel counts 64, 8, 6, 4 and 3 take the 16-, 8-, 4-byte and scalar accesses.
  const pool_case cases[] = {
      {{2, 64, 16, 16}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 0, ""},  // ResNet stem
      {{1, 8, 11, 11}, {3, 3}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 1, ""},   // ceil_mode
      {{1, 6, 10, 9}, {2, 3}, {2, 1}, {1, 0, 0, 2}, {1, 1}, 1, ""},    // asymmetric pads
      {{1, 3, 12, 12}, {3, 3}, {2, 2}, {}, {1, 1}, 0, "SAME_UPPER"},
      {{2, 4, 20}, {4}, {3}, {1, 2}, {1}, 0, ""},  // 1-D
      {{1, 6, 5, 6, 7}, {2, 2, 3}, {1, 2, 2}, {0, 1, 1, 1, 0, 1}, {1, 1, 1}, 0, ""},
      {{1, 8, 12, 12}, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, 0, ""},  // dilated (MaxPool)
  };
  for (const char* op : {"MaxPool", "AveragePool"}) {
    for (const auto& c : cases) {
      const bool dilated = c.dilations[0] > 1;
      if (dilated && std::string(op) == "AveragePool") continue;
      for (int64_t include_pad : {0, 1}) {
        if (include_pad && std::string(op) == "MaxPool") continue;
        for (bool half : {false, true}) {
          SCOPED_TRACE(std::string(op) + " " + shape_to_string(c.x) + " count_include_pad " +
                       std::to_string(include_pad) + (half ? " f16" : " f32"));
          op_node ref = make_node(op, 12);
          ref.attrs.set("kernel_shape", c.kernel);
          ref.attrs.set("strides", c.strides);
          if (!c.pads.empty()) ref.attrs.set("pads", c.pads);
          if (!c.auto_pad.empty()) ref.attrs.set("auto_pad", c.auto_pad);
          if (std::string(op) == "MaxPool") ref.attrs.set("dilations", c.dilations);
          ref.attrs.set("ceil_mode", c.ceil_mode);
          if (std::string(op) == "AveragePool") ref.attrs.set("count_include_pad", include_pad);
          op_node cl = ref;
          cl.domain = "troupe";
          cl.attrs.set("channels_last", int64_t{1});
          expect_channels_last(ref, cl, {random_tensor(dtype::f32, c.x)}, {0}, {}, half);
        }
      }
    }
  }
}

TEST(CudaNhwc, GlobalPools) {
  TROUPE_REQUIRE_GPU();
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    for (const shape_t& s : {shape_t{2, 2048, 7, 7}, shape_t{3, 24, 56, 56}, shape_t{2, 5, 3, 3, 3},
                             shape_t{2, 7, 9}, shape_t{1, 40, 1, 1}}) {
      for (bool half : {false, true}) {
        SCOPED_TRACE(std::string(op) + " " + shape_to_string(s) + (half ? " f16" : " f32"));
        op_node ref = make_node(op, 12);
        op_node cl = make_node(op, 12, "troupe");
        cl.attrs.set("channels_last", int64_t{1});
        expect_channels_last(ref, cl, {random_tensor(dtype::f32, s)}, {0}, {}, half);
      }
    }
  }
}

}  // namespace
}  // namespace troupe::testing
