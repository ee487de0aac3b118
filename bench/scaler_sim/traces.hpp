#pragma once
/// The arrival traces: a request rate over time (requests arrive as a Poisson process at that
/// rate; the simulator draws them). The simulator runs a warm-up before 0 that no figure counts,
/// so that every policy starts where the trace's own regime takes it: the step and the spike at
/// their initial rate, the sine and the MMPP continuing backwards.

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::scaler_sim {

struct trace {
  std::string name;
  std::string description;  // one line, for the report
  double duration_s = 0;
  /// Piecewise-constant segments {start_s, rps} (the step, spike and MMPP traces), or empty and
  /// `sine_*` set (the diurnal trace).
  std::vector<std::pair<double, double>> steps;
  double sine_mean_rps = 0, sine_amplitude = 0, sine_period_s = 0;

  double rate(double t_s) const;  // requests per second at t (t < 0: the warm-up)
  double mean_rps() const;        // over [0, duration)
  double peak_rps() const;
};

/// `scale` multiplies every rate and `duration_scale` every time (the short ctest run); the MMPP
/// draws its states from `seed`.
std::vector<trace> standard_traces(uint64_t seed, double scale = 1, double duration_scale = 1);

}  // namespace troupe::scaler_sim
