#pragma once
/// troupe's CAF dialect, in one place: CAF 0.17.6 (Debian 12). Atoms (at most 10 characters), the
/// message types that travel only inside one process (allowed as "unsafe": never serialised), the
/// typed actor interfaces of every actor, and the conversion between troupe's status and
/// caf::error. Include this only from .cpp files and from the actor headers: CAF is slow to
/// compile.

#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "serving/job.hpp"
#include "serving/model_config.hpp"
#include "serving/model_table.hpp"
#include "serving/signature.hpp"

namespace troupe::actors {

// ---- atoms (<= 10 characters) -------------------------------------------------------------------

using submit_atom = caf::atom_constant<caf::atom("submit")>;
using reply_atom = caf::atom_constant<caf::atom("reply")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using run_atom = caf::atom_constant<caf::atom("run")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using unload_atom = caf::atom_constant<caf::atom("unload")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;
using table_atom = caf::atom_constant<caf::atom("table")>;
using replica_atom = caf::atom_constant<caf::atom("replica")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using workers_atom = caf::atom_constant<caf::atom("workers")>;
using subscr_atom = caf::atom_constant<caf::atom("subscribe")>;
using replaced_atom = caf::atom_constant<caf::atom("replaced")>;
using retire_atom = caf::atom_constant<caf::atom("retire")>;
using mload_atom = caf::atom_constant<caf::atom("mload")>;
using munload_atom = caf::atom_constant<caf::atom("munload")>;
using index_atom = caf::atom_constant<caf::atom("index")>;
using poll_atom = caf::atom_constant<caf::atom("poll")>;
using traffic_atom = caf::atom_constant<caf::atom("traffic")>;
using rollchk_atom = caf::atom_constant<caf::atom("rollchk")>;
using read_atom = caf::atom_constant<caf::atom("read")>;
using overdue_atom = caf::atom_constant<caf::atom("overdue")>;
using built_atom = caf::atom_constant<caf::atom("built")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using stable_atom = caf::atom_constant<caf::atom("stable")>;
using wevent_atom = caf::atom_constant<caf::atom("wevent")>;
using scale_atom = caf::atom_constant<caf::atom("scale")>;
using scaled_atom = caf::atom_constant<caf::atom("scaled")>;
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using detach_atom = caf::atom_constant<caf::atom("detach")>;
using watch_atom = caf::atom_constant<caf::atom("watch")>;
using joined_atom = caf::atom_constant<caf::atom("joined")>;
using memory_atom = caf::atom_constant<caf::atom("memory")>;

// ---- message types
// -------------------------------------------------------------------------------

/// What a worker process's channel reports to its proxy (actors/worker_proxy.cpp).
struct worker_event_body;
using worker_event = std::shared_ptr<const worker_event_body>;

/// What a worker needs to load one replica of a model version.
struct replica_spec {
  std::string model;
  int64_t version = 0;
  std::string path;  // model.onnx
  serving::model_config config;
  /// The YAML `config` was parsed from (config.yaml, or a load request's override; "" when it
  /// came from no text: the defaults, or a test's struct). A worker process rebuilds `config`
  /// from it with the same parser.
  std::string config_text;
  uint32_t warmup_runs = 3;
  /// Reading the model file may take this long (config.load_timeout, else the node's).
  std::chrono::milliseconds load_timeout = serving::default_load_timeout;
};

struct replica_latency {
  int64_t rows = 0;
  double mean_us = 0;
};

/// A loaded replica as its worker reports it.
struct replica_info {
  uint32_t id = 0;
  std::shared_ptr<const serving::model_signature> signature;
  std::vector<int64_t> bucket_rows;
  std::vector<replica_latency> warmup;
  uint64_t pool_bytes = 0;
};

/// A worker of a worker node that joined (docs/cluster.md), as model_manager places replicas on it.
struct joined_worker {
  bool gpu = false;
  std::string node;    // its node's name
  std::string device;  // "cuda:0", "cpu"
  /// What it advertised when it joined (its device's, no more than its memory budget); 0 when
  /// it advertised nothing.
  uint64_t memory_total_bytes = 0;
  uint64_t memory_free_bytes = 0;
};

/// What a batcher reports about itself (tests, metrics, the scaler).
struct batcher_stats {
  uint64_t queued_jobs = 0;
  uint64_t in_flight_batches = 0;
  uint64_t alive_replicas = 0;
  uint64_t batches_sent = 0;
  int64_t last_batch_rows = 0;
  int64_t adaptive_rows = 0;  // the adaptive policy's current choice (0 when disabled)
  int64_t adaptive_wait_us = 0;
  // For the scaler (actors/scaler.hpp), which differences the counters between its ticks:
  uint64_t submitted_jobs = 0;  // every job handed to the batcher since it started: arrivals
  uint64_t busy_us = 0;         // compute time of the batches its replicas returned, summed
  /// The measured mean latency of each batch bucket with a measurement (warm-up, then every
  /// batch), ascending in rows.
  std::vector<replica_latency> latency_profile;
  bool cold = false;  // scaled to zero: no replica, requests held until one starts
};

/// The outcome of loading a repository.
struct load_report {
  uint32_t versions_ready = 0;
  std::vector<std::string> failures;  // "model/version: code: message"
  /// A control node of a cluster: versions that load once a worker of their kind joins.
  uint32_t versions_waiting = 0;
};

/// One line of the repository index (KServe's repository extension): a model version the node
/// serves or served, or a model of the repository it never loaded (version 0, state "").
struct model_index_entry {
  std::string name;
  int64_t version = 0;
  std::string state;   // "LOADING", "READY", "UNAVAILABLE", "FAILED", "DRAINING", "UNLOADING", ""
  std::string reason;  // why it is not ready, when known
};
using model_index = std::vector<model_index_entry>;

/// A run-time change of the traffic of a model that names no version (`troupe models traffic |
/// promote | rollback`): weights set here replace config.yaml's until cleared, across reloads.
struct traffic_change {
  enum class kind : uint8_t { show, set, clear, promote, rollback };
  kind what = kind::show;
  std::string model;
  int64_t version = 0;                  // promote, rollback
  std::map<int64_t, uint32_t> weights;  // set: version -> relative weight
};
struct traffic_report {
  std::map<int64_t, uint32_t> weights;  // in effect; empty: the newest ready version serves
  bool overridden = false;              // set at run time (else config.yaml's)
  std::string note;                     // the last promote or rollback, and why
};

// ---- typed interfaces
// ----------------------------------------------------------------------------

/// cpu_worker (one per device): owns replicas, runs batches one at a time on its own thread.
/// (read, n) and (overdue, g) are the worker's messages to itself: model read n finished, or the
/// wake-up armed as generation g for the earliest load timeout fired (actors/worker_core.cpp); no
/// other actor sends them. A worker process's proxy (actors/worker_proxy.hpp) speaks the same
/// interface; (overdue, g) is its wake-up for the earliest load timeout too, (wevent, e) what its
/// channel reports (a message of the process, or that the process is gone).
using worker_actor =
    caf::typed_actor<caf::replies_to<load_atom, replica_spec>::with<replica_info>,
                     caf::reacts_to<unload_atom, uint32_t>,
                     caf::reacts_to<run_atom, serving::batch_ref>, caf::reacts_to<crash_atom>,
                     caf::reacts_to<read_atom, uint64_t>, caf::reacts_to<overdue_atom, uint64_t>,
                     caf::reacts_to<built_atom, uint64_t>,
                     caf::reacts_to<wevent_atom, worker_event>>;

/// A replica as a batcher addresses it.
struct replica_handle {
  worker_actor worker;
  uint32_t worker_index = 0;
  replica_info info;
};

/// batcher (one per model version): queues, forms batches, sends them to replicas, answers jobs.
/// (detach, worker index, replica id): no new batch goes to that replica; answered once none of
/// its batches runs (model_manager then unloads it: a scale-down).
using batcher_actor = caf::typed_actor<
    caf::reacts_to<submit_atom, serving::job_list>, caf::reacts_to<done_atom, serving::batch_ref>,
    caf::reacts_to<tick_atom, uint64_t>, caf::reacts_to<replica_atom, replica_handle>,
    caf::replies_to<stats_atom>::with<batcher_stats>, caf::replies_to<retire_atom>::with<bool>,
    caf::replies_to<detach_atom, uint32_t, uint32_t>::with<bool>, caf::reacts_to<watch_atom>>;

/// A model version with a `scaling:` block, as model_manager reports it to the scaler
/// ((scaled) -> scaled_versions).
struct scaled_version {
  std::string model;
  int64_t version = 0;
  serving::scaling_config scaling;
  batcher_actor batcher;
  std::shared_ptr<serving::version_metrics> metrics;  // may be null (a node without metrics)
  uint32_t wanted = 0;                       // the replica count model_manager is carrying out
  uint32_t ready = 0;                        // replicas attached to the batcher
  uint32_t starting = 0;       // loads in flight, and replicas a failed worker took, not back yet
  uint64_t replica_bytes = 0;  // the largest memory pool of one of its replicas; 0: unknown
  bool gpu = false;            // its replicas go to GPU workers (else CPU workers)
  uint32_t workers = 0;        // workers of that kind on the node
};
using scaled_versions = std::vector<scaled_version>;

/// router: picks the version, sets the deadline, hands jobs to batchers.
/// (retire, b): forwarded to batcher `b` after every job the router sent it, so the batcher's
/// answer (it has drained) means no job will reach it again, once the router has a table without
/// it.
using router_actor = caf::typed_actor<caf::reacts_to<submit_atom, serving::job_list>,
                                      caf::reacts_to<table_atom, serving::table_ptr>,
                                      caf::replies_to<retire_atom, batcher_actor>::with<bool>>;

/// scaler (one per node, actors/scaler.hpp): every interval (tick) measures the scaled model
/// versions, asks the scaling policy and hands model_manager the replica counts.
/// (wake, model, version): a request reached a version scaled to zero: decide for it now.
using scaler_actor =
    caf::typed_actor<caf::reacts_to<tick_atom>, caf::reacts_to<wake_atom, std::string, int64_t>>;

/// model_manager: loads the repository, keeps the table, reloads replicas of a replaced worker,
/// and loads/unloads single models at run time (mload: name and a config override, "" for none;
/// munload: name; index: what the repository holds and in which state). For the scaler:
/// (scaled) lists the versions with a `scaling:` block; (scale, model, version, n) makes that
/// version's replica count n (answered at once: accepted, or why not); (wake, model, version)
/// comes from a batcher scaled to zero that got a request (forwarded to the subscribed scaler);
/// (subscribe, scaler) names that scaler.
using manager_actor =
    caf::typed_actor<caf::replies_to<load_atom, std::string>::with<load_report>,
                     caf::reacts_to<replaced_atom, uint32_t, worker_actor>,
                     caf::reacts_to<joined_atom, uint32_t, worker_actor, joined_worker>,
                     caf::reacts_to<memory_atom, uint32_t, uint64_t>,
                     caf::replies_to<mload_atom, std::string, std::string>::with<bool>,
                     caf::replies_to<munload_atom, std::string>::with<bool>,
                     caf::replies_to<index_atom>::with<model_index>, caf::reacts_to<poll_atom>,
                     caf::replies_to<traffic_atom, traffic_change>::with<traffic_report>,
                     caf::reacts_to<rollchk_atom, std::string>,
                     caf::replies_to<scaled_atom>::with<scaled_versions>,
                     caf::replies_to<scale_atom, std::string, int64_t, uint32_t>::with<bool>,
                     caf::reacts_to<wake_atom, std::string, int64_t>,
                     caf::reacts_to<subscr_atom, scaler_actor>, caf::reacts_to<watch_atom>>;

/// supervisor: monitors the workers and replaces one that fails, after a backoff.
/// (restart, index, g) and (stable, index, g) are its messages to itself (actors/supervisor.cpp):
/// the backoff of worker `index` ran out, or its worker has stayed up long enough to reset the
/// backoff; `g` tells a current timer from one a later failure or restart made stale.
/// (workers) lists the current workers; a worker waiting for its restart is null.
using supervisor_actor =
    caf::typed_actor<caf::reacts_to<subscr_atom, manager_actor>,
                     caf::replies_to<workers_atom>::with<std::vector<worker_actor>>,
                     caf::reacts_to<restart_atom, uint32_t, uint64_t>,
                     caf::reacts_to<stable_atom, uint32_t, uint64_t>>;

// ---- errors
// --------------------------------------------------------------------------------------

/// caf::error category of troupe's error codes.
inline constexpr caf::atom_value error_category = caf::atom("troupe");

inline caf::error to_caf_error(const status& s) {
  return caf::error(static_cast<uint8_t>(s.code()), error_category, caf::make_message(s.message()));
}

/// Back to a status; errors of other categories (CAF's own: a dead actor, a timeout) become
/// `unavailable` with CAF's rendering of the error.
inline status from_caf_error(caf::actor_system& sys, const caf::error& e) {
  if (!e) return status::ok();
  if (e.category() == error_category) {
    std::string message;
    if (e.context().match_elements<std::string>()) message = e.context().get_as<std::string>(0);
    return status(static_cast<error_code>(e.code()), std::move(message));
  }
  return status(error_code::unavailable, sys.render(e));
}

}  // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::serving::job_list)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::serving::batch_ref)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::replica_spec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::worker_event)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::replica_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::joined_worker)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::replica_handle)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::batcher_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::load_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::model_index)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::traffic_change)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::traffic_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::serving::table_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::scaled_versions)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<troupe::actors::worker_actor>)
