#pragma once
/// cpu_worker: the worker of one device (here: the host CPU). It owns its replicas
/// (actors/replica.hpp) and runs one batch at a time on its own thread, so it is spawned detached
/// in a node (a run blocks for the compute); tests spawn it on the deterministic scheduler.
///
/// Messages (worker_actor in caf_compat.hpp):
///   (load, replica_spec) -> replica_info   load, compile, warm up one replica
///   (unload, id)                           drop a replica
///   (run, batch_ref)                       run a batch; answers (done, batch_ref) to the sender
///   (crash)                                fault injection: exit abnormally (supervisor tests)
/// A batch whose result is device_error marks the worker failed: it answers the batch (the batcher
/// retries it elsewhere) and exits, and the supervisor replaces it.

#include <cstdint>

#include "actors/caf_compat.hpp"

namespace troupe::actors {

class serving_metrics;

struct worker_options {
  uint32_t index = 0;            // the device number; also the metrics label
  int compute_threads = 0;       // OpenMP threads for runs; 0: OpenMP's default
  bool fault_injection = false;  // honour the troupe.fault request parameter
  serving_metrics* metrics = nullptr;
};

worker_actor spawn_cpu_worker(caf::actor_system& sys, const worker_options& o, bool detached);

}  // namespace troupe::actors
