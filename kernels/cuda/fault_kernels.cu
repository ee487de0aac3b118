// The kernel behind fault injection's sticky device error (runtime/fault_hooks.hpp).
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/cuda_common.hpp"

namespace troupe::kernels::cuda {
namespace {

__global__ void trap_kernel() {
  __trap();
}

}  // namespace

status trap_device(int device_index) {
  TROUPE_RETURN_IF_ERROR(set_current_device(device_index));
  trap_kernel<<<1, 1>>>();
  // The launch itself succeeds; the trap surfaces at the synchronisation (cudaErrorLaunchFailure
  // or cudaErrorIllegalInstruction, depending on the driver), and stays.
  const cudaError_t launched = cudaGetLastError();
  const cudaError_t e = launched != cudaSuccess ? launched : cudaDeviceSynchronize();
  if (e == cudaSuccess)
    return internal_error("a trap kernel on device " + std::to_string(device_index) +
                          " finished without an error");
  return to_status(e, "trap_kernel", __FILE__, __LINE__);
}

}  // namespace troupe::kernels::cuda
