#pragma once
/// A file opened for reading only when it is a regular file. open() is given O_NONBLOCK so that
/// opening a FIFO or a device returns at once (a FIFO without a writer blocks a plain open() for
/// ever, and with it whoever opened it: a worker, the model manager), and the check is made with
/// fstat on the descriptor itself, so nothing can swap the file between the check and the read.
/// O_NONBLOCK changes nothing for reads of a regular file. A file system that hangs (a network
/// mount) can still block open() and read(): see runtime/background_read.hpp.

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.hpp"

namespace troupe::runtime {

class regular_file {
 public:
  /// `what` names the file in errors ("'m.onnx'", "tensor 'w': external data file 'w.bin'");
  /// `not_regular` is the code of the error for a file that is not a regular one (not_found when
  /// it does not exist, io_error when it cannot be opened). `no_follow`: refuse a symbolic link
  /// as the last component (for a path the caller has resolved already).
  static expected<regular_file> open(const std::string& path, std::string what,
                                     error_code not_regular = error_code::io_error,
                                     bool no_follow = false);
  regular_file(regular_file&& o) noexcept;
  regular_file& operator=(regular_file&&) = delete;
  regular_file(const regular_file&) = delete;
  ~regular_file();

  uint64_t size() const { return size_; }
  /// Reads exactly `bytes` bytes at `offset` into `dst`.
  status read_at(uint64_t offset, void* dst, size_t bytes) const;
  /// The whole file; a file over `max_bytes` is an error of code `too_large`.
  expected<std::string> read_all(size_t max_bytes, error_code too_large) const;

 private:
  regular_file(int fd, std::string what) : fd_(fd), what_(std::move(what)) {}

  int fd_ = -1;
  uint64_t size_ = 0;
  std::string what_;
};

}  // namespace troupe::runtime
