#pragma once
/// How `troupe models` and `troupe faults` reach a node's management socket
/// (cluster/management_socket.hpp): the options every one of their subcommands takes
/// (--server, --token-file, --timeout) and the connection they make.

#include <chrono>
#include <memory>
#include <string>

#include "cluster/management_client.hpp"
#include "core/status.hpp"

namespace CLI {
class App;
}

namespace troupe::tools {

struct management_connection_options {
  std::string server = "tcp://127.0.0.1:5556";
  std::string token_file;  // "" when the node needs no token
  double timeout_s = 600;

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  }
};

/// Declares --server/-s, --token-file and --timeout on `sub`, writing into `o` (which outlives
/// the parse).
void add_management_connection_options(CLI::App& sub, management_connection_options& o);

/// Reads the token file (when given: mode 0600, as the node's own) and connects.
expected<std::unique_ptr<cluster::management_client>> connect_management(
    const management_connection_options& o);

}  // namespace troupe::tools
