// The CUDA backend's kernel table: one registration function per op family.
#include "kernels/cuda/cuda_common.hpp"

namespace troupe::kernels {

void register_cuda_kernels(kernel_registry& r) {
  cuda::register_elementwise(r);
  cuda::register_reduction(r);
  cuda::register_tensor(r);
  cuda::register_conv(r);
  cuda::register_matmul(r);
  cuda::register_attention(r);
  cuda::register_extra(r);
  cuda::register_conv_transpose(r);
  cuda::register_fused_elementwise(r);
}

}  // namespace troupe::kernels
