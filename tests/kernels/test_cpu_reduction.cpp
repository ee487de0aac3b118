// CPU reductions, ArgMax/ArgMin, TopK, Softmax/LogSoftmax/Hardmax, LayerNormalization and CumSum
// against references written here in double, over random shapes and axis sets and every opset
// form of the axes/k/axis parameters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

void expect_near_all(const tensor& got, const std::vector<double>& want, double rtol, double atol,
                     const std::string& what) {
  ASSERT_EQ(got.elements(), static_cast<int64_t>(want.size())) << what;
  int failures = 0;
  for (int64_t i = 0; i < got.elements() && failures < 5; ++i) {
    const double g = got.value_as_double(i), w = want[static_cast<size_t>(i)];
    const bool ok = std::isnan(w)
                        ? std::isnan(g)
                        : (std::isinf(w) ? g == w : std::fabs(g - w) <= atol + rtol * std::fabs(w));
    if (!ok) {
      ADD_FAILURE() << what << " element " << i << ": got " << g << ", want " << w;
      ++failures;
    }
  }
}

std::vector<tensor> run_n(const op_node& node, const std::vector<tensor>& inputs,
                          size_t outputs = 1, std::vector<bool> constant = {}) {
  auto out = run_op(node, inputs, outputs, kernels::backend::cpu, std::move(constant));
  EXPECT_TRUE(out.has_value()) << (out.has_value() ? "" : out.error().to_string());
  return out.has_value() ? *out : std::vector<tensor>{};
}

tensor i64s(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return tensor::from_vector<int64_t>(v, {n});
}

std::vector<int64_t> strides_of(const shape_t& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t k = s.size(); k-- > 1;) st[k - 1] = st[k] * s[k];
  return st;
}

/// Reference reduction in double: groups input elements by their kept coordinates.
struct reference_reduce {
  shape_t out_shape;                        // with keepdims
  std::vector<std::vector<double>> groups;  // per output element (keepdims order)
};

reference_reduce group_by(const tensor& x, const std::vector<bool>& reduced) {
  reference_reduce r;
  const shape_t& s = x.shape();
  for (size_t d = 0; d < s.size(); ++d) r.out_shape.push_back(reduced[d] ? 1 : s[d]);
  const int64_t outs = element_count(r.out_shape);
  r.groups.resize(static_cast<size_t>(outs));
  const auto out_strides = strides_of(r.out_shape);
  for (int64_t flat = 0; flat < x.elements(); ++flat) {
    int64_t rest = flat, o = 0;
    for (size_t k = s.size(); k-- > 0;) {
      const int64_t idx = rest % s[k];
      rest /= s[k];
      if (!reduced[k]) o += idx * out_strides[k];
    }
    r.groups[static_cast<size_t>(o)].push_back(x.value_as_double(flat));
  }
  return r;
}

struct reduce_case {
  const char* op;
  std::function<double(const std::vector<double>&)> ref;
};

const std::vector<reduce_case>& reduce_cases() {
  static const std::vector<reduce_case> cases = {
      {"ReduceSum", [](const auto& v) { return std::accumulate(v.begin(), v.end(), 0.0); }},
      {"ReduceMean",
       [](const auto& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }},
      {"ReduceMax", [](const auto& v) { return *std::max_element(v.begin(), v.end()); }},
      {"ReduceMin", [](const auto& v) { return *std::min_element(v.begin(), v.end()); }},
      {"ReduceProd",
       [](const auto& v) {
         double p = 1;
         for (double x : v) p *= x;
         return p;
       }},
      {"ReduceL1",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += std::fabs(x);
         return s;
       }},
      {"ReduceL2",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += x * x;
         return std::sqrt(s);
       }},
      {"ReduceSumSquare",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += x * x;
         return s;
       }},
      {"ReduceLogSum",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += x;
         return std::log(s);
       }},
      {"ReduceLogSumExp",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += std::exp(x);
         return std::log(s);
       }},
  };
  return cases;
}

