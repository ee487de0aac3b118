// CPU TopK: for each slice along the axis, a partial sort of element indices (O(n log k)) in a
// per-thread workspace buffer. Order: by value (largest or smallest first), ties by the lower
// index, as ONNX specifies. NaN counts as larger than every number, which keeps the order a
// strict weak ordering whatever the data (std::sort's requirement; violating it is undefined).
#include <algorithm>
#include <cmath>

#include "kernels/cpu/ew_common.hpp"
#include "kernels/ops/reduction_params.hpp"

namespace troupe::kernels::cpu {
namespace {

template <class T>
bool greater_total(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (a != a) return b == b;  // NaN > number; NaN == NaN
    if (b != b) return false;
  }
  return a > b;
}

template <class T>
class topk_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_ASSIGN_OR_RETURN(auto p, resolve_topk(reduction_view(ctx)));
    if (ctx.outputs.size() < 2 || ctx.outputs[1].type != dtype::i64) {
      return ctx.fail(error_code::invalid_model, "TopK has two outputs, the second int64");
    }
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(T)}}, sizeof(T)));
    auto k = std::unique_ptr<topk_kernel>(new topk_kernel());
    k->p_ = p;
    const shape_t& s = ctx.inputs[0].shape;
    for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
      if (d < p.axis) k->outer_ *= s[static_cast<size_t>(d)];
      if (d > p.axis) k->inner_ *= s[static_cast<size_t>(d)];
    }
    k->n_ = s[static_cast<size_t>(p.axis)];
    k->threads_ = std::max(1, omp_get_max_threads());
    return std::unique_ptr<kernel>(std::move(k));
  }

  size_t workspace_bytes() const override {
    return static_cast<size_t>(threads_) * static_cast<size_t>(n_) * sizeof(int64_t);
  }

  status compute(kernel_run_context& ctx) override {
    const T* x = ctx.inputs[0].data<T>();
    T* values = ctx.outputs[0].data<T>();
    int64_t* indices = ctx.outputs[1].data<int64_t>();
    auto* ws = static_cast<int64_t*>(ctx.workspace);
    const int64_t slices = outer_ * inner_;
    if (slices == 0 || p_.k == 0) return status::ok();
    const int64_t per_slice = std::max<int64_t>(1, n_);
    int threads = static_cast<int>(
        std::min<int64_t>(threads_, std::max<int64_t>(1, slices * per_slice / costly_grain)));
    threads = std::min<int64_t>(threads, slices);
    if (omp_in_parallel()) threads = 1;
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t* order = ws + static_cast<int64_t>(t) * n_;
      for (int64_t s = slices * t / nt; s < slices * (t + 1) / nt; ++s)
        run_slice(x, values, indices, order, s);
    }
    return status::ok();
  }
  bool reads_constant_input(int i) const override {
    return i == 0;
  }

 private:
  void run_slice(const T* x, T* values, int64_t* indices, int64_t* order, int64_t s) const {
    const int64_t o = s / inner_, i = s % inner_;
    const T* base = x + o * n_ * inner_ + i;
    for (int64_t j = 0; j < n_; ++j) order[j] = j;
    auto value = [&](int64_t j) { return base[j * inner_]; };
    auto by_largest = [&](int64_t a, int64_t b) {
      const T va = value(a), vb = value(b);
      if (greater_total(va, vb)) return true;
      if (greater_total(vb, va)) return false;
      return a < b;
    };
    auto by_smallest = [&](int64_t a, int64_t b) {
      const T va = value(a), vb = value(b);
      if (greater_total(vb, va)) return true;
      if (greater_total(va, vb)) return false;
      return a < b;
    };
    if (p_.largest) {
      std::partial_sort(order, order + p_.k, order + n_, by_largest);
    } else {
      std::partial_sort(order, order + p_.k, order + n_, by_smallest);
    }
    T* vout = values + o * p_.k * inner_ + i;
    int64_t* iout = indices + o * p_.k * inner_ + i;
    for (int64_t j = 0; j < p_.k; ++j) {
      vout[j * inner_] = value(order[j]);
      iout[j * inner_] = order[j];
    }
  }

  topk_params p_;
  int64_t outer_ = 1, inner_ = 1, n_ = 0;
  int threads_ = 1;
};

template <class... Ts>
void add_topk(kernel_registry& r) {
  (r.add({"", "TopK", backend::cpu, {type_of<Ts>::value}, 0, {}, &topk_kernel<Ts>::create}), ...);
}

}  // namespace

void register_topk(kernel_registry& r) {
  add_topk<float, double, int32_t, int64_t, int8_t, uint8_t, uint64_t>(r);
}

}  // namespace troupe::kernels::cpu
