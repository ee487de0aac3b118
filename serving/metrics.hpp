#pragma once
/// The node's Prometheus metrics (prometheus-cpp). One registry per node; the HTTP exposer lives in
/// cluster/ (it is a socket). Metric objects are created when a model version is loaded and held
/// by pointer, so recording on the request path is an atomic add or a short histogram update, never
/// a label lookup. prometheus-cpp's metric objects are thread-safe; every actor and the frontend
/// thread record directly.
///
/// Names: troupe_requests_total{model,version,outcome}, troupe_unrouted_requests_total{outcome}
/// (refused before a version was chosen), troupe_request_latency_seconds,
/// troupe_queue_latency_seconds, troupe_compute_latency_seconds (histograms by model,version),
/// troupe_batch_size (histogram of rows per batch), troupe_queue_length, troupe_model_ready,
/// troupe_shape_cache_evictions_total{model,version} (plans evicted from the replicas'
/// compiled-shape caches),
/// troupe_weight_evictions_total{model,version} and troupe_weight_page_ins_total{model,version}
/// (a worker's memory budget moving the version's weights to host memory and back: docs/
/// serving.md, Memory budget), troupe_weight_page_in_seconds{model,version} (the time a page-in
/// added to the batch that needed it), troupe_worker_resident_bytes{worker,device} and
/// troupe_worker_memory_budget_bytes{worker,device} (what the budget counts, and the budget),
/// troupe_inflight_requests, troupe_pool_bytes{worker,device} (the replicas' device memory pools:
/// weights and plan arenas), troupe_staging_bytes{worker,device} (host staging and output blocks,
/// pinned on a GPU), troupe_worker_restarts_total, troupe_worker_restart_backoff_seconds{worker}
/// (the supervisor's delay before the pending or last restart of a worker; 0 once it has stayed
/// up long enough to reset its backoff: a value that keeps growing is a crash loop),
/// troupe_replicas{model,version} (replicas serving the version now, scaled or not), the
/// scaler's troupe_scaler_decisions_total{model,action,reason},
/// troupe_scaler_desired_replicas{model,version} and troupe_scaler_desired_nodes (the worker
/// nodes this node's load needs, unrounded: summed over the nodes, what Kubernetes' HPA or KEDA
/// scales on), and, where
/// troupe_faults_fired_total{kind,site} (injected faults, fault_injection nodes only), and, where
/// NVML can be loaded,
/// troupe_gpu_utilization_ratio{gpu} and troupe_gpu_memory_used_bytes{gpu} (gpu: NVML's index).

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
class Collectable;
}  // namespace prometheus

namespace troupe::serving {

inline constexpr size_t error_code_count = 13;  // error_code::ok .. device_error

/// The families the NVML collector exports (only where NVML loads: a GPU machine).
inline constexpr std::string_view gpu_utilization_family = "troupe_gpu_utilization_ratio";
inline constexpr std::string_view gpu_memory_family = "troupe_gpu_memory_used_bytes";
inline constexpr std::string_view gpu_pcie_family = "troupe_gpu_pcie_bytes_per_second";
inline constexpr std::string_view gpu_label = "gpu";  // NVML's device index

/// Exact sums per model version in Triton's statistics shape (KServe's model statistics
/// extension: GET /v2/models/{m}/stats, gRPC ModelStatistics; perf_analyzer reads them), kept
/// beside the histograms, whose sums are rounded into buckets. Counts are requests unless said
/// otherwise; times are nanoseconds.
struct version_statistics {
  std::atomic<uint64_t> success_count{0}, success_ns{0};  // answered OK: arrival to reply
  std::atomic<uint64_t> fail_count{0}, fail_ns{0};        // answered with an error
  std::atomic<uint64_t> queue_count{0}, queue_ns{0};      // arrival to leaving in a batch
  /// The run of the batch a request was in, counted once per request (Triton's compute_infer).
  std::atomic<uint64_t> compute_count{0}, compute_ns{0};
  std::atomic<uint64_t> execution_count{0};    // batches run
  std::atomic<uint64_t> inference_count{0};    // rows run (a request of 4 rows counts 4)
  std::atomic<uint64_t> last_inference_ms{0};  // wall clock (ms since the epoch) of the last reply
};

struct version_metrics {
  std::array<prometheus::Counter*, error_code_count> requests{};  // by outcome (error code)
  prometheus::Histogram* request_latency_s = nullptr;
  prometheus::Histogram* queue_latency_s = nullptr;
  prometheus::Histogram* compute_latency_s = nullptr;
  prometheus::Histogram* batch_rows = nullptr;
  prometheus::Gauge* queue_length = nullptr;
  prometheus::Gauge* ready = nullptr;
  prometheus::Counter* shape_cache_evictions = nullptr;
  prometheus::Counter* rollbacks = nullptr;
  prometheus::Gauge* replicas = nullptr;
  prometheus::Counter* watchdog_kills = nullptr;
  prometheus::Counter* weight_evictions = nullptr;
  prometheus::Counter* weight_page_ins = nullptr;
  prometheus::Histogram* weight_page_in_s = nullptr;
  mutable version_statistics stats;

