// Elementwise kernels: unary functions, broadcasting binary ops, Where, Cast, the fused-op
// epilogue and the per-channel affine map. One kernel per element type; the op is a runtime
// switch that is uniform across the grid (these kernels are bound by memory, not by the branch).
#include <cuda_bf16.h>

#include <cmath>
#include <type_traits>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace troupe::kernels::cuda {
namespace {

// ---- element types -----------------------------------------------------------------------------

/// Storage type of a dtype on the device; bool is one byte holding 0 or 1.
template <dtype D>
struct storage;
template <>
struct storage<dtype::f32> {
  using type = float;
};
template <>
struct storage<dtype::f16> {
  using type = __half;
};
template <>
struct storage<dtype::bf16> {
  using type = __nv_bfloat16;
};
template <>
struct storage<dtype::f64> {
  using type = double;
};
template <>
struct storage<dtype::i8> {
  using type = int8_t;
};
template <>
struct storage<dtype::u8> {
  using type = uint8_t;
};
template <>
struct storage<dtype::i32> {
  using type = int32_t;
};
template <>
struct storage<dtype::i64> {
  using type = int64_t;
};
template <>
struct storage<dtype::boolean> {
  using type = uint8_t;
};
template <dtype D>
using storage_t = typename storage<D>::type;

/// V elements of T in one aligned load/store.
template <class T, int V>
struct alignas(sizeof(T) * V) packet {
  T v[V];
};

// ---- unary -------------------------------------------------------------------------------------

__device__ __forceinline__ float apply_unary(unary_op op, float x, float alpha, float beta) {
  switch (op) {
    case unary_op::identity:
      return x;
    case unary_op::neg:
      return -x;
    case unary_op::abs:
      return fabsf(x);
    case unary_op::sqrt:
      return sqrtf(x);
    case unary_op::exp:
      return expf(x);
    case unary_op::log:
      return logf(x);
    case unary_op::erf:
      return erff(x);
    case unary_op::tanh:
      return tanhf(x);
    case unary_op::sigmoid:
      return 1.0f / (1.0f + expf(-x));
    case unary_op::relu:
      return (x > 0.0f || x != x) ? x : 0.0f;  // max(0, NaN) is NaN in ONNX
    case unary_op::leaky_relu:
      return x >= 0.0f ? x : alpha * x;
    case unary_op::hard_sigmoid:
      return fmaxf(0.0f, fminf(1.0f, alpha * x + beta));
    case unary_op::hard_swish:
      return x * fmaxf(0.0f, fminf(1.0f, x * (1.0f / 6.0f) + 0.5f));
    case unary_op::gelu:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case unary_op::gelu_tanh: {
      const float k = 0.79788456080286536f;  // sqrt(2/pi)
      return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case unary_op::clip:
      return fminf(fmaxf(x, alpha), beta);
    case unary_op::reciprocal:
      return 1.0f / x;
    case unary_op::floor:
      return floorf(x);
    case unary_op::ceil:
      return ceilf(x);
    case unary_op::logical_not:
      return x == 0.0f ? 1.0f : 0.0f;
    case unary_op::sin:
      return sinf(x);
    case unary_op::cos:
      return cosf(x);
    case unary_op::round:
      return rintf(x);
    case unary_op::sign:
      return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);
    case unary_op::softplus:
      return x > 20.0f ? x : log1pf(expf(x));
    case unary_op::softsign:
      return x / (1.0f + fabsf(x));
    case unary_op::elu:
      return x >= 0.0f ? x : alpha * expm1f(x);
    case unary_op::selu:
      return beta * (x > 0.0f ? x : alpha * expm1f(x));
    case unary_op::celu:
      return fmaxf(0.0f, x) + fminf(0.0f, alpha * expm1f(x / alpha));
    case unary_op::mish:
      return x * tanhf(x > 20.0f ? x : log1pf(expf(x)));
    case unary_op::thresholded_relu:
      return x > alpha ? x : 0.0f;
  }
  return x;
}

template <class T>
__device__ __forceinline__ T apply_unary_int(unary_op op, T x) {
  switch (op) {
    case unary_op::neg:
      return -x;
    case unary_op::abs:
      return x < 0 ? -x : x;
    case unary_op::relu:
      return x > 0 ? x : T(0);
    default:
      return x;
  }
}

template <class T>
__device__ __forceinline__ T unary_value(unary_op op, T x, float alpha, float beta) {
  T out;
  store(&out, 0, apply_unary(op, load(&x, 0), alpha, beta));
  return out;
}

/// V > 1: x and y are 16-byte aligned; packets first, then the n % V tail.
template <class T, int V>
__global__ void unary_float_kernel(unary_op op, float alpha, float beta, const T* x, T* y,
                                   int64_t n) {
  const int64_t packets = n / V;
  const auto* xp = reinterpret_cast<const packet<T, V>*>(x);
  auto* yp = reinterpret_cast<packet<T, V>*>(y);
  TROUPE_GRID_LOOP(i, packets) {
    packet<T, V> p = xp[i];
#pragma unroll
    for (int k = 0; k < V; ++k) p.v[k] = unary_value(op, p.v[k], alpha, beta);
    yp[i] = p;
  }
  const int64_t t = packets * V + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (V > 1 && t < n) y[t] = unary_value(op, x[t], alpha, beta);
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <class T>
void run_unary_float(unary_op op, float alpha, float beta, const T* x, T* y, int64_t n,
                     cudaStream_t s) {
  constexpr int V = 16 / sizeof(T);
  if (aligned16(x) && aligned16(y)) {
    unary_float_kernel<T, V>
        <<<grid_for(n / V + 1), kBlockThreads, 0, s>>>(op, alpha, beta, x, y, n);
  } else {
    unary_float_kernel<T, 1><<<grid_for(n), kBlockThreads, 0, s>>>(op, alpha, beta, x, y, n);
  }
}

template <class T>
__global__ void unary_int_kernel(unary_op op, const T* x, T* y, int64_t n) {
  TROUPE_GRID_LOOP(i, n) {
    y[i] = apply_unary_int(op, x[i]);
  }
}

__global__ void not_kernel(const uint8_t* x, uint8_t* y, int64_t n) {
  TROUPE_GRID_LOOP(i, n) {
    y[i] = x[i] ? 0 : 1;
  }
}

// ---- clip --------------------------------------------------------------------------------------

template <class T>
__global__ void clip_kernel(const T* x, T* y, int64_t n, const T* lo, const T* hi, T lo_value,
                            T hi_value) {
  using C = typename compute_of<T>::type;
  const C l = lo ? load(lo, 0) : static_cast<C>(lo_value);
  const C h = hi ? load(hi, 0) : static_cast<C>(hi_value);
  TROUPE_GRID_LOOP(i, n) {
    C v = load(x, i);
    if (v < l) v = l;
    if (v > h) v = h;
    store(y, i, v);
  }
}

/// f16 / bf16: the host limits stay float (±inf for an absent bound, which the 16-bit types
/// could hold, but a finite limit beyond their range must not round to one).
template <class T>
__global__ void clip_16bit_kernel(const T* x, T* y, int64_t n, const T* lo, const T* hi,
                                  float lo_value, float hi_value) {
  const float l = lo ? load(lo, 0) : lo_value;
  const float h = hi ? load(hi, 0) : hi_value;
  TROUPE_GRID_LOOP(i, n) {
    float v = load(x, i);
    if (v < l) v = l;
    if (v > h) v = h;
    store(y, i, v);
  }
}

// ---- binary ------------------------------------------------------------------------------------

/// Element offset of output index i in operand k.
__device__ __forceinline__ int64_t operand_offset(const broadcast_plan& p, int k, int64_t i) {
  switch (p.modes[k]) {
    case broadcast_plan::contiguous:
      return i;
    case broadcast_plan::scalar:
      return 0;
    case broadcast_plan::row:
      return i % p.row_period[k];
    default:
      break;
  }
  if (p.index32) {
    uint32_t rest = static_cast<uint32_t>(i), off = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      const uint32_t dim = static_cast<uint32_t>(p.dims[d]);
      off += (rest % dim) * static_cast<uint32_t>(p.strides[k][d]);
      rest /= dim;
    }
    return off;
  }
  int64_t off = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    off += (i % p.dims[d]) * p.strides[k][d];
    i /= p.dims[d];
  }
  return off;
}

