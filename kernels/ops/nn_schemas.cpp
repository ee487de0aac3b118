// Shape/type inference for the neural-network ops: convolutions, pooling, matrix products and
// normalisations. The geometry (pads, strides, output sizes) lives in nn_geometry.cpp, shared with
// the kernels.
#include <algorithm>
#include <limits>

#include "kernels/op_schema.hpp"
#include "kernels/ops/nn_geometry.hpp"
#include "kernels/ops/nn_schemas_common.hpp"

namespace troupe::kernels {
namespace {

using infos = std::vector<tensor_info>;

expected<infos> infer_conv(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2}));
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_conv(c.node, c.inputs[0], c.inputs[1]));
  TROUPE_RETURN_IF_ERROR(check_channel_vector(c, 2, g.output_shape[1], "B"));
  return infos{{c.inputs[0].type, g.output_shape}};
}

expected<infos> infer_conv_transpose(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2}));
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_conv_transpose(c.node, c.inputs[0], c.inputs[1]));
  TROUPE_RETURN_IF_ERROR(check_channel_vector(c, 2, g.output_shape[1], "B"));
  return infos{{c.inputs[0].type, g.output_shape}};
}

expected<infos> infer_matmul(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1}));
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_matmul(c.node, c.inputs[0], c.inputs[1]));
  return infos{{c.inputs[0].type, g.output_shape}};
}

expected<infos> infer_gemm(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2}));
  if (c.node.opset < 11 && !c.has_input(2)) return c.bad("input C is required before opset 11");
  const tensor_info none;
  TROUPE_ASSIGN_OR_RETURN(
      auto g, resolve_gemm(c.node, c.inputs[0], c.inputs[1], c.has_input(2) ? c.inputs[2] : none));
  return infos{{c.inputs[0].type, {g.m, g.n}}};
}

expected<infos> infer_max_pool(const infer_context& c) {
  if (!c.has_input(0)) return c.bad("input X is required");
  // Opset 12 added int8/uint8 MaxPool.
  const dtype t = c.inputs[0].type;
  if (t != dtype::i8 && t != dtype::u8) TROUPE_RETURN_IF_ERROR(require_same_float(c, {0}));
  if (c.num_outputs > 2) return c.bad("MaxPool has at most 2 outputs");
  const int64_t order = c.node.attrs.get_int("storage_order", 0);
  if (order != 0 && order != 1) return c.bad("storage_order must be 0 or 1");
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_pool(c.node, c.inputs[0]));
  infos out{{c.inputs[0].type, g.output_shape}};
  if (c.num_outputs == 2) out.push_back({dtype::i64, g.output_shape});
  return out;
}

expected<infos> infer_average_pool(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0}));
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_pool(c.node, c.inputs[0]));
  return infos{{c.inputs[0].type, g.output_shape}};
}

expected<infos> infer_global_pool(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0}));
  const tensor_info& x = c.inputs[0];
  if (x.rank() < 3) return c.bad("X must have rank >= 3 (N, C, spatial...), got " + x.to_string());
  shape_t out{x.shape[0], x.shape[1]};
  out.resize(x.rank(), 1);
  return infos{{x.type, out}};
}

// troupe.MaxPool / AveragePool / GlobalAveragePool / GlobalMaxPool: the ONNX op with
// `channels_last` (int, default 0): when 1, X and Y are stored (N, D1..Dn, C). Emitted by the
// layout pass (runtime/layout.hpp); MaxPool's form has no Indices output.
template <infer_fn onnx_infer>
expected<infos> infer_troupe_pool(const infer_context& c) {
  if (!is_channels_last(c.node)) return onnx_infer(c);
  if (!c.has_input(0)) return c.bad("input X is required");
  if (c.num_outputs != 1) return c.bad("the channels-last form has one output");
  if (c.inputs[0].rank() < 3) return c.bad("X must have rank >= 3, got " + c.inputs[0].to_string());
  tensor_info x = c.inputs[0];
  x.shape = channels_last_to_logical(x.shape);
  const tensor_info logical[] = {x};
  const infer_context lc{c.node, logical,
                         c.input_values.first(std::min<size_t>(1, c.input_values.size())), 1};
  TROUPE_ASSIGN_OR_RETURN(infos out, onnx_infer(lc));
  out[0].shape = logical_to_channels_last(out[0].shape);
  return out;
}

