// CPU elementwise kernels against references written here in double: unary math and
// activations, broadcasting binary ops, comparisons and logic, variadic ops, Pow, Mod, Clip, Cast,
// Where, and the accuracy of the vectorised exp/erf/tanh/sigmoid over a sweep of floats.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/op_schema.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

/// Element `flat` of the output -> the element of an input of shape `in` that broadcasts to it.
int64_t broadcast_source(const shape_t& out, const shape_t& in, int64_t flat) {
  int64_t src = 0, in_stride = 1;
  for (size_t k = out.size(); k-- > 0;) {
    const int64_t idx = flat % out[k];
    flat /= out[k];
    const size_t lead = out.size() - in.size();
    if (k >= lead) {
      const int64_t d = in[k - lead];
      if (d != 1) src += idx * in_stride;
      in_stride *= d;
    }
  }
  return src;
}

/// Every element of `got` within atol + rtol * |want| of `want` (NaN must match NaN).
void expect_near_all(const tensor& got, const std::vector<double>& want, double rtol, double atol,
                     const std::string& what) {
  ASSERT_EQ(got.elements(), static_cast<int64_t>(want.size())) << what;
  int failures = 0;
  for (int64_t i = 0; i < got.elements() && failures < 5; ++i) {
    const double g = got.value_as_double(i), w = want[static_cast<size_t>(i)];
    if (std::isnan(w)) {
      if (!std::isnan(g)) {
        ADD_FAILURE() << what << " element " << i << ": got " << g << ", want NaN";
        ++failures;
      }
      continue;
    }
    if (std::isinf(w)) {
      if (g != w) {
        ADD_FAILURE() << what << " element " << i << ": got " << g << ", want " << w;
        ++failures;
      }
      continue;
    }
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w))) {
      ADD_FAILURE() << what << " element " << i << ": got " << g << ", want " << w;
      ++failures;
    }
  }
}

tensor run1(const op_node& node, const std::vector<tensor>& inputs,
            std::vector<bool> constant = {}) {
  auto out = run_op(node, inputs, 1, kernels::backend::cpu, std::move(constant));
  EXPECT_TRUE(out.has_value()) << (out.has_value() ? "" : out.error().to_string());
  if (!out.has_value()) return {};
  return (*out)[0];
}

op_node with_float(op_node n, const std::string& name, float v) {
  n.attrs.set(name, v);
  return n;
}

template <class T>
tensor make(dtype t, shape_t shape, std::vector<T> values) {
  tensor x = tensor::allocate(t, std::move(shape));
  EXPECT_EQ(x.bytes(), values.size() * sizeof(T));
  std::memcpy(x.raw(), values.data(), x.bytes());
  return x;
}

// ---- unary ---------------------------------------------------------------------------------

struct unary_case {
  const char* op;
  std::function<double(double)> ref;
  double lo, hi;
  double rtol;
};

TEST(CpuUnary, FloatOpsMatchReference) {
  auto softplus = [](double x) { return std::log1p(std::exp(-std::fabs(x))) + std::max(x, 0.0); };
  const std::vector<unary_case> cases = {
      {"Neg", [](double x) { return -x; }, -5, 5, 0},
      {"Abs", [](double x) { return std::fabs(x); }, -5, 5, 0},
      {"Sqrt", [](double x) { return std::sqrt(x); }, 0, 9, 1e-6},
      {"Exp", [](double x) { return std::exp(x); }, -80, 80, 1e-6},
      {"Log", [](double x) { return std::log(x); }, 1e-3, 100, 1e-6},
      {"Erf", [](double x) { return std::erf(x); }, -5, 5, 1e-6},
      {"Tanh", [](double x) { return std::tanh(x); }, -10, 10, 1e-6},
      {"Sigmoid", [](double x) { return 1 / (1 + std::exp(-x)); }, -30, 30, 1e-6},
      {"Relu", [](double x) { return std::max(x, 0.0); }, -5, 5, 0},
      {"Softsign", [](double x) { return x / (1 + std::fabs(x)); }, -5, 5, 1e-6},
      {"Softplus", softplus, -30, 30, 1e-6},
      {"Reciprocal", [](double x) { return 1 / x; }, 0.5, 5, 1e-6},
      {"Floor", [](double x) { return std::floor(x); }, -5, 5, 0},
      {"Ceil", [](double x) { return std::ceil(x); }, -5, 5, 0},
      {"Sign", [](double x) { return (x > 0) - (x < 0); }, -5, 5, 0},
      {"Sin", [](double x) { return std::sin(x); }, -5, 5, 1e-6},
      {"Cos", [](double x) { return std::cos(x); }, -5, 5, 1e-6},
      {"Tan", [](double x) { return std::tan(x); }, -1.5, 1.5, 1e-5},
      {"Asin", [](double x) { return std::asin(x); }, -1, 1, 1e-6},
      {"Acos", [](double x) { return std::acos(x); }, -1, 1, 1e-6},
      {"Atan", [](double x) { return std::atan(x); }, -5, 5, 1e-6},
      {"Sinh", [](double x) { return std::sinh(x); }, -5, 5, 1e-6},
      {"Cosh", [](double x) { return std::cosh(x); }, -5, 5, 1e-6},
      {"Asinh", [](double x) { return std::asinh(x); }, -5, 5, 1e-6},
      {"Acosh", [](double x) { return std::acosh(x); }, 1, 5, 1e-6},
      {"Atanh", [](double x) { return std::atanh(x); }, -0.99, 0.99, 1e-5},
      {"HardSwish", [](double x) { return x * std::clamp(x / 6 + 0.5, 0.0, 1.0); }, -5, 5, 1e-6},
      {"Mish", [=](double x) { return x * std::tanh(softplus(x)); }, -10, 10, 1e-5},
      {"Gelu", [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }, -6, 6, 1e-6},
  };
  for (const auto& c : cases) {
    tensor x = random_tensor(dtype::f32, {3, 7, 11}, c.lo, c.hi);
    std::vector<double> want;
    for (int64_t i = 0; i < x.elements(); ++i) want.push_back(c.ref(x.data<float>()[i]));
    tensor y = run1(make_node(c.op, 18), {x});
    expect_near_all(y, want, std::max(c.rtol, 1e-7), 1e-7, c.op);
    // float64 runs the same ops through libm.
    tensor xd = random_tensor(dtype::f64, {5, 3}, c.lo, c.hi);
    std::vector<double> want_d;
    for (int64_t i = 0; i < xd.elements(); ++i) want_d.push_back(c.ref(xd.data<double>()[i]));
    expect_near_all(run1(make_node(c.op, 18), {xd}), want_d, 1e-12, 1e-14,
                    std::string(c.op) + " f64");
  }
}

