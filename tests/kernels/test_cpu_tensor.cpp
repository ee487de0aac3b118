// CPU data-movement and shape ops against references written here (index arithmetic done the
// slow, obvious way) on fresh random inputs; plus each op's opset forms and its error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe {
namespace {

using testing::make_node;
using testing::random_tensor;
using testing::test_rng;
using ints = std::vector<int64_t>;

// ---- harness ------------------------------------------------------------------------------------

struct run_result {
  std::vector<tensor> outputs;
  bool view = false;
};

/// Infers (every input's value visible, as when the runtime folds or knows constants), creates the
/// kernel (schema value inputs visible), and always calls compute, also for views, into fresh
/// outputs. `alias` runs with output 0 stored over input 0 (checked against inplace_pairs).
expected<run_result> run(const op_node& node, const std::vector<tensor>& inputs,
                         size_t num_outputs = 1, bool alias = false) {
  std::vector<tensor_info> infos;
  std::vector<const tensor*> values;
  for (const auto& t : inputs) {
    infos.push_back(t.info());
    values.push_back(t.defined() ? &t : nullptr);
  }
  const auto* schema = kernels::schema_registry::standard().find(node.domain, node.op_type);
  if (!schema) return unsupported("no schema");
  kernels::infer_context ic{node, infos, values, num_outputs};
  TROUPE_ASSIGN_OR_RETURN(auto out_infos, schema->infer(ic));
  std::vector<const tensor*> create_values(inputs.size(), nullptr);
  for (int vi : schema->value_inputs) {
    if (static_cast<size_t>(vi) < inputs.size())
      create_values[static_cast<size_t>(vi)] = values[static_cast<size_t>(vi)];
  }
  kernels::kernel_create_context cc{node, infos, create_values, out_infos, nullptr};
  TROUPE_ASSIGN_OR_RETURN(auto k,
                          kernels::kernel_registry::standard().create(kernels::backend::cpu, cc));
  run_result r;
  r.view = k->is_view();
  std::vector<tensor> in_copy = inputs;
  for (const auto& oi : out_infos) r.outputs.push_back(tensor::allocate(oi.type, oi.shape));
  if (alias) {
    bool declared = false;
    for (auto [o, i] : k->inplace_pairs()) declared |= o == 0 && i == 0;
    if (!declared) return internal_error("kernel does not declare output 0 over input 0");
    in_copy[0] = inputs[0].clone();
    r.outputs[0] = in_copy[0];
  }
  std::vector<uint8_t> workspace(k->workspace_bytes() + 64);
  kernels::kernel_run_context rc{in_copy, r.outputs, workspace.data(), nullptr};
  TROUPE_RETURN_IF_ERROR(k->compute(rc));
  return r;
}

tensor run1(const op_node& node, const std::vector<tensor>& inputs) {
  auto r = run(node, inputs);
  EXPECT_TRUE(r.has_value()) << r.error().to_string();
  if (!r) return {};
  return r->outputs[0];
}

tensor i64s(const ints& v) {
  return tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}
tensor i64s(const ints& v, shape_t shape) {
  return tensor::from_vector(v, std::move(shape));
}
tensor i32s(const std::vector<int32_t>& v) {
  return tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}
tensor f32s(const std::vector<float>& v, shape_t shape) {
  return tensor::from_vector(v, std::move(shape));
}
tensor scalar_i64(int64_t v) {
  return tensor::from_vector(ints{v}, {});
}

ints values_of(const tensor& t) {
  return t.to_int64_vector();
}

int64_t rand_int(int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(test_rng());
}

shape_t random_shape(size_t rank, int64_t lo = 1, int64_t hi = 5) {
  shape_t s(rank);
  for (auto& d : s) d = rand_int(lo, hi);
  return s;
}

ints unravel(int64_t i, const shape_t& shape) {
  ints c(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    c[d] = i % shape[d];
    i /= shape[d];
  }
  return c;
}

int64_t ravel(const ints& c, const shape_t& shape) {
  int64_t i = 0;
  for (size_t d = 0; d < shape.size(); ++d) i = i * shape[d] + c[d];
  return i;
}

/// Element i of t as raw bytes, compared bit-exactly: data movement must not change a bit.
bool same_elem(const tensor& a, int64_t i, const tensor& b, int64_t j) {
  const size_t e = dtype_size(a.type());
  return std::memcmp(static_cast<const char*>(a.raw()) + static_cast<size_t>(i) * e,
                     static_cast<const char*>(b.raw()) + static_cast<size_t>(j) * e, e) == 0;
}

/// Checks got[i] == src[map(i)] for every output element.
template <class F>
void expect_gathered(const tensor& got, const tensor& src, const shape_t& want_shape, F&& map) {
  ASSERT_EQ(got.shape(), want_shape);
  ASSERT_EQ(got.type(), src.type());
  for (int64_t i = 0; i < got.elements(); ++i) {
    const int64_t j = map(unravel(i, want_shape));
    ASSERT_TRUE(same_elem(got, i, src, j)) << "element " << i << " (source " << j << ")";
  }
}

void expect_bytes_equal(const tensor& a, const tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  ASSERT_EQ(a.type(), b.type());
  ASSERT_EQ(std::memcmp(a.raw(), b.raw(), a.bytes()), 0);
}

error_code code_of(const op_node& node, const std::vector<tensor>& inputs, size_t num_outputs = 1) {
  auto r = run(node, inputs, num_outputs);
  return r ? error_code::ok : r.error().code();
}

/// Calls the schema with no input values known: the path a non-constant shape input takes.
status infer_without_values(const op_node& node, const std::vector<tensor_info>& infos) {
  const auto* schema = kernels::schema_registry::standard().find(node.domain, node.op_type);
  if (!schema) return unsupported("no schema");
  std::vector<const tensor*> values(infos.size(), nullptr);
  kernels::infer_context ic{node, infos, values, 1};
  return schema->infer(ic).take_status();
}

const std::vector<dtype> some_types{dtype::f32, dtype::i64, dtype::u8, dtype::f16, dtype::i32};

// ---- views
// ----------------------------------------------------------------------------------------

TEST(CpuTensor, ReshapeZeroMinusOneAndAllowZero) {
  tensor x = random_tensor(dtype::f32, {2, 3, 4});
  auto r = run(make_node("Reshape", 14), {x, i64s({0, -1})});
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->view);
  EXPECT_EQ(r->outputs[0].shape(), (shape_t{2, 12}));
  expect_bytes_equal(r->outputs[0], x.reshaped({2, 12}));
  EXPECT_EQ(run1(make_node("Reshape", 13), {x, i64s({-1})}).shape(), (shape_t{24}));
  EXPECT_EQ(run1(make_node("Reshape", 13), {x, i64s({4, 0, 2})}).shape(), (shape_t{4, 3, 2}));

  op_node allow = make_node("Reshape", 14);
  allow.attrs.set("allowzero", int64_t{1});
  tensor empty = tensor::allocate(dtype::f32, {0, 3});
  EXPECT_EQ(run1(allow, {empty, i64s({3, 0})}).shape(), (shape_t{3, 0}));
  EXPECT_EQ(code_of(allow, {x, i64s({0, -1})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Reshape", 13), {x, i64s({-1, -1})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Reshape", 13), {x, i64s({5, -1})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Reshape", 13), {x, i64s({2, 3, 5})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Reshape", 13), {x, i64s({0, 0, 0, 0})}), error_code::invalid_model);
  EXPECT_EQ(infer_without_values(make_node("Reshape", 13), {x.info(), {dtype::i64, {2}}}).code(),
            error_code::unsupported);
}

