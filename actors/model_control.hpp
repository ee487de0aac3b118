#pragma once
/// What the doors call to change the node's models at run time (the KServe repository extension
/// over HTTP and gRPC): a thread-safe facade over model_manager's messages, so that CAF stays in
/// actors/. Every call returns at once; `done` runs exactly once, on a CAF thread, with the outcome
/// (it must not block). The control mode decides what is allowed: `none` and `poll` refuse load
/// and unload (unsupported, saying why); the index is always served.

#include <functional>
#include <string>

#include "actors/caf_compat.hpp"
#include "core/status.hpp"
#include "serving/model_config.hpp"

namespace troupe::actors {

class model_control {
 public:
  model_control(caf::actor_system& sys, manager_actor manager, serving::model_control_mode mode);

  serving::model_control_mode mode() const { return mode_; }

  /// The bearer token the HTTP and gRPC doors require for load, unload and traffic changes (node
  /// management_token_file); "" when none is configured (then those doors are open, like Triton's,
  /// and only the control mode guards them).
  void set_token(std::string token) { token_ = std::move(token); }
  bool requires_token() const { return !token_.empty(); }
  /// Whether `given` is the token (true where none is configured); compared in constant time. The
  /// management socket's requests carry the token itself.
  bool token_matches(std::string_view given) const;
  /// `authorization` is the request's Authorization header or metadata ("Bearer <token>"): ok, or
  /// invalid_argument saying it is missing or wrong.
  status check_bearer(std::string_view authorization) const;

  void index(std::function<void(expected<model_index>)> done) const;
  /// Loads or reloads `name`; `config_override` ("" for none) replaces its config.yaml.
  void load(std::string name, std::string config_override, std::function<void(status)> done) const;
  void unload(std::string name, std::function<void(status)> done) const;
  /// Shows or changes a model's traffic; promote (it unloads the other versions) only in explicit
  /// mode, where the folder does not decide the versions.
  void traffic(traffic_change change, std::function<void(expected<traffic_report>)> done) const;

 private:
  status allowed(std::string_view what) const;

  caf::actor_system& sys_;
  manager_actor manager_;
  serving::model_control_mode mode_;
  std::string token_;
};

}  // namespace troupe::actors
