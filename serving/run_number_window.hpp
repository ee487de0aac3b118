#pragma once
/// Which run numbers a worker has seen, to tell a second copy of a run (a duplicate on the link,
/// fault injection) from a new one. A node numbers its runs upwards, but over several connections
/// (a remote worker's data lanes, cluster/worker_lanes.hpp) they may arrive a few out of order: so
/// the last `kept` numbers seen are remembered, and every number up to the last one forgotten
/// counts as seen (they are forgotten smallest first).
/// Used by the serving loop of a worker process (actors/replica_host.hpp) and by a remote
/// worker's staging (cluster/remote_run_staging.hpp).
///
/// Not thread-safe: its owner's lock or thread.

#include <cstddef>
#include <cstdint>
#include <set>

namespace troupe::serving {

class run_number_window {
 public:
  explicit run_number_window(size_t kept = 4096) : kept_(kept) {}

  /// Whether `n` was seen (or is not above the last number forgotten).
  bool seen(uint64_t n) const { return n < forgotten_below_ || numbers_.count(n) > 0; }
  /// Notes `n` as seen; false when it was already.
  bool insert(uint64_t n) {
    if (n < forgotten_below_ || !numbers_.insert(n).second) return false;
    if (numbers_.size() > kept_) {
      forgotten_below_ = *numbers_.begin() + 1;
      numbers_.erase(numbers_.begin());
    }
    return true;
  }

 private:
  size_t kept_;
  std::set<uint64_t> numbers_;
  uint64_t forgotten_below_ = 0;
};

}  // namespace troupe::serving
