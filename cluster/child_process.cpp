#include "cluster/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace troupe::cluster {
namespace {

std::string how_it_ended(int st) {
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return "killed by signal " + std::to_string(WTERMSIG(st));
  return "ended (status " + std::to_string(st) + ")";
}

/// In the child, before exec: only async-signal-safe calls.
[[noreturn]] void exec_child(char* const* argv, int keep_fd, int keep_fd_as, pid_t parent,
                             int max_fd) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(126);
  if (getppid() != parent) _exit(126);  // the parent went before the prctl
  // A process group of its own: a terminal's Ctrl-C (SIGINT to the foreground group) or a
  // `timeout` signalling its group reaches the node, which drains first; the process goes with
  // the node afterwards.
  setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);  // the node blocks SIGTERM/SIGINT in every thread
  signal(SIGPIPE, SIG_DFL);
  const int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0 && null_fd != 0) {
    dup2(null_fd, 0);
    close(null_fd);
  }
  if (keep_fd >= 0) {
    if (keep_fd == keep_fd_as) {
      fcntl(keep_fd, F_SETFD, 0);  // keep it across exec
    } else if (dup2(keep_fd, keep_fd_as) < 0) {
      _exit(126);
    }
  }
  const unsigned first = static_cast<unsigned>(keep_fd >= 0 ? keep_fd_as + 1 : 3);
  if (keep_fd >= 0 && keep_fd_as > 3)
    for (int fd = 3; fd < keep_fd_as; ++fd) close(fd);
  if (syscall(SYS_close_range, first, ~0u, 0) != 0)
    for (int fd = static_cast<int>(first); fd < max_fd; ++fd) close(fd);
  execv(argv[0], argv);
  _exit(127);
}

}  // namespace

expected<child_process> child_process::start(const std::vector<std::string>& argv, int keep_fd,
                                             int keep_fd_as) {
  if (argv.empty()) return invalid_argument("no program to start");
  // Everything the child needs is made here: after fork it may not allocate.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  rlimit files{};
  const int max_fd = getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < 1'000'000
                         ? static_cast<int>(files.rlim_cur)
                         : 65536;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return status(error_code::unavailable, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) exec_child(args.data(), keep_fd, keep_fd_as, parent, max_fd);
  child_process c;
  c.pid_ = pid;
  c.pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (c.pidfd_ >= 0) fcntl(c.pidfd_, F_SETFD, FD_CLOEXEC);
  return c;
}

child_process::child_process(child_process&& o) noexcept {
  *this = std::move(o);
}

child_process& child_process::operator=(child_process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0) kill_and_reap();
    if (pidfd_ >= 0) close(pidfd_);
    pid_ = std::exchange(o.pid_, -1);
    pidfd_ = std::exchange(o.pidfd_, -1);
    reaped_ = std::exchange(o.reaped_, false);
  }
  return *this;
}

child_process::~child_process() {
  if (pid_ > 0) kill_and_reap();
  if (pidfd_ >= 0) close(pidfd_);
}

std::string child_process::reap() {
  if (pid_ <= 0 || reaped_) return "";
  int st = 0;
  const pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == 0) return "";
  reaped_ = true;
  if (r < 0) return std::string("gone (waitpid: ") + std::strerror(errno) + ")";
  return how_it_ended(st);
}

std::string child_process::kill_and_reap() {
  if (pid_ <= 0 || reaped_) return "";
  ::kill(pid_, SIGKILL);
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, 0);
  } while (r < 0 && errno == EINTR);
  reaped_ = true;
  return r == pid_ ? how_it_ended(st) : "gone";
}

void child_process::send_signal(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

}  // namespace troupe::cluster
