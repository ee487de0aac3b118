#pragma once
/// `troupe worker`: the main of a worker process (docs/worker-processes.md), started by its node
/// (cluster/worker_link.hpp), never by hand. It maps the shared memory it inherited (pinning it
/// for its GPU), connects a ZeroMQ DEALER to the node's endpoint, says hello, and serves: the
/// node's loads, unloads and runs go to the serving loop (actors/replica_host.hpp), its answers
/// go back; heartbeats both ways. It exits when the node stops answering heartbeats (and dies
/// with the node anyway: its parent-death signal), or when the node sends what is not the
/// worker protocol.
///
/// On a worker node (`troupe serve --role worker`, cluster/worker_node.hpp; docs/cluster.md) the
/// process joins a control node over tcp:// instead (`join`): no memory is shared, so it makes an
/// arena of its own and its runs' tensors travel as frames (cluster/remote_run_staging.hpp); its
/// hello names its node and a fresh incarnation; the model files it lacks come from the control
/// node into its cache (cluster/model_file_cache.hpp). It exits when the control node releases it
/// (a bye) or falls silent, and its worker node starts a fresh one, which joins again.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "actors/device_traits.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

struct worker_main_options {
  std::string endpoint;  // the node's ipc:// endpoint
  int shm_fd = -1;       // the inherited shared memory
  size_t shm_bytes = 0;  // its size; joined over tcp: the size of the process's own arena
  // Joined to a control node (docs/cluster.md); `endpoint` and `shm_fd` are then unused.
  std::string join;       // the control node's tcp:// endpoint ("": a local worker process)
  std::string node_name;  // the worker node's name, in the hello
  std::string cache_dir;  // where model files sent by the control node are kept
  int64_t max_frame_bytes = int64_t{4} << 30;  // the largest frame taken (a model file)
  /// Joined: connections to the control node, the first included (cluster/worker_lanes.hpp):
  /// large runs are striped over all of them.
  uint32_t link_connections = 1;
  /// CURVE (docs/cluster.md, Security): this worker's secret key and the control node's public
  /// key, both files; "" (both): no CURVE.
  std::string curve_secret_key_file;
  std::string curve_server_key_file;
  actors::worker_kind kind = actors::worker_kind::cpu;
  uint32_t index = 0;
  int device_index = 0;
  int compute_threads = 0;
  bool fault_injection = false;
  std::string tuning_records_file;  // "": none (runtime/tuning_records_file.hpp)
  size_t memory_budget_bytes = 0;  // the node's worker_memory_budget_mb, in bytes (0: none)
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10000};
  std::string log_level = "info";
  uint32_t idle_spin_us = 0;  // worker_process_spec::idle_spin_us
};

/// The command line that starts a worker process with `o` (`executable worker ...`): what
/// tools/cmd_worker.cpp reads back. The ipc link and the worker node both start theirs with it.
std::vector<std::string> worker_command_line(const std::string& executable,
                                             const worker_main_options& o);

/// Serves until the node goes; returns why (an error when it could not start or the node broke
/// the protocol).
status run_worker_process(const worker_main_options& o);

}  // namespace troupe::cluster