/// GELU's negative tail is tiny: both forms must keep relative accuracy there (no 1 + erf or
/// 1 + tanh cancellation) down to the flush to zero near 1e-37. The tanh form's exponent is a float
/// polynomial of x, so its relative error grows like 1e-7 * |u|; the erf form carries x^2 exactly.
TEST(CpuUnary, GeluNegativeTailKeepsRelativeAccuracy) {
  tensor x = random_tensor(dtype::f32, {4096}, -12, 0);
  std::vector<double> exact, approx;
  for (int64_t i = 0; i < x.elements(); ++i) {
    const double v = x.data<float>()[i];
    exact.push_back(0.5 * v * std::erfc(-v / std::sqrt(2.0)));
    const double u = std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v);
    approx.push_back(v / (1 + std::exp(-2 * u)));
  }
  expect_near_all(run1(make_node("Gelu", 20), {x}), exact, 2e-6, 1e-35, "Gelu tail");
  op_node tanh_form = make_node("Gelu", 20);
  tanh_form.attrs.set("approximate", std::string("tanh"));
  expect_near_all(run1(tanh_form, {x}), approx, 2e-5, 1e-35, "Gelu tanh tail");
}

TEST(CpuUnary, RoundIsHalfToEven) {
  tensor x = tensor::from_vector<float>({0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.4f, -2.6f, 3.0f}, {8});
  expect_near_all(run1(make_node("Round", 11), {x}), {0, 2, 2, -0.0, -2, 2, -3, 3}, 0, 0, "Round");
}

TEST(CpuUnary, ActivationsWithAttributes) {
  tensor x = random_tensor(dtype::f32, {4, 9}, -4, 4);
  auto want = [&](auto f) {
    std::vector<double> w;
    for (int64_t i = 0; i < x.elements(); ++i)
      w.push_back(f(static_cast<double>(x.data<float>()[i])));
    return w;
  };
  expect_near_all(run1(with_float(make_node("LeakyRelu"), "alpha", 0.3f), {x}),
                  want([](double v) { return v < 0 ? 0.3 * v : v; }), 1e-6, 1e-7, "LeakyRelu");
  expect_near_all(run1(make_node("LeakyRelu"), {x}),
                  want([](double v) { return v < 0 ? 0.01 * v : v; }), 1e-6, 1e-7,
                  "LeakyRelu default");
  expect_near_all(run1(with_float(make_node("Elu"), "alpha", 2.0f), {x}),
                  want([](double v) { return v < 0 ? 2 * (std::exp(v) - 1) : v; }), 1e-6, 1e-7,
                  "Elu");
  expect_near_all(run1(make_node("Selu"), {x}), want([](double v) {
                    const double a = 1.67326319217681884765625, g = 1.05070102214813232421875;
                    return v > 0 ? g * v : g * a * (std::exp(v) - 1);
                  }),
                  1e-6, 1e-7, "Selu");
  expect_near_all(run1(with_float(make_node("Celu"), "alpha", 1.5f), {x}), want([](double v) {
                    return std::max(0.0, v) + std::min(0.0, 1.5 * (std::exp(v / 1.5) - 1));
                  }),
                  1e-6, 1e-7, "Celu");
  expect_near_all(run1(with_float(make_node("ThresholdedRelu"), "alpha", 0.5f), {x}),
                  want([](double v) { return v > 0.5 ? v : 0; }), 0, 0, "ThresholdedRelu");
  op_node hs = with_float(with_float(make_node("HardSigmoid"), "alpha", 0.25f), "beta", 0.4f);
  expect_near_all(run1(hs, {x}),
                  want([](double v) { return std::clamp(0.25 * v + 0.4, 0.0, 1.0); }), 1e-6, 1e-7,
                  "HardSigmoid");
  op_node sh = with_float(with_float(make_node("Shrink"), "lambd", 1.0f), "bias", 0.5f);
  expect_near_all(run1(sh, {x}),
                  want([](double v) { return v < -1 ? v + 0.5 : (v > 1 ? v - 0.5 : 0); }), 1e-6,
                  1e-7, "Shrink");
  op_node gt = make_node("Gelu", 20);
  gt.attrs.set("approximate", std::string("tanh"));
  expect_near_all(run1(gt, {x}), want([](double v) {
                    return 0.5 * v *
                           (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
                  }),
                  1e-6, 1e-7, "Gelu tanh");
  op_node bad = make_node("Gelu", 20);
  bad.attrs.set("approximate", std::string("sigmoid"));
  auto r = run_op(bad, {x});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), error_code::invalid_model);
}

