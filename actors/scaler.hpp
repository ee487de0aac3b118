#pragma once
/// scaler: one per node; decides the replica count of every model version whose model has a
/// `scaling:` block (docs/scaling.md), and model_manager carries it out.
///
/// Every `interval` (a tick on the actor clock, which tests simulate) it asks model_manager for
/// those versions ((scaled) -> scaled_versions), asks each one's batcher for its counters
/// ((stats) -> batcher_stats), turns the difference since the previous tick into the policy's
/// signals (actors/scaler_signals.hpp: arrival rate, queue, p99 of the requests answered in the
/// window, busy fraction, a replica's capacity at the SLO from the measured latency per batch
/// size; ready and starting replicas from model_manager; GPU memory free and utilisation from
/// NVML where it loads), asks the version's scaling_policy (serving/scaling_policy.hpp), and sends
/// model_manager (scale, model, version, n) whenever n differs from what it holds or carries out.
/// A (wake, model, version) (a request reached a version scaled to zero) runs a tick at once.
///
/// Each decision is counted in troupe_scaler_decisions_total{model,action,reason} (holds too: a
/// rate of `hold`/`memory` shows a scale-up held back), and one that changes a count is a JSON log
/// event "scaling decision" with model, version, from, to, action, reason and the signals. The
/// gauges troupe_scaler_desired_replicas{model,version} and troupe_scaler_desired_nodes (the
/// worker nodes this node's load needs, unrounded, to be summed over the nodes:
/// actors/scaler_signals.hpp desired_nodes) follow each tick. A version's policy starts at the
/// count model_manager holds and is forgotten when the version goes (a reload gets a fresh one).

#include <chrono>
#include <functional>
#include <vector>

#include "actors/caf_compat.hpp"
#include "serving/metrics.hpp"
#include "serving/scaling_policy.hpp"

namespace troupe::actors {

struct scaler_options {
  manager_actor manager;
  serving::serving_metrics* metrics = nullptr;  // may be null; outlives the actor
  /// Time between ticks: the measuring window of the rates.
  std::chrono::milliseconds interval{1000};
  serving::scaling_tuning tuning;
  /// The node's GPUs now (memory free and total, utilisation). Null: metrics->gpu_readings()
  /// (NVML) when metrics are set, else none. Tests give their own. Called on the actor's thread.
  std::function<std::vector<serving::serving_metrics::gpu_reading>()> gpus;
  /// Under GPU workers' memory budgets, the most a new replica could get on one of them
  /// (serving_metrics::budget_room); none: no budget. Null: metrics->budget_room() when metrics
  /// are set. Tests give their own. The memory headroom is the smaller of this and NVML's free.
  std::function<std::optional<uint64_t>()> budget_room;
};

/// Spawns the scaler; its first tick comes one interval later.
scaler_actor spawn_scaler(caf::actor_system& sys, scaler_options o);

}  // namespace troupe::actors
