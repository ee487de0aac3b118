#pragma once
/// Shared by the CPU elementwise, reduction and normalisation kernels: thread splitting, SIMD
/// multiversioning, storage types and wrap-around integer arithmetic. Internal to kernels/cpu.

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/kernel.hpp"

/// Compiles a hot loop three times (baseline x86-64, AVX2+FMA, AVX-512) and picks one at load
/// time: the build targets baseline x86-64, which would leave the loops at SSE2 width.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TROUPE_SIMD_CLONES \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define TROUPE_SIMD_CLONES
#endif

namespace troupe::kernels::cpu {

/// Family registration functions called by register_elementwise / register_reduction.
void register_unary(kernel_registry& r);
void register_binary(kernel_registry& r);
void register_cast(kernel_registry& r);
void register_softmax(kernel_registry& r);
void register_layer_norm(kernel_registry& r);
void register_topk(kernel_registry& r);

/// Work below which a loop stays on one thread: waking the team costs a few microseconds.
inline constexpr int64_t cheap_grain = 32768;  // elements of an add-like loop
inline constexpr int64_t costly_grain = 4096;  // elements of an exp/erf-like loop

/// Calls f(begin, end) over [0, n) (elements, rows or tasks) in contiguous chunks, one per
/// thread, each about `grain` long at least; serially when n is small or when already inside a
/// parallel region. Chunk starts are multiples of 16 so that threads do not share the cache lines
/// of a float output.
template <class F>
void parallel_for(int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  threads = std::min<int64_t>(threads, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  if (threads <= 1) {
    f(int64_t{0}, n);
    return;
  }
  const int team = static_cast<int>(threads);
#pragma omp parallel num_threads(team)
  {
    const int64_t nt = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    const int64_t chunk = ((n + nt - 1) / nt + 15) / 16 * 16;
    const int64_t begin = std::min(n, t * chunk);
    const int64_t end = std::min(n, begin + chunk);
    if (begin < end) f(begin, end);
  }
}

/// A dtype carried as a type: storage is the C++ type of one element. bool, float16 and
/// bfloat16 need tags because their storage (uint8_t, uint16_t) is shared with other dtypes.
struct bool8 {};
struct half16 {};
struct bfloat16 {};
template <class T>
struct type_of {
  using storage = T;
  static constexpr dtype value = dtype_of<T>::value;
};
template <>
struct type_of<bool8> {
  using storage = uint8_t;
  static constexpr dtype value = dtype::boolean;
};
template <>
struct type_of<half16> {
  using storage = uint16_t;
  static constexpr dtype value = dtype::f16;
};
template <>
struct type_of<bfloat16> {
  using storage = uint16_t;
  static constexpr dtype value = dtype::bf16;
};
template <class T>
using storage_t = typename type_of<T>::storage;

template <class T>
struct type_tag {
  using type = T;
};

/// Calls f(type_tag<T>{}) for the tag type T of `t` among the numeric dtypes (no bool, no half);
/// `fallback` is returned for any other dtype.
template <class R, class F>
R visit_numeric(dtype t, R fallback, const F& f) {
  switch (t) {
    case dtype::f32:
      return f(type_tag<float>{});
    case dtype::f64:
      return f(type_tag<double>{});
    case dtype::i8:
      return f(type_tag<int8_t>{});
    case dtype::u8:
      return f(type_tag<uint8_t>{});
    case dtype::i16:
      return f(type_tag<int16_t>{});
    case dtype::u16:
      return f(type_tag<uint16_t>{});
    case dtype::i32:
      return f(type_tag<int32_t>{});
    case dtype::u32:
      return f(type_tag<uint32_t>{});
    case dtype::i64:
      return f(type_tag<int64_t>{});
    case dtype::u64:
      return f(type_tag<uint64_t>{});
    default:
      return fallback;
  }
}

/// The same over all 13 dtypes, with the tag types for bool, float16 and bfloat16.
template <class R, class F>
R visit_all(dtype t, R fallback, const F& f) {
  switch (t) {
    case dtype::boolean:
      return f(type_tag<bool8>{});
    case dtype::f16:
      return f(type_tag<half16>{});
    case dtype::bf16:
      return f(type_tag<bfloat16>{});
    default:
      return visit_numeric<R>(t, std::move(fallback), f);
  }
}

/// Integer arithmetic that wraps modulo 2^bits instead of overflowing (signed overflow is
/// undefined behaviour, and model data may overflow). Narrow types compute in uint32_t, so
/// that promotion to int cannot overflow either.
template <class T>
using wrap_unsigned_t = std::make_unsigned_t<std::conditional_t<(sizeof(T) < 4), uint32_t, T>>;
template <class T>
constexpr T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = wrap_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}
template <class T>
constexpr T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = wrap_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
  } else {
    return a - b;
  }
}
template <class T>
constexpr T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = wrap_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
  } else {
    return a * b;
  }
}
template <class T>
constexpr T wrap_neg(T a) {
  return wrap_sub(T(0), a);
}