TEST(CpuUnary, IntegerOps) {
  tensor x = make<int32_t>(dtype::i32, {6}, {-7, 0, 5, std::numeric_limits<int32_t>::min(), 3, -1});
  expect_near_all(run1(make_node("Neg"), {x}), {7, 0, -5, -2147483648.0, -3, 1}, 0, 0, "Neg i32");
  expect_near_all(run1(make_node("Abs"), {x}), {7, 0, 5, -2147483648.0, 3, 1}, 0, 0, "Abs i32");
  expect_near_all(run1(make_node("Relu"), {x}), {0, 0, 5, 0, 3, 0}, 0, 0, "Relu i32");
  expect_near_all(run1(make_node("Sign"), {x}), {-1, 0, 1, -1, 1, -1}, 0, 0, "Sign i32");
}

TEST(CpuUnary, PredicatesAndNot) {
  tensor x = tensor::from_vector<float>({1.0f, INFINITY, -INFINITY, NAN, -0.0f}, {5});
  tensor nan_mask = run1(make_node("IsNaN"), {x});
  EXPECT_EQ(nan_mask.type(), dtype::boolean);
  expect_near_all(nan_mask, {0, 0, 0, 1, 0}, 0, 0, "IsNaN");
  expect_near_all(run1(make_node("IsInf"), {x}), {0, 1, 1, 0, 0}, 0, 0, "IsInf");
  op_node pos_only = make_node("IsInf");
  pos_only.attrs.set("detect_negative", int64_t{0});
  expect_near_all(run1(pos_only, {x}), {0, 1, 0, 0, 0}, 0, 0, "IsInf positive");
  tensor b = make<uint8_t>(dtype::boolean, {3}, {1, 0, 1});
  expect_near_all(run1(make_node("Not"), {b}), {0, 1, 0}, 0, 0, "Not");
}

TEST(CpuUnary, SpecialValuesPropagate) {
  tensor x = tensor::from_vector<float>(
      {NAN, INFINITY, -INFINITY, 0.0f, 100.0f, -100.0f, 89.0f, -104.0f}, {8});
  expect_near_all(run1(make_node("Exp"), {x}),
                  {nan_v, inf, 0, 1, std::exp(100.0) > 3.5e38 ? inf : 0, std::exp(-100.0), inf, 0},
                  2e-6, 1e-45, "Exp");
  expect_near_all(run1(make_node("Erf"), {x}), {nan_v, 1, -1, 0, 1, -1, 1, -1}, 0, 0, "Erf");
  expect_near_all(run1(make_node("Tanh"), {x}), {nan_v, 1, -1, 0, 1, -1, 1, -1}, 0, 0, "Tanh");
  // Sigmoid may flush results below 1e-38 to zero.
  expect_near_all(run1(make_node("Sigmoid"), {x}), {nan_v, 1, 0, 0.5, 1, 0, 1, 0}, 2e-6, 1e-38,
                  "Sigmoid");
}

