// CPU kernels of the broadcasting ops: arithmetic, comparisons, logic, Pow, Mod, PRelu, the
// variadic Sum/Mean/Min/Max, and Where. Shapes are planned once (broadcast.hpp); compute walks
// the output in parallel chunks and runs a vectorisable loop per contiguous run.
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu/broadcast.hpp"
#include "kernels/cpu/ew_common.hpp"

namespace troupe::kernels::cpu {
namespace {

/// y[i] = f(a[i * sa], b[i * sb]) for strides sa, sb in {0, 1} (not both 0).
template <class A, class B, class O, class F>
[[gnu::always_inline]] inline void binary_run(const A* a, int64_t sa, const B* b, int64_t sb, O* y,
                                              int64_t n, const F& f) {
  if (sa != 0 && sb != 0) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
  } else if (sa == 0) {
    const A av = *a;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = f(av, b[i]);
  } else {
    const B bv = *b;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], bv);
  }
}

template <class A, class B, class O, class F>
TROUPE_SIMD_CLONES void binary_run_clones(const A* a, int64_t sa, const B* b, int64_t sb, O* y,
                                          int64_t n, const F& f) {
  binary_run(a, sa, b, sb, y, n, f);
}

template <class A, class B, class O, class F>
void binary_run_plain(const A* a, int64_t sa, const B* b, int64_t sb, O* y, int64_t n, const F& f) {
  binary_run(a, sa, b, sb, y, n, f);
}

/// One broadcasting pass y = f(a, b) over a plan, split across threads by output ranges; float
/// loops run in their per-ISA clones.
template <class A, class B, class O, class F>
void binary_pass(const broadcast_plan& plan, const A* a, const B* b, O* y, int64_t grain,
                 const F& f) {
  const int64_t sa = plan.inner_stride(0);
  const int64_t sb = plan.inner_stride(1);
  parallel_for(plan.total, grain, [&](int64_t begin, int64_t end) {
    for_each_run<2>(plan, begin, end,
                    [&](const std::array<int64_t, 2>& at, int64_t pos, int64_t len) {
                      if constexpr (std::is_same_v<A, float> || std::is_same_v<O, float>) {
                        binary_run_clones(a + at[0], sa, b + at[1], sb, y + pos, len, f);
                      } else {
                        binary_run_plain(a + at[0], sa, b + at[1], sb, y + pos, len, f);
                      }
                    });
  });
}

template <class A, class B, class O, class F>
class binary_kernel final : public kernel {
 public:
  binary_kernel(F f, broadcast_plan plan, int64_t grain, std::vector<std::pair<int, int>> inplace)
      : f_(std::move(f)), plan_(plan), grain_(grain), inplace_(std::move(inplace)) {}

  status compute(kernel_run_context& ctx) override {
    binary_pass(plan_, ctx.inputs[0].data<A>(), ctx.inputs[1].data<B>(), ctx.outputs[0].data<O>(),
                grain_, f_);
    return status::ok();
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return inplace_; }

 private:
  F f_;
  broadcast_plan plan_;
  int64_t grain_;
  std::vector<std::pair<int, int>> inplace_;
};

template <class A, class B, class F>
expected<std::unique_ptr<kernel>> make_binary(F f, const kernel_create_context& ctx,
                                              int64_t grain = cheap_grain) {
  using O = decltype(f(A{}, B{}));
  TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(A)}, {1, sizeof(B)}}, sizeof(O)));
  TROUPE_ASSIGN_OR_RETURN(auto plan, make_broadcast_plan(ctx.inputs[0].shape, ctx.inputs[1].shape,
                                                         ctx.outputs[0].shape));
  std::vector<std::pair<int, int>> inplace;
  if (std::is_same_v<A, O>) inplace = same_shape_inplace(ctx, {0});
  if (std::is_same_v<B, O>) {
    for (auto p : same_shape_inplace(ctx, {1})) inplace.push_back(p);
  }
  return std::unique_ptr<kernel>(
      new binary_kernel<A, B, O, F>(std::move(f), plan, grain, std::move(inplace)));
}

