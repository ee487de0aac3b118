#pragma once
/// A POSIX shared-memory object a test owns (created exclusively, unlinked at the end), for the
/// tests of the system shared-memory extension: the registry and the KServe codecs.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <string>

namespace troupe::cluster {

class shm_test_object {
 public:
  explicit shm_test_object(size_t bytes)
      : key_("/troupe_test_" + std::to_string(getpid()) + "_" + std::to_string(counter_++)) {
    const int fd = shm_open(key_.c_str(), O_CREAT | O_RDWR | O_EXCL, 0600);
    EXPECT_GE(fd, 0) << key_;
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(bytes)), 0);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED);
    data_ = static_cast<std::byte*>(p);
    bytes_ = bytes;
    close(fd);
  }
  ~shm_test_object() {
    munmap(data_, bytes_);
    shm_unlink(key_.c_str());
  }
  shm_test_object(const shm_test_object&) = delete;
  shm_test_object& operator=(const shm_test_object&) = delete;

  const std::string& key() const { return key_; }
  std::byte* data() const { return data_; }

 private:
  static inline int counter_ = 0;
  std::string key_;
  std::byte* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace troupe::cluster