/// The vectorised exp/erf/tanh/sigmoid over a sweep of float bit patterns (every 4099th float
/// in the range where results are normal), against libm in double.
TEST(CpuUnary, VectorMathAccuracySweep) {
  std::vector<float> xs;
  for (uint64_t b = 0; b < 0xFFFFFFFFull; b += 4099) {
    const float v = std::bit_cast<float>(static_cast<uint32_t>(b));
    if (std::isfinite(v) && std::fabs(v) > 1e-30f && std::fabs(v) < 87.0f) xs.push_back(v);
  }
  tensor x = tensor::from_vector<float>(xs, {static_cast<int64_t>(xs.size())});
  struct sweep {
    const char* op;
    double (*ref)(double);
  };
  for (sweep s : {sweep{"Exp", [](double v) { return std::exp(v); }},
                  sweep{"Erf", [](double v) { return std::erf(v); }},
                  sweep{"Tanh", [](double v) { return std::tanh(v); }},
                  sweep{"Sigmoid", [](double v) { return 1 / (1 + std::exp(-v)); }}}) {
    tensor y = run1(make_node(s.op), {x});
    double worst = 0;
    float worst_x = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const double want = s.ref(xs[i]);
      if (std::fabs(want) < 1e-37) continue;  // denormal results carry less precision
      const double err = std::fabs(y.data<float>()[i] - want) / std::fabs(want);
      if (err > worst) {
        worst = err;
        worst_x = xs[i];
      }
    }
    EXPECT_LT(worst, 1e-6) << s.op << " worst at x=" << worst_x;
  }
}

// ---- binary --------------------------------------------------------------------------------

struct shape_pair {
  shape_t a, b;
};

const std::vector<shape_pair>& broadcast_shapes_to_test() {
  static const std::vector<shape_pair> pairs = {
      {{2, 3, 4}, {2, 3, 4}},
      {{2, 3, 4}, {}},
      {{}, {5, 6}},
      {{4, 5}, {5}},
      {{4, 5}, {4, 1}},
      {{1, 5}, {4, 1}},
      {{2, 1, 3, 1}, {1, 4, 1, 5}},
      {{2, 3, 4}, {3, 1}},
      {{3, 1, 1}, {1, 1, 7}},
      {{1}, {1}},
      {{6, 1, 5, 1, 3}, {6, 2, 1, 4, 3}},
      {{0, 3}, {3}},
  };
  return pairs;
}

TEST(CpuBinary, FloatArithmeticBroadcasts) {
  struct op_case {
    const char* op;
    double (*ref)(double, double);
  };
  const op_case ops[] = {{"Add", [](double a, double b) { return a + b; }},
                         {"Sub", [](double a, double b) { return a - b; }},
                         {"Mul", [](double a, double b) { return a * b; }},
                         {"Div", [](double a, double b) { return a / b; }}};
  for (const auto& sp : broadcast_shapes_to_test()) {
    tensor a = random_tensor(dtype::f32, sp.a, -3, 3);
    tensor b = random_tensor(dtype::f32, sp.b, 0.5, 3);
    auto out_shape = kernels::broadcast_shapes(sp.a, sp.b);
    ASSERT_TRUE(out_shape.has_value());
    for (const auto& oc : ops) {
      tensor y = run1(make_node(oc.op), {a, b});
      ASSERT_EQ(y.shape(), *out_shape) << oc.op;
      std::vector<double> want;
      for (int64_t i = 0; i < y.elements(); ++i) {
        want.push_back(oc.ref(a.data<float>()[broadcast_source(*out_shape, sp.a, i)],
                              b.data<float>()[broadcast_source(*out_shape, sp.b, i)]));
      }
      expect_near_all(
          y, want, 1e-6, 0,
          std::string(oc.op) + " " + shape_to_string(sp.a) + " " + shape_to_string(sp.b));
    }
  }
}

/// Shapes big enough to be split across threads mid-row.
TEST(CpuBinary, LargeBroadcastSplitsAcrossThreads) {
  for (const auto& sp : std::vector<shape_pair>{{{3, 257, 129}, {129}},
                                                {{3, 257, 129}, {3, 257, 1}},
                                                {{3, 1, 129}, {1, 257, 129}},
                                                {{100003}, {100003}}}) {
    tensor a = random_tensor(dtype::f32, sp.a);
    tensor b = random_tensor(dtype::f32, sp.b);
    auto out_shape = *kernels::broadcast_shapes(sp.a, sp.b);
    tensor y = run1(make_node("Mul"), {a, b});
    std::vector<double> want;
    for (int64_t i = 0; i < y.elements(); ++i) {
      want.push_back(static_cast<double>(a.data<float>()[broadcast_source(out_shape, sp.a, i)]) *
                     b.data<float>()[broadcast_source(out_shape, sp.b, i)]);
    }
    expect_near_all(y, want, 1e-6, 0, "Mul " + shape_to_string(sp.a) + " " + shape_to_string(sp.b));
  }
}

