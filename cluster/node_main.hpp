#pragma once
/// `troupe serve`: one node (control and worker roles) in this process. Listens first (live, not
/// ready: requests are answered UNAVAILABLE "loading"), then loads the repository; ready follows
/// the node's readiness policy (serving/readiness.hpp). On SIGTERM (or SIGINT), also while
/// loading, it stops accepting work (readiness false, new requests answered UNAVAILABLE),
/// finishes the requests in flight (up to the node's drain_timeout; what is left then is answered
/// CANCELLED), stops the actors and returns 0.

#include <optional>
#include <string>
#include <vector>

#include "core/status.hpp"

namespace troupe::cluster {

struct serve_options {
  std::string models_dir;             // overrides the node config's `models`
  std::optional<std::string> listen;  // overrides `listen`
  std::optional<int> metrics_port;    // overrides `metrics_port` (0: none)
  std::optional<int> grpc_port;       // overrides `grpc_port` (0: no KServe gRPC door)
  std::optional<int> http_port;       // overrides `http_port` (0: no KServe HTTP door)
  std::optional<std::string> gpus;    // overrides `gpus`: "all", "none" or "0,1"
  std::string config_path;            // node.yaml ("" = defaults)
  std::optional<std::string> log_level;
  std::optional<std::string> control_mode;                 // overrides `model_control_mode`
  std::vector<std::string> load_models;                    // overrides `load_models` when not empty
  std::optional<int> repository_poll_secs;                 // overrides `repository_poll_secs`
  std::optional<std::string> management_listen;            // overrides `management_listen` ("" off)
  std::optional<uint32_t> max_outstanding_per_connection;  // overrides the node config's
  std::optional<std::string> tuning_records_file;          // overrides `tuning_records_file` ("" off)
  std::optional<bool> worker_processes;                    // overrides `worker_processes`
  /// Overrides `worker_memory_budget_mb`.
  std::optional<uint64_t> worker_memory_budget_mb;
  // The node in a cluster (docs/cluster.md); each overrides the node config's key.
  std::optional<std::string> role;  // all, control, worker
  std::vector<std::string> join;    // `join` when not empty
  std::optional<std::string> join_dns;
  std::optional<std::string> workers_listen;
  std::optional<std::string> node_name;
  std::optional<std::string> model_cache_dir;
};

/// Runs the node until SIGTERM/SIGINT. Prints JSON lines to stdout (docs/serving.md, Readiness):
///   {"event":"listening","endpoint":"tcp://...","grpc_port":N,"http_port":N,"metrics_port":N}
///   bound, loading
/// then, once the load has finished, exactly one of
///   {"event":"ready","endpoint":"tcp://...","grpc_port":N,"http_port":N,"metrics_port":N} ready
///   per the policy
///   {"event":"loaded","ready":false,"endpoint":...,"grpc_port":N,"http_port":N,"metrics_port":N,"reason":"..."}
/// (not ready: the models that loaded are served all the same). A signal during loading ends the
/// process (0) with neither. A port 0: that door is off. A control node's lines also carry
/// "workers_endpoint" (where workers join). A worker node (role worker) runs
/// cluster/worker_node.hpp's loop instead and prints its "joining" line.
status run_serve(const serve_options& o);

}  // namespace troupe::cluster