expected<infos> infer_batch_norm(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2, 3, 4}));
  const tensor_info& x = c.inputs[0];
  if (x.rank() < 2) return c.bad("X must have rank >= 2 (N, C, ...), got " + x.to_string());
  for (size_t i = 1; i <= 4; ++i) {
    if (!c.has_input(i)) return c.bad("input " + std::to_string(i) + " is required");
  }
  // Opsets 7-8 with spatial=0 keep one statistic per (C, D1, ..., Dn) element.
  const bool per_activation = c.node.opset < 9 && c.node.attrs.get_int("spatial", 1) == 0;
  const shape_t param_shape =
      per_activation ? shape_t(x.shape.begin() + 1, x.shape.end()) : shape_t{x.shape[1]};
  for (size_t i = 1; i <= 4; ++i) {
    if (element_count(c.inputs[i].shape) != element_count(param_shape)) {
      return c.bad("input " + std::to_string(i) + " " + c.inputs[i].to_string() +
                   " must have shape " + shape_to_string(param_shape));
    }
  }
  if (c.node.attrs.get_int("training_mode", 0) != 0) {
    return c.fail(error_code::unsupported, "training_mode=1");
  }
  if (c.num_outputs > 1) {
    return c.fail(error_code::unsupported, "outputs beyond Y (training statistics)");
  }
  return infos{x};
}

expected<infos> infer_instance_norm(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0, 1, 2}));
  const tensor_info& x = c.inputs[0];
  if (x.rank() < 2) return c.bad("X must have rank >= 2 (N, C, ...), got " + x.to_string());
  for (size_t i = 1; i <= 2; ++i) {
    if (!c.has_input(i)) return c.bad("input " + std::to_string(i) + " is required");
    TROUPE_RETURN_IF_ERROR(check_channel_vector(c, i, x.shape[1], i == 1 ? "scale" : "B"));
  }
  return infos{x};
}

expected<infos> infer_lp_norm(const infer_context& c) {
  TROUPE_RETURN_IF_ERROR(require_same_float(c, {0}));
  const tensor_info& x = c.inputs[0];
  auto axis = normalize_axis(c.node.attrs.get_int("axis", -1), static_cast<int64_t>(x.rank()));
  if (!axis || x.rank() == 0) return c.bad("axis is out of range for " + x.to_string());
  const int64_t p = c.node.attrs.get_int("p", 2);
  if (p != 1 && p != 2) return c.bad("p must be 1 or 2, got " + std::to_string(p));
  return infos{x};
}

}  // namespace

void register_nn_schemas(schema_registry& r) {
  r.add({"", "Conv", 1, 18, infer_conv, true, {}});
  r.add({"", "ConvTranspose", 1, 18, infer_conv_transpose, true, {}});
  r.add({"", "MatMul", 1, 18, infer_matmul, true, {}});
  r.add({"", "Gemm", 7, 18, infer_gemm, true, {}});
  r.add({"", "MaxPool", 1, 18, infer_max_pool, true, {}});
  r.add({"", "AveragePool", 1, 18, infer_average_pool, true, {}});
  r.add({"", "GlobalAveragePool", 1, 18, infer_global_pool, true, {}});
  r.add({"", "GlobalMaxPool", 1, 18, infer_global_pool, true, {}});
  // The troupe domain is versioned by troupe itself: any opset the layout pass keeps is accepted.
  constexpr int64_t any_opset = std::numeric_limits<int64_t>::max();
  r.add({"troupe", "MaxPool", 1, any_opset, infer_troupe_pool<infer_max_pool>, true, {}});
  r.add({"troupe", "AveragePool", 1, any_opset, infer_troupe_pool<infer_average_pool>, true, {}});
  r.add({"troupe", "GlobalAveragePool", 1, any_opset, infer_troupe_pool<infer_global_pool>, true,
         {}});
  r.add({"troupe", "GlobalMaxPool", 1, any_opset, infer_troupe_pool<infer_global_pool>, true, {}});
  r.add({"", "BatchNormalization", 7, 18, infer_batch_norm, true, {}});
  r.add({"", "InstanceNormalization", 1, 18, infer_instance_norm, true, {}});
  r.add({"", "LpNormalization", 1, 18, infer_lp_norm, true, {}});
}

}  // namespace troupe::kernels