TEST(CpuTensor, FlattenSqueezeUnsqueezeShapes) {
  tensor x = random_tensor(dtype::i64, {2, 1, 3, 1}, -50, 50);
  for (int64_t axis = -4; axis <= 4; ++axis) {
    op_node n = make_node("Flatten", 13);
    n.attrs.set("axis", axis);
    const int64_t a = axis < 0 ? axis + 4 : axis;
    int64_t outer = 1;
    for (int64_t d = 0; d < a; ++d) outer *= x.dim(static_cast<size_t>(d));
    auto r = run(n, {x});
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_TRUE(r->view);
    expect_bytes_equal(r->outputs[0], x.reshaped({outer, 6 / outer}));
  }
  // Squeeze: attribute before 13, input from 13, all size-1 axes when none are given.
  op_node sq11 = make_node("Squeeze", 11);
  sq11.attrs.set("axes", ints{-1});
  EXPECT_EQ(run1(sq11, {x}).shape(), (shape_t{2, 1, 3}));
  EXPECT_EQ(run1(make_node("Squeeze", 13), {x, i64s({1, 3})}).shape(), (shape_t{2, 3}));
  EXPECT_EQ(run1(make_node("Squeeze", 13), {x}).shape(), (shape_t{2, 3}));
  expect_bytes_equal(run1(make_node("Squeeze", 13), {x}), x.reshaped({2, 3}));
  EXPECT_EQ(code_of(make_node("Squeeze", 13), {x, i64s({0})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Squeeze", 13), {x, i64s({4})}), error_code::invalid_model);
  // Unsqueeze: axes index the output; negative from the back; repeats are invalid.
  op_node un11 = make_node("Unsqueeze", 11);
  un11.attrs.set("axes", ints{0, -1});
  EXPECT_EQ(run1(un11, {x}).shape(), (shape_t{1, 2, 1, 3, 1, 1}));
  EXPECT_EQ(run1(make_node("Unsqueeze", 13), {x, i64s({1, 5})}).shape(),
            (shape_t{2, 1, 1, 3, 1, 1}));
  EXPECT_EQ(run1(make_node("Unsqueeze", 13), {scalar_i64(7), i64s({0})}).shape(), (shape_t{1}));
  EXPECT_EQ(code_of(make_node("Unsqueeze", 13), {x, i64s({1, 1})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Unsqueeze", 13), {x, i64s({6})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Unsqueeze", 13), {x}), error_code::invalid_model);
}

TEST(CpuTensor, IdentityAndDropout) {
  tensor x = random_tensor(dtype::f32, {3, 5});
  auto id = run(make_node("Identity", 16), {x});
  ASSERT_TRUE(id);
  EXPECT_TRUE(id->view);
  expect_bytes_equal(id->outputs[0], x);

  auto d1 = run(make_node("Dropout", 13), {x});
  ASSERT_TRUE(d1);
  EXPECT_TRUE(d1->view);
  expect_bytes_equal(d1->outputs[0], x);

  // With a mask the kernel is no view (its compute must fill the mask): all kept.
  auto d2 = run(make_node("Dropout", 13), {x, f32s({0.3f}, {}), tensor()}, 2);
  ASSERT_TRUE(d2) << d2.error().to_string();
  EXPECT_FALSE(d2->view);
  expect_bytes_equal(d2->outputs[0], x);
  ASSERT_EQ(d2->outputs[1].type(), dtype::boolean);
  for (int64_t i = 0; i < 15; ++i) EXPECT_EQ(d2->outputs[1].data<uint8_t>()[i], 1);
  auto d7 = run(make_node("Dropout", 7), {x}, 2);
  ASSERT_TRUE(d7);
  EXPECT_EQ(d7->outputs[1].type(), dtype::f32);
  EXPECT_EQ(d7->outputs[1].data<float>()[14], 1.0f);
  tensor training = tensor::from_vector(std::vector<bool>{true}, {});
  EXPECT_EQ(code_of(make_node("Dropout", 13), {x, f32s({0.3f}, {}), training}),
            error_code::unsupported);
}

// ---- Transpose, DepthToSpace, SpaceToDepth
// ----------------------------------------------------------

void check_transpose(const tensor& x, const ints& perm) {
  op_node n = make_node("Transpose", 13);
  n.attrs.set("perm", perm);
  shape_t out_shape(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) out_shape[i] = x.dim(static_cast<size_t>(perm[i]));
  tensor y = run1(n, {x});
  expect_gathered(y, x, out_shape, [&](const ints& c) {
    ints src(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) src[static_cast<size_t>(perm[i])] = c[i];
    return ravel(src, x.shape());
  });
}

TEST(CpuTensor, TransposeRandomPermutations) {
  for (int iter = 0; iter < 60; ++iter) {
    const size_t rank = static_cast<size_t>(rand_int(1, 5));
    const dtype t = some_types[static_cast<size_t>(iter) % some_types.size()];
    tensor x = random_tensor(t, random_shape(rank, 1, 6), -100, 100);
    ints perm(rank);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), test_rng());
    SCOPED_TRACE(x.info().to_string());
    check_transpose(x, perm);
  }
  // Sizes past one tile and past the parallel threshold, 2-D and BERT's (0,2,1,3).
  check_transpose(random_tensor(dtype::f32, {67, 131}), {1, 0});
  check_transpose(random_tensor(dtype::f32, {300, 257}), {1, 0});
  check_transpose(random_tensor(dtype::f32, {2, 128, 12, 64}), {0, 2, 1, 3});
  check_transpose(random_tensor(dtype::f32, {2, 12, 33, 64}), {0, 1, 3, 2});
  check_transpose(random_tensor(dtype::u8, {3, 40, 70}), {2, 0, 1});
  check_transpose(random_tensor(dtype::i64, {1, 5, 1, 7}), {3, 2, 1, 0});
  check_transpose(random_tensor(dtype::f32, {4, 0, 3}), {2, 1, 0});
  // Default perm reverses the axes.
  tensor x = random_tensor(dtype::f32, {2, 3, 4});
  EXPECT_EQ(run1(make_node("Transpose", 13), {x}).shape(), (shape_t{4, 3, 2}));
  op_node bad = make_node("Transpose", 13);
  bad.attrs.set("perm", ints{0, 0, 1});
  EXPECT_EQ(code_of(bad, {x}), error_code::invalid_model);
  bad.attrs.set("perm", ints{0, 1});
  EXPECT_EQ(code_of(bad, {x}), error_code::invalid_model);
}

TEST(CpuTensor, DepthToSpaceAndSpaceToDepth) {
  const int64_t n = 2, c = 8, h = 3, w = 5, b = 2;
  tensor x = random_tensor(dtype::f32, {n, c, h, w});
  for (const char* mode : {"DCR", "CRD"}) {
    op_node d2s = make_node("DepthToSpace", 13);
    d2s.attrs.set("blocksize", b);
    d2s.attrs.set("mode", std::string(mode));
    const bool crd = std::string(mode) == "CRD";
    tensor y = run1(d2s, {x});
    const int64_t cc = c / (b * b);
    expect_gathered(y, x, {n, cc, h * b, w * b}, [&](const ints& o) {
      const int64_t bh = o[2] % b, bw = o[3] % b;
      const int64_t ch = crd ? o[1] * b * b + bh * b + bw : (bh * b + bw) * cc + o[1];
      return ravel({o[0], ch, o[2] / b, o[3] / b}, x.shape());
    });
  }
  op_node s2d = make_node("SpaceToDepth", 13);
  s2d.attrs.set("blocksize", b);
  tensor z = random_tensor(dtype::f32, {n, 3, 4, 6});
  tensor y = run1(s2d, {z});
  expect_gathered(y, z, {n, 3 * b * b, 2, 3}, [&](const ints& o) {
    const int64_t ch = o[1] % 3, blk = o[1] / 3;
    return ravel({o[0], ch, o[2] * b + blk / b, o[3] * b + blk % b}, z.shape());
  });
  EXPECT_EQ(code_of(s2d, {random_tensor(dtype::f32, {1, 1, 3, 4})}), error_code::invalid_model);
}

// ---- Concat, Split, Slice
// ------------------------------------------------------------------------

TEST(CpuTensor, ConcatRandomAxes) {
  for (int iter = 0; iter < 25; ++iter) {
    const size_t rank = static_cast<size_t>(rand_int(1, 4));
    const int64_t axis = rand_int(-static_cast<int64_t>(rank), static_cast<int64_t>(rank) - 1);
    const size_t a = static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis);
    const shape_t base = random_shape(rank);
    const dtype t = some_types[static_cast<size_t>(iter) % some_types.size()];
    std::vector<tensor> ins;
    const int k = static_cast<int>(rand_int(1, 4));
    for (int i = 0; i < k; ++i) {
      shape_t s = base;
      s[a] = rand_int(0, 4);
      ins.push_back(random_tensor(t, s, -100, 100));
    }
    op_node n = make_node("Concat", 13);
    n.attrs.set("axis", axis);
    tensor y = run1(n, ins);
    shape_t want = base;
    want[a] = 0;
    for (auto& in : ins) want[a] += in.dim(a);
    ASSERT_EQ(y.shape(), want);
    for (int64_t i = 0; i < y.elements(); ++i) {
      ints c = unravel(i, want);
      size_t which = 0;
      while (c[a] >= ins[which].dim(a)) c[a] -= ins[which++].dim(a);
      ASSERT_TRUE(same_elem(y, i, ins[which], ravel(c, ins[which].shape())));
    }
  }
  // Large rows go through the parallel path.
  tensor p = random_tensor(dtype::f32, {64, 300}), q = random_tensor(dtype::f32, {64, 200});
  op_node n = make_node("Concat", 13);
  n.attrs.set("axis", int64_t{1});
  tensor y = run1(n, {p, q});
  for (int64_t r = 0; r < 64; ++r) {
    ASSERT_EQ(std::memcmp(y.data<float>() + r * 500, p.data<float>() + r * 300, 1200), 0);
    ASSERT_EQ(std::memcmp(y.data<float>() + r * 500 + 300, q.data<float>() + r * 200, 800), 0);
  }
  n.attrs.set("axis", int64_t{0});
  EXPECT_EQ(code_of(n, {p, q}), error_code::invalid_model);
}

