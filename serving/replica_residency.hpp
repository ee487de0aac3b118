#pragma once
/// What a worker's memory budget counts, and whose memory goes first when it is exceeded. CAF-free
/// and device-free bookkeeping: serving/weight_residency.hpp carries its decisions out on the
/// replicas (evicts and pages in their weights and arenas), this class only decides.
///
/// Counted against the budget: every replica's fixed device bytes (kernel-owned buffers and
/// scratch: they stay while the replica is loaded), plus, for every resident weight group, its
/// weights and its replicas' plan arenas. A weight group is the set of replicas that share one
/// copy of the weights (instances of one model version on one device,
/// runtime::session::create_instance): its weights and its replicas' arenas are on the device or
/// evicted as one (arenas hold nothing between runs: evicting them only gives the memory back).
///
/// Which groups go: resident groups that nobody holds (no batch running on them, no build
/// taking its weights from them), least recently used first. Use is a tick that counts up with
/// every `touch`, not a clock: decisions are deterministic and tests drive them directly.
///
/// Thread-safety: none; the owner serialises.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "core/status.hpp"

namespace troupe::serving {

class replica_residency {
 public:
  using group_id = uint64_t;

  /// `budget_bytes` 0: no budget (everything fits, nothing is ever chosen).
  explicit replica_residency(size_t budget_bytes) : budget_(budget_bytes) {}
  size_t budget_bytes() const { return budget_; }

  /// A replica of weight group `group` holding `fixed_bytes` of its own for as long as it is
  /// loaded and `arena_bytes` of arenas that go with the group; the group's weights take
  /// `weights_bytes` when resident. A new group starts resident and most recently used. Adding a
  /// replica id twice replaces it.
  void add(uint32_t replica, group_id group, size_t fixed_bytes, size_t weights_bytes,
           size_t arena_bytes = 0);
  /// Forgets a replica; returns true when its group went with it (its last replica).
  bool remove(uint32_t replica);
  /// New figures: a plan compiled for a new shape grows a replica's arenas and its group's
  /// weights.
  void update(uint32_t replica, size_t fixed_bytes, size_t weights_bytes, size_t arena_bytes = 0);

  std::optional<group_id> group_of(uint32_t replica) const;
  /// Replicas of `g`, ascending.
  std::vector<uint32_t> replicas_of(group_id g) const;
  bool has_group(group_id g) const { return groups_.count(g) > 0; }
  bool resident(group_id g) const;
  void set_resident(group_id g, bool resident);
  size_t weights_bytes(group_id g) const;
  /// What evicting `g` gives back and paging it in takes: its weights and its replicas' arenas.
  size_t evictable_bytes(group_id g) const;
  /// Makes `g` the most recently used.
  void touch(group_id g);
  /// Holds `g` (a batch runs on it, a build reads its weights): never chosen while held. Holds
  /// count; each pin is undone by one unpin.
  void pin(group_id g);
  void unpin(group_id g);
  bool pinned(group_id g) const;

  /// Bytes counted against the budget now.
  size_t resident_bytes() const;
  /// Of those, what the replicas hold however their groups go (their fixed bytes).
  size_t fixed_bytes() const;
  /// Whether `extra_bytes` more fit the budget now (always, without one).
  bool fits(size_t extra_bytes) const;
  /// The resident groups to evict, least recently used first, so that resident_bytes() +
  /// `extra_bytes` fits the budget: idle ones (not pinned) other than `keep`. Empty when it fits
  /// already. out_of_memory, saying by how much, when evicting every candidate is not enough.
  expected<std::vector<group_id>> victims_for(size_t extra_bytes,
                                              std::optional<group_id> keep = std::nullopt) const;

 private:
  struct group {
    size_t weights_bytes = 0;
    bool resident = true;
    uint64_t last_use = 0;
    uint32_t pins = 0;
    uint32_t replicas = 0;
  };
  struct member {
    group_id group = 0;
    size_t fixed_bytes = 0;
    size_t arena_bytes = 0;
  };

  size_t budget_ = 0;
  uint64_t tick_ = 0;
  std::map<uint32_t, member> replicas_;
  std::map<group_id, group> groups_;
};

}  // namespace troupe::serving
