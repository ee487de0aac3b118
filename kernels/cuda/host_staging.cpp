// Pinned host memory: cudaHostAlloc/cudaFreeHost, every call checked.
#include "kernels/cuda/host_staging.hpp"

#include <string>

#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/cuda_common.hpp"

namespace troupe::kernels::cuda {

expected<void*> pinned_host_alloc(int device_index, size_t bytes) {
  if (bytes == 0) return static_cast<void*>(nullptr);
  if (!device_available()) return make_error(error_code::device_error, "no CUDA device available");
  TROUPE_CUDA_CHECK(cudaSetDevice(device_index));
  void* p = nullptr;
  TROUPE_RETURN_IF_ERROR(
      TROUPE_CUDA_STATUS(cudaHostAlloc(&p, bytes, cudaHostAllocPortable))
          .with_context("pinning " + std::to_string(bytes) + " bytes of host memory"));
  return p;
}

void pinned_host_free(void* p) noexcept {
  if (p == nullptr) return;
  (void)cudaFreeHost(p);
  (void)cudaGetLastError();
}

status pinned_host_register(int device_index, void* p, size_t bytes) {
  if (p == nullptr || bytes == 0) return status::ok();
  if (!device_available()) return make_error(error_code::device_error, "no CUDA device available");
  TROUPE_CUDA_CHECK(cudaSetDevice(device_index));
  return TROUPE_CUDA_STATUS(cudaHostRegister(p, bytes, cudaHostRegisterPortable))
      .with_context("pinning " + std::to_string(bytes) + " bytes of shared host memory");
}

void pinned_host_unregister(void* p) noexcept {
  if (p == nullptr) return;
  (void)cudaHostUnregister(p);
  (void)cudaGetLastError();
}

bool is_pinned_host(const void* p) noexcept {
  if (p == nullptr || !device_available()) return false;
  cudaPointerAttributes a{};
  const cudaError_t e = cudaPointerGetAttributes(&a, p);
  (void)cudaGetLastError();
  return e == cudaSuccess && a.type == cudaMemoryTypeHost;
}

}  // namespace troupe::kernels::cuda
