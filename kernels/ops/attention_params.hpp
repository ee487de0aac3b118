#pragma once
/// troupe.Attention's geometry, resolved once from the node and its input infos by the shape
/// function and by every backend's kernel (attention_schemas.cpp defines the resolver), so that a
/// kernel never disagrees with the shape it was given. The op itself is documented in
/// attention_schemas.cpp.

#include <cstdint>
#include <span>

#include "core/op_node.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::kernels {

/// Where the (batch, sequence, head) coordinates of one operand live in its tensor, in elements.
/// The head-dim axis is always contiguous (stride 1).
struct attention_operand {
  int64_t offset = 0;  // of element (0, 0, 0, 0): 0, or E / 2E for K / V inside a packed QKV
  int64_t batch_stride = 0;
  int64_t seq_stride = 0;
  int64_t head_stride = 0;
};

struct attention_geometry {
  dtype type = dtype::undefined;
  int64_t batch = 0;
  int64_t heads = 0;
  int64_t q_len = 0;   // query positions
  int64_t kv_len = 0;  // key/value positions
  int64_t head_dim = 0;
  float scale = 1.0f;
  bool seq_first = false;  // layout "sbe": operands are [S, B, E] instead of [B, S, E]
  bool packed = false;     // K and V absent: input 0 holds Q, K and V side by side, [.., 3E]
  attention_operand q, k, v, y;
  bool has_mask = false;
  /// Element strides of the additive mask along (batch, head, query, key); 0 where it broadcasts.
  int64_t mask_strides[4] = {0, 0, 0, 0};
  shape_t output_shape;
};

/// Checks the node's inputs and attributes (typed errors for anything malformed) and resolves the
/// geometry. `inputs` are [Q, K?, V?, mask?] as in the schema.
expected<attention_geometry> resolve_attention(const op_node& node,
                                               std::span<const tensor_info> inputs);

}  // namespace troupe::kernels
