#include "serving/metrics.hpp"

#include <dlfcn.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <chrono>
#include <vector>

namespace troupe::serving {
namespace {

// Latency buckets in seconds: 50 us .. 10 s, roughly x2.5 apart.
const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  return b;
}

const prometheus::Histogram::BucketBoundaries& rows_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {1,  2,   4,   8,   16,  32,
                                                            64, 128, 256, 512, 1024};
  return b;
}

}  // namespace

struct serving_metrics::families {
  prometheus::Family<prometheus::Counter>* requests;
  prometheus::Family<prometheus::Counter>* unrouted_requests;
  prometheus::Family<prometheus::Histogram>* request_latency;
  prometheus::Family<prometheus::Histogram>* queue_latency;
  prometheus::Family<prometheus::Histogram>* compute_latency;
  prometheus::Family<prometheus::Histogram>* batch_rows;
  prometheus::Family<prometheus::Gauge>* queue_length;
  prometheus::Family<prometheus::Gauge>* ready;
  prometheus::Family<prometheus::Counter>* shape_cache_evictions;
  prometheus::Family<prometheus::Counter>* rollbacks;
  prometheus::Family<prometheus::Counter>* watchdog_kills;
  prometheus::Family<prometheus::Counter>* weight_evictions;
  prometheus::Family<prometheus::Counter>* weight_page_ins;
  prometheus::Family<prometheus::Histogram>* weight_page_in;
  prometheus::Family<prometheus::Gauge>* resident_bytes;
  prometheus::Family<prometheus::Gauge>* memory_budget_bytes;
  prometheus::Family<prometheus::Gauge>* pool_bytes;
  prometheus::Family<prometheus::Gauge>* restart_backoff;
  prometheus::Family<prometheus::Gauge>* staging_bytes;
  prometheus::Family<prometheus::Gauge>* replicas;
  prometheus::Family<prometheus::Counter>* scaler_decisions;
  prometheus::Family<prometheus::Gauge>* scaler_desired_replicas;
  prometheus::Family<prometheus::Counter>* faults_fired;
};

namespace {

std::shared_ptr<version_metrics> make_version_metrics(const serving_metrics::families& f,
                                                      const std::string& model,
                                                      const std::string& version) {
  auto m = std::make_shared<version_metrics>();
  for (size_t c = 0; c < error_code_count; ++c) {
    const auto code = static_cast<error_code>(c);
    m->requests[c] = &f.requests->Add(
        {{"model", model}, {"version", version}, {"outcome", std::string(to_string(code))}});
  }
  const prometheus::Labels labels{{"model", model}, {"version", version}};
  m->request_latency_s = &f.request_latency->Add(labels, latency_buckets());
  m->queue_latency_s = &f.queue_latency->Add(labels, latency_buckets());
  m->compute_latency_s = &f.compute_latency->Add(labels, latency_buckets());
  m->batch_rows = &f.batch_rows->Add(labels, rows_buckets());
  m->queue_length = &f.queue_length->Add(labels);
  m->ready = &f.ready->Add(labels);
  m->shape_cache_evictions = &f.shape_cache_evictions->Add(labels);
  m->rollbacks = &f.rollbacks->Add(labels);
  m->replicas = &f.replicas->Add(labels);
  m->watchdog_kills = &f.watchdog_kills->Add(labels);
  m->weight_evictions = &f.weight_evictions->Add(labels);
  m->weight_page_ins = &f.weight_page_ins->Add(labels);
  m->weight_page_in_s = &f.weight_page_in->Add(labels, latency_buckets());
  return m;
}

}  // namespace

void version_metrics::count(error_code outcome) const {
  const auto i = static_cast<size_t>(outcome);
  if (i < requests.size() && requests[i]) requests[i]->Increment();
}
namespace {
uint64_t to_ns(double seconds) {
  return seconds > 0 ? static_cast<uint64_t>(seconds * 1e9) : 0;
}
}  // namespace