TEST(CpuTensor, SplitForms) {
  tensor x = random_tensor(dtype::f32, {4, 7, 3});
  auto check = [&](const op_node& n, std::vector<tensor> ins, size_t outs, const ints& sizes) {
    auto r = run(n, ins, outs);
    ASSERT_TRUE(r) << r.error().to_string();
    ASSERT_EQ(r->outputs.size(), sizes.size());
    int64_t start = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      expect_gathered(r->outputs[k], x, {4, sizes[k], 3}, [&](const ints& c) {
        return ravel({c[0], c[1] + start, c[2]}, x.shape());
      });
      start += sizes[k];
    }
  };
  op_node s11 = make_node("Split", 11);
  s11.attrs.set("axis", int64_t{1});
  s11.attrs.set("split", ints{2, 5});
  check(s11, {x}, 2, {2, 5});
  op_node s13 = make_node("Split", 13);
  s13.attrs.set("axis", int64_t{-2});
  check(s13, {x, i64s({1, 0, 6})}, 3, {1, 0, 6});
  op_node s18 = make_node("Split", 18);
  s18.attrs.set("axis", int64_t{1});
  s18.attrs.set("num_outputs", int64_t{4});
  check(s18, {x}, 4, {2, 2, 2, 1});
  op_node even = make_node("Split", 13);
  even.attrs.set("axis", int64_t{0});
  auto r = run(even, {x}, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outputs[1].shape(), (shape_t{2, 7, 3}));
  EXPECT_EQ(code_of(s13, {x, i64s({1, 2})}, 3), error_code::invalid_model);
  EXPECT_EQ(code_of(s13, {x, i64s({1, 2, 5})}, 3), error_code::invalid_model);
}

/// Python's slice semantics, written as Python does it (not as the kernel does), except for the
/// one place ONNX differs: with a negative step, a start still below 0 after adding the length
/// clamps to 0 (Python makes it -1, an empty slice). ONNX Runtime follows the spec there too.
ints onnx_slice(int64_t len, int64_t start, int64_t stop, int64_t step) {
  auto fix = [&](int64_t v, bool is_start) {
    if (v < 0) {
      v += len;
      if (v < 0) v = step < 0 && !is_start ? -1 : 0;
    } else if (v >= len) {
      v = step < 0 ? len - 1 : len;
    }
    return v;
  };
  start = fix(start, true);
  stop = fix(stop, false);
  ints out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(i);
  return out;
}

TEST(CpuTensor, SliceRandomAgainstSpecSemantics) {
  const int64_t big = std::numeric_limits<int64_t>::max();
  const ints specials{-big, big, std::numeric_limits<int64_t>::min()};
  for (int iter = 0; iter < 80; ++iter) {
    const size_t rank = static_cast<size_t>(rand_int(1, 4));
    tensor x = random_tensor(some_types[static_cast<size_t>(iter) % some_types.size()],
                             random_shape(rank, 1, 7), -100, 100);
    ints axes, starts, ends, steps;
    for (size_t a = 0; a < rank; ++a) {
      if (rand_int(0, 3) == 0) continue;
      axes.push_back(rand_int(0, 1) ? static_cast<int64_t>(a)
                                    : static_cast<int64_t>(a) - static_cast<int64_t>(rank));
      const int64_t d = x.dim(a);
      auto pick = [&] {
        return rand_int(0, 6) == 0 ? specials[static_cast<size_t>(rand_int(0, 1))]
                                   : rand_int(-d - 2, d + 2);
      };
      starts.push_back(pick());
      ends.push_back(pick());
      int64_t s = rand_int(-3, 3);
      if (s == 0) s = 1;
      steps.push_back(s);
    }
    std::vector<ints> picked(rank);
    for (size_t a = 0; a < rank; ++a) {
      picked[a].resize(static_cast<size_t>(x.dim(a)));
      std::iota(picked[a].begin(), picked[a].end(), 0);
    }
    for (size_t i = 0; i < axes.size(); ++i) {
      const size_t a =
          static_cast<size_t>(axes[i] < 0 ? axes[i] + static_cast<int64_t>(rank) : axes[i]);
      picked[a] = onnx_slice(x.dim(a), starts[i], ends[i], steps[i]);
    }
    shape_t want(rank);
    for (size_t a = 0; a < rank; ++a) want[a] = static_cast<int64_t>(picked[a].size());
    tensor y = run1(make_node("Slice", 13), {x, i64s(starts), i64s(ends), i64s(axes), i64s(steps)});
    SCOPED_TRACE(x.info().to_string());
    expect_gathered(y, x, want, [&](const ints& c) {
      ints src(rank);
      for (size_t a = 0; a < rank; ++a) src[a] = picked[a][static_cast<size_t>(c[a])];
      return ravel(src, x.shape());
    });
  }
}

