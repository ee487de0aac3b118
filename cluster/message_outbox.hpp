#pragma once
/// Messages other threads hand to the thread that owns a ZeroMQ socket: a locked queue plus an
/// eventfd that the socket's thread polls beside its socket, so that a message posted while it
/// sleeps in poll wakes it at once. The worker links on both sides of a worker process use it
/// (cluster/worker_link.hpp, cluster/worker_process.hpp, cluster/worker_listener.hpp): a socket
/// belongs to one thread, and the proxy actors or the serving threads post to it.
///
/// basic_outbox<T> queues any movable T (encoded envelopes, or messages still to encode with the
/// frames that go with them); message_outbox queues envelopes.

#include <deque>
#include <mutex>
#include <string>

namespace troupe::cluster {

/// The eventfd half: a wake-up the socket's thread polls.
class outbox_signal {
 public:
  outbox_signal();
  ~outbox_signal();
  outbox_signal(const outbox_signal&) = delete;
  outbox_signal& operator=(const outbox_signal&) = delete;

  /// False when the eventfd could not be made (out of descriptors).
  bool ok() const { return fd_ >= 0; }
  /// What the socket's thread polls (ZMQ_POLLIN).
  int fd() const { return fd_; }
  /// Any thread.
  void wake();
  /// The socket's thread: clears the wake-up.
  void clear();

 private:
  int fd_ = -1;
};

template <class T>
class basic_outbox {
 public:
  bool ok() const { return signal_.ok(); }
  int fd() const { return signal_.fd(); }

  /// Queues `item` and wakes the socket's thread. Any thread. False once closed.
  bool post(T item) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) return false;
      queue_.push_back(std::move(item));
    }
    signal_.wake();
    return true;
  }
  /// The socket's thread: takes everything queued (in order) and clears the wake-up.
  std::deque<T> take() {
    signal_.clear();
    std::deque<T> out;
    std::lock_guard<std::mutex> lock(mutex_);
    out.swap(queue_);
    return out;
  }
  /// Refuses further posts (the peer is gone).
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    queue_.clear();
  }
  /// Wakes the socket's thread with nothing to send (it is to stop). Any thread.
  void wake() { signal_.wake(); }

 private:
  outbox_signal signal_;
  std::mutex mutex_;  // guards queue_ and closed_
  std::deque<T> queue_;
  bool closed_ = false;
};

using message_outbox = basic_outbox<std::string>;

}  // namespace troupe::cluster
