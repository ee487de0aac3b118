#pragma once
/// troupe.FusedElementwise: a chain of unary/binary elementwise ops run as one kernel, emitted by
/// runtime/elementwise_fusion.cpp. The program is resolved once from the node by the shape
/// function and by every backend's kernel (fused_elementwise_schemas.cpp), so that a kernel never
/// disagrees with the shape it was given.
///
///   inputs  [X, C1, ..., Cn]  X is the main operand (u8/i8/u16/i16/f16/bf16/f32); every C has the
///                             output dtype and broadcasts to X's shape (numpy rules).
///   output  Y                 X's shape, dtype `to` (f32/f16/bf16).
///   attrs   to        int     ONNX dtype of Y
///           ops       ints    one ew_op code per step, applied in order to the running value v
///           operands  ints    per step: the input index (1..n) of its constant, 0 for unary steps
///           params    floats  two per step: Clip's [min, max]; ignored elsewhere
/// Every step computes in float32: v starts as float(X[i]), Y[i] = to(v after the last step).

#include <cstdint>
#include <span>
#include <vector>

#include "core/op_node.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/op_schema.hpp"

namespace troupe::kernels {

/// Step codes; the values are stored in models' plans only transiently (never on disk) but the
/// CUDA kernel switches on the same numbers, so keep them dense and stable.
enum class ew_op : int32_t {
  cast = 0,  // v unchanged: X -> float happens on load (only as step 0)
  add = 1,   // v + c
  sub = 2,   // v - c
  rsub = 3,  // c - v
  mul = 4,   // v * c
  div = 5,   // v / c
  rdiv = 6,  // c / v
  relu = 7,
  sigmoid = 8,
  tanh = 9,
  clip = 10,  // min(max(v, lo), hi)
};
inline constexpr int32_t ew_op_count = 11;
bool ew_op_is_binary(ew_op op);
/// Input dtypes X may have (a leading Cast step converts it; the kernels load these natively).
bool fused_elementwise_input_supported(dtype t);

/// Limits the pass respects and the resolver enforces (fixed-size kernel parameter blocks).
inline constexpr int fused_elementwise_max_steps = 16;
inline constexpr int fused_elementwise_max_constants = 8;
inline constexpr size_t fused_elementwise_max_rank = 8;  // of Y; the resolver refuses more

struct ew_step {
  ew_op op = ew_op::cast;
  int operand = 0;  // input index of the constant (binary steps), else 0
  float lo = 0.0f;  // Clip bounds
  float hi = 0.0f;
};

struct fused_elementwise_program {
  dtype input_type = dtype::undefined;
  dtype output_type = dtype::undefined;
  shape_t shape;  // X's and Y's
  std::vector<ew_step> steps;
  int num_constants = 0;  // inputs 1..num_constants
};

/// Reads and checks the attributes against the input infos (each constant broadcasts to X).
expected<fused_elementwise_program> resolve_fused_elementwise(const op_node& node,
                                                              std::span<const tensor_info> inputs);

/// Per-dimension element strides of a constant of `constant_shape` broadcast to `out` (0 along
/// broadcast dims), one per dim of `out`.
std::vector<int64_t> broadcast_strides(const shape_t& constant_shape, const shape_t& out);

/// The output shape with size-1 dims dropped and neighbouring dims merged wherever every constant
/// continues contiguously (or stays broadcast) across them: [N,C,H,W] with a [C,1,1] constant
/// becomes [N, C, H*W] with strides [0, 1, 0]. Always at least one dim.
struct fused_elementwise_layout {
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> strides;  // [constant][dim], in elements, 0 = broadcast
};
fused_elementwise_layout merge_fused_elementwise_layout(const shape_t& out,
                                                        const std::vector<shape_t>& constants);

/// Registers the schema; called from register_fused_schemas.
void register_fused_elementwise_schema(schema_registry& r);

}  // namespace troupe::kernels
