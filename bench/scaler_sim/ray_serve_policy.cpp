#include "bench/scaler_sim/ray_serve_policy.hpp"

#include <algorithm>
#include <cmath>

namespace troupe::scaler_sim {

double ray_serve_autoscaler::windowed_total(double now) const {
  const double from = now - c_.look_back_period_s;
  double area = 0, covered = 0;
  for (size_t i = 0; i < samples_.size(); ++i) {
    const double start = std::max(samples_[i].first, from);
    const double end = i + 1 < samples_.size() ? samples_[i + 1].first : now;
    if (end > start) area += (end - start) * samples_[i].second, covered += end - start;
  }
  return covered > 0 ? area / covered : samples_.back().second;
}

uint32_t ray_serve_autoscaler::tick(const cluster_view& v) {
  const uint32_t current = v.target;
  if (v.now_s >= next_record_s_) {
    samples_.push_back({v.now_s, static_cast<double>(v.queued + v.in_service)});
    next_record_s_ = (next_record_s_ < -1e299 ? v.now_s : next_record_s_) + c_.metrics_interval_s;
    while (samples_.size() > 1 && samples_[1].first <= v.now_s - c_.look_back_period_s)
      samples_.pop_front();
  }
  if (samples_.empty() || current == 0) return std::max(current, c_.min_replicas);

  const double total = windowed_total(v.now_s);
  const double ratio = total / (c_.target_ongoing_requests * current);
  const double gain = ratio > 1 ? c_.upscaling_factor : c_.downscaling_factor;
  const double raw = std::ceil(current * (1 + (ratio - 1) * gain) - 1e-9);
  const uint32_t desired = static_cast<uint32_t>(
      std::clamp(raw, static_cast<double>(c_.min_replicas), static_cast<double>(c_.max_replicas)));

  if (desired > current) {
    decision_counter_ = std::max(decision_counter_, 0) + 1;
    if (decision_counter_ * c_.control_loop_interval_s >= c_.upscale_delay_s - 1e-9) {
      decision_counter_ = 0;
      return desired;
    }
  } else if (desired < current) {
    decision_counter_ = std::min(decision_counter_, 0) - 1;
    if (-decision_counter_ * c_.control_loop_interval_s >= c_.downscale_delay_s - 1e-9) {
      decision_counter_ = 0;
      return desired;
    }
  } else {
    decision_counter_ = 0;
  }
  return current;
}

}  // namespace troupe::scaler_sim
