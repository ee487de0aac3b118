#pragma once
/// A discrete-event simulation of one model version served by N replicas behind troupe's batcher,
/// with an autoscaler choosing N.
///
/// - Arrivals: a Poisson process at the trace's rate, drawn per bin of `bin_s` (100 us): the
///   requests of a bin arrive at its midpoint and can be taken from its end. The same seed gives
///   every policy the same arrivals.
/// - Serving: one FIFO queue (the batcher, max_queue_delay 0); a ready replica that is free takes
///   every queued request up to the max batch and is busy for the measured service time of that
///   batch size (service_profile.hpp). A request's latency is its wait plus its batch's service
///   time plus the measured transport time; it meets the SLO when that is <= slo_p99_ms.
/// - Replicas: a new one holds its GPU (counts replica-seconds) from the decision and serves after
///   `startup_s` (the measured load time). A removed one is a starting one first (newest first),
///   then an idle one, then a busy one after its batch.
/// - Figures count [0, duration): requests that arrive in it (those still queued at the end are
///   served by the count then, frozen), replica-seconds and scale actions in it. A flap is a scale
///   action in the opposite direction of another within the last `flap_window_s`.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bench/scaler_sim/service_profile.hpp"
#include "bench/scaler_sim/traces.hpp"

namespace troupe::scaler_sim {

struct sim_params {
  std::span<const service_point> service = resnet50_h100_fp16;
  double transport_ms = resnet50_transport_ms;
  int64_t max_batch = resnet50_max_batch;
  double slo_ms = 15;
  double startup_s = 1.7;
  double bin_s = 1e-4;
  double warmup_s = 1200;
  double flap_window_s = 300;
  uint64_t seed = 1;
  bool record_series = false;  // sim_result::series, one sample per second (scaler_sim --series)
};

/// What an autoscaler sees at its tick.
struct cluster_view {
  double now_s = 0;
  double window_s = 0;      // since its previous tick
  uint64_t arrivals = 0;    // in the window
  uint64_t queued = 0;      // requests waiting now
  uint64_t in_service = 0;  // requests in running batches now
  uint32_t ready = 0, starting = 0;
  uint32_t target = 0;           // replicas held (ready + starting)
  double busy_fraction = 0;      // of the ready replicas over the window
  std::optional<double> p99_ms;  // of the requests dispatched in the window
};

class autoscaler {
 public:
  virtual ~autoscaler() = default;
  virtual std::string name() const = 0;
  /// Seconds between ticks; 0: never (static provisioning).
  virtual double tick_s() const = 0;
  /// Called at every tick; answers the replicas wanted.
  virtual uint32_t tick(const cluster_view& v) = 0;
};

struct scale_event {
  double at_s;
  uint32_t from, to;
};

/// One second of a run, by arrival time.
struct second_sample {
  uint64_t arrivals = 0;
  uint64_t late = 0;  // arrived in this second and missed the SLO (counted when dispatched)
  uint32_t held = 0;  // replicas held (ready + starting) at the end of the second
  uint32_t ready = 0;
  uint64_t queued = 0;  // at the end of the second
};

struct sim_result {
  uint64_t requests = 0;
  uint64_t within_slo = 0;
  double replica_seconds = 0;
  uint32_t scale_actions = 0;
  uint32_t flaps = 0;
  uint32_t peak_replicas = 0;
  double mean_ongoing_per_replica = 0;  // time-averaged over [0, duration)
  std::vector<scale_event> events;      // in [0, duration)
  std::vector<second_sample> series;    // with sim_params::record_series
  double slo_attainment() const {
    return requests ? static_cast<double>(within_slo) / static_cast<double>(requests) : 1.0;
  }
};

/// Runs `t` with `initial_replicas` ready at the start of the warm-up.
sim_result simulate(const trace& t, autoscaler& a, uint32_t initial_replicas, const sim_params& p);

}  // namespace troupe::scaler_sim
