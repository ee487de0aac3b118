#include "bench/scaler_sim/traces.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "bench/scaler_sim/random.hpp"

namespace troupe::scaler_sim {

double trace::rate(double t_s) const {
  if (steps.empty())
    return sine_mean_rps *
           (1 - sine_amplitude * std::cos(2 * std::numbers::pi * t_s / sine_period_s));
  double r = steps.front().second;
  for (const auto& [start, rps] : steps) {
    if (start > t_s) break;
    r = rps;
  }
  return r;
}

double trace::mean_rps() const {
  if (steps.empty()) {
    // Whole periods average to the mean; a part period is integrated.
    const double w = 2 * std::numbers::pi / sine_period_s;
    return sine_mean_rps * (1 - sine_amplitude * std::sin(w * duration_s) / (w * duration_s));
  }
  double sum = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const double start = std::max(steps[i].first, 0.0);
    const double end = i + 1 < steps.size() ? std::min(steps[i + 1].first, duration_s) : duration_s;
    if (end > start) sum += (end - start) * steps[i].second;
  }
  return sum / duration_s;
}

double trace::peak_rps() const {
  if (steps.empty()) return sine_mean_rps * (1 + sine_amplitude);
  double peak = 0;
  for (size_t i = 0; i < steps.size(); ++i)
    if (steps[i].first < duration_s && (i + 1 == steps.size() || steps[i + 1].first > 0))
      peak = std::max(peak, steps[i].second);
  return peak;
}

std::vector<trace> standard_traces(uint64_t seed, double scale, double duration_scale) {
  const double k = duration_scale;
  std::vector<trace> out;

  trace step;
  step.name = "step";
  step.description = "6k req/s, a step to 180k (10% -> 300% of 60k) at 600 s, back to 6k at 2400 s";
  step.duration_s = 3600 * k;
  step.steps = {{0, 6'000 * scale}, {600 * k, 180'000 * scale}, {2400 * k, 6'000 * scale}};
  out.push_back(step);

  trace diurnal;
  diurnal.name = "diurnal";
  diurnal.description =
      "sine of mean 90k req/s, +-80% (18k to 162k), period 3600 s (a day in an hour), two periods";
  diurnal.duration_s = 7200 * k;
  diurnal.sine_mean_rps = 90'000 * scale;
  diurnal.sine_amplitude = 0.8;
  diurnal.sine_period_s = 3600 * k;
  out.push_back(diurnal);

  // A two-state Markov-modulated Poisson process: exponential sojourns, 40k req/s for 120 s on
  // average, 160k for 30 s.
  trace mmpp;
  mmpp.name = "mmpp";
  mmpp.description =
      "bursty: 2-state MMPP, 40k req/s (mean sojourn 120 s) and 160k (mean sojourn 30 s)";
  mmpp.duration_s = 3600 * k;
  // It runs from an hour before 0, so that the warm-up sees the same process.
  rng r(seed ^ 0x6d6d7070ull);
  bool high = false;
  for (double t = -3600 * k; t < mmpp.duration_s;) {
    mmpp.steps.push_back({t, (high ? 160'000 : 40'000) * scale});
    t += r.exponential((high ? 30 : 120) * k);
    high = !high;
  }
  out.push_back(mmpp);

  trace spike;
  spike.name = "spike";
  spike.description = "40k req/s with a 60 s spike to 200k (5x) at 900 s";
  spike.duration_s = 1800 * k;
  spike.steps = {{0, 40'000 * scale}, {900 * k, 200'000 * scale}, {960 * k, 40'000 * scale}};
  out.push_back(spike);
  return out;
}

}  // namespace troupe::scaler_sim
