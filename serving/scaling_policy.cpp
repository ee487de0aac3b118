#include "serving/scaling_policy.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace troupe::serving {
namespace {

constexpr uint32_t max_replicas_limit = 1024;
constexpr int64_t max_delay_ms = int64_t{86'400} * 1000;

/// Replicas for `rps` at `per_replica_rps` each, rounded up (a hair of tolerance so that an exact
/// multiple does not round up to one more through floating-point error).
uint32_t replicas_for(double rps, double per_replica_rps) {
  if (!(rps > 0) || !(per_replica_rps > 0)) return 0;
  const double n = std::ceil(rps / per_replica_rps - 1e-9);
  return n >= max_replicas_limit ? max_replicas_limit : static_cast<uint32_t>(std::max(n, 0.0));
}

}  // namespace

status check_scaling_config(const scaling_config& c) {
  if (c.max_replicas < 1 || c.max_replicas > max_replicas_limit)
    return invalid_argument("scaling.max_replicas: " + std::to_string(c.max_replicas) +
                            " is outside [1, " + std::to_string(max_replicas_limit) + "]");
  if (c.min_replicas > c.max_replicas)
    return invalid_argument("scaling.min_replicas: " + std::to_string(c.min_replicas) +
                            " exceeds max_replicas " + std::to_string(c.max_replicas));
  if (!(c.slo_p99_ms > 0) || c.slo_p99_ms > 3'600'000)
    return invalid_argument(
        "scaling.slo_p99_ms: above 0 and at most 3600000 (or set dynamic_batching.adaptive."
        "slo_p99_ms), got " +
        std::to_string(c.slo_p99_ms));
  const auto check_delay = [](std::chrono::milliseconds d, const char* key) -> status {
    if (d.count() < 0 || d.count() > max_delay_ms)
      return invalid_argument(std::string("scaling.") + key + ": 0 to 86400 seconds");
    return status::ok();
  };
  TROUPE_RETURN_IF_ERROR(check_delay(c.upscale_delay, "upscale_delay_s"));
  TROUPE_RETURN_IF_ERROR(check_delay(c.downscale_delay, "downscale_delay_s"));
  TROUPE_RETURN_IF_ERROR(check_delay(c.scale_to_zero_after, "scale_to_zero_after_s"));
  if (c.min_replicas == 0 && c.scale_to_zero_after.count() == 0)
    return invalid_argument("scaling.min_replicas: 0 needs scale_to_zero_after_s > 0");
  if (c.min_replicas > 0 && c.scale_to_zero_after.count() > 0)
    return invalid_argument("scaling.scale_to_zero_after_s: needs min_replicas: 0");
  return status::ok();
}

double replica_capacity_rps(std::span<const batch_service_time> profile, double slo_p99_ms,
                            double slo_latency_share) {
  double best = 0;
  bool any_fits = false;
  for (const batch_service_time& p : profile) {
    if (p.rows <= 0 || !(p.service_ms > 0)) continue;
    const double rps = static_cast<double>(p.rows) * 1000.0 / p.service_ms;
    if (2 * p.service_ms <= slo_latency_share * slo_p99_ms) {
      any_fits = true;
      best = std::max(best, rps);
    }
  }
  if (any_fits) return best;
  for (const batch_service_time& p : profile)  // none fits: the smallest batch, the least bad
    if (p.rows > 0 && p.service_ms > 0) return static_cast<double>(p.rows) * 1000.0 / p.service_ms;
  return 0;
}

std::string_view scaling_action_name(scaling_action a) {
  switch (a) {
    case scaling_action::hold:
      return "hold";
    case scaling_action::up:
      return "up";
    case scaling_action::down:
      return "down";
    case scaling_action::to_zero:
      return "to_zero";
    case scaling_action::from_zero:
      return "from_zero";
  }
  return "?";
}

std::string_view scaling_reason_name(scaling_reason r) {
  switch (r) {
    case scaling_reason::steady:
      return "steady";
    case scaling_reason::capacity:
      return "capacity";
    case scaling_reason::queue:
      return "queue";
    case scaling_reason::slo:
      return "slo";
    case scaling_reason::upscale_delay:
      return "upscale_delay";
    case scaling_reason::low_load:
      return "low_load";
    case scaling_reason::cooldown:
      return "cooldown";
    case scaling_reason::rising_load:
      return "rising_load";
    case scaling_reason::memory:
      return "memory";
    case scaling_reason::gpu_saturated:
      return "gpu_saturated";
    case scaling_reason::pcie_saturated:
      return "pcie_saturated";
    case scaling_reason::bounds:
      return "bounds";
    case scaling_reason::idle:
      return "idle";
    case scaling_reason::arrival:
      return "arrival";
  }
  return "?";
}

scaling_policy::scaling_policy(scaling_config config, uint32_t initial_replicas,
                               scaling_tuning tuning)
    : config_(config), tuning_(tuning) {
  replicas_ = initial_replicas == 0 && config_.min_replicas == 0 ? 0 : clamp(initial_replicas);
}

uint32_t scaling_policy::clamp(uint32_t n) const {
  return std::clamp(n, std::max<uint32_t>(config_.min_replicas, 1), config_.max_replicas);
}

scaling_decision scaling_policy::finish(scaling_clock::time_point now, uint32_t to,
                                        scaling_action action, scaling_reason reason,
                                        double needed) {
  if (to > replicas_ && replicas_ > 0) {
    // A scale-up within the cooldown of a scale-down undoes it: a flap. The load comes back
    // sooner than the window said: widen it. It narrows again after a long quiet.
    if (last_down_ && now - *last_down_ < downscale_window()) {
      flap_backoff_ = std::min(flap_backoff_ * 2, tuning_.max_flap_backoff);
      last_flap_ = now;
    }
  }
  if (to > replicas_) last_up_ = now;
  if (to < replicas_ && to > 0) last_down_ = now;
  replicas_ = to;
  return {to, action, reason, needed};
}

bool scaling_policy::arrivals_rising(scaling_clock::time_point now) const {
  double n = 0, mean_t = 0, mean_r = 0;
  for (const sample& x : history_)
    if (x.at >= now - tuning_.trend_window) {
      n += 1;
      mean_t += std::chrono::duration<double>(x.at - now).count();
      mean_r += x.arrival_rps;
    }
  if (n < 3) return false;
  mean_t /= n, mean_r /= n;
  double stt = 0, str = 0;
  for (const sample& x : history_)
    if (x.at >= now - tuning_.trend_window) {
      const double t = std::chrono::duration<double>(x.at - now).count() - mean_t;
      stt += t * t, str += t * (x.arrival_rps - mean_r);
    }
  if (!(stt > 0)) return false;
  const double slope = str / stt;
  double residuals = 0;
  for (const sample& x : history_)
    if (x.at >= now - tuning_.trend_window) {
      const double t = std::chrono::duration<double>(x.at - now).count() - mean_t;
      const double e = x.arrival_rps - mean_r - slope * t;
      residuals += e * e;
    }
  const double standard_error = std::sqrt(residuals / (n - 2) / stt);
  return slope > 2 * standard_error;
}

scaling_decision scaling_policy::decide(scaling_clock::time_point now, const scaling_signals& s) {
  if (!started_) {
    started_ = true;
    last_active_ = now;
    last_up_ = now;  // the initial count gets the same cooldown as a scale-up
  }
  const bool active = s.arrival_rps > 0 || s.queued > 0;
  if (active) last_active_ = now;

  // The capacity of one replica: measured at the SLO, else what the ready replicas served per
  // busy second (arrivals stand for completions: over a window they differ by the queue's change).
  double capacity = s.replica_capacity_rps;
  if (!(capacity > 0) && s.ready_replicas > 0 && s.busy_fraction > 0.05)
    capacity = s.arrival_rps / (s.busy_fraction * s.ready_replicas);
  const double slo_s = config_.slo_p99_ms / 1000.0;

  // What the capacity model and the guards want, before delays, bounds and limits.
  const double needed =
      capacity > 0 ? s.arrival_rps / (capacity * tuning_.target_utilization) : 0.0;
  uint32_t want_up =
      capacity > 0 ? replicas_for(s.arrival_rps, capacity * tuning_.target_utilization) : replicas_;
  scaling_reason up_reason = scaling_reason::capacity;
  bool slo_at_risk = false;  // a backlog that grows: requests are missing the SLO now
  if (capacity > 0) {
    // The queue beyond what the ready replicas clear in half the SLO is a backlog, not noise.
    const double clear_in_half_slo = s.ready_replicas * capacity * slo_s / 2;
    const double backlog = static_cast<double>(s.queued) - clear_in_half_slo;
    if (backlog > 0) {
      const double drain_s = std::chrono::duration<double>(tuning_.backlog_drain).count();
      const uint32_t want_drain =
          replicas_for(s.arrival_rps + backlog / std::max(drain_s, 0.1), capacity);
      if (want_drain > want_up) want_up = want_drain, up_reason = scaling_reason::queue;
      slo_at_risk = last_queued_ && s.queued > *last_queued_;
      if (last_queued_ && now > last_queued_at_ && s.queued > *last_queued_ &&
          s.starting_replicas == 0) {
        // Growing with nothing on the way: the growth rate is the deficit.
        const double growth_rps = static_cast<double>(s.queued - *last_queued_) /
                                  std::chrono::duration<double>(now - last_queued_at_).count();
        const uint32_t want_growth = replicas_ + replicas_for(growth_rps, capacity);
        if (want_growth > want_up) want_up = want_growth, up_reason = scaling_reason::queue;
      }
    }
  }
  last_queued_ = s.queued;
  last_queued_at_ = now;
  if (s.p99_ms && *s.p99_ms > config_.slo_p99_ms && s.starting_replicas == 0 && replicas_ > 0 &&
      now - last_up_ >= tuning_.slo_guard_interval) {
    const double step = std::min(*s.p99_ms / config_.slo_p99_ms, tuning_.max_slo_step);
    const uint32_t want_slo =
        std::max(replicas_ + 1, static_cast<uint32_t>(std::ceil(replicas_ * step - 1e-9)));
    if (want_slo > want_up) want_up = want_slo, up_reason = scaling_reason::slo;
  }
  const uint32_t want_down = std::max(
      want_up, capacity > 0 ? replicas_for(s.arrival_rps, capacity * tuning_.target_utilization *
                                                              (1 - tuning_.downscale_band))
                            : replicas_);

  // Back from zero at the first arrival, with what the rate needs; no delay.
  if (replicas_ == 0) {
    if (!active) return {0, scaling_action::hold, scaling_reason::steady, needed};
    if (s.memory_headroom_bytes && s.replica_bytes > 0 &&
        *s.memory_headroom_bytes < s.replica_bytes)
      return {0, scaling_action::hold, scaling_reason::memory, needed};
    history_.clear();
    return finish(now, clamp(std::max<uint32_t>(want_up, 1)), scaling_action::from_zero,
                  scaling_reason::arrival, needed);
  }
  if (config_.min_replicas == 0 && config_.scale_to_zero_after.count() > 0 && !active &&
      now - last_active_ >= config_.scale_to_zero_after) {
    history_.clear();
    return finish(now, 0, scaling_action::to_zero, scaling_reason::idle, needed);
  }

  history_.push_back({now, want_up, want_down, s.arrival_rps});
  if (flap_backoff_ > 1 && now - last_flap_ >= 4 * downscale_window()) {
    flap_backoff_ /= 2;
    last_flap_ = now;
  }
  const auto longest = std::max(
      {config_.upscale_delay, config_.downscale_delay * static_cast<int>(tuning_.max_flap_backoff),
       tuning_.trend_window});
  // Keep one sample at or before now - longest: it covers the start of the window.
  while (history_.size() > 1 && history_[1].at <= now - longest) history_.pop_front();

  // The samples whose time covers [now - delay, now]: those after its start and the last one at
  // or before it. Empty when the history does not reach back that far.
  const auto window = [&](std::chrono::milliseconds delay) {
    const auto start = now - delay;
    auto first = history_.end();
    for (auto it = history_.begin(); it != history_.end(); ++it)
      if (it->at <= start) first = it;
    return std::make_pair(first, history_.end());
  };

  const uint32_t lo = clamp(0), hi = config_.max_replicas;
  if (replicas_ < lo) return finish(now, lo, scaling_action::up, scaling_reason::bounds, needed);
  if (replicas_ > hi) return finish(now, hi, scaling_action::down, scaling_reason::bounds, needed);

  // Up: what was wanted throughout the last upscale_delay; at once when the SLO is at risk.
  if (clamp(want_up) > replicas_) {
    uint32_t held = want_up;
    if (!slo_at_risk) {
      auto [first, last] = window(config_.upscale_delay);
      if (first == last)
        return {replicas_, scaling_action::hold, scaling_reason::upscale_delay, needed};
      for (auto it = first; it != last; ++it) held = std::min(held, it->want_up);
    }
    uint32_t to = clamp(held);
    if (to <= replicas_)
      return {replicas_, scaling_action::hold, scaling_reason::upscale_delay, needed};
    scaling_reason reason = up_reason;
    if (s.gpu_utilization && *s.gpu_utilization >= tuning_.gpu_saturated)
      return {replicas_, scaling_action::hold, scaling_reason::gpu_saturated, needed};
    if (s.pcie_utilization && *s.pcie_utilization >= tuning_.pcie_saturated)
      return {replicas_, scaling_action::hold, scaling_reason::pcie_saturated, needed};
    if (s.memory_headroom_bytes && s.replica_bytes > 0) {
      const uint64_t room = *s.memory_headroom_bytes / s.replica_bytes;
      if (to - replicas_ > room) {
        to = replicas_ + static_cast<uint32_t>(room);
        reason = scaling_reason::memory;
        if (to == replicas_) return {replicas_, scaling_action::hold, reason, needed};
      }
    }
    return finish(now, to, scaling_action::up, reason, needed);
  }

  // Down: to the peak of the last downscale_delay (widened after flaps), at the lower
  // utilisation; not in the cooldown.
  if (clamp(want_down) < replicas_) {
    auto [first, last] = window(downscale_window());
    if (now - last_up_ < downscale_window() || first == last)
      return {replicas_, scaling_action::hold, scaling_reason::cooldown, needed};
    uint32_t peak = want_down;
    for (auto it = first; it != last; ++it) peak = std::max(peak, it->want_down);
    const uint32_t to = clamp(peak);
    if (to < replicas_) {
      if (arrivals_rising(now))
        return {replicas_, scaling_action::hold, scaling_reason::rising_load, needed};
      return finish(now, to, scaling_action::down, scaling_reason::low_load, needed);
    }
  }
  return {replicas_, scaling_action::hold, scaling_reason::steady, needed};
}

}  // namespace troupe::serving
