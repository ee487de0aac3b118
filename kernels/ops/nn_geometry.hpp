#pragma once
/// Geometry of convolutions, transposed convolutions, pooling and matrix products, resolved from a
/// node's attributes and concrete input shapes. Shared by the schemas (output shapes) and the CPU
/// kernels (pads, strides for oneDNN), so both read the attributes in exactly one way. Every
/// function validates what the model says (ranks, channel counts, non-positive sizes) and returns
/// invalid_model / unsupported prefixed with the node's description instead of trusting it.

#include <cstdint>
#include <string>
#include <vector>

#include "core/op_node.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::kernels {

/// Conv / troupe.FusedConv: X (N, C, D1..Dn), W (M, C/group, k1..kn). All per-axis vectors have
/// one entry per spatial axis; dilations are ONNX's (1 = dense).
struct conv_geometry {
  int64_t group = 1;
  shape_t kernel, strides, dilations, pads_begin, pads_end;
  shape_t output_shape;  // (N, M, O1..On)
};

/// troupe.FusedConv's `channels_last` = 1: X, Z and Y are stored channels-last, (N, D1..Dn, C),
/// so that a chain of convolutions needs no layout change between them. These map the stored
/// shape to the logical (N, C, D1..Dn) one and back.
bool is_channels_last(const op_node& node);
shape_t channels_last_to_logical(const shape_t& stored);
shape_t logical_to_channels_last(const shape_t& logical);

expected<conv_geometry> resolve_conv(const op_node& node, const tensor_info& x,
                                     const tensor_info& w);

/// ConvTranspose: X (N, C, D1..Dn), W (C, M/group, k1..kn); output (N, M, O1..On).
/// pads_end may come out negative when output_padding or output_shape asks for more than the
/// natural size; a caller that cannot run that says unsupported.
struct conv_transpose_geometry {
  int64_t group = 1;
  shape_t kernel, strides, dilations, pads_begin, pads_end, output_padding;
  shape_t output_shape;
};

expected<conv_transpose_geometry> resolve_conv_transpose(const op_node& node, const tensor_info& x,
                                                         const tensor_info& w);

/// MaxPool / AveragePool: X (N, C, D1..Dn). pads_* are the declared pads (explicit or from
/// auto_pad); ceil_mode can make the last window run past pads_end (see reach_end).
struct pool_geometry {
  shape_t kernel, strides, dilations, pads_begin, pads_end;
  bool ceil_mode = false;
  shape_t input_shape;   // (N, C, D1..Dn)
  shape_t output_shape;  // (N, C, O1..On)

  /// The end padding pr with floor((in + pb + pr - extent) / stride) + 1 == out along a spatial
  /// axis: pads_end when that fits (always in floor mode), else the padding the last window
  /// actually reaches (more than pads_end when ceil_mode adds a window). oneDNN's padding_r.
  int64_t reach_end(size_t axis) const;
};

expected<pool_geometry> resolve_pool(const op_node& node, const tensor_info& x);

/// MatMul with numpy semantics: 1-D operands are promoted (A: prepend 1, B: append 1) and the
/// promoted dims are dropped from the output; batch dims broadcast.
struct matmul_geometry {
  int64_t m = 1, k = 1, n = 1;
  shape_t batch;    // broadcast batch dims of the output (may be empty)
  shape_t a_batch;  // A's batch dims padded with leading 1s to batch.size()
  shape_t b_batch;  // B's batch dims padded likewise
  shape_t output_shape;
};

expected<matmul_geometry> resolve_matmul(const op_node& node, const tensor_info& a,
                                         const tensor_info& b);

/// Gemm: A (M, K) or (K, M) with transA, B (K, N) or (N, K) with transB; C broadcastable to (M, N).
struct gemm_geometry {
  int64_t m = 1, k = 1, n = 1;
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f, beta = 1.0f;
};

expected<gemm_geometry> resolve_gemm(const op_node& node, const tensor_info& a,
                                     const tensor_info& b, const tensor_info& c);

/// The fused activation of troupe.Fused* ops: Y = act(...). Parameters are resolved to the values
/// the activation uses (defaults filled in).
enum class activation_kind : uint8_t {
  none,
  relu,
  clip,
  leaky_relu,
  sigmoid,
  hard_sigmoid,
  hard_swish,
  tanh,
  gelu
};
struct activation_spec {
  activation_kind kind = activation_kind::none;
  float alpha = 0.0f;  // Clip: min; LeakyRelu: alpha; HardSigmoid: alpha
  float beta = 0.0f;   // Clip: max; HardSigmoid: beta
};

expected<activation_spec> resolve_activation(const op_node& node);
/// Applies the activation to one value; the reference for tests and scalar fallbacks.
float apply_activation(const activation_spec& act, float x);

}  // namespace troupe::kernels
