// CPU kernels of the one-input elementwise ops: math, activations, logic predicates and Clip.
// Each op is a lambda of one element; unary_kernel runs it over the flat tensor, in parallel
// chunks, with the float loops compiled per ISA (TROUPE_SIMD_CLONES).
#include <cmath>
#include <string>

#include "kernels/cpu/ew_common.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace troupe::kernels::cpu {
namespace {

template <class S, class O, class F>
TROUPE_SIMD_CLONES void unary_loop_clones(const S* x, O* y, int64_t n, const F& f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class S, class O, class F>
void unary_loop(const S* x, O* y, int64_t n, const F& f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

enum class cost : uint8_t { cheap, costly };

/// y[i] = f(x[i]) over the whole tensor. S is input 0's storage type, O the output's.
template <class S, class O, class F>
class unary_kernel final : public kernel {
 public:
  unary_kernel(F f, const kernel_create_context& ctx, cost c)
      : f_(std::move(f)),
        elements_(ctx.outputs[0].elements()),
        grain_(c == cost::cheap ? cheap_grain : costly_grain),
        inplace_(same_shape_inplace(ctx, {0})) {}

  status compute(kernel_run_context& ctx) override {
    const S* x = ctx.inputs[0].data<S>();
    O* y = ctx.outputs[0].data<O>();
    parallel_for(elements_, grain_, [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<S, float>) {
        unary_loop_clones(x + b, y + b, e - b, f_);
      } else {
        unary_loop(x + b, y + b, e - b, f_);
      }
    });
    return status::ok();
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return inplace_; }

 private:
  F f_;
  int64_t elements_;
  int64_t grain_;
  std::vector<std::pair<int, int>> inplace_;
};

template <class S, class F>
expected<std::unique_ptr<kernel>> make_unary(F f, const kernel_create_context& ctx, cost c) {
  using O = decltype(f(S{}));
  TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(S)}}, sizeof(O)));
  return std::unique_ptr<kernel>(new unary_kernel<S, O, F>(std::move(f), ctx, c));
}

/// Registers op `name` for each tag type in Ts; make(node) returns the element function, a
/// generic lambda instantiated for each storage type.
template <class... Ts, class Make>
void add_unary(kernel_registry& r, const char* name, cost c, Make make) {
  (r.add({"",
          name,
          backend::cpu,
          {type_of<Ts>::value},
          0,
          {},
          [make, c](const kernel_create_context& ctx) {
            if constexpr (std::is_same_v<Ts, half16>) {
              return make_unary<uint16_t>(lift_half(make(ctx.node)), ctx, c);
            } else {
              return make_unary<storage_t<Ts>>(make(ctx.node), ctx, c);
            }
          }}),
   ...);
}

