// troupe.Attention (domain "troupe"): multi-head scaled dot-product attention, emitted by the
// runtime's attention pass (runtime/attention.hpp) in place of the MatMul -> scale -> mask ->
// Softmax -> MatMul subgraph of transformer exports, with the head split/merge transposes around
// it.
//
//   inputs   Q      [B, Sq, E]             (layout "bse"; [Sq, B, E] with layout "sbe")
//            K?     [B, Skv, E]            both absent: Q is packed [B, S, 3E] holding Q, K and V
//            V?     [B, Skv, E]            side by side along the last axis (one QKV projection)
//            mask?  additive, Q's dtype, broadcastable (numpy rules) to [B, H, Sq, Skv]
//   output   Y      [B, Sq, E]             ([Sq, B, E] with layout "sbe")
//   attributes
//            num_heads  int, required: H; E = H * D with D the head size
//            scale      float, default 1/sqrt(D): applied to Q.K^T before the mask is added
//            layout     string "bse" (default) or "sbe" (sequence-first,
//            torch.nn.MultiheadAttention)
//
// For every batch b, head h and query i, with q/k/v the D-element slices [h*D, (h+1)*D) of the
// operands' rows:
//   s_j = scale * dot(q_i, k_j) + mask[b, h, i, j]
//   Y[b, i, h*D:(h+1)*D] = sum_j softmax(s)_j * v_j
// which is exactly Transpose(MatMul(Softmax(MatMul(Q', K'^T) * scale + mask), V')) of the heads
// Q' = Q reshaped [B, Sq, H, D] and transposed to [B, H, Sq, D], and so on. A row whose every
// score is -inf gives NaN, as Softmax does. Kernels accumulate in fp32 whatever the storage type.
#include <cmath>
#include <limits>
#include <string>

#include "kernels/op_schema.hpp"
#include "kernels/ops/attention_params.hpp"

namespace troupe::kernels {

expected<attention_geometry> resolve_attention(const op_node& node,
                                               std::span<const tensor_info> inputs) {
  auto bad = [&](const std::string& what) {
    return status(error_code::invalid_model, node.describe() + ": " + what);
  };
  auto has = [&](size_t i) { return i < inputs.size() && inputs[i].present(); };
  if (!has(0)) return bad("Q is required");
  if (inputs.size() > 4) return bad("takes at most 4 inputs (Q, K, V, mask)");
  attention_geometry g;
  g.type = inputs[0].type;
  if (!is_floating(g.type)) {
    return status(
        error_code::unsupported,
        node.describe() + ": dtype " + std::string(dtype_name(g.type)) + " (float types only)");
  }
  const std::string layout = node.attrs.get_string("layout", "bse");
  if (layout != "bse" && layout != "sbe")
    return bad("layout must be 'bse' or 'sbe', not '" + layout + "'");
  g.seq_first = layout == "sbe";
  auto heads = node.attrs.require_int("num_heads");
  if (!heads) return bad(heads.error().message());
  if (*heads < 1) return bad("num_heads must be at least 1");
  g.heads = *heads;

  if (has(1) != has(2)) return bad("K and V are both present or both absent (packed QKV)");
  g.packed = !has(1);
  const tensor_info& q = inputs[0];
  if (q.rank() != 3) return bad("Q must have rank 3, got " + q.to_string());
  for (size_t i = 1; i < inputs.size(); ++i) {
    if (has(i) && inputs[i].type != g.type) {
      return bad("input " + std::to_string(i) + " is " + inputs[i].to_string() + " but Q is " +
                 q.to_string());
    }
  }
  const size_t b_axis = g.seq_first ? 1 : 0;
  const size_t s_axis = g.seq_first ? 0 : 1;
  g.batch = q.shape[b_axis];
  g.q_len = q.shape[s_axis];
  const int64_t q_row = q.shape[2];
  int64_t embed = q_row;
  if (g.packed) {
    if (q_row % 3 != 0) return bad("packed QKV's last dimension must be 3E, got " + q.to_string());
    embed = q_row / 3;
    g.kv_len = g.q_len;
  } else {
    const tensor_info& k = inputs[1];
    const tensor_info& v = inputs[2];
    if (k.rank() != 3 || v.rank() != 3) {
      return bad("K and V must have rank 3, got " + k.to_string() + " and " + v.to_string());
    }
    if (k.shape != v.shape)
      return bad("K " + k.to_string() + " and V " + v.to_string() + " differ");
    if (k.shape[b_axis] != g.batch || k.shape[2] != embed) {
      return bad("K " + k.to_string() + " does not match Q " + q.to_string());
    }
    g.kv_len = k.shape[s_axis];
  }
  if (embed % g.heads != 0) {
    return bad("the embedding size " + std::to_string(embed) + " is not a multiple of num_heads " +
               std::to_string(g.heads));
  }
  g.head_dim = embed / g.heads;
  if (g.head_dim == 0) return bad("empty heads: " + q.to_string());
  g.scale = node.attrs.get_float("scale", 1.0f / std::sqrt(static_cast<float>(g.head_dim)));
  if (!std::isfinite(g.scale)) return bad("scale must be finite");

  // Element (b, s, h) of an operand whose rows hold `row` elements.
  auto operand = [&](int64_t row, int64_t seq_len, int64_t offset) {
    attention_operand o;
    o.offset = offset;
    o.head_stride = g.head_dim;
    if (g.seq_first) {
      o.batch_stride = row;
      o.seq_stride = g.batch * row;
    } else {
      o.seq_stride = row;
      o.batch_stride = seq_len * row;
    }
    return o;
  };
  g.q = operand(q_row, g.q_len, 0);
  g.k = operand(g.packed ? q_row : embed, g.kv_len, g.packed ? embed : 0);
  g.v = operand(g.packed ? q_row : embed, g.kv_len, g.packed ? 2 * embed : 0);
  g.y = operand(embed, g.q_len, 0);
  g.output_shape =
      g.seq_first ? shape_t{g.q_len, g.batch, embed} : shape_t{g.batch, g.q_len, embed};

  if (has(3)) {
    const tensor_info& m = inputs[3];
    if (m.rank() > 4) return bad("the mask must have rank <= 4, got " + m.to_string());
    const int64_t full[4] = {g.batch, g.heads, g.q_len, g.kv_len};
    const size_t pad = 4 - m.rank();
    int64_t stride = 1;
    for (size_t d = 4; d-- > 0;) {
      const int64_t size = d < pad ? 1 : m.shape[d - pad];
      if (size != 1 && size != full[d]) {
        return bad("the mask " + m.to_string() + " does not broadcast to [B, H, Sq, Skv] = [" +
                   std::to_string(full[0]) + "," + std::to_string(full[1]) + "," +
                   std::to_string(full[2]) + "," + std::to_string(full[3]) + "]");
      }
      g.mask_strides[d] = size == 1 ? 0 : stride;
      stride *= size;
    }
    g.has_mask = true;
  }
  return g;
}

namespace {

expected<std::vector<tensor_info>> infer_attention(const infer_context& c) {
  TROUPE_ASSIGN_OR_RETURN(attention_geometry g, resolve_attention(c.node, c.inputs));
  return std::vector<tensor_info>{{g.type, g.output_shape}};
}

constexpr int64_t any_opset = std::numeric_limits<int64_t>::max();

}  // namespace

void register_attention_schemas(schema_registry& r) {
  r.add({"troupe", "Attention", 1, any_opset, infer_attention, true, {}});
}

}  // namespace troupe::kernels
