#pragma once
/// Launcher of troupe.FusedElementwise's CUDA kernel (fused_elementwise.cu). Plain C++: callable
/// from g++ code. Pointers are device pointers; `stream` is a cudaStream_t.

#include <cstdint>

#include "core/dtype.hpp"
#include "core/status.hpp"
#include "kernels/ops/fused_elementwise_params.hpp"

namespace troupe::kernels::cuda {

/// The program and the merged layout (fused_elementwise_layout) by value, as the kernel's
/// parameter block (about 1 KiB, under the 4 KiB launch-parameter limit).
struct fused_elementwise_args {
  int32_t num_steps = 0;
  int32_t rank = 0;  // merged dims
  int32_t ops[fused_elementwise_max_steps] = {};
  int32_t operand[fused_elementwise_max_steps] = {};  // 0-based constant index, -1 for unary
  float lo[fused_elementwise_max_steps] = {};
  float hi[fused_elementwise_max_steps] = {};
  int64_t dims[fused_elementwise_max_rank] = {};
  /// Device float32 copies of the constants (owned by the kernel object).
  const float* constants[fused_elementwise_max_constants] = {};
  int64_t strides[fused_elementwise_max_constants][fused_elementwise_max_rank] = {};
};

/// Y[i] = program(X[i]) for i in [0, n). in: u8/i8/u16/i16/f16/bf16/f32; out: f32/f16/bf16.
/// Runs 4 elements per thread with vector loads/stores when the innermost merged dim is a
/// multiple of 4 and both pointers are 16-byte aligned.
status launch_fused_elementwise(const fused_elementwise_args& args, dtype in, dtype out,
                                const void* x, void* y, int64_t n, void* stream);

}  // namespace troupe::kernels::cuda
