#pragma once
/// `troupe serve --role worker`: a worker node (docs/cluster.md). It runs no frontend, no model
/// repository and no actors: one worker process (`troupe worker --join`, cluster/
/// worker_process.hpp) per device of this host (each GPU of `gpus`, then `cpu_workers` CPU
/// workers) and per control node of `join`, each joined to its control node over tcp:// (a
/// control node places replicas on it as on a local worker). A process that exits (its device
/// failed, the control node released it or fell silent) is started again after the restart
/// backoff (actors/supervisor.hpp's), so it joins again with a fresh incarnation. On SIGTERM or
/// SIGINT the processes are asked to leave (SIGTERM: each says bye to its control node, which
/// retries its batches elsewhere) and are killed after a grace period; the node then returns.
///
/// Several control nodes: each gets a process per device of its own (a device then holds a
/// CUDA context and the replicas of each control node that places some there).

#include <chrono>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "serving/model_config.hpp"

namespace troupe::cluster {

struct worker_node_options {
  serving::node_config config;  // role worker: join, node_name, model_cache_dir, gpus, cpu_workers
  std::vector<int> gpus;       // resolved CUDA ordinals
  std::string executable;      // the `troupe` binary ("": this process's own)
  std::chrono::milliseconds stop_grace{5000};  // SIGTERM to SIGKILL when the node stops
};

/// Runs until SIGTERM/SIGINT. Prints one JSON line to stdout once its processes are started:
///   {"event":"joining","node":"NAME","join":["tcp://..."],"workers":N}
status run_worker_node(const worker_node_options& o);

}  // namespace troupe::cluster
