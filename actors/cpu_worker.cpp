#include "actors/cpu_worker.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "actors/metrics.hpp"
#include "actors/replica.hpp"

namespace troupe::actors {
namespace {

struct worker_state {
  worker_options options;
  std::vector<std::unique_ptr<replica>> replicas;  // by id; null once unloaded
  bool threads_set = false;
  static inline const char* name = "cpu_worker";

  void apply_threads() {
    // OpenMP's thread count is per calling thread: set it on the worker's own thread.
    if (!threads_set && options.compute_threads > 0) omp_set_num_threads(options.compute_threads);
    threads_set = true;
  }
  double pool_bytes() const {
    double total = 0;
    for (const auto& r : replicas)
      if (r) total += static_cast<double>(r->pool_bytes());
    return total;
  }
};

/// With fault injection on, a request may ask the worker to take longer: troupe.sleep_ms=N (the
/// largest N in the batch) simulates a slow model, so tests of queueing, timeouts and draining do
/// not depend on how fast the kernels are.
std::chrono::milliseconds requested_sleep(const batch& b) {
  long ms = 0;
  for (const infer_job* j : b.jobs)
    for (const auto& [name, value] : j->parameters)
      if (name == "troupe.sleep_ms")
        ms = std::max(ms, std::strtol(std::string(value).c_str(), nullptr, 10));
  return std::chrono::milliseconds(std::clamp(ms, 0L, 60'000L));
}

/// The fault a request asks for with the parameter troupe.fault (only with fault injection on):
/// "crash" ends the worker while it holds the batch, "crash_once" does so on the request's first
/// attempt only (its retry then succeeds elsewhere), "device" fails the run as a device error.
std::string_view requested_fault(const batch& b) {
  for (const infer_job* j : b.jobs)
    for (const auto& [name, value] : j->parameters)
      if (name == "troupe.fault") {
        if (value == "crash_once")
          return j->attempts <= 1 ? std::string_view("crash") : std::string_view();
        return value;
      }
  return {};
}

worker_actor::behavior_type cpu_worker(worker_actor::stateful_pointer<worker_state> self,
                                       worker_options o) {
  self->state.options = o;
  return {
      [=](load_atom, const replica_spec& spec) -> caf::result<replica_info> {
        self->state.apply_threads();
        replica::options ro;
        ro.model_name = spec.model;
        ro.version = spec.version;
        ro.model_path = spec.path;
        ro.config = spec.config;
        ro.warmup_runs = spec.warmup_runs;
        auto r = replica::create(ro);
        if (!r) return to_caf_error(r.error().with_context("loading " + spec.path));
        replica_info info;
        info.id = static_cast<uint32_t>(self->state.replicas.size());
        info.signature = (*r)->signature();
        info.bucket_rows = (*r)->bucket_rows();
        for (const auto& l : (*r)->warmup_latency()) info.warmup.push_back({l.rows, l.mean_us});
        info.pool_bytes = (*r)->pool_bytes();
        self->state.replicas.push_back(std::move(*r));
        if (auto* m = self->state.options.metrics)
          m->set_pool_bytes(self->state.options.index, self->state.pool_bytes());
        return info;
      },
      [=](unload_atom, uint32_t id) {
        if (id < self->state.replicas.size()) self->state.replicas[id].reset();
        if (auto* m = self->state.options.metrics)
          m->set_pool_bytes(self->state.options.index, self->state.pool_bytes());
      },
      [=](run_atom, batch_ref ref) {
        self->state.apply_threads();
        batch& b = *ref.ptr;
        const std::string_view fault =
            self->state.options.fault_injection ? requested_fault(b) : std::string_view{};
        if (fault == "crash") {
          // Dies holding the batch: the batcher sees the worker go down and retries it.
          self->quit(caf::make_error(caf::sec::runtime_error, "fault injection: worker crash"));
          return;
        }
        const auto start = std::chrono::steady_clock::now();
        if (self->state.options.fault_injection) std::this_thread::sleep_for(requested_sleep(b));
        replica* r = b.replica_id < self->state.replicas.size()
                         ? self->state.replicas[b.replica_id].get()
                         : nullptr;
        if (!r)
          b.result = make_error(error_code::unavailable,
                                "replica " + std::to_string(b.replica_id) + " is not loaded");
        else if (fault == "device")
          b.result = make_error(error_code::device_error, "fault injection: device error");
        else
          (void)r->run(b);
        b.compute_time = std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::steady_clock::now() - start);
        b.worker_failed = b.result.code() == error_code::device_error;
        self->send(caf::actor_cast<batcher_actor>(self->current_sender()), done_atom::value, ref);
        if (b.worker_failed) {
          // A device error may leave the device unusable: the supervisor builds a fresh worker.
          self->quit(
              caf::make_error(caf::sec::runtime_error, "device error: " + b.result.message()));
        }
      },
      [=](crash_atom) {
        self->quit(caf::make_error(caf::sec::runtime_error, "fault injection: worker crash"));
      },
  };
}

}  // namespace

worker_actor spawn_cpu_worker(caf::actor_system& sys, const worker_options& o, bool detached) {
  if (detached) return sys.spawn<caf::detached>(cpu_worker, o);
  return sys.spawn(cpu_worker, o);
}

}  // namespace troupe::actors