/// Every subset of axes of a rank-4 tensor, through the attribute (opset 13) and the input
/// (opset 18) forms, with and without keepdims.
TEST(CpuReduce, EveryAxesSubsetMatchesReference) {
  const shape_t shape{3, 4, 5, 6};
  for (const auto& rc : reduce_cases()) {
    const bool positive = std::string(rc.op) == "ReduceLogSum";
    tensor x = random_tensor(dtype::f32, shape, positive ? 0.1 : 0.5, positive ? 1.0 : 1.2);
    for (int mask = 0; mask < 16; ++mask) {
      std::vector<int64_t> axes;
      std::vector<bool> reduced(4, false);
      for (int d = 0; d < 4; ++d) {
        if (mask & (1 << d)) {
          axes.push_back(d - (d % 2 ? 4 : 0));  // some negative axes
          reduced[static_cast<size_t>(d)] = true;
        }
      }
      if (axes.empty()) reduced.assign(4, true);  // no axes: reduce everything
      auto ref = group_by(x, reduced);
      std::vector<double> want;
      for (const auto& g : ref.groups) want.push_back(rc.ref(g));
      for (int keepdims = 0; keepdims <= 1; ++keepdims) {
        shape_t want_shape;
        for (size_t d = 0; d < 4; ++d) {
          if (!reduced[d])
            want_shape.push_back(shape[d]);
          else if (keepdims)
            want_shape.push_back(1);
        }
        const std::string what = std::string(rc.op) + " mask " + std::to_string(mask) +
                                 " keepdims " + std::to_string(keepdims);
        // Attribute form (ReduceSum: opset 11; the others: 13).
        op_node attr_form = make_node(rc.op, std::string(rc.op) == "ReduceSum" ? 11 : 13);
        if (!axes.empty()) attr_form.attrs.set("axes", axes);
        attr_form.attrs.set("keepdims", int64_t{keepdims});
        auto y = run_n(attr_form, {x});
        ASSERT_EQ(y.size(), 1u) << what;
        EXPECT_EQ(y[0].shape(), want_shape) << what;
        expect_near_all(y[0], want, 2e-5, 1e-6, what + " attr");
        // Input form (opset 18).
        op_node input_form = make_node(rc.op, 18);
        input_form.attrs.set("keepdims", int64_t{keepdims});
        std::vector<tensor> inputs{x};
        if (!axes.empty()) inputs.push_back(i64s(axes));
        auto z = run_n(input_form, inputs);
        ASSERT_EQ(z.size(), 1u) << what;
        EXPECT_EQ(z[0].shape(), want_shape) << what;
        expect_near_all(z[0], want, 2e-5, 1e-6, what + " input");
      }
    }
  }
}

TEST(CpuReduce, LargeReductionsSplitAcrossThreads) {
  tensor x = random_tensor(dtype::f32, {64, 1000, 3});
  for (std::vector<int64_t> axes : {std::vector<int64_t>{1}, {0, 2}, {2}, {0}}) {
    std::vector<bool> reduced(3, false);
    for (int64_t a : axes) reduced[static_cast<size_t>(a)] = true;
    auto ref = group_by(x, reduced);
    std::vector<double> want;
    for (const auto& g : ref.groups) want.push_back(std::accumulate(g.begin(), g.end(), 0.0));
    op_node n = make_node("ReduceSum", 13);
    auto y = run_n(n, {x, i64s(axes)});
    ASSERT_EQ(y.size(), 1u);
    expect_near_all(y[0], want, 1e-4, 1e-4, "ReduceSum large");
  }
}

