#pragma once
/// Launchers of the elementwise kernels (elementwise.cu). Plain C++: callable from g++ code.
/// Pointers are device pointers; `stream` is a cudaStream_t. Float element types compute in fp32.

#include <cstdint>

#include "core/dtype.hpp"
#include "core/status.hpp"

namespace troupe {
struct op_node;
}

namespace troupe::kernels::cuda {

/// Unary functions; also the activations of the fused Conv/MatMul/Gemm epilogues.
enum class unary_op : int32_t {
  identity,
  neg,
  abs,
  sqrt,
  exp,
  log,
  erf,
  tanh,
  sigmoid,
  relu,
  leaky_relu,    // alpha
  hard_sigmoid,  // max(0, min(1, alpha * x + beta))
  hard_swish,    // x * max(0, min(1, x / 6 + 1/2))
  gelu,          // 0.5 x (1 + erf(x / sqrt 2))
  gelu_tanh,     // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  clip,          // min(max(x, alpha), beta)
  reciprocal,
  floor,
  ceil,
  logical_not,  // bool only
  sin,
  cos,
  round,  // half to even
  sign,
  softplus,
  softsign,
  elu,   // alpha
  selu,  // alpha, beta = gamma
  celu,  // alpha
  mish,
  thresholded_relu,  // alpha
};

/// An activation with its parameters (alpha/beta as unary_op documents).
struct activation {
  unary_op op = unary_op::identity;
  float alpha = 0.0f;
  float beta = 0.0f;
};

/// Which (op, dtype) pairs launch_unary runs: every op on f32/f16/bf16; neg/abs/relu/identity on
/// i32/i64; logical_not on bool.
bool unary_supported(unary_op op, dtype t);
status launch_unary(unary_op op, dtype t, float alpha, float beta, const void* x, void* y,
                    int64_t n, void* stream);

/// Clip with limits from device scalars (`lo`/`hi`, may be null) or, where those are null, the
/// host values `lo_value`/`hi_value` (±inf / the type's limits for an absent bound).
/// dtypes: f32, f16, bf16, i32, i64.
status launch_clip(dtype t, const void* x, void* y, int64_t n, const void* lo, const void* hi,
                   double lo_value, double hi_value, void* stream);

// ---- broadcasting ------------------------------------------------------------------------------

constexpr int kMaxBroadcastRank = 8;

/// Up to three operands broadcast to one output. Dims where every operand has the same pattern
/// are merged, so most plans have rank 1 (same shape) or 2 (a row or column broadcast).
/// Strides are in elements, 0 on broadcast dims.
struct broadcast_plan {
  enum mode : int32_t {
    contiguous,  // the operand has the output's shape: offset = i
    scalar,      // one element: offset = 0
    row,         // repeats along the leading dims: offset = i % row_period
    general,     // offset from the merged dims and strides
  };
  int rank = 0;
  int64_t out_elements = 0;
  bool index32 = false;  // every offset fits 32 bits: cheaper division on the general path
  int64_t dims[kMaxBroadcastRank] = {};
  int64_t strides[3][kMaxBroadcastRank] = {};
  mode modes[3] = {contiguous, contiguous, contiguous};
  int64_t row_period[3] = {1, 1, 1};
};

/// Fails (invalid_argument) when the shapes do not broadcast to `out`, unsupported when the merged
/// rank exceeds kMaxBroadcastRank.
expected<broadcast_plan> make_broadcast_plan(const int64_t* const* shapes, const int* ranks,
                                             int operands, const int64_t* out, int out_rank);

enum class binary_op : int32_t {
  add,
  sub,
  mul,
  div,  // integers truncate toward zero; division by zero gives 0 instead of a fault
  pow,
  min,
  max,
  equal,  // the comparisons write bool
  less,
  less_equal,
  greater,
  greater_equal,
  logical_and,  // the logical ops take and write bool
  logical_or,
  logical_xor,
  prelu,  // x < 0 ? slope * x : x, slope broadcast unidirectionally
};
bool binary_is_comparison(binary_op op);

/// Which dtypes launch_binary runs: arithmetic and comparisons on f32/f16/bf16/i32/i64 (equal also
/// on bool), logical ops on bool. `b_type` equals `a_type` except for pow, whose exponent may be
/// any of f32/f16/bf16/i32/i64 when the base is f32/f16/bf16.
bool binary_supported(binary_op op, dtype a_type, dtype b_type);
status launch_binary(binary_op op, dtype a_type, dtype b_type, const void* a, const void* b,
                     void* y, const broadcast_plan& plan, void* stream);

/// Where(cond, x, y): cond bool, x/y of one element size (any dtype).
status launch_where(size_t element_bytes, const void* cond, const void* x, const void* y, void* out,
                    const broadcast_plan& plan, void* stream);

/// Cast between f32 f16 bf16 f64 i8 u8 i16 u16 i32 u32 i64 u64 bool (float -> integer truncates
/// toward zero; anything -> bool is x != 0).
bool cast_supported(dtype from, dtype to);
status launch_cast(dtype from, dtype to, const void* x, void* y, int64_t n, void* stream);

// ---- fused epilogues ---------------------------------------------------------------------------

/// The `activation` / `activation_params` of a troupe.Fused* node as a unary op (host helper,
/// elementwise_ops.cpp; Gelu is the erf form, as the fusion pass emits it).
expected<activation> fused_activation(const op_node& node);

/// y[i] = act(y[i] + bias[(i / bias_inner) % bias_len] + z[i]), in place on y; bias and z optional
/// (null). bias and z have y's dtype (f32, f16 or bf16). Conv: bias_len = C, bias_inner = spatial size;
/// MatMul/Gemm: bias_len = N, bias_inner = 1.
struct epilogue_params {
  dtype type = dtype::f32;
  void* y = nullptr;
  int64_t n = 0;
  const void* bias = nullptr;
  int64_t bias_len = 1;
  int64_t bias_inner = 1;
  const void* z = nullptr;
  activation act;
};
status launch_epilogue(const epilogue_params& p, void* stream);

/// y = x * scale[c] + shift[c] with c = (i / inner) % channels; scale/shift are f32 device
/// arrays (BatchNormalization in inference, folded at create time).
status launch_channel_affine(dtype t, const void* x, void* y, int64_t n, int64_t channels,
                             int64_t inner, const float* scale, const float* shift, void* stream);

}  // namespace troupe::kernels::cuda
