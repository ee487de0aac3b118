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

namespace {

/// Links `from` at `to` (its parent folders made), else copies it.
status place_file(const std::string& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  if (ec)
    return io_error("model file cache: making " + to.parent_path().string() + ": " + ec.message());
  fs::create_hard_link(from, to, ec);
  if (!ec) return status::ok();
  ec.clear();
  fs::copy_file(from, to, ec);
  if (ec) return io_error("model file cache: placing " + to.string() + ": " + ec.message());
  return status::ok();
}

}  // namespace

expected<std::string> model_file_cache::assemble(
    const std::string& model_sha256, uint64_t model_bytes,
    const std::vector<actors::model_data_file>& files) {
  std::vector<std::string> cached;
  std::string key_text = model_sha256 + "\n";
  const std::string model = find(model_sha256, model_bytes);
  if (model.empty()) return not_found("model file cache: no file of SHA-256 " + model_sha256);
  for (const auto& f : files) {
    if (!actors::data_file_name_ok(f.name))
      return invalid_argument("model file cache: data file name '" + f.name + "' is not allowed");
    cached.push_back(find(f.content_sha256, f.bytes));
    if (cached.back().empty())
      return not_found("model file cache: no file of SHA-256 " + f.content_sha256 + " (" + f.name +
                       ")");
    key_text += f.name + '\0' + f.content_sha256 + "\n";
  }
  const std::string key = sha256_hex(key_text.data(), key_text.size());
  const fs::path folder = fs::path(directory_) / "models" / key;
  const fs::path target = folder / "model.onnx";
  std::error_code ec;
  if (fs::is_regular_file(target, ec)) return target.string();
  fs::create_directories(folder.parent_path(), ec);
  std::string temp = (folder.parent_path() / ("." + key + ".XXXXXX")).string();
  if (!mkdtemp(temp.data()))
    return io_error("model file cache: " + temp + ": " + std::strerror(errno));
  status placed = place_file(model, fs::path(temp) / "model.onnx");
  for (size_t i = 0; i < files.size() && placed.is_ok(); ++i)
    placed = place_file(cached[i], fs::path(temp) / files[i].name);
  if (placed.is_ok()) {
    fs::rename(temp, folder, ec);
    // Another process made the same folder meanwhile: same names, same contents; use that one.
    if (ec && fs::is_regular_file(target)) ec.clear();
    if (ec) placed = io_error("model file cache: keeping " + folder.string() + ": " + ec.message());
  }
  std::error_code ignored;
  fs::remove_all(temp, ignored);
  if (!placed.is_ok()) return placed;
  return target.string();
}

}  // namespace troupe::cluster
