#pragma once
/// Messages other threads hand to the thread that owns a ZeroMQ socket: a locked queue of
/// encoded envelopes plus an eventfd that the socket's thread polls beside its socket, so that a
/// message posted while it sleeps in poll wakes it at once. The worker links on both sides of a
/// worker process use it (cluster/worker_link.hpp, cluster/worker_process.hpp): a socket belongs
/// to one thread, and the proxy actor or the serving threads post to it.

#include <atomic>
#include <deque>
#include <mutex>
#include <string>

#include "core/status.hpp"

namespace troupe::cluster {

class message_outbox {
 public:
  message_outbox();
  ~message_outbox();
  message_outbox(const message_outbox&) = delete;
  message_outbox& operator=(const message_outbox&) = delete;

  /// False when the eventfd could not be made (out of descriptors).
  bool ok() const { return fd_ >= 0; }
  /// What the socket's thread polls (ZMQ_POLLIN).
  int fd() const { return fd_; }

  /// Queues `envelope` and wakes the socket's thread. Any thread. False once closed.
  bool post(std::string envelope);
  /// The socket's thread: takes everything queued (in order) and clears the wake-up.
  std::deque<std::string> take();
  /// Refuses further posts (the peer is gone).
  void close();
  /// Wakes the socket's thread with nothing to send (it is to stop). Any thread.
  void wake();

 private:
  int fd_ = -1;
  std::mutex mutex_;  // guards queue_ and closed_
  std::deque<std::string> queue_;
  bool closed_ = false;
};

}  // namespace troupe::cluster
