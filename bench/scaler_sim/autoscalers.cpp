#include "bench/scaler_sim/autoscalers.hpp"

#include <chrono>

namespace troupe::scaler_sim {

troupe_autoscaler::troupe_autoscaler(serving::scaling_config config, uint32_t initial,
                                     std::vector<serving::batch_service_time> profile,
                                     serving::scaling_tuning tuning)
    : policy_(config, initial, tuning),
      capacity_rps_(
          serving::replica_capacity_rps(profile, config.slo_p99_ms, tuning.slo_latency_share)) {}

uint32_t troupe_autoscaler::tick(const cluster_view& v) {
  // Simulated seconds onto the policy's steady clock; the warm-up's negative times stay positive.
  const auto now = serving::scaling_clock::time_point{} +
                   std::chrono::duration_cast<serving::scaling_clock::duration>(
                       std::chrono::duration<double>(v.now_s + 1e6));
  serving::scaling_signals s;
  s.arrival_rps = v.window_s > 0 ? static_cast<double>(v.arrivals) / v.window_s : 0;
  s.queued = v.queued;
  s.p99_ms = v.p99_ms;
  s.busy_fraction = v.busy_fraction;
  s.ready_replicas = v.ready;
  s.starting_replicas = v.starting;
  s.replica_capacity_rps = capacity_rps_;
  return policy_.decide(now, s).replicas;
}

}  // namespace troupe::scaler_sim
