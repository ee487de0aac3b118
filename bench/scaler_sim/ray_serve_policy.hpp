#pragma once
/// Ray Serve's default autoscaling policy, written here from its documentation (not from its
/// code) for the comparison in bench/results/scaler.md. Read: docs.ray.io "Ray Serve
/// Autoscaling" and "Advanced Ray Serve Autoscaling" (serve/autoscaling-guide,
/// serve/advanced-guides/advanced-autoscaling, the `latest` docs as stored at the time of writing,
/// i.e. after Ray 2.32.0, which changed the defaults of target_ongoing_requests to 2 and of
/// max_ongoing_requests to 5) and the API page of ray.serve.config.AutoscalingConfig (defaults).
///
/// What the documentation says, and what is done here:
/// - The metric is the number of ongoing requests, "queued + running", recorded by replicas and
///   handles every `metrics_interval_s` (10 s) and pushed to the controller (every 10 s; here at
///   once, which favours Ray); the controller averages the total over `look_back_period_s` (30 s),
///   time-weighted, the samples being a right-continuous step function (aggregation "mean").
/// - The policy runs every 0.1 s (RAY_SERVE_CONTROL_LOOP_INTERVAL_S) and compares the ongoing
///   requests per replica with `target_ongoing_requests` (2). The desired count moves from the
///   current one by the change that ratio asks for, times `upscaling_factor` or
///   `downscaling_factor` (1; "like a gain"), rounded up: ceil(n x (1 + (ratio - 1) x factor)),
///   i.e. with the default gain ceil(total ongoing / target).
/// - It scales up only when the replicas have "consistently" wanted more for `upscale_delay_s`
///   (30 s), and down when they have wanted fewer for `downscale_delay_s` (600 s): a counter of
///   consecutive control-loop decisions in one direction, reset by a decision the other way or
///   none, acted on (to the then-desired count) when it covers the delay.
/// - Bounds: [min_replicas, max_replicas], given the same values as troupe's.
/// Not modelled: `max_ongoing_requests` (5 by default) in Ray's router, which would cap each
/// replica's batch at 5 requests; the simulated replicas batch as troupe's do, for every policy.

#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "bench/scaler_sim/simulator.hpp"

namespace troupe::scaler_sim {

struct ray_serve_config {
  uint32_t min_replicas = 1;
  uint32_t max_replicas = 1;
  double target_ongoing_requests = 2;
  double metrics_interval_s = 10;
  double look_back_period_s = 30;
  double upscaling_factor = 1;
  double downscaling_factor = 1;
  double upscale_delay_s = 30;
  double downscale_delay_s = 600;
  double control_loop_interval_s = 0.1;
};

class ray_serve_autoscaler final : public autoscaler {
 public:
  ray_serve_autoscaler(ray_serve_config c, std::string name = "ray_serve")
      : c_(c), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  double tick_s() const override { return c_.control_loop_interval_s; }
  uint32_t tick(const cluster_view& v) override;

 private:
  /// Time-weighted mean of the recorded totals over the look-back window.
  double windowed_total(double now) const;

  ray_serve_config c_;
  std::string name_;
  std::deque<std::pair<double, double>> samples_;  // (time, total ongoing), ascending
  double next_record_s_ = -1e300;
  int decision_counter_ = 0;  // > 0: consecutive upscale decisions, < 0: downscale
};

}  // namespace troupe::scaler_sim
