#include "kernels/cpu/cpu_kernels.hpp"

namespace troupe::kernels::cpu {

void register_reduction(kernel_registry& r) {}

}  // namespace troupe::kernels::cpu
