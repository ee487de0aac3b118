// The CPU backend's kernel table: every family registers here, in one place.
#include "kernels/cpu/cpu_kernels.hpp"

namespace troupe::kernels {

void register_cpu_kernels(kernel_registry& r) {
  cpu::register_elementwise(r);
  cpu::register_reduction(r);
  cpu::register_tensor(r);
  cpu::register_dnnl(r);
  cpu::register_attention(r);
  cpu::register_fused_elementwise(r);
}

}  // namespace troupe::kernels
