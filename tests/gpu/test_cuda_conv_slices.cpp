// The CUDA Conv kernel's batch slicing (conv_ops.cpp: k cuDNN calls on slices of the batch, one
// slice's workspace) against the CPU backend. TROUPE_CUDNN_FORCE_SLICES forces the sliced
// candidates; TROUPE_CUDNN_DEBUG=1 output (captured) proves the chosen one really is sliced, with
// the expected slice count and a smaller last slice. Every batch here leaves a remainder.
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

struct slice_case {
  const char* name;
  shape_t x, w;  // logical (N, C, H, W), (K, C, kh, kw)
  std::vector<int64_t> strides, pads;
  bool channels_last;
  int64_t forced;  // TROUPE_CUDNN_FORCE_SLICES
};

// N never divisible by the slice size: the last slice is smaller. Per-image bytes are multiples
// of 16 in f16 and f32 (the kernel slices only at 16-byte aligned offsets).
const slice_case kCases[] = {
    // ResNet's stem shape (7x7/2, C = 3) channels-last: the case that motivated slicing.
    {"stem NHWC N=5 k=2", {5, 3, 16, 16}, {8, 3, 7, 7}, {2, 2}, {3, 3, 3, 3}, true, 2},
    {"stem NHWC N=5 k=4", {5, 3, 16, 16}, {8, 3, 7, 7}, {2, 2}, {3, 3, 3, 3}, true, 4},
    // Asymmetric pads: X is copied (pre-padded) into the workspace per slice.
    {"asym NHWC N=5 k=2", {5, 8, 11, 11}, {8, 8, 3, 3}, {2, 2}, {0, 1, 1, 0}, true, 2},
    {"3x3 NCHW N=7 k=2", {7, 8, 10, 10}, {16, 8, 3, 3}, {1, 1}, {1, 1, 1, 1}, false, 2},
    {"3x3 NCHW N=7 k=4", {7, 8, 10, 10}, {16, 8, 3, 3}, {1, 1}, {1, 1, 1, 1}, false, 4},
};

op_node conv_node(const slice_case& c, bool channels_last, const char* act) {
  op_node n = make_node("FusedConv", 1, "troupe");
  n.attrs.set("strides", c.strides);
  n.attrs.set("pads", c.pads);
  if (act[0] != '\0') n.attrs.set("activation", std::string(act));
  if (channels_last) n.attrs.set("channels_last", int64_t{1});
  return n;
}

/// "slices S x I" (and " (last L)") as the kernel's debug output names a forced slicing.
std::string expected_label(int64_t batch, int64_t forced) {
  const int64_t images = (batch + forced - 1) / forced;
  const int64_t slices = (batch + images - 1) / images;
  const int64_t last = batch - (slices - 1) * images;
  std::string s = "slices " + std::to_string(slices) + " x " + std::to_string(images);
  if (last != images) s += " (last " + std::to_string(last) + ")";
  return s;
}

/// Runs the case on CUDA (forced slices) and on the CPU (NCHW) and compares; checks that the
/// chosen configuration is the sliced one. `inputs` are logical; Z (index 3) has Y's shape.
void expect_sliced(const slice_case& c, const char* act, std::vector<tensor> inputs,
                   const std::vector<bool>& constants, bool half) {
  if (half) {
    for (auto& t : inputs) {
      if (t.defined()) t = to_f32(to_f16(t));  // the CPU sees the values the GPU sees
    }
  }
  auto ref = run_op(conv_node(c, false, act), inputs);
  ASSERT_TRUE(ref.has_value()) << ref.error().to_string();
  std::vector<tensor> gpu_inputs = inputs;
  for (size_t i : {size_t{0}, size_t{3}}) {
    if (c.channels_last && i < gpu_inputs.size() && gpu_inputs[i].defined()) {
      gpu_inputs[i] = permute_channels_last(gpu_inputs[i], true);
    }
  }
  if (half) {
    for (auto& t : gpu_inputs) {
      if (t.defined()) t = to_f16(t);
    }
  }
  const std::string forced = std::to_string(c.forced);
  scoped_env force("TROUPE_CUDNN_FORCE_SLICES", forced.c_str());
  scoped_env debug("TROUPE_CUDNN_DEBUG", "1");
  ::testing::internal::CaptureStderr();
  auto out = run_op_cuda(conv_node(c, c.channels_last, act), gpu_inputs, 1, constants);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(out.has_value()) << out.error().to_string();
  // The chosen line names the sliced configuration.
  const size_t chosen = log.find("chosen:");
  ASSERT_NE(chosen, std::string::npos) << log;
  const std::string chosen_line = log.substr(chosen, log.find('\n', chosen) - chosen);
  EXPECT_NE(chosen_line.find(expected_label(c.x[0], c.forced)), std::string::npos) << chosen_line;
  tensor got = to_f32((*out)[0]);
  if (c.channels_last) got = permute_channels_last(got, false);
  const double err = relative_l2(got, (*ref)[0]);
  EXPECT_LE(err, half ? 1e-2 : 1e-4) << c.name << (half ? " f16 " : " f32 ") << chosen_line;
}

