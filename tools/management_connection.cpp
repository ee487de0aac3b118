#include "tools/management_connection.hpp"

#include <CLI/CLI.hpp>

#include "cluster/management_socket.hpp"

namespace troupe::tools {

void add_management_connection_options(CLI::App& sub, management_connection_options& o) {
  sub.add_option("--server,-s", o.server, "The node's management endpoint")->capture_default_str();
  sub.add_option("--token-file", o.token_file,
                 "File holding the node's management token (mode 0600)");
  sub.add_option("--timeout", o.timeout_s, "Seconds to wait for the answer")->capture_default_str();
}

expected<std::unique_ptr<cluster::management_client>> connect_management(
    const management_connection_options& o) {
  std::string token;
  if (!o.token_file.empty()) {
    TROUPE_ASSIGN_OR_RETURN(token, cluster::read_token_file(o.token_file));
  }
  return cluster::management_client::connect(o.server, std::move(token));
}

}  // namespace troupe::tools
