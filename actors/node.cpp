#include "actors/node.hpp"

#include "actors/model_manager.hpp"
#include "actors/router.hpp"
#include "actors/scaler.hpp"
#include "actors/supervisor.hpp"
#include "actors/worker.hpp"
#include "serving/model_table.hpp"

namespace troupe::actors {

using serving::fault_plan;
using serving::model_control_mode;
using serving::serving_metrics;
using serving::table_holder;

node_handles spawn_node(caf::actor_system& sys, const node_spawn_options& o) {
  node_handles h;
  supervisor_options so;
  so.detached_workers = o.detached_workers;
  so.metrics = o.metrics;
  so.backoff = o.worker_restart;
  std::vector<worker_kind> kinds;
  auto add = [&](worker_kind kind, int device_index) {
    worker_options wo;
    wo.kind = kind;
    wo.index = static_cast<uint32_t>(h.workers.size());
    wo.device_index = device_index;
    wo.compute_threads = o.config.compute_threads;
    wo.fault_injection = o.config.fault_injection;
    wo.background_model_reads = o.background_model_reads;
    wo.idle_spin_us = o.worker_idle_spin_us;
    wo.metrics = o.metrics;
    wo.processes = o.worker_processes;
    wo.memory_budget_bytes = static_cast<size_t>(o.config.worker_memory_budget_mb) << 20;
    wo.faults = o.faults;
    h.workers.push_back(spawn_worker(sys, wo, o.detached_workers));
    so.worker_settings.push_back(wo);
    kinds.push_back(kind);
  };
  for (int gpu : o.gpus) add(worker_kind::gpu, gpu);
  for (uint32_t i = 0; i < o.config.cpu_workers; ++i) add(worker_kind::cpu, 0);
  so.workers = h.workers;
  h.supervisor = spawn_supervisor(sys, std::move(so));
  h.router = spawn_router(sys);
  manager_options mo;
  mo.router = h.router;
  mo.holder = o.holder;
  mo.metrics = o.metrics;
  mo.workers = h.workers;
  mo.worker_kinds = std::move(kinds);
  mo.warmup_runs = o.config.warmup_runs;
  mo.max_batches_per_replica =
      static_cast<int>(o.config.max_batches_per_replica.value_or(o.cluster_control ? 3 : 2));
  mo.control_mode = o.config.control_mode;
  mo.load_models = o.config.load_models;
  mo.repository_poll = o.config.repository_poll;
  mo.node_labels = o.config.labels;
  mo.load_timeout = o.config.load_timeout;
  mo.after_model_load = o.after_model_load;
  mo.recovery_wait = o.recovery_wait;
  mo.faults = o.faults;
  mo.watchdog_multiple = o.config.worker_watchdog_multiple;
  mo.watchdog_min = o.config.worker_watchdog_min;
  // A quarter of the minimum limit (at most 250 ms): a hung batch is found within 1.25 x its limit.
  mo.watchdog_interval = std::min(std::chrono::milliseconds(250), o.config.worker_watchdog_min / 4);
  mo.cluster_control = o.cluster_control;
  h.manager = spawn_model_manager(sys, std::move(mo));
  caf::anon_send(h.supervisor, subscr_atom::value, h.manager);
  scaler_options sc;
  sc.manager = h.manager;
  sc.metrics = o.metrics;
  sc.interval = o.config.scaler_interval;
  h.scaler = spawn_scaler(sys, std::move(sc));
  caf::anon_send(h.manager, subscr_atom::value, h.scaler);
  return h;
}

worker_actor join_remote_worker(caf::actor_system& sys, const node_handles& node,
                                const node_spawn_options& o, const remote_worker_spec& w) {
  worker_options wo;
  wo.kind = w.kind;
  wo.index = w.index;
  wo.device_index = w.device_index;
  wo.fault_injection = o.config.fault_injection;
  wo.idle_spin_us = o.worker_idle_spin_us;
  wo.metrics = o.metrics;
  wo.memory_budget_bytes = static_cast<size_t>(o.config.worker_memory_budget_mb) << 20;
  wo.faults = o.faults;
  auto processes = std::make_shared<worker_process_options>();
  processes->channels = w.channel;
  processes->shared_memory_bytes = w.staging_bytes;
  wo.processes = std::move(processes);
  worker_actor proxy = spawn_worker(sys, wo, o.detached_workers);
  joined_worker where = w.where;
  where.gpu = w.kind == worker_kind::gpu;
  caf::anon_send(node.manager, joined_atom::value, w.index, proxy, std::move(where));
  return proxy;
}

expected<load_report> load_repository(caf::actor_system& sys, const node_handles& node,
                                      const std::string& dir) {
  caf::scoped_actor self{sys};
  expected<load_report> result = internal_error("no answer from model_manager");
  self->request(node.manager, caf::infinite, load_atom::value, dir)
      .receive([&](load_report& r) { result = std::move(r); },
               [&](caf::error& e) { result = from_caf_error(sys, e); });
  return result;
}

void load_repository_async(caf::actor_system& sys, const node_handles& node, const std::string& dir,
                           std::chrono::milliseconds delay,
                           std::function<void(expected<load_report>)> done) {
  const manager_actor manager = node.manager;
  sys.spawn([manager, dir, delay, done = std::move(done)](caf::event_based_actor* self) {
    // Exactly one call of `done`, then this actor ends: whichever of the answer and the
    // manager's exit comes first. The monitor goes first: CAF 0.17 would keep its record, and
    // with it this actor's memory, on the manager until the manager exits.
    auto finish = [self, manager, done](expected<load_report> r) {
      done(std::move(r));
      self->demonitor(manager.address());
      self->quit();
    };
    self->monitor(manager);
    self->set_down_handler([finish](caf::down_msg&) {
      finish(make_error(error_code::unavailable,
                        "the node stopped before the model repository finished loading"));
    });
    if (delay.count() > 0)
      self->delayed_send(self, delay, load_atom::value);
    else
      self->send(self, load_atom::value);
    return caf::behavior{
        [self, manager, dir, finish](load_atom) {
          self->request(manager, caf::infinite, load_atom::value, dir)
              .then([finish](load_report& r) { finish(std::move(r)); },
                    [self, finish](caf::error& e) { finish(from_caf_error(self->system(), e)); });
        },
    };
  });
}

void stop_node(caf::actor_system& sys, const node_handles& node) {
  (void)sys;
  // The supervisor stops the workers it holds (replacements included), the manager its batchers.
  if (node.scaler) caf::anon_send_exit(node.scaler, caf::exit_reason::user_shutdown);
  if (node.supervisor) caf::anon_send_exit(node.supervisor, caf::exit_reason::user_shutdown);
  if (node.manager) caf::anon_send_exit(node.manager, caf::exit_reason::user_shutdown);
  if (node.router) caf::anon_send_exit(node.router, caf::exit_reason::user_shutdown);
}

}  // namespace troupe::actors
