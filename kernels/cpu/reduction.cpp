// CPU reductions: Reduce* over any set of axes, ArgMax/ArgMin, CumSum. The family's entry point
// also registers Softmax/LogSoftmax/Hardmax (softmax.cpp), LayerNormalization (layer_norm.cpp)
// and TopK (topk.cpp).
//
// Reduce* plan: the input's dims with size-1 dims dropped and neighbours merged when both are
// reduced or both kept, so any axes set becomes alternating kept/reduced groups. If the innermost
// group is reduced, each output reduces contiguous rows (lanes of partial results vectorise the
// row); if it is kept, each output row accumulates whole contiguous input rows into a block of
// accumulators (vectorised across the row). Either way the reads are sequential.
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu/ew_common.hpp"
#include "kernels/ops/reduction_params.hpp"

namespace troupe::kernels::cpu {
namespace {

constexpr int max_groups = 16;  // alternating kept/reduced groups a plan can hold

/// Walks a multi-index over `n` dims (outermost first) and keeps the matching element offset.
struct odometer {
  int n = 0;
  std::array<int64_t, max_groups> dims{};
  std::array<int64_t, max_groups> strides{};

  struct state {
    std::array<int64_t, max_groups> index{};
    int64_t offset = 0;
  };
  int64_t count() const {
    int64_t c = 1;
    for (int d = 0; d < n; ++d) c *= dims[d];
    return c;
  }
  state seek(int64_t flat) const {
    state s;
    if (flat == 0) return s;  // also when a dim is 0 (then nothing is visited)
    for (int d = n - 1; d >= 0; --d) {
      s.index[d] = flat % dims[d];
      flat /= dims[d];
      s.offset += s.index[d] * strides[d];
    }
    return s;
  }
  void next(state& s) const {
    for (int d = n - 1; d >= 0; --d) {
      s.offset += strides[d];
      if (++s.index[d] < dims[d]) return;
      s.offset -= strides[d] * dims[d];
      s.index[d] = 0;
    }
  }
};

struct reduce_plan {
  bool inner_reduced = false;
  int64_t inner = 1;    // length of the innermost (contiguous) group
  odometer kept;        // kept groups, without the innermost when it is kept
  odometer reduced;     // reduced groups, without the innermost when it is reduced
  int64_t outputs = 0;  // output elements
  int64_t count = 1;    // input elements folded into each output
};

expected<reduce_plan> make_reduce_plan(const shape_t& shape,
                                       const std::vector<bool>& reduced_axes) {
  struct group {
    int64_t size;
    bool reduced;
  };
  std::vector<group> groups;
  reduce_plan p;
  p.outputs = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    const int64_t size = shape[d];
    if (reduced_axes[d]) {
      p.count *= size;
    } else {
      p.outputs *= size;
    }
    if (size == 1) continue;
    if (!groups.empty() && groups.back().reduced == reduced_axes[d]) {
      groups.back().size *= size;
    } else {
      groups.push_back({size, reduced_axes[d]});
    }
  }
  if (groups.empty()) groups.push_back({1, false});
  p.inner_reduced = groups.back().reduced;
  p.inner = groups.back().size;
  int64_t stride = p.inner;
  for (size_t g = groups.size() - 1; g-- > 0;) {  // outer groups, innermost first
    odometer& o = groups[g].reduced ? p.reduced : p.kept;
    if (o.n == max_groups) {
      return unsupported("reduction over " + std::to_string(groups.size()) +
                         " alternating axis groups");
    }
    // Insert at the front: the odometer lists dims outermost first.
    for (int d = o.n; d > 0; --d) {
      o.dims[d] = o.dims[d - 1];
      o.strides[d] = o.strides[d - 1];
    }
    o.dims[0] = groups[g].size;
    o.strides[0] = stride;
    ++o.n;
    stride *= groups[g].size;
  }
  return p;
}

// Reductions as accumulate/finish functions. `bias` is the per-output value of a first pass
// (ReduceLogSumExp's max); the others ignore it.
template <class T>
struct sum_op {
  using acc = T;
  static acc init() { return T(0); }
  static acc pre(T x, T) { return x; }
  static acc combine(acc a, acc b) { return wrap_add(a, b); }
  static T post(acc a, int64_t, T) { return a; }
};
template <class T>
struct mean_op : sum_op<T> {
  static T post(T a, int64_t count, T) {
    if constexpr (std::is_floating_point_v<T>) {
      return a / static_cast<T>(count);
    } else {
      return count == 0 ? T(0) : static_cast<T>(a / static_cast<T>(count));
    }
  }
};
template <class T>
struct max_op {
  using acc = T;
  static acc init() {
    return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                : std::numeric_limits<T>::lowest();
  }
  static acc pre(T x, T) { return x; }
  static acc combine(acc a, acc b) { return pick((a < b) | is_nan(b), b, a); }  // NaN propagates
  static T post(acc a, int64_t, T) { return a; }
};
template <class T>
struct min_op {
  using acc = T;
  static acc init() {
    return std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity()
                                                : std::numeric_limits<T>::max();
  }
  static acc pre(T x, T) { return x; }
  static acc combine(acc a, acc b) { return pick((b < a) | is_nan(b), b, a); }
  static T post(acc a, int64_t, T) { return a; }
};
template <class T>
struct prod_op {
  using acc = T;
  static acc init() { return T(1); }
  static acc pre(T x, T) { return x; }
  static acc combine(acc a, acc b) { return wrap_mul(a, b); }
  static T post(acc a, int64_t, T) { return a; }
};
template <class T>
struct l1_op : sum_op<T> {
  static T pre(T x, T) {
    if constexpr (std::is_floating_point_v<T>) {
      return std::fabs(x);
    } else if constexpr (std::is_signed_v<T>) {
      return x < 0 ? wrap_neg(x) : x;
    } else {
      return x;
    }
  }
};
template <class T>
struct sum_square_op : sum_op<T> {
  static T pre(T x, T) { return wrap_mul(x, x); }
};
template <class T>
struct l2_op : sum_square_op<T> {
  static T post(T a, int64_t, T) {
    if constexpr (std::is_floating_point_v<T>) {
      return std::sqrt(a);
    } else {
      return float_to_int<T>(std::sqrt(static_cast<double>(a)));
    }
  }
};
template <class T>
struct log_sum_op : sum_op<T> {
  static T post(T a, int64_t, T) { return std::log(a); }
};
/// Second pass of ReduceLogSumExp: sum of e^(x - max), finished as log(sum) + max. A non-finite
/// max is not subtracted (all -inf gives log 0 = -inf; +inf or NaN propagate).
template <class T>
struct sum_exp_op : sum_op<T> {
  static constexpr bool uses_bias = true;
  static T shift(T bias) { return std::isfinite(bias) ? bias : T(0); }
  static T pre(T x, T bias) { return std::exp(x - shift(bias)); }
  static T post(T a, int64_t, T bias) { return std::log(a) + shift(bias); }
};

template <class Op>
constexpr bool uses_bias() {
  if constexpr (requires { Op::uses_bias; }) {
    return Op::uses_bias;
  } else {
    return false;
  }
}

/// Case A: y[o] = post(fold of contiguous rows of `inner` elements) for outputs [begin, end).
template <class T, class Op>
[[gnu::always_inline]] inline void reduce_rows(const reduce_plan& p, const T* x, T* y,
                                               const T* bias, int64_t begin, int64_t end) {
  using A = typename Op::acc;
  constexpr int lanes = 16;
  const int64_t n = p.inner;
  auto at = p.kept.seek(begin);
  const int64_t combos = p.reduced.count();
  for (int64_t o = begin; o < end; ++o, p.kept.next(at)) {
    const T b = uses_bias<Op>() ? bias[o] : T(0);
    A part[lanes];
    for (int j = 0; j < lanes; ++j) part[j] = Op::init();
    A acc = Op::init();
    auto r = p.reduced.seek(0);
    for (int64_t c = 0; c < combos; ++c, p.reduced.next(r)) {
      const T* row = x + at.offset + r.offset;
      int64_t i = 0;
      for (; i + lanes <= n; i += lanes) {
#pragma omp simd
        for (int j = 0; j < lanes; ++j) part[j] = Op::combine(part[j], Op::pre(row[i + j], b));
      }
      for (; i < n; ++i) acc = Op::combine(acc, Op::pre(row[i], b));
    }
    for (int j = 0; j < lanes; ++j) acc = Op::combine(acc, part[j]);
    y[o] = Op::post(acc, p.count, b);
  }
}

/// Case B: output rows of `inner` elements, split into blocks of `block`; task t covers
/// block t % blocks of output row t / blocks and folds every reduced combination into it.
template <class T, class Op>
[[gnu::always_inline]] inline void reduce_blocks(const reduce_plan& p, const T* x, T* y,
                                                 const T* bias, int64_t begin, int64_t end) {
  using A = typename Op::acc;
  constexpr int64_t block = 64;
  const int64_t blocks = (p.inner + block - 1) / block;
  const int64_t combos = p.reduced.count();
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t / blocks;
    const int64_t c0 = (t % blocks) * block;
    const int64_t len = std::min(block, p.inner - c0);
    const int64_t in_base = p.kept.seek(row).offset + c0;
    T* out = y + row * p.inner + c0;
    T b[block];
    for (int64_t i = 0; i < len; ++i) b[i] = uses_bias<Op>() ? bias[row * p.inner + c0 + i] : T(0);
    A acc[block];
    for (int64_t i = 0; i < block; ++i) acc[i] = Op::init();
    auto r = p.reduced.seek(0);
    for (int64_t c = 0; c < combos; ++c, p.reduced.next(r)) {
      const T* in = x + in_base + r.offset;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] = Op::combine(acc[i], Op::pre(in[i], b[i]));
    }
    for (int64_t i = 0; i < len; ++i) out[i] = Op::post(acc[i], p.count, b[i]);
  }
}

