#include "cluster/shared_memory_registry.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace troupe::cluster {

shared_memory_region::~shared_memory_region() {
  if (base_) munmap(base_, mapped_bytes_);
}

status shared_memory_registry::register_region(std::string_view name, std::string_view key,
                                               uint64_t offset, uint64_t byte_size) {
  if (name.empty()) return invalid_argument("a shared-memory region needs a name");
  // shm_open's rule: one leading slash, no other, at most NAME_MAX characters.
  if (key.size() < 2 || key.size() > 255 || key[0] != '/' ||
      key.find('/', 1) != std::string_view::npos || key.find('\0') != std::string_view::npos)
    return invalid_argument("shared-memory key '" + std::string(key) +
                            "' must be '/' followed by a name without '/'");
  if (byte_size == 0)
    return invalid_argument("shared-memory region '" + std::string(name) + "' has byte_size 0");
  if (offset > (uint64_t{1} << 48) || byte_size > (uint64_t{1} << 48))
    return invalid_argument("shared-memory region '" + std::string(name) + "' is too large");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (regions_.count(name))
      return invalid_argument("shared-memory region '" + std::string(name) +
                              "' is already registered");
  }
  const std::string k(key);
  const int fd = shm_open(k.c_str(), O_RDWR, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return not_found("no shared-memory object '" + k + "'");
    return invalid_argument("cannot open shared-memory object '" + k + "': " + std::strerror(err));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < offset + byte_size) {
    const uint64_t have = static_cast<uint64_t>(st.st_size);
    close(fd);
    return invalid_argument("shared-memory object '" + k + "' holds " + std::to_string(have) +
                            " bytes, less than offset " + std::to_string(offset) + " + byte_size " +
                            std::to_string(byte_size));
  }
  const size_t mapped = static_cast<size_t>(offset + byte_size);
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);  // the mapping keeps the object
  if (p == MAP_FAILED)
    return invalid_argument("cannot map shared-memory object '" + k + "': " + std::strerror(errno));
  std::shared_ptr<shared_memory_region> r(new shared_memory_region());
  r->name_.assign(name);
  r->key_ = k;
  r->offset_ = offset;
  r->byte_size_ = byte_size;
  r->base_ = static_cast<std::byte*>(p);
  r->mapped_bytes_ = mapped;
  std::lock_guard<std::mutex> lock(mutex_);
  // Checked again: another thread may have registered the name while this one mapped.
  if (!regions_.emplace(std::string(name), std::move(r)).second)
    return invalid_argument("shared-memory region '" + std::string(name) +
                            "' is already registered");
  return status::ok();
}

status shared_memory_registry::unregister_region(std::string_view name) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (name.empty()) {
    regions_.clear();
    return status::ok();
  }
  auto it = regions_.find(name);
  if (it == regions_.end())
    return not_found("no shared-memory region '" + std::string(name) + "' is registered");
  regions_.erase(it);
  return status::ok();
}

expected<std::vector<std::shared_ptr<const shared_memory_region>>>
shared_memory_registry::status_of(std::string_view name) const {
  std::vector<std::shared_ptr<const shared_memory_region>> out;
  std::lock_guard<std::mutex> lock(mutex_);
  if (name.empty()) {
    for (const auto& [n, r] : regions_) out.push_back(r);
    return out;
  }
  auto it = regions_.find(name);
  if (it == regions_.end())
    return not_found("no shared-memory region '" + std::string(name) + "' is registered");
  out.push_back(it->second);
  return out;
}

expected<shared_memory_span> shared_memory_registry::find(std::string_view name, uint64_t offset,
                                                          uint64_t bytes) const {
  std::shared_ptr<shared_memory_region> r;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = regions_.find(name);
    if (it == regions_.end())
      return not_found("no shared-memory region '" + std::string(name) + "' is registered");
    r = it->second;
  }
  if (offset > r->byte_size() || bytes > r->byte_size() - offset)
    return invalid_argument("shared-memory region '" + std::string(name) + "' holds " +
                            std::to_string(r->byte_size()) + " bytes: offset " +
                            std::to_string(offset) + " + " + std::to_string(bytes) +
                            " bytes do not fit");
  shared_memory_span s;
  s.data = r->data() + offset;
  s.bytes = static_cast<size_t>(bytes);
  s.region = std::move(r);
  return s;
}

}  // namespace troupe::cluster
