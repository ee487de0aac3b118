#include "serving/batch_gather.hpp"

#include <algorithm>
#include <cstring>
#include <thread>

namespace troupe::serving {

batch_gather::batch_gather(uint32_t threads, size_t parallel_bytes)
    : threads_(threads > 0
                   ? static_cast<int>(threads)
                   : std::clamp(static_cast<int>(std::thread::hardware_concurrency() / 4), 1, 4)),
      parallel_bytes_(parallel_bytes) {}

status batch_gather::gather(std::span<infer_job* const> jobs, std::span<std::byte* const> dst,
                            std::span<const size_t> capacity) {
  if (dst.size() != capacity.size()) return internal_error("gather: one capacity per input");
  copies_.clear();
  size_t total_bytes = 0;
  for (size_t i = 0; i < dst.size(); ++i) {
    size_t offset = 0;
    for (const infer_job* j : jobs) {
      if (i >= j->inputs.size())
        return internal_error("gather: a job lacks input " + std::to_string(i));
      const input_view& in = j->inputs[i];
      if (offset + in.bytes > capacity[i]) return internal_error("batch rows exceed the bucket");
      copies_.push_back({dst[i] + offset, in.data, in.bytes});
      offset += in.bytes;
    }
    total_bytes += offset;
  }
  const auto n = static_cast<int64_t>(copies_.size());
  if (threads_ > 1 && n > 1 && total_bytes >= parallel_bytes_) {
    const int threads = static_cast<int>(std::min<int64_t>(threads_, n));
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t k = 0; k < n; ++k) {
      const copy& c = copies_[static_cast<size_t>(k)];
      std::memcpy(c.dst, c.src, c.bytes);
    }
  } else {
    for (const copy& c : copies_) std::memcpy(c.dst, c.src, c.bytes);
  }
  return status::ok();
}

}  // namespace troupe::serving