void version_metrics::record_request(error_code outcome, double s) const {
  count(outcome);
  if (request_latency_s) request_latency_s->Observe(s);
  constexpr auto relaxed = std::memory_order_relaxed;
  if (outcome == error_code::ok) {
    stats.success_count.fetch_add(1, relaxed);
    stats.success_ns.fetch_add(to_ns(s), relaxed);
  } else {
    stats.fail_count.fetch_add(1, relaxed);
    stats.fail_ns.fetch_add(to_ns(s), relaxed);
  }
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  stats.last_inference_ms.store(static_cast<uint64_t>(now.count()), relaxed);
}
void version_metrics::observe_queue(double s) const {
  if (queue_latency_s) queue_latency_s->Observe(s);
  stats.queue_count.fetch_add(1, std::memory_order_relaxed);
  stats.queue_ns.fetch_add(to_ns(s), std::memory_order_relaxed);
}
void version_metrics::observe_compute(double s, size_t requests) const {
  if (compute_latency_s) compute_latency_s->Observe(s);
  stats.compute_count.fetch_add(requests, std::memory_order_relaxed);
  stats.compute_ns.fetch_add(to_ns(s) * requests, std::memory_order_relaxed);
}
void version_metrics::observe_batch(int64_t rows) const {
  if (batch_rows) batch_rows->Observe(static_cast<double>(rows));
  stats.execution_count.fetch_add(1, std::memory_order_relaxed);
  stats.inference_count.fetch_add(static_cast<uint64_t>(rows), std::memory_order_relaxed);
}
void version_metrics::set_queue_length(double n) const {
  if (queue_length) queue_length->Set(n);
}
void version_metrics::set_ready(bool r) const {
  if (ready) ready->Set(r ? 1 : 0);
}
void version_metrics::count_shape_cache_evictions(uint64_t n) const {
  if (shape_cache_evictions) shape_cache_evictions->Increment(static_cast<double>(n));
}
void version_metrics::count_rollback() const {
  if (rollbacks) rollbacks->Increment();
}
void version_metrics::set_replicas(double n) const {
  if (replicas) replicas->Set(n);
}
void version_metrics::count_watchdog_kill() const {
  if (watchdog_kills) watchdog_kills->Increment();
}
void version_metrics::count_weight_eviction() const {
  if (weight_evictions) weight_evictions->Increment();
}
void version_metrics::observe_weight_page_in(double seconds) const {
  if (weight_page_ins) weight_page_ins->Increment();
  if (weight_page_in_s) weight_page_in_s->Observe(seconds);
}