TEST(CpuReduce, NoopEmptyAxesIntegersAndEdgeCases) {
  tensor x = random_tensor(dtype::f32, {2, 3});
  op_node noop = make_node("ReduceSum", 13);
  noop.attrs.set("noop_with_empty_axes", int64_t{1});
  auto y = run_n(noop, {x});
  ASSERT_EQ(y.size(), 1u);
  EXPECT_EQ(y[0].shape(), x.shape());
  expect_near_all(y[0],
                  {x.data<float>()[0], x.data<float>()[1], x.data<float>()[2], x.data<float>()[3],
                   x.data<float>()[4], x.data<float>()[5]},
                  0, 0, "noop");
  auto e =
      run_n(noop, {x, tensor::from_vector<int64_t>({}, {0})});  // empty axes input: also a noop
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].shape(), x.shape());

  tensor xi = tensor::from_vector<int32_t>({1, -2, 3, 4, 5, -6}, {2, 3});
  op_node sum = make_node("ReduceSum", 13);
  sum.attrs.set("keepdims", int64_t{0});
  auto s = run_n(sum, {xi, i64s({1})});
  ASSERT_EQ(s.size(), 1u);
  expect_near_all(s[0], {2, 3}, 0, 0, "ReduceSum i32");
  op_node mx = make_node("ReduceMax", 13);
  mx.attrs.set("axes", std::vector<int64_t>{0});
  auto m = run_n(mx, {xi});
  ASSERT_EQ(m.size(), 1u);
  expect_near_all(m[0], {4, 5, 3}, 0, 0, "ReduceMax i32");
  op_node mean = make_node("ReduceMean", 13);
  auto mn = run_n(mean, {xi});
  ASSERT_EQ(mn.size(), 1u);
  expect_near_all(mn[0], {0}, 0, 0, "ReduceMean i32 truncates");

  // A reduced axis of length 0: sums are 0, the max is -inf.
  tensor empty = tensor::allocate(dtype::f32, {2, 0, 3});
  op_node se = make_node("ReduceSum", 13);
  se.attrs.set("keepdims", int64_t{0});
  auto z = run_n(se, {empty, i64s({1})});
  ASSERT_EQ(z.size(), 1u);
  expect_near_all(z[0], {0, 0, 0, 0, 0, 0}, 0, 0, "sum of nothing");
  op_node me = make_node("ReduceMax", 13);
  me.attrs.set("axes", std::vector<int64_t>{1});
  auto zm = run_n(me, {empty});
  ASSERT_EQ(zm.size(), 1u);
  EXPECT_EQ(zm[0].value_as_double(0), -std::numeric_limits<double>::infinity());

  // LogSumExp stays finite for large inputs (max subtraction).
  tensor big = tensor::from_vector<float>({1000.0f, 1000.0f, -1000.0f}, {3});
  auto l = run_n(make_node("ReduceLogSumExp", 13), {big});
  ASSERT_EQ(l.size(), 1u);
  expect_near_all(l[0], {1000.0 + std::log(2.0)}, 1e-6, 0, "LogSumExp large");

  // Errors: axis out of range, repeated axis, axes input not known at plan time.
  op_node bad = make_node("ReduceMean", 13);
  bad.attrs.set("axes", std::vector<int64_t>{2});
  EXPECT_FALSE(run_op(bad, {x}).has_value());
  op_node rep = make_node("ReduceMean", 13);
  rep.attrs.set("axes", std::vector<int64_t>{1, -1});
  EXPECT_FALSE(run_op(rep, {x}).has_value());
  // The harness passes every input's value to shape inference: the scalar-rank-0 reduce works.
  tensor scalar = tensor::from_vector<float>({2.5f}, {});
  auto sc = run_n(make_node("ReduceL2", 13), {scalar});
  ASSERT_EQ(sc.size(), 1u);
  EXPECT_TRUE(sc[0].shape().empty());
  expect_near_all(sc[0], {2.5}, 1e-7, 0, "ReduceL2 scalar");
}