template <class C>
__device__ __forceinline__ C arith(binary_op op, C a, C b) {
  switch (op) {
    case binary_op::add:
      return a + b;
    case binary_op::sub:
      return a - b;
    case binary_op::mul:
      return a * b;
    case binary_op::div:
      if constexpr (std::is_integral_v<C>) {
        return b == 0 ? C(0) : a / b;
      } else {
        return a / b;
      }
    case binary_op::pow:
      if constexpr (std::is_floating_point_v<C>) {
        return powf(a, b);
      } else {
        return C(0);  // not dispatched for integers
      }
    // NaN propagates as in numpy.minimum / maximum.
    case binary_op::min:
      return (a != a || a < b) ? a : b;
    case binary_op::max:
      return (a != a || a > b) ? a : b;
    case binary_op::prelu:
      return a < C(0) ? b * a : a;
    default:
      return C(0);
  }
}

template <class C>
__device__ __forceinline__ uint8_t compare(binary_op op, C a, C b) {
  switch (op) {
    case binary_op::equal:
      return a == b;
    case binary_op::less:
      return a < b;
    case binary_op::less_equal:
      return a <= b;
    case binary_op::greater:
      return a > b;
    case binary_op::greater_equal:
      return a >= b;
    case binary_op::logical_and:
      return (a != C(0)) && (b != C(0));
    case binary_op::logical_or:
      return (a != C(0)) || (b != C(0));
    case binary_op::logical_xor:
      return (a != C(0)) != (b != C(0));
    default:
      return 0;
  }
}