template <class T, class Op>
TROUPE_SIMD_CLONES void reduce_range_clones(const reduce_plan& p, const T* x, T* y, const T* bias,
                                            int64_t begin, int64_t end) {
  if (p.inner_reduced) {
    reduce_rows<T, Op>(p, x, y, bias, begin, end);
  } else {
    reduce_blocks<T, Op>(p, x, y, bias, begin, end);
  }
}

template <class T, class Op>
void reduce_range_plain(const reduce_plan& p, const T* x, T* y, const T* bias, int64_t begin,
                        int64_t end) {
  if (p.inner_reduced) {
    reduce_rows<T, Op>(p, x, y, bias, begin, end);
  } else {
    reduce_blocks<T, Op>(p, x, y, bias, begin, end);
  }
}

template <class T, class Op>
void reduce_pass(const reduce_plan& p, const T* x, T* y, const T* bias) {
  int64_t tasks, work_per_task;
  if (p.inner_reduced) {
    tasks = p.outputs;
    work_per_task = std::max<int64_t>(1, p.count);
  } else {
    const int64_t blocks = (p.inner + 63) / 64;
    tasks = p.kept.count() * blocks;
    work_per_task = std::max<int64_t>(1, p.count * std::min<int64_t>(64, p.inner));
  }
  if (p.outputs == 0) return;
  parallel_for(tasks, std::max<int64_t>(1, cheap_grain / work_per_task), [&](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<T, float>) {
      reduce_range_clones<T, Op>(p, x, y, bias, b, e);
    } else {
      reduce_range_plain<T, Op>(p, x, y, bias, b, e);
    }
  });
}