TEST(CpuArgReduce, MatchesReferenceWithTiesAndSelectLast) {
  // Integers in a small range make ties common.
  tensor x = random_tensor(dtype::i64, {3, 5, 4}, -2, 2);
  for (const char* op : {"ArgMax", "ArgMin"}) {
    const bool is_max = std::string(op) == "ArgMax";
    for (int64_t axis : {0, 1, 2, -1}) {
      for (int last = 0; last <= 1; ++last) {
        for (int keepdims = 0; keepdims <= 1; ++keepdims) {
          op_node n = make_node(op, 13);
          n.attrs.set("axis", axis);
          n.attrs.set("select_last_index", int64_t{last});
          n.attrs.set("keepdims", int64_t{keepdims});
          auto y = run_n(n, {x});
          ASSERT_EQ(y.size(), 1u);
          ASSERT_EQ(y[0].type(), dtype::i64);
          const int64_t a = axis < 0 ? axis + 3 : axis;
          const shape_t& s = x.shape();
          const auto st = strides_of(s);
          std::vector<double> want;
          for (int64_t i0 = 0; i0 < (a == 0 ? 1 : s[0]); ++i0) {
            for (int64_t i1 = 0; i1 < (a == 1 ? 1 : s[1]); ++i1) {
              for (int64_t i2 = 0; i2 < (a == 2 ? 1 : s[2]); ++i2) {
                int64_t best = 0;
                double best_v = 0;
                for (int64_t j = 0; j < s[static_cast<size_t>(a)]; ++j) {
                  int64_t idx[3] = {i0, i1, i2};
                  idx[a] = j;
                  const double v =
                      x.value_as_double(idx[0] * st[0] + idx[1] * st[1] + idx[2] * st[2]);
                  const bool better = j == 0 || (is_max ? (last ? v >= best_v : v > best_v)
                                                        : (last ? v <= best_v : v < best_v));
                  if (better) {
                    best = j;
                    best_v = v;
                  }
                }
                want.push_back(static_cast<double>(best));
              }
            }
          }
          shape_t want_shape = s;
          if (keepdims)
            want_shape[static_cast<size_t>(a)] = 1;
          else
            want_shape.erase(want_shape.begin() + a);
          EXPECT_EQ(y[0].shape(), want_shape);
          expect_near_all(
              y[0], want, 0, 0,
              std::string(op) + " axis " + std::to_string(axis) + " last " + std::to_string(last));
        }
      }
    }
  }
}

TEST(CpuTopK, LargestSmallestTiesAndOpsetForms) {
  tensor x = random_tensor(dtype::i32, {4, 9, 3}, -3, 3);  // many ties
  for (int64_t axis : {1, -1, 0}) {
    for (int largest = 0; largest <= 1; ++largest) {
      const int64_t a = axis < 0 ? axis + 3 : axis;
      const int64_t k = std::min<int64_t>(3, x.shape()[static_cast<size_t>(a)]);
      op_node n = make_node("TopK", 11);
      n.attrs.set("axis", axis);
      n.attrs.set("largest", int64_t{largest});
      auto y = run_n(n, {x, i64s({k})}, 2);
      ASSERT_EQ(y.size(), 2u);
      shape_t out_shape = x.shape();
      out_shape[static_cast<size_t>(a)] = k;
      ASSERT_EQ(y[0].shape(), out_shape);
      ASSERT_EQ(y[1].shape(), out_shape);
      ASSERT_EQ(y[1].type(), dtype::i64);
      const auto st = strides_of(x.shape());
      const auto ost = strides_of(out_shape);
      const int64_t n_axis = x.shape()[static_cast<size_t>(a)];
      for (int64_t flat = 0; flat < element_count(out_shape); ++flat) {
        int64_t idx[3], rest = flat;
        for (int d = 2; d >= 0; --d) {
          idx[d] = rest % out_shape[static_cast<size_t>(d)];
          rest /= out_shape[static_cast<size_t>(d)];
        }
        // Reference: the slice sorted by (value desc/asc, index asc).
        std::vector<std::pair<double, int64_t>> slice;
        for (int64_t j = 0; j < n_axis; ++j) {
          int64_t src[3] = {idx[0], idx[1], idx[2]};
          src[a] = j;
          slice.emplace_back(x.value_as_double(src[0] * st[0] + src[1] * st[1] + src[2] * st[2]),
                             j);
        }
        std::stable_sort(slice.begin(), slice.end(), [&](const auto& p, const auto& q) {
          return largest ? p.first > q.first : p.first < q.first;
        });
        const auto& want = slice[static_cast<size_t>(idx[a])];
        const int64_t o = idx[0] * ost[0] + idx[1] * ost[1] + idx[2] * ost[2];
        ASSERT_EQ(y[0].value_as_double(o), want.first) << "axis " << axis << " largest " << largest;
        ASSERT_EQ(y[1].data<int64_t>()[o], want.second)
            << "axis " << axis << " largest " << largest;
      }
    }
  }
  // Opset 1: k is an attribute.
  tensor f = tensor::from_vector<float>({1.0f, 5.0f, 3.0f, NAN, 5.0f}, {5});
  op_node old = make_node("TopK", 1);
  old.attrs.set("k", int64_t{3});
  auto r = run_n(old, {f}, 2);
  ASSERT_EQ(r.size(), 2u);
  // NaN ranks above every number; equal values keep index order.
  EXPECT_TRUE(std::isnan(r[0].data<float>()[0]));
  expect_near_all(r[1], {3, 1, 4}, 0, 0, "TopK NaN and ties");
  op_node too_many = make_node("TopK", 11);
  EXPECT_FALSE(run_op(too_many, {f, i64s({6})}, 2).has_value());
}

