// troupe.FusedElementwise on the CUDA backend against the CPU backend's kernel (fp32 rel L2 <=
// 1e-4, fp16/bf16 outputs <= 1e-2): every step with broadcast constants on the vector path (inner
// dim a multiple of 4) and the scalar path, integer and 16-bit inputs, and whole models with
// TROUPE_FUSE_ELEMENTWISE=1 (the CUDA default is off until verified here) against the CPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops/fused_elementwise_params.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"
#include "tests/runtime/layout_test_util.hpp"
#include "tests/random_integers.hpp"

namespace troupe::testing {
namespace {

using kernels::ew_op;
using runtime::precision;

struct step_spec {
  ew_op op;
  int constant = 0;  // 1-based input index of the constant, 0 for unary steps
  float lo = 0.0f, hi = 0.0f;
};

op_node fused_node(const std::vector<step_spec>& steps, dtype to) {
  op_node n = make_node("FusedElementwise", 1, "troupe");
  std::vector<int64_t> ops, operands;
  std::vector<float> params;
  for (const auto& s : steps) {
    ops.push_back(static_cast<int64_t>(s.op));
    operands.push_back(s.constant);
    params.push_back(s.lo);
    params.push_back(s.hi);
  }
  n.attrs.set("to", int64_t{dtype_to_onnx(to)});
  n.attrs.set("ops", ops);
  n.attrs.set("operands", operands);
  n.attrs.set("params", params);
  return n;
}

tensor convert(const tensor& f32, dtype to) {
  return to == dtype::f16 ? to_f16(f32) : to == dtype::bf16 ? to_bf16(f32) : f32;
}

/// The same node on both backends (constants visible to both factories); returns rel L2.
double cuda_vs_cpu(const op_node& node, const tensor& x, const std::vector<tensor>& constants) {
  std::vector<tensor> inputs{x};
  for (const auto& c : constants) inputs.push_back(c);
  std::vector<bool> is_constant(inputs.size(), true);
  is_constant[0] = false;
  auto want = run_op(node, inputs, 1, kernels::backend::cpu, is_constant);
  auto got = run_op_cuda(node, inputs, 1, is_constant);
  EXPECT_TRUE(want) << want.error().to_string();
  EXPECT_TRUE(got) << got.error().to_string();
  if (!want || !got) return 1.0;
  EXPECT_EQ((*got)[0].type(), (*want)[0].type());
  return relative_l2(to_f32((*got)[0]), to_f32((*want)[0]));
}

const std::vector<step_spec> every_step{
    {ew_op::mul, 1}, {ew_op::add, 2}, {ew_op::sigmoid}, {ew_op::rsub, 3},
    {ew_op::div, 4}, {ew_op::tanh},   {ew_op::sub, 5},  {ew_op::clip, 0, -0.5f, 0.8f},
    {ew_op::relu},   {ew_op::add, 3}, {ew_op::rdiv, 1},
};

std::vector<tensor> every_step_constants(const shape_t& shape, dtype t) {
  const int64_t c = shape[1], w = shape[3];
  return {convert(random_tensor(dtype::f32, {c, 1, 1}, 0.5, 1.5), t),
          convert(random_tensor(dtype::f32, {w}, -1.0, 1.0), t),
          convert(random_tensor(dtype::f32, {}, 1.5, 2.0), t),
          convert(random_tensor(dtype::f32, {1, c, 1, w}, 0.5, 1.5), t),
          convert(random_tensor(dtype::f32, shape, -1.0, 1.0), t)};
}

TEST(CudaFusedElementwise, EveryStepFloatVectorAndScalarPaths) {
  TROUPE_REQUIRE_GPU();
  // Inner dim 8: four elements per thread; 7: one; the large one spans many blocks.
  for (const shape_t& shape : {shape_t{2, 3, 5, 8}, shape_t{2, 3, 5, 7}, shape_t{4, 16, 64, 100}}) {
    SCOPED_TRACE(shape_to_string(shape));
    for (dtype t : {dtype::f32, dtype::f16, dtype::bf16}) {
      SCOPED_TRACE(std::string(dtype_name(t)));
      const tensor x = convert(random_tensor(dtype::f32, shape, -3.0, 3.0), t);
      const double err = cuda_vs_cpu(fused_node(every_step, t), x, every_step_constants(shape, t));
      EXPECT_LE(err, t == dtype::f32 ? 1e-4 : 1e-2);
    }
  }
}

TEST(CudaFusedElementwise, IntegerAndHalfInputsBehindACast) {
  TROUPE_REQUIRE_GPU();
  const std::vector<step_spec> steps{{ew_op::cast}, {ew_op::sub, 1}, {ew_op::mul, 2}};
  for (const shape_t& shape : {shape_t{2, 3, 16, 16}, shape_t{1, 3, 7, 9}}) {
    for (dtype in :
         {dtype::u8, dtype::i8, dtype::u16, dtype::i16, dtype::f16, dtype::bf16, dtype::f32}) {
      for (dtype out : {dtype::f32, dtype::f16, dtype::bf16}) {
        SCOPED_TRACE(shape_to_string(shape) + " " + std::string(dtype_name(in)) + " -> " +
                     std::string(dtype_name(out)));
        tensor x;
        if (is_floating(in)) {
          x = convert(random_tensor(dtype::f32, shape, -100.0, 250.0), in);
        } else {
          const int lo = in == dtype::u8 || in == dtype::u16 ? 0 : -128;
          x = random_integers(in, shape, lo, in == dtype::i8 ? 127 : 255, 42);
        }
        const std::vector<tensor> constants{
            convert(random_tensor(dtype::f32, {3, 1, 1}, 100.0, 130.0), out),
            convert(random_tensor(dtype::f32, {3, 1, 1}, 0.015, 0.02), out)};
        const double err = cuda_vs_cpu(fused_node(steps, out), x, constants);
        EXPECT_LE(err, out == dtype::f32 ? 1e-4 : 1e-2);
      }
    }
  }
}

// ---- whole models with the pass switched on for CUDA ------------------------------------------

struct fuse_env {
  fuse_env() { ::setenv("TROUPE_FUSE_ELEMENTWISE", "1", 1); }
  ~fuse_env() { ::unsetenv("TROUPE_FUSE_ELEMENTWISE"); }
};

/// x [batch, 4, 12, 12] -> Conv -> Mul(per channel) -> Sigmoid -> Conv -> Add(per channel) -> Tanh
/// -> y. Two fusable chains, one inside the channels-last region.
std::string chain_model() {
  auto m = make_model(17);
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "4", "12", "12"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "8", "12", "12"});
  add_float_initializer(m, "W1", {8, 4, 3, 3}, normal_values(8 * 4 * 9, 0.3f, 11));
  add_float_initializer(m, "W2", {8, 8, 1, 1}, normal_values(64, 0.3f, 12));
  add_float_initializer(m, "scale", {8, 1, 1}, normal_values(8, 1.0f, 13));
  add_float_initializer(m, "shift", {1, 8, 1, 1}, normal_values(8, 0.5f, 14));
  auto* c1 = add_node(m, "Conv", {"x", "W1"}, {"c1"});
  set_ints(c1, "kernel_shape", {3, 3});
  set_ints(c1, "pads", {1, 1, 1, 1});
  add_node(m, "Mul", {"c1", "scale"}, {"m"});
  add_node(m, "Sigmoid", {"m"}, {"s"});
  auto* c2 = add_node(m, "Conv", {"s", "W2"}, {"c2"});
  set_ints(c2, "kernel_shape", {1, 1});
  add_node(m, "Tanh", {"c2"}, {"t"});  // FusedConv takes Tanh as its activation: not a chain
  add_node(m, "Add", {"t", "shift"}, {"a"});
  add_node(m, "Relu", {"a"}, {"y"});
  return serialize(m);
}

