// troupe.FusedElementwise on the GPU: each thread interprets the program (a few switch cases over
// a parameter block in constant memory) for one or four elements, computing in fp32; constants
// are float32 device arrays read through broadcast strides.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/fused_elementwise.cuh"

namespace troupe::kernels::cuda {
namespace {

__device__ __forceinline__ float load_in(const uint8_t* p, int64_t i) {
  return static_cast<float>(p[i]);
}
__device__ __forceinline__ float load_in(const int8_t* p, int64_t i) {
  return static_cast<float>(p[i]);
}
__device__ __forceinline__ float load_in(const uint16_t* p, int64_t i) {
  return static_cast<float>(p[i]);
}
__device__ __forceinline__ float load_in(const int16_t* p, int64_t i) {
  return static_cast<float>(p[i]);
}
__device__ __forceinline__ float load_in(const float* p, int64_t i) {
  return p[i];
}
__device__ __forceinline__ float load_in(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
__device__ __forceinline__ float load_in(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

/// The program on one value; c_off[k] is constant k's element offset for this element.
__device__ __forceinline__ float run_program(const fused_elementwise_args& a, float v,
                                             const int64_t* c_off) {
  for (int s = 0; s < a.num_steps; ++s) {
    const int k = a.operand[s];
    const float c = k >= 0 ? a.constants[k][c_off[k]] : 0.0f;
    switch (static_cast<ew_op>(a.ops[s])) {
      case ew_op::cast:
        break;
      case ew_op::add:
        v = v + c;
        break;
      case ew_op::sub:
        v = v - c;
        break;
      case ew_op::rsub:
        v = c - v;
        break;
      case ew_op::mul:
        v = v * c;
        break;
      case ew_op::div:
        v = v / c;
        break;
      case ew_op::rdiv:
        v = c / v;
        break;
      case ew_op::relu:
        v = v > 0.0f ? v : 0.0f;
        break;
      case ew_op::sigmoid:
        v = 1.0f / (1.0f + expf(-v));
        break;
      case ew_op::tanh:
        v = tanhf(v);
        break;
      case ew_op::clip:
        v = v < a.lo[s] ? a.lo[s] : (v > a.hi[s] ? a.hi[s] : v);
        break;
    }
  }
  return v;
}

/// Element offsets of every constant for output element i (decomposed over the merged dims).
__device__ __forceinline__ void constant_offsets(const fused_elementwise_args& a, int num_constants,
                                                 int64_t i, int64_t* c_off) {
  for (int k = 0; k < num_constants; ++k) c_off[k] = 0;
  for (int d = a.rank - 1; d >= 0; --d) {
    const int64_t idx = i % a.dims[d];
    i /= a.dims[d];
    for (int k = 0; k < num_constants; ++k) c_off[k] += idx * a.strides[k][d];
  }
}

/// V consecutive elements per thread; V > 1 only when the innermost merged dim is a multiple of
/// V (the V elements share their outer coordinates) and X, Y are aligned for V-wide accesses.
template <class TI, class TO, int V>
__global__ void fused_elementwise_kernel(const fused_elementwise_args a, int num_constants,
                                         const TI* x, TO* y, int64_t n) {  // y may be x (in place)
  const int64_t groups = n / V;
  TROUPE_GRID_LOOP(g, groups) {
    const int64_t i0 = g * V;
    int64_t c_off[fused_elementwise_max_constants];
    constant_offsets(a, num_constants, i0, c_off);
    alignas(sizeof(TI) * V) TI in[V];
    if constexpr (V > 1) {
      using W = typename word<sizeof(TI) * V>::type;
      *reinterpret_cast<W*>(in) = reinterpret_cast<const W*>(x)[g];
    } else {
      in[0] = x[i0];
    }
    alignas(sizeof(TO) * V) TO out[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      int64_t off[fused_elementwise_max_constants];
      for (int k = 0; k < num_constants; ++k) off[k] = c_off[k] + j * a.strides[k][a.rank - 1];
      store(out, j, run_program(a, load_in(in, j), off));
    }
    if constexpr (V > 1) {
      using W = typename word<sizeof(TO) * V>::type;
      reinterpret_cast<W*>(y)[g] = *reinterpret_cast<const W*>(out);
    } else {
      y[i0] = out[0];
    }
  }
}

template <class TI, class TO>
status launch_typed(const fused_elementwise_args& a, const void* x, void* y, int64_t n,
                    cudaStream_t s) {
  int num_constants = 0;
  for (int k = 0; k < fused_elementwise_max_constants; ++k) {
    if (a.constants[k]) num_constants = k + 1;
  }
  const auto* xi = static_cast<const TI*>(x);
  auto* yo = static_cast<TO*>(y);
  constexpr int V = 4;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % (sizeof(TI) * V) == 0 &&
                       reinterpret_cast<uintptr_t>(y) % (sizeof(TO) * V) == 0;
  if (n > 0 && a.dims[a.rank - 1] % V == 0 && aligned) {
    fused_elementwise_kernel<TI, TO, V>
        <<<grid_for(n / V), kBlockThreads, 0, s>>>(a, num_constants, xi, yo, n);
  } else if (n > 0) {
    fused_elementwise_kernel<TI, TO, 1>
        <<<grid_for(n), kBlockThreads, 0, s>>>(a, num_constants, xi, yo, n);
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

template <class TO>
status launch_for_input(const fused_elementwise_args& a, dtype in, const void* x, void* y,
                        int64_t n, cudaStream_t s) {
  switch (in) {
    case dtype::u8:
      return launch_typed<uint8_t, TO>(a, x, y, n, s);
    case dtype::i8:
      return launch_typed<int8_t, TO>(a, x, y, n, s);
    case dtype::u16:
      return launch_typed<uint16_t, TO>(a, x, y, n, s);
    case dtype::i16:
      return launch_typed<int16_t, TO>(a, x, y, n, s);
    case dtype::f16:
      return launch_typed<__half, TO>(a, x, y, n, s);
    case dtype::bf16:
      return launch_typed<__nv_bfloat16, TO>(a, x, y, n, s);
    case dtype::f32:
      return launch_typed<float, TO>(a, x, y, n, s);
    default:
      return unsupported("FusedElementwise: input dtype " + std::string(dtype_name(in)));
  }
}

}  // namespace

status launch_fused_elementwise(const fused_elementwise_args& args, dtype in, dtype out,
                                const void* x, void* y, int64_t n, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (out) {
    case dtype::f32:
      return launch_for_input<float>(args, in, x, y, n, s);
    case dtype::f16:
      return launch_for_input<__half>(args, in, x, y, n, s);
    case dtype::bf16:
      return launch_for_input<__nv_bfloat16>(args, in, x, y, n, s);
    default:
      return unsupported("FusedElementwise: output dtype " + std::string(dtype_name(out)));
  }
}

}  // namespace troupe::kernels::cuda