/// TA/TB operand storage types, TO the output's (uint8_t for comparisons).
template <class TA, class TB, class TO>
__global__ void binary_kernel(binary_op op, const TA* a, const TB* b, TO* y, broadcast_plan p) {
  using C = typename compute_of<TA>::type;
  const int64_t n = p.out_elements;
  TROUPE_GRID_LOOP(i, n) {
    const C va = load(a, operand_offset(p, 0, i));
    const C vb = static_cast<C>(load(b, operand_offset(p, 1, i)));
    if constexpr (std::is_same_v<TO, uint8_t> && !std::is_same_v<TA, uint8_t>) {
      y[i] = compare(op, va, vb);
    } else if constexpr (std::is_same_v<TA, uint8_t>) {
      y[i] = compare(op, va, vb);
    } else {
      store(y, i, arith(op, va, vb));
    }
  }
}

template <class TA, class TB, class TO>
status run_binary(binary_op op, const void* a, const void* b, void* y, const broadcast_plan& p,
                  cudaStream_t s) {
  binary_kernel<TA, TB, TO><<<grid_for(p.out_elements), kBlockThreads, 0, s>>>(
      op, static_cast<const TA*>(a), static_cast<const TB*>(b), static_cast<TO*>(y), p);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

/// Packet k of operand `x` in packet-wise traversal: contiguous and row operands load V
/// consecutive elements (a row's period is a multiple of V), a scalar repeats.
template <class T, int V>
__device__ __forceinline__ packet<T, V> operand_packet(const T* x, broadcast_plan::mode m,
                                                       int64_t period, int64_t i) {
  packet<T, V> r;
  if (m == broadcast_plan::scalar) {
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = x[0];
    return r;
  }
  const int64_t e = m == broadcast_plan::row ? (i * V) % period : i * V;
  return *reinterpret_cast<const packet<T, V>*>(x + e);
}

/// Same-type arithmetic where every operand is contiguous, scalar or a row (period % V == 0), all
/// pointers 16-byte aligned: V elements per load and store.
template <class T, int V>
__global__ void binary_packet_kernel(binary_op op, const T* a, const T* b, T* y, broadcast_plan p) {
  using C = typename compute_of<T>::type;
  const int64_t n = p.out_elements;
  const int64_t packets = n / V;
  auto* yp = reinterpret_cast<packet<T, V>*>(y);
  TROUPE_GRID_LOOP(i, packets) {
    const packet<T, V> pa = operand_packet<T, V>(a, p.modes[0], p.row_period[0], i);
    const packet<T, V> pb = operand_packet<T, V>(b, p.modes[1], p.row_period[1], i);
    packet<T, V> r;
#pragma unroll
    for (int k = 0; k < V; ++k) store(r.v, k, arith(op, load(pa.v, k), load(pb.v, k)));
    yp[i] = r;
  }
  const int64_t t = packets * V + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < n) {
    store(y, t,
          arith(op, static_cast<C>(load(a, operand_offset(p, 0, t))),
                static_cast<C>(load(b, operand_offset(p, 1, t)))));
  }
}

template <class T>
status run_binary_same(binary_op op, const void* a, const void* b, void* y, const broadcast_plan& p,
                       cudaStream_t s) {
  if (binary_is_comparison(op)) return run_binary<T, T, uint8_t>(op, a, b, y, p, s);
  constexpr int V = 16 / sizeof(T);
  bool packets = aligned16(a) && aligned16(b) && aligned16(y) && p.out_elements >= V;
  for (int k = 0; k < 2; ++k) {
    packets = packets && (p.modes[k] != broadcast_plan::general) &&
              (p.modes[k] != broadcast_plan::row || p.row_period[k] % V == 0);
  }
  if (!packets) return run_binary<T, T, T>(op, a, b, y, p, s);
  binary_packet_kernel<T, V><<<grid_for(p.out_elements / V + 1), kBlockThreads, 0, s>>>(
      op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), p);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

