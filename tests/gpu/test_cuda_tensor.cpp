// CUDA data movement against the CPU backend: Transpose, Gather, Concat, Slice, Expand, Pad and
// the views.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

TEST(CudaTensor, Transpose) {
  TROUPE_REQUIRE_GPU();
  struct transpose_case {
    shape_t shape;
    std::vector<int64_t> perm;
  };
  const transpose_case cases[] = {
      {{2, 128, 12, 64}, {0, 2, 1, 3}},  // BERT heads
      {{2, 12, 128, 64}, {0, 1, 3, 2}},  // K^T: batched 2-D
      {{67, 45}, {1, 0}},
      {{4, 3, 37, 41}, {0, 2, 3, 1}},  // image to channels-last: the narrow kernel
      {{4, 37, 41, 3}, {0, 3, 1, 2}},  // and back
      {{5, 300}, {1, 0}},
      {{3, 4, 5}, {2, 0, 1}},
      {{3, 4, 5}, {}},  // default: reversed
      {{2, 1, 3, 1, 4}, {4, 3, 2, 1, 0}},
      {{2, 3, 4, 5, 6}, {1, 3, 0, 4, 2}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(shape_to_string(c.shape));
    op_node n = make_node("Transpose", 13);
    if (!c.perm.empty()) n.attrs.set("perm", c.perm);
    expect_parity(n, {random_tensor(dtype::f32, c.shape)});
    expect_parity(n, {random_tensor(dtype::f32, c.shape)}, {.half = true});
    expect_parity(n, {random_tensor(dtype::i64, c.shape, -100, 100)});
    expect_parity(n, {random_tensor(dtype::boolean, c.shape)});
  }
}

TEST(CudaTensor, Gather) {
  TROUPE_REQUIRE_GPU();
  op_node emb = make_node("Gather", 13);
  // Embedding lookup with negative indices, int64 and int32.
  tensor table = random_tensor(dtype::f32, {100, 768});
  expect_parity(emb, {table, random_tensor(dtype::i64, {2, 16}, -100, 100)});
  expect_parity(emb, {table, random_tensor(dtype::i32, {2, 16}, -100, 100)});
  expect_parity(emb, {table, random_tensor(dtype::i64, {2, 16}, 0, 100)}, {.half = true});
  op_node ax1 = make_node("Gather", 13);
  ax1.attrs.set("axis", int64_t{1});
  expect_parity(ax1, {random_tensor(dtype::f32, {3, 7, 5}), random_tensor(dtype::i64, {4}, -7, 7)});
  expect_parity(ax1,
                {random_tensor(dtype::i64, {3, 7}, -9, 9), tensor::from_vector<int64_t>({2}, {})});
  op_node last = make_node("Gather", 13);
  last.attrs.set("axis", int64_t{-1});
  expect_parity(last,
                {random_tensor(dtype::f32, {3, 7, 5}), random_tensor(dtype::i64, {2, 2}, 0, 5)});
}

TEST(CudaTensor, GatherIndexOutOfRangeFailsTheRunWithATypedError) {
  TROUPE_REQUIRE_GPU();
  op_node emb = make_node("Gather", 13);
  const tensor table = random_tensor(dtype::f32, {100, 8});
  for (int64_t bad : {100, -101, 1000000}) {
    SCOPED_TRACE(bad);
    auto r = run_op_cuda(emb, {table, tensor::from_vector<int64_t>({1, bad, 2}, {3})});
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument) << r.error().to_string();
    EXPECT_NE(r.error().message().find("Gather"), std::string::npos) << r.error().to_string();
    // The fault is cleared: the next run on the same context succeeds.
    expect_parity(emb, {table, tensor::from_vector<int64_t>({0, 99}, {2})});
  }
}

TEST(CudaTensor, Concat) {
  TROUPE_REQUIRE_GPU();
  for (int64_t axis : {0, 1, 2, -1}) {
    SCOPED_TRACE(axis);
    op_node n = make_node("Concat", 13);
    n.attrs.set("axis", axis);
    const shape_t a{2, 3, 4};
    shape_t b = a, c = a;
    const size_t ax = static_cast<size_t>(axis < 0 ? axis + 3 : axis);
    b[ax] = 5;
    c[ax] = 1;
    expect_parity(n, {random_tensor(dtype::f32, a), random_tensor(dtype::f32, b),
                      random_tensor(dtype::f32, c)});
    expect_parity(n, {random_tensor(dtype::i64, a, -5, 5), random_tensor(dtype::i64, b, -5, 5)});
  }
}