TEST(CpuBinary, IntegerDivAndModFollowOnnx) {
  const int32_t mn = std::numeric_limits<int32_t>::min();
  tensor a = make<int32_t>(dtype::i32, {7}, {7, -7, 7, -7, 5, mn, 9});
  tensor b = make<int32_t>(dtype::i32, {7}, {2, 2, -2, -2, 0, -1, 3});
  expect_near_all(run1(make_node("Div"), {a, b}), {3, -3, -3, 3, 0, static_cast<double>(mn), 3}, 0,
                  0, "Div i32");
  // fmod=0: the sign of the divisor (Python); fmod=1: the sign of the dividend (C).
  expect_near_all(run1(make_node("Mod", 13), {a, b}), {1, 1, -1, -1, 0, 0, 0}, 0, 0, "Mod i32");
  op_node fmod = make_node("Mod", 13);
  fmod.attrs.set("fmod", int64_t{1});
  expect_near_all(run1(fmod, {a, b}), {1, -1, 1, -1, 0, 0, 0}, 0, 0, "Mod fmod i32");
  tensor fa = tensor::from_vector<float>({5.5f, -5.5f, 5.5f, -5.5f}, {4});
  tensor fb = tensor::from_vector<float>({2.0f, 2.0f, -2.0f, -2.0f}, {4});
  expect_near_all(run1(fmod, {fa, fb}), {1.5, -1.5, 1.5, -1.5}, 0, 0, "Mod fmod f32");
  expect_near_all(run1(make_node("Mod", 13), {fa, fb}), {1.5, 0.5, -0.5, -1.5}, 0, 0, "Mod f32");
  tensor ua = make<uint8_t>(dtype::u8, {3}, {250, 7, 9});
  tensor ub = make<uint8_t>(dtype::u8, {3}, {10, 0, 4});
  expect_near_all(run1(make_node("Add"), {ua, ub}), {4, 7, 13}, 0, 0, "Add u8 wraps");
  expect_near_all(run1(make_node("Mod", 13), {ua, ub}), {0, 0, 1}, 0, 0, "Mod u8");
  tensor la = make<int64_t>(dtype::i64, {2}, {std::numeric_limits<int64_t>::max(), 3});
  tensor lb = make<int64_t>(dtype::i64, {2}, {1, 4});
  EXPECT_EQ(run1(make_node("Add"), {la, lb}).data<int64_t>()[0],
            std::numeric_limits<int64_t>::min());
}

TEST(CpuBinary, ComparisonsAndLogic) {
  tensor a = random_tensor(dtype::i64, {3, 4}, -3, 3);
  tensor b = random_tensor(dtype::i64, {4}, -3, 3);
  const shape_t out{3, 4};
  struct op_case {
    const char* op;
    bool (*ref)(int64_t, int64_t);
  };
  for (op_case oc : {op_case{"Equal", [](int64_t x, int64_t y) { return x == y; }},
                     op_case{"Less", [](int64_t x, int64_t y) { return x < y; }},
                     op_case{"LessOrEqual", [](int64_t x, int64_t y) { return x <= y; }},
                     op_case{"Greater", [](int64_t x, int64_t y) { return x > y; }},
                     op_case{"GreaterOrEqual", [](int64_t x, int64_t y) { return x >= y; }}}) {
    tensor y = run1(make_node(oc.op, 13), {a, b});
    EXPECT_EQ(y.type(), dtype::boolean);
    std::vector<double> want;
    for (int64_t i = 0; i < 12; ++i) {
      want.push_back(
          oc.ref(a.data<int64_t>()[i], b.data<int64_t>()[broadcast_source(out, {4}, i)]));
    }
    expect_near_all(y, want, 0, 0, oc.op);
  }
  tensor p = make<uint8_t>(dtype::boolean, {2, 2}, {0, 0, 1, 1});
  tensor q = make<uint8_t>(dtype::boolean, {2}, {0, 1});
  expect_near_all(run1(make_node("And"), {p, q}), {0, 0, 0, 1}, 0, 0, "And");
  expect_near_all(run1(make_node("Or"), {p, q}), {0, 1, 1, 1}, 0, 0, "Or");
  expect_near_all(run1(make_node("Xor"), {p, q}), {0, 1, 1, 0}, 0, 0, "Xor");
  expect_near_all(run1(make_node("Equal", 13), {p, q}), {1, 0, 0, 1}, 0, 0, "Equal bool");
  tensor f = tensor::from_vector<float>({1.0f, NAN}, {2});
  expect_near_all(run1(make_node("Equal", 13), {f, f}), {1, 0}, 0, 0, "Equal NaN");
  auto mixed = run_op(make_node("And"), {f, f});
  EXPECT_FALSE(mixed.has_value());
}

TEST(CpuBinary, PowTypesAndConstantExponents) {
  tensor x = random_tensor(dtype::f32, {5, 6}, 0.1, 3);
  for (float e : {2.0f, 3.0f, 0.5f, 1.0f, 1.7f}) {
    tensor ex = tensor::from_vector<float>({e}, {});
    std::vector<double> want;
    for (int64_t i = 0; i < x.elements(); ++i)
      want.push_back(std::pow(static_cast<double>(x.data<float>()[i]), e));
    expect_near_all(run1(make_node("Pow", 15), {x, ex}, {false, true}), want, 1e-6, 0,
                    "Pow const " + std::to_string(e));
    expect_near_all(run1(make_node("Pow", 15), {x, ex}), want, 1e-6, 0, "Pow " + std::to_string(e));
  }
  tensor base = make<int64_t>(dtype::i64, {5}, {2, -3, 5, 1, -1});
  tensor ie = make<int64_t>(dtype::i64, {5}, {10, 3, -1, -5, -3});
  expect_near_all(run1(make_node("Pow", 15), {base, ie}), {1024, -27, 0, 1, -1}, 0, 0, "Pow i64");
  tensor fe = tensor::from_vector<float>({0.5f}, {1});
  tensor ib = make<int32_t>(dtype::i32, {3}, {4, 9, 10});
  expect_near_all(run1(make_node("Pow", 15), {ib, fe}), {2, 3, 3}, 0, 0, "Pow i32^f32");
  tensor fb = tensor::from_vector<float>({1.5f, -2.0f}, {2});
  tensor e32 = make<int32_t>(dtype::i32, {2}, {2, 3});
  expect_near_all(run1(make_node("Pow", 15), {fb, e32}), {2.25, -8}, 0, 0, "Pow f32^i32");
}

