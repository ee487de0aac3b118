// CPU Cast and CastLike between every pair of the 13 dtypes. Conversions follow ONNX (and numpy
// on x86): float -> int truncates toward zero, x -> bool is x != 0, float16/bfloat16 go through
// float with round-to-nearest-even. Out-of-range float -> int is undefined in ONNX; here it is
// defined (see float_to_int) so that no input can trigger undefined behaviour.
#include <cstring>
#include <string>

#include "kernels/cpu/ew_common.hpp"

namespace troupe::kernels::cpu {
namespace {

template <class From, class To>
class cast_kernel final : public kernel {
 public:
  cast_kernel(int64_t elements, std::vector<std::pair<int, int>> inplace)
      : elements_(elements), inplace_(std::move(inplace)) {}

  status compute(kernel_run_context& ctx) override {
    using S = storage_t<From>;
    using D = storage_t<To>;
    const S* x = ctx.inputs[0].data<S>();
    D* y = ctx.outputs[0].data<D>();
    if constexpr (std::is_same_v<From, To>) {
      if (static_cast<const void*>(x) != static_cast<void*>(y)) {
        std::memcpy(y, x, static_cast<size_t>(elements_) * sizeof(S));
      }
    } else {
      parallel_for(elements_, cheap_grain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) y[i] = convert_value<To, From>(x[i]);
      });
    }
    return status::ok();
  }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return inplace_; }

 private:
  int64_t elements_;
  std::vector<std::pair<int, int>> inplace_;
};

/// The output dtype comes from the inferred output info, so Cast (attribute `to`) and CastLike
/// (input 1's dtype) share the factory.
template <class From>
expected<std::unique_ptr<kernel>> make_cast(const kernel_create_context& ctx) {
  using R = expected<std::unique_ptr<kernel>>;
  if (ctx.outputs.empty()) return ctx.fail(error_code::internal, "Cast without an output");
  const dtype to = ctx.outputs[0].type;
  const int64_t n = ctx.outputs[0].elements();
  return visit_all<R>(
      to, ctx.fail(error_code::unsupported, "cast to " + std::string(dtype_name(to))),
      [&](auto tag) -> R {
        using To = typename decltype(tag)::type;
        return std::unique_ptr<kernel>(new cast_kernel<From, To>(n, same_shape_inplace(ctx, {0})));
      });
}

template <class... Ts>
void add_cast(kernel_registry& r, const char* name) {
  (r.add({"", name, backend::cpu, {type_of<Ts>::value}, 0, {}, &make_cast<Ts>}), ...);
}

}  // namespace

void register_cast(kernel_registry& r) {
#define TROUPE_ALL_TYPES                                                                           \
  float, double, half16, bfloat16, int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, \
      uint64_t, bool8
  add_cast<TROUPE_ALL_TYPES>(r, "Cast");
  add_cast<TROUPE_ALL_TYPES>(r, "CastLike");
#undef TROUPE_ALL_TYPES
}

}  // namespace troupe::kernels::cpu