// Element functions. Float paths keep every select in `pick` so that the loops vectorise.
template <class T>
T relu(T x) {
  return pick(x > T(0), x, T(0));
}
template <class T>
T sign(T x) {
  if constexpr (std::is_floating_point_v<T>) {
    return pick(x > T(0), T(1), pick(x < T(0), T(-1), x));  // 0 and NaN map to themselves
  } else if constexpr (std::is_signed_v<T>) {
    return static_cast<T>((x > 0) - (x < 0));
  } else {
    return static_cast<T>(x != 0);
  }
}
template <class T>
T abs_value(T x) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::fabs(x);
  } else if constexpr (std::is_signed_v<T>) {
    return x < 0 ? wrap_neg(x) : x;
  } else {
    return x;
  }
}
template <class T>
T exp_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return vm::exp(x);
  } else {
    return std::exp(x);
  }
}
template <class T>
T erf_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return vm::erf(x);
  } else {
    return std::erf(x);
  }
}
template <class T>
T tanh_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return vm::tanh(x);
  } else {
    return std::tanh(x);
  }
}
template <class T>
T sigmoid_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return vm::sigmoid(x);
  } else {
    return T(1) / (T(1) + std::exp(-x));
  }
}
/// log(1 + e^x) without overflow for large x or loss of precision for very negative x.
template <class T>
T softplus(T x) {
  return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

void register_math(kernel_registry& r) {
  auto none = [](auto f) { return [f](const op_node&) { return f; }; };
  add_unary<float, double, half16, int8_t, int16_t, int32_t, int64_t>(
      r, "Neg", cost::cheap, none([](auto x) { return wrap_neg(x); }));
  add_unary<float, double, half16, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t,
            uint64_t>(r, "Abs", cost::cheap, none([](auto x) { return abs_value(x); }));
  add_unary<float, double, half16, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t,
            uint64_t>(r, "Sign", cost::cheap, none([](auto x) { return sign(x); }));
  add_unary<float, double, half16>(r, "Reciprocal", cost::cheap,
                                   none([](auto x) { return decltype(x)(1) / x; }));
  add_unary<float, double, half16>(r, "Sqrt", cost::cheap,
                                   none([](auto x) { return std::sqrt(x); }));
  add_unary<float, double, half16>(r, "Exp", cost::costly, none([](auto x) { return exp_of(x); }));
  add_unary<float, double, half16>(r, "Log", cost::costly,
                                   none([](auto x) { return std::log(x); }));
  add_unary<float, double, half16>(r, "Erf", cost::costly, none([](auto x) { return erf_of(x); }));
  add_unary<float, double, half16>(r, "Floor", cost::cheap,
                                   none([](auto x) { return std::floor(x); }));
  add_unary<float, double, half16>(r, "Ceil", cost::cheap,
                                   none([](auto x) { return std::ceil(x); }));
  // Round: halves to even, which nearbyint does in the default rounding mode.
  add_unary<float, double, half16>(r, "Round", cost::cheap,
                                   none([](auto x) { return std::nearbyint(x); }));
  add_unary<float, double, half16>(r, "Sin", cost::costly,
                                   none([](auto x) { return std::sin(x); }));
  add_unary<float, double, half16>(r, "Cos", cost::costly,
                                   none([](auto x) { return std::cos(x); }));
  add_unary<float, double, half16>(r, "Tan", cost::costly,
                                   none([](auto x) { return std::tan(x); }));
  add_unary<float, double, half16>(r, "Asin", cost::costly,
                                   none([](auto x) { return std::asin(x); }));
  add_unary<float, double, half16>(r, "Acos", cost::costly,
                                   none([](auto x) { return std::acos(x); }));
  add_unary<float, double, half16>(r, "Atan", cost::costly,
                                   none([](auto x) { return std::atan(x); }));
  add_unary<float, double, half16>(r, "Sinh", cost::costly,
                                   none([](auto x) { return std::sinh(x); }));
  add_unary<float, double, half16>(r, "Cosh", cost::costly,
                                   none([](auto x) { return std::cosh(x); }));
  add_unary<float, double, half16>(r, "Asinh", cost::costly,
                                   none([](auto x) { return std::asinh(x); }));
  add_unary<float, double, half16>(r, "Acosh", cost::costly,
                                   none([](auto x) { return std::acosh(x); }));
  add_unary<float, double, half16>(r, "Atanh", cost::costly,
                                   none([](auto x) { return std::atanh(x); }));
  add_unary<float, double, half16>(r, "IsNaN", cost::cheap,
                                   none([](auto x) { return static_cast<uint8_t>(x != x); }));
  add_unary<float, double, half16>(r, "IsInf", cost::cheap, [](const op_node& n) {
    const bool neg = n.attrs.get_int("detect_negative", 1) != 0;
    const bool pos = n.attrs.get_int("detect_positive", 1) != 0;
    return [neg, pos](auto x) {
      using T = decltype(x);
      const T inf = std::numeric_limits<T>::infinity();
      return static_cast<uint8_t>((pos & (x == inf)) | (neg & (x == -inf)));
    };
  });
  add_unary<bool8>(r, "Not", cost::cheap,
                   none([](uint8_t x) { return static_cast<uint8_t>(x == 0); }));
}

void register_activations(kernel_registry& r) {
  auto none = [](auto f) { return [f](const op_node&) { return f; }; };
  add_unary<float, double, half16, int8_t, int16_t, int32_t, int64_t>(
      r, "Relu", cost::cheap, none([](auto x) { return relu(x); }));
  add_unary<float, double, half16>(r, "Tanh", cost::costly,
                                   none([](auto x) { return tanh_of(x); }));
  add_unary<float, double, half16>(r, "Sigmoid", cost::costly,
                                   none([](auto x) { return sigmoid_of(x); }));
  add_unary<float, double, half16>(r, "LeakyRelu", cost::cheap, [](const op_node& n) {
    const float alpha = n.attrs.get_float("alpha", 0.01f);
    return [alpha](auto x) {
      using T = decltype(x);
      return x * pick(x < T(0), T(alpha), T(1));
    };
  });
  add_unary<float, double, half16>(r, "Elu", cost::costly, [](const op_node& n) {
    const float alpha = n.attrs.get_float("alpha", 1.0f);
    return [alpha](auto x) {
      using T = decltype(x);
      return x < T(0) ? T(alpha) * std::expm1(x) : x;
    };
  });
  add_unary<float, double, half16>(r, "Selu", cost::costly, [](const op_node& n) {
    const float alpha = n.attrs.get_float("alpha", 1.67326319217681884765625f);
    const float gamma = n.attrs.get_float("gamma", 1.05070102214813232421875f);
    return [alpha, gamma](auto x) {
      using T = decltype(x);
      return x > T(0) ? T(gamma) * x : T(gamma) * T(alpha) * std::expm1(x);
    };
  });
  add_unary<float, double, half16>(r, "Celu", cost::costly, [](const op_node& n) {
    const float alpha = n.attrs.get_float("alpha", 1.0f);
    return [alpha](auto x) {
      using T = decltype(x);
      return x > T(0) ? x : T(alpha) * std::expm1(x / T(alpha));
    };
  });
  add_unary<float, double, half16>(r, "ThresholdedRelu", cost::cheap, [](const op_node& n) {
    const float alpha = n.attrs.get_float("alpha", 1.0f);
    return [alpha](auto x) {
      using T = decltype(x);
      return pick(x > T(alpha), x, T(0));
    };
  });
  add_unary<float, double, half16>(r, "HardSigmoid", cost::cheap, [](const op_node& n) {
    const float alpha = n.attrs.get_float("alpha", 0.2f);
    const float beta = n.attrs.get_float("beta", 0.5f);
    return [alpha, beta](auto x) {
      using T = decltype(x);
      const T v = T(alpha) * x + T(beta);
      return pick(v > T(1), T(1), pick(v > T(0), v, T(0)));
    };
  });
  add_unary<float, double, half16>(r, "HardSwish", cost::cheap, none([](auto x) {
                                     using T = decltype(x);
                                     const T v = x * T(1.0 / 6.0) + T(0.5);
                                     return x * pick(v > T(1), T(1), pick(v > T(0), v, T(0)));
                                   }));
  add_unary<float, double, half16>(
      r, "Softsign", cost::cheap, none([](auto x) { return x / (decltype(x)(1) + std::fabs(x)); }));
  add_unary<float, double, half16>(r, "Softplus", cost::costly,
                                   none([](auto x) { return softplus(x); }));
  add_unary<float, double, half16>(r, "Mish", cost::costly,
                                   none([](auto x) { return x * std::tanh(softplus(x)); }));
  add_unary<float, double, half16, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t,
            uint64_t>(r, "Shrink", cost::cheap, [](const op_node& n) {
    const float bias = n.attrs.get_float("bias", 0.0f);
    const float lambd = n.attrs.get_float("lambd", 0.5f);
    return [bias, lambd](auto x) {
      using T = decltype(x);
      if constexpr (std::is_floating_point_v<T>) {
        return pick(x < T(-lambd), x + T(bias), pick(x > T(lambd), x - T(bias), T(0)));
      } else {
        const double v = static_cast<double>(x);
        const double y = v < -lambd ? v + bias : (v > lambd ? v - bias : 0.0);
        return float_to_int<T>(y);
      }
    };
  });
}

/// Gelu (opset 20 semantics, accepted at any opset: the fusion pass emits it for the erf form).
template <class T>
expected<std::unique_ptr<kernel>> make_gelu(const kernel_create_context& ctx) {
  const std::string mode = ctx.node.attrs.get_string("approximate", "none");
  if (mode == "none") {
    return make_unary<T>(
        [](T x) {
          if constexpr (std::is_same_v<T, float>) {
            return vm::gelu_erf(x);
          } else {
            return T(0.5) * x * std::erfc(-x * T(0.70710678118654752));
          }
        },
        ctx, cost::costly);
  }
  if (mode == "tanh") {
    return make_unary<T>(
        [](T x) {
          if constexpr (std::is_same_v<T, float>) {
            return vm::gelu_tanh(x);
          } else {
            return x / (T(1) + std::exp(T(-1.5957691216057308) * (x + T(0.044715) * x * x * x)));
          }
        },
        ctx, cost::costly);
  }
  return ctx.fail(error_code::invalid_model,
                  "approximate must be 'none' or 'tanh', not '" + mode + "'");
}

/// Clip: bounds from attributes before opset 11, from optional scalar inputs 1 and 2 after.
/// Constant bounds are read once here; others at each run (they may come from other nodes).
template <class S>
class clip_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_RETURN_IF_ERROR(check_element_sizes(ctx, {{0, sizeof(S)}}, sizeof(S)));
    auto k = std::unique_ptr<clip_kernel>(new clip_kernel(ctx));
    if (ctx.node.opset < 11) {
      if constexpr (std::is_floating_point_v<S>) {
        k->lo_ = static_cast<S>(
            ctx.node.attrs.get_float("min", -std::numeric_limits<float>::infinity()));
        k->hi_ =
            static_cast<S>(ctx.node.attrs.get_float("max", std::numeric_limits<float>::infinity()));
      }
      return std::unique_ptr<kernel>(std::move(k));
    }
    for (int i = 1; i <= 2; ++i) {
      if (!ctx.has_input(static_cast<size_t>(i))) continue;
      const tensor_info& info = ctx.inputs[static_cast<size_t>(i)];
      if (info.type != ctx.inputs[0].type || info.elements() != 1) {
        return ctx.fail(error_code::invalid_model,
                        "input " + std::to_string(i) +
                            " must be a one-element tensor of the input's dtype, not " +
                            info.to_string());
      }
      S& bound = i == 1 ? k->lo_ : k->hi_;
      if (const tensor* v = ctx.value(static_cast<size_t>(i))) {
        bound = v->data<S>()[0];
      } else {
        (i == 1 ? k->lo_input_ : k->hi_input_) = true;
      }
    }
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    const S lo = lo_input_ ? ctx.inputs[1].data<S>()[0] : lo_;
    const S hi = hi_input_ ? ctx.inputs[2].data<S>()[0] : hi_;
    const S* x = ctx.inputs[0].data<S>();
    S* y = ctx.outputs[0].data<S>();
    // min(max(x, lo), hi): when lo > hi every output is hi, as the spec says. NaN stays NaN.
    auto f = [lo, hi](S v) {
      const S a = pick(v < lo, lo, v);
      return pick(a > hi, hi, a);
    };
    parallel_for(elements_, cheap_grain, [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<S, float>) {
        unary_loop_clones(x + b, y + b, e - b, f);
      } else {
        unary_loop(x + b, y + b, e - b, f);
      }
    });
    return status::ok();
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return inplace_; }
  bool reads_constant_input(int i) const override { return i == 0; }

 private:
  explicit clip_kernel(const kernel_create_context& ctx)
      : elements_(ctx.outputs[0].elements()), inplace_(same_shape_inplace(ctx, {0})) {}

  int64_t elements_;
  std::vector<std::pair<int, int>> inplace_;
  S lo_ = std::numeric_limits<S>::has_infinity ? -std::numeric_limits<S>::infinity()
                                               : std::numeric_limits<S>::lowest();
  S hi_ = std::numeric_limits<S>::has_infinity ? std::numeric_limits<S>::infinity()
                                               : std::numeric_limits<S>::max();
  bool lo_input_ = false;  // the bound is a run-time input, not a constant
  bool hi_input_ = false;
};

