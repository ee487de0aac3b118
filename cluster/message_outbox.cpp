#include "cluster/message_outbox.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

namespace troupe::cluster {

outbox_signal::outbox_signal() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

outbox_signal::~outbox_signal() {
  if (fd_ >= 0) ::close(fd_);
}

void outbox_signal::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof(one));
}

void outbox_signal::clear() {
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = read(fd_, &count, sizeof(count));
}

}  // namespace troupe::cluster
