#include "serving/shared_arena.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace troupe::serving {
namespace {

uint64_t round_up(uint64_t n) {
  const uint64_t units =
      (std::max<uint64_t>(n, 1) + shared_arena::alignment - 1) / shared_arena::alignment;
  return units * shared_arena::alignment;
}

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

expected<std::shared_ptr<shared_arena>> shared_arena::create(size_t bytes,
                                                             const std::string& name) {
  if (bytes == 0 || bytes % alignment != 0)
    return invalid_argument("shared memory of " + std::to_string(bytes) +
                            " bytes: a positive multiple of " + std::to_string(alignment));
  const int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return io_error("memfd_create: " + errno_text());
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const std::string why = errno_text();
    close(fd);
    return status(error_code::out_of_memory,
                  "sizing shared memory to " + std::to_string(bytes) + " bytes: " + why);
  }
  return attach(fd, bytes);
}

expected<std::shared_ptr<shared_arena>> shared_arena::attach(int fd, size_t bytes) {
  std::shared_ptr<shared_arena> a(new shared_arena());
  a->fd_ = fd;  // owned from here: closed by the destructor whatever happens below
  struct stat st {};
  if (fstat(fd, &st) != 0)
    return io_error("shared memory descriptor " + std::to_string(fd) + ": " + errno_text());
  if (bytes == 0 || static_cast<uint64_t>(st.st_size) < bytes)
    return invalid_argument("shared memory descriptor " + std::to_string(fd) + " holds " +
                            std::to_string(st.st_size) + " bytes, not " + std::to_string(bytes));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return io_error("mapping shared memory: " + errno_text());
  a->base_ = static_cast<std::byte*>(p);
  a->bytes_ = bytes;
  a->free_.emplace(0, bytes);
  return a;
}

shared_arena::~shared_arena() {
  if (base_) munmap(base_, bytes_);
  if (fd_ >= 0) close(fd_);
}

expected<shm_region> shared_arena::allocate(size_t bytes) {
  const uint64_t want = round_up(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < want) continue;
    const uint64_t offset = it->first;
    const uint64_t left = it->second - want;
    free_.erase(it);
    if (left > 0) free_.emplace(offset + want, left);
    allocated_.emplace(offset, want);
    return shm_region{0, offset, bytes};
  }
  uint64_t largest = 0;
  for (const auto& [o, n] : free_) largest = std::max(largest, n);
  return status(error_code::out_of_memory,
                "worker shared memory is full: " + std::to_string(want) + " bytes asked, the " +
                    "largest free range holds " + std::to_string(largest) + " of " +
                    std::to_string(bytes_) + " (raise worker_shared_memory_mb)");
}

void shared_arena::release(const shm_region& r) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  auto a = allocated_.find(r.offset);
  if (a == allocated_.end()) return;
  uint64_t offset = a->first, bytes = a->second;
  allocated_.erase(a);
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && offset + bytes == next->first) {
    bytes += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += bytes;
      return;
    }
  }
  free_.emplace(offset, bytes);
}

size_t shared_arena::used_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (const auto& [o, b] : allocated_) n += b;
  return n;
}

void shared_arena::give_back(std::byte* data, size_t bytes) noexcept {
  release(region_of(data, bytes));
}

}  // namespace troupe::serving