template <class... Ts>
void add_clip(kernel_registry& r) {
  (r.add({"", "Clip", backend::cpu, {type_of<Ts>::value}, 0, {}, &clip_kernel<Ts>::create}), ...);
}

}  // namespace

status check_element_sizes(const kernel_create_context& ctx,
                           std::initializer_list<std::pair<int, size_t>> inputs, size_t output) {
  bool ok = !ctx.outputs.empty() && dtype_size(ctx.outputs[0].type) == output;
  for (auto [i, size] : inputs) {
    ok = ok && ctx.has_input(static_cast<size_t>(i)) &&
         dtype_size(ctx.inputs[static_cast<size_t>(i)].type) == size;
  }
  if (ok) return status::ok();
  std::string types;
  for (const auto& in : ctx.inputs) types += in.to_string() + " ";
  return ctx.fail(error_code::invalid_model,
                  "input/output dtypes do not match the kernel: " + types + "-> " +
                      (ctx.outputs.empty() ? std::string("nothing") : ctx.outputs[0].to_string()));
}

std::vector<std::pair<int, int>> same_shape_inplace(const kernel_create_context& ctx,
                                                    std::initializer_list<int> inputs) {
  std::vector<std::pair<int, int>> pairs;
  if (ctx.outputs.empty()) return pairs;
  for (int i : inputs) {
    if (ctx.has_input(static_cast<size_t>(i)) &&
        ctx.inputs[static_cast<size_t>(i)] == ctx.outputs[0]) {
      pairs.emplace_back(0, i);
    }
  }
  return pairs;
}

void register_unary(kernel_registry& r) {
  register_math(r);
  register_activations(r);
  r.add({"", "Gelu", backend::cpu, {dtype::f32}, 0, {}, &make_gelu<float>});
  r.add({"", "Gelu", backend::cpu, {dtype::f64}, 0, {}, &make_gelu<double>});
  add_clip<float, double, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t>(
      r);
}

}  // namespace troupe::kernels::cpu
