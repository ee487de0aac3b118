// Input normalisation (runtime/input_normalization.hpp) on the CUDA backend: uint8 pixels in,
// Cast -> Sub(mean) -> Mul(1/std) in the graph, against the CPU backend running the float model on
// the normalised floats. fp32 within rel L2 1e-4, fp16 (the chain computes in float16 after the
// precision pass) within 1e-2; also with batch buckets, so the uint8 input goes through warm-up and
// a captured CUDA graph.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/runtime/layout_test_util.hpp"
#include "tests/random_integers.hpp"

namespace troupe::testing {
namespace {

using runtime::precision;

const std::vector<float> kMean{123.675f, 116.28f, 103.53f};
const std::vector<float> kStd{58.395f, 57.12f, 57.375f};

/// x [batch, 3, 16, 16] -> Conv(3x3, pad 1, 8) + bias -> Relu -> Conv(1x1, 8) -> y: two
/// convolutions, so the CUDA layout pass runs the region (and the Sub/Mul before it) channels-last.
std::string conv_model() {
  auto m = make_model(17);
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "3", "16", "16"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "8", "16", "16"});
  add_float_initializer(m, "W", {8, 3, 3, 3}, normal_values(8 * 3 * 3 * 3, 0.3f, 7));
  add_float_initializer(m, "B", {8}, normal_values(8, 0.1f, 8));
  auto* conv = add_node(m, "Conv", {"x", "W", "B"}, {"c"});
  set_ints(conv, "kernel_shape", {3, 3});
  set_ints(conv, "pads", {1, 1, 1, 1});
  add_node(m, "Relu", {"c"}, {"r"});
  add_float_initializer(m, "W2", {8, 8, 1, 1}, normal_values(8 * 8, 0.4f, 9));
  auto* conv2 = add_node(m, "Conv", {"r", "W2"}, {"y"});
  set_ints(conv2, "kernel_shape", {1, 1});
  return serialize(m);
}

/// (x - mean[c]) / std[c] along dim 1, in double, rounded once to float.
tensor normalised(const tensor& pixels) {
  tensor out = tensor::allocate(dtype::f32, pixels.shape());
  const int64_t inner = pixels.dim(2) * pixels.dim(3);
  for (int64_t i = 0; i < pixels.elements(); ++i) {
    const int64_t c = (i / inner) % 3;
    out.data<float>()[i] =
        static_cast<float>((pixels.data<uint8_t>()[i] - double{kMean[c]}) / kStd[c]);
  }
  return out;
}

expected<std::unique_ptr<runtime::session>> make_session(const std::string& bytes,
                                                         runtime::session_options o) {
  TROUPE_ASSIGN_OR_RETURN(runtime::graph g,
                          runtime::load_onnx_bytes(bytes.data(), bytes.size(), ""));
  return runtime::session::create_from_graph(std::move(g), std::move(o));
}

runtime::session_options normalising(precision p, std::vector<int64_t> buckets = {}) {
  runtime::session_options o;
  o.where = kernels::backend::cuda;
  o.compute_precision = p;
  o.batch_buckets = std::move(buckets);
  runtime::input_normalization n;
  n.client_type = dtype::u8;
  n.mean = kMean;
  n.stddev = kStd;
  o.input_normalizations = {n};
  return o;
}

TEST(CudaInputNormalization, Uint8InputMatchesCpuOnNormalisedFloats) {
  TROUPE_REQUIRE_GPU();
  const std::string bytes = conv_model();
  auto cpu = make_session(bytes, {});
  ASSERT_TRUE(cpu) << cpu.error().to_string();
  const tensor pixels = random_integers(dtype::u8, {4, 3, 16, 16}, 0, 255, 21);
  auto want = (*cpu)->run(std::vector<tensor>{normalised(pixels)});
  ASSERT_TRUE(want) << want.error().to_string();
  for (precision p : {precision::fp32, precision::fp16}) {
    const char* name = p == precision::fp16 ? "fp16" : "fp32";
    SCOPED_TRACE(name);
    auto gpu = make_session(bytes, normalising(p));
    ASSERT_TRUE(gpu) << gpu.error().to_string();
    EXPECT_EQ((*gpu)->inputs()[0].type, dtype::u8);
    auto plan = (*gpu)->prepare({pixels.info()});
    ASSERT_TRUE(plan) << plan.error().to_string();
    // The uint8 input is read by the Cast only (no float boundary Cast in front of it).
    const runtime::graph& g = (*plan)->specialized_graph();
    int readers = 0, channels_last = 0;
    for (const auto& n : g.nodes) {
      channels_last += n.op.attrs.get_int("channels_last", 0) != 0;
      for (int in : n.inputs) {
        if (in == g.inputs[0]) {
          ++readers;
          EXPECT_EQ(n.op.op_type, "Cast");
        }
      }
    }
    EXPECT_EQ(readers, 1);
    EXPECT_GT(channels_last, 0);
    auto got = (*gpu)->run(std::vector<tensor>{pixels});
    ASSERT_TRUE(got) << got.error().to_string();
    const double err = rel_l2((*got)[0], (*want)[0]);
    EXPECT_LE(err, p == precision::fp16 ? 1e-2 : 1e-4);
    std::printf("uint8 input, %s: rel L2 %.3e\n", name, err);
    auto as_float = (*gpu)->run(std::vector<tensor>{normalised(pixels)});
    ASSERT_FALSE(as_float);
    EXPECT_EQ(as_float.error().code(), error_code::invalid_argument);
  }
}

TEST(CudaInputNormalization, BatchBucketsWarmUpAndReplayWithUint8Input) {
  TROUPE_REQUIRE_GPU();
  const std::string bytes = conv_model();
  auto cpu = make_session(bytes, {});
  ASSERT_TRUE(cpu) << cpu.error().to_string();
  auto gpu = make_session(bytes, normalising(precision::fp16, {2, 8}));
  ASSERT_TRUE(gpu) << gpu.error().to_string();
  ASSERT_TRUE((*gpu)->warm_up().is_ok());
  for (int64_t rows : {1, 2, 5, 8}) {
    SCOPED_TRACE(rows);
    const tensor pixels = random_integers(dtype::u8, {rows, 3, 16, 16}, 0, 255, 100 + rows);
    auto want = (*cpu)->run(std::vector<tensor>{normalised(pixels)});
    ASSERT_TRUE(want) << want.error().to_string();
    auto got = (*gpu)->run(std::vector<tensor>{pixels});
    ASSERT_TRUE(got) << got.error().to_string();
    EXPECT_LE(rel_l2((*got)[0], (*want)[0]), 1e-2);
  }
}

}  // namespace
}  // namespace troupe::testing
