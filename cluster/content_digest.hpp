#pragma once
/// SHA-256 of model files, as 64 lowercase hex digits: how a control node names the file a
/// remote worker loads and how the worker's cache keeps it (cluster/model_file_cache.hpp,
/// docs/cluster.md). OpenSSL's libcrypto does the hashing.

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.hpp"

namespace troupe::cluster {

std::string sha256_hex(const void* data, size_t bytes);

struct file_digest {
  std::string sha256;
  uint64_t bytes = 0;
};

/// Reads the regular file at `path` through and hashes it (io_error / not_found when it cannot).
expected<file_digest> sha256_of_file(const std::string& path);

}  // namespace troupe::cluster