TEST(CpuTensor, SliceForms) {
  tensor x = random_tensor(dtype::f32, {5, 6});
  // Opset 9: attributes; axes default to the leading axes.
  op_node s9 = make_node("Slice", 9);
  s9.attrs.set("starts", ints{1});
  s9.attrs.set("ends", ints{-1});
  tensor y = run1(s9, {x});
  expect_gathered(y, x, {3, 6}, [&](const ints& c) { return ravel({c[0] + 1, c[1]}, x.shape()); });
  // int32 starts/ends, reversed full axis.
  tensor r =
      run1(make_node("Slice", 13),
           {x, i32s({-1}), i32s({std::numeric_limits<int32_t>::min()}), i32s({1}), i32s({-1})});
  expect_gathered(r, x, {5, 6}, [&](const ints& c) { return ravel({c[0], 5 - c[1]}, x.shape()); });
  // The Shape -> Slice chain on int64 values.
  tensor shape_vals = i64s({2, 3, 4, 5});
  EXPECT_EQ(values_of(run1(make_node("Slice", 13), {shape_vals, i64s({1}), i64s({3})})),
            (ints{3, 4}));
  EXPECT_EQ(code_of(make_node("Slice", 13), {x, i64s({0}), i64s({1}), i64s({0}), i64s({0})}),
            error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Slice", 13), {x, i64s({0, 0}), i64s({1, 1}), i64s({1, 1})}),
            error_code::invalid_model);
  EXPECT_EQ(
      infer_without_values(make_node("Slice", 13), {x.info(), {dtype::i64, {1}}, {dtype::i64, {1}}})
          .code(),
      error_code::unsupported);
}

// ---- Gather family ------------------------------------------------------------------------------

TEST(CpuTensor, GatherRandom) {
  for (int iter = 0; iter < 30; ++iter) {
    const size_t rank = static_cast<size_t>(rand_int(1, 4));
    tensor x = random_tensor(some_types[static_cast<size_t>(iter) % some_types.size()],
                             random_shape(rank, 1, 5), -100, 100);
    const int64_t axis = rand_int(-static_cast<int64_t>(rank), static_cast<int64_t>(rank) - 1);
    const size_t a = static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(rank) : axis);
    const int64_t d = x.dim(a);
    const shape_t ishape = random_shape(static_cast<size_t>(rand_int(0, 2)), 1, 4);
    tensor idx = tensor::allocate(iter % 2 ? dtype::i64 : dtype::i32, ishape);
    for (int64_t i = 0; i < idx.elements(); ++i) {
      const int64_t v = rand_int(-d, d - 1);
      if (iter % 2)
        idx.data<int64_t>()[i] = v;
      else
        idx.data<int32_t>()[i] = static_cast<int32_t>(v);
    }
    op_node n = make_node("Gather", 13);
    n.attrs.set("axis", axis);
    shape_t want(x.shape().begin(), x.shape().begin() + static_cast<int64_t>(a));
    want.insert(want.end(), ishape.begin(), ishape.end());
    want.insert(want.end(), x.shape().begin() + static_cast<int64_t>(a) + 1, x.shape().end());
    tensor y = run1(n, {x, idx});
    expect_gathered(y, x, want, [&](const ints& c) {
      ints src(c.begin(), c.begin() + static_cast<int64_t>(a));
      const ints ic(c.begin() + static_cast<int64_t>(a),
                    c.begin() + static_cast<int64_t>(a + ishape.size()));
      int64_t v = idx.value_as_int64(ravel(ic, ishape));
      src.push_back(v < 0 ? v + d : v);
      src.insert(src.end(), c.begin() + static_cast<int64_t>(a + ishape.size()), c.end());
      return ravel(src, x.shape());
    });
  }
  // Shape -> Gather(scalar index) yields a scalar.
  tensor g = run1(make_node("Gather", 13), {i64s({2, 3, 4}), scalar_i64(-1)});
  EXPECT_EQ(g.shape(), shape_t{});
  EXPECT_EQ(values_of(g), (ints{4}));
  // Out-of-range indices are a run-time invalid_argument, not a crash.
  EXPECT_EQ(code_of(make_node("Gather", 13), {i64s({2, 3, 4}), i64s({3})}),
            error_code::invalid_argument);
  EXPECT_EQ(code_of(make_node("Gather", 13), {i64s({2, 3, 4}), i64s({-4})}),
            error_code::invalid_argument);
  EXPECT_EQ(code_of(make_node("Gather", 13), {i64s({2, 3, 4}), f32s({0}, {1})}),
            error_code::invalid_model);
}

TEST(CpuTensor, GatherElementsAndScatterElements) {
  for (int iter = 0; iter < 20; ++iter) {
    const size_t rank = static_cast<size_t>(rand_int(1, 4));
    const shape_t dshape = random_shape(rank, 1, 5);
    const int64_t axis = rand_int(0, static_cast<int64_t>(rank) - 1);
    shape_t ishape = dshape;
    for (size_t d = 0; d < rank; ++d) ishape[d] = rand_int(1, dshape[d]);
    ishape[static_cast<size_t>(axis)] = rand_int(1, 6);
    const int64_t dim = dshape[static_cast<size_t>(axis)];
    tensor x = random_tensor(dtype::f32, dshape);
    tensor idx = tensor::allocate(dtype::i64, ishape);
    for (int64_t i = 0; i < idx.elements(); ++i) idx.data<int64_t>()[i] = rand_int(-dim, dim - 1);
    op_node g = make_node("GatherElements", 13);
    g.attrs.set("axis", axis);
    tensor y = run1(g, {x, idx});
    auto source_of = [&](const ints& c) {
      ints src = c;
      const int64_t v = idx.data<int64_t>()[ravel(c, ishape)];
      src[static_cast<size_t>(axis)] = v < 0 ? v + dim : v;
      return ravel(src, dshape);
    };
    expect_gathered(y, x, ishape, source_of);

    // ScatterElements with every reduction, applied in order like the spec's loop.
    for (const char* red : {"none", "add", "mul", "max", "min"}) {
      op_node s = make_node("ScatterElements", 18);
      s.attrs.set("axis", axis);
      s.attrs.set("reduction", std::string(red));
      tensor upd = random_tensor(dtype::f32, ishape);
      std::vector<double> want(static_cast<size_t>(x.elements()));
      for (int64_t i = 0; i < x.elements(); ++i) want[static_cast<size_t>(i)] = x.data<float>()[i];
      for (int64_t i = 0; i < idx.elements(); ++i) {
        double& w = want[static_cast<size_t>(source_of(unravel(i, ishape)))];
        const float u = upd.data<float>()[i];
        const float cur = static_cast<float>(w);
        const std::string r = red;
        w = r == "none"  ? u
            : r == "add" ? cur + u
            : r == "mul" ? cur * u
            : r == "max" ? std::max(cur, u)
                         : std::min(cur, u);
      }
      for (bool alias : {false, true}) {
        auto out = run(s, {x, idx, upd}, 1, alias);
        ASSERT_TRUE(out) << out.error().to_string();
        for (int64_t i = 0; i < x.elements(); ++i) {
          ASSERT_FLOAT_EQ(out->outputs[0].data<float>()[i],
                          static_cast<float>(want[static_cast<size_t>(i)]))
              << red;
        }
      }
    }
  }
  tensor x = random_tensor(dtype::f32, {3, 3});
  EXPECT_EQ(code_of(make_node("GatherElements", 13), {x, i64s({0, 3, 1}, {1, 3})}),
            error_code::invalid_argument);
  EXPECT_EQ(code_of(make_node("ScatterElements", 13),
                    {x, i64s({0, -4, 1}, {1, 3}), random_tensor(dtype::f32, {1, 3})}),
            error_code::invalid_argument);
  // Deprecated Scatter-9 is ScatterElements without reduction.
  tensor sc = run1(make_node("Scatter", 9), {x, i64s({2, 0, 1}, {1, 3}), f32s({7, 8, 9}, {1, 3})});
  EXPECT_EQ(sc.data<float>()[6], 7.0f);
  EXPECT_EQ(sc.data<float>()[1], 8.0f);
  EXPECT_EQ(sc.data<float>()[5], 9.0f);
}

