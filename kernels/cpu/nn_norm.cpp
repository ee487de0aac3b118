// BatchNormalization (inference), InstanceNormalization and LpNormalization as direct loops: each
// is one or two memory-bound passes, where oneDNN would add reorders and nothing else.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/dnnl_common.hpp"
#include "kernels/op_schema.hpp"

namespace troupe::kernels::cpu {
namespace {

using dnnl_util::make_noop_kernel;

// BatchNormalization: y = x * scale' + shift' per channel with scale' = scale / sqrt(var + eps),
// shift' = bias - mean * scale'. With all four parameters constant (the usual case) scale'/shift'
// are folded at create time; otherwise they are recomputed per run into the workspace.
class batch_norm_kernel final : public kernel {
 public:
  batch_norm_kernel(int64_t outer, int64_t channels, int64_t inner, float epsilon, tensor folded)
      : outer_(outer),
        channels_(channels),
        inner_(inner),
        epsilon_(epsilon),
        folded_(std::move(folded)) {}

  status compute(kernel_run_context& ctx) override {
    const float* scale_shift =
        folded_.defined()
            ? folded_.data<float>()
            : fold(ctx, reinterpret_cast<float*>(dnnl_util::align_workspace(ctx.workspace)));
    const float* x = ctx.inputs[0].data<float>();
    float* y = ctx.outputs[0].data<float>();
    const int64_t planes = outer_ * channels_, inner = inner_, channels = channels_;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t c = p % channels;
      const float a = scale_shift[c], b = scale_shift[channels + c];
      const float* xp = x + p * inner;
      float* yp = y + p * inner;
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) yp[i] = xp[i] * a + b;
    }
    return status::ok();
  }
  size_t workspace_bytes() const override {
    return folded_.defined() ? 0 : static_cast<size_t>(2 * channels_) * sizeof(float) + 64;
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override {
    return {{0, 0}};
  }
  bool reads_constant_input(int i) const override {
    return i == 0 || !folded_.defined();
  }

  /// scale' at [0, C), shift' at [C, 2C) of `out`, from the scale, B, mean, var inputs.
  static void fold_into(const float* scale, const float* bias, const float* mean, const float* var,
                        int64_t channels, float epsilon, float* out) {
    for (int64_t c = 0; c < channels; ++c) {
      const float a = scale[c] / std::sqrt(var[c] + epsilon);
      out[c] = a;
      out[channels + c] = bias[c] - mean[c] * a;
    }
  }

 private:
  const float* fold(const kernel_run_context& ctx, float* out) const {
    fold_into(ctx.inputs[1].data<float>(), ctx.inputs[2].data<float>(), ctx.inputs[3].data<float>(),
              ctx.inputs[4].data<float>(), channels_, epsilon_, out);
    return out;
  }

  int64_t outer_, channels_, inner_;
  float epsilon_;
  tensor folded_;  // (2C) when every parameter was constant at create time
};

expected<std::unique_ptr<kernel>> create_batch_norm(const kernel_create_context& ctx) {
  const op_node& node = ctx.node;
  if (node.attrs.get_int("training_mode", 0) != 0)
    return ctx.fail(error_code::unsupported, "training_mode=1");
  if (ctx.outputs.size() > 1)
    return ctx.fail(error_code::unsupported, "outputs beyond Y (training statistics)");
  const shape_t& xs = ctx.inputs[0].shape;
  if (xs.size() < 2) return ctx.fail(error_code::invalid_model, "X must have rank >= 2");
  for (size_t i = 1; i <= 4; ++i) {
    if (!ctx.has_input(i) || ctx.inputs[i].type != dtype::f32) {
      return ctx.fail(error_code::invalid_model,
                      "input " + std::to_string(i) + " must be present and f32");
    }
  }
  const bool per_activation = node.opset < 9 && node.attrs.get_int("spatial", 1) == 0;
  const int64_t outer = xs[0];
  const int64_t channels =
      per_activation ? element_count(shape_t(xs.begin() + 1, xs.end())) : xs[1];
  const int64_t inner = per_activation ? 1 : element_count(shape_t(xs.begin() + 2, xs.end()));
  for (size_t i = 1; i <= 4; ++i) {
    if (ctx.inputs[i].elements() != channels) {
      return ctx.fail(error_code::invalid_model, "input " + std::to_string(i) + " " +
                                                     ctx.inputs[i].to_string() +
                                                     " does not match X's channels");
    }
  }
  const float epsilon = node.attrs.get_float("epsilon", 1e-5f);
  tensor folded;
  if (ctx.value(1) && ctx.value(2) && ctx.value(3) && ctx.value(4)) {
    folded = tensor::allocate(dtype::f32, {2 * channels});
    batch_norm_kernel::fold_into(ctx.value(1)->data<float>(), ctx.value(2)->data<float>(),
                                 ctx.value(3)->data<float>(), ctx.value(4)->data<float>(), channels,
                                 epsilon, folded.data<float>());
  }
  return std::unique_ptr<kernel>(
      new batch_norm_kernel(outer, channels, inner, epsilon, std::move(folded)));
}

expected<std::unique_ptr<kernel>> create_instance_norm(const kernel_create_context& ctx) {
  const shape_t& xs = ctx.inputs[0].shape;
  if (xs.size() < 2) return ctx.fail(error_code::invalid_model, "X must have rank >= 2");
  const int64_t channels = xs[1];
  const int64_t planes = xs[0] * channels;
  const int64_t inner = element_count(shape_t(xs.begin() + 2, xs.end()));
  const float epsilon = ctx.node.attrs.get_float("epsilon", 1e-5f);
  if (planes == 0 || inner == 0) return make_noop_kernel();
  return make_function_kernel(
      [channels, planes, inner, epsilon](kernel_run_context& rc) {
        const float* x = rc.inputs[0].data<float>();
        const float* scale = rc.inputs[1].data<float>();
        const float* bias = rc.inputs[2].data<float>();
        float* y = rc.outputs[0].data<float>();
#pragma omp parallel for schedule(static)
        for (int64_t p = 0; p < planes; ++p) {
          const float* xp = x + p * inner;
          float* yp = y + p * inner;
          // Two passes in double: the plane is read before any element of it is written, so Y may
          // share X's storage.
          double sum = 0.0;
          for (int64_t i = 0; i < inner; ++i) sum += xp[i];
          const double mean = sum / static_cast<double>(inner);
          double sq = 0.0;
          for (int64_t i = 0; i < inner; ++i) sq += (xp[i] - mean) * (xp[i] - mean);
          const double var = sq / static_cast<double>(inner);
          const int64_t c = p % channels;
          const float a = static_cast<float>(scale[c] / std::sqrt(var + epsilon));
          const float b = static_cast<float>(bias[c] - mean * a);
#pragma omp simd
          for (int64_t i = 0; i < inner; ++i) yp[i] = xp[i] * a + b;
        }
        return status::ok();
      },
      {{0, 0}});
}

expected<std::unique_ptr<kernel>> create_lp_norm(const kernel_create_context& ctx) {
  const shape_t& xs = ctx.inputs[0].shape;
  TROUPE_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.node.attrs.get_int("axis", -1),
                                                       static_cast<int64_t>(xs.size())));
  const int64_t p = ctx.node.attrs.get_int("p", 2);
  if (p != 1 && p != 2) return ctx.fail(error_code::invalid_model, "p must be 1 or 2");
  if (xs.empty()) return ctx.fail(error_code::invalid_model, "X must have rank >= 1");
  const int64_t outer = element_count(shape_t(xs.begin(), xs.begin() + axis));
  const int64_t len = xs[static_cast<size_t>(axis)];
  const int64_t inner = element_count(shape_t(xs.begin() + axis + 1, xs.end()));
  if (outer * len * inner == 0) return make_noop_kernel();
  return make_function_kernel(
      [outer, len, inner, p](kernel_run_context& rc) {
        const float* x = rc.inputs[0].data<float>();
        float* y = rc.outputs[0].data<float>();
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < outer * inner; ++o) {
          const int64_t base = (o / inner) * len * inner + o % inner;
          double norm = 0.0;
          for (int64_t j = 0; j < len; ++j) {
            const double v = x[base + j * inner];
            norm += p == 1 ? std::fabs(v) : v * v;
          }
          if (p == 2) norm = std::sqrt(norm);
          // Like the ONNX reference, a zero vector divides by zero (NaN).
          const float inv = static_cast<float>(1.0 / norm);
          for (int64_t j = 0; j < len; ++j) y[base + j * inner] = x[base + j * inner] * inv;
        }
        return status::ok();
      },
      {{0, 0}});
}

}  // namespace

void register_nn_norm(kernel_registry& r) {
  r.add({"", "BatchNormalization", backend::cpu, float_types(), 0, {}, create_batch_norm});
  r.add({"", "InstanceNormalization", backend::cpu, float_types(), 0, {}, create_instance_norm});
  r.add({"", "LpNormalization", backend::cpu, float_types(), 0, {}, create_lp_norm});
}

}  // namespace troupe::kernels::cpu
