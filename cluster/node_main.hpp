#pragma once
/// `troupe serve`: one node (control and worker roles) in this process. Loads the repository,
/// listens, and on SIGTERM (or SIGINT) stops accepting work (new requests are answered
/// UNAVAILABLE), finishes the requests in flight (up to the node's drain_timeout; what is left
/// then is answered CANCELLED), stops the actors and returns 0.

#include <optional>
#include <string>

#include "core/status.hpp"

namespace troupe::cluster {

struct serve_options {
  std::string models_dir;             // overrides the node config's `models`
  std::optional<std::string> listen;  // overrides `listen`
  std::optional<int> metrics_port;    // overrides `metrics_port` (0: none)
  std::optional<int> http_port;       // overrides `http_port` (0: no KServe HTTP door)
  std::optional<std::string> gpus;    // overrides `gpus`: "all", "none" or "0,1"
  std::string config_path;            // node.yaml ("" = defaults)
  std::optional<std::string> log_level;
};

/// Runs the node until SIGTERM/SIGINT. Prints one JSON line to stdout once it serves:
/// {"event":"ready","endpoint":"tcp://...","metrics_port":N,"http_port":N} (0: that door is off).
status run_serve(const serve_options& o);

}  // namespace troupe::cluster