expected<std::unique_ptr<runtime::session>> make_session(const std::string& bytes,
                                                         runtime::session_options o) {
  TROUPE_ASSIGN_OR_RETURN(runtime::graph g,
                          runtime::load_onnx_bytes(bytes.data(), bytes.size(), ""));
  return runtime::session::create_from_graph(std::move(g), std::move(o));
}

TEST(CudaFusedElementwise, ModelWithChainsMatchesCpu) {
  TROUPE_REQUIRE_GPU();
  fuse_env env;
  const std::string bytes = chain_model();
  auto cpu = make_session(bytes, {});
  ASSERT_TRUE(cpu) << cpu.error().to_string();
  tensor x = tensor::allocate(dtype::f32, {2, 4, 12, 12});
  const auto v = normal_values(static_cast<size_t>(x.elements()), 1.0f, 15);
  std::copy(v.begin(), v.end(), x.data<float>());
  auto want = (*cpu)->run(std::vector<tensor>{x});
  ASSERT_TRUE(want) << want.error().to_string();
  for (precision p : {precision::fp32, precision::fp16}) {
    const char* name = p == precision::fp16 ? "fp16" : "fp32";
    SCOPED_TRACE(name);
    runtime::session_options o;
    o.where = kernels::backend::cuda;
    o.compute_precision = p;
    auto gpu = make_session(bytes, o);
    ASSERT_TRUE(gpu) << gpu.error().to_string();
    auto plan = (*gpu)->prepare({x.info()});
    ASSERT_TRUE(plan) << plan.error().to_string();
    int fused = 0;
    for (const auto& n : (*plan)->specialized_graph().nodes)
      fused += n.op.op_type == "FusedElementwise";
    EXPECT_EQ(fused, 2) << "Mul -> Sigmoid and Add -> Relu";
    auto got = (*gpu)->run(std::vector<tensor>{x});
    ASSERT_TRUE(got) << got.error().to_string();
    const double err = rel_l2((*got)[0], (*want)[0]);
    EXPECT_LE(err, p == precision::fp16 ? 1e-2 : 1e-4);
    std::printf("chain model, %s: rel L2 %.3e\n", name, err);
  }
}

