// Prints the Prometheus text exposition of the node's metrics (serving/metrics.cpp), as a serving
// node with one model version and one worker exports them, for the checks of the shipped
// Prometheus rules and Grafana dashboard (tests/deploy/metrics_catalog.py): the metric names and
// labels those reference must be ones troupe really exports. The NVML families exist only on a
// GPU machine; their TYPE lines are printed from the constants the collector uses.
#include <prometheus/collectable.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <iostream>

#include "serving/metrics.hpp"

int main() {
  using namespace troupe;
  serving::serving_metrics metrics;
  auto v = metrics.for_version("example", 1);
  v->set_ready(true);
  v->record_request(error_code::ok, 0.002);
  v->observe_queue(0.0005);
  v->observe_compute(0.001, 1);
  v->observe_batch(4);
  v->set_queue_length(0);
  metrics.unrouted().count(error_code::not_found);
  metrics.set_inflight(serving::serving_metrics::door::zeromq, 0);
  metrics.set_worker_memory(0, "cpu", 1 << 20, 1 << 16);
  metrics.set_worker_restart_backoff(0, 0);
  v->set_replicas(1);
  metrics.count_scaler_decision("example", "hold", "steady");
  metrics.set_scaler_desired_replicas("example", 1, 1);
  metrics.set_scaler_desired_nodes(1);
  metrics.count_fault_fired("delay", "frontend_router");  // only on fault_injection nodes
  metrics.set_worker_residency(0, "cpu", 1 << 20, 4 << 20);
  v->count_weight_eviction();
  v->observe_weight_page_in(0.003);
  std::cout << prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
  if (!metrics.gpu_collector()) {
    // No NVML here: the families the collector exports where it loads, with its label, as a
    // GPU 0 at rest would show them.
    for (std::string_view name : {serving::gpu_utilization_family, serving::gpu_memory_family})
      std::cout << "# TYPE " << name << " gauge\n"
                << name << "{" << serving::gpu_label << "=\"0\"} 0\n";
  } else {
    std::cout << prometheus::TextSerializer().Serialize(metrics.gpu_collector()->Collect());
  }
  return 0;
}
