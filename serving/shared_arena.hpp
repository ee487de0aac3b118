#pragma once
/// Shared memory between a node and one of its worker processes (docs/worker-processes.md): one
/// memfd the node creates and maps, and the worker process maps too (it inherits the descriptor).
/// The node allocates every region in it: the staging a batch's inputs are gathered into, the
/// output blocks the process writes its results to and the replies are sent from. The process
/// only reads and writes the regions a message names, after checking them (`contains`).
///
/// Sized once, generously, and sparse: a page costs memory only once written (on a GPU worker
/// the process pins the whole arena for DMA, which commits it). A load whose regions do not fit
/// fails out_of_memory.
///
/// Ownership: shared. Output blocks carved from the arena hold a reference (output_block's home),
/// so the mapping outlives the last reply that reads from it, whoever goes first. allocate and
/// release are thread-safe (a block's last release may run on ZeroMQ's I/O thread).

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/status.hpp"
#include "serving/job.hpp"

namespace troupe::serving {

/// A byte range of an arena. `segment` names the arena (one per worker process today; a process
/// given further segments later would tell them apart by it).
struct shm_region {
  uint32_t segment = 0;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

class shared_arena : public block_home, public std::enable_shared_from_this<shared_arena> {
 public:
  /// Offsets and sizes of regions are multiples of this (a cache line pair; GPU DMA likes it).
  static constexpr size_t alignment = 256;

  /// The node's side: a fresh memfd of `bytes` (close-on-exec: the launcher hands it to its one
  /// process explicitly), mapped read-write. `name` shows in /proc/<pid>/maps.
  static expected<std::shared_ptr<shared_arena>> create(size_t bytes, const std::string& name);
  /// The worker process's side: maps `fd` (which it inherited) and owns it from here on. The
  /// descriptor's size must be at least `bytes`.
  static expected<std::shared_ptr<shared_arena>> attach(int fd, size_t bytes);
  ~shared_arena() override;
  shared_arena(const shared_arena&) = delete;
  shared_arena& operator=(const shared_arena&) = delete;

  int fd() const { return fd_; }
  size_t bytes() const { return bytes_; }
  std::byte* base() const { return base_; }

  /// `bytes` (rounded up to the alignment; at least one unit), first fit. out_of_memory when no
  /// free range is large enough.
  expected<shm_region> allocate(size_t bytes);
  /// Gives a region back (by its offset; unknown offsets are ignored). Adjacent free ranges merge.
  void release(const shm_region& r) noexcept;
  size_t used_bytes() const;

  /// Whether `r` lies inside the arena (no overflow): checked on every region a peer names.
  bool contains(const shm_region& r) const {
    return r.segment == 0 && r.offset <= bytes_ && r.bytes <= bytes_ - r.offset;
  }
  std::byte* at(const shm_region& r) const { return base_ + r.offset; }
  /// The region that starts at `p` (inside the arena), `bytes` long.
  shm_region region_of(const std::byte* p, size_t bytes) const {
    return {0, static_cast<uint64_t>(p - base_), bytes};
  }

  /// block_home: the last release of an output block carved from the arena gives its region back.
  void give_back(std::byte* data, size_t bytes) noexcept override;

 private:
  shared_arena() = default;

  int fd_ = -1;
  std::byte* base_ = nullptr;
  size_t bytes_ = 0;
  mutable std::mutex mutex_;                // guards the two maps
  std::map<uint64_t, uint64_t> free_;       // offset -> bytes, disjoint, never adjacent
  std::map<uint64_t, uint64_t> allocated_;  // offset -> bytes
};

}  // namespace troupe::serving
