#pragma once
/// A session's compiled-shape cache: one plan per distinct set of input infos, bounded by a
/// number of plans and by the bytes of their arenas, least recently used plans evicted first.
///
/// Ownership: the cache owns its plans through shared pointers and hands out copies of them as
/// leases. A plan with a lease out is in use (a run holds one for its whole length; a replica
/// holds one for the life of a plan it compiled at load) and is never evicted, so a plan is
/// never freed under a run: it goes when the cache has dropped it and the last lease ends.
/// Bounds: every insert, and every trim (the session trims after each of its runs), evicts until
/// they hold; what it cannot evict is in use. So the cache exceeds a bound only by plans that
/// were in use at the last insert or trim (and by one plan larger than max_bytes on its own).
///
/// Not thread-safe: the owning session's mutex guards every call. "Not in use" is read as a
/// use count of 1 under that mutex; it cannot change to "in use" behind the cache's back,
/// because a new lease is made only by this class (under the mutex) or by copying a lease (which
/// is one already).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

namespace troupe::runtime {

class plan;  // runtime/plan.hpp

/// Bounds of a session's compiled-shape cache (session_options::shape_cache; per model as
/// `shape_cache: {max_plans, max_bytes}` in config.yaml). Both must be positive.
struct shape_cache_limits {
  size_t max_plans = 64;
  /// Planned arena bytes (plan_memory::planned_arena_bytes: every intermediate and workspace)
  /// over the cached plans. The weights are shared by every plan and not counted, nor are
  /// kernels' own copies (reordered weights, scratch they allocate themselves).
  size_t max_bytes = size_t{1} << 30;
};

/// What the cache holds now, and what it has evicted since the session was made.
struct shape_cache_stats {
  size_t plans = 0;
  size_t bytes = 0;  // planned arena bytes of the cached plans
  uint64_t evictions = 0;
};

class plan_cache {
 public:
  explicit plan_cache(shape_cache_limits limits) : limits_(limits) {}

  const shape_cache_limits& limits() const { return limits_; }

  /// The plan cached under `key` (a lease), now the most recently used; null when not cached
  /// (never compiled, or evicted).
  std::shared_ptr<plan> find(const std::string& key);
  /// Whether `key` is cached; the order of use is left as it is.
  bool contains(const std::string& key) const { return index_.count(key) > 0; }
  /// Caches `p` under `key` (not cached yet) as the most recently used, after evicting least
  /// recently used plans not in use until the bounds hold with it; returns a lease of it.
  std::shared_ptr<plan> insert(std::string key, std::unique_ptr<plan> p);
  /// Evicts least recently used plans not in use until the bounds hold (or all left are in use).
  void trim() { make_room(0, 0); }

  shape_cache_stats stats() const { return {entries_.size(), bytes_, evictions_}; }
  /// Every cached plan, most recently used first.
  void for_each(const std::function<void(const plan&)>& visit) const;

 private:
  struct entry {
    std::string key;
    std::shared_ptr<plan> compiled;
    size_t bytes = 0;
  };
  /// Evicts least recently used plans not in use until `plans` more plans of `bytes` more bytes
  /// fit within the bounds, or every plan left is in use.
  void make_room(size_t plans, size_t bytes);

  shape_cache_limits limits_;
  std::list<entry> entries_;  // most recently used first
  std::unordered_map<std::string, std::list<entry>::iterator> index_;
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace troupe::runtime
