#pragma once
/// supervisor: monitors the workers. A worker that exits abnormally (a crash, a device error) is
/// replaced by a fresh one of the same kind and index (a gpu_worker on the same GPU, with fresh
/// CUDA contexts) after a restart backoff, and model_manager is told (replaced, index, worker) so
/// that it reloads the replicas the old one held. The batchers monitor their workers too: they
/// retry the requests the failed worker held on another replica, or keep them for the replicas
/// reloaded on the replacement (actors/batcher.hpp); the versions without a live replica report
/// UNAVAILABLE (not ready) meanwhile. A worker that exits normally (node shutdown) is not
/// replaced.
///
/// Backoff: the k-th failure in a row of one worker waits min(initial * 2^(k-1), max) before the
/// replacement is spawned (100 ms, 200 ms, ... 30 s by default), on the actor clock. A worker
/// that stays up for `reset_after` is healthy again: its next failure waits `initial`. There is
/// no give-up: a crash loop keeps restarting at the longest delay, visibly (a "worker failed"
/// log event per failure with its attempt and delay, troupe_worker_restarts_total and
/// troupe_worker_restart_backoff_seconds{worker}).

#include <chrono>
#include <cstdint>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/worker.hpp"

namespace troupe::actors {

struct restart_backoff {
  std::chrono::milliseconds initial{100};         // the delay after a first failure
  std::chrono::milliseconds max{30'000};          // the doubling stops here
  std::chrono::milliseconds reset_after{60'000};  // up this long: the next failure waits `initial`
};

/// The delay before the restart that follows the `failures`-th failure in a row (1: the first).
std::chrono::milliseconds restart_delay(const restart_backoff& b, uint32_t failures);

struct supervisor_options {
  std::vector<worker_actor> workers;            // already spawned, index = position
  std::vector<worker_options> worker_settings;  // how to spawn each again (kind included)
  bool detached_workers = true;
  restart_backoff backoff;
  serving::serving_metrics* metrics = nullptr;
};

supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_options o);

}  // namespace troupe::actors