/// Softmax family reference over rows of `n` elements `inner` apart.
std::vector<double> softmax_ref(const tensor& x, int64_t outer, int64_t n, int64_t inner,
                                const std::string& op) {
  std::vector<double> y(static_cast<size_t>(x.elements()));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t a) { return (o * n + a) * inner + i; };
      double m = -INFINITY;
      int64_t best = 0;
      for (int64_t a = 0; a < n; ++a) {
        const double v = x.value_as_double(at(a));
        if (v > m) {
          m = v;
          best = a;
        }
      }
      double s = 0;
      for (int64_t a = 0; a < n; ++a) s += std::exp(x.value_as_double(at(a)) - m);
      for (int64_t a = 0; a < n; ++a) {
        const double v = x.value_as_double(at(a));
        double r = std::exp(v - m) / s;
        if (op == "LogSoftmax") r = v - m - std::log(s);
        if (op == "Hardmax") r = a == best ? 1 : 0;
        y[static_cast<size_t>(at(a))] = r;
      }
    }
  }
  return y;
}

TEST(CpuSoftmax, AxesAndOpsetCoercion) {
  const shape_t s{3, 4, 70};
  tensor x = random_tensor(dtype::f32, s, -10, 10);
  for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"}) {
    for (int64_t axis : {0, 1, 2, -1, -2}) {
      const int64_t a = axis < 0 ? axis + 3 : axis;
      // Opset 13: along one axis.
      int64_t outer = 1, inner = 1;
      for (int64_t d = 0; d < a; ++d) outer *= s[static_cast<size_t>(d)];
      for (int64_t d = a + 1; d < 3; ++d) inner *= s[static_cast<size_t>(d)];
      op_node n13 = make_node(op, 13);
      n13.attrs.set("axis", axis);
      auto y = run_n(n13, {x});
      ASSERT_EQ(y.size(), 1u);
      expect_near_all(y[0], softmax_ref(x, outer, s[static_cast<size_t>(a)], inner, op), 1e-5, 1e-6,
                      std::string(op) + " 13 axis " + std::to_string(axis));
      // Opset 11: coerced to 2-D at the axis.
      op_node n11 = make_node(op, 11);
      n11.attrs.set("axis", axis);
      auto z = run_n(n11, {x});
      ASSERT_EQ(z.size(), 1u);
      expect_near_all(z[0], softmax_ref(x, outer, x.elements() / outer, 1, op), 1e-5, 1e-6,
                      std::string(op) + " 11 axis " + std::to_string(axis));
    }
  }
  // Defaults: axis 1 before opset 13, -1 from 13.
  auto d11 = run_n(make_node("Softmax", 11), {x});
  ASSERT_EQ(d11.size(), 1u);
  expect_near_all(d11[0], softmax_ref(x, 3, 280, 1, "Softmax"), 1e-5, 1e-6, "Softmax 11 default");
  auto d13 = run_n(make_node("Softmax", 13), {x});
  ASSERT_EQ(d13.size(), 1u);
  expect_near_all(d13[0], softmax_ref(x, 12, 70, 1, "Softmax"), 1e-5, 1e-6, "Softmax 13 default");
  // Large values do not overflow.
  tensor big = tensor::from_vector<float>({1000.0f, 999.0f, -1000.0f}, {1, 3});
  auto b = run_n(make_node("Softmax", 13), {big});
  ASSERT_EQ(b.size(), 1u);
  const double e1 = std::exp(-1.0);
  expect_near_all(b[0], {1 / (1 + e1), e1 / (1 + e1), 0}, 1e-6, 1e-30, "Softmax large");
  auto lb = run_n(make_node("LogSoftmax", 13), {big});
  ASSERT_EQ(lb.size(), 1u);
  expect_near_all(lb[0], {-std::log1p(e1), -1 - std::log1p(e1), -2000 - std::log1p(e1)}, 1e-6, 1e-6,
                  "LogSoftmax large");
}

