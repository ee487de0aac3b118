#pragma once
/// Configuration of the serving node and of each model, read from YAML (yaml-cpp). Model keys
/// follow Triton's names where the meaning is the same (max_batch_size, dynamic_batching.
/// max_queue_delay_microseconds, preferred_batch_size, priority_levels, default_queue_policy,
/// instance_group.count, version_policy), so a Triton user can read a troupe config. Every field
/// has a default: a model directory without config.yaml is served with them.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "runtime/input_normalization.hpp"
#include "runtime/plan_cache.hpp"
#include "serving/fault_plan.hpp"
#include "serving/readiness.hpp"
#include "serving/scaling_policy.hpp"

namespace troupe::serving {

/// How long reading a model file may take (`load_timeout_s`, node-wide in node.yaml, per model in
/// config.yaml) before its load fails DEADLINE_EXCEEDED: the read runs on a thread of its own
/// (runtime/background_read.hpp), abandoned at the timeout, so that a file on a hung mount never
/// stalls the worker, the node's other models or its shutdown.
inline constexpr std::chrono::milliseconds default_load_timeout{300'000};

/// How long a request may wait and how many may wait; one policy applies to each priority level.
struct queue_policy {
  std::chrono::microseconds default_timeout{0};  // 0: no deadline unless the request sets one
  bool allow_timeout_override = true;            // a request's timeout_us replaces the default
  uint32_t max_queue_size = 1024;  // per priority level; a full level answers OVERLOADED. Never 0.
};

/// The adaptive policy: chooses batch size and wait from the arrival rate and measured latency.
struct adaptive_batching {
  bool enabled = false;
  double slo_p99_ms = 0;  // the p99 latency the choice must keep; required when enabled
};

/// One routing rule: a request parameter's value, or (`node_label`) a label of the node that
/// serves the request (node.yaml `labels`: region, zone...), sends requests to `version`. A rule
/// has exactly one of `parameter` and `node_label`; model_manager resolves node-label rules when it
/// publishes a table (a rule that holds on this node becomes one with both empty: always true).
struct traffic_match {
  std::string parameter;   // a request parameter name
  std::string node_label;  // ... or a label of the node
  std::string value;       // ... and the value that sends the request to `version`
  int64_t version = 0;
};

/// Which version serves a request that names none. Explicit versions always win; then `match`
/// rules in order; then `weights` (a request with a routing key always gets the same version);
/// otherwise the newest ready version.
struct traffic_policy {
  std::map<int64_t, uint32_t> weights;  // version -> relative weight
  std::vector<traffic_match> match;
};

/// Which workers a model's replicas go to. Triton: instance_group[].kind KIND_CPU / KIND_GPU /
/// KIND_AUTO.
enum class device_preference : uint8_t {
  any = 0,  // the node's GPU workers where it has any, else its CPU workers
  cpu = 1,
  gpu = 2,
};
std::string_view device_preference_name(device_preference d);

struct model_config {
  /// -1: decide from the model (8 when every input and output has a dynamic leading dim, else 0).
  /// 0: no batching; requests carry the model's full shapes. >0: requests carry a leading batch
  /// dim of 1..max_batch_size and the batcher combines them up to this many rows.
  int64_t max_batch_size = -1;
  std::chrono::microseconds max_queue_delay{0};  // Triton: max_queue_delay_microseconds
  std::vector<int64_t> preferred_batch_sizes;    // Triton: preferred_batch_size
  uint32_t priority_levels = 1;                  // 1 = highest
  uint32_t default_priority_level = 0;           // 0: the lowest level (= priority_levels)
  queue_policy queue;
  adaptive_batching adaptive;
  uint32_t instance_count = 1;         // replicas per worker (Triton: instance_group[].count)
  std::vector<int64_t> batch_buckets;  // batch sizes with a compiled plan; empty: powers of two,
                                       // the preferred sizes and max_batch_size
  /// `batch_slice_rows`: a batch bucket larger than this runs as slices of this many rows, one
  /// after another through one plan compiled for the slice (its arena sized for the slice, not
  /// the bucket). 0, the default: only when a bucket's plan does not fit (the device's memory or
  /// the worker's memory budget), halving until it does.
  int64_t batch_slice_rows = 0;
  int64_t latest_versions = 1;         // version_policy.latest.num_versions; 0 with `all`
  std::vector<int64_t> specific_versions;  // version_policy.specific.versions
  traffic_policy traffic;
  device_preference device = device_preference::any;  // `device:` or instance_group[0].kind
  /// Compute precision of GPU replicas: fp32, fp16, bf16 or tf32 (runtime/session.hpp); empty:
  /// fp16. Inputs and outputs keep the model's own types. CPU replicas always run fp32.
  std::string gpu_precision;
  /// `input_normalization:` clients send this input as integer pixels (dtype: uint8...) and the
  /// node applies (x - mean[c]) / std[c] inside the graph (runtime/input_normalization.hpp); the
  /// model's signature then shows the client type. Checked against the model at load.
  std::optional<runtime::input_normalization> input_normalization;
  /// `shape_cache: {max_plans, max_bytes}`: bounds of each replica's compiled-shape cache (plans
  /// compiled per new input shape of a model with dynamic non-batch dims; least recently used
  /// first out). runtime/plan_cache.hpp has the defaults.
  runtime::shape_cache_limits shape_cache;
  /// `load_timeout_s`: the time reading this model's files may take (default_load_timeout above);
  /// nullopt: the node's `load_timeout_s`.
  std::optional<std::chrono::milliseconds> load_timeout;
  /// `rollback: {max_error_ratio, max_p99_ratio, window_s, min_requests}`: a canary (a version
  /// with traffic weight other than the heaviest) whose error rate or p99 over a window exceeds
  /// the stable version's by the ratio gets weight 0 (model_manager; docs/serving.md).
  struct rollback_rule {
    double max_error_ratio = 0;  // 0: not checked
    double max_p99_ratio = 0;    // 0: not checked
    std::chrono::milliseconds window{30000};
    uint64_t min_requests = 20;  // a version with fewer requests in the window is not judged
  };
  std::optional<rollback_rule> rollback;
  /// `scaling: {min_replicas, max_replicas, slo_p99_ms, upscale_delay_s, downscale_delay_s,
  /// scale_to_zero_after_s}`: the scaler decides this model's replicas per version within these
  /// bounds (serving/scaling_policy.hpp, docs/scaling.md). None: not scaled (instance_count).
  std::optional<scaling_config> scaling;
  /// `fault_injection: {error_ratio}` (tests; honoured only where the node has fault_injection:
  /// true): this fraction of the version's batches fail with an internal error.
  double fault_error_ratio = 0;
  std::vector<int64_t> fault_versions;  // `fault_injection.versions`: only these (empty: all)

  /// The level a request with priority 0 gets.
  uint32_t effective_default_priority() const {
    return default_priority_level ? default_priority_level : priority_levels;
  }
};

/// Parses a model's config.yaml text; `source` names it in errors. Unknown keys are errors (a typo
/// must not silently fall back to a default).
expected<model_config> parse_model_config(const std::string& yaml_text, const std::string& source);
/// Reads `path`; a missing file yields the defaults.
expected<model_config> load_model_config(const std::string& path);

/// How the node's set of models changes at run time (Triton's names): `none` loads the repository
/// at start and refuses the repository API's load/unload; `explicit` loads only the models named
/// at start (`load_models`) and then what the API asks; `poll` loads everything at start and
/// rescans the repository every `repository_poll` to apply what changed (the API's load/unload are
/// refused: the folder is the truth).
enum class model_control_mode : uint8_t { none, explicit_, poll };
std::string_view model_control_mode_name(model_control_mode m);
/// "none", "explicit" or "poll"; invalid_argument otherwise.
expected<model_control_mode> parse_model_control_mode(std::string_view word);

/// The node: where it listens and how many of each resource it runs.
enum class node_role : uint8_t { all, control, worker };
expected<node_role> parse_node_role(const std::string& word);

struct node_config {
  std::string models_dir;
  std::string listen = "tcp://*:5555";
  int metrics_port = 8002;  // 0: no /metrics endpoint (8002: Triton's metrics port)
  std::string metrics_address = "0.0.0.0";
  int http_port = 8000;       // KServe v2 HTTP/REST door on every interface; 0: off
  uint32_t http_threads = 0;  // its I/O threads; 0: a quarter of the hardware threads, 1 to 4
  bool shared_memory = true;  // the KServe system shared-memory extension (co-located clients)
  uint32_t cpu_workers = 1;   // cpu_worker actors; each holds instance_count replicas per model
  /// GPUs that get a gpu_worker each (CUDA builds): nullopt ("all", the default) every visible
  /// GPU, empty ("none") no GPU worker, else these CUDA ordinals. Models placed `any` go to the GPU
  /// workers when there are some, so cpu_workers then serve only models pinned to `device: cpu`.
  std::optional<std::vector<int>> gpus;
  uint32_t actor_threads = 1;  // CAF scheduler threads (routing and batching are light)
  std::string actor_scheduler = "stealing";  // CAF policy: stealing or sharing
  /// Workers on their own threads (true: a long run never delays routing, batching or timeouts)
  /// or on the CAF scheduler's threads (false: no thread hand-off per batch; for small models).
  bool detached_workers = true;
  /// How long (microseconds) an idle thread on the request path polls before it blocks: the
  /// frontend, detached workers and the CAF threads. nullopt: actors::default_idle_spin_us()
  /// (500 with 8 or more hardware threads, else 0: block at once). docs/serving.md says why.
  std::optional<uint32_t> idle_spin_us;
  int compute_threads = 0;       // OpenMP threads per worker; 0: OpenMP's default
  /// Batches each replica holds at once (batcher_options::max_batches_per_replica). Unset: 2 (the
  /// next one staged while one runs), 3 on a node that takes workers from worker nodes (a batch
  /// takes time to cross the network to them: one more on its way keeps their GPUs busy;
  /// bench/results/cluster.md).
  std::optional<uint32_t> max_batches_per_replica;
  uint32_t max_inflight = 4096;  // requests held at once; beyond it the frontend answers OVERLOADED
  /// ZeroMQ door: requests of one connection running or with replies the client has not read;
  /// beyond it that connection's requests are answered OVERLOADED (cluster/connection_budget.hpp).
  uint32_t max_outstanding_per_connection = 256;
  uint64_t max_message_bytes = 256ull << 20;       // a request larger than this is refused
  std::chrono::milliseconds drain_timeout{30000};  // SIGTERM: time to finish in-flight work
  uint32_t warmup_runs = 3;  // per batch bucket at load, also the latency measurement
  /// `load_timeout_s`: reading a model file may take this long (models may set their own).
  std::chrono::milliseconds load_timeout = default_load_timeout;
  /// Tests only: honours the troupe.fault and troupe.sleep_ms request parameters and gives the
  /// node a fault plan (serving/fault_plan.hpp) that `faults` and the management socket fill.
  bool fault_injection = false;
  /// `faults:` rules in the fault plan from the start (docs/faults.md), each checked with
  /// validate(); refused without `fault_injection: true`.
  std::vector<fault_rule> faults;
  /// `worker_processes: on|off`: each worker runs in a process of its own, a child of the node
  /// (`troupe worker`), so that a crash or a sticky CUDA error costs that process, not the node
  /// (docs/worker-processes.md). Off by default for now.
  bool worker_processes = false;
  /// A worker process and its node send each other a heartbeat this often; one silent for the
  /// timeout is gone (the node restarts a silent process; a process leaves a silent node).
  std::chrono::milliseconds worker_heartbeat_interval{1000};
  std::chrono::milliseconds worker_heartbeat_timeout{10000};
  /// Shared memory per worker process (staging and output blocks of its replicas), sparse: a
  /// load that does not fit fails out_of_memory. A GPU worker pins all of it.
  uint32_t worker_shared_memory_mb = 1024;
  /// The watchdog (batcher_options): a worker whose running batch takes longer than this many
  /// times its measured p99, and at least worker_watchdog_min, is killed and replaced, and the
  /// batch retried. 0: no watchdog.
  double worker_watchdog_multiple = 10;
  std::chrono::milliseconds worker_watchdog_min{2'000};
  /// Device memory each worker may hold for its replicas (their plan arenas and their resident
  /// weights), in MiB: beyond it, idle model versions' weights are evicted to host memory,
  /// least recently used first, and paged back in for their next batch; a load that cannot fit
  /// fails out_of_memory (docs/serving.md, Memory budget). 0 (default): no budget.
  uint64_t worker_memory_budget_mb = 0;
  // ---- the node in a cluster (docs/cluster.md) ----
  /// all: frontends, actors and workers in one node (the default); control: frontends and
  /// actors, workers join from worker nodes; worker: worker processes for this host's devices,
  /// joined to the control nodes of `join`.
  node_role role = node_role::all;
  std::vector<std::string> join;  // worker: the control nodes' tcp:// endpoints for workers
  /// worker: NAME:PORT, every IPv4 address the name resolves to (re-resolved every 5 s): a
  /// Kubernetes headless Service of the control nodes.
  std::string join_dns;
  /// Where a control node listens for workers; unset: tcp://*:5600 for `control`, none for `all`.
  std::optional<std::string> workers_listen;
  std::string node_name;        // a worker node's name in its workers' hellos ("": host name)
  std::string model_cache_dir;  // a worker node's model files ("": ~/.cache/troupe/models)
  /// Between control nodes and the workers of worker nodes: a heartbeat this often each way; a
  /// peer silent for the timeout is gone (a control node re-places its replicas).
  std::chrono::milliseconds node_heartbeat_interval{1000};
  std::chrono::milliseconds node_heartbeat_timeout{3000};
  /// Connections between a control node and each worker process of a worker node (the first,
  /// which carries everything, and data lanes for large runs' tensors; cluster/worker_lanes.hpp),
  /// each with a ZeroMQ I/O thread at both ends: a worker node opens this many, a control node
  /// runs this many I/O threads for its workers. 1: one connection.
  uint32_t node_link_connections = 4;
  /// CURVE between control and worker nodes (docs/cluster.md, Security); off unless
  /// curve_secret_key_file is set. A control node then also needs curve_authorized_keys_file
  /// (the workers' public keys), a worker node curve_server_key_file (the control node's).
  std::string curve_secret_key_file;
  std::string curve_server_key_file;
  std::string curve_authorized_keys_file;
  /// When the node is ready (serving/readiness.hpp): every model version it was asked to serve is
  /// ready (strict, the default), or at least one (any).
  readiness_policy readiness = readiness_policy::strict;
  /// Tests only: the repository load starts this long after the listeners are up, so that a test
  /// can watch a node that is live and not ready. Interruptible: SIGTERM during it stops at once.
  std::chrono::milliseconds load_delay{0};
  std::string log_level = "info";
  int grpc_port = 8001;  // KServe v2 over gRPC; 0: none
  /// `labels: {region: eu-west, zone: a}`: what traffic rules with `node_label` match.
  std::map<std::string, std::string> labels;
  model_control_mode control_mode = model_control_mode::none;
  /// explicit mode: the models loaded at start ("*": every model of the repository).
  std::vector<std::string> load_models;
  std::chrono::milliseconds repository_poll{15000};  // poll mode: time between rescans
  /// `scaler_interval_ms`: the scaler's tick, the window over which it measures the load of the
  /// models with `scaling:` (actors/scaler.hpp).
  std::chrono::milliseconds scaler_interval{1000};
  /// The management socket (cluster/management_socket.hpp): "" (default) off; else a ZeroMQ
  /// endpoint. Beyond loopback it needs `management_token_file` (a mode 0600 file).
  std::string management_listen;
  std::string management_token_file;
  /// Recorded convolution choices kept across restarts (runtime/tuning_records_file.hpp): ""
  /// (default) off; else a file read at start (missing: nothing recorded yet; unreadable or
  /// invalid: a warning, and the node starts without it) and rewritten after a model load that
  /// recorded new choices.
  std::string tuning_records_file;
};

expected<node_config> parse_node_config(const std::string& yaml_text, const std::string& source);
expected<node_config> load_node_config(const std::string& path);

}  // namespace troupe::serving
