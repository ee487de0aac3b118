#pragma once
/// The scaler's decisions, apart from the actor so that they can be tested as plain functions of
/// time: how many replicas one model version should have, given what its batcher and the devices
/// report. No CAF, no I/O, no clock of its own: the caller passes `now`.
///
/// The policy, per model version (docs/scaling.md has the knobs and an example):
/// - **Capacity model.** A replica's capacity is its measured throughput at the largest batch
///   whose service time still fits the SLO (`replica_capacity_rps` over the batch-latency profile
///   the batcher measures). The replicas needed are `arrival_rps / (capacity x
///   target_utilization)` (Little's law with the service time of that batch), rounded up.
///   Without a profile, capacity falls back to what the ready replicas served per busy second,
///   which under-estimates a batching replica at low load: conservative, never too few.
/// - **Guards.** A queue that grows while no replica is starting adds the replicas its growth
///   rate needs (the growth rate is the deficit); a backlog beyond what the ready replicas clear
///   in half the SLO adds the replicas that drain it in `backlog_drain`. A measured p99 over
///   the SLO, with nothing starting and no scale-up in the last `slo_guard_interval`, scales up
///   in proportion (p99 / SLO, at most `max_slo_step` times, at least one replica): the
///   capacity model was wrong.
/// - **Up fast, down slowly.** A scale-up happens once the wanted count has held for
///   `upscale_delay` (the minimum over that window is taken), or at once while a backlog grows
///   (requests are missing the SLO now: the delay filters noise, and this is not noise). A
///   scale-down happens only to the
///   maximum over the last `downscale_delay` of the replicas needed at a lower utilisation
///   (`target_utilization x (1 - downscale_band)`: the hysteresis band), and never within
///   `downscale_delay` of a scale-up (the cooldown), nor while the arrival rate rises (its
///   least-squares slope over `trend_window` is positive by more than twice its standard error:
///   past the trough of a daily cycle, the load that the window's peak no longer shows is coming
///   back). A scale-down is thus undone within the cooldown only by load beyond the window's
///   peak by the band that no trend announced: a new high, not noise. When that happens (a
///   flap: the load returns sooner than the window said, bursts), the downscale window and the
///   cooldown double, up to `max_flap_backoff` times; four windows without a flap halve them.
/// - **Bounds and limits.** Counts stay within [min_replicas, max_replicas]. A scale-up is capped
///   by device memory (the headroom over one replica's footprint: reason `memory`) and held while
///   the least busy candidate device is saturated (GPU utilisation >= `gpu_saturated`: another
///   replica there adds nothing) or its PCIe link is (`pcie_saturated`).
/// - **Zero.** With `min_replicas: 0`, no arrival and an empty queue for `scale_to_zero_after`
///   take the version to zero replicas; the first arrival brings it back at once (no delay), with
///   the replicas its rate needs.
///
/// Every decision carries an action and a reason (a small fixed vocabulary, fit for a metric
/// label: `scaling_reason_name`); the scaler actor logs each as a JSON event and counts it.

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string_view>

#include "core/status.hpp"

