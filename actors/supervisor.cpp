#include "actors/supervisor.hpp"

#include <spdlog/spdlog.h>

#include <deque>

#include "actors/metrics.hpp"

namespace troupe::actors {
namespace {

struct supervisor_state {
  supervisor_options options;
  /// The current workers, shared with the exit hook that stops them with the supervisor.
  std::shared_ptr<std::vector<worker_actor>> current =
      std::make_shared<std::vector<worker_actor>>();
  manager_actor manager;
  std::vector<std::deque<time_point>> restarts;  // per worker index, within the window
  static inline const char* name = "supervisor";
};

supervisor_actor::behavior_type supervisor(
    supervisor_actor::stateful_pointer<supervisor_state> self, supervisor_options o) {
  self->state.options = std::move(o);
  self->state.restarts.resize(self->state.options.workers.size());
  for (const auto& w : self->state.options.workers) self->monitor(w);
  *self->state.current = self->state.options.workers;
  self->attach_functor([current = self->state.current](const caf::error&) {
    for (const auto& w : *current)
      if (w) caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
  });

  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto& workers = st.options.workers;
    size_t index = workers.size();
    for (size_t i = 0; i < workers.size(); ++i)
      if (workers[i] && workers[i].address() == dm.source) index = i;
    if (index == workers.size()) return;
    if (!dm.reason || dm.reason == caf::exit_reason::user_shutdown ||
        dm.reason == caf::exit_reason::normal) {
      workers[index] = nullptr;
      *st.current = workers;
      return;
    }
    const time_point now = self->clock().now();
    auto& history = st.restarts[index];
    while (!history.empty() && now - history.front() > st.options.restart_window)
      history.pop_front();
    if (static_cast<int>(history.size()) >= st.options.max_restarts) {
      spdlog::error("worker {} failed ({}); {} restarts within {} s: leaving it down", index,
                    self->system().render(dm.reason), history.size(),
                    st.options.restart_window.count());
      workers[index] = nullptr;
      *st.current = workers;
      return;
    }
    history.push_back(now);
    spdlog::warn("worker {} failed ({}); replacing it", index, self->system().render(dm.reason));
    worker_actor fresh = spawn_worker(self->system(), st.options.worker_settings[index],
                                      st.options.detached_workers);
    self->monitor(fresh);
    workers[index] = fresh;
    *st.current = workers;
    if (st.options.metrics) st.options.metrics->count_worker_restart();
    if (st.manager)
      self->send(st.manager, replaced_atom::value, static_cast<uint32_t>(index), fresh);
  });

  return {
      [=](subscr_atom, manager_actor m) { self->state.manager = std::move(m); },
      [=](workers_atom) { return self->state.options.workers; },
  };
}

}  // namespace

supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_options o) {
  return sys.spawn(supervisor, std::move(o));
}

}  // namespace troupe::actors