TEST(CpuTensor, GatherNDAndScatterND) {
  // GatherND with batch_dims 0 and 1.
  for (int64_t b : {0, 1}) {
    const shape_t dshape{3, 4, 5};
    tensor x = random_tensor(dtype::i32, dshape, -1000, 1000);
    const int64_t k = b == 0 ? 2 : 1;
    const shape_t ishape = b == 0 ? shape_t{2, 3, k} : shape_t{3, 2, k};
    tensor idx = tensor::allocate(dtype::i64, ishape);
    for (int64_t i = 0; i < idx.elements(); ++i) {
      const int64_t d = dshape[static_cast<size_t>(b + i % k)];
      idx.data<int64_t>()[i] = rand_int(-d, d - 1);
    }
    op_node n = make_node("GatherND", 13);
    n.attrs.set("batch_dims", b);
    shape_t want(ishape.begin(), ishape.end() - 1);
    want.insert(want.end(), dshape.begin() + b + k, dshape.end());
    tensor y = run1(n, {x, idx});
    expect_gathered(y, x, want, [&](const ints& c) {
      const size_t tuple_rank = ishape.size() - 1;
      const ints tc(c.begin(), c.begin() + static_cast<int64_t>(tuple_rank));
      ints src;
      if (b == 1) src.push_back(c[0]);
      for (int64_t j = 0; j < k; ++j) {
        ints ic = tc;
        ic.push_back(j);
        int64_t v = idx.data<int64_t>()[ravel(ic, ishape)];
        src.push_back(v < 0 ? v + dshape[static_cast<size_t>(b + j)] : v);
      }
      src.insert(src.end(), c.begin() + static_cast<int64_t>(tuple_rank), c.end());
      return ravel(src, dshape);
    });
  }
  EXPECT_EQ(
      code_of(make_node("GatherND", 13), {random_tensor(dtype::f32, {2, 2}), i64s({0, 2}, {1, 2})}),
      error_code::invalid_argument);

  // ScatterND: slices of rank 1, repeated indices applied in order.
  tensor data = random_tensor(dtype::f32, {4, 3});
  tensor idx = i64s({1, -1, 1}, {3, 1});
  tensor upd = random_tensor(dtype::f32, {3, 3});
  for (const char* red : {"none", "add", "mul", "max", "min"}) {
    op_node n = make_node("ScatterND", 18);
    n.attrs.set("reduction", std::string(red));
    std::vector<float> want(data.data<float>(), data.data<float>() + 12);
    const std::string r = red;
    for (int64_t u = 0; u < 3; ++u) {
      int64_t row = idx.data<int64_t>()[u];
      if (row < 0) row += 4;
      for (int64_t j = 0; j < 3; ++j) {
        float& w = want[static_cast<size_t>(row * 3 + j)];
        const float v = upd.data<float>()[u * 3 + j];
        w = r == "none"  ? v
            : r == "add" ? w + v
            : r == "mul" ? w * v
            : r == "max" ? std::max(w, v)
                         : std::min(w, v);
      }
    }
    for (bool alias : {false, true}) {
      auto out = run(n, {data, idx, upd}, 1, alias);
      ASSERT_TRUE(out) << out.error().to_string();
      for (int64_t i = 0; i < 12; ++i)
        ASSERT_FLOAT_EQ(out->outputs[0].data<float>()[i], want[static_cast<size_t>(i)]) << r;
    }
  }
  EXPECT_EQ(code_of(make_node("ScatterND", 13),
                    {data, i64s({4}, {1, 1}), random_tensor(dtype::f32, {1, 3})}),
            error_code::invalid_argument);
  EXPECT_EQ(code_of(make_node("ScatterND", 13),
                    {data, i64s({1}, {1, 1}), random_tensor(dtype::f32, {1, 4})}),
            error_code::invalid_model);
}

// ---- Expand, Tile, Pad
// ---------------------------------------------------------------------------

