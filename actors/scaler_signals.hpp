#pragma once
/// What the scaler (actors/scaler.hpp) measures of a model version between two of its ticks, and
/// the worker nodes the wanted replicas need: plain functions of two readings, apart from the
/// actor so that they are tested without CAF (tests/actors/test_scaler_signals.cpp).
///
/// A reading is the batcher's counters (jobs handed to it, busy time of its replicas, the queue)
/// and the version's request-latency histogram at one moment; the signals of the scaling policy
/// are their differences over the window between two readings.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "serving/scaling_policy.hpp"

namespace troupe::actors {

/// Cumulative counts of a version's request-latency histogram (troupe_request_latency_seconds).
struct latency_histogram {
  std::vector<double> upper_bounds_s;  // ascending; the last may be +Inf
  std::vector<double> cumulative;      // requests answered in at most each bound, since the start
};

/// One reading of a version.
struct version_reading {
  serving::scaling_clock::time_point at{};
  uint64_t submitted_jobs = 0;               // batcher_stats::submitted_jobs
  uint64_t busy_us = 0;                      // batcher_stats::busy_us
  uint64_t queued = 0;                       // batcher_stats::queued_jobs
  std::optional<latency_histogram> latency;  // none: the node has no metrics
};

/// The p99 (ms) of the requests answered between two readings of one histogram, interpolated
/// linearly inside its bucket as PromQL's histogram_quantile does (a p99 beyond the last finite
/// bound is that bound). None when no request was answered in between or the bounds differ.
std::optional<double> p99_between_ms(const latency_histogram& before, const latency_histogram& now);

/// The policy's signals from two readings of a version (`before` may be the same moment as `now`:
/// rates are then 0): arrival rate, queue, p99, busy fraction over `ready` replicas, and a
/// replica's capacity at the SLO from the batcher's measured latency per batch bucket. The caller
/// fills in the replica counts' other half (starting) and the device figures.
serving::scaling_signals signals_between(const version_reading& before, const version_reading& now,
                                         uint32_t ready,
                                         std::span<const serving::batch_service_time> profile,
                                         double slo_p99_ms);

/// One scaled version's demand on the node.
struct replica_demand {
  bool gpu = false;      // on GPU workers (else CPU workers)
  uint32_t workers = 0;  // this node's workers of that kind
  /// Busy replicas its load needs: the capacity model's count at the target utilisation
  /// (scaling_decision::needed), unrounded and not bounded by max_replicas or the devices.
  double needed = 0;
  uint32_t replicas = 0;       // wanted (they hold memory, busy or not)
  uint64_t replica_bytes = 0;  // one replica's memory; 0: unknown
};

/// Worker nodes like this one that this node's load needs, unrounded (0.5: half of this node's
/// workers would do; 2.3: the load would keep the workers of 2.3 such nodes busy). Per device
/// kind, the busy replicas needed over the node's workers of that kind (a worker runs one batch
/// at a time: replicas beyond one per worker add no throughput, and idle replicas need no worker
/// of their own); where the GPU memory per node is known (`gpu_memory_bytes` > 0), also the
/// wanted GPU replicas' memory over it. The largest of these. Summed over the nodes that share a
/// load and rounded up, it is the node count that load needs (what HPA or KEDA computes).
double desired_nodes(std::span<const replica_demand> versions, uint64_t gpu_memory_bytes);

}  // namespace troupe::actors
