// The CPU elementwise family's entry point: unary.cpp (math, activations, Clip), binary.cpp
// (broadcasting arithmetic, comparisons, logic, variadic, Where) and cast.cpp.
#include "kernels/cpu/ew_common.hpp"

namespace troupe::kernels::cpu {

void register_elementwise(kernel_registry& r) {
  register_unary(r);
  register_binary(r);
  register_cast(r);
}

}  // namespace troupe::kernels::cpu