serving_metrics::serving_metrics()
    : registry_(std::make_shared<prometheus::Registry>()), families_(std::make_unique<families>()) {
  families& f = *families_;
  auto& r = *registry_;
  f.requests =
      &prometheus::BuildCounter()
           .Name("troupe_requests_total")
           .Help("Inference requests answered, by model, version and outcome (error code or ok)")
           .Register(r);
  f.unrouted_requests =
      &prometheus::BuildCounter()
           .Name("troupe_unrouted_requests_total")
           .Help(
               "Requests answered before a model version was chosen (unknown model, undecodable "
               "envelope), by outcome")
           .Register(r);
  f.request_latency = &prometheus::BuildHistogram()
                           .Name("troupe_request_latency_seconds")
                           .Help("Arrival at the node to reply, seconds")
                           .Register(r);
  f.queue_latency = &prometheus::BuildHistogram()
                         .Name("troupe_queue_latency_seconds")
                         .Help("Arrival at the node to the batch leaving for a worker, seconds")
                         .Register(r);
  f.compute_latency = &prometheus::BuildHistogram()
                           .Name("troupe_compute_latency_seconds")
                           .Help("A batch's staging, run and output split on its worker, seconds")
                           .Register(r);
  f.batch_rows = &prometheus::BuildHistogram()
                      .Name("troupe_batch_size")
                      .Help("Rows per batch sent to a worker")
                      .Register(r);
  f.queue_length = &prometheus::BuildGauge()
                        .Name("troupe_queue_length")
                        .Help("Requests queued in the model version's batcher")
                        .Register(r);
  f.ready = &prometheus::BuildGauge()
                 .Name("troupe_model_ready")
                 .Help("1 when the model version has a healthy replica, else 0")
                 .Register(r);
  f.shape_cache_evictions =
      &prometheus::BuildCounter()
           .Name("troupe_shape_cache_evictions_total")
           .Help(
               "Compiled plans evicted from the model version's shape caches (least recently "
               "used first, when a new input shape needs room)")
           .Register(r);
  f.rollbacks = &prometheus::BuildCounter()
                     .Name("troupe_rollbacks_total")
                     .Help("Times the model version, a canary, lost its traffic to an automatic "
                           "rollback (config.yaml rollback:)")
                     .Register(r);
  f.watchdog_kills =
      &prometheus::BuildCounter()
           .Name("troupe_watchdog_kills_total")
           .Help("Workers killed because a batch of the model version ran far longer than its "
                 "measured latency (hung, or its run message was lost); the batch is retried")
           .Register(r);
  f.weight_evictions =
      &prometheus::BuildCounter()
           .Name("troupe_weight_evictions_total")
           .Help(
               "Times a worker's memory budget evicted the model version's weights to host "
               "memory (least recently used idle weights first)")
           .Register(r);
  f.weight_page_ins = &prometheus::BuildCounter()
                           .Name("troupe_weight_page_ins_total")
                           .Help(
                               "Times a worker paged the model version's evicted weights back "
                               "onto its device for a batch or a load")
                           .Register(r);
  f.weight_page_in = &prometheus::BuildHistogram()
                          .Name("troupe_weight_page_in_seconds")
                          .Help(
                              "Time to page the model version's weights back in, evictions to "
                              "make room included: latency its batch carried, seconds")
                          .Register(r);
  f.resident_bytes = &prometheus::BuildGauge()
                          .Name("troupe_worker_resident_bytes")
                          .Help(
                              "Bytes a worker with a memory budget counts against it: its "
                              "replicas' own device memory and their resident weights")
                          .Register(r);
  f.memory_budget_bytes = &prometheus::BuildGauge()
                               .Name("troupe_worker_memory_budget_bytes")
                               .Help("A worker's memory budget (worker_memory_budget_mb)")
                               .Register(r);
  f.pool_bytes = &prometheus::BuildGauge()
                      .Name("troupe_pool_bytes")
                      .Help(
                          "Bytes of a worker's device memory pools (its replicas' weights and "
                          "plan arenas; host memory on a CPU worker)")
                      .Register(r);
  f.staging_bytes = &prometheus::BuildGauge()
                         .Name("troupe_staging_bytes")
                         .Help(
                             "Bytes of a worker's host staging and output blocks (pinned on a "
                             "GPU worker)")
                         .Register(r);
  inflight_ = &prometheus::BuildGauge()
                   .Name("troupe_inflight_requests")
                   .Help("Requests received and not yet answered")
                   .Register(r)
                   .Add({});
  f.restart_backoff =
      &prometheus::BuildGauge()
           .Name("troupe_worker_restart_backoff_seconds")
           .Help(
               "Delay before the supervisor's pending or last restart of a worker; 0 once the "
               "worker has stayed up long enough to reset its backoff")
           .Register(r);
  f.replicas = &prometheus::BuildGauge()
                    .Name("troupe_replicas")
                    .Help("Replicas serving the model version now (attached to its batcher)")
                    .Register(r);
  f.scaler_decisions =
      &prometheus::BuildCounter()
           .Name("troupe_scaler_decisions_total")
           .Help(
               "Decisions of the scaler for the model's versions, by action (hold, up, down, "
               "to_zero, from_zero) and reason; one per scaled version per tick")
           .Register(r);
  f.scaler_desired_replicas =
      &prometheus::BuildGauge()
           .Name("troupe_scaler_desired_replicas")
           .Help("Replicas the scaler wants for the model version (models with scaling:)")
           .Register(r);
  desired_nodes_ =
      &prometheus::BuildGauge()
           .Name("troupe_scaler_desired_nodes")
           .Help(
               "Worker nodes like this one that this node's load needs (busy replicas over its "
               "workers per device kind, or wanted replicas' memory over its GPU memory), "
               "unrounded; summed over the nodes and rounded up: what Kubernetes scales to")
           .Register(r)
           .Add({});
  f.faults_fired = &prometheus::BuildCounter()
                        .Name("troupe_faults_fired_total")
                        .Help(
                            "Injected faults that fired (fault_injection: tests only), by fault "
                            "kind and site")
                        .Register(r);
  restarts_ = &prometheus::BuildCounter()
                   .Name("troupe_worker_restarts_total")
                   .Help("Workers the supervisor replaced after a failure")
                   .Register(r)
                   .Add({});
  // Requests that never reached a model version have no model to label them with (a
  // client-chosen name would be unbounded cardinality): only their outcome is counted, in a
  // family of its own, so that no series carries an empty model label (placeholder series of
  // troupe_model_ready{model=""} = 0 made alerts fire on a healthy node).
  unrouted_ = std::make_shared<version_metrics>();
  for (size_t c = 0; c < error_code_count; ++c)
    unrouted_->requests[c] = &f.unrouted_requests->Add(
        {{"outcome", std::string(to_string(static_cast<error_code>(c)))}});
  gpu_ = make_nvml_collector();
}

