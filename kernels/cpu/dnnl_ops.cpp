// The oneDNN-backed CPU family: one registration entry that pulls in each file of the family.
#include "kernels/cpu/dnnl_common.hpp"

namespace troupe::kernels::cpu {

void register_dnnl(kernel_registry& r) {
  register_dnnl_conv(r);
  register_dnnl_matmul(r);
  register_dnnl_pool(r);
  register_nn_norm(r);
}

}  // namespace troupe::kernels::cpu
