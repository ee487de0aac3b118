#include "cluster/log_rate_limiter.hpp"

#include <algorithm>

namespace troupe::cluster {

log_rate_limiter::log_rate_limiter(double per_second, double burst)
    : per_second_(per_second), burst_(std::max(burst, 1.0)), tokens_(burst_) {}

log_rate_limiter::decision log_rate_limiter::admit(clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!started_) {
    started_ = true;
    last_ = now;
  } else if (now > last_) {
    const double elapsed_s = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + elapsed_s * per_second_);
    last_ = now;
  }
  if (tokens_ < 1.0) {
    ++suppressed_;
    return {};
  }
  tokens_ -= 1.0;
  decision d{true, suppressed_};
  suppressed_ = 0;
  return d;
}

}  // namespace troupe::cluster