serving_metrics::~serving_metrics() = default;

std::shared_ptr<version_metrics> serving_metrics::for_version(const std::string& model,
                                                              int64_t version) {
  std::lock_guard<std::mutex> lock(mutex_);
  return make_version_metrics(*families_, model, std::to_string(version));
}

void serving_metrics::set_inflight(door d, uint32_t n) {
  inflight_by_door_[static_cast<size_t>(d)].store(n, std::memory_order_relaxed);
  // Two writers may interleave: the gauge may briefly show a sum from just before; the next
  // update of either door corrects it.
  uint64_t total = 0;
  for (const auto& x : inflight_by_door_) total += x.load(std::memory_order_relaxed);
  inflight_->Set(static_cast<double>(total));
}

void serving_metrics::set_worker_memory(uint32_t worker, const std::string& device,
                                        double device_pool_bytes, double staging_bytes) {
  const prometheus::Labels labels{{"worker", std::to_string(worker)}, {"device", device}};
  std::lock_guard<std::mutex> lock(mutex_);
  families_->pool_bytes->Add(labels).Set(device_pool_bytes);
  families_->staging_bytes->Add(labels).Set(staging_bytes);
}

void serving_metrics::set_worker_residency(uint32_t worker, const std::string& device,
                                           double resident_bytes, double budget_bytes) {
  const prometheus::Labels labels{{"worker", std::to_string(worker)}, {"device", device}};
  std::lock_guard<std::mutex> lock(mutex_);
  families_->resident_bytes->Add(labels).Set(resident_bytes);
  families_->memory_budget_bytes->Add(labels).Set(budget_bytes);
}

void serving_metrics::set_worker_budget_room(uint32_t worker, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  budget_room_[worker] = bytes;
}

std::optional<uint64_t> serving_metrics::budget_room() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::optional<uint64_t> best;
  for (const auto& [worker, bytes] : budget_room_) best = std::max(best.value_or(0), bytes);
  return best;
}

void serving_metrics::count_worker_restart() {
  restarts_->Increment();
}

void serving_metrics::set_worker_restart_backoff(uint32_t worker, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  families_->restart_backoff->Add({{"worker", std::to_string(worker)}}).Set(seconds);
}

void serving_metrics::count_scaler_decision(const std::string& model, std::string_view action,
                                            std::string_view reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  families_->scaler_decisions
      ->Add({{"model", model}, {"action", std::string(action)}, {"reason", std::string(reason)}})
      .Increment();
}

void serving_metrics::set_scaler_desired_replicas(const std::string& model, int64_t version,
                                                  double n) {
  std::lock_guard<std::mutex> lock(mutex_);
  families_->scaler_desired_replicas->Add({{"model", model}, {"version", std::to_string(version)}})
      .Set(n);
}

void serving_metrics::set_scaler_desired_nodes(double n) {
  desired_nodes_->Set(n);
}

void serving_metrics::count_fault_fired(std::string_view kind, std::string_view site) {
  const prometheus::Labels labels{{"kind", std::string(kind)}, {"site", std::string(site)}};
  std::lock_guard<std::mutex> lock(mutex_);
  families_->faults_fired->Add(labels).Increment();
}

