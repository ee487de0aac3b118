// CUDA reductions (Reduce* over a contiguous block of axes), GlobalAveragePool/GlobalMaxPool,
// Softmax/LogSoftmax and LayerNormalization.
#include <algorithm>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/reduction.cuh"
#include "kernels/op_schema.hpp"

namespace troupe::kernels::cuda {
namespace {

struct row_view {
  int64_t outer = 1;
  int64_t extent = 1;
  int64_t inner = 1;
};

int64_t product(const shape_t& s, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= s[i];
  return p;
}

/// The reduced axes of a Reduce* node, sorted; `noop` when the node copies its input unchanged
/// (empty axes with noop_with_empty_axes).
expected<std::vector<int64_t>> reduce_axes(const kernel_create_context& c, bool* noop) {
  *noop = false;
  const int64_t rank = static_cast<int64_t>(c.inputs[0].rank());
  const bool axes_input =
      c.node.opset >= 18 || (c.node.op_type == "ReduceSum" && c.node.opset >= 13);
  std::vector<int64_t> axes;
  if (axes_input) {
    if (c.has_input(1)) {
      const tensor* v = c.value(1);
      if (!v) return c.fail(error_code::unsupported, "axes must be a constant on the cuda backend");
      axes = v->to_int64_vector();
    }
  } else {
    axes = c.node.attrs.get_ints("axes");
  }
  if (axes.empty()) {
    if (c.node.attrs.get_int("noop_with_empty_axes", 0) != 0) {
      *noop = true;
      return axes;
    }
    for (int64_t a = 0; a < rank; ++a) axes.push_back(a);
  }
  for (auto& a : axes) {
    auto n = normalize_axis(a, rank);
    if (!n) return c.fail(error_code::invalid_model, n.error().message());
    a = *n;
  }
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  return axes;
}

expected<std::unique_ptr<kernel>> make_copy_kernel(size_t bytes) {
  // Input 1 (axes) is read at create time.
  return make_kernel(
      [bytes](kernel_run_context& ctx) -> status {
        if (ctx.outputs[0].raw() == ctx.inputs[0].raw()) return status::ok();
        TROUPE_CUDA_CHECK(cudaMemcpyAsync(ctx.outputs[0].raw(), ctx.inputs[0].raw(), bytes,
                                          cudaMemcpyDeviceToDevice, to_stream(ctx.stream)));
        return status::ok();
      },
      0, {{0, 0}}, false, {1});
}

expected<std::unique_ptr<kernel>> make_reduce_kernel(reduce_op op, dtype t, row_view v) {
  return make_kernel(
      [op, t, v](kernel_run_context& ctx) {
        return launch_reduce(op, t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), v.outer, v.extent,
                             v.inner, ctx.stream);
      },
      0, {}, false, {1});
}

void add_reduce(kernel_registry& r, const char* op_type, reduce_op op) {
  r.add({"",
         op_type,
         backend::cuda,
         gpu_float_types(),
         0,
         {},
         [op](const kernel_create_context& c) -> expected<std::unique_ptr<kernel>> {
           bool noop = false;
           TROUPE_ASSIGN_OR_RETURN(std::vector<int64_t> axes, reduce_axes(c, &noop));
           const shape_t& s = c.inputs[0].shape;
           if (noop) return make_copy_kernel(c.outputs[0].bytes());
           // A scalar (rank 0): the op still applies to its one element (SumSquare, L2...).
           if (axes.empty()) return make_reduce_kernel(op, c.inputs[0].type, row_view{1, 1, 1});
           // The reduced axes must form one block once size-1 axes are ignored.
           const size_t first = static_cast<size_t>(axes.front());
           const size_t last = static_cast<size_t>(axes.back());
           for (size_t d = first; d <= last; ++d) {
             const bool reduced =
                 std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(d));
             if (!reduced && s[d] != 1) {
               return c.fail(error_code::unsupported,
                             "the cuda backend reduces one contiguous block of axes only");
             }
           }
           row_view v{product(s, 0, first), product(s, first, last + 1),
                      product(s, last + 1, s.size())};
           return make_reduce_kernel(op, c.inputs[0].type, v);
         }});
}

void add_global_pool(kernel_registry& r, const char* op_type, reduce_op op) {
  r.add({"",
         op_type,
         backend::cuda,
         gpu_float_types(),
         0,
         {},
         [op](const kernel_create_context& c) -> expected<std::unique_ptr<kernel>> {
           const shape_t& s = c.inputs[0].shape;
           if (s.size() < 3)
             return c.fail(error_code::invalid_model, "input must be N x C x D1...");
           row_view v{s[0] * s[1], product(s, 2, s.size()), 1};
           return make_reduce_kernel(op, c.inputs[0].type, v);
         }});
}

