#include "actors/scaler_signals.hpp"

#include <algorithm>
#include <cmath>

namespace troupe::actors {

using serving::batch_service_time;
using serving::scaling_signals;

std::optional<double> p99_between_ms(const latency_histogram& before,
                                     const latency_histogram& now) {
  const size_t n = now.cumulative.size();
  if (n == 0 || now.upper_bounds_s.size() != n || before.cumulative.size() != n ||
      before.upper_bounds_s != now.upper_bounds_s)
    return std::nullopt;
  const double total = now.cumulative.back() - before.cumulative.back();
  if (!(total > 0)) return std::nullopt;
  const double rank = 0.99 * total;
  double below = 0;  // requests in the buckets before this one, within the window
  for (size_t i = 0; i < n; ++i) {
    const double upto = now.cumulative[i] - before.cumulative[i];
    if (upto < rank) {
      below = upto;
      continue;
    }
    const double hi = now.upper_bounds_s[i];
    const double lo = i == 0 ? 0.0 : now.upper_bounds_s[i - 1];
    if (std::isinf(hi)) return lo * 1000.0;  // beyond the last finite bound: that bound
    const double in_bucket = upto - below;
    const double share = in_bucket > 0 ? (rank - below) / in_bucket : 1.0;
    return (lo + (hi - lo) * std::clamp(share, 0.0, 1.0)) * 1000.0;
  }
  return now.upper_bounds_s.back() * 1000.0;
}

scaling_signals signals_between(const version_reading& before, const version_reading& now,
                                uint32_t ready, std::span<const batch_service_time> profile,
                                double slo_p99_ms) {
  scaling_signals s;
  s.queued = now.queued;
  s.ready_replicas = ready;
  s.replica_capacity_rps = replica_capacity_rps(profile, slo_p99_ms);
  const double window_s = std::chrono::duration<double>(now.at - before.at).count();
  if (window_s > 0) {
    // Counters only grow within one batcher; a smaller one is another batcher's (a reload).
    if (now.submitted_jobs >= before.submitted_jobs)
      s.arrival_rps = static_cast<double>(now.submitted_jobs - before.submitted_jobs) / window_s;
    if (ready > 0 && now.busy_us >= before.busy_us)
      s.busy_fraction = std::min(
          1.0, static_cast<double>(now.busy_us - before.busy_us) / 1e6 / (window_s * ready));
  }
  if (before.latency && now.latency) s.p99_ms = p99_between_ms(*before.latency, *now.latency);
  return s;
}

double desired_nodes(std::span<const replica_demand> versions, uint64_t gpu_memory_bytes) {
  double needed[2] = {0, 0};  // cpu, gpu
  uint32_t workers[2] = {0, 0};
  double gpu_bytes = 0;
  bool bytes_known = true;
  for (const replica_demand& v : versions) {
    if (std::isfinite(v.needed) && v.needed > 0) needed[v.gpu] += v.needed;
    workers[v.gpu] = std::max(workers[v.gpu], v.workers);
    if (v.gpu) {
      gpu_bytes += static_cast<double>(v.replicas) * static_cast<double>(v.replica_bytes);
      bytes_known = bytes_known && (v.replica_bytes > 0 || v.replicas == 0);
    }
  }
  double nodes = 0;
  for (int k = 0; k < 2; ++k)
    if (workers[k] > 0) nodes = std::max(nodes, needed[k] / workers[k]);
  if (gpu_memory_bytes > 0 && bytes_known)
    nodes = std::max(nodes, gpu_bytes / static_cast<double>(gpu_memory_bytes));
  return nodes;
}

}  // namespace troupe::actors