/// Registers op `name` for each tag type in Ts (both inputs of that type); make(node) returns
/// the element function, a generic lambda of two values.
template <class... Ts, class Make>
void add_binary(kernel_registry& r, const char* name, Make make) {
  (r.add({"",
          name,
          backend::cpu,
          {type_of<Ts>::value},
          0,
          {},
          [make](const kernel_create_context& ctx) {
            using S = storage_t<Ts>;
            if constexpr (std::is_same_v<Ts, half16>) {
              return make_binary<S, S>(lift_half(make(ctx.node)), ctx);
            } else {
              return make_binary<S, S>(make(ctx.node), ctx);
            }
          }}),
   ...);
}

#define TROUPE_NUMERIC_TYPES \
  float, double, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t
#define TROUPE_NUMERIC_AND_HALF_TYPES TROUPE_NUMERIC_TYPES, half16

// Element functions.

/// Integer division truncates toward zero (C, ONNX Runtime); x/0 gives 0 and INT_MIN/-1 wraps,
/// where the hardware would trap.
template <class T>
T divide(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    return a / b;
  } else {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<T>) {
      if (b == -1) return wrap_neg(a);
    }
    return static_cast<T>(a / b);
  }
}

/// Mod with fmod=0: the result takes the divisor's sign (Python's %). fmod=1: the dividend's (C).
template <class T>
T mod_floor(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    T r = std::fmod(a, b);
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  } else {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<T>) {
      if (b == -1) return 0;
      T r = static_cast<T>(a % b);
      if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
      return r;
    } else {
      return static_cast<T>(a % b);
    }
  }
}
template <class T>
T mod_trunc(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::fmod(a, b);
  } else {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<T>) {
      if (b == -1) return 0;
    }
    return static_cast<T>(a % b);
  }
}

/// Max/Min propagate NaN (numpy's maximum/minimum).
template <class T>
T max_of(T a, T b) {
  return pick((a < b) | is_nan(b), b, a);
}
template <class T>
T min_of(T a, T b) {
  return pick((b < a) | is_nan(b), b, a);
}

/// Integer power by squaring, wrapping on overflow. Negative exponents give the truncated
/// reciprocal: 0, or +-1 for bases +-1.
template <class T, class E>
T int_pow(T base, E e) {
  if constexpr (std::is_signed_v<E>) {
    if (e < 0) {
      if (base == 1) return 1;
      if constexpr (std::is_signed_v<T>) {
        if (base == -1) return (e % 2 == 0) ? T(1) : T(-1);
      }
      return 0;
    }
  }
  T result = 1;
  auto exponent = static_cast<uint64_t>(e);
  while (exponent != 0) {
    if (exponent & 1) result = wrap_mul(result, base);
    base = wrap_mul(base, base);
    exponent >>= 1;
  }
  return result;
}

template <class T, class E>
T pow_value(T a, E e) {
  if constexpr (std::is_integral_v<T> && std::is_integral_v<E>) {
    return int_pow(a, e);
  } else if constexpr (std::is_same_v<T, E>) {
    return std::pow(a, e);  // float^float, double^double
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(std::pow(static_cast<double>(a), static_cast<double>(e)));
  } else {
    return float_to_int<T>(std::pow(static_cast<double>(a), static_cast<double>(e)));
  }
}

template <class Tag>
expected<std::unique_ptr<kernel>> make_mod(const kernel_create_context& ctx) {
  using S = storage_t<Tag>;
  const bool c_style = ctx.node.attrs.get_int("fmod", 0) != 0;
  if constexpr (std::is_same_v<Tag, half16>) {
    if (c_style)
      return make_binary<S, S>(lift_half([](float a, float b) { return mod_trunc(a, b); }), ctx,
                               costly_grain);
    return make_binary<S, S>(lift_half([](float a, float b) { return mod_floor(a, b); }), ctx,
                             costly_grain);
  } else {
    if (c_style)
      return make_binary<S, S>([](S a, S b) { return mod_trunc(a, b); }, ctx, costly_grain);
    return make_binary<S, S>([](S a, S b) { return mod_floor(a, b); }, ctx, costly_grain);
  }
}

