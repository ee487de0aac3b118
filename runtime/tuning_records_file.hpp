#pragma once
/// The process's recorded kernel choices (kernels/tuning_records.hpp) kept in a file, so that a
/// fresh process (a restarted node, another `troupe run`) adopts them instead of timing again.
/// The node's `tuning_records_file` and `troupe run --tuning-records-file` (docs/serving.md).
///
/// load() adds the file's records to the process's at start. save() writes every record back
/// when some were added since the last load or save, after merging what the file holds now (the
/// worker processes of a node share one file: each save takes an flock on the file's directory, reads
/// the file, adds its records where this process has none, and writes the union): the text goes to a temporary file in the
/// file's directory, is fsync'd and renamed over the file (then the directory is fsync'd), so a
/// reader finds the old file or the new one, never a part of one. A file that could not be read
/// (garbage, another cuDNN) is replaced by the first save that has records to write.
/// save_in_background() runs save() on a thread this object owns, for a caller that must not wait
/// for the disk (the model manager's actor, whose thread also routes and batches); its outcome
/// goes to the callback given at construction. Thread-safe; one save runs at a time.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/status.hpp"
#include "kernels/tuning_records.hpp"

namespace troupe::runtime {

class tuning_records_file {
 public:
  /// A background save's outcome: whether it wrote (false: nothing new), or why it failed. Runs
  /// on this object's thread.
  using saved_callback = std::function<void(const expected<bool>&)>;

  /// A file at `path` for `records` (the process's, unless a test gives its own).
  explicit tuning_records_file(
      std::string path, saved_callback on_background_save = nullptr,
      kernels::tuning_records& records = kernels::tuning_records::process());
  /// Finishes a background save under way or asked for, then joins the thread.
  ~tuning_records_file();
  tuning_records_file(const tuning_records_file&) = delete;
  tuning_records_file& operator=(const tuning_records_file&) = delete;

  const std::string& path() const { return path_; }

  /// Adds the file's records where their keys have none yet; returns how many. A missing file is
  /// no error (nothing recorded yet): 0. Else the file's error, the records unchanged: not a
  /// regular file or unreadable (io_error), over kernels::tuning_records::kMaxTextBytes
  /// (invalid_argument), malformed (invalid_argument), or made by another format version or
  /// other cuDNN / CUDA runtime versions than this process's (unsupported).
  expected<size_t> load();
  /// Writes the records when some were added since the last load() or save(); returns whether
  /// it wrote. io_error when the file cannot be written (the old one then stays as it was).
  expected<bool> save();
  /// save() on this object's thread; returns at once. Asks made while a save runs are served by
  /// one more save after it.
  void save_in_background();
  /// Returns once no background save is asked for or running (tests).
  void wait_for_background_saves();

 private:
  void background_loop();

  const std::string path_;
  const saved_callback on_background_save_;
  kernels::tuning_records& records_;

  std::mutex save_mutex_;  // one load or save at a time; guards saved_generation_
  // The records' generation the file holds (kernels::tuning_records::generation); none yet.
  uint64_t saved_generation_ = UINT64_MAX;

  std::mutex thread_mutex_;  // guards what follows
  std::condition_variable wake_;
  std::thread thread_;  // started by the first save_in_background
  bool save_asked_ = false;
  bool saving_ = false;
  bool stopping_ = false;
};

}  // namespace troupe::runtime
