#pragma once
/// model_manager: owns the model repository.
///
///   models/<name>/config.yaml          optional (serving/model_config.hpp); defaults without it
///   models/<name>/<version>/model.onnx versions are positive integers
///
/// (load, dir) scans the repository, applies each model's version policy, asks every worker of the
/// model's device kind for `instance_count` replicas of each version (`device: any` places them on
/// the GPU workers where the node has any, else on the CPU workers; a model pinned to a kind the
/// node lacks fails to load, named). The worker compiles and warms up; the manager spawns one
/// batcher per version at its first replica, publishes the routing table (to the router, and to the
/// frontend through table_holder) and answers with a load_report once every version is ready or
/// failed. A model or version that fails to load is reported and listed as FAILED; the others are
/// served. (replaced, index, worker) from the supervisor reloads the replicas the failed worker
/// held onto its replacement and hands them to the batchers; a replica whose reload fails (the
/// replacement failed too, or the load did) is loaded again by the worker's next replacement.
///
/// Run-time control (the KServe repository extension; docs/serving.md, Model control):
///   (mload, name, config)  loads a model, or reloads it: versions whose file and configuration
///                          are unchanged stay as they are; new or changed ones load and warm up
///                          while the current ones serve; then one table switch, and the versions
///                          left behind drain (their queued and running requests finish) and are
///                          unloaded. A reload that fails leaves the current versions serving.
///                          `config`: a configuration that replaces config.yaml ("" for none;
///                          YAML or JSON with config.yaml's keys, as Triton's load takes one).
///   (munload, name)        takes the model out of the table (later requests: not_found, saying
///                          it was unloaded), drains and unloads every version; answers when their
///                          replicas are released.
///   (index)                every model of the repository and every version's state.
///   (poll)                 poll mode: rescans the repository and applies what changed.
/// Operations on one model run one at a time, in arrival order; different models' run at once.
/// Workers of worker nodes (docs/cluster.md):
///   (joined, index, worker, gpu)  a remote worker's proxy joined as worker `index` (new, or in the
///                          place of a lost one of the same node and device): replicas are placed
///                          on it; it is monitored, and lost when it goes down.
/// Version states: serving/model_table.hpp.

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/worker.hpp"
#include "serving/model_config.hpp"

namespace troupe::serving {
class serving_metrics;
class table_holder;
}  // namespace troupe::serving

namespace troupe::actors {

struct manager_options {
  router_actor router;
  serving::table_holder* holder = nullptr;      // outlives the actor
  serving::serving_metrics* metrics = nullptr;  // may be null; outlives the actor
  std::vector<worker_actor> workers;
  std::vector<worker_kind> worker_kinds;  // by worker index; missing entries are cpu
  uint32_t warmup_runs = 3;
  /// Reading a model file may take this long unless its config.yaml says otherwise
  /// (model_config::load_timeout).
  std::chrono::milliseconds load_timeout = serving::default_load_timeout;
  int max_batches_per_replica = 2;
  /// batcher_options::recovery_wait of every batcher.
  std::chrono::milliseconds recovery_wait{30'000};
  /// batcher_options::faults of every batcher (null: fault injection off).
  std::shared_ptr<serving::fault_plan> faults;
  /// How often every batcher is asked to check its running batches (batcher_options' watchdog);
  /// 0: never. At most this late, a hung batch is found.
  std::chrono::milliseconds watchdog_interval{250};
  /// batcher_options::watchdog_multiple and watchdog_min of every batcher.
  double watchdog_multiple = 10;
  std::chrono::milliseconds watchdog_min{2'000};
  /// What (load, dir) loads at start and whether the manager rescans (model_config.hpp).
  serving::model_control_mode control_mode = serving::model_control_mode::none;
  std::vector<std::string> load_models;  // explicit mode: loaded at start ("*": all)
  std::chrono::milliseconds repository_poll{15000};
  /// The node's labels (node.yaml `labels`): traffic rules with `node_label` match them.
  std::map<std::string, std::string> node_labels;
  /// Called on the manager's thread each time the replica loads of a model load (at start, through
  /// the API, in poll mode) have all answered, whatever their outcome; may be empty. Must return at
  /// once: the node saves its tuning records there, in the background.
  std::function<void()> after_model_load;
  /// A control node of a cluster (docs/cluster.md): workers join at run time (joined, index,
  /// worker, gpu), so a model whose kind no worker serves yet waits for one instead of failing.
  bool cluster_control = false;
};

manager_actor spawn_model_manager(caf::actor_system& sys, manager_options o);

}  // namespace troupe::actors
