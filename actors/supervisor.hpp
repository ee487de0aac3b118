#pragma once
/// supervisor: monitors the workers. A worker that exits abnormally (a crash, a device error) is
/// replaced by a fresh one of the same kind and index (a gpu_worker on the same GPU, with fresh
/// CUDA contexts), and model_manager is told (replaced, index, worker)
/// so that it reloads the replicas the old one held; the batchers have already retried or answered
/// the requests the failed worker held (they monitor their workers too). A worker that fails more
/// than `max_restarts` times within `restart_window` is left down: its models then report not
/// ready instead of crash-looping. A worker that exits normally (node shutdown) is not replaced.

#include <chrono>
#include <cstdint>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/worker.hpp"

namespace troupe::actors {

struct supervisor_options {
  std::vector<worker_actor> workers;            // already spawned, index = position
  std::vector<worker_options> worker_settings;  // how to spawn each again (kind included)
  bool detached_workers = true;
  int max_restarts = 5;
  std::chrono::seconds restart_window{60};
  serving_metrics* metrics = nullptr;
};

supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_options o);

}  // namespace troupe::actors