  /// One reply: its outcome and its time from arrival (the counter, the histogram, the statistics).
  void record_request(error_code outcome, double seconds) const;
  /// A refusal that never entered the path (e.g. cancelled at shutdown): the counter alone.
  void count(error_code outcome) const;
  void observe_queue(double seconds) const;
  /// One batch's run, shared by `requests` requests.
  void observe_compute(double seconds, size_t requests) const;
  void observe_batch(int64_t rows) const;
  void set_queue_length(double n) const;
  void set_ready(bool r) const;
  /// Plans a replica's compiled-shape cache evicted (runtime/plan_cache.hpp).
  void count_shape_cache_evictions(uint64_t n) const;
  /// An automatic rollback took this version's traffic (model_manager).
  void count_rollback() const;
  /// Replicas attached to the version's batcher (model_manager).
  void set_replicas(double n) const;
  /// The batcher's watchdog killed a worker over a batch of this version (actors/batcher.hpp).
  void count_watchdog_kill() const;
  /// A worker evicted this version's weights to host memory (serving/weight_residency.hpp).
  void count_weight_eviction() const;
  /// A worker paged this version's weights back in, taking `seconds`.
  void observe_weight_page_in(double seconds) const;
};

class serving_metrics {
 public:
  serving_metrics();
  ~serving_metrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  /// Metric objects of one model version (created once, then shared).
  std::shared_ptr<version_metrics> for_version(const std::string& model, int64_t version);
  /// Requests refused before a version was chosen: unknown model, undecodable envelope. Only
  /// count() records (troupe_unrouted_requests_total{outcome}); there is no model label to
  /// give the other series, so the observe/set calls do nothing.
  const version_metrics& unrouted() const { return *unrouted_; }

  /// Requests held now by one front door: the ZeroMQ frontend's, or the KServe doors' gateway.
  /// troupe_inflight_requests is their sum.
  enum class door : uint8_t { zeromq = 0, kserve = 1 };
  void set_inflight(door d, uint32_t n);
  /// A worker's memory now: its replicas' device pools and their host staging + output blocks.
  /// `device` is the worker's device label ("cpu", "cuda:0").
  void set_worker_memory(uint32_t worker, const std::string& device, double device_pool_bytes,
                         double staging_bytes);
  /// A worker with a memory budget: the bytes it counts against the budget now (its replicas'
  /// own device memory and their resident weights) and the budget.
  void set_worker_residency(uint32_t worker, const std::string& device, double resident_bytes,
                            double budget_bytes);
  /// A GPU worker with a memory budget: the most a new replica could get there, once every idle
  /// version's weights and arenas are evicted (its budget less the bytes no eviction frees).
  void set_worker_budget_room(uint32_t worker, uint64_t bytes);
  /// The largest of those over the GPU workers with a budget; none without one (the scaler's
  /// memory headroom is then NVML's alone).
  std::optional<uint64_t> budget_room() const;
  void count_worker_restart();
  /// The restart backoff of worker `worker` (actors/supervisor.hpp), in seconds.
  void set_worker_restart_backoff(uint32_t worker, double seconds);
  /// An injected fault fired (serving/fault_plan.hpp): `kind` its fault_kind name, `site` where
  /// ("worker:0", "frontend_router"). Sites are few (a node's workers and hops), so are series.
  void count_fault_fired(std::string_view kind, std::string_view site);
  /// A collector for NVML figures, or null when NVML cannot be loaded (no GPU metrics then).
  std::shared_ptr<prometheus::Collectable> gpu_collector() const { return gpu_; }

  // The scaler's (actors/scaler.hpp).
  /// One decision of the scaling policy for a version of `model` (actions and reasons:
  /// scaling_action_name, scaling_reason_name).
  void count_scaler_decision(const std::string& model, std::string_view action,
                             std::string_view reason);
  void set_scaler_desired_replicas(const std::string& model, int64_t version, double n);
  void set_scaler_desired_nodes(double n);

  /// One GPU as NVML reports it now (NVML's index: PCI order, not CUDA's).
  struct gpu_reading {
    uint32_t index = 0;
    double utilization = 0;  // 0..1 over NVML's sample period
    uint64_t free_bytes = 0;
    uint64_t total_bytes = 0;
    /// The busier direction of its PCIe link over NVML's sample period (about 20 ms), as a share
    /// of the link's bandwidth at its current generation and width; none where NVML does not say.
    std::optional<double> pcie_utilization;
  };
  /// Every GPU NVML sees; empty without NVML.
  std::vector<gpu_reading> gpu_readings() const;

  struct families;  // the metric families, registered once per registry

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<families> families_;
  mutable std::mutex mutex_;  // guards creation of labelled metrics and budget_room_
  std::map<uint32_t, uint64_t> budget_room_;  // by worker
  std::shared_ptr<version_metrics> unrouted_;
  prometheus::Gauge* inflight_ = nullptr;
  std::array<std::atomic<uint32_t>, 2> inflight_by_door_{};
  prometheus::Counter* restarts_ = nullptr;
  prometheus::Gauge* desired_nodes_ = nullptr;
  std::shared_ptr<prometheus::Collectable> gpu_;
};

/// Loads NVML with dlopen; null when there is no NVML (no driver): never fakes figures.
std::shared_ptr<prometheus::Collectable> make_nvml_collector();

}  // namespace troupe::serving