template <class T, template <class> class Op>
class reduce_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_ASSIGN_OR_RETURN(auto params, resolve_reduce(reduction_view(ctx)));
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(T)}}, sizeof(T)));
    auto k = std::unique_ptr<reduce_kernel>(new reduce_kernel());
    k->noop_ = params.noop;
    k->bytes_ = ctx.outputs[0].bytes();
    if (!params.noop) {
      auto plan = make_reduce_plan(ctx.inputs[0].shape, params.reduced);
      if (!plan) return ctx.fail(plan.error().code(), plan.error().message());
      k->plan_ = *plan;
    }
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    const T* x = ctx.inputs[0].data<T>();
    T* y = ctx.outputs[0].data<T>();
    if (noop_) {
      if (bytes_ && static_cast<const void*>(x) != static_cast<void*>(y)) std::memcpy(y, x, bytes_);
      return status::ok();
    }
    if constexpr (std::is_same_v<Op<T>, sum_exp_op<T>>) {
      reduce_pass<T, max_op<T>>(plan_, x, y,
                                nullptr);  // y holds each output's max, then the result
      reduce_pass<T, sum_exp_op<T>>(plan_, x, y, y);
    } else {
      reduce_pass<T, Op<T>>(plan_, x, y, nullptr);
    }
    return status::ok();
  }
  bool reads_constant_input(int i) const override { return i == 0; }

 private:
  reduce_plan plan_;
  bool noop_ = false;
  size_t bytes_ = 0;
};

