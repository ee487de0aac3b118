#pragma once
/// The one host copy of a batch's request bytes: every job's input i, in row order, into the
/// staging memory of input i of the bucket that runs the batch. The in-process replica gathers
/// into its own staging (serving/replica.hpp); a worker process's proxy gathers into the shared
/// memory its process reads (actors/worker_proxy.hpp). Both use this.
///
/// Staging a large batch is memory-bound (request frames lie scattered over the heap): batches of
/// at least `parallel_bytes` are copied by `threads` OpenMP threads, each a share of the jobs.
/// Measured on the GPU host, one thread copying 40 images of 150 KB took about as long as the
/// GPU's run of them.
///
/// Thread-safety: one gather at a time (the copy list is reused batch after batch: a gather
/// allocates nothing once it has seen its largest batch).

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/status.hpp"
#include "serving/job.hpp"

namespace troupe::serving {

class batch_gather {
 public:
  /// `threads` 0: a quarter of the hardware threads, 1 to 4.
  explicit batch_gather(uint32_t threads = 0, size_t parallel_bytes = size_t{2} << 20);

  /// Copies input i of every job of `jobs` (in order) to dst[i], one after another. `capacity[i]`
  /// is the bytes dst[i] holds: a batch whose bytes exceed it fails `internal` with nothing
  /// copied. Bytes past the batch's rows (padding up to the bucket) are left as they were.
  status gather(std::span<infer_job* const> jobs, std::span<std::byte* const> dst,
                std::span<const size_t> capacity);

  int threads() const { return threads_; }

 private:
  struct copy {
    std::byte* dst = nullptr;
    const void* src = nullptr;
    size_t bytes = 0;
  };
  std::vector<copy> copies_;
  int threads_ = 1;
  size_t parallel_bytes_ = 0;
};

}  // namespace troupe::serving
