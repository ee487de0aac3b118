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
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"
#include "kernels/tuning_records.hpp"

namespace troupe::kernels::cuda {

/// True when the CUDA runtime reports at least one device. Asked once and cached; false (never a
/// crash or an exception) when there is no driver or no GPU.
bool device_available();

/// The number of CUDA devices visible to this process (CUDA_VISIBLE_DEVICES applies); 0 without a
/// driver or GPU.
int device_count();

/// The cuDNN and CUDA runtime versions this process runs (cudnnGetVersion, cudaRuntimeGetVersion):
/// what recorded convolution choices are valid for. Needs no device.
tuning_environment library_versions();

/// Device `device_index`'s memory now (cudaMemGetInfo): free and total bytes. Makes the device
/// current on the calling thread (creating its primary context if there is none yet).
struct device_memory_info {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};
expected<device_memory_info> device_memory(int device_index);

/// Makes device `device_index` current on the calling thread (a gpu_worker's own thread does this
/// once at start). invalid_argument for a device that does not exist, device_error otherwise.
status set_current_device(int device_index);

/// Fault injection: runs a kernel that executes a trap on `device_index` and returns the sticky
/// error it leaves (device_error). The process's contexts on the device are unusable afterwards.
status trap_device(int device_index);

struct context_options {
  /// The context's constant store keeps its weights in an evictable heap (constant_store.hpp,
  /// evictable_heap.hpp): evict_constants / page_in_constants move them to pinned host memory
  /// and back at the same addresses. Off: a stream-ordered pool, as always.
  bool evictable_constants = false;
  /// The context's plan arenas (arena_malloc) live in a discarding evictable heap:
  /// discard_arenas gives their device memory back between runs and restore_arenas maps fresh
  /// memory at the same addresses (arenas hold nothing from one run to the next). Off: arenas
  /// come from the pool like every other allocation.
  bool evictable_arenas = false;
};

/// A context on device `device_index`: its own non-blocking stream, cuDNN and cuBLASLt handles
/// bound to that stream, and a memory pool that keeps what it has reserved (no release between
/// runs). error_code::device_error when the device cannot be used.
expected<std::unique_ptr<backend_context>> create_context(int device_index,
                                                          const context_options& options = {});

/// Stream-ordered allocation from the context's pool: the bytes are usable by work enqueued on the
/// context's stream after this call. out_of_memory when the pool cannot grow; 0 bytes gives null.
expected<void*> device_malloc(backend_context& ctx, size_t bytes);
/// Stream-ordered free: the bytes return to the pool once the work enqueued before it has run.
/// An arena from the evictable arena heap is freed once the stream has drained.
void device_free(backend_context& ctx, void* p);
/// A plan's arena: from the context's evictable arena heap (context_options::evictable_arenas),
/// else as device_malloc. Freed with device_free. unavailable while the arenas are discarded.
expected<void*> arena_malloc(backend_context& ctx, size_t bytes);

struct arena_stats {
  bool evictable = false;      // made with context_options::evictable_arenas
  bool resident = true;        // false while discarded
  size_t footprint_bytes = 0;  // device memory the live arenas take when resident
  size_t mapped_bytes = 0;     // device memory mapped under the arena heap now
};
arena_stats arena_heap_stats(backend_context& ctx);
/// Waits for the context's stream, then unmaps every arena (their bytes are lost: nothing of a
/// run outlives it there); returns the device bytes released. Until restore_arenas no run may
/// start (plans refuse) and no plan may be built. unsupported without evictable_arenas.
expected<size_t> discard_arenas(backend_context& ctx);
/// Maps device memory under the arenas again, at their addresses; returns the bytes mapped.
/// out_of_memory (still discarded) when the device cannot hold them.
expected<size_t> restore_arenas(backend_context& ctx);
/// False while the arenas are discarded.
bool arenas_resident(backend_context& ctx);

/// Copies enqueued on the context's stream. A pageable host source may be reused as soon as
/// copy_to_device returns; copy_to_host's destination is complete only after synchronize().
status copy_to_device(backend_context& ctx, void* dst, const void* src, size_t bytes);
status copy_to_host(backend_context& ctx, void* dst, const void* src, size_t bytes);
/// Waits for everything enqueued on the context's stream; reports the first asynchronous error.
status synchronize(backend_context& ctx);

/// The context's cudaStream_t, for kernel_run_context::stream.
void* stream(backend_context& ctx);

struct pool_stats {
  size_t reserved_bytes = 0;       // device memory the pool holds
  size_t in_use_bytes = 0;         // of which handed out by device_malloc and not yet freed
  size_t peak_bytes = 0;           // highest in_use_bytes since the last release_unused_memory
                                   // (the last plan build), or since the context was created
  size_t fragmentation_bytes = 0;  // reserved - in use: held by the pool, handed to no one
};
/// The statistics of the context's own pool (arenas, kernel scratch; not the shared constants).
pool_stats stats(backend_context& ctx);
/// Waits for the context's stream, then gives the device back what the context's pool and its
/// constant store hold without handing it out. For after a plan build: kernel factories time
/// their candidates on temporary buffers (a convolution's up to 512 MiB of workspace), which the
/// pool would otherwise keep reserved for the instance's lifetime. Resets the pool's peak to
/// what is in use now, so that the peak tells what runs need, not what the timing borrowed.
status release_unused_memory(backend_context& ctx);

/// A context on `sibling`'s device with its own stream, cuDNN/cuBLASLt handles and pool, sharing
/// `sibling`'s constant store: a second instance of a model on one GPU holds the weights once and
/// its own arenas. Contexts of one family may live on different threads (each context on one).
expected<std::unique_ptr<backend_context>> create_sibling_context(backend_context& sibling);
/// True when the two contexts share one constant store.
bool shares_constants(backend_context& a, backend_context& b);

/// The device copy of host constant `host` (bytes unchanged), from the context's constant store:
/// uploaded once for every plan and sibling context; freed when the last handle goes. Complete
/// (readable from any stream) when this returns. Handles must be dropped only when no work that
/// reads the bytes is in flight.
expected<std::shared_ptr<const void>> share_constant(backend_context& ctx, const tensor& host);

struct constant_stats {
  size_t live_bytes = 0;       // device bytes of the constants held now
  size_t entries = 0;          // constants held now
  size_t reserved_bytes = 0;   // device memory the store's pool (or evictable heap) holds now
  uint64_t uploads = 0;        // constants uploaded since the store was made
  uint64_t hits = 0;           // requests that found their constant already on the device
  uint64_t content_hits = 0;   // of which by equal bytes at another host address
  bool evictable = false;      // made with context_options::evictable_constants
  bool resident = true;        // false while evicted
  size_t footprint_bytes = 0;  // device memory the constants take when resident
  size_t host_bytes = 0;       // pinned host memory holding evicted copies
};
constant_stats constant_store_stats(backend_context& ctx);

/// Moves every constant of the context's store (shared with its siblings) to pinned host memory
/// and gives its device memory back; returns the bytes released. No work reading the constants
/// may be in flight, and none may start before page_in_constants (plans refuse to run meanwhile).
/// unsupported unless the context was made with evictable_constants.
expected<size_t> evict_constants(backend_context& ctx);
/// Maps the store's constants again at their addresses and copies them back; returns the bytes
/// mapped. out_of_memory (the store stays evicted) when the device cannot hold them.
expected<size_t> page_in_constants(backend_context& ctx);
/// False while the store's constants are evicted.
bool constants_resident(backend_context& ctx);
/// The store's identity: equal for contexts that share their constants.
const void* constants_identity(backend_context& ctx);

}  // namespace troupe::kernels::cuda