template <class TA>
status run_pow(dtype b_type, const void* a, const void* b, void* y, const broadcast_plan& p,
               cudaStream_t s) {
  switch (b_type) {
    case dtype::f32:
      return run_binary<TA, float, TA>(binary_op::pow, a, b, y, p, s);
    case dtype::f16:
      return run_binary<TA, __half, TA>(binary_op::pow, a, b, y, p, s);
    case dtype::bf16:
      return run_binary<TA, __nv_bfloat16, TA>(binary_op::pow, a, b, y, p, s);
    case dtype::i32:
      return run_binary<TA, int32_t, TA>(binary_op::pow, a, b, y, p, s);
    case dtype::i64:
      return run_binary<TA, int64_t, TA>(binary_op::pow, a, b, y, p, s);
    default:
      return unsupported("Pow exponent dtype " + std::string(dtype_name(b_type)));
  }
}

// ---- where -------------------------------------------------------------------------------------

template <class T>
__global__ void where_kernel(const uint8_t* cond, const T* x, const T* y, T* out,
                             broadcast_plan p) {
  const int64_t n = p.out_elements;
  TROUPE_GRID_LOOP(i, n) {
    out[i] =
        cond[operand_offset(p, 0, i)] ? x[operand_offset(p, 1, i)] : y[operand_offset(p, 2, i)];
  }
}

template <class T>
status run_where(const void* c, const void* x, const void* y, void* out, const broadcast_plan& p,
                 cudaStream_t s) {
  where_kernel<T><<<grid_for(p.out_elements), kBlockThreads, 0, s>>>(
      static_cast<const uint8_t*>(c), static_cast<const T*>(x), static_cast<const T*>(y),
      static_cast<T*>(out), p);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

// ---- cast --------------------------------------------------------------------------------------

template <dtype From>
__device__ __forceinline__ auto widen(storage_t<From> v) {
  if constexpr (From == dtype::f16) {
    return __half2float(v);
  } else if constexpr (From == dtype::bf16) {
    return __bfloat162float(v);
  } else {
    return v;
  }
}

template <dtype From, dtype To>
__global__ void cast_kernel(const storage_t<From>* x, storage_t<To>* y, int64_t n) {
  TROUPE_GRID_LOOP(i, n) {
    const auto v = widen<From>(x[i]);
    if constexpr (To == dtype::boolean) {
      y[i] = v != decltype(v)(0) ? 1 : 0;
    } else if constexpr (To == dtype::f16) {
      y[i] = __float2half_rn(static_cast<float>(v));
    } else if constexpr (To == dtype::bf16) {
      y[i] = __float2bfloat16_rn(static_cast<float>(v));
    } else if constexpr (From == dtype::boolean) {
      y[i] = static_cast<storage_t<To>>(v ? 1 : 0);
    } else {
      y[i] = static_cast<storage_t<To>>(v);
    }
  }
}

template <dtype From, dtype To>
status run_cast(const void* x, void* y, int64_t n, cudaStream_t s) {
  cast_kernel<From, To><<<grid_for(n), kBlockThreads, 0, s>>>(
      static_cast<const storage_t<From>*>(x), static_cast<storage_t<To>*>(y), n);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

template <dtype From>
status cast_from(dtype to, const void* x, void* y, int64_t n, cudaStream_t s) {
  switch (to) {
    case dtype::f32:
      return run_cast<From, dtype::f32>(x, y, n, s);
    case dtype::f16:
      return run_cast<From, dtype::f16>(x, y, n, s);
    case dtype::bf16:
      return run_cast<From, dtype::bf16>(x, y, n, s);
    case dtype::f64:
      return run_cast<From, dtype::f64>(x, y, n, s);
    case dtype::i8:
      return run_cast<From, dtype::i8>(x, y, n, s);
    case dtype::u8:
      return run_cast<From, dtype::u8>(x, y, n, s);
    case dtype::i32:
      return run_cast<From, dtype::i32>(x, y, n, s);
    case dtype::i64:
      return run_cast<From, dtype::i64>(x, y, n, s);
    case dtype::boolean:
      return run_cast<From, dtype::boolean>(x, y, n, s);
    default:
      return unsupported("Cast to " + std::string(dtype_name(to)));
  }
}

bool cast_type(dtype t) {
  switch (t) {
    case dtype::f32:
    case dtype::f16:
    case dtype::bf16:
    case dtype::f64:
    case dtype::i8:
    case dtype::u8:
    case dtype::i32:
    case dtype::i64:
    case dtype::boolean:
      return true;
    default:
      return false;
  }
}

// ---- epilogue and affine -----------------------------------------------------------------------

/// Bias index of element i: (i / inner) % len, in 32-bit arithmetic (the launcher takes this
/// kernel only below 2^32 elements; 64-bit division costs several times more per element).
__device__ __forceinline__ uint32_t bias_index(uint32_t i, uint32_t inner, uint32_t len) {
  return (i / inner) % len;
}

/// V > 1: y and z are 16-byte aligned. `uniform_bias`: bias_inner % V == 0, so one packet shares
/// one bias value. kGelu: the activation is Gelu, fixed at compile time (after a GEMM, the hot
/// case: BERT's FFN), so no per-element switch on act.op.
template <class T, int V, bool kGelu = false>
__global__ void epilogue_kernel(T* y, uint32_t n, const T* bias, uint32_t bias_len,
                                uint32_t bias_inner, bool uniform_bias, const T* z,
                                activation act) {
  if constexpr (kGelu) act.op = unary_op::gelu;
  const uint32_t packets = n / V;
  auto* yp = reinterpret_cast<packet<T, V>*>(y);
  const auto* zp = reinterpret_cast<const packet<T, V>*>(z);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < packets;
       i += gridDim.x * blockDim.x) {
    packet<T, V> r = yp[i];
    packet<T, V> zz;
    if (z) zz = zp[i];
    float b = 0.0f;
    if (bias && uniform_bias) b = load(bias, bias_index(i * V, bias_inner, bias_len));
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float v = load(r.v, k);
      if (z) v += load(zz.v, k);
      if (bias) v += uniform_bias ? b : load(bias, bias_index(i * V + k, bias_inner, bias_len));
      store(r.v, k, apply_unary(act.op, v, act.alpha, act.beta));
    }
    yp[i] = r;
  }
  const uint32_t t = packets * V + blockIdx.x * blockDim.x + threadIdx.x;
  if (V > 1 && t < n) {
    float v = load(y, t);
    if (z) v += load(z, t);
    if (bias) v += load(bias, bias_index(t, bias_inner, bias_len));
    store(y, t, apply_unary(act.op, v, act.alpha, act.beta));
  }
}