TEST(CpuSoftmax, EmptyAxes) {
  for (shape_t s : {shape_t{2, 0, 3}, shape_t{0, 4}, shape_t{3, 0}}) {
    for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"}) {
      op_node n = make_node(op, 13);
      n.attrs.set("axis", int64_t{1});
      auto y = run_n(n, {tensor::allocate(dtype::f32, s)});
      ASSERT_EQ(y.size(), 1u);
      EXPECT_EQ(y[0].shape(), s);
    }
  }
}

TEST(CpuSoftmax, LongRowsAcrossThreads) {
  tensor x = random_tensor(dtype::f32, {300, 1000}, -5, 5);
  auto y = run_n(make_node("Softmax", 13), {x});
  ASSERT_EQ(y.size(), 1u);
  expect_near_all(y[0], softmax_ref(x, 300, 1000, 1, "Softmax"), 1e-5, 1e-9, "Softmax 300x1000");
}

TEST(CpuLayerNorm, AxesStatsAndBroadcastScale) {
  const shape_t s{2, 3, 8};
  tensor x = random_tensor(dtype::f32, s, -2, 3);
  for (int64_t axis : {-1, 1, 0, -2}) {
    const int64_t a = axis < 0 ? axis + 3 : axis;
    const shape_t norm(s.begin() + a, s.end());
    tensor scale = random_tensor(dtype::f32, norm);
    tensor bias = random_tensor(dtype::f32, norm);
    op_node n = make_node("LayerNormalization", 17);
    n.attrs.set("axis", axis);
    n.attrs.set("epsilon", 1e-3f);
    auto y = run_n(n, {x, scale, bias}, 3);
    ASSERT_EQ(y.size(), 3u);
    const int64_t rows = element_count(shape_t(s.begin(), s.begin() + a)),
                  len = element_count(norm);
    std::vector<double> want, mean_w, inv_w;
    for (int64_t r = 0; r < rows; ++r) {
      double m = 0, v = 0;
      for (int64_t i = 0; i < len; ++i) m += x.data<float>()[r * len + i];
      m /= len;
      for (int64_t i = 0; i < len; ++i) v += std::pow(x.data<float>()[r * len + i] - m, 2);
      v /= len;
      const double inv = 1 / std::sqrt(v + 1e-3);
      for (int64_t i = 0; i < len; ++i) {
        want.push_back((x.data<float>()[r * len + i] - m) * inv * scale.data<float>()[i] +
                       bias.data<float>()[i]);
      }
      mean_w.push_back(m);
      inv_w.push_back(inv);
    }
    expect_near_all(y[0], want, 1e-5, 1e-5, "LayerNorm Y axis " + std::to_string(axis));
    shape_t stat_shape = s;
    for (size_t d = static_cast<size_t>(a); d < 3; ++d) stat_shape[d] = 1;
    EXPECT_EQ(y[1].shape(), stat_shape);
    EXPECT_EQ(y[1].type(), dtype::f32);
    expect_near_all(y[1], mean_w, 1e-5, 1e-6, "LayerNorm Mean");
    expect_near_all(y[2], inv_w, 1e-5, 1e-6, "LayerNorm InvStdDev");
  }
  // Scale broadcast over the normalised dims and no bias.
  tensor scale = random_tensor(dtype::f32, {1, 8});
  op_node n = make_node("LayerNormalization", 17);
  n.attrs.set("axis", int64_t{1});
  auto y = run_n(n, {x, scale});
  ASSERT_EQ(y.size(), 1u);
  std::vector<double> want;
  for (int64_t r = 0; r < 2; ++r) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < 24; ++i) m += x.data<float>()[r * 24 + i];
    m /= 24;
    for (int64_t i = 0; i < 24; ++i) v += std::pow(x.data<float>()[r * 24 + i] - m, 2);
    v /= 24;
    for (int64_t i = 0; i < 24; ++i) {
      want.push_back((x.data<float>()[r * 24 + i] - m) / std::sqrt(v + 1e-5) *
                     scale.data<float>()[i % 8]);
    }
  }
  expect_near_all(y[0], want, 1e-5, 1e-5, "LayerNorm broadcast scale");
  tensor wrong = random_tensor(dtype::f32, {5});
  EXPECT_FALSE(run_op(make_node("LayerNormalization", 17), {x, wrong}).has_value());
}

