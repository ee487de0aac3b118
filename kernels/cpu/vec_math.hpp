#pragma once
/// Float math that GCC vectorises: exp, erf, tanh, sigmoid as branch-free inline functions of
/// one float, so that a `#pragma omp simd` loop calling them becomes SIMD code for the ISA of the
/// enclosing function (see TROUPE_SIMD_CLONES). Selects go through `pick` (bit masks) because
/// a ?: over computed float values becomes a branch under the default -ftrapping-math.
///
/// Accuracy against libm in double (test_cpu_elementwise checks it on a sweep of floats): exp,
/// sigmoid, erf and tanh within 2e-7 relative for normal results; exp_neg and sigmoid flush
/// results under about 1e-38 to zero; GELU keeps ~1e-6 relative accuracy in its negative tail.
/// The polynomial coefficients are least-squares fits made for troupe on the stated intervals
/// (error of the fit in brackets), rounded to float.

#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/ew_common.hpp"

namespace troupe::kernels::cpu::vm {

/// Round to nearest (ties to even) for |v| < 2^22: adding and removing 1.5 * 2^23 leaves the
/// integer part in the mantissa. Needs IEEE arithmetic (no -ffast-math reassociation).
inline float round_nearest(float v) {
  constexpr float magic = 12582912.0f;
  return (v + magic) - magic;
}

/// 2^n for an integer n in [-126, 127], from its exponent bits.
inline float exp2_int(int32_t n) {
  return std::bit_cast<float>(static_cast<int32_t>((n + 127) << 23));
}

/// e^x: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so that n * ln2_hi is exact),
/// e^r = 1 + r + r^2 Q(r) with Q of degree 4 [7e-9]. 2^n is applied in two halves so that
/// n = 128 (x near 88.72) and n down to -150 (denormal results) stay exact until the last multiply.
inline float exp(float x) {
  constexpr float max_x = 88.72283935546875f;  // e^max_x is the largest finite float
  constexpr float min_x = -103.972084f;        // below: e^x rounds to 0 even as a denormal
  constexpr float log2e = 1.44269504088896341f;
  constexpr float ln2_hi = 0.693359375f;  // 9 significant bits: n * ln2_hi is exact
  constexpr float ln2_lo = -2.12194440054690583e-4f;
  const bool over = x > max_x;
  const bool in_range = x >= min_x;  // false for NaN: the arithmetic below sees min_x
  float xc = pick(over, max_x, x);
  xc = pick(in_range, xc, min_x);
  const float n = round_nearest(xc * log2e);
  const float r = (xc - n * ln2_hi) - n * ln2_lo;
  float q = 0.00137529654f;
  q = q * r + 0.00836613957f;
  q = q * r + 0.0416692084f;
  q = q * r + 0.166665426f;
  q = q * r + 0.49999991f;
  const float p = 1.0f + r + (r * r) * q;
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t half = ni >> 1;
  float y = p * exp2_int(half) * exp2_int(ni - half);
  y = pick(over, std::numeric_limits<float>::infinity(), y);
  y = pick(in_range, y, 0.0f);
  return pick(x != x, x, y);
}

/// e^x for x <= 0 (and NaN), the common case (softmax rows after max subtraction, e^{-x^2},
/// e^{-|x|}), in about half the instructions of exp(): no overflow path, one 2^n scale, and
/// results below e^-87 (2^-125.5, near the smallest normal float) flushed to zero.
inline float exp_neg(float x) {
  constexpr float min_x = -87.0f;  // n >= -126: 2^n stays a normal float
  constexpr float log2e = 1.44269504088896341f;
  constexpr float ln2_hi = 0.693359375f;
  constexpr float ln2_lo = -2.12194440054690583e-4f;
  const bool in_range = x >= min_x;  // false for NaN and -inf
  const float xc = pick(in_range, x, min_x);
  const float n = round_nearest(xc * log2e);
  const float r = (xc - n * ln2_hi) - n * ln2_lo;
  float q = 0.00137529654f;
  q = q * r + 0.00836613957f;
  q = q * r + 0.0416692084f;
  q = q * r + 0.166665426f;
  q = q * r + 0.49999991f;
  const float p = (q * r + 1.0f) * r + 1.0f;
  const float y = p * exp2_int(static_cast<int32_t>(n));
  return pick(in_range, y, pick(x != x, x, 0.0f));
}

/// x P(x^2) ~ erf(x) on |x| <= 1: P of degree 6 [4e-9].
inline float erf_small(float x) {
  const float x2 = x * x;
  float p = 7.97101675e-05f;
  p = p * x2 - 0.000804336402f;
  p = p * x2 + 0.00519183209f;
  p = p * x2 - 0.0268555086f;
  p = p * x2 + 0.11283622f;
  p = p * x2 - 0.376126287f;
  p = p * x2 + 1.12837917f;
  return x * p;
}

/// v^2 as hi + err exactly (Dekker's product, with v split at 12 bits by masking), for e^{-v^2}
/// where v^2 is large: rounding v^2 to float alone would cost 6e-8 * v^2 of relative accuracy.
struct square_parts {
  float hi, err;
};
inline square_parts exact_square(float v) {
  const float v_hi = std::bit_cast<float>(std::bit_cast<uint32_t>(v) & 0xFFFFF000u);
  const float v_lo = v - v_hi;
  const float hi = v * v;
  return {hi, ((v_hi * v_hi - hi) + 2.0f * v_hi * v_lo) + v_lo * v_lo};
}

/// erfc(a) for a >= 1 given a^2 = sq.hi + sq.err: e^{-a^2} R(1/a), where R fits erfc(a) e^{a^2}
/// on 1 <= a <= 9.5 in the centred variable 1/a - 0.55 (degree 10 [2e-8]; 5e-7 once evaluated in
/// float). No cancellation: relative accuracy holds down to the flush to 0 near a = 9.3. Callers
/// clamp a (and its square) to 10 at most, where erfc is 0 in float, so that inf stays out.
inline float erfc_tail(float a, square_parts sq) {
  const float s = 1.0f / a - 0.55f;
  float c = -0.0504476538f;
  c = c * s + 0.0629298895f;
  c = c * s - 0.0185533745f;
  c = c * s - 0.0256777591f;
  c = c * s + 0.0568446085f;
  c = c * s - 0.0693045498f;
  c = c * s + 0.0449764574f;
  c = c * s + 0.0337240577f;
  c = c * s - 0.181234886f;
  c = c * s + 0.408834189f;
  c = c * s + 0.276294382f;
  return vm::exp_neg(-sq.hi) * (1.0f - sq.err) * c;
}

/// erf(x): erf_small on |x| <= 1, +-(1 - erfc_tail(|x|)) beyond (1 for infinite |x|, NaN stays
/// NaN).
inline float erf(float x) {
  const float ax = std::fabs(x);
  const float a = pick(ax > 10.0f, 10.0f, ax);  // NaN stays NaN
  // erfc's own relative accuracy hardly matters here (erf = 1 - erfc with erfc < 0.16), so a^2
  // is simply rounded.
  const float big = std::copysign(1.0f - erfc_tail(a, {a * a, 0.0f}), x);
  return pick(ax <= 1.0f, erf_small(x), big);
}

/// tanh(x): x P(x^2) on |x| < 0.625 (P of degree 5 [1.2e-8]); (1 - e) / (1 + e) with
/// e = e^{-2|x|} beyond, where the cancellation costs less than 2e-7 relative.
inline float tanh(float x) {
  const float ax = std::fabs(x);
  const float x2 = x * x;
  float p = -0.00575945659f;
  p = p * x2 + 0.0206805182f;
  p = p * x2 - 0.0537489805f;
  p = p * x2 + 0.13331478f;
  p = p * x2 - 0.333332757f;
  p = p * x2 + 1.0f;
  const float small = x * p;
  const float e = vm::exp_neg(-2.0f * ax);
  const float big = std::copysign((1.0f - e) / (1.0f + e), x);
  return pick(ax < 0.625f, small, big);
}

/// 1 / (1 + e^-x), from e = e^{-|x|} so that only exp_neg is needed: 1 / (1 + e) for x >= 0,
/// e / (1 + e) below (which flushes to 0 under x = -87).
inline float sigmoid(float x) {
  const float e = vm::exp_neg(-std::fabs(x));
  const float d = 1.0f / (1.0f + e);
  return pick(x >= 0.0f, d, e * d);
}

/// GELU, exact form: x/2 (1 + erf(x / sqrt 2)). For x < -sqrt 2, 1 + erf is erfc_tail itself,
/// so negative inputs keep their relative accuracy instead of cancelling 1 against -erf.
inline float gelu_erf(float x) {
  const float z = x * 0.70710678118654752f;
  const float az = std::fabs(z);
  // z^2 = x^2 / 2 from x itself: z is rounded, and its error would be amplified by z^2 in e^{-z^2}.
  const float xc = pick(std::fabs(x) > 14.0f, std::copysign(14.0f, x), x);  // erfc(9.9): 0
  const square_parts x2 = exact_square(xc);
  const float tail = erfc_tail(pick(az > 9.9f, 9.9f, az), {0.5f * x2.hi, 0.5f * x2.err});
  const float one_plus_erf =
      pick(az <= 1.0f, 1.0f + erf_small(z), pick(z > 0.0f, 2.0f - tail, tail));
  return 0.5f * x * one_plus_erf;
}

/// GELU, tanh form: x/2 (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), computed as
/// x sigmoid(2u), the same value without the cancellation of 1 + tanh(u) for negative u.
inline float gelu_tanh(float x) {
  const float u2 = 1.5957691216057308f * (x + 0.044715f * x * x * x);
  return x * sigmoid(u2);
}

}  // namespace troupe::kernels::cpu::vm
