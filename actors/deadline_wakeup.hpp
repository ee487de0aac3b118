#pragma once
/// One wake-up at a time for an actor's earliest deadline among many (the load timeouts of a
/// worker and of a worker process's proxy). A timer per deadline would stay in the actor clock for
/// its whole timeout (5 minutes by default) after work that took milliseconds: a node that loads
/// often held thousands. Here the actor sends itself (overdue, generation) for the earliest
/// deadline only; a wake-up left pending by an earlier arming fires with an old generation and
/// does nothing.
///
/// Usage: after adding a deadline, `arm(self, earliest)`; in the (overdue_atom, g) handler,
/// `if (!w.fired(g)) return;`, settle what is due, then `arm` for what is left.

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "actors/caf_compat.hpp"
#include "serving/job.hpp"

namespace troupe::actors {

class deadline_wakeup {
 public:
  /// Sends `self` an (overdue_atom, generation) at `earliest` unless a wake-up at or before it is
  /// pending already (no_deadline: nothing to wait for).
  template <class Self>
  void arm(Self* self, serving::time_point earliest) {
    if (earliest == serving::no_deadline || earliest >= at_) return;
    at_ = earliest;
    const auto now = self->clock().now();
    const auto delay = earliest > now ? std::chrono::duration_cast<std::chrono::microseconds>(
                                            earliest - now)
                                      : std::chrono::microseconds(0);
    self->delayed_send(self, delay, overdue_atom::value, ++generation_);
  }

  /// Whether the wake-up with `generation` is the one pending (then none is any more).
  bool fired(uint64_t generation) {
    if (generation != generation_) return false;
    at_ = serving::no_deadline;
    return true;
  }

 private:
  serving::time_point at_ = serving::no_deadline;  // of the pending wake-up; no_deadline: none
  uint64_t generation_ = 0;
};

}  // namespace troupe::actors
