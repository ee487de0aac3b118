#pragma once
/// Recorded kernel choices ("tuning records"): what a kernel factory chose by timing candidates,
/// kept per problem so that a later kernel with the same problem adopts the choice untimed, in
/// this process and, through to_text / from_text (runtime/tuning_records_file.hpp writes them to
/// a file), in a later one. Today the CUDA Conv's cuDNN configuration, algorithm, math and
/// epilogue mode (kernels/cuda/conv_ops.cpp, "Recorded choices"): a key names the problem and
/// the GPU model, a record holds plain integers that conv_ops gives their cuDNN meaning and
/// checks before use (a record read from a file may hold anything).
///
/// CUDA-free: the CUDA backend fills the store, the node and the CLI persist it.
///
/// Text form, one record per line, keys last (they hold spaces):
///
///   troupe-tuning-records 1 cudnn <cudnnGetVersion()> cudart <cudaRuntimeGetVersion()>
///   r <variant> <slice_images> <algo> <math> <fused 0|1> <key>
///   f <variant> <form key>
///   end <r lines> <f lines>
///
/// The `end` line makes a truncated text an error rather than a shorter list.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.hpp"

namespace troupe::kernels {

/// One recorded convolution choice, as integers (kernels/cuda/conv_ops.cpp: conv_record).
struct tuning_record {
  int32_t variant = 0;       // conv_variant: the configuration, which fixes the weights' form
  int64_t slice_images = 0;  // images per cuDNN call (the whole batch when not sliced)
  int32_t algo = 0;          // cudnnConvolutionFwdAlgo_t
  int32_t math = 0;          // cudnnMathType_t
  bool fused = false;        // cudnnConvolutionBiasActivationForward rather than conv + epilogue
  bool operator==(const tuning_record&) const = default;
};

/// The libraries the timings were made with. Records made with others are not adopted: another
/// cuDNN may rank, number or run its algorithms differently.
struct tuning_environment {
  int64_t cudnn_version = 0;         // cudnnGetVersion()
  int64_t cuda_runtime_version = 0;  // cudaRuntimeGetVersion()
  bool operator==(const tuning_environment&) const = default;
};

/// This process's: the CUDA backend's libraries; zeros in a build without the CUDA backend.
tuning_environment current_tuning_environment();

/// How the process's kernels came by their choices, since the process started.
struct tuning_counts {
  uint64_t searched = 0;  // chosen by a search (timing candidates; cuDNN's first where only one)
  uint64_t adopted = 0;   // taken from a record, untimed
};

/// The process's counts (tuning_records::process().counts()), for tests and benches.
tuning_counts tuning_stats();

/// Keys to records, thread-safe. Records are added, never changed: the first choice recorded for
/// a problem stands, so that every instance of a model in the process runs the same one.
class tuning_records {
 public:
  /// Bounds on what from_text accepts (a file is input from disk).
  static constexpr size_t kMaxTextBytes = size_t{32} << 20;
  static constexpr size_t kMaxLineBytes = 4096;
  static constexpr size_t kMaxRecords = size_t{1} << 16;  // records and forms, each
  static constexpr int kFormatVersion = 1;

  /// The one every kernel of the process reads and records into.
  static tuning_records& process();

  std::optional<tuning_record> find(const std::string& key) const;
  /// The configuration another batch size of the problem chose (`form_key`: the problem without
  /// its batch size).
  std::optional<int32_t> find_form(const std::string& form_key) const;
  /// Records `r` unless `key` has a record already (two instances timed the same problem at
  /// once), and its variant for `form_key` unless one stands; returns the record that stands.
  /// A key that to_text could not write back (empty, too long, control characters) is kept in
  /// memory all the same and left out of the text.
  tuning_record record(const std::string& key, const std::string& form_key, const tuning_record& r);
  /// Removes `key`'s record where it is still `r`: a record the kernel found unusable (a value
  /// out of range for this build), so that the kernel's own choice can take its place.
  void forget(const std::string& key, const tuning_record& r);
  /// Removes `form_key`'s variant where it is still `variant`.
  void forget_form(const std::string& form_key, int32_t variant);
  /// Drops every record and form (tests: a fresh process without a restart). Counts stay.
  void clear();

  size_t size() const;        // records (forms not counted)
  size_t form_count() const;  // forms
  /// Changes whenever a record or form is added: a saver compares it with the one it saved.
  uint64_t generation() const;

  /// Every record and form, sorted by key, under a header naming `env`.
  std::string to_text(const tuning_environment& env = current_tuning_environment()) const;
  /// Parses `text` whole and adds its records and forms where their keys have none yet (records
  /// made in this process stand). Returns how many records were added. Nothing is added from a
  /// text with an error: invalid_argument for malformed text (garbage, truncated, a line or
  /// count over the bounds, a duplicate key), unsupported for another format version or one made
  /// with libraries other than `env`.
  expected<size_t> from_text(std::string_view text,
                             const tuning_environment& env = current_tuning_environment());

  /// The kernels' counts (tuning_stats()).
  void count_searched() { searched_.fetch_add(1, std::memory_order_relaxed); }
  void count_adopted() { adopted_.fetch_add(1, std::memory_order_relaxed); }
  tuning_counts counts() const;

 private:
  mutable std::mutex mutex_;  // guards records_, forms_ and generation_
  std::map<std::string, tuning_record> records_;
  std::map<std::string, int32_t> forms_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> searched_{0};
  std::atomic<uint64_t> adopted_{0};
};

}  // namespace troupe::kernels
