// MatMul, troupe.FusedMatMul, Gemm and troupe.FusedGemm on oneDNN's matmul primitive.
//
// A constant B (linear-layer weights) is reordered once into the primitive's preferred layout.
// When B has no batch dims of its own, A's batch dims fold into M: one 2-D product of
// (batch*M, K) x (K, N), the shape oneDNN's packed-weights kernels are fastest on. Otherwise the
// product runs batched with numpy broadcasting (size-1 batch dims), e.g. attention's Q @ K^T.
// Fused epilogues: bias as the primitive's bias (1 x N), residual Z as a sum post-op, activation
// as eltwise post-ops. Gemm's alpha is an output scale; beta * C is the bias when that is exact
// (C a row vector, alpha == 1), else C is broadcast into Y first and added by a sum post-op
// scaled by beta.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/dnnl_common.hpp"

namespace troupe::kernels::cpu {
namespace {

using dnnl::memory;
using namespace dnnl_util;

const tensor* constant_f32(const kernel_create_context& ctx, size_t i) {
  const tensor* t = ctx.value(i);
  return t != nullptr && t->type() == dtype::f32 ? t : nullptr;
}

// B as the primitive reads it: packed once when constant, else the input buffer as it is (the
// primitive was then created for B's own layout).
expected<memory> weights_memory(dnnl_program& prog, const kernel_create_context& ctx,
                                const memory::desc& user_md, const memory::desc& want) {
  if (const tensor* b = constant_f32(ctx, 1)) return prog.pack_constant(*b, user_md, want);
  return prog.bind_input(1, user_md);
}

// Y = 0 for an empty inner dimension (oneDNN does not take K == 0).
expected<std::unique_ptr<kernel>> zero_kernel() {
  return make_function_kernel([](kernel_run_context& ctx) {
    std::memset(ctx.outputs[0].raw(), 0, ctx.outputs[0].bytes());
    return status::ok();
  });
}

expected<std::unique_ptr<kernel>> create_matmul(const kernel_create_context& ctx, bool fused) {
  const op_node& node = ctx.node;
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_matmul(node, ctx.inputs[0], ctx.inputs[1]));
  activation_spec act;
  if (fused) {
    TROUPE_ASSIGN_OR_RETURN(act, resolve_activation(node));
  }
  const bool has_bias = fused && ctx.has_input(2);
  const bool has_z = fused && ctx.has_input(3);
  if (element_count(g.output_shape) == 0) return make_noop_kernel();
  if (g.k == 0) {
    if (fused) return ctx.fail(error_code::unsupported, "empty inner dimension in a fused MatMul");
    return zero_kernel();
  }

  shape_t a_dims, b_dims, y_dims, bias_dims;
  const bool b_has_batch =
      std::any_of(g.b_batch.begin(), g.b_batch.end(), [](int64_t d) { return d != 1; });
  if (!b_has_batch) {
    const int64_t rows = element_count(g.batch) * g.m;
    a_dims = {rows, g.k};
    b_dims = {g.k, g.n};
    y_dims = {rows, g.n};
    bias_dims = {1, g.n};
  } else {
    a_dims = g.a_batch;
    b_dims = g.b_batch;
    y_dims = g.batch;
    bias_dims.assign(g.batch.size(), 1);
    a_dims.insert(a_dims.end(), {g.m, g.k});
    b_dims.insert(b_dims.end(), {g.k, g.n});
    y_dims.insert(y_dims.end(), {g.m, g.n});
    bias_dims.insert(bias_dims.end(), {1, g.n});
  }
  const memory::desc a_md = plain_desc(a_dims), b_plain = plain_desc(b_dims),
                     y_md = plain_desc(y_dims);
  const memory::desc bias_md = has_bias ? plain_desc(bias_dims) : memory::desc();
  const bool pack_b = constant_f32(ctx, 1) != nullptr;
  const memory::desc b_md =
      pack_b ? memory::desc(to_dims(b_dims), memory::data_type::f32, memory::format_tag::any)
             : b_plain;

  try {
    dnnl::matmul::desc d(a_md, b_md, bias_md, y_md);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::post_ops ops;
    if (has_z) ops.append_sum(1.0f);
    append_activation(ops, act);
    attr.set_post_ops(ops);
    dnnl::matmul::primitive_desc pd(d, attr, cpu_engine());

    dnnl_program prog;
    TROUPE_ASSIGN_OR_RETURN(memory weights, weights_memory(prog, ctx, b_plain, pd.weights_desc()));
    memory dst = prog.bind_output(0, y_md);
    if (has_z) prog.add_reorder(prog.bind_input(3, y_md), dst, /*skip_if_aliased=*/true);
    std::vector<std::pair<int, memory>> args{
        {DNNL_ARG_SRC, prog.bind_input(0, a_md)}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
    if (has_bias) args.push_back({DNNL_ARG_BIAS, prog.bind_input(2, bias_md)});
    prog.add_step(dnnl::matmul(pd), std::move(args), pd.scratchpad_desc());
    std::vector<std::pair<int, int>> inplace;
    if (has_z) inplace.push_back({0, 3});
    return std::unique_ptr<kernel>(new program_kernel(node, std::move(prog), std::move(inplace)));
  } catch (const dnnl::error& e) {
    return from_dnnl_error(e, node, "matmul");
  }
}

expected<std::unique_ptr<kernel>> create_gemm(const kernel_create_context& ctx, bool fused) {
  const op_node& node = ctx.node;
  const tensor_info none;
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_gemm(node, ctx.inputs[0], ctx.inputs[1],
                                               ctx.has_input(2) ? ctx.inputs[2] : none));
  activation_spec act;
  if (fused) {
    TROUPE_ASSIGN_OR_RETURN(act, resolve_activation(node));
  }
  if (g.m == 0 || g.n == 0) return make_noop_kernel();
  if (g.k == 0) return ctx.fail(error_code::unsupported, "Gemm with an empty inner dimension");

