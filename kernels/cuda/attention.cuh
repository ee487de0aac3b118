#pragma once
/// Launchers of the attention kernels (attention.cu) behind the CUDA troupe.Attention op. Plain
/// C++; pointers are device pointers, `stream` a cudaStream_t.
///
/// Two kernels, both flash-style (one pass over the keys with an online softmax, fp32
/// accumulation, no score matrix in memory):
///  - tensor cores (f16 and bf16, head dims 32/64/128, operand rows 16-byte aligned): blocks of
///    64 query rows (4 warps of 16 rows each), or 128 rows (8 warps) when the grid still has 512
///    blocks so that a K/V tile serves more rows; 64-key tiles of K and V double-buffered in shared
///    memory by cp.async; S = Q K^T and O += P V by mma.sync m16n8k16 (.f16 or .bf16 operands)
///    with fp32 accumulators; P is rounded to the operand type for the second product;
///  - SIMT (f32, and f16/bf16 where the first does not apply; any head dim up to 256): blocks of
///    16 query rows, one key per lane in 32-key tiles, fp32 throughout.

#include "core/status.hpp"
#include "kernels/ops/attention_params.hpp"

namespace troupe::kernels::cuda {

/// Largest head dimension the kernels take.
constexpr int64_t kMaxAttentionHeadDim = 256;

/// OK when a kernel can run this geometry (dtype, head dim, grid limits).
status check_attention(const attention_geometry& g);

/// True when the tensor-core kernel runs this geometry given 16-byte aligned base pointers.
bool attention_uses_tensor_cores(const attention_geometry& g);

/// Raises the kernels' shared-memory limit where the geometry needs more than the default 48 KiB;
/// call once at kernel creation, on the device's thread.
status prepare_attention(const attention_geometry& g);

/// Y = attention(Q, K, V, mask) for the geometry; q/k/v are the operands' base pointers (the
/// geometry's offsets are applied here; k and v equal q for packed QKV), mask null when absent.
/// Falls back to the SIMT kernel when a base pointer is not 16-byte aligned.
status launch_attention(const attention_geometry& g, const void* q, const void* k, const void* v,
                        const void* mask, void* y, void* stream);

}  // namespace troupe::kernels::cuda