// ---- NVML
// ------------------------------------------------------------------------------------------

namespace {

// The few NVML entry points used, declared as NVML's C API defines them (nvml.h is not needed:
// the library is found at run time or not at all).
struct nvml_utilization {
  unsigned int gpu;
  unsigned int memory;
};
struct nvml_memory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
using nvml_device = void*;

/// Bytes per second one lane of a PCIe link carries each way at generation `gen` (after line
/// encoding: 8b/10b up to gen 2, 128b/130b from gen 3; gen 6's FLIT mode taken as 128/130 too).
double pcie_lane_bytes_per_s(unsigned int gen) {
  switch (gen) {
    case 1: return 250e6;
    case 2: return 500e6;
    case 3: return 8e9 / 8 * 128 / 130;
    case 4: return 16e9 / 8 * 128 / 130;
    case 5: return 32e9 / 8 * 128 / 130;
    case 6: return 64e9 / 8 * 128 / 130;
    default: return 0;
  }
}

class nvml_collector final : public prometheus::Collectable {
 public:
  static std::shared_ptr<nvml_collector> load() {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return nullptr;
    auto c = std::shared_ptr<nvml_collector>(new nvml_collector(lib));
    if (!c->init_ || !c->count_ || !c->handle_ || !c->util_ || !c->mem_ || c->init_() != 0)
      return nullptr;
    unsigned int n = 0;
    if (c->count_(&n) != 0 || n == 0) return nullptr;
    c->devices_.resize(n);
    for (unsigned int i = 0; i < n; ++i)
      if (c->handle_(i, &c->devices_[i]) != 0) return nullptr;
    return c;
  }
  ~nvml_collector() override {
    if (shutdown_) shutdown_();
    dlclose(lib_);
  }

  std::vector<serving_metrics::gpu_reading> readings() const {
    std::vector<serving_metrics::gpu_reading> out;
    for (size_t i = 0; i < devices_.size(); ++i) {
      nvml_utilization u{};
      nvml_memory m{};
      if (util_(devices_[i], &u) != 0 || mem_(devices_[i], &m) != 0) continue;
      out.push_back({static_cast<uint32_t>(i), u.gpu / 100.0, m.free, m.total, std::nullopt});
      const pcie p = pcie_of(devices_[i]);
      if (p.known && p.link_bytes_per_s > 0)
        out.back().pcie_utilization =
            std::min(1.0, std::max(p.tx_bytes_per_s, p.rx_bytes_per_s) / p.link_bytes_per_s);
    }
    return out;
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily util{std::string(gpu_utilization_family),
                                  "GPU busy fraction over NVML's sample period",
                                  prometheus::MetricType::Gauge,
                                  {}};
    prometheus::MetricFamily mem{std::string(gpu_memory_family),
                                 "GPU memory in use (all processes)",
                                 prometheus::MetricType::Gauge,
                                 {}};
    for (size_t i = 0; i < devices_.size(); ++i) {
      nvml_utilization u{};
      nvml_memory m{};
      prometheus::ClientMetric cm;
      cm.label.push_back({std::string(gpu_label), std::to_string(i)});
      if (util_(devices_[i], &u) == 0) {
        cm.gauge.value = u.gpu / 100.0;
        util.metric.push_back(cm);
      }
      if (mem_(devices_[i], &m) == 0) {
        cm.gauge.value = static_cast<double>(m.used);
        mem.metric.push_back(cm);
      }
    }
    prometheus::MetricFamily link{std::string(gpu_pcie_family),
                                  "PCIe throughput of the GPU's link, by direction (tx: from "
                                  "the GPU), over NVML's sample period",
                                  prometheus::MetricType::Gauge,
                                  {}};
    for (size_t i = 0; i < devices_.size(); ++i) {
      const pcie p = pcie_of(devices_[i]);
      if (!p.known) continue;
      for (const auto& [direction, value] :
           {std::pair<const char*, double>{"tx", p.tx_bytes_per_s}, {"rx", p.rx_bytes_per_s}}) {
        prometheus::ClientMetric cm;
        cm.label.push_back({std::string(gpu_label), std::to_string(i)});
        cm.label.push_back({"direction", direction});
        cm.gauge.value = value;
        link.metric.push_back(std::move(cm));
      }
    }
    std::vector<prometheus::MetricFamily> out;
    if (!util.metric.empty()) out.push_back(std::move(util));
    if (!mem.metric.empty()) out.push_back(std::move(mem));
    if (!link.metric.empty()) out.push_back(std::move(link));
    return out;
  }

