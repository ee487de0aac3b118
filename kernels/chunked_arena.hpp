#pragma once
/// The bookkeeping of an address range whose backing comes and goes in fixed-size chunks: the
/// CUDA backend's evictable weight heap (kernels/cuda/evictable_heap.hpp) reserves one virtual
/// address range, sub-allocates constants in it with this class and maps device memory under
/// the chunks that hold an allocation. Plain C++ (no CUDA): which chunks an allocation needs and
/// which a free leaves empty is decided here and tested without a GPU.
///
/// Allocation: first fit over the free ranges (merged when adjacent), offsets and sizes rounded
/// to `alignment`. Each chunk counts the allocations that overlap it; a chunk with a count is
/// "live" (its bytes matter, and eviction copies them out), one without holds nothing.
///
/// Thread-safety: none; the owner serialises (the constant store's mutex).

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "core/status.hpp"

namespace troupe::kernels {

class chunked_arena {
 public:
  /// `capacity_bytes` of address space cut into chunks of `chunk_bytes` (both rounded: the
  /// capacity up to whole chunks); `alignment` divides `chunk_bytes`.
  chunked_arena(size_t capacity_bytes, size_t chunk_bytes, size_t alignment);

  /// A range handed out, and the chunks it overlaps: [first_chunk, last_chunk].
  struct grant {
    size_t offset = 0;
    size_t bytes = 0;  // rounded up to the alignment
    size_t first_chunk = 0;
    size_t last_chunk = 0;
  };
  /// `bytes` (at least one alignment unit), first fit; out_of_memory when no free range holds it.
  expected<grant> allocate(size_t bytes);
  /// Gives back the allocation at `offset` and returns the chunks it leaves without any
  /// allocation, ascending; an unknown offset frees nothing and returns none.
  std::vector<size_t> free(size_t offset);

  /// The chunk holding byte `offset`.
  size_t chunk_of(size_t offset) const { return offset / chunk_bytes_; }
  /// Allocations overlapping chunk `c`.
  uint32_t chunk_users(size_t c) const { return c < users_.size() ? users_[c] : 0; }
  /// Chunks with at least one allocation, ascending.
  std::vector<size_t> live_chunks() const;
  size_t live_chunk_count() const { return live_chunks_; }

  size_t capacity_bytes() const { return capacity_; }
  size_t chunk_bytes() const { return chunk_bytes_; }
  size_t chunk_count() const { return users_.size(); }
  size_t allocated_bytes() const { return allocated_bytes_; }
  size_t allocations() const { return allocated_.size(); }

 private:
  size_t capacity_ = 0;
  size_t chunk_bytes_ = 0;
  size_t alignment_ = 0;
  std::map<size_t, size_t> free_;       // offset -> bytes, disjoint, never adjacent
  std::map<size_t, size_t> allocated_;  // offset -> bytes
  std::vector<uint32_t> users_;         // per chunk: allocations overlapping it
  size_t live_chunks_ = 0;
  size_t allocated_bytes_ = 0;
};

}  // namespace troupe::kernels
