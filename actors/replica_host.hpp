#pragma once
/// The serving loop of a worker process (`troupe worker`, docs/worker-processes.md): the
/// replicas of one device, loaded, run and unloaded as the node's messages ask
/// (actors/worker_protocol.hpp). CAF-free: the process's link (cluster/worker_process.hpp) feeds it
/// decoded messages and sends what it answers.
///
/// Threads, as in the in-process worker (actors/worker_core.cpp): replicas are read, compiled
/// and warmed up on a build thread (runtime/serial_thread), batches run one at a time on a run
/// thread, so that a load does not stall the other models of the device. A build takes its
/// weights from a live replica of the same file (builds run one after another, so a second load
/// of a file finds the first one's replica).
///
/// Memory budget (replica_host_options::memory_budget_bytes): as in the in-process worker
/// (serving/weight_residency.hpp), a build holds its sibling's weights, a batch pages its
/// replica's weights in first, a load that cannot fit fails out_of_memory. The process has no
/// metrics registry: its evictions and page-ins are log lines only.
///
/// Memory: replicas keep no staging of their own (replica::options::external_staging). A run's
/// inputs are in the regions of the shared arena the node named, staged there by the node; its
/// outputs go to the region the node named too. Every region is checked against the arena and
/// the bucket's layout before it is touched: a wrong message fails its batch, never the process.
///
/// Thread-safety: `handle` from one thread (the link's). `send` is called from the build and run
/// threads, and must be thread-safe.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "actors/device_traits.hpp"
#include "actors/worker_protocol.hpp"
#include "runtime/serial_thread.hpp"
#include "serving/replica.hpp"
#include "serving/run_number_window.hpp"
#include "serving/shared_arena.hpp"
#include "serving/weight_residency.hpp"

namespace troupe::actors {

struct replica_host_options {
  device_traits traits;
  int device_index = 0;
  /// Honour run messages' fault and sleep_ms (the node's fault_injection).
  bool fault_injection = false;
  uint32_t worker_index = 0;  // the worker's position in the node (log lines)
  /// The worker's memory budget (worker_options::memory_budget_bytes): idle weights are evicted
  /// to host memory beyond it and paged back for their next batch (serving/weight_residency.hpp).
  /// 0: none.
  size_t memory_budget_bytes = 0;
  std::shared_ptr<serving::shared_arena> arena;
  /// Runs on the build thread after each successful load (saves the tuning records). May be null.
  std::function<void()> after_load;
  /// Answers to the node (loaded, done). Thread-safe; must outlive the host.
  std::function<void(worker_message)> send;
};

class replica_host {
 public:
  explicit replica_host(replica_host_options o);
  /// Cancels the build in progress (at its next bucket) and waits for it and for the running
  /// batch; loads and batches not started are dropped unanswered (the node is gone or going).
  ~replica_host();
  replica_host(const replica_host&) = delete;
  replica_host& operator=(const replica_host&) = delete;

  /// A load, unload or run from the node. invalid_argument for any other message (the link
  /// handles hello and heartbeats itself).
  status handle(worker_message m);

  /// Replicas loaded and not unloaded.
  size_t replicas() const;

 private:
  /// A live replica and its buckets' layouts. Immutable once built (runs use it after the
  /// lock, an unload drops the table's reference): shared.
  struct hosted {
    std::shared_ptr<serving::replica> r;
    std::vector<serving::bucket_layout> layouts;  // ascending by rows
  };

  void load(const worker_load& l);
  void run(const worker_run& r);
  /// The run's answer, or why it cannot run; fills `done` on success.
  status run_checked(const worker_run& r, worker_done& done);
  expected<std::byte*> region_at(const data_ref& ref, size_t need, const char* what) const;

  replica_host_options options_;
  std::shared_ptr<std::atomic<bool>> stopping_ = std::make_shared<std::atomic<bool>>(false);
  status build_setup_, run_setup_;  // each touched by its own thread only
  bool build_setup_done_ = false, run_setup_done_ = false;
  mutable std::mutex mutex_;  // guards replicas_ and next_id_
  std::map<uint32_t, std::shared_ptr<const hosted>> replicas_;
  uint32_t next_id_ = 0;
  std::vector<std::byte*> inputs_;  // one run's input addresses; the run thread's
  serving::run_number_window runs_seen_;  // duplicate runs; handle()'s (the link thread)
  /// The memory budget (null without one). Called from the build and run threads; it locks
  /// itself, so a run waits for an eviction or page-in in progress.
  std::unique_ptr<serving::weight_residency> residency_;
  // Declared last, destroyed first: their jobs use the members above.
  runtime::serial_thread builds_{"replica-build"};
  runtime::serial_thread runs_{"replica-run"};
};

}  // namespace troupe::actors