void add_softmax(kernel_registry& r, const char* op_type, bool log) {
  r.add({"",
         op_type,
         backend::cuda,
         gpu_float_types(),
         0,
         {},
         [log](const kernel_create_context& c) -> expected<std::unique_ptr<kernel>> {
           const shape_t& s = c.inputs[0].shape;
           const int64_t rank = static_cast<int64_t>(s.size());
           const bool legacy = c.node.opset < 13;  // coerce to 2-D at axis
           auto axis = normalize_axis(c.node.attrs.get_int("axis", legacy ? 1 : -1), rank);
           if (!axis) return c.fail(error_code::invalid_model, axis.error().message());
           const size_t a = static_cast<size_t>(*axis);
           row_view v;
           if (legacy) {
             v = {product(s, 0, a), product(s, a, s.size()), 1};
           } else if (rank == 0) {
             v = {1, 1, 1};
           } else {
             v = {product(s, 0, a), s[a], product(s, a + 1, s.size())};
           }
           const dtype t = c.inputs[0].type;
           return make_kernel(
               [t, log, v](kernel_run_context& ctx) {
                 return launch_softmax(t, log, ctx.inputs[0].raw(), ctx.outputs[0].raw(), v.outer,
                                       v.extent, v.inner, ctx.stream);
               },
               0, {{0, 0}});
         }});
}

expected<std::unique_ptr<kernel>> create_layer_norm(const kernel_create_context& c) {
  const shape_t& s = c.inputs[0].shape;
  const dtype t = c.inputs[0].type;
  const int64_t rank = static_cast<int64_t>(s.size());
  auto axis = normalize_axis(c.node.attrs.get_int("axis", -1), rank);
  if (!axis) return c.fail(error_code::invalid_model, axis.error().message());
  const int64_t rows = product(s, 0, static_cast<size_t>(*axis));
  const int64_t cols = product(s, static_cast<size_t>(*axis), s.size());
  const float epsilon = c.node.attrs.get_float("epsilon", 1e-5f);
  if (!c.has_input(1)) return c.fail(error_code::invalid_model, "Scale is required");
  for (size_t k = 1; k <= 2; ++k) {
    if (!c.has_input(k)) continue;
    if (c.inputs[k].type != t) {
      return c.fail(error_code::unsupported, "Scale/B of another dtype than X on the cuda backend");
    }
    if (c.inputs[k].elements() != cols) {
      return c.fail(error_code::unsupported,
                    "Scale/B must have the normalised block's shape on the cuda backend");
    }
  }
  const bool has_bias = c.has_input(2);
  bool stats[2] = {false, false};
  for (size_t k = 1; k <= 2; ++k) {
    if (k < c.outputs.size() && c.outputs[k].present()) {
      if (c.outputs[k].type != dtype::f32) {
        return c.fail(error_code::unsupported, "Mean/InvStdDev must be float on the cuda backend");
      }
      stats[k - 1] = true;
    }
  }
  return make_kernel(
      [=](kernel_run_context& ctx) {
        float* mean = stats[0] ? ctx.outputs[1].data<float>() : nullptr;
        float* inv_std = stats[1] ? ctx.outputs[2].data<float>() : nullptr;
        return launch_layer_norm(t, ctx.inputs[0].raw(), ctx.inputs[1].raw(),
                                 has_bias ? ctx.inputs[2].raw() : nullptr, ctx.outputs[0].raw(),
                                 mean, inv_std, rows, cols, epsilon, ctx.stream);
      },
      0, {{0, 0}});
}

}  // namespace

void register_reduction(kernel_registry& r) {
  add_reduce(r, "ReduceSum", reduce_op::sum);
  add_reduce(r, "ReduceMean", reduce_op::mean);
  add_reduce(r, "ReduceMax", reduce_op::max);
  add_reduce(r, "ReduceMin", reduce_op::min);
  add_reduce(r, "ReduceProd", reduce_op::prod);
  add_reduce(r, "ReduceSumSquare", reduce_op::sum_square);
  add_reduce(r, "ReduceL1", reduce_op::l1);
  add_reduce(r, "ReduceL2", reduce_op::l2);
  add_reduce(r, "ReduceLogSum", reduce_op::log_sum);
  add_reduce(r, "ReduceLogSumExp", reduce_op::log_sum_exp);
  add_global_pool(r, "GlobalAveragePool", reduce_op::mean);
  add_global_pool(r, "GlobalMaxPool", reduce_op::max);
  add_softmax(r, "Softmax", false);
  add_softmax(r, "LogSoftmax", true);
  r.add({"", "LayerNormalization", backend::cuda, gpu_float_types(), 0, {}, create_layer_norm});
}

}  // namespace troupe::kernels::cuda