TEST(CpuBinary, PReluBroadcastsSlope) {
  tensor x = random_tensor(dtype::f32, {2, 3, 4, 5});
  tensor slope = random_tensor(dtype::f32, {3, 1, 1});
  tensor y = run1(make_node("PRelu", 16), {x, slope});
  std::vector<double> want;
  for (int64_t i = 0; i < x.elements(); ++i) {
    const double v = x.data<float>()[i];
    want.push_back(v < 0 ? v * slope.data<float>()[broadcast_source(x.shape(), {3, 1, 1}, i)] : v);
  }
  expect_near_all(y, want, 1e-6, 0, "PRelu");
  auto bad = run_op(make_node("PRelu", 16), {slope, x});  // slope larger than X
  EXPECT_FALSE(bad.has_value());
}

TEST(CpuBinary, VariadicOps) {
  tensor a = random_tensor(dtype::f32, {3, 1});
  tensor b = random_tensor(dtype::f32, {1, 4});
  tensor c = random_tensor(dtype::f32, {4});
  const shape_t out{3, 4};
  auto at = [&](const tensor& t, int64_t i) {
    return static_cast<double>(t.data<float>()[broadcast_source(out, t.shape(), i)]);
  };
  std::vector<double> sum, mean, mx, mn;
  for (int64_t i = 0; i < 12; ++i) {
    const double x = at(a, i), y = at(b, i), z = at(c, i);
    sum.push_back(x + y + z);
    mean.push_back((x + y + z) / 3);
    mx.push_back(std::max({x, y, z}));
    mn.push_back(std::min({x, y, z}));
  }
  expect_near_all(run1(make_node("Sum", 13), {a, b, c}), sum, 1e-6, 1e-7, "Sum");
  expect_near_all(run1(make_node("Mean", 13), {a, b, c}), mean, 1e-6, 1e-7, "Mean");
  expect_near_all(run1(make_node("Max", 13), {a, b, c}), mx, 0, 0, "Max");
  expect_near_all(run1(make_node("Min", 13), {a, b, c}), mn, 0, 0, "Min");
  expect_near_all(run1(make_node("Sum", 13), {a}),
                  {a.data<float>()[0], a.data<float>()[1], a.data<float>()[2]}, 0, 0, "Sum of one");
  tensor n1 = tensor::from_vector<float>({1.0f, NAN, 3.0f}, {3});
  tensor n2 = tensor::from_vector<float>({NAN, 2.0f, 1.0f}, {3});
  expect_near_all(run1(make_node("Max", 13), {n1, n2}), {nan_v, nan_v, 3}, 0, 0, "Max NaN");
  expect_near_all(run1(make_node("Min", 13), {n1, n2}), {nan_v, nan_v, 1}, 0, 0, "Min NaN");
  tensor i1 = make<int32_t>(dtype::i32, {2}, {5, -2});
  tensor i2 = make<int32_t>(dtype::i32, {1}, {1});
  expect_near_all(run1(make_node("Max", 13), {i1, i2}), {5, 1}, 0, 0, "Max i32");
}

TEST(CpuBinary, WhereBroadcastsAnyDtype) {
  tensor cond = random_tensor(dtype::boolean, {2, 1, 4});
  tensor x = random_tensor(dtype::f32, {3, 1});
  tensor y = random_tensor(dtype::f32, {2, 3, 4});
  tensor out = run1(make_node("Where", 16), {cond, x, y});
  const shape_t o{2, 3, 4};
  ASSERT_EQ(out.shape(), o);
  std::vector<double> want;
  for (int64_t i = 0; i < 24; ++i) {
    want.push_back(cond.data<uint8_t>()[broadcast_source(o, cond.shape(), i)]
                       ? x.data<float>()[broadcast_source(o, x.shape(), i)]
                       : y.data<float>()[i]);
  }
  expect_near_all(out, want, 0, 0, "Where f32");
  tensor xi = make<int64_t>(dtype::i64, {2}, {std::numeric_limits<int64_t>::max(), 7});
  tensor yi = make<int64_t>(dtype::i64, {2}, {-1, -2});
  tensor c2 = make<uint8_t>(dtype::boolean, {2}, {1, 0});
  tensor r = run1(make_node("Where", 16), {c2, xi, yi});
  EXPECT_EQ(r.data<int64_t>()[0], std::numeric_limits<int64_t>::max());
  EXPECT_EQ(r.data<int64_t>()[1], -2);
}