TEST(CpuCumSum, AxesExclusiveReverse) {
  tensor x = random_tensor(dtype::f32, {3, 4, 5});
  for (int64_t axis : {0, 1, 2, -1}) {
    const int64_t a = axis < 0 ? axis + 3 : axis;
    for (int exclusive = 0; exclusive <= 1; ++exclusive) {
      for (int reverse = 0; reverse <= 1; ++reverse) {
        op_node n = make_node("CumSum", 14);
        n.attrs.set("exclusive", int64_t{exclusive});
        n.attrs.set("reverse", int64_t{reverse});
        const auto st = strides_of(x.shape());
        std::vector<double> want(60);
        for (int64_t flat = 0; flat < 60; ++flat) {
          const int64_t pos =
              (flat / st[static_cast<size_t>(a)]) % x.shape()[static_cast<size_t>(a)];
          const int64_t base = flat - pos * st[static_cast<size_t>(a)];
          double s = 0;
          for (int64_t j = 0; j < x.shape()[static_cast<size_t>(a)]; ++j) {
            const bool take =
                reverse ? (exclusive ? j > pos : j >= pos) : (exclusive ? j < pos : j <= pos);
            if (take) s += x.data<float>()[base + j * st[static_cast<size_t>(a)]];
          }
          want[static_cast<size_t>(flat)] = s;
        }
        tensor ax = tensor::from_vector<int64_t>({axis}, {});
        const std::string what = "CumSum axis " + std::to_string(axis) + " excl " +
                                 std::to_string(exclusive) + " rev " + std::to_string(reverse);
        auto y = run_n(n, {x, ax}, 1, {false, true});
        ASSERT_EQ(y.size(), 1u);
        expect_near_all(y[0], want, 1e-5, 1e-6, what);
        auto z = run_n(n, {x, ax}, 1, {false, false});  // axis read at run time
        ASSERT_EQ(z.size(), 1u);
        expect_near_all(z[0], want, 1e-5, 1e-6, what + " runtime axis");
      }
    }
  }
  tensor xi = tensor::from_vector<int32_t>({1, 2, 3}, {3});
  auto y = run_n(make_node("CumSum", 14), {xi, tensor::from_vector<int32_t>({0}, {1})});
  ASSERT_EQ(y.size(), 1u);
  expect_near_all(y[0], {1, 3, 6}, 0, 0, "CumSum i32");
}

}  // namespace
}  // namespace troupe::testing
