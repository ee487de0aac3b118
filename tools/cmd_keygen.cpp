// `troupe keygen`: a CURVE key pair for the nodes of a cluster (docs/cluster.md, Security):
// PREFIX.key (the secret key, mode 0600) and PREFIX.pub (the public key, to hand to the peers).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "cluster/curve_keys.hpp"
#include "tools/commands.hpp"

namespace troupe::tools {
namespace {

status write_key(const std::string& path, const std::string& key, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return io_error("cannot create " + path + ": " + std::strerror(errno) +
                    (errno == EEXIST ? " (keygen never overwrites a key)" : ""));
  const std::string line = key + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) return io_error("cannot write " + path);
  return status::ok();
}

}  // namespace

void add_keygen_command(CLI::App& app, int& exit_code) {
  auto prefix = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "keygen", "Make a CURVE key pair for control and worker nodes (docs/cluster.md)");
  cmd->add_option("prefix", *prefix, "Writes PREFIX.key (secret, 0600) and PREFIX.pub")->required();
  cmd->callback([prefix, &exit_code] {
    auto pair = cluster::generate_curve_keypair();
    status s = pair ? write_key(*prefix + ".key", pair->secret_key, 0600) : pair.error();
    if (s.is_ok()) s = write_key(*prefix + ".pub", pair->public_key, 0644);
    if (!s.is_ok()) {
      exit_code = report_error(s);
      return;
    }
    std::printf("%s\n", pair->public_key.c_str());
    exit_code = exit_ok;
  });
}

}  // namespace troupe::tools
