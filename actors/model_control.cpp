#include "actors/model_control.hpp"

#include <memory>
#include <utility>

namespace troupe::actors {

using serving::model_control_mode;

namespace {

/// One request to the manager from a short-lived actor: `deliver` runs once, with the answer, or
/// with unavailable when the manager exits first (the node is stopping).
///
/// The actor monitors the manager and drops the monitor before it quits: CAF 0.17 keeps a monitor
/// record on the *manager* until the manager exits, and the record's weak reference keeps this
/// actor's memory block allocated (~1 KB per load, unload or index call, for the node's life).
template <class Answer, class... Args>
void ask_manager(caf::actor_system& sys, const manager_actor& manager,
                 std::function<void(expected<Answer>)> deliver, Args... args) {
  sys.spawn([manager, deliver = std::move(deliver), args...](caf::event_based_actor* self) {
    auto finish = [self, manager, deliver](expected<Answer> r) {
      deliver(std::move(r));
      self->demonitor(manager.address());
      self->quit();
    };
    self->monitor(manager);
    self->set_down_handler([finish](caf::down_msg&) {
      finish(make_error(error_code::unavailable, "the node is stopping"));
    });
    self->request(manager, caf::infinite, args...)
        .then([finish](Answer& a) { finish(std::move(a)); },
              [self, finish](caf::error& e) { finish(from_caf_error(self->system(), e)); });
  });
}

}  // namespace

model_control::model_control(caf::actor_system& sys, manager_actor manager, model_control_mode mode)
    : sys_(sys), manager_(std::move(manager)), mode_(mode) {}

status model_control::allowed(std::string_view what) const {
  switch (mode_) {
    case model_control_mode::explicit_:
      return status::ok();
    case model_control_mode::none:
      return unsupported(std::string(what) +
                         " refused: the node's model control mode is none (models load at "
                         "start); start it with --model-control-mode explicit");
    case model_control_mode::poll:
      return unsupported(std::string(what) +
                         " refused: the node's model control mode is poll (the repository folder "
                         "decides); change the folder, or use --model-control-mode explicit");
  }
  return internal_error("unknown model control mode");
}

bool model_control::token_matches(std::string_view given) const {
  if (token_.empty()) return true;
  unsigned char diff = given.size() == token_.size() ? 0 : 1;
  for (size_t i = 0; i < token_.size(); ++i)
    diff |= static_cast<unsigned char>(token_[i] ^ (i < given.size() ? given[i] : 0));
  return diff == 0;
}

status model_control::check_bearer(std::string_view authorization) const {
  constexpr std::string_view scheme = "Bearer ";
  const std::string_view given =
      authorization.substr(0, scheme.size()) == scheme ? authorization.substr(scheme.size())
                                                        : std::string_view{};
  if (!token_matches(given))
    return invalid_argument(
        "model control needs the node's management token: Authorization: Bearer <token>");
  return status::ok();
}

void model_control::index(std::function<void(expected<model_index>)> done) const {
  ask_manager<model_index>(sys_, manager_, std::move(done), index_atom::value);
}

void model_control::load(std::string name, std::string config_override,
                         std::function<void(status)> done) const {
  if (status s = allowed("load of model '" + name + "'"); !s.is_ok()) return done(s);
  ask_manager<bool>(
      sys_, manager_,
      [done = std::move(done)](expected<bool> r) { done(r ? status::ok() : r.error()); },
      mload_atom::value, std::move(name), std::move(config_override));
}

void model_control::unload(std::string name, std::function<void(status)> done) const {
  if (status s = allowed("unload of model '" + name + "'"); !s.is_ok()) return done(s);
  ask_manager<bool>(
      sys_, manager_,
      [done = std::move(done)](expected<bool> r) { done(r ? status::ok() : r.error()); },
      munload_atom::value, std::move(name));
}

void model_control::traffic(traffic_change change,
                            std::function<void(expected<traffic_report>)> done) const {
  if (change.what == traffic_change::kind::promote) {
    if (status s = allowed("promote of model '" + change.model + "'"); !s.is_ok()) return done(s);
  }
  ask_manager<traffic_report>(sys_, manager_, std::move(done), traffic_atom::value,
                              std::move(change));
}

}  // namespace troupe::actors
