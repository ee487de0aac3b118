#pragma once
/// bench/results/scaler.json and scaler.md from the simulator's runs.

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/scaler_sim/ray_serve_policy.hpp"
#include "bench/scaler_sim/simulator.hpp"
#include "serving/scaling_policy.hpp"

namespace troupe::scaler_sim {

struct report_row {
  std::string trace;
  std::string policy;
  uint64_t seed = 1;
  sim_result result;
};

struct report_context {
  uint64_t seed = 1;
  uint32_t seeds = 1;  // seeds run for the robustness table (seed .. seed + seeds - 1)
  bool short_run = false;
  std::string machine, date;
  sim_params params;
  serving::scaling_config troupe;
  serving::scaling_tuning tuning;
  ray_serve_config ray;
  double ray_tuned_target = 0;
  double capacity_rps = 0;
  std::vector<trace> traces;
};

/// {"rows": [{"trace", "policy", "slo_attainment", "replica_seconds", "scale_actions", "flaps"}]
///  for the first seed, "other_seeds": the same with a "seed" (troupe and ray_serve), and how it
///  was run}.
nlohmann::ordered_json report_json(const std::vector<report_row>& rows,
                                   const std::vector<report_row>& other_seeds,
                                   const report_context& c);
/// The table, each trace's targets met or missed, the other seeds, the method. `extra`:
/// supplementary rows (Ray with a tuned target), shown apart.
std::string report_markdown(const std::vector<report_row>& rows,
                            const std::vector<report_row>& extra,
                            const std::vector<report_row>& other_seeds, const report_context& c);

}  // namespace troupe::scaler_sim