TEST(CudaTensor, Split) {
  TROUPE_REQUIRE_GPU();
  auto v = [](std::vector<int64_t> x) {
    return tensor::from_vector<int64_t>(x, {static_cast<int64_t>(x.size())});
  };
  tensor x = random_tensor(dtype::f32, {4, 9, 6});
  op_node even = make_node("Split", 18);
  even.attrs.set("axis", int64_t{1});
  even.attrs.set("num_outputs", int64_t{3});
  expect_parity(even, {x}, {.num_outputs = 3});
  op_node sized = make_node("Split", 13);
  sized.attrs.set("axis", int64_t{-1});
  expect_parity(sized, {x, v({1, 2, 3})}, {.num_outputs = 3, .constant_inputs = {false, true}});
  op_node old = make_node("Split", 11);
  old.attrs.set("split", std::vector<int64_t>{3, 1});
  expect_parity(old, {random_tensor(dtype::i64, {4, 5}, -9, 9)}, {.num_outputs = 2});
}

TEST(CudaTensor, Slice) {
  TROUPE_REQUIRE_GPU();
  auto v = [](std::vector<int64_t> x) {
    return tensor::from_vector<int64_t>(x, {static_cast<int64_t>(x.size())});
  };
  op_node n = make_node("Slice", 13);
  tensor x = random_tensor(dtype::f32, {6, 10, 8});
  expect_parity(n, {x, v({1, 2}), v({5, -1}), v({0, 1}), tensor()});
  expect_parity(n, {x, v({-1, 8}), v({-100, 1}), v({1, 2}), v({-2, -3})});  // negative steps
  expect_parity(n, {x, v({0}), v({INT64_MAX}), v({2}), v({3})});            // clamped end
  expect_parity(n, {x, v({2, 0, 0}), v({4, 10, 8}), tensor(), tensor()}, {.half = true});
  op_node old = make_node("Slice", 9);
  old.attrs.set("starts", std::vector<int64_t>{1});
  old.attrs.set("ends", std::vector<int64_t>{3});
  old.attrs.set("axes", std::vector<int64_t>{-1});
  expect_parity(old, {x});
}

TEST(CudaTensor, Expand) {
  TROUPE_REQUIRE_GPU();
  auto v = [](std::vector<int64_t> x) {
    return tensor::from_vector<int64_t>(x, {static_cast<int64_t>(x.size())});
  };
  op_node n = make_node("Expand", 13);
  expect_parity(n, {random_tensor(dtype::f32, {3, 1}), v({2, 3, 4})});
  expect_parity(n, {random_tensor(dtype::f32, {1, 4}), v({3, 1})});
  expect_parity(n, {random_tensor(dtype::boolean, {2, 1, 1, 5}), v({2, 12, 5, 5})});
  expect_parity(n, {random_tensor(dtype::i64, {1}, -5, 5), v({7})});
}

TEST(CudaTensor, PadConstant) {
  TROUPE_REQUIRE_GPU();
  auto v = [](std::vector<int64_t> x) {
    return tensor::from_vector<int64_t>(x, {static_cast<int64_t>(x.size())});
  };
  op_node n = make_node("Pad", 13);
  tensor x = random_tensor(dtype::f32, {2, 3, 4, 5});
  expect_parity(n, {x, v({0, 0, 1, 2, 0, 0, 3, 0})});
  expect_parity(n, {x, v({0, 1, -1, 0, 0, 0, 1, -2}), tensor::from_vector<float>({2.5f}, {})});
  op_node old = make_node("Pad", 2);
  old.attrs.set("pads", std::vector<int64_t>{0, 0, 1, 1, 0, 0, 1, 1});
  old.attrs.set("value", 1.5f);
  expect_parity(old, {x});
}

TEST(CudaTensor, ViewsAndTheirCopyFallback) {
  TROUPE_REQUIRE_GPU();
  auto v = [](std::vector<int64_t> x) {
    return tensor::from_vector<int64_t>(x, {static_cast<int64_t>(x.size())});
  };
  expect_parity(make_node("Reshape", 14), {random_tensor(dtype::f32, {2, 3, 4}), v({6, -1})});
  op_node flat = make_node("Flatten", 13);
  flat.attrs.set("axis", int64_t{2});
  expect_parity(flat, {random_tensor(dtype::f32, {2, 3, 4})});
  expect_parity(make_node("Unsqueeze", 13), {random_tensor(dtype::f32, {2, 3}), v({0, 3})});
  expect_parity(make_node("Identity", 13), {random_tensor(dtype::i64, {5}, 0, 9)});
}

}  // namespace
}  // namespace troupe::testing
