#pragma once
/// A token bucket for log lines whose text the node does not control (protobuf's own log output,
/// which a client can provoke with malformed messages): at most `per_second` lines a second on
/// average, bursts of up to `burst`. Refused lines are counted, and the count is handed to the
/// next admitted line so that the log says how many were dropped. Thread-safe.

#include <chrono>
#include <cstdint>
#include <mutex>

namespace troupe::cluster {

class log_rate_limiter {
 public:
  using clock = std::chrono::steady_clock;

  struct decision {
    bool admit = false;
    uint64_t suppressed_before = 0;  // lines refused since the previous admitted one
  };

  log_rate_limiter(double per_second, double burst);

  /// Whether a line arriving at `now` may be written.
  decision admit(clock::time_point now);

 private:
  const double per_second_;
  const double burst_;
  std::mutex mutex_;
  double tokens_;             // guarded by mutex_; in [0, burst_]
  clock::time_point last_{};  // guarded by mutex_; when tokens_ was last refilled
  bool started_ = false;      // guarded by mutex_
  uint64_t suppressed_ = 0;   // guarded by mutex_; refused since the last admitted line
};

}  // namespace troupe::cluster