/// Float -> integer conversion that is defined for every input: truncates toward zero when the
/// value fits in int64 (then wraps to the target's width, as numpy does on x86) and gives
/// INT64_MIN's low bits (0 for narrow types) for NaN and out-of-range values.
template <class I, class F>
inline I float_to_int(F v) {
  static_assert(std::is_integral_v<I> && std::is_floating_point_v<F>);
  if constexpr (std::is_same_v<I, uint64_t>) {
    if (v >= F(0) && v < F(18446744073709551616.0)) {
      return v < F(9223372036854775808.0)
                 ? static_cast<uint64_t>(static_cast<int64_t>(v))
                 : static_cast<uint64_t>(static_cast<int64_t>(v - F(9223372036854775808.0))) +
                       (uint64_t{1} << 63);
    }
  }
  const bool fits = v >= F(-9223372036854775808.0) && v < F(9223372036854775808.0);
  const int64_t w = fits ? static_cast<int64_t>(v) : std::numeric_limits<int64_t>::min();
  return static_cast<I>(w);
}

/// Numeric conversion between any two storage tags, as ONNX Cast defines it.
template <class To, class From>
inline storage_t<To> convert_value(storage_t<From> v) {
  using S = storage_t<From>;
  using D = storage_t<To>;
  if constexpr (std::is_same_v<From, To>) {
    return v;
  } else if constexpr (std::is_same_v<From, half16>) {
    return convert_value<To, float>(half_to_float(v));
  } else if constexpr (std::is_same_v<From, bfloat16>) {
    return convert_value<To, float>(bfloat16_to_float(v));
  } else if constexpr (std::is_same_v<From, bool8>) {
    return convert_value<To, uint8_t>(static_cast<uint8_t>(v != 0));
  } else if constexpr (std::is_same_v<To, bool8>) {
    return static_cast<uint8_t>(v != S(0));
  } else if constexpr (std::is_same_v<To, half16>) {
    return float_to_half(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bfloat16>) {
    return float_to_bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
    return float_to_int<D>(v);
  } else {
    return static_cast<D>(v);  // int->int wraps (C++20), int->float and float->float round
  }
}

/// c ? a : b for values already computed. Float selects are done on the bits: GCC turns a plain
/// ?: over computed float arms into a branch under -ftrapping-math, which stops vectorisation.
template <class T>
inline T pick(bool c, T a, T b) {
  if constexpr (std::is_same_v<T, float>) {
    const int32_t m = -static_cast<int32_t>(c);
    return std::bit_cast<float>((std::bit_cast<int32_t>(a) & m) | (std::bit_cast<int32_t>(b) & ~m));
  } else if constexpr (std::is_same_v<T, double>) {
    const int64_t m = -static_cast<int64_t>(c);
    return std::bit_cast<double>((std::bit_cast<int64_t>(a) & m) |
                                 (std::bit_cast<int64_t>(b) & ~m));
  } else {
    return c ? a : b;
  }
}

/// Runs a float element function on float16 storage: float16 kernels convert each element to
/// float and back (correct, not fast: float16 models are rare on the CPU). Results that are not
/// float (bool from a comparison) pass through.
template <class F>
auto lift_half(F f) {
  return [f](auto... h) {
    const auto r = f(half_to_float(h)...);
    if constexpr (std::is_same_v<std::remove_const_t<decltype(r)>, float>) {
      return float_to_half(r);
    } else {
      return r;
    }
  };
}

template <class T>
inline bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    return v != v;
  } else {
    return false;
  }
}

/// OK when inputs[i] (for each listed i) and output 0 have elements of the given sizes: a
/// factory's guard that the tensors it will reinterpret are what its template assumes, whatever
/// path created the kernel.
status check_element_sizes(const kernel_create_context& ctx,
                           std::initializer_list<std::pair<int, size_t>> inputs, size_t output);

/// (0, i) for each listed input i whose type and shape equal output 0's: the in-place pairs of an
/// elementwise op.
std::vector<std::pair<int, int>> same_shape_inplace(const kernel_create_context& ctx,
                                                    std::initializer_list<int> inputs);

}  // namespace troupe::kernels::cpu
