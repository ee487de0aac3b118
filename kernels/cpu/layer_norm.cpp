// CPU LayerNormalization (opset 17; ONNX Runtime's earlier exporters used the same op): each
// row of X (the dims from `axis` on) is normalised with its own mean and variance, computed in
// two passes for accuracy, then scaled and shifted. Rows run in parallel. Outputs 1 and 2 (Mean,
// InvStdDev, float) are written when the node has them.
#include <cmath>
#include <cstring>

#include "kernels/cpu/ew_common.hpp"
#include "kernels/ops/reduction_params.hpp"

namespace troupe::kernels::cpu {
namespace {

/// Normalises rows [begin, end). scale/bias have row_size elements (bias may be null);
/// mean_out / inv_out (may be null) receive each row's statistics.
template <class T>
[[gnu::always_inline]] inline void layer_norm_rows(const T* x, T* y, const T* scale, const T* bias,
                                                   float* mean_out, float* inv_out, int64_t n,
                                                   T epsilon, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    const T mean = sum / static_cast<T>(n);
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < n; ++i) {
      const T d = xr[i] - mean;
      sq += d * d;
    }
    const T inv = T(1) / std::sqrt(sq / static_cast<T>(n) + epsilon);
    if (bias) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * inv * scale[i] + bias[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * inv * scale[i];
    }
    if (mean_out) mean_out[r] = static_cast<float>(mean);
    if (inv_out) inv_out[r] = static_cast<float>(inv);
  }
}

template <class T>
TROUPE_SIMD_CLONES void layer_norm_clones(const T* x, T* y, const T* scale, const T* bias,
                                          float* mean_out, float* inv_out, int64_t n, T epsilon,
                                          int64_t begin, int64_t end) {
  layer_norm_rows(x, y, scale, bias, mean_out, inv_out, n, epsilon, begin, end);
}

template <class T>
void layer_norm_plain(const T* x, T* y, const T* scale, const T* bias, float* mean_out,
                      float* inv_out, int64_t n, T epsilon, int64_t begin, int64_t end) {
  layer_norm_rows(x, y, scale, bias, mean_out, inv_out, n, epsilon, begin, end);
}

/// Scale or B when it has fewer elements than a row: for each row element, the element of the
/// broadcast input it reads. Expanded into the workspace at each run.
std::vector<int64_t> broadcast_index(const shape_t& row_shape, const shape_t& in_shape) {
  const int64_t n = element_count(row_shape);
  std::vector<int64_t> index(static_cast<size_t>(n));
  for (int64_t flat = 0; flat < n; ++flat) {
    int64_t rest = flat, src = 0, stride = 1;
    for (size_t k = row_shape.size(); k-- > 0;) {
      const int64_t i = rest % row_shape[k];
      rest /= row_shape[k];
      const size_t lead = row_shape.size() - in_shape.size();
      if (k >= lead) {
        const int64_t d = in_shape[k - lead];
        if (d != 1) src += i * stride;
        stride *= d;
      }
    }
    index[static_cast<size_t>(flat)] = src;
  }
  return index;
}

template <class T>
class layer_norm_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_ASSIGN_OR_RETURN(auto p, resolve_layer_norm(reduction_view(ctx)));
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(T)}, {1, sizeof(T)}}, sizeof(T)));
    if (ctx.has_input(2)) TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{2, sizeof(T)}}, sizeof(T)));
    for (size_t i = 1; i < ctx.outputs.size(); ++i) {
      if (ctx.outputs[i].present() && ctx.outputs[i].type != dtype::f32) {
        return ctx.fail(error_code::invalid_model, "Mean and InvStdDev must be float");
      }
    }
    auto k = std::unique_ptr<layer_norm_kernel>(new layer_norm_kernel());
    k->p_ = p;
    k->has_bias_ = ctx.has_input(2);
    const shape_t row_shape(ctx.inputs[0].shape.begin() + p.axis, ctx.inputs[0].shape.end());
    for (int i = 1; i <= 2; ++i) {
      if (!ctx.has_input(static_cast<size_t>(i))) continue;
      const tensor_info& info = ctx.inputs[static_cast<size_t>(i)];
      if (info.elements() != p.row_size) {
        k->expand_[i - 1] = broadcast_index(row_shape, info.shape);
      }
    }
    return std::unique_ptr<kernel>(std::move(k));
  }

  size_t workspace_bytes() const override {
    size_t bytes = 0;
    for (const auto& e : expand_) bytes += e.size() * sizeof(T);
    return bytes;
  }

  status compute(kernel_run_context& ctx) override {
    const T* x = ctx.inputs[0].data<T>();
    T* y = ctx.outputs[0].data<T>();
    const T* params[2] = {ctx.inputs[1].data<T>(), has_bias_ ? ctx.inputs[2].data<T>() : nullptr};
    T* ws = static_cast<T*>(ctx.workspace);
    for (int i = 0; i < 2; ++i) {
      if (expand_[i].empty() || !params[i]) continue;
      const T* src = params[i];
      for (size_t j = 0; j < expand_[i].size(); ++j) ws[j] = src[expand_[i][j]];
      params[i] = ws;
      ws += expand_[i].size();
    }
    float* mean_out =
        ctx.outputs.size() > 1 && ctx.outputs[1].defined() ? ctx.outputs[1].data<float>() : nullptr;
    float* inv_out =
        ctx.outputs.size() > 2 && ctx.outputs[2].defined() ? ctx.outputs[2].data<float>() : nullptr;
    const int64_t n = p_.row_size;
    const T eps = static_cast<T>(p_.epsilon);
    if (n == 0) return status::ok();
    parallel_for(p_.rows, std::max<int64_t>(1, cheap_grain / (4 * n)), [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<T, float>) {
        layer_norm_clones(x, y, params[0], params[1], mean_out, inv_out, n, eps, b, e);
      } else {
        layer_norm_plain(x, y, params[0], params[1], mean_out, inv_out, n, eps, b, e);
      }
    });
    return status::ok();
  }
  /// Each row is read (twice) before it is written.
  std::vector<std::pair<int, int>> inplace_pairs() const override { return {{0, 0}}; }

 private:
  layer_norm_params p_;
  bool has_bias_ = false;
  std::vector<int64_t> expand_[2];  // Scale, B: gather indices when not row-sized
};

}  // namespace

void register_layer_norm(kernel_registry& r) {
  r.add({"",
         "LayerNormalization",
         backend::cpu,
         {dtype::f32},
         0,
         {},
         &layer_norm_kernel<float>::create});
  r.add({"",
         "LayerNormalization",
         backend::cpu,
         {dtype::f64},
         0,
         {},
         &layer_norm_kernel<double>::create});
}

}  // namespace troupe::kernels::cpu