/// Outputs of 2^32 elements or more (64-bit indices).
template <class T>
__global__ void epilogue_kernel_wide(T* y, int64_t n, const T* bias, int64_t bias_len,
                                     int64_t bias_inner, const T* z, activation act) {
  TROUPE_GRID_LOOP(i, n) {
    float v = load(y, i);
    if (z) v += load(z, i);
    if (bias) v += load(bias, (i / bias_inner) % bias_len);
    store(y, i, apply_unary(act.op, v, act.alpha, act.beta));
  }
}

template <class T>
void run_epilogue(const epilogue_params& p, int64_t bias_len, int64_t bias_inner, cudaStream_t s) {
  constexpr int V = 16 / sizeof(T);
  T* y = static_cast<T*>(p.y);
  const T* bias = static_cast<const T*>(p.bias);
  const T* z = static_cast<const T*>(p.z);
  if (p.n >= (int64_t{1} << 32)) {
    epilogue_kernel_wide<T>
        <<<grid_for(p.n), kBlockThreads, 0, s>>>(y, p.n, bias, bias_len, bias_inner, z, p.act);
    return;
  }
  const auto n = static_cast<uint32_t>(p.n);
  const auto len = static_cast<uint32_t>(bias_len), inner = static_cast<uint32_t>(bias_inner);
  if (aligned16(y) && (!z || aligned16(z))) {
    if (p.act.op == unary_op::gelu) {
      epilogue_kernel<T, V, true><<<grid_for(p.n / V + 1), kBlockThreads, 0, s>>>(
          y, n, bias, len, inner, inner % V == 0, z, p.act);
    } else {
      epilogue_kernel<T, V><<<grid_for(p.n / V + 1), kBlockThreads, 0, s>>>(
          y, n, bias, len, inner, inner % V == 0, z, p.act);
    }
  } else {
    epilogue_kernel<T, 1>
        <<<grid_for(p.n), kBlockThreads, 0, s>>>(y, n, bias, len, inner, true, z, p.act);
  }
}

template <class T>
__global__ void channel_affine_kernel(const T* x, T* y, int64_t n, int64_t channels, int64_t inner,
                                      const float* scale, const float* shift) {
  TROUPE_GRID_LOOP(i, n) {
    const int64_t c = (i / inner) % channels;
    store(y, i, fmaf(load(x, i), scale[c], shift[c]));
  }
}

}  // namespace

