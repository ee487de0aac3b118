// Conv, troupe.FusedConv and ConvTranspose on oneDNN.
//
// Layout: tensors between kernels are row-major NCHW (or channels-last with FusedConv's
// channels_last=1). Constant weights are reordered once, at create time, into the layout the
// primitive prefers. Activations: the primitive is created with `any` src/dst ("blocked") and
// reorders from/to the boundary layout where its choice differs. Measured on ResNet-50's 53
// convolutions (FusedConv with bias + ReLU, oneDNN 2.6, avx512_core, 1 thread): 44.7 ms blocked
// including the boundary reorders, 94.9 ms with plain NCHW src/dst (gemm-based, post-ops applied
// apart), 36.2 ms channels_last (no reorders); 2 threads: 23.6 ms blocked vs 48.3 ms plain.
// TROUPE_DNNL_CONV_LAYOUT=plain forces boundary-layout src/dst (for comparisons).
//
// FusedConv: bias in the primitive, the residual Z as a sum post-op (Z is first copied into the
// destination unless the planner already placed Y over Z), the activation as eltwise post-ops.
#include <algorithm>

#include "kernels/cpu/dnnl_common.hpp"

namespace troupe::kernels::cpu {
namespace {

using dnnl::memory;
using namespace dnnl_util;

memory::dims minus_one(const shape_t& v) {
  memory::dims d;
  for (int64_t x : v) d.push_back(x - 1);
  return d;
}

bool prefer_blocked() {
  return conv_layout_override() != "plain";
}

// Builds with the preferred activation layout and, where oneDNN has no implementation for it,
// once more with plain src/dst.
template <class Build>
expected<std::unique_ptr<kernel>> build_with_fallback(Build& build) {
  const bool blocked = prefer_blocked();
  auto k = build(blocked);
  if (!k.has_value() && blocked && k.error().code() == error_code::unsupported) return build(false);
  return k;
}

// src/dst descriptors for the primitive: `any` when blocked, else the boundary layout itself.
memory::desc activation_desc(const memory::desc& boundary, bool blocked) {
  return blocked ? memory::desc(boundary.dims(), memory::data_type::f32, memory::format_tag::any)
                 : boundary;
}

// The weights memory the primitive reads: pre-packed when W is constant, else W's input buffer
// (reordered per run into the workspace when the primitive wants another layout).
expected<memory> weights_memory(dnnl_program& prog, const kernel_create_context& ctx,
                                const memory::desc& user_md, const memory::desc& want) {
  if (const tensor* w = ctx.value(1); w != nullptr && w->type() == dtype::f32) {
    return prog.pack_constant(*w, user_md, want);
  }
  memory user = prog.bind_input(1, user_md);
  if (want == user_md) return user;
  memory packed = prog.workspace_buffer(want);
  prog.add_reorder(user, packed);
  return packed;
}

// Wires src -> primitive -> dst with boundary reorders where the primitive's layouts differ from
// the plain ones; `z_input` >= 0 pre-loads the destination with that input for a sum post-op.
// Returns the (src, dst) memories the primitive itself must use.
std::pair<memory, memory> wire_activations(dnnl_program& prog, const memory::desc& x_plain,
                                           const memory::desc& src_md, const memory::desc& y_plain,
                                           const memory::desc& dst_md, int z_input) {
  memory x_user = prog.bind_input(0, x_plain);
  memory src = x_user;
  if (src_md != x_plain) {
    src = prog.workspace_buffer(src_md);
    prog.add_reorder(x_user, src);
  }
  memory dst = dst_md == y_plain ? prog.bind_output(0, y_plain) : prog.workspace_buffer(dst_md);
  if (z_input >= 0) {
    memory z = prog.bind_input(z_input, y_plain);
    prog.add_reorder(z, dst, /*skip_if_aliased=*/true);
  }
  return {src, dst};
}

void finish_dst(dnnl_program& prog, const memory& dst, const memory::desc& y_plain) {
  if (dst.get_desc() != y_plain) prog.add_reorder(dst, prog.bind_output(0, y_plain));
}

// Descriptor of a logical (N, C, D1..Dn) activation as stored: row-major, or channels-last.
memory::desc stored_desc(const shape_t& logical, bool channels_last) {
  if (!channels_last) return plain_desc(logical);
  const size_t r = logical.size();
  shape_t strides(r);
  strides[1] = 1;
  int64_t step = logical[1];
  for (size_t i = r; i-- > 2;) {
    strides[i] = step;
    step *= logical[i];
  }
  strides[0] = step;
  return strided_desc(logical, strides);
}

expected<std::unique_ptr<kernel>> create_conv(const kernel_create_context& ctx, bool fused) {
  const op_node& node = ctx.node;
  const bool channels_last = fused && is_channels_last(node);
  tensor_info x_logical = ctx.inputs[0];
  if (channels_last) x_logical.shape = channels_last_to_logical(x_logical.shape);
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_conv(node, x_logical, ctx.inputs[1]));
  activation_spec act;
  if (fused) {
    TROUPE_ASSIGN_OR_RETURN(act, resolve_activation(node));
  }
  const bool has_bias = ctx.has_input(2);
  const bool has_z = fused && ctx.has_input(3);
  const shape_t& xs = x_logical.shape;
  const shape_t& ws = ctx.inputs[1].shape;
  const shape_t& ys = g.output_shape;
  if (element_count(ys) == 0) return make_noop_kernel();
  if (element_count(xs) == 0)
    return ctx.fail(error_code::unsupported, "empty input with a non-empty output");

