#include "runtime/tuning_records_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "runtime/regular_file.hpp"

namespace troupe::runtime {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

/// Writes all of `text` to `fd`.
status write_all(int fd, const std::string& text, const std::string& what) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error("cannot write " + what + ": " + errno_text());
    p += n;
    left -= static_cast<size_t>(n);
  }
  return status::ok();
}

/// `text` as the whole content of `path`, atomically: a temporary file beside it, fsync,
/// rename over `path`, fsync of the directory. The temporary file is removed on failure.
/// An exclusive flock on the directory of `path` for as long as it lives (the directory: a lock
/// file of its own would stay behind): the processes that share one file (a node's worker
/// processes) save one at a time, each merging what the others wrote. Without the lock (the
/// directory cannot be opened) saves go on unserialised: a record another process wrote in the
/// meantime may be lost until it saves again.
class file_lock {
 public:
  explicit file_lock(const std::string& path)
      : fd_(::open(std::filesystem::path(path).parent_path().empty()
                       ? "."
                       : std::filesystem::path(path).parent_path().c_str(),
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_ >= 0)
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
  }
  ~file_lock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  file_lock(const file_lock&) = delete;
  file_lock& operator=(const file_lock&) = delete;

 private:
  int fd_;
};

status write_atomically(const std::string& path, const std::string& text) {
  static std::atomic<uint64_t> serial{0};
  const std::filesystem::path target(path);
  const std::filesystem::path dir =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  const std::string temp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial.fetch_add(1));
  const std::string what = "tuning records file '" + path + "'";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create '" + temp + "' for " + what + ": " + errno_text());
  status s = write_all(fd, text, "'" + temp + "'");
  if (s.is_ok() && ::fsync(fd) != 0) s = io_error("cannot fsync '" + temp + "': " + errno_text());
  if (::close(fd) != 0 && s.is_ok()) s = io_error("cannot close '" + temp + "': " + errno_text());
  if (s.is_ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    s = io_error("cannot rename '" + temp + "' to " + what + ": " + errno_text());
  }
  if (!s.is_ok()) {
    (void)::unlink(temp.c_str());
    return s;
  }
  // The rename reaches the disk with the directory. Some file systems refuse to fsync a directory
  // (EINVAL): the file is in place all the same.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    (void)::close(dir_fd);
  }
  return status::ok();
}

}  // namespace

tuning_records_file::tuning_records_file(std::string path, saved_callback on_background_save,
                                         kernels::tuning_records& records)
    : path_(std::move(path)),
      on_background_save_(std::move(on_background_save)),
      records_(records) {}

tuning_records_file::~tuning_records_file() {
  {
    std::lock_guard<std::mutex> lock(thread_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

expected<size_t> tuning_records_file::load() {
  std::lock_guard<std::mutex> lock(save_mutex_);
  // Whatever the outcome, the file is not rewritten before records are added.
  struct mark_saved {
    tuning_records_file* self;
    ~mark_saved() { self->saved_generation_ = self->records_.generation(); }
  } mark{this};
  auto file = regular_file::open(path_, "tuning records file '" + path_ + "'");
  if (!file) {
    if (file.error().code() == error_code::not_found) return size_t{0};
    return file.error();
  }
  TROUPE_ASSIGN_OR_RETURN(std::string text, file->read_all(kernels::tuning_records::kMaxTextBytes,
                                                           error_code::invalid_argument));
  auto added = records_.from_text(text);
  if (!added) return added.error().with_context("tuning records file '" + path_ + "'");
  return added;
}

expected<bool> tuning_records_file::save() {
  std::lock_guard<std::mutex> lock(save_mutex_);
  // Read before the text is made: a record added meanwhile leaves the generation newer than the
  // one noted, so the next save writes it.
  if (records_.generation() == saved_generation_) return false;
  const file_lock locked(path_);
  // What another process saved since is kept: its records are merged first (where this process
  // has none for their keys). A file that cannot be read (garbage, another cuDNN) is replaced.
  if (auto file = regular_file::open(path_, "tuning records file '" + path_ + "'")) {
    auto text = file->read_all(kernels::tuning_records::kMaxTextBytes, error_code::invalid_argument);
    if (text) (void)records_.from_text(*text);
  }
  const uint64_t generation = records_.generation();
  TROUPE_RETURN_IF_ERROR(write_atomically(path_, records_.to_text()));
  saved_generation_ = generation;
  return true;
}

void tuning_records_file::save_in_background() {
  status failed;
  {
    std::lock_guard<std::mutex> lock(thread_mutex_);
    if (stopping_) return;
    save_asked_ = true;
    if (!thread_.joinable()) {
      try {
        thread_ = std::thread([this] { background_loop(); });
      } catch (const std::system_error& e) {
        save_asked_ = false;
        failed = io_error("cannot start the thread that saves tuning records file '" + path_ +
                          "': " + e.what());
      }
    }
  }
  wake_.notify_all();
  if (!failed.is_ok() && on_background_save_) on_background_save_(failed);
}

void tuning_records_file::wait_for_background_saves() {
  std::unique_lock<std::mutex> lock(thread_mutex_);
  wake_.wait(lock, [this] { return !save_asked_ && !saving_; });
}

void tuning_records_file::background_loop() {
  std::unique_lock<std::mutex> lock(thread_mutex_);
  for (;;) {
    // A save asked for before the destructor ran is still made.
    wake_.wait(lock, [this] { return save_asked_ || stopping_; });
    if (!save_asked_) return;
    save_asked_ = false;
    saving_ = true;
    lock.unlock();
    const expected<bool> outcome = save();
    if (on_background_save_) on_background_save_(outcome);
    lock.lock();
    saving_ = false;
    wake_.notify_all();
  }
}

}  // namespace troupe::runtime
