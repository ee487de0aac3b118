#include "cluster/model_file_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cluster/content_digest.hpp"

namespace troupe::cluster {

namespace fs = std::filesystem;

expected<model_file_cache> model_file_cache::open(const std::string& directory) {
  if (directory.empty()) return invalid_argument("the model file cache needs a directory");
  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec || !fs::is_directory(directory, ec))
    return io_error("cannot make the model file cache " + directory + ": " + ec.message());
  return model_file_cache(directory);
}

std::string model_file_cache::path_of(const std::string& sha256) const {
  return directory_ + "/" + sha256 + ".onnx";
}

std::string model_file_cache::find(const std::string& sha256, uint64_t bytes) const {
  std::error_code ec;
  const std::string p = path_of(sha256);
  if (!fs::is_regular_file(p, ec) || fs::file_size(p, ec) != bytes || ec) return "";
  return p;
}

expected<std::string> model_file_cache::store(const std::string& sha256, const void* data,
                                              size_t bytes) {
  const std::string got = sha256_hex(data, bytes);
  if (got != sha256)
    return invalid_argument("model file of " + std::to_string(bytes) + " bytes has SHA-256 " + got +
                            ", not the " + sha256 + " asked for");
  const std::string target = path_of(sha256);
  std::string temp = directory_ + "/." + sha256 + ".XXXXXX";
  const int fd = mkstemp(temp.data());
  if (fd < 0) return io_error("model file cache: " + temp + ": " + std::strerror(errno));
  const auto* p = static_cast<const char*>(data);
  size_t left = bytes;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(temp.c_str());
      return io_error("model file cache: writing " + target + ": " + why);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  fchmod(fd, 0644);
  if (::close(fd) != 0 || std::rename(temp.c_str(), target.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(temp.c_str());
    return io_error("model file cache: keeping " + target + ": " + why);
  }
  return target;
}

}  // namespace troupe::cluster
