#pragma once
/// A child process of the node (a worker process, `troupe worker`): started with fork and exec
/// so that, between the two, the child can ask to die with its parent (prctl PR_SET_PDEATHSIG:
/// SIGKILL when the thread that started it ends, which is the worker link's thread, or when the
/// node dies, however it dies), leave the node's process group (signals meant for the node's
/// group, a terminal's Ctrl-C, reach the node alone, which drains before its workers go),
/// unblock the signals the node blocks in every thread, keep
/// exactly one inherited descriptor (the shared memory, at a number the command line names)
/// and close every other. Only async-signal-safe calls run between fork and exec.
///
/// Waiting: a pidfd (Linux 5.3+) that becomes readable when the child exits, to poll beside
/// sockets; `reap` collects the exit status so that no zombie stays. Destroying the object kills
/// (SIGKILL) and reaps a child still running. Thread-safety: one owner thread.

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/status.hpp"

namespace troupe::cluster {

class child_process {
 public:
  /// Starts `argv[0]` (a path) with `argv`. `keep_fd`, when >= 0, is inherited as descriptor
  /// `keep_fd_as` (stdin is /dev/null; stdout and stderr are the node's).
  static expected<child_process> start(const std::vector<std::string>& argv, int keep_fd,
                                       int keep_fd_as);

  child_process() = default;
  child_process(child_process&& o) noexcept;
  child_process& operator=(child_process&& o) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process();

  pid_t pid() const { return pid_; }
  /// Readable (POLLIN) once the child has exited; -1 without pidfd support (poll `reap` then).
  int exit_fd() const { return pidfd_; }
  /// Collects the exit status without blocking: "" while the child runs, else how it ended
  /// ("exited with status 3", "killed by signal 9").
  std::string reap();
  /// SIGKILL and wait for the child (no-op once reaped); returns how it ended.
  std::string kill_and_reap();
  /// Sends `sig` to a child still running (no-op once reaped).
  void send_signal(int sig);

 private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool reaped_ = false;
};

}  // namespace troupe::cluster