TEST(CudaFusedElementwise, Uint8InputNormalizationMatchesCpu) {
  TROUPE_REQUIRE_GPU();
  fuse_env env;
  const std::vector<float> mean{123.675f, 116.28f, 103.53f, 110.0f};
  const std::vector<float> stddev{58.395f, 57.12f, 57.375f, 60.0f};
  const std::string bytes = chain_model();
  const tensor pixels = random_integers(dtype::u8, {3, 4, 12, 12}, 0, 255, 16);
  tensor normalised = tensor::allocate(dtype::f32, pixels.shape());
  for (int64_t i = 0; i < pixels.elements(); ++i) {
    const int64_t c = (i / 144) % 4;
    normalised.data<float>()[i] =
        static_cast<float>((pixels.data<uint8_t>()[i] - double{mean[c]}) / stddev[c]);
  }
  auto cpu = make_session(bytes, {});
  ASSERT_TRUE(cpu) << cpu.error().to_string();
  auto want = (*cpu)->run(std::vector<tensor>{normalised});
  ASSERT_TRUE(want) << want.error().to_string();
  for (precision p : {precision::fp32, precision::fp16}) {
    SCOPED_TRACE(p == precision::fp16 ? "fp16" : "fp32");
    runtime::session_options o;
    o.where = kernels::backend::cuda;
    o.compute_precision = p;
    runtime::input_normalization n;
    n.client_type = dtype::u8;
    n.mean = mean;
    n.stddev = stddev;
    o.input_normalizations = {n};
    auto gpu = make_session(bytes, o);
    ASSERT_TRUE(gpu) << gpu.error().to_string();
    auto plan = (*gpu)->prepare({pixels.info()});
    ASSERT_TRUE(plan) << plan.error().to_string();
    int fused = 0;
    for (const auto& nd : (*plan)->specialized_graph().nodes)
      fused += nd.op.op_type == "FusedElementwise";
    EXPECT_GE(fused, 2);  // the normalisation's Sub -> Mul (after the layout transpose) and more
    auto got = (*gpu)->run(std::vector<tensor>{pixels});
    ASSERT_TRUE(got) << got.error().to_string();
    EXPECT_LE(rel_l2((*got)[0], (*want)[0]), p == precision::fp16 ? 1e-2 : 1e-4);
  }
}

}  // namespace
}  // namespace troupe::testing