template <template <class> class Op, class... Ts>
void add_reduce(kernel_registry& r, const char* name) {
  (r.add({"", name, backend::cpu, {type_of<Ts>::value}, 0, {}, &reduce_kernel<Ts, Op>::create}),
   ...);
}

/// ArgMax / ArgMin over [outer, axis, inner]: blocks of the inner dim keep their best values and
/// indices while the axis is scanned, so reads stay sequential.
template <class T, bool is_max>
class arg_reduce_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_ASSIGN_OR_RETURN(auto p, resolve_arg_reduce(reduction_view(ctx)));
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(T)}}, sizeof(int64_t)));
    auto k = std::unique_ptr<arg_reduce_kernel>(new arg_reduce_kernel());
    const shape_t& s = ctx.inputs[0].shape;
    for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
      if (d < p.axis) k->outer_ *= s[static_cast<size_t>(d)];
      if (d > p.axis) k->inner_ *= s[static_cast<size_t>(d)];
    }
    k->axis_size_ = s[static_cast<size_t>(p.axis)];
    k->last_ = p.select_last_index;
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    const T* x = ctx.inputs[0].data<T>();
    int64_t* y = ctx.outputs[0].data<int64_t>();
    constexpr int64_t block = 64;
    const int64_t blocks = (inner_ + block - 1) / block;
    const int64_t tasks = outer_ * blocks;
    parallel_for(tasks,
                 std::max<int64_t>(
                     1, cheap_grain / std::max<int64_t>(1, axis_size_ * std::min(block, inner_))),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t t = begin; t < end; ++t)
                     run_block(x, y, t / blocks, (t % blocks) * block, block);
                 });
    return status::ok();
  }

 private:
  /// Whether v replaces the best so far: strictly better, or equal when the last index wins.
  bool better(T v, T best) const {
    if (last_) return is_max ? v >= best : v <= best;
    return is_max ? v > best : v < best;
  }

  void run_block(const T* x, int64_t* y, int64_t o, int64_t c0, int64_t block) const {
    const int64_t len = std::min(block, inner_ - c0);
    const T* base = x + o * axis_size_ * inner_ + c0;
    int64_t* out = y + o * inner_ + c0;
    T best[64];
    for (int64_t i = 0; i < len; ++i) {
      best[i] = base[i];
      out[i] = 0;
    }
    for (int64_t a = 1; a < axis_size_; ++a) {
      const T* row = base + a * inner_;
      for (int64_t i = 0; i < len; ++i) {
        if (better(row[i], best[i])) {
          best[i] = row[i];
          out[i] = a;
        }
      }
    }
  }

  int64_t outer_ = 1, axis_size_ = 1, inner_ = 1;
  bool last_ = false;
};

template <bool is_max, class... Ts>
void add_arg_reduce(kernel_registry& r, const char* name) {
  (r.add({"",
          name,
          backend::cpu,
          {type_of<Ts>::value},
          0,
          {},
          &arg_reduce_kernel<Ts, is_max>::create}),
   ...);
}

