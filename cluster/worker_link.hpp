#pragma once
/// The node's side of its worker processes (docs/worker-processes.md): a worker_launcher owns
/// what they share (the ZeroMQ context, a private directory for their ipc:// endpoints, the
/// command that starts them) and makes the worker_channel_factory the node injects into its
/// workers (actors/worker_channel.hpp). Each channel is a worker_link: one ZeroMQ ROUTER bound
/// at ipc://<dir>/w<index>-<n>, the process started as a child (cluster/child_process.hpp), and
/// one thread that owns the socket and does everything else:
///
/// - starts the process (so that its parent-death signal is tied to this thread: the process
///   dies with its link, and with the node however the node dies);
/// - sends what the proxy posted (cluster/message_outbox.hpp) and heartbeats every interval;
/// - receives, decodes and checks the process's messages (cluster/worker_codec.hpp): the first
///   must be the hello of the process it started (its pid), from then on only that peer is
///   heard; heartbeats stay here, the rest go to the proxy;
/// - reports, once, that the process is gone: it exited (its pidfd), sent nothing for the
///   heartbeat timeout, or broke the protocol (the process is then killed).
///
/// Destroying a link kills (SIGKILL) and reaps its process. The ROUTER carries the same
/// envelopes a tcp:// link to a worker on another host would (the multi-node issue); only the
/// tensor bytes would travel as frames there instead of through shared memory.

#include <memory>
#include <string>

#include "actors/worker_channel.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

struct worker_launcher_options {
  std::string executable;          // the `troupe` binary; "": this process's own (/proc/self/exe)
  std::string log_level = "info";  // the processes' --log-level
  /// Where the ipc endpoints go: a fresh private (0700) directory is made under it.
  /// "": $XDG_RUNTIME_DIR, else /tmp.
  std::string runtime_parent;
};

class worker_launcher {
 public:
  static expected<std::unique_ptr<worker_launcher>> create(worker_launcher_options o);
  /// Removes the endpoint directory. Every link it made must be gone (the node's actors have
  /// stopped).
  ~worker_launcher();

  /// Starts a process and its link. Thread-safe; the factory keeps the launcher's shared state
  /// alive for as long as it is held.
  actors::worker_channel_factory factory();
  const std::string& directory() const;

  struct shared;  // the ZeroMQ context, the directory, the command (worker_link.cpp)

 private:
  explicit worker_launcher(std::shared_ptr<shared> s) : shared_(std::move(s)) {}
  std::shared_ptr<shared> shared_;
};

}  // namespace troupe::cluster
