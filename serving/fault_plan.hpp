#pragma once
/// The faults an operator or a test has asked for (issue 12, item 3), and when each fires.
/// CAF-free: the fault injector actor owns one, the places where faults can happen (a worker
/// before a batch, a hop before a message) ask it at each chance, and the management socket and
/// node.yaml add and remove rules. Only a node with `fault_injection: true` has one.
///
/// A rule names a kind of fault and a target; at each chance the plan finds the first rule of that
/// kind whose target matches the site and lets it fire: always, or with its probability drawn
/// from its own generator (seeded, so a run repeats), at most `times` times (0: no limit). A rule
/// that has fired `times` times stays listed as spent until removed.
///
/// Targets and sites: a site is "worker:N" for the faults of a worker, "<hop>:N" for a message to
/// or from worker N on a hop (batcher_worker, worker_link) and "frontend_router" for the hop
/// without workers. A target is a site ("worker:2"), a site family ("worker", "batcher_worker":
/// every worker) or "worker:*" (the same).
///
/// Thread-safety: every member takes the plan's mutex; chances come from any thread. The observer
/// (set_observer) runs on the thread of the chance that fired, after the mutex is released.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"

namespace troupe::serving {

enum class fault_kind : uint8_t {
  fail_allocations,  // the next `allocations` device allocations of the worker fail OOM
  device_trap,       // a real sticky CUDA error in the worker (a trap kernel; GPU workers)
  abort,             // the worker's process aborts (SIGABRT)
  segfault,          // the worker's process dies of SIGSEGV
  hang,              // the worker stops answering for `delay` (0: until it is killed)
  delay,             // a message on the hop is delivered `delay` late
  drop,              // a message on the hop is dropped
  duplicate,         // a message on the hop is delivered twice
  slow_link,         // like delay, meant for every message (a rule with times 0)
};

std::string_view to_string(fault_kind k);
expected<fault_kind> parse_fault_kind(std::string_view name);
/// Whether the kind happens to messages on a hop (delay, drop, duplicate, slow_link) rather than
/// to a worker.
bool is_message_fault(fault_kind k);

/// The hops whose messages can be delayed, dropped or duplicated.
inline constexpr std::string_view fault_hops[] = {"frontend_router", "batcher_worker",
                                                  "worker_link"};

struct fault_rule {
  fault_kind kind = fault_kind::hang;
  std::string target;  // see the header
  uint32_t times = 1;  // firings before the rule is spent; 0: no limit
  double probability = 1.0;  // of firing at each chance, in (0, 1]
  uint64_t seed = 1;         // of the rule's generator (with probability < 1)
  std::chrono::milliseconds delay{0};  // hang, delay, slow_link
  uint32_t allocations = 1;            // fail_allocations: allocations failed per firing
};

/// A rule as listed: what it is and what it has done.
struct fault_rule_state {
  uint64_t id = 0;
  fault_rule rule;
  uint64_t chances = 0;  // sites it matched
  uint64_t fired = 0;
  bool spent() const { return rule.times > 0 && fired >= rule.times; }
};

/// Checks a rule (kind and target agree: a message fault targets a hop, the others a worker;
/// probability in (0, 1]; a delay for delay and slow_link; at least one allocation). Typed
/// invalid_argument errors whose message starts with the field's name as node.yaml and the
/// management socket spell it ("probability: must be in (0, 1], got 0"), so that a caller can put
/// where the rule came from in front ("faults[2].probability: ...").
status validate(const fault_rule& r);

/// Whether `target` covers `site` (see the header).
bool target_matches(std::string_view target, std::string_view site);

class fault_plan {
 public:
  /// Told of every firing: the rule as it fired, its id and the site. Called on the thread whose
  /// chance fired (a worker, a batcher, the frontend: the request path), outside the plan's mutex
  /// (it may call the plan), possibly on several threads at once: it must be thread-safe and
  /// cheap.
  using observer = std::function<void(const fault_rule& rule, uint64_t id, std::string_view site)>;

  /// Replaces the observer (empty: none). A chance that fired just before may still tell the
  /// previous one.
  void set_observer(observer o);

  /// Adds a checked rule; returns its id (ids count up from 1, never reused).
  expected<uint64_t> add(fault_rule r);
  /// Removes one rule; false if there is no such id.
  bool remove(uint64_t id);
  /// Removes every rule; returns how many there were.
  size_t clear();

  /// A chance for a fault of `kind` at `site`: the rule that fires now, if any (its firing is
  /// counted, the observer told). Rules are asked in the order they were added; a spent rule is
  /// passed over.
  std::optional<fault_rule> fire(fault_kind kind, std::string_view site);

  std::vector<fault_rule_state> list() const;
  /// Whether any rule of `kind` may still fire (sites skip the asking when none can: a plan with
  /// no message faults costs the hops one lock-free check). Relaxed: a rule added now is seen
  /// by the next chance or the one after.
  bool may_fire(fault_kind kind) const;

 private:
  struct entry {
    fault_rule_state state;
    std::mt19937_64 random;
  };
  void refresh_kinds();  // under mutex_

  mutable std::mutex mutex_;
  std::vector<entry> rules_;
  uint64_t next_id_ = 1;
  std::atomic<uint32_t> live_kinds_{0};  // bit per fault_kind with a rule that may fire
  /// Guarded by mutex_; copied (a pointer) by a firing chance, which calls it unlocked.
  std::shared_ptr<const observer> observer_;
};

}  // namespace troupe::serving
