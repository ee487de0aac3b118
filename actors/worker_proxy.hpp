#pragma once
/// worker_proxy: the node's actor for a worker that runs in a process of its own (`troupe
/// worker`, a child of the node; docs/worker-processes.md). It speaks worker_actor exactly as the
/// in-process worker does (actors/worker.hpp), so batchers, model_manager and the supervisor do
/// not know the difference, and reaches its process through a worker_channel
/// (actors/worker_channel.hpp) that the node injects (worker_options::processes).
///
/// - Memory: the proxy creates the process's shared memory (serving/shared_arena.hpp) and owns
///   the allocation of its regions: per replica and batch bucket, two staging regions (the next
///   batch is gathered while the process runs the current one: the batcher lends a replica two
///   batches at once) and a pool of output blocks, which replies are sent from and which go back
///   to the pool when the last reply has left (as the in-process replica's blocks do).
/// - A batch: the proxy gathers the jobs' inputs into a free staging region (actors/
///   batch_gather.hpp: the one host copy, now on the node's side), takes a free output block and
///   sends (run); the process's (done) fills the batch and goes to the batcher as the in-process
///   worker's answer would. A batch finding both staging regions busy waits in the proxy.
/// - Loads: sent to the process with the config's YAML text; the answer's layouts are checked
///   and the regions allocated (out_of_memory when the shared memory is full). A load the
///   process does not answer within its load timeout fails DEADLINE_EXCEEDED (the timeout bounds
///   the whole load here: read, compile and warm-up).
/// - Failure: the process gone (exit, missed heartbeats, a protocol violation) or a device error
///   in a run: the proxy exits with an error, holding the batches it had. The batchers retry
///   them (they monitor their workers), the supervisor spawns a fresh proxy, which starts a fresh
///   process, and model_manager reloads the replicas there: the in-process worker's crash path.

#include "actors/worker.hpp"

namespace troupe::actors {

/// `o.processes` must be set (spawn_worker calls this when it is).
worker_actor spawn_worker_proxy(caf::actor_system& sys, const worker_options& o, bool detached);

}  // namespace troupe::actors
