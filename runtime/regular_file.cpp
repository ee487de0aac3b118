#include "runtime/regular_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace troupe::runtime {
namespace {

std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a plain file";
}

}  // namespace

expected<regular_file> regular_file::open(const std::string& path, std::string what,
                                          error_code not_regular, bool no_follow) {
  const int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (no_follow ? O_NOFOLLOW : 0);
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return not_found(what + " does not exist");
    return io_error("cannot open " + what + ": " + std::strerror(err));
  }
  regular_file f(fd, std::move(what));
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return io_error("cannot stat " + f.what_ + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return status(not_regular, f.what_ + " is " + file_kind(st.st_mode) + ", not a regular file");
  f.size_ = static_cast<uint64_t>(st.st_size);
  return f;
}

regular_file::regular_file(regular_file&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), size_(o.size_), what_(std::move(o.what_)) {}

regular_file::~regular_file() {
  if (fd_ >= 0) ::close(fd_);
}

status regular_file::read_at(uint64_t offset, void* dst, size_t bytes) const {
  auto* out = static_cast<char*>(dst);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd_, out, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error("cannot read " + what_ + ": " + std::strerror(errno));
    if (n == 0)
      return io_error("cannot read " + what_ + ": it ended early (truncated while read?)");
    out += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return status::ok();
}

expected<std::string> regular_file::read_all(size_t max_bytes, error_code too_large) const {
  if (size_ > max_bytes)
    return status(too_large, what_ + " is " + std::to_string(size_) + " bytes, over the limit of " +
                                 std::to_string(max_bytes));
  std::string bytes(static_cast<size_t>(size_), '\0');
  TROUPE_RETURN_IF_ERROR(read_at(0, bytes.data(), bytes.size()));
  return bytes;
}

}  // namespace troupe::runtime