  // oneDNN's grouped weights are (G, M/G, C/G, k...): ONNX's (M, C/G, k...) row-major bytes as is.
  shape_t wdims = ws;
  if (g.group > 1) {
    wdims = {g.group, ws[0] / g.group};
    wdims.insert(wdims.end(), ws.begin() + 1, ws.end());
  }
  // "plain": the layout X, Z and Y have at the kernel boundary.
  const memory::desc x_plain = stored_desc(xs, channels_last),
                     y_plain = stored_desc(ys, channels_last), w_plain = plain_desc(wdims);
  const memory::desc w_any(to_dims(wdims), memory::data_type::f32, memory::format_tag::any);
  const memory::desc b_md = has_bias ? plain_desc({ys[1]}) : memory::desc();

  auto build = [&](bool blocked) -> expected<std::unique_ptr<kernel>> {
    try {
      dnnl::convolution_forward::desc d(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
          activation_desc(x_plain, blocked), w_any, b_md, activation_desc(y_plain, blocked),
          to_dims(g.strides), minus_one(g.dilations), to_dims(g.pads_begin), to_dims(g.pads_end));
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::post_ops ops;
      if (has_z) ops.append_sum(1.0f);
      append_activation(ops, act);
      attr.set_post_ops(ops);
      dnnl::convolution_forward::primitive_desc pd(d, attr, cpu_engine());

      dnnl_program prog;
      TROUPE_ASSIGN_OR_RETURN(memory weights,
                              weights_memory(prog, ctx, w_plain, pd.weights_desc()));
      auto [src, dst] =
          wire_activations(prog, x_plain, pd.src_desc(), y_plain, pd.dst_desc(), has_z ? 3 : -1);
      std::vector<std::pair<int, memory>> args{
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
      if (has_bias) args.push_back({DNNL_ARG_BIAS, prog.bind_input(2, b_md)});
      prog.add_step(dnnl::convolution_forward(pd), std::move(args), pd.scratchpad_desc());
      finish_dst(prog, dst, y_plain);
      std::vector<std::pair<int, int>> inplace;
      if (has_z) inplace.push_back({0, 3});
      return std::unique_ptr<kernel>(new program_kernel(node, std::move(prog), std::move(inplace)));
    } catch (const dnnl::error& e) {
      return from_dnnl_error(e, node, "convolution");
    }
  };
  return build_with_fallback(build);
}

expected<std::unique_ptr<kernel>> create_conv_transpose(const kernel_create_context& ctx) {
  const op_node& node = ctx.node;
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_conv_transpose(node, ctx.inputs[0], ctx.inputs[1]));
  const bool has_bias = ctx.has_input(2);
  const shape_t& xs = ctx.inputs[0].shape;
  const shape_t& ws = ctx.inputs[1].shape;
  const shape_t& ys = g.output_shape;
  if (element_count(ys) == 0) return make_noop_kernel();
  if (element_count(xs) == 0)
    return ctx.fail(error_code::unsupported, "empty input with a non-empty output");

