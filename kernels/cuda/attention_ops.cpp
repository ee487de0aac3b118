// CUDA troupe.Attention (kernels/ops/attention_schemas.cpp): the geometry is resolved once at
// creation, the kernels (attention.cu) read Q, K, V and the mask in place through its strides.
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_common.hpp"
#include "kernels/ops/attention_params.hpp"

namespace troupe::kernels::cuda {
namespace {

status supports_attention(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(attention_geometry g, resolve_attention(c.node, c.inputs));
  const status s = check_attention(g);
  return s.is_ok() ? s : c.fail(s.code(), s.message());
}

expected<std::unique_ptr<kernel>> create_attention(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(cuda_context * ctx, context_of(c));
  TROUPE_RETURN_IF_ERROR(ctx->make_current());
  TROUPE_ASSIGN_OR_RETURN(attention_geometry g, resolve_attention(c.node, c.inputs));
  if (const status s = prepare_attention(g); !s.is_ok()) return c.fail(s.code(), s.message());
  return make_kernel([g](kernel_run_context& run) {
    const void* q = run.inputs[0].raw();
    const void* k = g.packed ? q : run.inputs[1].raw();
    const void* v = g.packed ? q : run.inputs[2].raw();
    const void* mask = g.has_mask ? run.inputs[3].raw() : nullptr;
    return launch_attention(g, q, k, v, mask, run.outputs[0].raw(), run.stream);
  });
}

}  // namespace

void register_attention(kernel_registry& r) {
  r.add({"troupe", "Attention", backend::cuda, gpu_float_types(), 0, supports_attention,
         create_attention});
}

}  // namespace troupe::kernels::cuda
