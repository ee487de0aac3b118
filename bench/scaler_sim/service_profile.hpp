#pragma once
/// A modelled replica's service time per batch, from measurements of troupe itself.
///
/// Source: bench/results/serving-gpu.json (serving.md, "ResNet-50 on the GPU host"), measured
/// 2026-11-25 on an NVIDIA H100 80GB HBM3: ResNet-50 fp16, max_batch_size 128, queue delay 0,
/// one replica, uint8 images normalised on the device. Each point is one sweep row: the mean rows
/// per batch the node formed (`batch_rows_mean`) and the mean time a batch spent in the worker
/// (`server_compute_ms_mean`: staging into pinned memory, copies, the CUDA graph run). At 63.3
/// rows the replica was saturated (22,317 req/s measured = 63.3 / 2.846 ms). Points beyond 63 rows
/// (83 rows at 256 in flight) are left out: the simulated batcher stops at 64 rows, the size of
/// the model config in bench/results/lifecycle.md.
///
/// The transport around the node (client <-> frontend) adds `transport_ms` per request:
/// serving-gpu.json `batch1.overhead_us` (end-to-end p50 minus the executor's host time).

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "serving/scaling_policy.hpp"

namespace troupe::scaler_sim {

struct service_point {
  double rows;
  double ms;
};

inline constexpr service_point resnet50_h100_fp16[] = {
    {1.00, 0.369},  {2.63, 0.472},  {5.30, 0.611},  {7.95, 0.683},  {10.61, 0.808},
    {15.78, 0.935}, {20.79, 1.239}, {31.39, 1.533}, {41.41, 2.191}, {63.31, 2.846},
};
inline constexpr double resnet50_transport_ms = 0.180;
inline constexpr int64_t resnet50_max_batch = 64;

/// Service time of a batch of `rows`, interpolated linearly between the measured points (and
/// extrapolated along the last segment up to the max batch).
inline double service_ms(std::span<const service_point> table, double rows) {
  if (rows <= table.front().rows) return table.front().ms;
  for (size_t i = 1; i < table.size(); ++i)
    if (rows <= table[i].rows || i + 1 == table.size()) {
      const service_point a = table[i - 1], b = table[i];
      return a.ms + (b.ms - a.ms) * (rows - a.rows) / (b.rows - a.rows);
    }
  return table.back().ms;
}

/// The profile the batcher would hand the scaler: the service time at each integer batch size
/// the table covers, up to `max_batch`.
inline std::vector<serving::batch_service_time> measured_profile(
    std::span<const service_point> table, int64_t max_batch) {
  std::vector<serving::batch_service_time> out;
  for (int64_t rows : {1, 2, 4, 8, 16, 32, 48, 64})
    if (rows <= max_batch) out.push_back({rows, service_ms(table, static_cast<double>(rows))});
  return out;
}

}  // namespace troupe::scaler_sim
