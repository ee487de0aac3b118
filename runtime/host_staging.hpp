#pragma once
/// Host memory that transfers to and from a device go through: a batch's gathered inputs before the
/// upload, its outputs after the download. On the CUDA backend it is page-locked (pinned, see
/// kernels/cuda/host_staging.hpp), so both copies are asynchronous DMAs; on the CPU backend, and in
/// builds without CUDA, it is plain 64-byte-aligned memory (the CPU plan reads it in place).
///
/// Allocated once (at load, per replica and batch bucket) and reused; never on the request path.
/// Ownership: a host_buffer owns its bytes and frees them (with the matching call) when it goes.

#include <cstddef>

#include "core/status.hpp"
#include "kernels/kernel.hpp"

namespace troupe::runtime {

class host_buffer {
 public:
  host_buffer() = default;
  /// `bytes` (>= 1 is allocated even for 0, so data() is never null) for transfers to `where`;
  /// `device_index` picks the GPU whose context pins the memory. Errors: out_of_memory,
  /// device_error (CUDA unusable), unavailable (a CUDA request in a build without CUDA).
  static expected<host_buffer> allocate(kernels::backend where, int device_index, size_t bytes);

  host_buffer(const host_buffer&) = delete;
  host_buffer& operator=(const host_buffer&) = delete;
  host_buffer(host_buffer&& o) noexcept { *this = std::move(o); }
  host_buffer& operator=(host_buffer&& o) noexcept;
  ~host_buffer() { reset(); }

  std::byte* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  /// True when the bytes are page-locked for DMA.
  bool pinned() const { return pinned_; }
  explicit operator bool() const { return data_ != nullptr; }
  /// Frees the bytes now. Safe on any thread.
  void reset() noexcept;

 private:
  std::byte* data_ = nullptr;
  size_t bytes_ = 0;
  bool pinned_ = false;
};

/// Page-locks `bytes` of host memory someone else allocated (a worker process's shared memory,
/// serving/shared_arena.hpp) for transfers to `where`, so that uploads from it and downloads into
/// it are DMAs like those of a pinned host_buffer. A no-op for the CPU. Errors: out_of_memory,
/// device_error, unavailable (CUDA in a build without it).
status register_host_memory(kernels::backend where, int device_index, void* p, size_t bytes);
/// Undoes register_host_memory (null or a CPU target: nothing). Safe on any thread.
void unregister_host_memory(kernels::backend where, void* p) noexcept;

}  // namespace troupe::runtime