/// CumSum along an axis given as input 1 (constant, or read at each run); exclusive and
/// reverse attributes.
template <class T>
class cumsum_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(T)}}, sizeof(T)));
    auto k = std::unique_ptr<cumsum_kernel>(new cumsum_kernel());
    k->shape_ = ctx.inputs[0].shape;
    k->exclusive_ = ctx.node.attrs.get_int("exclusive", 0) != 0;
    k->reverse_ = ctx.node.attrs.get_int("reverse", 0) != 0;
    if (ctx.inputs.size() < 2 || !ctx.has_input(1) || ctx.inputs[1].elements() != 1) {
      return ctx.fail(error_code::invalid_model, "axis must be a one-element tensor");
    }
    if (const tensor* a = ctx.value(1)) {
      k->axis_ = a->value_as_int64(0);
      k->axis_known_ = true;
      TROUPE_RETURN_IF_ERROR(k->check_axis(k->axis_).take_status());
    }
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    int64_t axis = axis_;
    if (!axis_known_) axis = ctx.inputs[1].value_as_int64(0);
    TROUPE_ASSIGN_OR_RETURN(axis, check_axis(axis));
    int64_t outer = 1, inner = 1;
    const int64_t n = shape_.empty() ? 1 : shape_[static_cast<size_t>(axis)];
    for (int64_t d = 0; d < static_cast<int64_t>(shape_.size()); ++d) {
      if (d < axis) outer *= shape_[static_cast<size_t>(d)];
      if (d > axis) inner *= shape_[static_cast<size_t>(d)];
    }
    const T* x = ctx.inputs[0].data<T>();
    T* y = ctx.outputs[0].data<T>();
    constexpr int64_t block = 64;
    const int64_t blocks = (inner + block - 1) / block;
    parallel_for(
        outer * blocks,
        std::max<int64_t>(1, cheap_grain / std::max<int64_t>(1, n * std::min(block, inner))),
        [&](int64_t begin, int64_t end) {
          for (int64_t t = begin; t < end; ++t) {
            const int64_t o = t / blocks, c0 = (t % blocks) * block;
            const int64_t len = std::min(block, inner - c0);
            T acc[block] = {};
            for (int64_t s = 0; s < n; ++s) {
              const int64_t a = reverse_ ? n - 1 - s : s;
              const int64_t off = (o * n + a) * inner + c0;
              for (int64_t i = 0; i < len; ++i) {
                const T v = x[off + i];  // read first: y may alias x
                if (exclusive_) {
                  y[off + i] = acc[i];
                  acc[i] = wrap_add(acc[i], v);
                } else {
                  acc[i] = wrap_add(acc[i], v);
                  y[off + i] = acc[i];
                }
              }
            }
          }
        });
    return status::ok();
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return {{0, 0}}; }
  bool reads_constant_input(int i) const override { return i == 0; }

 private:
  expected<int64_t> check_axis(int64_t axis) const {
    const int64_t rank = static_cast<int64_t>(shape_.size());
    if (rank == 0 && (axis == 0 || axis == -1)) return int64_t{0};
    if (axis < -rank || axis >= rank) {
      return invalid_argument("CumSum axis " + std::to_string(axis) + " is out of range for rank " +
                              std::to_string(rank));
    }
    return axis < 0 ? axis + rank : axis;
  }

  shape_t shape_;
  int64_t axis_ = 0;
  bool axis_known_ = false;
  bool exclusive_ = false;
  bool reverse_ = false;
};

template <class... Ts>
void add_cumsum(kernel_registry& r) {
  (r.add({"", "CumSum", backend::cpu, {type_of<Ts>::value}, 0, {}, &cumsum_kernel<Ts>::create}),
   ...);
}

}  // namespace

void register_reduction(kernel_registry& r) {
  add_reduce<sum_op, float, double, int32_t, int64_t, uint32_t, uint64_t>(r, "ReduceSum");
  add_reduce<mean_op, float, double, int32_t, int64_t>(r, "ReduceMean");
  add_reduce<max_op, float, double, int32_t, int64_t, int8_t, uint8_t>(r, "ReduceMax");
  add_reduce<min_op, float, double, int32_t, int64_t, int8_t, uint8_t>(r, "ReduceMin");
  add_reduce<prod_op, float, double, int32_t, int64_t>(r, "ReduceProd");
  add_reduce<l1_op, float, double, int32_t, int64_t>(r, "ReduceL1");
  add_reduce<l2_op, float, double, int32_t, int64_t>(r, "ReduceL2");
  add_reduce<sum_square_op, float, double, int32_t, int64_t>(r, "ReduceSumSquare");
  add_reduce<log_sum_op, float, double>(r, "ReduceLogSum");
  add_reduce<sum_exp_op, float, double>(r, "ReduceLogSumExp");
  add_arg_reduce<true, float, double, int32_t, int64_t, int8_t, uint8_t>(r, "ArgMax");
  add_arg_reduce<false, float, double, int32_t, int64_t, int8_t, uint8_t>(r, "ArgMin");
  add_cumsum<float, double, int32_t, int64_t, uint32_t, uint64_t>(r);
  register_softmax(r);
  register_layer_norm(r);
  register_topk(r);
}

}  // namespace troupe::kernels::cpu
