#pragma once
/// batcher: one per served model version. Queues jobs by priority (bounded: a full level answers
/// OVERLOADED at once), forms batches by Triton's rules or the adaptive policy
/// (serving/batch_scheduler.hpp), sends each batch to the replica with the least outstanding work,
/// and answers every job exactly once: its outputs, its error, DEADLINE_EXCEEDED when its timeout
/// passes (queued or running: a running job is answered at its deadline and released when its
/// batch returns), or UNAVAILABLE when no replica is left.
///
/// Worker failure: the batcher monitors the workers of its replicas. When one fails, every job of
/// the batches it held is retried once: on another replica, or, when the failed worker held the
/// last one, on the replicas model_manager reloads onto its replacement (the supervisor restarts
/// it after a backoff: actors/supervisor.hpp). Until one comes back the version is UNAVAILABLE
/// (not ready): new jobs are refused UNAVAILABLE at once, while the jobs it already held (retried
/// and queued) wait, each until its deadline (DEADLINE_EXCEEDED) and all at most `recovery_wait`
/// (then UNAVAILABLE). A job that already had its retry is answered UNAVAILABLE. A worker that
/// exits normally (node shutdown) is not coming back: with no replica left, what is queued is
/// answered UNAVAILABLE at once. New replicas arrive as (replica, replica_handle) (from
/// model_manager, at load and after the supervisor replaced a worker).
///
/// Scaling (actors/scaler.hpp): (detach, worker index, replica id) takes a replica out of service
/// for a scale-down: no new batch goes to it, the batches it runs finish as usual, and the answer
/// (true) comes once none is left, so that model_manager unloads it only then. Detaching the last
/// replica makes the version *cold* (scaled to zero): it stays READY, and jobs are queued instead
/// of refused; the first one sends (wake, model, version) to model_manager, which has the scaler
/// bring a replica back. A job held cold is answered DEADLINE_EXCEEDED at its deadline ("while a
/// replica was starting"), and UNAVAILABLE when no replica came within `recovery_wait` of the
/// first held job. A replica that arrives ends the cold state.
///
/// Hung workers and lost messages: see batcher_options' watchdog. The batcher checks its running
/// batches when model_manager's periodic (watch) comes (manager_options::watchdog_interval), not on
/// a timer of its own: a timer pending at a batcher's exit would hold its memory until it fires, and
/// a node that loads and unloads models quickly would hold many.
///
/// Time comes from the actor clock (`self->clock().now()`), which tests simulate; the batcher
/// keeps at most one pending wake-up for the earliest of: the queue delay of the oldest request,
/// the earliest deadline of a queued or running job, the end of `recovery_wait`.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

#include "actors/caf_compat.hpp"

namespace troupe::serving {
class fault_plan;
struct version_metrics;
}  // namespace troupe::serving

namespace troupe::actors {

struct batcher_options {
  std::shared_ptr<const serving::model_signature> signature;
  std::shared_ptr<std::atomic<uint8_t>> state;  // version_state the batcher keeps current
  std::shared_ptr<serving::version_metrics> metrics;  // may be null
  /// Batches a replica may hold at once: 2 lets the next batch be staged while one runs, without
  /// taking requests from the queue that a later, fuller batch could carry.
  int max_batches_per_replica = 2;
  /// How long the jobs held when the last replica's worker failed wait for a replica to come back
  /// (see above) when their own deadline is later.
  std::chrono::milliseconds recovery_wait{30'000};
  /// The node's fault plan (node fault_injection: true; null otherwise): the batcher asks it at
  /// each batch it sends for a fault on the batcher_worker hop (serving/fault_plan.hpp).
  std::shared_ptr<serving::fault_plan> faults;
  /// Told (wake, model, version) when a job reaches the version while it is cold (above); may be
  /// null (tests of the batcher alone: the job waits for a replica all the same).
  manager_actor manager;
  /// The watchdog: a replica's running batch (its oldest in flight, counted from when it was
  /// sent or its predecessor came back) that takes longer than `watchdog_multiple` times the p99
  /// its bucket has measured, and at least `watchdog_min`, is taken for hung or lost: the batcher
  /// kills the replica's worker (a worker process dies with its proxy), whose failure then
  /// retries the batch like any crash. 0: no watchdog.
  double watchdog_multiple = 10;
  std::chrono::milliseconds watchdog_min{2'000};
};

batcher_actor spawn_batcher(caf::actor_system& sys, batcher_options o);

}  // namespace troupe::actors

namespace troupe::serving {

/// A version's batcher as the model table holds it (serving::version_entry::batcher, which sees
/// only the declaration: serving/ knows no actors). model_manager makes one per batcher it spawns;
/// every table snapshot of that version shares it.
class batcher_ref {
 public:
  explicit batcher_ref(actors::batcher_actor a) : actor(std::move(a)) {}
  const actors::batcher_actor actor;
};

}  // namespace troupe::serving
