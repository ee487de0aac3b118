#pragma once
/// A remote worker's cache of model files (docs/cluster.md): files by content, named by their
/// SHA-256 under one directory, so that a worker node needs no copy of the model repository. A
/// control node sends a file the cache lacks (the worker protocol's file_wanted / file_data); a
/// restarted worker, or another worker process of the same node sharing the directory, finds it
/// there. A file is written under a temporary name and renamed once its hash checked, so a
/// reader never sees half a file and a corrupted transfer is never kept.
///
/// Thread-safety: one thread (the worker process's link); several processes may share the
/// directory (rename is atomic, and the same hash is the same content).

#include <cstddef>
#include <string>
#include <vector>

#include "actors/worker_protocol.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

class model_file_cache {
 public:
  /// Creates `directory` (and its parents) when missing.
  static expected<model_file_cache> open(const std::string& directory);

  /// The cached file's path when the cache holds `sha256` with `bytes` bytes; "" otherwise.
  std::string find(const std::string& sha256, uint64_t bytes) const;
  /// Keeps `data` as the file of `sha256`: invalid_argument when its hash is another (the bytes
  /// are then dropped), io_error when it cannot be written. Returns its path.
  expected<std::string> store(const std::string& sha256, const void* data, size_t bytes);
  /// A model with data files (ONNX external data, read relative to model.onnx and only from
  /// inside its folder): the path of a model.onnx in a folder of its own under `models/`, beside
  /// each data file under its name, as hard links to the cached files (copies where links cannot
  /// be made). Every file must be cached already (not_found otherwise). The folder is made under
  /// a temporary name and renamed, so a reader sees it whole; one made before is reused. Names
  /// must be relative paths without "." or ".." (the worker codec checks them).
  expected<std::string> assemble(const std::string& model_sha256, uint64_t model_bytes,
                                 const std::vector<actors::model_data_file>& files);

  const std::string& directory() const { return directory_; }

 private:
  explicit model_file_cache(std::string d) : directory_(std::move(d)) {}
  std::string path_of(const std::string& sha256) const;

  std::string directory_;
};

}  // namespace troupe::cluster