TEST(CpuBinary, SchemaRejectsBadShapesAndTypes) {
  auto r =
      run_op(make_node("Add"), {random_tensor(dtype::f32, {3, 4}), random_tensor(dtype::f32, {3})});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), error_code::invalid_model);
  auto t =
      run_op(make_node("Add"), {random_tensor(dtype::f32, {3}), random_tensor(dtype::f64, {3})});
  ASSERT_FALSE(t.has_value());
}

/// float16 kernels compute in float: results equal the float result rounded to float16.
TEST(CpuBinary, Float16ComputesThroughFloat) {
  tensor a = random_tensor(dtype::f16, {3, 4}, -4, 4);
  tensor b = random_tensor(dtype::f16, {4}, 0.5, 4);
  const shape_t out{3, 4};
  auto h = [](const tensor& t, int64_t i) { return half_to_float(t.data<uint16_t>()[i]); };
  auto round16 = [](float v) { return static_cast<double>(half_to_float(float_to_half(v))); };
  std::vector<double> add, mod, mx, lt;
  for (int64_t i = 0; i < 12; ++i) {
    const float x = h(a, i), y = h(b, broadcast_source(out, {4}, i));
    add.push_back(round16(x + y));
    float r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    mod.push_back(round16(r));
    mx.push_back(std::max(x, y));
    lt.push_back(x < y);
  }
  tensor s = run1(make_node("Add"), {a, b});
  EXPECT_EQ(s.type(), dtype::f16);
  expect_near_all(s, add, 0, 0, "Add f16");
  expect_near_all(run1(make_node("Mod", 13), {a, b}), mod, 0, 0, "Mod f16");
  expect_near_all(run1(make_node("Max", 13), {a, b}), mx, 0, 0, "Max f16");
  expect_near_all(run1(make_node("Less", 13), {a, b}), lt, 0, 0, "Less f16");
  std::vector<double> sq;
  for (int64_t i = 0; i < 4; ++i) sq.push_back(round16(std::sqrt(h(b, i))));
  expect_near_all(run1(make_node("Sqrt"), {b}), sq, 0, 0, "Sqrt f16");
}

// ---- Clip, Cast ----------------------------------------------------------------------------

TEST(CpuClip, AllOpsetForms) {
  tensor x = random_tensor(dtype::f32, {4, 8}, -3, 3);
  auto want = [&](double lo, double hi) {
    std::vector<double> w;
    for (int64_t i = 0; i < x.elements(); ++i)
      w.push_back(std::min(std::max<double>(x.data<float>()[i], lo), hi));
    return w;
  };
  op_node old = with_float(with_float(make_node("Clip", 6), "min", -1.0f), "max", 0.5f);
  expect_near_all(run1(old, {x}), want(-1, 0.5), 0, 0, "Clip opset 6");
  expect_near_all(run1(with_float(make_node("Clip", 6), "max", 0.0f), {x}), want(-inf, 0), 0, 0,
                  "Clip 6 max only");
  tensor lo = tensor::from_vector<float>({-0.5f}, {});
  tensor hi = tensor::from_vector<float>({1.0f}, {});
  expect_near_all(run1(make_node("Clip", 13), {x, lo, hi}, {false, true, true}), want(-0.5, 1), 0,
                  0, "Clip const");
  expect_near_all(run1(make_node("Clip", 13), {x, lo, hi}), want(-0.5, 1), 0, 0,
                  "Clip runtime bounds");
  expect_near_all(run1(make_node("Clip", 13), {x, tensor(), hi}), want(-inf, 1), 0, 0,
                  "Clip absent min");
  expect_near_all(run1(make_node("Clip", 13), {x, lo}), want(-0.5, inf), 0, 0, "Clip min only");
  expect_near_all(run1(make_node("Clip", 13), {x, hi, lo}), want(1, -0.5), 0, 0,
                  "Clip min > max gives max");
  tensor xi = make<int8_t>(dtype::i8, {4}, {-128, -5, 5, 127});
  tensor li = make<int8_t>(dtype::i8, {}, {-6});
  expect_near_all(run1(make_node("Clip", 13), {xi, li}), {-6, -5, 5, 127}, 0, 0, "Clip int8");
}

template <class T>
tensor typed(dtype t, std::vector<double> values) {
  std::vector<T> v;
  for (double d : values) v.push_back(static_cast<T>(d));
  return make<T>(t, {static_cast<int64_t>(v.size())}, v);
}

op_node cast_to(dtype t) {
  op_node n = make_node("Cast", 13);
  n.attrs.set("to", static_cast<int64_t>(dtype_to_onnx(t)));
  return n;
}