// Bias and residual Z in every combination, through the fused cuDNN call (Relu) and through conv
// + elementwise epilogue (HardSwish, and identity), f32 and f16.
TEST(CudaConvSlices, ForcedSlicesMatchCpu) {
  TROUPE_REQUIRE_GPU();
  for (const auto& c : kCases) {
    for (const char* act : {"", "Relu", "HardSwish"}) {
      for (bool half : {false, true}) {
        SCOPED_TRACE(std::string(c.name) + " act=" + act + (half ? " f16" : " f32"));
        tensor x = random_tensor(dtype::f32, c.x);
        tensor w = random_tensor(dtype::f32, c.w);
        tensor b = random_tensor(dtype::f32, {c.w[0]});
        auto y = run_op(conv_node(c, false, ""), {x, w});
        ASSERT_TRUE(y.has_value()) << y.error().to_string();
        tensor z = random_tensor(dtype::f32, (*y)[0].shape());
        const std::vector<bool> consts{false, true, true, false};
        expect_sliced(c, act, {x, w}, consts, half);               // neither
        expect_sliced(c, act, {x, w, b}, consts, half);            // bias
        expect_sliced(c, act, {x, w, tensor(), z}, consts, half);  // Z only
        expect_sliced(c, act, {x, w, b, z}, consts, half);         // bias + Z
        // W and B as run-time inputs (channels-last: W re-laid out into the workspace once per
        // run, read by every slice).
        expect_sliced(c, act, {x, w, b, z}, {}, half);
      }
    }
  }
}

// Channels-last as an NCHW convolution between copies: X transposed and Y staged per slice.
TEST(CudaConvSlices, ForcedSlicesThroughNchwCopies) {
  TROUPE_REQUIRE_GPU();
  scoped_env layout("TROUPE_CUDNN_LAYOUT", "nchw");
  for (const auto& c : kCases) {
    if (!c.channels_last) continue;
    for (bool half : {false, true}) {
      SCOPED_TRACE(std::string(c.name) + " nchw copies" + (half ? " f16" : " f32"));
      tensor x = random_tensor(dtype::f32, c.x);
      tensor w = random_tensor(dtype::f32, c.w);
      tensor b = random_tensor(dtype::f32, {c.w[0]});
      auto y = run_op(conv_node(c, false, ""), {x, w});
      ASSERT_TRUE(y.has_value()) << y.error().to_string();
      tensor z = random_tensor(dtype::f32, (*y)[0].shape());
      expect_sliced(c, "HardSwish", {x, w, b, z}, {false, true, true, false}, half);
    }
  }
}

// fp16 with C = 3 padded to 8 channels (X copied with zero channels per slice).
TEST(CudaConvSlices, ForcedSlicesWithPaddedChannels) {
  TROUPE_REQUIRE_GPU();
  scoped_env pad("TROUPE_CUDNN_PAD_CHANNELS", "1");
  scoped_env layout("TROUPE_CUDNN_LAYOUT", "nhwc");
  for (const slice_case* c : {&kCases[0], &kCases[1]}) {
    SCOPED_TRACE(std::string(c->name) + " padded channels");
    tensor x = random_tensor(dtype::f32, c->x);
    tensor w = random_tensor(dtype::f32, c->w);
    tensor b = random_tensor(dtype::f32, {c->w[0]});
    auto y = run_op(conv_node(*c, false, ""), {x, w});
    ASSERT_TRUE(y.has_value()) << y.error().to_string();
    tensor z = random_tensor(dtype::f32, (*y)[0].shape());
    expect_sliced(*c, "Relu", {x, w, b, z}, {false, true, true, false}, true);
    expect_sliced(*c, "Relu", {x, w, b, z}, {}, true);
  }
}

}  // namespace
}  // namespace troupe::testing
