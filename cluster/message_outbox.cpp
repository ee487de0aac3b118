#include "cluster/message_outbox.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

namespace troupe::cluster {

message_outbox::message_outbox() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

message_outbox::~message_outbox() {
  if (fd_ >= 0) ::close(fd_);
}

bool message_outbox::post(std::string envelope) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return false;
    queue_.push_back(std::move(envelope));
  }
  wake();
  return true;
}

void message_outbox::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof(one));
}

std::deque<std::string> message_outbox::take() {
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = read(fd_, &count, sizeof(count));
  std::deque<std::string> out;
  std::lock_guard<std::mutex> lock(mutex_);
  out.swap(queue_);
  return out;
}

void message_outbox::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  queue_.clear();
}

}  // namespace troupe::cluster
