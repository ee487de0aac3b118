#pragma once
/// Page-locked (pinned) host memory for the transfers between the host and a GPU. Plain C++: the
/// runtime and the serving actors see it through runtime/host_staging.hpp, never through CUDA.
///
/// Why pinned: a copy from pageable memory goes through a driver bounce buffer and is synchronous
/// with respect to the host; from pinned memory cudaMemcpyAsync is a DMA that overlaps with the
/// host, at full PCIe bandwidth. Pinning is expensive (it maps and locks pages), so staging buffers
/// are allocated once per replica and batch bucket and reused, never per request.

#include <cstddef>

#include "core/status.hpp"

namespace troupe::kernels::cuda {

/// `bytes` of page-locked host memory (cudaHostAlloc, portable: pinned for every device's
/// contexts), allocated with device `device_index` current on the calling thread. 0 bytes gives
/// null. out_of_memory when the host cannot lock that much, device_error when CUDA cannot be used.
expected<void*> pinned_host_alloc(int device_index, size_t bytes);

/// Frees what pinned_host_alloc returned (null is ignored). Safe on any thread; errors (a device
/// already in an error state) are ignored: there is nobody to report them to.
void pinned_host_free(void* p) noexcept;

/// Page-locks `bytes` of host memory at `p` that someone else allocated (cudaHostRegister,
/// portable), with device `device_index` current on the calling thread: a worker process's
/// shared memory, mapped from the node. out_of_memory when the host cannot lock that much,
/// device_error when CUDA cannot be used.
status pinned_host_register(int device_index, void* p, size_t bytes);

/// Undoes pinned_host_register (null is ignored). Safe on any thread; errors are ignored.
void pinned_host_unregister(void* p) noexcept;

/// True when `p` points into page-locked host memory the CUDA runtime registered (for tests and
/// checks; false without a driver).
bool is_pinned_host(const void* p) noexcept;

}  // namespace troupe::kernels::cuda