TEST(CpuCast, FloatToIntTruncatesAndBoolIsNonzero) {
  tensor x =
      tensor::from_vector<float>({2.9f, -2.9f, 0.0f, 0.4f, -0.0f, 100.5f, 65536.0f + 300.0f}, {7});
  expect_near_all(run1(cast_to(dtype::i32), {x}), {2, -2, 0, 0, 0, 100, 65836}, 0, 0, "f32->i32");
  expect_near_all(run1(cast_to(dtype::i64), {x}), {2, -2, 0, 0, 0, 100, 65836}, 0, 0, "f32->i64");
  expect_near_all(run1(cast_to(dtype::boolean), {x}), {1, 1, 0, 1, 0, 1, 1}, 0, 0, "f32->bool");
  expect_near_all(run1(cast_to(dtype::u8), {x}), {2, 254, 0, 0, 0, 100, 44}, 0, 0, "f32->u8 wraps");
  tensor odd = tensor::from_vector<float>({NAN, INFINITY, -1e30f}, {3});
  tensor r = run1(cast_to(dtype::i32), {odd});  // undefined in ONNX: only must not crash
  EXPECT_EQ(r.elements(), 3);
  tensor big = tensor::from_vector<double>({1.8446744073709552e19 - 4096.0, 9.3e18, -1.0}, {3});
  tensor u = run1(cast_to(dtype::u64), {big});
  EXPECT_EQ(u.data<uint64_t>()[0], 18446744073709547520ull);
  EXPECT_EQ(u.data<uint64_t>()[1], 9300000000000000000ull);
  EXPECT_EQ(u.data<uint64_t>()[2], std::numeric_limits<uint64_t>::max());
}

TEST(CpuCast, EveryPairRoundTripsSmallIntegers) {
  const std::vector<double> values = {0, 1, 2, 3, 7, 100, 1, 0};
  const dtype all[] = {dtype::f32, dtype::f64, dtype::f16,    dtype::bf16, dtype::i8,
                       dtype::u8,  dtype::i16, dtype::u16,    dtype::i32,  dtype::u32,
                       dtype::i64, dtype::u64, dtype::boolean};
  auto make_typed = [&](dtype t) -> tensor {
    switch (t) {
      case dtype::f32:
        return typed<float>(t, values);
      case dtype::f64:
        return typed<double>(t, values);
      case dtype::f16: {
        std::vector<uint16_t> v;
        for (double d : values) v.push_back(float_to_half(static_cast<float>(d)));
        return make<uint16_t>(t, {8}, v);
      }
      case dtype::bf16: {
        std::vector<uint16_t> v;
        for (double d : values) v.push_back(float_to_bfloat16(static_cast<float>(d)));
        return make<uint16_t>(t, {8}, v);
      }
      case dtype::i8:
        return typed<int8_t>(t, values);
      case dtype::u8:
        return typed<uint8_t>(t, values);
      case dtype::i16:
        return typed<int16_t>(t, values);
      case dtype::u16:
        return typed<uint16_t>(t, values);
      case dtype::i32:
        return typed<int32_t>(t, values);
      case dtype::u32:
        return typed<uint32_t>(t, values);
      case dtype::i64:
        return typed<int64_t>(t, values);
      case dtype::u64:
        return typed<uint64_t>(t, values);
      default: {
        std::vector<uint8_t> v;
        for (double d : values) v.push_back(d != 0);
        return make<uint8_t>(t, {8}, v);
      }
    }
  };
  for (dtype from : all) {
    tensor x = make_typed(from);
    for (dtype to : all) {
      tensor y = run1(cast_to(to), {x});
      ASSERT_EQ(y.type(), to);
      std::vector<double> want;
      for (int64_t i = 0; i < 8; ++i) {
        const double v = x.value_as_double(i);
        want.push_back(to == dtype::boolean ? (v != 0) : v);
      }
      expect_near_all(y, want, 0, 0,
                      std::string(dtype_name(from)) + "->" + std::string(dtype_name(to)));
      tensor like = tensor::allocate(to, {1});
      tensor z = run1(make_node("CastLike", 15), {x, like});
      ASSERT_EQ(z.type(), to);
      expect_near_all(z, want, 0, 0, "CastLike");
    }
  }
}

TEST(CpuCast, HalfRoundsToNearestEven) {
  // 1e-5 and 3e-8 become float16 subnormals (values from numpy).
  tensor x = tensor::from_vector<float>(
      {1.0f + 1.0f / 4096, 65520.0f, 1e-8f, -3.140625f, 1e-5f, 3e-8f}, {6});
  tensor h = run1(cast_to(dtype::f16), {x});
  expect_near_all(h, {1.0, inf, 0.0, -3.140625, 1.0013580322265625e-05, 5.960464477539063e-08}, 0,
                  0, "f32->f16");
  tensor b = run1(cast_to(dtype::bf16), {x});
  expect_near_all(b, {1.0, 65536.0, 1e-8, -3.140625, 1e-5, 3e-8}, 4e-3, 0, "f32->bf16");
}

}  // namespace
}  // namespace troupe::testing
