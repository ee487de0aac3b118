// CUDA elementwise ops against the CPU backend: unary functions, Clip, broadcasting binary ops,
// comparisons, Where, Cast.
#include <gtest/gtest.h>

#include <cmath>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

TEST(CudaElementwise, UnaryFloat) {
  TROUPE_REQUIRE_GPU();
  for (bool half : {false, true}) {
    SCOPED_TRACE(half ? "f16" : "f32");
    expect_unary_float_parity({.half = half});
  }
}

TEST(CudaElementwise, UnaryWithAttributes) {
  TROUPE_REQUIRE_GPU();
  op_node leaky = make_node("LeakyRelu");
  leaky.attrs.set("alpha", 0.37f);
  expect_parity(leaky, {random_tensor(dtype::f32, {1000}, -2, 2)});
  op_node hs = make_node("HardSigmoid");
  hs.attrs.set("alpha", 0.3f);
  hs.attrs.set("beta", 0.4f);
  expect_parity(hs, {random_tensor(dtype::f32, {1000}, -5, 5)});
  op_node gelu = make_node("Gelu", 20);
  gelu.attrs.set("approximate", std::string("tanh"));
  expect_parity(gelu, {random_tensor(dtype::f32, {1000}, -4, 4)});
}

TEST(CudaElementwise, UnaryIntegers) {
  TROUPE_REQUIRE_GPU();
  for (dtype t : {dtype::i32, dtype::i64}) {
    for (const char* op : {"Neg", "Abs", "Relu"}) {
      SCOPED_TRACE(op);
      expect_parity(make_node(op), {random_tensor(t, {257}, -100, 100)});
    }
  }
  expect_parity(make_node("Not"), {random_tensor(dtype::boolean, {300})});
}

TEST(CudaElementwise, ClipForms) {
  TROUPE_REQUIRE_GPU();
  op_node old = make_node("Clip", 6);
  old.attrs.set("min", -0.25f);
  old.attrs.set("max", 0.5f);
  expect_parity(old, {random_tensor(dtype::f32, {4, 100})});
  op_node n = make_node("Clip", 13);
  const tensor lo = tensor::from_vector<float>({-0.3f}, {});
  const tensor hi = tensor::from_vector<float>({0.6f}, {});
  // Constant limits, limits read on the device, one limit absent.
  expect_parity(n, {random_tensor(dtype::f32, {4, 100}), lo, hi},
                {.constant_inputs = {false, true, true}});
  expect_parity(n, {random_tensor(dtype::f32, {4, 100}), lo, hi});
  expect_parity(n, {random_tensor(dtype::f32, {4, 100}), tensor(), hi});
  expect_parity(n, {random_tensor(dtype::f32, {4, 100}), lo, hi}, {.half = true});
  const tensor ilo = tensor::from_vector<int64_t>({-3}, {});
  const tensor ihi = tensor::from_vector<int64_t>({5}, {});
  expect_parity(n, {random_tensor(dtype::i64, {300}, -10, 10), ilo, ihi});
}

struct shapes2 {
  shape_t a, b;
};

TEST(CudaElementwise, BinaryBroadcasting) {
  TROUPE_REQUIRE_GPU();
  const shapes2 shapes[] = {
      {{2, 3, 40}, {2, 3, 40}},          // same shape
      {{2, 3, 40}, {40}},                // row
      {{2, 3, 40}, {}},                  // scalar
      {{}, {2, 3, 4}},                   // scalar first
      {{2, 1, 40}, {3, 1}},              // both broadcast
      {{8, 12, 16, 16}, {8, 1, 1, 16}},  // attention mask
      {{5, 1, 7}, {1, 6, 1}},
      {{2, 3, 4, 5, 6}, {3, 1, 5, 1}},
  };
  for (const char* op : {"Add", "Sub", "Mul", "Div", "Min", "Max"}) {
    for (const auto& s : shapes) {
      SCOPED_TRACE(std::string(op) + " " + shape_to_string(s.a) + " " + shape_to_string(s.b));
      op_node n = make_node(op, 13);
      const double lo = std::string(op) == "Div" ? 0.5 : -2;
      expect_parity(n,
                    {random_tensor(dtype::f32, s.a, -2, 2), random_tensor(dtype::f32, s.b, lo, 2)});
      expect_parity(n,
                    {random_tensor(dtype::f32, s.a, -2, 2), random_tensor(dtype::f32, s.b, lo, 2)},
                    {.half = true});
    }
  }
}

TEST(CudaElementwise, PRelu) {
  TROUPE_REQUIRE_GPU();
  op_node n = make_node("PRelu", 16);
  expect_parity(n, {random_tensor(dtype::f32, {2, 8, 5, 5}), random_tensor(dtype::f32, {8, 1, 1})});
  expect_parity(n, {random_tensor(dtype::f32, {4, 33}), random_tensor(dtype::f32, {33})},
                {.half = true});
}

