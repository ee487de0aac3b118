#pragma once
/// The KServe system shared-memory extension's registry: POSIX shared-memory regions a co-located
/// client registers by name (`shm_open` key, offset, byte size), then names in requests so that
/// inputs are read from and outputs written to the region, with no copy through a socket. Shared
/// by the HTTP and the gRPC door (a region registered through one is usable through the other).
///
/// Thread-safe. A mapping stays alive while a request uses it: lookups return a shared handle, and
/// unregistering only drops the registry's reference, so a region unregistered mid-request is
/// unmapped when that request is done.
///
/// Trust: a region is the client's memory. A client that shrinks the object under a registered
/// mapping makes the node's next access fault (SIGBUS), as in Triton; the extension is for
/// co-located clients and can be switched off (`shared_memory: false` in node.yaml).

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"

namespace troupe::cluster {

/// One mapped region. Unmapped and closed on destruction.
class shared_memory_region {
 public:
  ~shared_memory_region();
  shared_memory_region(const shared_memory_region&) = delete;
  shared_memory_region& operator=(const shared_memory_region&) = delete;

  const std::string& name() const { return name_; }
  const std::string& key() const { return key_; }
  uint64_t offset() const { return offset_; }
  uint64_t byte_size() const { return byte_size_; }
  /// The region's first byte (the object's byte `offset`).
  std::byte* data() const { return base_ + offset_; }

 private:
  friend class shared_memory_registry;
  shared_memory_region() = default;
  std::string name_, key_;
  uint64_t offset_ = 0, byte_size_ = 0;
  std::byte* base_ = nullptr;  // mmap of [0, offset + byte_size)
  size_t mapped_bytes_ = 0;
};

/// A range of a region a request reads or writes; holds the region alive.
struct shared_memory_span {
  std::shared_ptr<shared_memory_region> region;
  std::byte* data = nullptr;
  size_t bytes = 0;
};

class shared_memory_registry {
 public:
  /// Opens `key` (shm_open, read-write) and maps [offset, offset + byte_size). invalid_argument
  /// when the name is taken, the key is malformed or the object is smaller than offset + byte_size;
  /// not_found when no such object exists.
  status register_region(std::string_view name, std::string_view key, uint64_t offset,
                         uint64_t byte_size);
  /// Unregisters `name`, or every region when `name` is empty. not_found for an unknown name.
  status unregister_region(std::string_view name);
  /// The regions registered now (one, or all when `name` is empty; not_found for an unknown name).
  expected<std::vector<std::shared_ptr<const shared_memory_region>>> status_of(
      std::string_view name) const;
  /// `bytes` bytes at `offset` into region `name`: not_found for an unknown region,
  /// invalid_argument when the range does not fit in it.
  expected<shared_memory_span> find(std::string_view name, uint64_t offset, uint64_t bytes) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<shared_memory_region>, std::less<>> regions_;
};

}  // namespace troupe::cluster