  const bool has_c = ctx.has_input(2) && g.beta != 0.0f;
  shape_t c_shape;  // C as (cm, cn)
  if (has_c) {
    const shape_t& cs = ctx.inputs[2].shape;
    c_shape = {cs.size() == 2 ? cs[0] : 1, cs.empty() ? 1 : cs.back()};
  }
  const tensor* c_value = has_c ? constant_f32(ctx, 2) : nullptr;
  // beta * C as the primitive's bias: exact only when C is one row of N and alpha leaves the
  // product unscaled (oneDNN applies the output scale before adding the bias in no documented way
  // we rely on).
  const bool c_as_bias = has_c && g.alpha == 1.0f && c_shape[0] == 1 && c_shape[1] == g.n &&
                         (g.beta == 1.0f || c_value != nullptr);
  const bool c_as_sum = has_c && !c_as_bias;

  const memory::desc a_md = strided_desc({g.m, g.k}, g.trans_a ? shape_t{1, g.m} : shape_t{g.k, 1});
  const memory::desc b_user =
      strided_desc({g.k, g.n}, g.trans_b ? shape_t{1, g.k} : shape_t{g.n, 1});
  const memory::desc y_md = plain_desc({g.m, g.n});
  const memory::desc bias_md = c_as_bias ? plain_desc({1, g.n}) : memory::desc();
  const bool pack_b = constant_f32(ctx, 1) != nullptr;
  const memory::desc b_md =
      pack_b ? memory::desc({g.k, g.n}, memory::data_type::f32, memory::format_tag::any) : b_user;

  try {
    dnnl::matmul::desc d(a_md, b_md, bias_md, y_md);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (g.alpha != 1.0f) attr.set_output_scales(0, {g.alpha});
    dnnl::post_ops ops;
    if (c_as_sum) ops.append_sum(g.beta);
    append_activation(ops, act);
    attr.set_post_ops(ops);
    dnnl::matmul::primitive_desc pd(d, attr, cpu_engine());

    dnnl_program prog;
    TROUPE_ASSIGN_OR_RETURN(memory weights, weights_memory(prog, ctx, b_user, pd.weights_desc()));
    std::vector<std::pair<int, memory>> args{{DNNL_ARG_SRC, prog.bind_input(0, a_md)},
                                             {DNNL_ARG_WEIGHTS, weights},
                                             {DNNL_ARG_DST, prog.bind_output(0, y_md)}};
    if (c_as_bias) {
      if (g.beta == 1.0f) {
        args.push_back({DNNL_ARG_BIAS, prog.bind_input(2, bias_md)});
      } else {
        tensor scaled = tensor::allocate(dtype::f32, {1, g.n});
        for (int64_t j = 0; j < g.n; ++j)
          scaled.data<float>()[j] = g.beta * c_value->data<float>()[j];
        TROUPE_ASSIGN_OR_RETURN(memory bias, prog.pack_constant(scaled, bias_md, bias_md));
        args.push_back({DNNL_ARG_BIAS, bias});
      }
    }
    prog.add_step(dnnl::matmul(pd), std::move(args), pd.scratchpad_desc());

    program_kernel::pre_fn pre;
    if (c_as_sum) {
      // Y <- broadcast(C); the sum post-op then adds beta * Y to alpha * A' @ B'.
      const int64_t m = g.m, n = g.n, cm = c_shape[0], cn = c_shape[1];
      pre = [m, n, cm, cn](kernel_run_context& rc) {
        const float* c = rc.inputs[2].data<float>();
        float* y = rc.outputs[0].data<float>();
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < m; ++i) {
          const float* row = c + (cm == 1 ? 0 : i) * cn;
          float* out = y + i * n;
          if (cn == 1) {
            std::fill(out, out + n, row[0]);
          } else {
            std::copy(row, row + n, out);
          }
        }
      };
    }
    return std::unique_ptr<kernel>(
        new program_kernel(node, std::move(prog), {}, std::move(pre), c_as_sum ? 2 : -1));
  } catch (const dnnl::error& e) {
    return from_dnnl_error(e, node, "matmul (Gemm)");
  }
}

}  // namespace

void register_dnnl_matmul(kernel_registry& r) {
  r.add({"", "MatMul", backend::cpu, float_types(), 0, {}, [](const kernel_create_context& ctx) {
           return create_matmul(ctx, false);
         }});
  r.add({"troupe",
         "FusedMatMul",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_matmul(ctx, true); }});
  r.add({"", "Gemm", backend::cpu, float_types(), 0, {}, [](const kernel_create_context& ctx) {
           return create_gemm(ctx, false);
         }});
  r.add({"troupe",
         "FusedGemm",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_gemm(ctx, true); }});
}

}  // namespace troupe::kernels::cpu