template <class... Ts>
void add_mod(kernel_registry& r) {
  (r.add({"", "Mod", backend::cpu, {type_of<Ts>::value}, 0, {}, &make_mod<Ts>}), ...);
}

void register_arithmetic(kernel_registry& r) {
  auto none = [](auto f) { return [f](const op_node&) { return f; }; };
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "Add",
                                            none([](auto a, auto b) { return wrap_add(a, b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "Sub",
                                            none([](auto a, auto b) { return wrap_sub(a, b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "Mul",
                                            none([](auto a, auto b) { return wrap_mul(a, b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "Div",
                                            none([](auto a, auto b) { return divide(a, b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "PRelu", none([](auto x, auto slope) {
                                              using T = decltype(x);
                                              // x for x >= 0, slope * x below; NaN stays NaN.
                                              const bool neg = x < T(0);
                                              return wrap_add(pick(neg, T(0), x),
                                                              wrap_mul(slope, pick(neg, x, T(0))));
                                            }));
  add_mod<TROUPE_NUMERIC_AND_HALF_TYPES>(r);
}

void register_compare_logic(kernel_registry& r) {
  auto none = [](auto f) { return [f](const op_node&) { return f; }; };
  auto to_bool = [](bool v) { return static_cast<uint8_t>(v); };
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(
      r, "Less", none([to_bool](auto a, auto b) { return to_bool(a < b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(
      r, "LessOrEqual", none([to_bool](auto a, auto b) { return to_bool(a <= b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(
      r, "Greater", none([to_bool](auto a, auto b) { return to_bool(a > b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(
      r, "GreaterOrEqual", none([to_bool](auto a, auto b) { return to_bool(a >= b); }));
  add_binary<TROUPE_NUMERIC_AND_HALF_TYPES>(
      r, "Equal", none([to_bool](auto a, auto b) { return to_bool(a == b); }));
  add_binary<bool8>(r, "Equal", none([](uint8_t a, uint8_t b) {
                      return static_cast<uint8_t>((a != 0) == (b != 0));
                    }));
  add_binary<bool8>(r, "And", none([](uint8_t a, uint8_t b) {
                      return static_cast<uint8_t>((a != 0) & (b != 0));
                    }));
  add_binary<bool8>(r, "Or", none([](uint8_t a, uint8_t b) {
                      return static_cast<uint8_t>((a != 0) | (b != 0));
                    }));
  add_binary<bool8>(r, "Xor", none([](uint8_t a, uint8_t b) {
                      return static_cast<uint8_t>((a != 0) != (b != 0));
                    }));
}

/// Pow: the exponent's dtype may differ from the base's (opset 12+). A constant scalar exponent
/// of 0.5, 1, 2 or 3 becomes a multiply or a square root (x^2 and x^3 appear in LayerNorm and
/// tanh-GELU subgraphs).
template <class T>
expected<std::unique_ptr<kernel>> make_pow(const kernel_create_context& ctx) {
  if (ctx.inputs.size() < 2) return ctx.fail(error_code::invalid_model, "Pow needs two inputs");
  if constexpr (std::is_floating_point_v<T>) {
    const tensor* e = ctx.value(1);
    if (e && e->elements() == 1 && is_floating(e->type()) && e->type() != dtype::f16 &&
        e->type() != dtype::bf16) {
      const double v = e->value_as_double(0);
      const dtype et = ctx.inputs[1].type;
      auto unary = [&](auto f) -> expected<std::unique_ptr<kernel>> {
        if (et == dtype::f32) return make_binary<T, float>([f](T a, float) { return f(a); }, ctx);
        return make_binary<T, double>([f](T a, double) { return f(a); }, ctx);
      };
      if (v == 2.0) return unary([](T a) { return a * a; });
      if (v == 3.0) return unary([](T a) { return a * a * a; });
      if (v == 1.0) return unary([](T a) { return a; });
      if (v == 0.5) return unary([](T a) { return std::sqrt(a); });
    }
  }
  using R = expected<std::unique_ptr<kernel>>;
  return visit_numeric<R>(ctx.inputs[1].type,
                          ctx.fail(error_code::unsupported,
                                   "exponent dtype " + std::string(dtype_name(ctx.inputs[1].type))),
                          [&](auto tag) -> R {
                            using E = typename decltype(tag)::type;
                            return make_binary<T, E>([](T a, E b) { return pow_value(a, b); }, ctx,
                                                     costly_grain);
                          });
}

template <class... Ts>
void add_pow(kernel_registry& r) {
  (r.add({"", "Pow", backend::cpu, {type_of<Ts>::value}, 0, {}, &make_pow<Ts>}), ...);
}

/// Sum, Mean, Max, Min over any number of inputs: a broadcasting pass per extra input, the
/// first reading inputs 0 and 1, the next ones the output so far and the next input.
template <class T, class F>
class variadic_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(F f, bool mean,
                                                  const kernel_create_context& ctx) {
    auto k = std::unique_ptr<variadic_kernel>(new variadic_kernel(std::move(f)));
    const size_t n = ctx.inputs.size();
    if (n == 0) return ctx.fail(error_code::invalid_model, "at least one input is required");
    for (size_t i = 0; i < n; ++i) {
      TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{static_cast<int>(i), sizeof(T)}}, sizeof(T)));
    }
    const shape_t& out = ctx.outputs[0].shape;
    if (n == 1) {
      TROUPE_ASSIGN_OR_RETURN(auto plan,
                              make_broadcast_plan(ctx.inputs[0].shape, ctx.inputs[0].shape, out));
      k->steps_.push_back(plan);
    }
    for (size_t i = 1; i < n; ++i) {
      const shape_t& first = i == 1 ? ctx.inputs[0].shape : out;
      TROUPE_ASSIGN_OR_RETURN(auto plan, make_broadcast_plan(first, ctx.inputs[i].shape, out));
      k->steps_.push_back(plan);
    }
    k->scale_ = mean ? T(1) / static_cast<T>(n) : T(1);
    k->mean_ = mean;
    // Step 0 reads input 0 (and input 1) elementwise before writing; later steps read only
    // the output and later inputs, so only inputs 0 and 1 may share the output's storage.
    k->inplace_ = same_shape_inplace(ctx, {0, 1});
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    T* y = ctx.outputs[0].data<T>();
    if (ctx.inputs.size() == 1) {
      const T* x = ctx.inputs[0].data<T>();
      binary_pass(steps_[0], x, x, y, cheap_grain, [](T a, T) { return a; });
    } else {
      for (size_t s = 0; s < steps_.size(); ++s) {
        const T* a = s == 0 ? ctx.inputs[0].data<T>() : y;
        binary_pass(steps_[s], a, ctx.inputs[s + 1].data<T>(), y, cheap_grain, f_);
      }
    }
    if (mean_) {
      const T scale = scale_;
      parallel_for(steps_.back().total, cheap_grain, [&](int64_t b, int64_t e) {
#pragma omp simd
        for (int64_t i = b; i < e; ++i) y[i] *= scale;
      });
    }
    return status::ok();
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override {
    return inplace_;
  }

 private:
  explicit variadic_kernel(F f) : f_(std::move(f)) {}
  F f_;
  std::vector<broadcast_plan> steps_;
  T scale_ = T(1);
  bool mean_ = false;
  std::vector<std::pair<int, int>> inplace_;
};

template <class... Ts, class F>
void add_variadic(kernel_registry& r, const char* name, bool mean, F f) {
  (r.add({"",
          name,
          backend::cpu,
          {type_of<Ts>::value},
          0,
          {},
          [f, mean](const kernel_create_context& ctx) {
            using S = storage_t<Ts>;
            if constexpr (std::is_same_v<Ts, half16>) {
              auto g = lift_half([f](float a, float b) { return f(a, b); });
              return variadic_kernel<S, decltype(g)>::create(g, mean, ctx);
            } else {
              auto g = [f](S a, S b) { return f(a, b); };
              return variadic_kernel<S, decltype(g)>::create(g, mean, ctx);
            }
          }}),
   ...);
}

/// Where(cond, X, Y): moves bytes, so one kernel per element size serves every dtype.
template <class S>
class where_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    if (ctx.inputs.size() != 3 || ctx.inputs[0].type != dtype::boolean) {
      return ctx.fail(error_code::invalid_model, "Where takes a bool condition and two values");
    }
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{1, sizeof(S)}, {2, sizeof(S)}}, sizeof(S)));
    const shape_t* in[] = {&ctx.inputs[0].shape, &ctx.inputs[1].shape, &ctx.inputs[2].shape};
    TROUPE_ASSIGN_OR_RETURN(auto plan, make_broadcast_plan(std::span<const shape_t* const>(in, 3),
                                                           ctx.outputs[0].shape));
    auto k = std::unique_ptr<where_kernel>(new where_kernel());
    k->plan_ = plan;
    k->inplace_ = same_shape_inplace(ctx, {1, 2});
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    const uint8_t* c = ctx.inputs[0].data<uint8_t>();
    const S* x = ctx.inputs[1].data<S>();
    const S* v = ctx.inputs[2].data<S>();
    S* y = ctx.outputs[0].data<S>();
    const int64_t sc = plan_.inner_stride(0), sx = plan_.inner_stride(1),
                  sv = plan_.inner_stride(2);
    parallel_for(plan_.total, cheap_grain, [&](int64_t begin, int64_t end) {
      for_each_run<3>(plan_, begin, end,
                      [&](const std::array<int64_t, 3>& at, int64_t pos, int64_t len) {
                        const uint8_t* cr = c + at[0];
                        const S* xr = x + at[1];
                        const S* vr = v + at[2];
                        S* yr = y + pos;
                        if (sc == 1 && sx == 1 && sv == 1) {
#pragma omp simd
                          for (int64_t i = 0; i < len; ++i) yr[i] = cr[i] != 0 ? xr[i] : vr[i];
                        } else {
                          for (int64_t i = 0; i < len; ++i)
                            yr[i] = cr[i * sc] != 0 ? xr[i * sx] : vr[i * sv];
                        }
                      });
    });
    return status::ok();
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override {
    return inplace_;
  }

 private:
  broadcast_plan plan_;
  std::vector<std::pair<int, int>> inplace_;
};

void register_where(kernel_registry& r) {
  r.add({"",
         "Where",
         backend::cpu,
         {dtype::boolean, dtype::u8, dtype::i8},
         1,
         {},
         &where_kernel<uint8_t>::create});
  r.add({"",
         "Where",
         backend::cpu,
         {dtype::f16, dtype::bf16, dtype::u16, dtype::i16},
         1,
         {},
         &where_kernel<uint16_t>::create});
  r.add({"",
         "Where",
         backend::cpu,
         {dtype::f32, dtype::u32, dtype::i32},
         1,
         {},
         &where_kernel<uint32_t>::create});
  r.add({"",
         "Where",
         backend::cpu,
         {dtype::f64, dtype::u64, dtype::i64},
         1,
         {},
         &where_kernel<uint64_t>::create});
}

}  // namespace

void register_binary(kernel_registry& r) {
  register_arithmetic(r);
  register_compare_logic(r);
  add_pow<float, double, int32_t, int64_t>(r);
  add_variadic<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "Sum", false,
                                              [](auto a, auto b) { return wrap_add(a, b); });
  add_variadic<float, double>(r, "Mean", true, [](auto a, auto b) { return a + b; });
  add_variadic<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "Max", false,
                                              [](auto a, auto b) { return max_of(a, b); });
  add_variadic<TROUPE_NUMERIC_AND_HALF_TYPES>(r, "Min", false,
                                              [](auto a, auto b) { return min_of(a, b); });
  register_where(r);
}

}  // namespace troupe::kernels::cpu
