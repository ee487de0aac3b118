// CPU Softmax, LogSoftmax and Hardmax. A row is the axis_size elements of one (outer, inner)
// position, `inner` apart. With inner == 1 (the last axis, and every pre-13 opset, which coerces
// to 2-D) rows are contiguous and each is done in three vectorised sweeps: max, exp-and-sum,
// scale. Otherwise blocks of up to 64 neighbouring rows are done together, sweeping the axis
// with the 64 lanes contiguous. Max subtraction keeps exp from overflowing.
#include <cmath>

#include "kernels/cpu/ew_common.hpp"
#include "kernels/cpu/vec_math.hpp"
#include "kernels/ops/reduction_params.hpp"

namespace troupe::kernels::cpu {
namespace {

enum class softmax_kind : uint8_t { softmax, log_softmax, hardmax };

/// e^v for v <= 0 (x - max): results under 1e-38 may flush to zero, invisible next to the max's 1.
template <class T>
T exp_of(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return vm::exp_neg(v);
  } else {
    return std::exp(v);
  }
}

template <class T>
T max_nan(T a, T b) {
  return pick((a < b) | (b != b), b, a);
}

/// Row reductions keep 16 partial results (vectorised lanes) and fold them at the end: an
/// `omp simd reduction` would keep its lanes in memory and fold them with scalar adds, which
/// costs as much as the sweep itself on 128-element attention rows.
/// `step` folds one element into a lane, `combine` two lanes.
template <class T, class Step, class Combine>
[[gnu::always_inline]] inline T row_fold(const T* x, int64_t n, T init, const Step& step,
                                         const Combine& combine) {
  constexpr int lanes = 16;
  T part[lanes];
  for (int j = 0; j < lanes; ++j) part[j] = init;
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
#pragma omp simd
    for (int j = 0; j < lanes; ++j) part[j] = step(part[j], x[i + j]);
  }
  T tail = init;  // kept apart so that `part` is only indexed by constants and stays in registers
  for (; i < n; ++i) tail = step(tail, x[i]);
  // Fold the lanes pairwise: log2(16) vector steps instead of 16 dependent scalar ones.
  for (int w = lanes / 2; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) part[j] = combine(part[j], part[j + w]);
  }
  return combine(part[0], tail);
}

/// y = e^(x - m), returning the sum of y: one sweep, the sum kept in lanes as in row_fold.
template <class T>
[[gnu::always_inline]] inline T row_exp_sum(const T* x, T* y, int64_t n, T m) {
  constexpr int lanes = 16;
  T part[lanes];
  for (int j = 0; j < lanes; ++j) part[j] = T(0);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
#pragma omp simd
    for (int j = 0; j < lanes; ++j) {
      const T e = exp_of(x[i + j] - m);
      y[i + j] = e;
      part[j] += e;
    }
  }
  T tail = 0;
  for (; i < n; ++i) {
    const T e = exp_of(x[i] - m);
    y[i] = e;
    tail += e;
  }
  for (int w = lanes / 2; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) part[j] += part[j + w];
  }
  return part[0] + tail;
}

template <class T>
[[gnu::always_inline]] inline T row_max(const T* x, int64_t n) {
  auto max = [](T a, T b) { return max_nan(a, b); };
  return row_fold(x, n, -std::numeric_limits<T>::infinity(), max, max);
}

/// Contiguous rows [begin, end) of n elements.
template <class T, softmax_kind kind>
[[gnu::always_inline]] inline void rows_contiguous(const T* x, T* y, int64_t n, int64_t begin,
                                                   int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    if constexpr (kind == softmax_kind::hardmax) {
      int64_t best = 0;
      for (int64_t i = 1; i < n; ++i) {
        if (xr[i] > xr[best]) best = i;
      }
      for (int64_t i = 0; i < n; ++i) yr[i] = T(0);
      if (n > 0) yr[best] = T(1);
    } else {
      // Intermediate values go to y (L1-resident for a row) and are summed from there; every
      // pass reads an element before writing it, so y may be x.
      const T m = row_max(xr, n);
      if constexpr (kind == softmax_kind::softmax) {
        const T scale = T(1) / row_exp_sum(xr, yr, n, m);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yr[i] *= scale;
      } else {
        // y = (x - m) - log(sum): x - m is exact near the max, where m + log(sum) would round
        // at m's scale.
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] - m;
        const T sum = row_fold(
            yr, n, T(0), [](T a, T v) { return a + exp_of(v); }, [](T a, T b) { return a + b; });
        const T log_sum = std::log(sum);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yr[i] -= log_sum;
      }
    }
  }
}

