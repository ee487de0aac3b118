#pragma once
/// The CUDA backend as the runtime sees it: a device context (one stream, a cuDNN handle, a
/// cuBLASLt handle and a stream-ordered memory pool), device memory and copies. Plain C++: no CUDA
/// types cross this header (streams are void*), so the runtime compiles without nvcc.
///
/// Threading: a context belongs to one thread (a gpu_worker) at a time. Every call below makes the
/// context's device current on the calling thread before it touches the device; kernels created
/// with a context must run on a thread where that device is current (the calls below leave it so).

#include <cstddef>
#include <memory>

#include "core/status.hpp"
#include "kernels/kernel.hpp"

namespace troupe::kernels::cuda {

/// True when the CUDA runtime reports at least one device. Asked once and cached; false (never a
/// crash or an exception) when there is no driver or no GPU.
bool device_available();

/// The number of CUDA devices visible to this process (CUDA_VISIBLE_DEVICES applies); 0 without a
/// driver or GPU.
int device_count();

/// Makes device `device_index` current on the calling thread (a gpu_worker's own thread does this
/// once at start). invalid_argument for a device that does not exist, device_error otherwise.
status set_current_device(int device_index);

/// A context on device `device_index`: its own non-blocking stream, cuDNN and cuBLASLt handles
/// bound to that stream, and a memory pool that keeps what it has reserved (no release between
/// runs). error_code::device_error when the device cannot be used.
expected<std::unique_ptr<backend_context>> create_context(int device_index);

/// Stream-ordered allocation from the context's pool: the bytes are usable by work enqueued on the
/// context's stream after this call. out_of_memory when the pool cannot grow; 0 bytes gives null.
expected<void*> device_malloc(backend_context& ctx, size_t bytes);
/// Stream-ordered free: the bytes return to the pool once the work enqueued before it has run.
void device_free(backend_context& ctx, void* p);

/// Copies enqueued on the context's stream. A pageable host source may be reused as soon as
/// copy_to_device returns; copy_to_host's destination is complete only after synchronize().
status copy_to_device(backend_context& ctx, void* dst, const void* src, size_t bytes);
status copy_to_host(backend_context& ctx, void* dst, const void* src, size_t bytes);
/// Waits for everything enqueued on the context's stream; reports the first asynchronous error.
status synchronize(backend_context& ctx);

/// The context's cudaStream_t, for kernel_run_context::stream.
void* stream(backend_context& ctx);

struct pool_stats {
  size_t reserved_bytes;  // device memory the pool holds
  size_t in_use_bytes;    // of which handed out by device_malloc and not yet freed
  size_t peak_bytes;      // highest in_use_bytes since the context was created
};
pool_stats stats(backend_context& ctx);

}  // namespace troupe::kernels::cuda