 private:
  struct pcie {
    bool known = false;  // NVML gave the throughput (older GPUs and drivers do not)
    double tx_bytes_per_s = 0, rx_bytes_per_s = 0;
    double link_bytes_per_s = 0;  // one direction's bandwidth at the current gen and width
  };
  pcie pcie_of(nvml_device d) const {
    pcie p;
    unsigned int tx_kb = 0, rx_kb = 0, gen = 0, width = 0;
    // nvmlPcieUtilCounter_t: 0 = NVML_PCIE_UTIL_TX_BYTES, 1 = NVML_PCIE_UTIL_RX_BYTES (KB/s).
    if (!pcie_throughput_ || pcie_throughput_(d, 0, &tx_kb) != 0 ||
        pcie_throughput_(d, 1, &rx_kb) != 0)
      return p;
    p.known = true;
    p.tx_bytes_per_s = tx_kb * 1024.0;
    p.rx_bytes_per_s = rx_kb * 1024.0;
    if (link_gen_ && link_width_ && link_gen_(d, &gen) == 0 && link_width_(d, &width) == 0)
      p.link_bytes_per_s = pcie_lane_bytes_per_s(gen) * width;
    return p;
  }

  explicit nvml_collector(void* lib) : lib_(lib) {
    // Optional: without them the PCIe figures are absent.
    pcie_throughput_ = reinterpret_cast<int (*)(nvml_device, int, unsigned int*)>(
        dlsym(lib, "nvmlDeviceGetPcieThroughput"));
    link_gen_ = reinterpret_cast<int (*)(nvml_device, unsigned int*)>(
        dlsym(lib, "nvmlDeviceGetCurrPcieLinkGeneration"));
    link_width_ = reinterpret_cast<int (*)(nvml_device, unsigned int*)>(
        dlsym(lib, "nvmlDeviceGetCurrPcieLinkWidth"));
    init_ = reinterpret_cast<int (*)()>(dlsym(lib, "nvmlInit_v2"));
    shutdown_ = reinterpret_cast<int (*)()>(dlsym(lib, "nvmlShutdown"));
    count_ = reinterpret_cast<int (*)(unsigned int*)>(dlsym(lib, "nvmlDeviceGetCount_v2"));
    handle_ = reinterpret_cast<int (*)(unsigned int, nvml_device*)>(
        dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
    util_ = reinterpret_cast<int (*)(nvml_device, nvml_utilization*)>(
        dlsym(lib, "nvmlDeviceGetUtilizationRates"));
    mem_ =
        reinterpret_cast<int (*)(nvml_device, nvml_memory*)>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  }

  void* lib_;
  int (*init_)() = nullptr;
  int (*shutdown_)() = nullptr;
  int (*count_)(unsigned int*) = nullptr;
  int (*handle_)(unsigned int, nvml_device*) = nullptr;
  int (*util_)(nvml_device, nvml_utilization*) = nullptr;
  int (*mem_)(nvml_device, nvml_memory*) = nullptr;
  int (*pcie_throughput_)(nvml_device, int, unsigned int*) = nullptr;
  int (*link_gen_)(nvml_device, unsigned int*) = nullptr;
  int (*link_width_)(nvml_device, unsigned int*) = nullptr;
  std::vector<nvml_device> devices_;
};

}  // namespace

std::shared_ptr<prometheus::Collectable> make_nvml_collector() {
  return nvml_collector::load();
}

std::vector<serving_metrics::gpu_reading> serving_metrics::gpu_readings() const {
  const auto* nvml = dynamic_cast<const nvml_collector*>(gpu_.get());
  return nvml ? nvml->readings() : std::vector<gpu_reading>{};
}

}  // namespace troupe::serving
