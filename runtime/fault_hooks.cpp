#include "runtime/fault_hooks.hpp"

#include <atomic>
#include <string>

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#endif

namespace troupe::runtime {
namespace {

std::atomic<uint32_t>& pending(kernels::backend where) {
  static std::atomic<uint32_t> cpu{0}, cuda{0};
  return where == kernels::backend::cuda ? cuda : cpu;
}

}  // namespace

void fail_next_allocations(kernels::backend where, uint32_t n) {
  pending(where).store(n, std::memory_order_relaxed);
}

uint32_t pending_allocation_failures(kernels::backend where) {
  return pending(where).load(std::memory_order_relaxed);
}

bool take_allocation_failure(kernels::backend where) {
  auto& p = pending(where);
  uint32_t n = p.load(std::memory_order_relaxed);
  while (n > 0)
    if (p.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) return true;
  return false;
}

status raise_sticky_device_error(int device_index) {
#ifdef TROUPE_HAVE_CUDA
  return kernels::cuda::trap_device(device_index);
#else
  return unsupported("device " + std::to_string(device_index) +
                     ": this troupe was built without the CUDA backend");
#endif
}

}  // namespace troupe::runtime
