#include "actors/supervisor.hpp"

#include <algorithm>
#include <string>

#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"

namespace troupe::actors {

using serving::log_level;
using serving::time_point;

namespace {

/// What the supervisor keeps per worker index.
struct worker_record {
  /// Failures since the worker was last stable (up for reset_after): the exponent of the backoff.
  uint32_t failures = 0;
  /// Bumped by every failure and every restart: a timer armed before carries an older value.
  uint64_t generation = 0;
  time_point started{};  // actor clock: when the current worker was spawned
};

struct supervisor_state {
  supervisor_options options;
  /// The current workers, shared with the exit hook that stops them with the supervisor.
  std::shared_ptr<std::vector<worker_actor>> current =
      std::make_shared<std::vector<worker_actor>>();
  manager_actor manager;
  std::vector<worker_record> records;  // by worker index
  static inline const char* name = "supervisor";

  void set_backoff_gauge(uint32_t index, std::chrono::milliseconds delay) const {
    if (options.metrics)
      options.metrics->set_worker_restart_backoff(index,
                                                  std::chrono::duration<double>(delay).count());
  }
};

using self_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

/// Arms the reset of worker `index`'s backoff: if it is still the same worker after reset_after,
/// its next failure starts from the initial delay again.
void watch_stability(self_ptr self, uint32_t index) {
  auto& st = self->state;
  self->delayed_send(self, st.options.backoff.reset_after, stable_atom::value, index,
                     st.records[index].generation);
}

supervisor_actor::behavior_type supervisor(self_ptr self, supervisor_options o) {
  auto& st = self->state;
  st.options = std::move(o);
  st.records.resize(st.options.workers.size());
  const time_point now = self->clock().now();
  for (uint32_t i = 0; i < st.options.workers.size(); ++i) {
    self->monitor(st.options.workers[i]);
    st.records[i].started = now;
  }
  *st.current = st.options.workers;
  self->attach_functor([current = st.current](const caf::error&) {
    for (const auto& w : *current)
      if (w) caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
  });

  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto& workers = st.options.workers;
    size_t found = workers.size();
    for (size_t i = 0; i < workers.size(); ++i)
      if (workers[i] && workers[i].address() == dm.source) found = i;
    if (found == workers.size()) return;
    const auto index = static_cast<uint32_t>(found);
    workers[index] = nullptr;
    *st.current = workers;
    if (!dm.reason || dm.reason == caf::exit_reason::user_shutdown ||
        dm.reason == caf::exit_reason::normal)
      return;
    worker_record& r = st.records[index];
    ++r.failures;
    ++r.generation;
    const std::chrono::milliseconds delay = restart_delay(st.options.backoff, r.failures);
    const double up_s = std::chrono::duration<double>(self->clock().now() - r.started).count();
    const std::string reason = self->system().render(dm.reason);
    log_event(log_level::warn, "worker failed",
              {{"worker", index},
               {"kind", worker_kind_name(st.options.worker_settings[index].kind)},
               {"attempt", r.failures},
               {"delay_ms", static_cast<int64_t>(delay.count())},
               {"up_s", up_s},
               {"reason", reason}});
    st.set_backoff_gauge(index, delay);
    self->delayed_send(self, delay, restart_atom::value, index, r.generation);
  });

  return {
      [=](subscr_atom, manager_actor m) { self->state.manager = std::move(m); },
      [=](workers_atom) { return self->state.options.workers; },
      [=](restart_atom, uint32_t index, uint64_t generation) {
        auto& st = self->state;
        worker_record& r = st.records[index];
        if (generation != r.generation || st.options.workers[index]) return;
        worker_actor fresh = spawn_worker(self->system(), st.options.worker_settings[index],
                                          st.options.detached_workers);
        self->monitor(fresh);
        st.options.workers[index] = fresh;
        *st.current = st.options.workers;
        ++r.generation;
        r.started = self->clock().now();
        log_event(log_level::info, "worker restarted",
                  {{"worker", index}, {"attempt", r.failures}});
        if (st.options.metrics) st.options.metrics->count_worker_restart();
        if (st.manager) self->send(st.manager, replaced_atom::value, index, fresh);
        watch_stability(self, index);
      },
      [=](stable_atom, uint32_t index, uint64_t generation) {
        auto& st = self->state;
        worker_record& r = st.records[index];
        if (generation != r.generation || r.failures == 0) return;
        r.failures = 0;
        st.set_backoff_gauge(index, std::chrono::milliseconds(0));
      },
  };
}

}  // namespace

std::chrono::milliseconds restart_delay(const restart_backoff& b, uint32_t failures) {
  std::chrono::milliseconds d = b.initial;
  for (uint32_t i = 1; i < failures && d < b.max; ++i) d *= 2;
  return std::min(d, b.max);
}

supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_options o) {
  // Every worker's series exists from the start (0: no backoff). Set here, on the caller's
  // thread, not in the actor's first run: a node that fails to start stops its actors and
  // destroys the metrics, and the supervisor may only then run for the first time.
  if (o.metrics)
    for (uint32_t i = 0; i < o.workers.size(); ++i) o.metrics->set_worker_restart_backoff(i, 0);
  return sys.spawn(supervisor, std::move(o));
}

}  // namespace troupe::actors