// ---- launchers ---------------------------------------------------------------------------------


bool unary_supported(unary_op op, dtype t) {
  if (is_compute_float(t)) return op != unary_op::logical_not;
  if (t == dtype::i32 || t == dtype::i64) {
    return op == unary_op::neg || op == unary_op::abs || op == unary_op::relu ||
           op == unary_op::identity;
  }
  if (t == dtype::boolean) return op == unary_op::logical_not;
  return false;
}

status launch_unary(unary_op op, dtype t, float alpha, float beta, const void* x, void* y,
                    int64_t n, void* stream) {
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  const unsigned grid = grid_for(n);
  switch (t) {
    case dtype::f32:
      run_unary_float(op, alpha, beta, static_cast<const float*>(x), static_cast<float*>(y), n, s);
      break;
    case dtype::f16:
      run_unary_float(op, alpha, beta, static_cast<const __half*>(x), static_cast<__half*>(y), n,
                      s);
      break;
    case dtype::bf16:
      run_unary_float(op, alpha, beta, static_cast<const __nv_bfloat16*>(x),
                      static_cast<__nv_bfloat16*>(y), n, s);
      break;
    case dtype::i32:
      unary_int_kernel<<<grid, kBlockThreads, 0, s>>>(op, static_cast<const int32_t*>(x),
                                                      static_cast<int32_t*>(y), n);
      break;
    case dtype::i64:
      unary_int_kernel<<<grid, kBlockThreads, 0, s>>>(op, static_cast<const int64_t*>(x),
                                                      static_cast<int64_t*>(y), n);
      break;
    case dtype::boolean:
      not_kernel<<<grid, kBlockThreads, 0, s>>>(static_cast<const uint8_t*>(x),
                                                static_cast<uint8_t*>(y), n);
      break;
    default:
      return unsupported("unary op on dtype " + std::string(dtype_name(t)));
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

status launch_clip(dtype t, const void* x, void* y, int64_t n, const void* lo, const void* hi,
                   double lo_value, double hi_value, void* stream) {
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  const unsigned grid = grid_for(n);
  switch (t) {
    case dtype::f32:
      clip_kernel<float><<<grid, kBlockThreads, 0, s>>>(
          static_cast<const float*>(x), static_cast<float*>(y), n, static_cast<const float*>(lo),
          static_cast<const float*>(hi), static_cast<float>(lo_value),
          static_cast<float>(hi_value));
      break;
    case dtype::f16:
      clip_16bit_kernel<__half><<<grid, kBlockThreads, 0, s>>>(
          static_cast<const __half*>(x), static_cast<__half*>(y), n, static_cast<const __half*>(lo),
          static_cast<const __half*>(hi), static_cast<float>(lo_value),
          static_cast<float>(hi_value));
      break;
    case dtype::bf16:
      clip_16bit_kernel<__nv_bfloat16><<<grid, kBlockThreads, 0, s>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), n,
          static_cast<const __nv_bfloat16*>(lo), static_cast<const __nv_bfloat16*>(hi),
          static_cast<float>(lo_value), static_cast<float>(hi_value));
      break;
    case dtype::i32:
      clip_kernel<int32_t><<<grid, kBlockThreads, 0, s>>>(
          static_cast<const int32_t*>(x), static_cast<int32_t*>(y), n,
          static_cast<const int32_t*>(lo), static_cast<const int32_t*>(hi),
          static_cast<int32_t>(std::fmax(lo_value, -2147483648.0)),
          static_cast<int32_t>(std::fmin(hi_value, 2147483647.0)));
      break;
    case dtype::i64:
      clip_kernel<int64_t><<<grid, kBlockThreads, 0, s>>>(
          static_cast<const int64_t*>(x), static_cast<int64_t*>(y), n,
          static_cast<const int64_t*>(lo), static_cast<const int64_t*>(hi),
          lo_value <= -9.2233720368547758e18 ? INT64_MIN : static_cast<int64_t>(lo_value),
          hi_value >= 9.2233720368547758e18 ? INT64_MAX : static_cast<int64_t>(hi_value));
      break;
    default:
      return unsupported("Clip on dtype " + std::string(dtype_name(t)));
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

bool binary_is_comparison(binary_op op) {
  switch (op) {
    case binary_op::equal:
    case binary_op::less:
    case binary_op::less_equal:
    case binary_op::greater:
    case binary_op::greater_equal:
    case binary_op::logical_and:
    case binary_op::logical_or:
    case binary_op::logical_xor:
      return true;
    default:
      return false;
  }
}

expected<broadcast_plan> make_broadcast_plan(const int64_t* const* shapes, const int* ranks,
                                             int operands, const int64_t* out, int out_rank) {
  broadcast_plan p;
  int64_t out_elements = 1;
  for (int d = 0; d < out_rank; ++d) out_elements *= out[d];
  p.out_elements = out_elements;
  // Per output dim, each operand's stride (0 where broadcast), computed from its own shape.
  std::vector<std::array<int64_t, 3>> strides(static_cast<size_t>(out_rank));
  for (int k = 0; k < operands; ++k) {
    if (ranks[k] > out_rank) return invalid_argument("operand rank exceeds the output's");
    int64_t stride = 1;
    int64_t elements = 1;
    bool same = ranks[k] == out_rank;
    for (int d = out_rank - 1; d >= 0; --d) {
      const int od = d - (out_rank - ranks[k]);
      const int64_t dim = od >= 0 ? shapes[k][od] : 1;
      if (dim != out[d] && dim != 1) return invalid_argument("shapes do not broadcast");
      same = same && dim == out[d];
      strides[static_cast<size_t>(d)][static_cast<size_t>(k)] = dim == 1 ? 0 : stride;
      stride *= dim;
      elements *= dim;
    }
    p.modes[k] = same            ? broadcast_plan::contiguous
                 : elements == 1 ? broadcast_plan::scalar
                                 : broadcast_plan::general;
  }
  // Merge dim d into the running dim when, for every operand, d continues the previous dim's
  // layout (stride[d-1] == stride[d] * dim[d]) or both are broadcast (0 and 0). Size-1 dims vanish.
  std::vector<int64_t> dims;
  std::vector<std::array<int64_t, 3>> merged;
  for (int d = 0; d < out_rank; ++d) {
    if (out[d] == 1) continue;
    const auto& s = strides[static_cast<size_t>(d)];
    if (!dims.empty()) {
      auto& prev = merged.back();
      bool can = true;
      for (int k = 0; k < operands; ++k) {
        if (prev[static_cast<size_t>(k)] != s[static_cast<size_t>(k)] * out[d]) can = false;
      }
      if (can) {
        dims.back() *= out[d];
        for (int k = 0; k < operands; ++k) prev[static_cast<size_t>(k)] = s[static_cast<size_t>(k)];
        continue;
      }
    }
    dims.push_back(out[d]);
    merged.push_back(s);
  }
  if (dims.empty()) {
    dims.push_back(1);
    merged.push_back({0, 0, 0});
  }
  if (dims.size() > static_cast<size_t>(kMaxBroadcastRank)) {
    return unsupported("broadcast of rank " + std::to_string(dims.size()) + " after merging");
  }
  p.rank = static_cast<int>(dims.size());
  p.index32 = out_elements < (int64_t{1} << 31);
  for (size_t d = 0; d < dims.size(); ++d) {
    p.dims[d] = dims[d];
    for (int k = 0; k < operands; ++k) p.strides[k][d] = merged[d][static_cast<size_t>(k)];
  }
  // A general operand that only varies along the last merged dim, contiguously, is a row.
  for (int k = 0; k < operands; ++k) {
    if (p.modes[k] != broadcast_plan::general) continue;
    bool row = p.strides[k][p.rank - 1] == 1;
    for (int d = 0; d + 1 < p.rank; ++d) row = row && p.strides[k][d] == 0;
    if (row) {
      p.modes[k] = broadcast_plan::row;
      p.row_period[k] = p.dims[p.rank - 1];
    }
  }
  return p;
}

bool binary_supported(binary_op op, dtype a, dtype b) {
  const bool logical =
      op == binary_op::logical_and || op == binary_op::logical_or || op == binary_op::logical_xor;
  if (logical) return a == dtype::boolean && b == dtype::boolean;
  if (op == binary_op::pow) {
    return is_compute_float(a) && (is_compute_float(b) || b == dtype::i32 || b == dtype::i64);
  }
  if (op == binary_op::prelu) return a == b && is_compute_float(a);
  if (a != b) return false;
  if (a == dtype::boolean) return op == binary_op::equal;
  return is_compute_float(a) || a == dtype::i32 || a == dtype::i64;
}

status launch_binary(binary_op op, dtype a_type, dtype b_type, const void* a, const void* b,
                     void* y, const broadcast_plan& plan, void* stream) {
  if (plan.out_elements == 0) return status::ok();
  if (!binary_supported(op, a_type, b_type)) {
    return unsupported("binary op on dtypes " + std::string(dtype_name(a_type)) + ", " +
                       std::string(dtype_name(b_type)));
  }
  const cudaStream_t s = to_stream(stream);
  if (op == binary_op::pow) {
    if (a_type == dtype::f32) return run_pow<float>(b_type, a, b, y, plan, s);
    if (a_type == dtype::bf16) return run_pow<__nv_bfloat16>(b_type, a, b, y, plan, s);
    return run_pow<__half>(b_type, a, b, y, plan, s);
  }
  switch (a_type) {
    case dtype::f32:
      return run_binary_same<float>(op, a, b, y, plan, s);
    case dtype::f16:
      return run_binary_same<__half>(op, a, b, y, plan, s);
    case dtype::bf16:
      return run_binary_same<__nv_bfloat16>(op, a, b, y, plan, s);
    case dtype::i32:
      return run_binary_same<int32_t>(op, a, b, y, plan, s);
    case dtype::i64:
      return run_binary_same<int64_t>(op, a, b, y, plan, s);
    case dtype::boolean:
      return run_binary<uint8_t, uint8_t, uint8_t>(op, a, b, y, plan, s);
    default:
      return unsupported("binary op on dtype " + std::string(dtype_name(a_type)));
  }
}

status launch_where(size_t element_bytes, const void* cond, const void* x, const void* y, void* out,
                    const broadcast_plan& plan, void* stream) {
  if (plan.out_elements == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  switch (element_bytes) {
    case 1:
      return run_where<uint8_t>(cond, x, y, out, plan, s);
    case 2:
      return run_where<uint16_t>(cond, x, y, out, plan, s);
    case 4:
      return run_where<uint32_t>(cond, x, y, out, plan, s);
    case 8:
      return run_where<uint64_t>(cond, x, y, out, plan, s);
    default:
      return unsupported("Where on " + std::to_string(element_bytes) + "-byte elements");
  }
}

bool cast_supported(dtype from, dtype to) {
  return cast_type(from) && cast_type(to);
}

status launch_cast(dtype from, dtype to, const void* x, void* y, int64_t n, void* stream) {
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  switch (from) {
    case dtype::f32:
      return cast_from<dtype::f32>(to, x, y, n, s);
    case dtype::f16:
      return cast_from<dtype::f16>(to, x, y, n, s);
    case dtype::bf16:
      return cast_from<dtype::bf16>(to, x, y, n, s);
    case dtype::f64:
      return cast_from<dtype::f64>(to, x, y, n, s);
    case dtype::i8:
      return cast_from<dtype::i8>(to, x, y, n, s);
    case dtype::u8:
      return cast_from<dtype::u8>(to, x, y, n, s);
    case dtype::i32:
      return cast_from<dtype::i32>(to, x, y, n, s);
    case dtype::i64:
      return cast_from<dtype::i64>(to, x, y, n, s);
    case dtype::boolean:
      return cast_from<dtype::boolean>(to, x, y, n, s);
    default:
      return unsupported("Cast from " + std::string(dtype_name(from)));
  }
}

status launch_epilogue(const epilogue_params& p, void* stream) {
  if (p.n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  const int64_t bias_len = p.bias_len > 0 ? p.bias_len : 1;
  const int64_t bias_inner = p.bias_inner > 0 ? p.bias_inner : 1;
  if (p.type == dtype::f32) {
    run_epilogue<float>(p, bias_len, bias_inner, s);
  } else if (p.type == dtype::f16) {
    run_epilogue<__half>(p, bias_len, bias_inner, s);
  } else if (p.type == dtype::bf16) {
    run_epilogue<__nv_bfloat16>(p, bias_len, bias_inner, s);
  } else {
    return unsupported("epilogue on dtype " + std::string(dtype_name(p.type)));
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

status launch_channel_affine(dtype t, const void* x, void* y, int64_t n, int64_t channels,
                             int64_t inner, const float* scale, const float* shift, void* stream) {
  if (n == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  const unsigned grid = grid_for(n);
  if (t == dtype::f32) {
    channel_affine_kernel<float><<<grid, kBlockThreads, 0, s>>>(
        static_cast<const float*>(x), static_cast<float*>(y), n, channels, inner, scale, shift);
  } else if (t == dtype::f16) {
    channel_affine_kernel<__half><<<grid, kBlockThreads, 0, s>>>(
        static_cast<const __half*>(x), static_cast<__half*>(y), n, channels, inner, scale, shift);
  } else if (t == dtype::bf16) {
    channel_affine_kernel<__nv_bfloat16><<<grid, kBlockThreads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), n, channels, inner,
        scale, shift);
  } else {
    return unsupported("BatchNormalization on dtype " + std::string(dtype_name(t)));
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

}  // namespace troupe::kernels::cuda