/// Task t: outer position t / blocks, 64 neighbouring inner positions starting at (t % blocks)
/// * 64.
template <class T, softmax_kind kind>
[[gnu::always_inline]] inline void rows_strided(const T* x, T* y, int64_t n, int64_t inner,
                                                int64_t begin, int64_t end) {
  constexpr int64_t block = 64;
  const int64_t blocks = (inner + block - 1) / block;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t o = t / blocks, c0 = (t % blocks) * block;
    const int64_t len = std::min(block, inner - c0);
    const T* xb = x + o * n * inner + c0;
    T* yb = y + o * n * inner + c0;
    T m[block], sum[block];
    int64_t best[block];
    for (int64_t i = 0; i < len; ++i) {
      m[i] = xb[i];
      best[i] = 0;
      sum[i] = 0;
    }
    for (int64_t a = 1; a < n; ++a) {
      const T* xa = xb + a * inner;
      if constexpr (kind == softmax_kind::hardmax) {
        for (int64_t i = 0; i < len; ++i) {
          if (xa[i] > m[i]) {
            m[i] = xa[i];
            best[i] = a;
          }
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) m[i] = max_nan(m[i], xa[i]);
      }
    }
    if constexpr (kind == softmax_kind::hardmax) {
      for (int64_t a = 0; a < n; ++a) {
        for (int64_t i = 0; i < len; ++i) yb[a * inner + i] = T(a == best[i]);
      }
      continue;
    }
    for (int64_t a = 0; a < n; ++a) {
      const T* xa = xb + a * inner;
      T* ya = yb + a * inner;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const T e = exp_of(xa[i] - m[i]);
        if constexpr (kind == softmax_kind::softmax) ya[i] = e;
        sum[i] += e;
      }
    }
    if constexpr (kind == softmax_kind::softmax) {
      for (int64_t i = 0; i < len; ++i) sum[i] = T(1) / sum[i];
      for (int64_t a = 0; a < n; ++a) {
        T* ya = yb + a * inner;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) ya[i] *= sum[i];
      }
    } else {
      for (int64_t i = 0; i < len; ++i) sum[i] = std::log(sum[i]);
      for (int64_t a = 0; a < n; ++a) {
        const T* xa = xb + a * inner;
        T* ya = yb + a * inner;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) ya[i] = (xa[i] - m[i]) - sum[i];
      }
    }
  }
}

template <class T, softmax_kind kind>
TROUPE_SIMD_CLONES void softmax_range_clones(const T* x, T* y, int64_t n, int64_t inner,
                                             int64_t begin, int64_t end) {
  if (inner == 1) {
    rows_contiguous<T, kind>(x, y, n, begin, end);
  } else {
    rows_strided<T, kind>(x, y, n, inner, begin, end);
  }
}

template <class T, softmax_kind kind>
void softmax_range_plain(const T* x, T* y, int64_t n, int64_t inner, int64_t begin, int64_t end) {
  if (inner == 1) {
    rows_contiguous<T, kind>(x, y, n, begin, end);
  } else {
    rows_strided<T, kind>(x, y, n, inner, begin, end);
  }
}

template <class T, softmax_kind kind>
class softmax_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_ASSIGN_OR_RETURN(auto p, resolve_softmax(reduction_view(ctx)));
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(T)}}, sizeof(T)));
    auto k = std::unique_ptr<softmax_kernel>(new softmax_kernel());
    k->p_ = p;
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    const T* x = ctx.inputs[0].data<T>();
    T* y = ctx.outputs[0].data<T>();
    const int64_t n = p_.axis_size, inner = p_.inner;
    if (n == 0 || inner == 0 || p_.outer == 0) return status::ok();  // no elements
    const int64_t tasks = inner == 1 ? p_.outer : p_.outer * ((inner + 63) / 64);
    const int64_t work = std::max<int64_t>(1, n * std::min<int64_t>(inner, 64));
    parallel_for(tasks, std::max<int64_t>(1, costly_grain / work), [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<T, float>) {
        softmax_range_clones<T, kind>(x, y, n, inner, b, e);
      } else {
        softmax_range_plain<T, kind>(x, y, n, inner, b, e);
      }
    });
    return status::ok();
  }
  /// Each row is read completely before it is written, and rows do not overlap.
  std::vector<std::pair<int, int>> inplace_pairs() const override { return {{0, 0}}; }

 private:
  softmax_params p_;
};

template <softmax_kind kind>
void add_softmax(kernel_registry& r, const char* name) {
  r.add({"", name, backend::cpu, {dtype::f32}, 0, {}, &softmax_kernel<float, kind>::create});
  r.add({"", name, backend::cpu, {dtype::f64}, 0, {}, &softmax_kernel<double, kind>::create});
}

}  // namespace

void register_softmax(kernel_registry& r) {
  add_softmax<softmax_kind::softmax>(r, "Softmax");
  add_softmax<softmax_kind::log_softmax>(r, "LogSoftmax");
  add_softmax<softmax_kind::hardmax>(r, "Hardmax");
}

}  // namespace troupe::kernels::cpu
