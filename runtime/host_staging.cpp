#include "runtime/host_staging.hpp"

#include <new>
#include <string>
#include <utility>

#include "core/tensor.hpp"

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/host_staging.hpp"
#endif

namespace troupe::runtime {

expected<host_buffer> host_buffer::allocate(kernels::backend where, int device_index,
                                            size_t bytes) {
  const size_t n = bytes == 0 ? 1 : bytes;
  host_buffer b;
  if (where == kernels::backend::cuda) {
#ifdef TROUPE_HAVE_CUDA
    TROUPE_ASSIGN_OR_RETURN(void* p, kernels::cuda::pinned_host_alloc(device_index, n));
    b.data_ = static_cast<std::byte*>(p);
    b.pinned_ = true;
#else
    (void)device_index;
    return status(error_code::unavailable,
                  "pinned host memory needs the CUDA backend, which this build does not have");
#endif
  } else {
    try {
      b.data_ = static_cast<std::byte*>(aligned_alloc_bytes(n));
    } catch (const std::bad_alloc&) {
      return status(error_code::out_of_memory,
                    "host allocation of " + std::to_string(n) + " bytes failed");
    }
  }
  b.bytes_ = bytes;
  return b;
}

host_buffer& host_buffer::operator=(host_buffer&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    pinned_ = std::exchange(o.pinned_, false);
  }
  return *this;
}

void host_buffer::reset() noexcept {
  if (data_ != nullptr) {
#ifdef TROUPE_HAVE_CUDA
    if (pinned_)
      kernels::cuda::pinned_host_free(data_);
    else
      aligned_free(data_);
#else
    aligned_free(data_);
#endif
  }
  data_ = nullptr;
  bytes_ = 0;
  pinned_ = false;
}

status register_host_memory(kernels::backend where, int device_index, void* p, size_t bytes) {
  if (where != kernels::backend::cuda || p == nullptr || bytes == 0) return status::ok();
#ifdef TROUPE_HAVE_CUDA
  return kernels::cuda::pinned_host_register(device_index, p, bytes);
#else
  (void)device_index;
  return status(error_code::unavailable,
                "pinned host memory needs the CUDA backend, which this build does not have");
#endif
}

void unregister_host_memory(kernels::backend where, void* p) noexcept {
  if (where != kernels::backend::cuda || p == nullptr) return;
#ifdef TROUPE_HAVE_CUDA
  kernels::cuda::pinned_host_unregister(p);
#endif
}

}  // namespace troupe::runtime
