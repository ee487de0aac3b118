#pragma once
/// Internal to the CUDA backend: device memory for a model's weights that can be evicted to
/// pinned host memory and paged back in at the same device addresses. The constant store
/// (constant_store.hpp) allocates its entries here when it was made evictable. A second kind,
/// made with contents::discard, holds a context's plan arenas (activations and kernel workspace):
/// their bytes mean nothing between runs, so eviction only unmaps them and page-in maps fresh
/// memory at the same addresses, with no copy either way.
///
/// Why the same addresses: every consumer of a weight holds its raw device pointer (kernels'
/// device_buffer views, the plan's constant table) and a captured CUDA graph has it baked into
/// its nodes. Re-pointing all of them, or re-capturing every graph, on each page-in would touch
/// every kernel; keeping the addresses keeps the plans, their graphs and their recorded
/// convolution choices valid as they are. So the heap reserves one virtual address range
/// (cuMemAddressReserve, as large as the device's memory: address space, not memory) and maps
/// physical memory (cuMemCreate + cuMemMap) under the chunks that hold allocations. Eviction
/// copies the live chunks to pinned host memory, then unmaps and releases their physical memory
/// (the device gets it back at once); page-in creates new physical memory, maps it at the same
/// addresses and copies the bytes back. The driver's virtual memory calls are looked up at run
/// time (cudaGetDriverEntryPointByVersion): troupe does not link libcuda.
///
/// Host copies: the bytes are constants, so the pinned copy made at a chunk's first eviction
/// stays valid while the chunk's allocations live and is kept after a page-in; a later eviction
/// then copies nothing and only unmaps. An allocation made in a chunk since (a plan compiled for
/// a new shape) makes that chunk's copy stale: the next eviction copies it again. Pinned host
/// memory is thus held for every weight evicted once, until its allocation is freed.
///
/// Chunks are the mapping unit (the device's allocation granularity, 2 MiB or more): the device
/// memory a resident heap holds is its live chunks (and empty ones kept mapped until trim), at
/// most one chunk of rounding per gap between allocations.
///
/// Thread-safety: none; the owner serialises every call (the constant store's mutex). Release
/// invariant, as for the store: evict, free and trim only while no work that reads the bytes is
/// in flight on any stream.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.hpp"
#include "kernels/chunked_arena.hpp"

namespace troupe::kernels::cuda {

class evictable_heap {
 public:
  /// What eviction does with the bytes: keep them in pinned host memory and copy them back
  /// (weights), or drop them (arenas: scratch between runs; no host memory is ever held).
  enum class contents { keep, discard };

  /// A heap on device `device` whose copies are enqueued on `stream` (the store's, or the
  /// context's whose arenas it holds: the only stream that uses them; the caller keeps it alive
  /// for the heap's life). device_error where the driver lacks virtual memory management.
  static expected<std::unique_ptr<evictable_heap>> create(int device, cudaStream_t stream,
                                                          contents what = contents::keep);
  ~evictable_heap();
  evictable_heap(const evictable_heap&) = delete;
  evictable_heap& operator=(const evictable_heap&) = delete;

  /// `bytes` of device memory, 256-byte aligned, mapped on return (the caller writes it).
  /// unavailable while evicted; out_of_memory when the device cannot back it.
  expected<void*> allocate(size_t bytes);
  /// Gives back an allocation (any state; unknown pointers are ignored). Its chunks' host copies
  /// go with their last allocation; their device memory stays mapped until trim.
  void free(const void* p);
  /// Unmaps the chunks that hold no allocation (resident heap only).
  void trim();

  /// Copies the live chunks without a valid host copy to pinned host memory (contents::keep),
  /// then unmaps every chunk: returns the device bytes released. No-op (0) when already evicted.
  expected<size_t> evict();
  /// Maps the live chunks again at their addresses and copies their bytes back (contents::keep;
  /// a discarding heap's come back with undefined bytes): returns the device bytes mapped. No-op (0) when resident. On failure (out_of_memory) nothing stays
  /// mapped and the heap is still evicted.
  expected<size_t> page_in();

  bool resident() const { return resident_; }
  /// Whether `p` lies in this heap's address range (it may have been freed).
  bool owns(const void* p) const {
    const auto at = reinterpret_cast<uintptr_t>(p);
    return p != nullptr && at >= base_ && at < base_ + reserved_;
  }
  /// Device memory mapped now.
  size_t mapped_bytes() const { return mapped_chunks_ * chunk_bytes_; }
  /// Device memory the live allocations need when resident (what a page-in maps).
  size_t footprint_bytes() const { return arena_.live_chunk_count() * chunk_bytes_; }
  /// Pinned host memory held by copies.
  size_t host_bytes() const { return *host_bytes_; }
  size_t chunk_bytes() const { return chunk_bytes_; }

 private:
  struct host_block;
  struct chunk_state {
    unsigned long long handle = 0;  // CUmemGenericAllocationHandle while mapped
    bool mapped = false;
    std::shared_ptr<host_block> host;  // the block holding this chunk's copy, if any
    size_t host_offset = 0;
    bool host_valid = false;  // the copy equals the device bytes (set by evict, cleared by
                              // allocations that land in the chunk)
  };

  evictable_heap(int device, cudaStream_t stream, uintptr_t base, size_t reserved,
                 size_t chunk_bytes, contents what);
  const char* what_name() const { return what_ == contents::keep ? "weights" : "activation arenas"; }
  status map_chunk(size_t c);
  void unmap_chunk(size_t c);
  uintptr_t address_of(size_t c) const { return base_ + c * chunk_bytes_; }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  contents what_ = contents::keep;
  uintptr_t base_ = 0;  // CUdeviceptr of the reserved range
  size_t reserved_ = 0;
  size_t chunk_bytes_ = 0;
  // Declared before chunks_: host blocks count themselves out here when the chunks drop them.
  std::shared_ptr<size_t> host_bytes_ = std::make_shared<size_t>(0);
  chunked_arena arena_;
  std::vector<chunk_state> chunks_;  // by chunk index, up to the highest chunk allocated so far
  size_t mapped_chunks_ = 0;
  bool resident_ = true;
};

}  // namespace troupe::kernels::cuda