namespace troupe::serving {

using scaling_clock = std::chrono::steady_clock;  // the same clock as CAF's actor clock

/// config.yaml `scaling: {min_replicas, max_replicas, slo_p99_ms, upscale_delay_s,
/// downscale_delay_s, scale_to_zero_after_s}`. A model without the block is not scaled.
struct scaling_config {
  uint32_t min_replicas = 1;
  uint32_t max_replicas = 1;  // the parser defaults it to min_replicas (at least 1)
  double slo_p99_ms = 0;      // the parser defaults it to dynamic_batching.adaptive.slo_p99_ms
  std::chrono::milliseconds upscale_delay{2'000};
  std::chrono::milliseconds downscale_delay{600'000};
  /// 0: never. Needs min_replicas 0 (and min_replicas 0 needs it): the time without arrivals
  /// after which the version goes to zero replicas.
  std::chrono::milliseconds scale_to_zero_after{0};
};

/// invalid_argument naming the key (`scaling.max_replicas: ...`) when the config is inconsistent.
status check_scaling_config(const scaling_config& c);

/// Tuning of the policy; not in config.yaml (the defaults are what bench/results/scaler.md ran).
struct scaling_tuning {
  double target_utilization = 0.8;  // of a replica's capacity at the SLO, for scale-up
  double downscale_band = 0.15;     // scale-down plans at target_utilization x (1 - band)
  /// A batch fits the SLO when two of its service times (wait for the running batch, then its
  /// own) take at most this share of the SLO.
  double slo_latency_share = 0.8;
  double max_slo_step = 2.0;  // the p99 guard multiplies the replicas by at most this
  std::chrono::milliseconds slo_guard_interval{10'000};
  std::chrono::milliseconds backlog_drain{5'000};
  /// A scale-down is skipped while the arrival rate rises over this window.
  std::chrono::milliseconds trend_window{60'000};
  /// Each flap doubles the downscale window (and the cooldown) up to this factor; every four
  /// windows without one halve it.
  uint32_t max_flap_backoff = 8;
  double gpu_saturated = 0.95;   // utilisation of the least busy candidate device
  double pcie_saturated = 0.90;  // share of its link's bandwidth
};

/// One point of a replica's measured batch latency (warm-up, then every batch).
struct batch_service_time {
  int64_t rows = 0;
  double service_ms = 0;
};

/// Requests per second one replica serves at the largest batch that fits the SLO (see
/// slo_latency_share); of the points that fit, the one with the highest throughput; when none
/// fits, the smallest batch's. 0 for an empty profile. `profile` ascending in rows.
double replica_capacity_rps(std::span<const batch_service_time> profile, double slo_p99_ms,
                            double slo_latency_share = scaling_tuning{}.slo_latency_share);

/// What the scaler knows of one model version at one moment. Rates and the p99 cover the
/// scaler's measuring window (its tick).
struct scaling_signals {
  double arrival_rps = 0;        // requests arriving per second
  uint64_t queued = 0;           // requests waiting in the batcher now
  std::optional<double> p99_ms;  // of the requests completed in the window; none: nothing done
  double busy_fraction = 0;      // busy time of the ready replicas / (ready x window)
  uint32_t ready_replicas = 0;
  uint32_t starting_replicas = 0;   // asked for, still loading
  double replica_capacity_rps = 0;  // replica_capacity_rps() of the measured profile; 0: unknown
  /// Device memory a new replica may use: min(pool headroom, NVML free) over the candidate
  /// devices, not counting what starting replicas will take. None: not known (no cap).
  std::optional<uint64_t> memory_headroom_bytes;
  uint64_t replica_bytes = 0;              // one replica's footprint; 0: unknown (no cap)
  std::optional<double> gpu_utilization;   // 0..1, the least busy candidate device
  std::optional<double> pcie_utilization;  // 0..1, that device's link (throughput / bandwidth)
};

enum class scaling_action : uint8_t { hold, up, down, to_zero, from_zero };
std::string_view scaling_action_name(scaling_action a);

/// Why: the label of `troupe_scaler_decisions_total{model,action,reason}`.
enum class scaling_reason : uint8_t {
  steady,          // hold: the count fits the load
  capacity,        // up: the capacity model needs more
  queue,           // up: the queue grows, or a backlog must be drained
  slo,             // up: the measured p99 is over the SLO
  upscale_delay,   // hold: more are wanted, not yet for upscale_delay
  low_load,        // down: the window's peak needs fewer
  cooldown,        // hold: fewer would do, but a scale-up was less than downscale_delay ago
  rising_load,     // hold: fewer would do now, but the arrival rate is rising
  memory,          // up capped or held by device memory
  gpu_saturated,   // up held: the candidate device is saturated
  pcie_saturated,  // up held: the candidate device's link is saturated
  bounds,          // the count moved into [min_replicas, max_replicas]
  idle,            // to_zero: no arrivals for scale_to_zero_after
  arrival,         // from_zero: a request arrived
};
std::string_view scaling_reason_name(scaling_reason r);

struct scaling_decision {
  uint32_t replicas = 0;  // desired, after this decision
  scaling_action action = scaling_action::hold;
  scaling_reason reason = scaling_reason::steady;
  double needed = 0;  // the capacity model's replicas (unrounded), for the log
};

/// Feed it the signals of each tick, in time order; it answers the replica count wanted. It keeps
/// the count it last answered (the actuator is trusted to carry it out: `starting_replicas`
/// tells the guards that help is on the way).
class scaling_policy {
 public:
  /// `initial_replicas` is clamped into the bounds (0 only with min_replicas 0).
  scaling_policy(scaling_config config, uint32_t initial_replicas, scaling_tuning tuning = {});

  scaling_decision decide(scaling_clock::time_point now, const scaling_signals& s);

  uint32_t replicas() const { return replicas_; }
  const scaling_config& config() const { return config_; }
  const scaling_tuning& tuning() const { return tuning_; }

 private:
  struct sample {
    scaling_clock::time_point at;
    uint32_t want_up = 0;    // replicas wanted by the capacity model and the guards
    uint32_t want_down = 0;  // replicas needed at the lower (hysteresis) utilisation
    double arrival_rps = 0;
  };
  /// Whether the arrival rate rises over the last `trend_window`: its least-squares slope is
  /// above zero by more than twice the slope's standard error.
  bool arrivals_rising(scaling_clock::time_point now) const;
  scaling_decision finish(scaling_clock::time_point now, uint32_t to, scaling_action action,
                          scaling_reason reason, double needed);
  uint32_t clamp(uint32_t n) const;

  scaling_config config_;
  scaling_tuning tuning_;
  uint32_t replicas_ = 0;
  std::deque<sample> history_;  // ascending time, trimmed to the longer of the two delays
  bool started_ = false;
  scaling_clock::time_point last_active_{};    // last tick with an arrival or a queue
  scaling_clock::time_point last_up_{};        // last scale-up (or start)
  scaling_clock::time_point history_since_{};  // samples before this are from another count
  std::chrono::milliseconds downscale_window() const {
    return config_.downscale_delay * static_cast<int>(flap_backoff_);
  }
  std::optional<scaling_clock::time_point> last_down_;
  uint32_t flap_backoff_ = 1;  // the downscale window is downscale_delay times this
  scaling_clock::time_point last_flap_{};
  std::optional<uint64_t> last_queued_;
  scaling_clock::time_point last_queued_at_{};
};

}  // namespace troupe::serving
