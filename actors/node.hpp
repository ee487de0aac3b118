#pragma once
/// One serving node's actors, assembled: workers (a gpu_worker per GPU in `gpus`, then
/// `config.cpu_workers` cpu_workers), the supervisor watching them, the router, the
/// model_manager and the scaler (actors/scaler.hpp, ticking every `config.scaler_interval`). The
/// frontend (cluster/) submits to the router and reads the table through the table_holder. The
/// actor_system belongs to the caller: production passes a threaded one, tests CAF's deterministic
/// test coordinator.

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/supervisor.hpp"
#include "actors/worker.hpp"
#include "actors/worker_channel.hpp"
#include "serving/model_config.hpp"

namespace troupe::serving {
class fault_plan;
class serving_metrics;
class table_holder;
}  // namespace troupe::serving

namespace troupe::actors {

struct node_handles {
  router_actor router;
  manager_actor manager;
  supervisor_actor supervisor;
  scaler_actor scaler;
  std::vector<worker_actor> workers;  // as spawned (the supervisor may replace them): GPUs first
};

struct node_spawn_options {
  serving::node_config config;
  /// CUDA ordinals that get a gpu_worker each, already checked (resolve_gpus in gpu_worker.hpp
  /// turns config.gpus into this). Empty: CPU workers only (tests, CPU builds, no GPU).
  std::vector<int> gpus;
  bool detached_workers = true;        // false on the test coordinator
  bool background_model_reads = true;  // worker_options::background_model_reads; false there too
  uint32_t worker_idle_spin_us = default_idle_spin_us();  // worker_options::idle_spin_us
  restart_backoff worker_restart;                         // supervisor_options::backoff
  /// How long jobs wait for their version's replicas to come back after a worker failure
  /// (batcher_options::recovery_wait).
  std::chrono::milliseconds recovery_wait{30'000};
  serving::table_holder* holder = nullptr;
  serving::serving_metrics* metrics = nullptr;
  std::function<void()> after_model_load;  // manager_options::after_model_load
  /// Set (node.yaml worker_processes: on): every worker runs in a process of its own, started
  /// through these options' channel factory (cluster/worker_link.hpp); the actors spawned are
  /// the processes' proxies (actors/worker_proxy.hpp). Null: workers in this process.
  std::shared_ptr<const worker_process_options> worker_processes;
  /// The fault plan (config.fault_injection on; null otherwise), shared with the workers, the
  /// batchers (through model_manager), the frontend and the management socket.
  std::shared_ptr<serving::fault_plan> faults;
  /// A control node of a cluster (docs/cluster.md): workers of worker nodes join it at run time
  /// (join_remote_worker), and models wait for a worker of their kind instead of failing.
  bool cluster_control = false;
};

node_handles spawn_node(caf::actor_system& sys, const node_spawn_options& o);

/// A worker process of a worker node that joined this control node (docs/cluster.md).
struct remote_worker_spec {
  worker_kind kind = worker_kind::cpu;
  int device_index = 0;
  uint32_t index = 0;  // its place among the node's workers (after the local ones)
  /// Hands out the connection it joined on (cluster/worker_listener.hpp), once.
  worker_channel_factory channel;
  size_t staging_bytes = size_t{1} << 30;  // the proxy's arena, where batches are gathered
  /// Its node, device and advertised memory, as model_manager's placement sees them (`gpu` is
  /// set from `kind`).
  joined_worker where;
};

/// Spawns the remote worker's proxy (actors/worker_proxy.hpp) and hands it to model_manager,
/// which places replicas on it and watches it. Thread-safe (the worker listener's thread calls
/// it). Returns the proxy, which the caller stops when the node stops.
worker_actor join_remote_worker(caf::actor_system& sys, const node_handles& node,
                                const node_spawn_options& o, const remote_worker_spec& w);

/// Loads the repository and waits for the report (blocks the calling thread: not for actors or
/// the test coordinator).
expected<load_report> load_repository(caf::actor_system& sys, const node_handles& node,
                                      const std::string& dir);

/// Starts loading the repository and returns at once. `done` runs once, on a CAF thread (in a
/// test, inside the coordinator's run), with the report, or with an error: the load failed, or
/// the node was stopped first (its model_manager exited; the load is then abandoned, so a signal
/// during loading need not wait for it). `delay` postpones the start (node_config::load_delay,
/// tests only) on the actor clock: stopping the node during it ends the wait at once.
void load_repository_async(caf::actor_system& sys, const node_handles& node, const std::string& dir,
                           std::chrono::milliseconds delay,
                           std::function<void(expected<load_report>)> done);

/// Asks every actor of the node to exit (workers through the supervisor's list, so that replaced
/// ones are included). Call after draining: jobs still queued would not be answered.
void stop_node(caf::actor_system& sys, const node_handles& node);

}  // namespace troupe::actors
