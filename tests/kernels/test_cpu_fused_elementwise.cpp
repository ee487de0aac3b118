// CPU troupe.FusedElementwise against the same chain run op by op through the CPU kernels of
// Cast/Add/Sub/Mul/Div/Relu/Sigmoid/Tanh/Clip, on random inputs with broadcasting constants of
// every form (scalar, per channel, per column, full), integer inputs behind a Cast, rows longer
// than the kernel's block, and malformed programs (typed errors, no crash).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kernels/ops/fused_elementwise_params.hpp"
#include "tests/kernels/kernel_test_util.hpp"
#include "tests/random_integers.hpp"

namespace troupe::testing {
namespace {

using kernels::ew_op;

struct step_spec {
  std::string op;              // ONNX op type
  int constant = 0;            // 1-based index into the constants, 0 for unary steps
  bool constant_left = false;  // Sub/Div with the constant as the first operand
  float lo = 0.0f, hi = 0.0f;  // Clip
};

ew_op code_of(const step_spec& s) {
  if (s.op == "Cast") return ew_op::cast;
  if (s.op == "Add") return ew_op::add;
  if (s.op == "Sub") return s.constant_left ? ew_op::rsub : ew_op::sub;
  if (s.op == "Mul") return ew_op::mul;
  if (s.op == "Div") return s.constant_left ? ew_op::rdiv : ew_op::div;
  if (s.op == "Relu") return ew_op::relu;
  if (s.op == "Sigmoid") return ew_op::sigmoid;
  if (s.op == "Tanh") return ew_op::tanh;
  return ew_op::clip;
}

op_node fused_node(const std::vector<step_spec>& steps, dtype to) {
  op_node n = make_node("FusedElementwise", 1, "troupe");
  std::vector<int64_t> ops, operands;
  std::vector<float> params;
  for (const auto& s : steps) {
    ops.push_back(static_cast<int64_t>(code_of(s)));
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

expected<tensor> run_fused(const std::vector<step_spec>& steps, dtype to, const tensor& x,
                           const std::vector<tensor>& constants) {
  std::vector<tensor> inputs{x};
  for (const auto& c : constants) inputs.push_back(c);
  std::vector<bool> is_constant(inputs.size(), true);
  is_constant[0] = false;
  TROUPE_ASSIGN_OR_RETURN(
      auto out, run_op(fused_node(steps, to), inputs, 1, kernels::backend::cpu, is_constant));
  return out[0];
}

/// The chain op by op through the unfused CPU kernels.
expected<tensor> run_reference(const std::vector<step_spec>& steps, dtype to, const tensor& x,
                               const std::vector<tensor>& constants) {
  tensor v = x;
  for (const auto& s : steps) {
    std::vector<tensor> out;
    if (s.op == "Cast") {
      op_node n = make_node("Cast");
      n.attrs.set("to", int64_t{dtype_to_onnx(to)});
      TROUPE_ASSIGN_OR_RETURN(out, run_op(n, {v}));
    } else if (s.op == "Clip") {
      tensor lo = tensor::allocate(dtype::f32, {}), hi = tensor::allocate(dtype::f32, {});
      *lo.data<float>() = s.lo;
      *hi.data<float>() = s.hi;
      TROUPE_ASSIGN_OR_RETURN(out, run_op(make_node("Clip", 13), {v, lo, hi}));
    } else if (s.constant > 0) {
      const tensor& c = constants[static_cast<size_t>(s.constant - 1)];
      TROUPE_ASSIGN_OR_RETURN(
          out, run_op(make_node(s.op),
                      s.constant_left ? std::vector<tensor>{c, v} : std::vector<tensor>{v, c}));
    } else {
      TROUPE_ASSIGN_OR_RETURN(out, run_op(make_node(s.op), {v}));
    }
    v = out[0];
  }
  return v;
}

void expect_matches(const std::vector<step_spec>& steps, dtype to, const tensor& x,
                    const std::vector<tensor>& constants, double tolerance = 1e-6) {
  auto fused = run_fused(steps, to, x, constants);
  auto want = run_reference(steps, to, x, constants);
  ASSERT_TRUE(fused) << fused.error().to_string();
  ASSERT_TRUE(want) << want.error().to_string();
  ASSERT_EQ(fused->shape(), want->shape());
  ASSERT_EQ(fused->type(), want->type());
  EXPECT_LE(relative_l2(*fused, *want), tolerance);
}

TEST(CpuFusedElementwise, EveryStepWithBroadcastConstants) {
  const shape_t shape{2, 3, 5, 7};
  const std::vector<tensor> constants{
      random_tensor(dtype::f32, {3, 1, 1}, 0.5, 1.5),     // per channel
      random_tensor(dtype::f32, {7}, -1.0, 1.0),          // per column
      random_tensor(dtype::f32, {}, 1.5, 2.0),            // scalar
      random_tensor(dtype::f32, {1, 3, 1, 7}, 0.5, 1.5),  // channel x column
      random_tensor(dtype::f32, shape, -1.0, 1.0),        // full
  };
  const std::vector<step_spec> steps{
      {"Mul", 1}, {"Add", 2}, {"Sigmoid"},      {"Sub", 3, true},
      {"Div", 4}, {"Tanh"},   {"Sub", 5},       {"Clip", 0, false, -0.5f, 0.8f},
      {"Relu"},   {"Add", 3}, {"Div", 1, true},
  };
  expect_matches(steps, dtype::f32, random_tensor(dtype::f32, shape, -3.0, 3.0), constants);
}

TEST(CpuFusedElementwise, IntegerInputsBehindACast) {
  const std::vector<tensor> constants{random_tensor(dtype::f32, {3, 1, 1}, 0.0, 200.0),
                                      random_tensor(dtype::f32, {3, 1, 1}, 0.01, 0.02)};
  const std::vector<step_spec> steps{{"Cast"}, {"Sub", 1}, {"Mul", 2}};
  for (dtype in : {dtype::u8, dtype::i8, dtype::u16, dtype::i16}) {
    SCOPED_TRACE(std::string(dtype_name(in)));
    const int lo = in == dtype::u8 || in == dtype::u16 ? 0 : -128;
    const int hi = in == dtype::u16   ? 65535
                   : in == dtype::i16 ? 32767
                                      : 127 + (in == dtype::u8) * 128;
    expect_matches(steps, dtype::f32, random_integers(in, {2, 3, 16, 16}, lo, hi, test_rng()),
                   constants);
  }
}

TEST(CpuFusedElementwise, RowsLongerThanABlockAcrossThreads) {
  // 300-wide rows (more than one 256-element block) and ~230k elements (several threads).
  const shape_t shape{4, 3, 64, 300};
  const std::vector<tensor> constants{random_tensor(dtype::f32, {300}, -1.0, 1.0),
                                      random_tensor(dtype::f32, {3, 1, 1}, 0.5, 1.5),
                                      random_tensor(dtype::f32, {3, 64, 1}, -1.0, 1.0)};
  const std::vector<step_spec> steps{{"Add", 1}, {"Mul", 2}, {"Sigmoid"}, {"Sub", 3}, {"Mul", 1}};
  expect_matches(steps, dtype::f32, random_tensor(dtype::f32, shape), constants);
}

TEST(CpuFusedElementwise, HalfChain) {
  const std::vector<tensor> constants{random_tensor(dtype::f16, {8}, -1.0, 1.0)};
  const std::vector<step_spec> steps{{"Add", 1}, {"Relu"}};
  expect_matches(steps, dtype::f16, random_tensor(dtype::f16, {5, 8}), constants);
}

TEST(CpuFusedElementwise, UnaryOnlyAndOneElement) {
  expect_matches({{"Relu"}, {"Tanh"}}, dtype::f32, random_tensor(dtype::f32, {1, 1}), {});
  expect_matches({{"Sigmoid"}, {"Relu"}}, dtype::f32, random_tensor(dtype::f32, {17}), {});
}

TEST(CpuFusedElementwise, MalformedProgramsAreTypedErrors) {
  const tensor x = random_tensor(dtype::f32, {2, 3});
  const tensor c = random_tensor(dtype::f32, {3});
  auto expect_error = [&](op_node n, std::vector<tensor> constants, const char* what) {
    std::vector<tensor> inputs{x};
    for (auto& t : constants) inputs.push_back(t);
    auto r = run_op(n, inputs, 1, kernels::backend::cpu, std::vector<bool>(inputs.size(), true));
    EXPECT_FALSE(r) << what;
  };
  op_node n = fused_node({{"Add", 1}, {"Relu"}}, dtype::f32);
  n.attrs.set("ops", std::vector<int64_t>{1, 99});
  expect_error(n, {c}, "unknown op code");
  expect_error(fused_node({{"Add", 2}, {"Relu"}}, dtype::f32), {c}, "operand out of range");
  expect_error(fused_node({{"Relu"}, {"Cast"}}, dtype::f32), {}, "cast after step 0");
  expect_error(fused_node({{"Add", 1}}, dtype::f32), {random_tensor(dtype::f32, {4})},
               "constant that does not broadcast");
  expect_error(fused_node({{"Add", 1}}, dtype::f32), {random_tensor(dtype::f32, {3, 2, 3})},
               "constant that widens the shape");
  expect_error(fused_node({{"Add", 1}}, dtype::f16), {random_tensor(dtype::f16, {3})},
               "input dtype differs from 'to' without a cast");
  op_node short_params = fused_node({{"Add", 1}}, dtype::f32);
  short_params.attrs.set("params", std::vector<float>{0.0f});
  expect_error(short_params, {c}, "params of the wrong length");
  // The constant is not known at create: the CPU kernel needs its value.
  auto r = run_op(fused_node({{"Add", 1}}, dtype::f32), {x, c}, 1, kernels::backend::cpu,
                  {false, false});
  EXPECT_FALSE(r);
}

}  // namespace
}  // namespace troupe::testing
