// troupe.FusedElementwise's CUDA kernel object: resolves the program and the merged layout once,
// uploads the constants as float32 at create (the kernel owns them; compute reads no constant
// input), and launches fused_elementwise.cu's kernel on the run's stream.
#include <memory>
#include <vector>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/fused_elementwise.cuh"
#include "kernels/ops/fused_elementwise_params.hpp"

namespace troupe::kernels::cuda {
namespace {

status supports_fused_elementwise(const kernel_create_context& c) {
  return resolve_fused_elementwise(c.node, c.inputs).take_status();
}

expected<std::unique_ptr<kernel>> create_fused_elementwise(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(cuda_context * ctx, context_of(c));
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_fused_elementwise(c.node, c.inputs));
  std::vector<shape_t> shapes;
  std::vector<float> packed;  // every constant as float32, one after the other
  std::vector<size_t> starts;
  for (int i = 1; i <= p.num_constants; ++i) {
    const tensor* t = c.value(static_cast<size_t>(i));
    if (!t)
      return c.fail(error_code::unsupported, "input " + std::to_string(i) + " is not a constant");
    starts.push_back(packed.size());
    for (int64_t e = 0; e < t->elements(); ++e)
      packed.push_back(static_cast<float>(t->value_as_double(e)));
    shapes.push_back(t->shape());
  }
  const fused_elementwise_layout layout = merge_fused_elementwise_layout(p.shape, shapes);
  if (layout.dims.size() > fused_elementwise_max_rank) {
    return c.fail(error_code::unsupported, "more than 8 dims after merging");
  }
  // shared_ptr: the launch closure must stay copyable, and the buffer lives as long as it does.
  auto constants = std::make_shared<device_buffer>();
  if (!packed.empty()) {
    TROUPE_ASSIGN_OR_RETURN(
        *constants, device_buffer::upload(*ctx, packed.data(), packed.size() * sizeof(float)));
  }
  fused_elementwise_args a;
  a.num_steps = static_cast<int32_t>(p.steps.size());
  a.rank = static_cast<int32_t>(layout.dims.size());
  for (size_t s = 0; s < p.steps.size(); ++s) {
    a.ops[s] = static_cast<int32_t>(p.steps[s].op);
    a.operand[s] = p.steps[s].operand - 1;  // -1 for unary steps
    a.lo[s] = p.steps[s].lo;
    a.hi[s] = p.steps[s].hi;
  }
  for (size_t d = 0; d < layout.dims.size(); ++d) a.dims[d] = layout.dims[d];
  for (size_t k = 0; k < starts.size(); ++k) {
    a.constants[k] = static_cast<const float*>(constants->get()) + starts[k];
    for (size_t d = 0; d < layout.dims.size(); ++d) a.strides[k][d] = layout.strides[k][d];
  }
  int64_t n = 1;
  for (int64_t d : p.shape) n *= d;
  const dtype in = p.input_type, out = p.output_type;
  std::vector<std::pair<int, int>> inplace;
  if (dtype_size(in) == dtype_size(out))
    inplace.push_back({0, 0});  // each element read, then written
  return make_kernel(
      [a, constants, in, out, n](kernel_run_context& r) {
        return launch_fused_elementwise(a, in, out, r.inputs[0].raw(), r.outputs[0].raw(), n,
                                        r.stream);
      },
      0, std::move(inplace), false, inputs_from(1, c.inputs.size()));
}

}  // namespace

void register_fused_elementwise(kernel_registry& r) {
  r.add({"troupe",
         "FusedElementwise",
         backend::cuda,
         {dtype::f32, dtype::f16, dtype::bf16, dtype::u8, dtype::i8, dtype::u16, dtype::i16},
         0,
         supports_fused_elementwise,
         create_fused_elementwise});
}

}  // namespace troupe::kernels::cuda
