#pragma once
/// model_manager: owns the model repository.
///
///   models/<name>/config.yaml          optional (actors/model_config.hpp); defaults without it
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
/// held onto its replacement and hands them to the batchers.

#include <chrono>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/worker.hpp"

namespace troupe::actors {

class serving_metrics;
class table_holder;

struct manager_options {
  router_actor router;
  table_holder* holder = nullptr;      // outlives the actor
  serving_metrics* metrics = nullptr;  // may be null; outlives the actor
  std::vector<worker_actor> workers;
  std::vector<worker_kind> worker_kinds;  // by worker index; missing entries are cpu
  uint32_t warmup_runs = 3;
  /// Reading a model file may take this long unless its config.yaml says otherwise
  /// (model_config::load_timeout).
  std::chrono::milliseconds load_timeout = default_load_timeout;
  int max_batches_per_replica = 2;
};

manager_actor spawn_model_manager(caf::actor_system& sys, manager_options o);

}  // namespace troupe::actors
