#include "kernels/cpu/cpu_kernels.hpp"

namespace troupe::kernels::cpu {

void register_tensor(kernel_registry& r) {}

}  // namespace troupe::kernels::cpu