TEST(CpuTensor, ExpandAndTileRandom) {
  for (int iter = 0; iter < 30; ++iter) {
    const size_t rank = static_cast<size_t>(rand_int(1, 4));
    shape_t in_shape = random_shape(rank, 1, 4);
    for (auto& d : in_shape) {
      if (rand_int(0, 1)) d = 1;
    }
    tensor x = random_tensor(some_types[static_cast<size_t>(iter) % some_types.size()], in_shape,
                             -100, 100);
    // Expand: a target that may have more axes, and 1s where the input is larger.
    const size_t lead = static_cast<size_t>(rand_int(0, 2));
    ints target(lead + rank);
    for (size_t i = 0; i < lead; ++i) target[i] = rand_int(1, 3);
    for (size_t i = 0; i < rank; ++i)
      target[lead + i] = in_shape[i] == 1 ? rand_int(1, 4) : (rand_int(0, 1) ? 1 : in_shape[i]);
    shape_t want(target.size());
    for (size_t i = 0; i < want.size(); ++i)
      want[i] = i < lead ? target[i] : std::max(target[i], in_shape[i - lead]);
    tensor y = run1(make_node("Expand", 13), {x, i64s(target)});
    expect_gathered(y, x, want, [&](const ints& c) {
      ints src(rank);
      for (size_t i = 0; i < rank; ++i) src[i] = in_shape[i] == 1 ? 0 : c[lead + i];
      return ravel(src, in_shape);
    });
    // Tile.
    ints repeats(rank);
    shape_t tiled(rank);
    for (size_t i = 0; i < rank; ++i) {
      repeats[i] = rand_int(0, 3);
      tiled[i] = in_shape[i] * repeats[i];
    }
    tensor t = run1(make_node("Tile", 13), {x, i64s(repeats)});
    expect_gathered(t, x, tiled, [&](const ints& c) {
      ints src(rank);
      for (size_t i = 0; i < rank; ++i) src[i] = c[i] % in_shape[i];
      return ravel(src, in_shape);
    });
  }
  tensor x = random_tensor(dtype::f32, {2, 3});
  EXPECT_EQ(code_of(make_node("Expand", 13), {x, i64s({4, 3})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Tile", 13), {x, i64s({2})}), error_code::invalid_model);
  // A big broadcast goes through the parallel row copy.
  tensor b = random_tensor(dtype::f32, {1, 1, 64, 1});
  tensor y = run1(make_node("Expand", 13), {b, i64s({8, 12, 64, 64})});
  for (int64_t i = 0; i < y.elements(); i += 97)
    ASSERT_EQ(y.data<float>()[i], b.data<float>()[(i / 64) % 64]);
}

/// numpy.pad's index mapping, reflecting one bounce at a time.
int64_t pad_source(int64_t i, int64_t n, const std::string& mode) {
  if (i >= 0 && i < n) return i;
  if (mode == "constant") return -1;
  if (mode == "edge") return i < 0 ? 0 : n - 1;
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

TEST(CpuTensor, PadModesAndForms) {
  for (int iter = 0; iter < 40; ++iter) {
    const size_t rank = static_cast<size_t>(rand_int(1, 4));
    const shape_t in_shape = random_shape(rank, 1, 5);
    const std::string mode =
        std::vector<std::string>{"constant", "reflect", "edge"}[static_cast<size_t>(iter % 3)];
    ints pads(2 * rank);
    shape_t want(rank);
    for (size_t a = 0; a < rank; ++a) {
      // Negative pads crop; keep at least one element per axis.
      pads[a] = rand_int(-1, 6);
      pads[rank + a] = rand_int(-1, 6);
      if (in_shape[a] + pads[a] + pads[rank + a] < 1) pads[a] = pads[rank + a] = 0;
      want[a] = in_shape[a] + pads[a] + pads[rank + a];
    }
    const dtype t = iter % 2 ? dtype::f32 : dtype::i64;
    tensor x = random_tensor(t, in_shape, -100, 100);
    tensor cval = tensor::allocate(t, {});
    if (t == dtype::f32)
      *cval.data<float>() = 2.5f;
    else
      *cval.data<int64_t>() = 77;
    op_node n = make_node("Pad", 13);
    n.attrs.set("mode", mode);
    tensor y = run1(n, {x, i64s(pads), cval});
    ASSERT_EQ(y.shape(), want);
    for (int64_t i = 0; i < y.elements(); ++i) {
      const ints c = unravel(i, want);
      ints src(rank);
      bool is_const = false;
      for (size_t a = 0; a < rank; ++a) {
        src[a] = pad_source(c[a] - pads[a], in_shape[a], mode);
        is_const |= src[a] < 0;
      }
      if (is_const)
        ASSERT_TRUE(same_elem(y, i, cval, 0)) << mode;
      else
        ASSERT_TRUE(same_elem(y, i, x, ravel(src, in_shape))) << mode << " element " << i;
    }
  }
  tensor x = random_tensor(dtype::f32, {2, 3});
  // Opset 2: attributes; constant from 'value'.
  op_node p2 = make_node("Pad", 2);
  p2.attrs.set("pads", ints{0, 1, 0, 1});
  p2.attrs.set("value", 1.5f);
  tensor y2 = run1(p2, {x});
  ASSERT_EQ(y2.shape(), (shape_t{2, 5}));
  EXPECT_EQ(y2.data<float>()[0], 1.5f);
  EXPECT_EQ(y2.data<float>()[1], x.data<float>()[0]);
  // Opset 11 without constant_value pads with zeros.
  tensor y11 = run1(make_node("Pad", 11), {x, i64s({1, 0, 0, 0})});
  ASSERT_EQ(y11.shape(), (shape_t{3, 3}));
  EXPECT_EQ(y11.data<float>()[2], 0.0f);
  EXPECT_EQ(y11.data<float>()[3], x.data<float>()[0]);
  // Opset 18: axes pick which axes the pads refer to.
  tensor y18 = run1(make_node("Pad", 18), {x, i64s({2, 1}), tensor(), i64s({-1})});
  ASSERT_EQ(y18.shape(), (shape_t{2, 6}));
  EXPECT_EQ(y18.data<float>()[2], x.data<float>()[0]);
  EXPECT_EQ(code_of(make_node("Pad", 13), {x, i64s({0, -4, 0, 0})}), error_code::invalid_model);
  EXPECT_EQ(code_of(make_node("Pad", 13), {x, i64s({1, 1})}), error_code::invalid_model);
  op_node wrap = make_node("Pad", 13);
  wrap.attrs.set("mode", std::string("wrap"));
  EXPECT_EQ(code_of(wrap, {x, i64s({0, 1, 0, 1})}), error_code::unsupported);
}

// ---- Shape, Size, constants, Range, EyeLike, OneHot, NonZero
// ---------------------------------------

TEST(CpuTensor, ShapeSizeAndConstants) {
  tensor x = random_tensor(dtype::f32, {2, 3, 4, 5});
  EXPECT_EQ(values_of(run1(make_node("Shape", 13), {x})), (ints{2, 3, 4, 5}));
  op_node s15 = make_node("Shape", 15);
  s15.attrs.set("start", int64_t{1});
  s15.attrs.set("end", int64_t{-1});
  EXPECT_EQ(values_of(run1(s15, {x})), (ints{3, 4}));
  s15.attrs.set("start", int64_t{-10});
  s15.attrs.set("end", int64_t{10});
  EXPECT_EQ(values_of(run1(s15, {x})), (ints{2, 3, 4, 5}));
  s15.attrs.set("start", int64_t{3});
  s15.attrs.set("end", int64_t{1});
  EXPECT_EQ(run1(s15, {x}).shape(), (shape_t{0}));
  tensor size = run1(make_node("Size", 13), {x});
  EXPECT_EQ(size.shape(), shape_t{});
  EXPECT_EQ(values_of(size), (ints{120}));

  op_node cos = make_node("ConstantOfShape", 9);
  tensor c0 = run1(cos, {i64s({2, 3})});
  ASSERT_EQ(c0.type(), dtype::f32);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(c0.data<float>()[i], 0.0f);
  cos.attrs.set("value", i64s({-7}, {1}));
  tensor c1 = run1(cos, {i64s({3})});
  EXPECT_EQ(values_of(c1), (ints{-7, -7, -7}));
  EXPECT_EQ(run1(cos, {tensor::allocate(dtype::i64, {0})}).shape(), shape_t{});
  EXPECT_EQ(code_of(cos, {i64s({2, -1})}), error_code::invalid_model);

  op_node k = make_node("Constant", 13);
  tensor v = random_tensor(dtype::f32, {2, 2});
  k.attrs.set("value", v);
  expect_bytes_equal(run1(k, {}), v);
  op_node kf = make_node("Constant", 13);
  kf.attrs.set("value_floats", std::vector<float>{1.5f, -2});
  tensor f = run1(kf, {});
  ASSERT_EQ(f.shape(), (shape_t{2}));
  EXPECT_EQ(f.data<float>()[1], -2.0f);
  op_node ki = make_node("Constant", 13);
  ki.attrs.set("value_int", int64_t{42});
  EXPECT_EQ(values_of(run1(ki, {})), (ints{42}));
  op_node ks = make_node("Constant", 13);
  ks.attrs.set("sparse_value", v);
  EXPECT_EQ(code_of(ks, {}), error_code::unsupported);
}

TEST(CpuTensor, RangeEyeLikeOneHot) {
  auto range = [](tensor s, tensor l, tensor d) { return run1(make_node("Range", 11), {s, l, d}); };
  EXPECT_EQ(values_of(range(scalar_i64(1), scalar_i64(10), scalar_i64(3))), (ints{1, 4, 7}));
  EXPECT_EQ(values_of(range(scalar_i64(10), scalar_i64(1), scalar_i64(-4))), (ints{10, 6, 2}));
  EXPECT_EQ(range(scalar_i64(5), scalar_i64(1), scalar_i64(2)).elements(), 0);
  tensor fr = range(f32s({0.5f}, {}), f32s({2.0f}, {}), f32s({0.5f}, {}));
  ASSERT_EQ(fr.shape(), (shape_t{3}));
  EXPECT_FLOAT_EQ(fr.data<float>()[2], 1.5f);
  EXPECT_EQ(code_of(make_node("Range", 11), {scalar_i64(1), scalar_i64(2), scalar_i64(0)}),
            error_code::invalid_model);

  for (int64_t kk : {-2, 0, 1, 5}) {
    op_node e = make_node("EyeLike", 9);
    e.attrs.set("k", kk);
    e.attrs.set("dtype", int64_t{7});  // int64
    tensor y = run1(e, {random_tensor(dtype::f32, {3, 4})});
    ASSERT_EQ(y.type(), dtype::i64);
    for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(y.data<int64_t>()[i], (i % 4 - i / 4) == kk ? 1 : 0);
  }

  for (int64_t axis : {-1, 0, 1}) {
    op_node oh = make_node("OneHot", 11);
    oh.attrs.set("axis", axis);
    tensor idx = i64s({0, -1, 3, 4, -5, 2}, {2, 3});
    tensor vals = f32s({-1.0f, 5.0f}, {2});
    const int64_t depth = 4;
    tensor y = run1(oh, {idx, scalar_i64(depth), vals});
    const int64_t a = axis < 0 ? axis + 3 : axis;
    shape_t want{2, 3};
    want.insert(want.begin() + a, depth);
    ASSERT_EQ(y.shape(), want);
    for (int64_t i = 0; i < y.elements(); ++i) {
      ints c = unravel(i, want);
      const int64_t hot = c[static_cast<size_t>(a)];
      c.erase(c.begin() + a);
      int64_t v = idx.data<int64_t>()[ravel(c, {2, 3})];
      if (v < 0) v += depth;
      EXPECT_EQ(y.data<float>()[i], v == hot ? 5.0f : -1.0f) << i;
    }
  }
}

TEST(CpuTensor, NonZeroFoldsOnlyConstants) {
  tensor x = tensor::from_vector(std::vector<float>{0, 1.5f, 0, -2, 0, 3}, {2, 3});
  tensor y = run1(make_node("NonZero", 13), {x});
  ASSERT_EQ(y.shape(), (shape_t{2, 3}));
  EXPECT_EQ(values_of(y), (ints{0, 1, 1, 1, 0, 2}));
  EXPECT_EQ(infer_without_values(make_node("NonZero", 13), {x.info()}).code(),
            error_code::unsupported);
}

// ---- Resize / Upsample
// ---------------------------------------------------------------------------

/// Bilinear reference for 4-D NCHW with the spec's coordinate formulas and edge clamping.
double bilinear_ref(const tensor& x, int64_t n, int64_t c, double ys, double xs) {
  const int64_t h = x.dim(2), w = x.dim(3);
  ys = std::clamp(ys, 0.0, static_cast<double>(h - 1));
  xs = std::clamp(xs, 0.0, static_cast<double>(w - 1));
  const int64_t y0 = static_cast<int64_t>(std::floor(ys)),
                x0 = static_cast<int64_t>(std::floor(xs));
  const int64_t y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
  const double dy = ys - y0, dx = xs - x0;
  auto at = [&](int64_t yy, int64_t xx) {
    return static_cast<double>(x.data<float>()[((n * x.dim(1) + c) * h + yy) * w + xx]);
  };
  return (1 - dy) * ((1 - dx) * at(y0, x0) + dx * at(y0, x1)) +
         dy * ((1 - dx) * at(y1, x0) + dx * at(y1, x1));
}

TEST(CpuTensor, ResizeLinearAgainstBilinearReference) {
  for (const char* mode : {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"}) {
    for (int iter = 0; iter < 5; ++iter) {
      // The last case is large enough to take the multi-threaded path.
      const bool big = iter == 4;
      tensor x = big ? random_tensor(dtype::f32, {1, 4, 40, 50})
                     : random_tensor(dtype::f32, {2, 3, rand_int(1, 9), rand_int(1, 9)});
      const int64_t oh = big ? 97 : rand_int(1, 13), ow = big ? 203 : rand_int(1, 13);
      op_node n = make_node("Resize", 13);
      n.attrs.set("mode", std::string("linear"));
      n.attrs.set("coordinate_transformation_mode", std::string(mode));
      tensor y = run1(n, {x, tensor(), tensor(), i64s({x.dim(0), x.dim(1), oh, ow})});
      ASSERT_EQ(y.shape(), (shape_t{x.dim(0), x.dim(1), oh, ow}));
      const double sh = static_cast<double>(oh) / x.dim(2), sw = static_cast<double>(ow) / x.dim(3);
      auto coord = [&](int64_t o, double s, int64_t in, int64_t out) {
        const std::string m = mode;
        if (m == "half_pixel") return (o + 0.5) / s - 0.5;
        if (m == "pytorch_half_pixel") return out > 1 ? (o + 0.5) / s - 0.5 : 0.0;
        if (m == "align_corners") return out == 1 ? 0.0 : o * (in - 1.0) / (out - 1.0);
        return o / s;
      };
      for (int64_t i = 0; i < y.elements(); ++i) {
        const ints c = unravel(i, y.shape());
        const double want = bilinear_ref(x, c[0], c[1], coord(c[2], sh, x.dim(2), oh),
                                         coord(c[3], sw, x.dim(3), ow));
        ASSERT_NEAR(y.data<float>()[i], want, 1e-5)
            << mode << " " << x.info().to_string() << " -> " << oh << "x" << ow;
      }
    }
  }
}

/// N-linear reference: a product of 1-D linear weights per axis (half_pixel, edges clamped),
/// summed over all 2^rank corners in double.
TEST(CpuTensor, ResizeTrilinearOverEveryAxis) {
  for (int iter = 0; iter < 6; ++iter) {
    const shape_t in_shape = random_shape(3, 1, 6);
    tensor x = random_tensor(dtype::f32, in_shape);
    std::vector<float> scales{static_cast<float>(rand_int(1, 8)) / 3.0f,
                              static_cast<float>(rand_int(1, 8)) / 3.0f,
                              static_cast<float>(rand_int(1, 8)) / 3.0f};
    op_node n = make_node("Resize", 13);
    n.attrs.set("mode", std::string("linear"));
    tensor y = run1(n, {x, tensor(), f32s(scales, {3})});
    shape_t want(3);
    for (size_t a = 0; a < 3; ++a)
      want[a] = static_cast<int64_t>(std::floor(in_shape[a] * static_cast<double>(scales[a])));
    ASSERT_EQ(y.shape(), want);
    for (int64_t i = 0; i < y.elements(); ++i) {
      const ints c = unravel(i, want);
      int64_t lo[3], hi[3];
      double frac[3];
      for (size_t a = 0; a < 3; ++a) {
        double xo = (c[a] + 0.5) / static_cast<double>(scales[a]) - 0.5;
        xo = std::clamp(xo, 0.0, static_cast<double>(in_shape[a] - 1));
        lo[a] = static_cast<int64_t>(std::floor(xo));
        hi[a] = std::min(lo[a] + 1, in_shape[a] - 1);
        frac[a] = xo - lo[a];
      }
      double acc = 0;
      for (int corner = 0; corner < 8; ++corner) {
        double w = 1;
        ints src(3);
        for (size_t a = 0; a < 3; ++a) {
          const bool up = (corner >> a) & 1;
          w *= up ? frac[a] : 1 - frac[a];
          src[a] = up ? hi[a] : lo[a];
        }
        acc += w * x.data<float>()[ravel(src, in_shape)];
      }
      ASSERT_NEAR(y.data<float>()[i], acc, 1e-5) << x.info().to_string() << " element " << i;
    }
  }
}

TEST(CpuTensor, ResizeNearestModesAndForms) {
  tensor x = random_tensor(dtype::i64, {1, 2, 5, 7}, -100, 100);
  for (const char* nm : {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}) {
    for (const char* cm : {"half_pixel", "asymmetric", "align_corners", "tf_half_pixel_for_nn"}) {
      op_node n = make_node("Resize", 13);
      n.attrs.set("nearest_mode", std::string(nm));
      n.attrs.set("coordinate_transformation_mode", std::string(cm));
      const float s = 1.7f;
      tensor y = run1(n, {x, tensor(), f32s({1, 1, s, s}, {4})});
      const int64_t oh = static_cast<int64_t>(5 * static_cast<double>(s)),
                    ow = static_cast<int64_t>(7 * static_cast<double>(s));
      auto pick = [&](int64_t o, int64_t in, int64_t out_w_unused) {
        (void)out_w_unused;
        const double sd = s, m = [&] {
          const std::string c = cm;
          if (c == "half_pixel") return (o + 0.5) / sd - 0.5;
          if (c == "asymmetric") return o / sd;
          if (c == "align_corners") return o * (in - 1.0) / (in * sd - 1.0);
          return (o + 0.5) / sd;
        }();
        const std::string r = nm;
        double f = std::floor(m);
        int64_t v = r == "floor"                ? static_cast<int64_t>(f)
                    : r == "ceil"               ? static_cast<int64_t>(std::ceil(m))
                    : r == "round_prefer_floor" ? static_cast<int64_t>(m - f <= 0.5 ? f : f + 1)
                                                : static_cast<int64_t>(m - f < 0.5 ? f : f + 1);
        return std::clamp<int64_t>(v, 0, in - 1);
      };
      expect_gathered(y, x, {1, 2, oh, ow}, [&](const ints& c) {
        return ravel({c[0], c[1], pick(c[2], 5, oh), pick(c[3], 7, ow)}, x.shape());
      });
    }
  }
  // Upsample-9 and Resize-10 (asymmetric, floor when upsampling) repeat pixels.
  tensor f = random_tensor(dtype::f32, {1, 1, 2, 3});
  for (auto [op, opset] : {std::pair{"Upsample", 9}, std::pair{"Resize", 10}}) {
    tensor y = run1(make_node(op, opset), {f, f32s({1, 1, 2, 3}, {4})});
    expect_gathered(y, f, {1, 1, 4, 9}, [&](const ints& c) {
      return ravel({0, 0, c[2] / 2, c[3] / 3}, f.shape());
    });
  }
  op_node u7 = make_node("Upsample", 7);
  u7.attrs.set("scales", std::vector<float>{1, 1, 2, 2});
  EXPECT_EQ(run1(u7, {f}).shape(), (shape_t{1, 1, 4, 6}));
  // Opset 18: axes and keep_aspect_ratio_policy.
  op_node r18 = make_node("Resize", 18);
  r18.attrs.set("axes", ints{2, 3});
  r18.attrs.set("keep_aspect_ratio_policy", std::string("not_larger"));
  EXPECT_EQ(run1(r18, {random_tensor(dtype::f32, {1, 1, 4, 8}), tensor(), tensor(), i64s({6, 6})})
                .shape(),
            (shape_t{1, 1, 3, 6}));
  r18.attrs.set("keep_aspect_ratio_policy", std::string("not_smaller"));
  EXPECT_EQ(run1(r18, {random_tensor(dtype::f32, {1, 1, 4, 8}), tensor(), tensor(), i64s({6, 6})})
                .shape(),
            (shape_t{1, 1, 6, 12}));
  EXPECT_EQ(
      code_of(make_node("Resize", 13), {f, tensor(), f32s({1, 1, 2, 2}, {4}), i64s({1, 1, 4, 6})}),
      error_code::invalid_model);
  EXPECT_EQ(infer_without_values(make_node("Resize", 13), {f.info(), {}, {dtype::f32, {4}}}).code(),
            error_code::unsupported);
}

TEST(CpuTensor, ResizeCubicKnownValues) {
  // ONNX's test_resize_upsample_scales_cubic (A=-0.75, half_pixel), first row of the expected
  // output.
  std::vector<float> v(16);
  std::iota(v.begin(), v.end(), 1.0f);
  op_node n = make_node("Resize", 13);
  n.attrs.set("mode", std::string("cubic"));
  tensor y = run1(n, {f32s(v, {1, 1, 4, 4}), tensor(), f32s({1, 1, 2, 2}, {4})});
  ASSERT_EQ(y.shape(), (shape_t{1, 1, 8, 8}));
  const float want[8] = {0.47265625f, 0.76953125f, 1.24609375f, 1.875f,
                         2.28125f,    2.91015625f, 3.38671875f, 3.68359375f};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(y.data<float>()[i], want[i], 1e-5) << i;
}

// ---- the folding chain: Shape -> Gather -> Unsqueeze -> Concat -> Reshape on int64
// ------------------

TEST(CpuTensor, ShapeChainFoldsOnInt64AndInt32) {
  tensor x = random_tensor(dtype::f32, {2, 3, 8});
  tensor shape = run1(make_node("Shape", 13), {x});
  tensor batch = run1(make_node("Gather", 13), {shape, scalar_i64(0)});
  tensor b1 = run1(make_node("Unsqueeze", 13), {batch, i64s({0})});
  op_node cat = make_node("Concat", 13);
  cat.attrs.set("axis", int64_t{0});
  tensor target = run1(cat, {b1, i64s({-1, 4})});
  EXPECT_EQ(values_of(target), (ints{2, -1, 4}));
  EXPECT_EQ(run1(make_node("Reshape", 13), {x, target}).shape(), (shape_t{2, 6, 4}));
  tensor s32 = i32s({5, 6, 7});
  tensor g32 = run1(make_node("Gather", 13), {s32, i64s({2, 0})});
  ASSERT_EQ(g32.type(), dtype::i32);
  EXPECT_EQ(values_of(g32), (ints{7, 5}));
  EXPECT_EQ(values_of(run1(make_node("Squeeze", 13), {i64s({9}, {1, 1}), i64s({0, 1})})),
            (ints{9}));
}

}  // namespace
}  // namespace troupe
