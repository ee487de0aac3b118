#pragma once
/// The simulator's own autoscalers: troupe's (the real serving/scaling_policy, fed what the scaler
/// actor will measure) and static provisioning. Ray Serve's is in ray_serve_policy.hpp.

#include <string>
#include <vector>

#include "bench/scaler_sim/simulator.hpp"
#include "serving/scaling_policy.hpp"

namespace troupe::scaler_sim {

/// Ticks every second, as the scaler actor will: the window's arrival rate, the queue, the p99 of
/// the window, the busy fraction, ready and starting replicas, and the capacity of the measured
/// profile at the SLO. No memory, GPU or PCIe signals: each simulated replica has its own GPU.
class troupe_autoscaler final : public autoscaler {
 public:
  troupe_autoscaler(serving::scaling_config config, uint32_t initial,
                    std::vector<serving::batch_service_time> profile,
                    serving::scaling_tuning tuning = {});
  std::string name() const override { return "troupe"; }
  double tick_s() const override { return 1.0; }
  uint32_t tick(const cluster_view& v) override;
  double capacity_rps() const { return capacity_rps_; }

 private:
  serving::scaling_policy policy_;
  double capacity_rps_;
};

class static_autoscaler final : public autoscaler {
 public:
  static_autoscaler(std::string name, uint32_t replicas) : name_(std::move(name)), n_(replicas) {}
  std::string name() const override { return name_; }
  double tick_s() const override { return 0; }
  uint32_t tick(const cluster_view&) override { return n_; }

 private:
  std::string name_;
  uint32_t n_;
};

}  // namespace troupe::scaler_sim
