// CUDA reductions, Softmax/LogSoftmax and LayerNormalization against the CPU backend.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

struct reduce_case {
  shape_t shape;
  std::vector<int64_t> axes;  // empty: all
  int64_t keepdims;
};

TEST(CudaReduction, ReduceOverBlocksOfAxes) {
  TROUPE_REQUIRE_GPU();
  const reduce_case cases[] = {
      {{4, 6, 40}, {-1}, 1},      // rows, warp per row
      {{3, 3000}, {1}, 0},        // long rows, block per row
      {{4, 6, 40}, {1, 2}, 0},    // trailing block
      {{4, 6, 40}, {0}, 1},       // leading axis: strided
      {{4, 6, 40}, {1}, 1},       // middle axis
      {{2, 3, 1, 5}, {1, 2}, 1},  // a size-1 axis inside the block
      {{5, 7}, {}, 0},            // everything
  };
  for (const char* op : {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare",
                         "ReduceL2", "ReduceLogSumExp"}) {
    for (const auto& c : cases) {
      for (int64_t opset : {13, 18}) {
        SCOPED_TRACE(std::string(op) + " " + shape_to_string(c.shape) + " opset " +
                     std::to_string(opset));
        op_node n = make_node(op, opset);
        n.attrs.set("keepdims", c.keepdims);
        std::vector<tensor> inputs{random_tensor(dtype::f32, c.shape)};
        const bool axes_input = opset >= 18 || (std::string(op) == "ReduceSum" && opset >= 13);
        if (axes_input) {
          inputs.push_back(c.axes.empty() ? tensor()
                                          : tensor::from_vector<int64_t>(
                                                c.axes, {static_cast<int64_t>(c.axes.size())}));
        } else if (!c.axes.empty()) {
          n.attrs.set("axes", c.axes);
        }
        parity_options o;
        o.constant_inputs = {false, true};
        expect_parity(n, inputs, o);
        o.half = true;
        expect_parity(n, inputs, o);
      }
    }
  }
}

TEST(CudaReduction, NoopWithEmptyAxes) {
  TROUPE_REQUIRE_GPU();
  op_node n = make_node("ReduceSum", 13);
  n.attrs.set("noop_with_empty_axes", int64_t{1});
  expect_parity(n, {random_tensor(dtype::f32, {3, 4})});
}

TEST(CudaReduction, GlobalPools) {
  TROUPE_REQUIRE_GPU();
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    expect_parity(make_node(op), {random_tensor(dtype::f32, {2, 64, 7, 7})});
    expect_parity(make_node(op), {random_tensor(dtype::f32, {2, 16, 40, 40})}, {.half = true});
  }
}

TEST(CudaReduction, Softmax) {
  TROUPE_REQUIRE_GPU();
  struct softmax_case {
    shape_t shape;
    int64_t axis;
    int64_t opset;
  };
  const softmax_case cases[] = {
      {{2, 12, 128, 128}, -1, 13},  // BERT attention
      {{4, 3000}, 1, 13},           // long rows
      {{4, 5, 6}, 1, 13},           // middle axis
      {{4, 5, 6}, 1, 11},           // coerced to 2-D: rows of 30
      {{7, 33}, -1, 11},
  };
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    for (const auto& c : cases) {
      SCOPED_TRACE(std::string(op) + " " + shape_to_string(c.shape));
      op_node n = make_node(op, c.opset);
      n.attrs.set("axis", c.axis);
      expect_parity(n, {random_tensor(dtype::f32, c.shape, -5, 5)});
      expect_parity(n, {random_tensor(dtype::f32, c.shape, -5, 5)}, {.half = true});
    }
  }
}

TEST(CudaReduction, LayerNormalization) {
  TROUPE_REQUIRE_GPU();
  struct ln_case {
    shape_t shape;
    int64_t axis;
  };
  const ln_case cases[] = {{{2, 16, 768}, -1}, {{3, 4000}, -1}, {{2, 3, 4, 5}, 2}, {{5, 7}, 0}};
  for (const auto& c : cases) {
    SCOPED_TRACE(shape_to_string(c.shape));
    op_node n = make_node("LayerNormalization", 17);
    n.attrs.set("axis", c.axis);
    n.attrs.set("epsilon", 1e-5f);
    const size_t a =
        static_cast<size_t>(c.axis < 0 ? c.axis + static_cast<int64_t>(c.shape.size()) : c.axis);
    const shape_t norm(c.shape.begin() + static_cast<std::ptrdiff_t>(a), c.shape.end());
    tensor x = random_tensor(dtype::f32, c.shape, -3, 3);
    tensor scale = random_tensor(dtype::f32, norm, 0.5, 1.5);
    tensor bias = random_tensor(dtype::f32, norm);
    expect_parity(n, {x, scale, bias});
    expect_parity(n, {x, scale, tensor()});
    expect_parity(n, {x, scale, bias}, {.half = true});
    // Mean and InvStdDev outputs.
    expect_parity(n, {x, scale, bias}, {.num_outputs = 3});
  }
}

}  // namespace
}  // namespace troupe::testing
