#pragma once
/// A worker's memory budget (node.yaml `worker_memory_budget_mb`, docs/serving.md, Memory budget)
/// carried out on its replicas: the decisions of serving/replica_residency.hpp, made into
/// evictions and page-ins of the replicas' weights and plan arenas (an evicted group's arenas
/// are unmapped, not copied: nothing in them outlives a run), with their metrics and log events.
/// CAF-free: the in-process worker (actors/worker_core.cpp) and a worker process's serving loop
/// (actors/replica_host.cpp) hold one each when a budget is set, and call it at their few hooks:
///
///   admit    a replica was built: count it; evict idle weights until the worker fits, or refuse
///            (the load fails out_of_memory)
///   remove   a replica was unloaded
///   acquire  before a batch runs on a replica, or a build takes its weights: page them in if
///            they are evicted (evicting others first), and hold them until release
///   release  after the batch or build: the weights are idle again, the most recently used
///
/// Weights are evicted only while nobody holds them: no batch runs on them, no build reads them.
/// A batch that finds its weights evicted carries the page-in in its latency
/// (troupe_weight_page_in_seconds). What moves and what it costs is the runtime's
/// (runtime::session::evict_weights): on a GPU the weights go to pinned host memory and come
/// back at the same device addresses, so plans, CUDA graphs and recorded convolution choices
/// are kept; on the CPU nothing moves (the weights are host memory already) and only the
/// accounting and the checks run.
///
/// Thread-safety: every member may be called from any thread; one mutex serialises them,
/// evictions and page-ins included (so a run that needs its weights waits for an eviction or
/// page-in in progress, and never sees them half moved).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "runtime/graph.hpp"
#include "serving/replica.hpp"
#include "serving/replica_residency.hpp"

namespace troupe::serving {

class serving_metrics;
struct version_metrics;

class weight_residency {
 public:
  struct options {
    size_t budget_bytes = 0;  // > 0: a worker without a budget holds no weight_residency
    uint32_t worker = 0;      // the metrics' and log lines' worker label
    std::string device_label;
    serving_metrics* metrics = nullptr;  // may be null (a worker process, tests)
    /// Called (under the lock: it must not call back) after weights moved; the worker
    /// republishes its memory gauges.
    std::function<void()> moved;
  };

  explicit weight_residency(options o);
  weight_residency(const weight_residency&) = delete;
  weight_residency& operator=(const weight_residency&) = delete;

  /// Counts replica `id` (just built, its weights resident) and evicts idle weights, least
  /// recently used first, until the worker fits its budget. out_of_memory when evicting every
  /// idle weight would not be enough: nothing was evicted, the replica is not counted, and the
  /// caller drops it and fails its load with this error.
  status admit(uint32_t id, std::shared_ptr<replica> r);
  /// Forgets replica `id` (unloaded).
  void remove(uint32_t id);

  /// Before a build that will add about `bytes` of device memory: evicts idle weights so that
  /// they fit, or nothing when even evicting them all would not make the room (admit decides
  /// afterwards, on the replica's real figures). Keeps the device from holding the budget's
  /// worth of other weights while the build allocates.
  void make_room(size_t bytes, const std::string& reason);
  /// About the device memory a build adds: a new instance of `sibling` (arenas like its own;
  /// the weights are shared), or a fresh load of `graph` (its weights at the precision they
  /// will have; arenas are unknown until compiled), times `replicas`.
  static size_t build_estimate(const replica* sibling, const runtime::graph* graph,
                               runtime::precision precision, size_t replicas);

  /// Before a batch on `r`, or a build taking `r`'s weights: pages them in when evicted
  /// (evicting idle weights first to make room) and holds them, unevictable, until the matching
  /// release. An error (out_of_memory: no room even after evicting every idle weight; or the
  /// device's) holds nothing. A replica this worker does not count: nothing to do.
  status acquire(const replica& r, const std::string& reason);
  /// Ends an acquire: the weights are idle again and the most recently used. Refreshes the
  /// replica's figures when it compiled (or dropped) plans meanwhile.
  void release(const replica& r);

  /// The most a new model's plan arena may take (replica::options::max_arena_bytes): the budget
  /// less every replica's fixed bytes and the new model's weights (`weights_bytes`, estimated),
  /// so that it fits once every idle model is evicted. A bucket needing more runs as slices.
  /// At least 1 (then every plan is refused and the load fails out_of_memory).
  size_t arena_room(size_t weights_bytes) const;
  /// The weights of the model file at `path`, estimated from its size (halved for a 16-bit
  /// precision): for a load whose graph is not read yet.
  static size_t file_weights_estimate(const std::string& path, runtime::precision precision);

  size_t budget_bytes() const { return state_.budget_bytes(); }
  size_t resident_bytes() const;
  /// Evictions and page-ins so far (also in the metrics), for tests.
  uint64_t evictions() const;
  uint64_t page_ins() const;

 private:
  using group_id = replica_residency::group_id;
  struct tracked {
    std::shared_ptr<replica> r;
    uint64_t plans_seen = 0;  // shape cache plans + evictions at the last refresh
  };

  std::optional<group_id> group_of(const replica& r) const;
  /// Evicts `victims` (chosen by state_) for `reason`; stops at the first failure.
  status evict(const std::vector<group_id>& victims, const std::string& reason);
  void refresh(uint32_t id, tracked& t);
  std::shared_ptr<version_metrics> metrics_of(const replica& r);
  void publish();

  options options_;
  mutable std::mutex mutex_;  // guards everything below and serialises every move
  replica_residency state_;
  std::map<uint32_t, tracked> replicas_;
  std::map<const void*, group_id> groups_;  // by runtime::session::weights_identity
  group_id next_group_ = 1;
  std::map<std::pair<std::string, int64_t>, std::shared_ptr<version_metrics>> version_metrics_;
  uint64_t evictions_ = 0;
  uint64_t page_ins_ = 0;
};

}  // namespace troupe::serving