TEST(CudaElementwise, BinaryIntegers) {
  TROUPE_REQUIRE_GPU();
  for (dtype t : {dtype::i32, dtype::i64}) {
    for (const char* op : {"Add", "Sub", "Mul", "Div"}) {
      SCOPED_TRACE(op);
      // Divisors avoid 0; negative operands check truncation toward zero.
      tensor b = random_tensor(t, {7, 1}, 1, 9);
      expect_parity(make_node(op, 13), {random_tensor(t, {7, 33}, -50, 50), b});
    }
  }
}

TEST(CudaElementwise, Pow) {
  TROUPE_REQUIRE_GPU();
  op_node n = make_node("Pow", 15);
  expect_parity(
      n, {random_tensor(dtype::f32, {3, 50}, 0.1, 3), random_tensor(dtype::f32, {50}, -2, 2)});
  expect_parity(
      n, {random_tensor(dtype::f32, {3, 50}, 0.1, 3), tensor::from_vector<float>({2.0f}, {})});
  expect_parity(n,
                {random_tensor(dtype::f32, {3, 50}, -3, 3), tensor::from_vector<int64_t>({3}, {})});
  expect_parity(
      n, {random_tensor(dtype::f32, {3, 50}, 0.1, 3), tensor::from_vector<float>({0.5f}, {})},
      {.half = true});
}

TEST(CudaElementwise, Comparisons) {
  TROUPE_REQUIRE_GPU();
  for (const char* op : {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"}) {
    SCOPED_TRACE(op);
    // Small integers in float so that equality happens.
    tensor a = random_tensor(dtype::i64, {4, 30}, -3, 3);
    tensor b = random_tensor(dtype::i64, {30}, -3, 3);
    expect_parity(make_node(op, 16), {a, b});
    tensor af = tensor::allocate(dtype::f32, a.shape()),
           bf = tensor::allocate(dtype::f32, b.shape());
    for (int64_t i = 0; i < a.elements(); ++i)
      af.data<float>()[i] = static_cast<float>(a.data<int64_t>()[i]);
    for (int64_t i = 0; i < b.elements(); ++i)
      bf.data<float>()[i] = static_cast<float>(b.data<int64_t>()[i]);
    expect_parity(make_node(op, 16), {af, bf});
    expect_parity(make_node(op, 16), {af, bf}, {.half = true});
  }
  expect_parity(make_node("Equal", 13),
                {random_tensor(dtype::boolean, {64}), random_tensor(dtype::boolean, {64})});
  for (const char* op : {"And", "Or", "Xor"}) {
    expect_parity(make_node(op),
                  {random_tensor(dtype::boolean, {3, 64}), random_tensor(dtype::boolean, {64})});
  }
}

TEST(CudaElementwise, Where) {
  TROUPE_REQUIRE_GPU();
  op_node n = make_node("Where", 16);
  expect_parity(n, {random_tensor(dtype::boolean, {4, 1, 16}),
                    random_tensor(dtype::f32, {4, 8, 16}), random_tensor(dtype::f32, {16})});
  expect_parity(n,
                {random_tensor(dtype::boolean, {4, 8, 16}), random_tensor(dtype::f32, {4, 8, 16}),
                 tensor::from_vector<float>({-1e4f}, {})},
                {.half = true});
  expect_parity(n, {random_tensor(dtype::boolean, {50}), random_tensor(dtype::i64, {50}, -9, 9),
                    random_tensor(dtype::i64, {1}, -9, 9)});
}

TEST(CudaElementwise, Cast) {
  TROUPE_REQUIRE_GPU();
  const dtype types[] = {dtype::f32,     dtype::f16, dtype::i32, dtype::i64,
                         dtype::boolean, dtype::u8,  dtype::i8,  dtype::f64};
  for (dtype from : types) {
    for (dtype to : types) {
      SCOPED_TRACE(std::string(dtype_name(from)) + " -> " + std::string(dtype_name(to)));
      op_node n = make_node("Cast", 13);
      n.attrs.set("to", static_cast<int64_t>(dtype_to_onnx(to)));
      // Values representable in every type (0..100), with fractions for float sources.
      tensor x = from == dtype::f16 ? to_f16(random_tensor(dtype::f32, {200}, 0, 100))
                                    : random_tensor(from, {200}, 0, 100);
      auto cpu = run_op(n, {x});
      if (!cpu) continue;  // a pair the CPU backend does not run has no reference
      auto gpu = run_op_cuda(n, {x});
      ASSERT_TRUE(gpu.has_value()) << gpu.error().to_string();
      ASSERT_EQ((*gpu)[0].type(), (*cpu)[0].type());
      for (int64_t i = 0; i < x.elements(); ++i) {
        ASSERT_EQ((*gpu)[0].value_as_double(i), (*cpu)[0].value_as_double(i)) << "element " << i;
      }
    }
  }
}

}  // namespace
}  // namespace troupe::testing