  // ONNX W is (C, M/G, k...) = (G, C/G, M/G, k...); oneDNN wants dims (G, M/G, C/G, k...) (or
  // (M, C, k...) without groups): the same bytes under strides that swap the two channel axes.
  const size_t n = xs.size() - 2;
  const int64_t cg = ws[0] / g.group, mg = ws[1];
  int64_t k_elems = 1;
  for (size_t i = 0; i < n; ++i) k_elems *= ws[2 + i];
  shape_t spatial_strides(n, 1);
  for (size_t i = n; i-- > 1;) spatial_strides[i - 1] = spatial_strides[i] * ws[2 + i];
  shape_t wdims, wstrides;
  if (g.group > 1) {
    wdims = {g.group, mg, cg};
    wstrides = {cg * mg * k_elems, k_elems, mg * k_elems};
  } else {
    wdims = {mg, cg};
    wstrides = {k_elems, mg * k_elems};
  }
  wdims.insert(wdims.end(), ws.begin() + 2, ws.end());
  wstrides.insert(wstrides.end(), spatial_strides.begin(), spatial_strides.end());
  const memory::desc w_user = strided_desc(wdims, wstrides);
  const memory::desc w_any(to_dims(wdims), memory::data_type::f32, memory::format_tag::any);
  const memory::desc x_plain = plain_desc(xs), y_plain = plain_desc(ys);
  const memory::desc b_md = has_bias ? plain_desc({ys[1]}) : memory::desc();
  // output_padding extends the output at the end: oneDNN takes it as less (possibly negative)
  // right padding.
  memory::dims pads_end;
  for (size_t i = 0; i < n; ++i) pads_end.push_back(g.pads_end[i] - g.output_padding[i]);

  auto build = [&](bool blocked) -> expected<std::unique_ptr<kernel>> {
    try {
      dnnl::deconvolution_forward::desc d(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::deconvolution_direct,
          activation_desc(x_plain, blocked), w_any, b_md, activation_desc(y_plain, blocked),
          to_dims(g.strides), minus_one(g.dilations), to_dims(g.pads_begin), pads_end);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::deconvolution_forward::primitive_desc pd(d, attr, cpu_engine());

      dnnl_program prog;
      TROUPE_ASSIGN_OR_RETURN(memory weights, weights_memory(prog, ctx, w_user, pd.weights_desc()));
      auto [src, dst] = wire_activations(prog, x_plain, pd.src_desc(), y_plain, pd.dst_desc(), -1);
      std::vector<std::pair<int, memory>> args{
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
      if (has_bias) args.push_back({DNNL_ARG_BIAS, prog.bind_input(2, b_md)});
      prog.add_step(dnnl::deconvolution_forward(pd), std::move(args), pd.scratchpad_desc());
      finish_dst(prog, dst, y_plain);
      return std::unique_ptr<kernel>(new program_kernel(node, std::move(prog)));
    } catch (const dnnl::error& e) {
      return from_dnnl_error(e, node, "transposed convolution");
    }
  };
  return build_with_fallback(build);
}

}  // namespace

void register_dnnl_conv(kernel_registry& r) {
  r.add({"", "Conv", backend::cpu, float_types(), 0, {}, [](const kernel_create_context& ctx) {
           return create_conv(ctx, false);
         }});
  r.add({"troupe",
         "FusedConv",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_conv(ctx, true); }});
  r.add({"", "ConvTranspose", backend::cpu, float_types(), 0, {}, create_conv_transpose});
}

}  // namespace troupe::kernels::cpu
