// CPU elementwise kernels.
#include <algorithm>

#include "kernels/cpu/cpu_kernels.hpp"

namespace troupe::kernels::cpu {

void register_elementwise(kernel_registry& r) {
  r.add({"", "Relu", backend::cpu, {dtype::f32}, 0, {}, [](const kernel_create_context&) {
           return make_function_kernel(
               [](kernel_run_context& ctx) {
                 const float* x = ctx.inputs[0].data<float>();
                 float* y = ctx.outputs[0].data<float>();
                 const int64_t n = ctx.outputs[0].elements();
#pragma omp parallel for simd schedule(static)
                 for (int64_t i = 0; i < n; ++i) y[i] = std::max(x[i], 0.0f);
                 return status::ok();
               },
               {{0, 0}});
         }});
}

}  // namespace troupe::kernels::cpu
