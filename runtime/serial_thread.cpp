#include "runtime/serial_thread.hpp"

#include "core/thread_name.hpp"

#include <string>
#include <system_error>
#include <utility>

namespace troupe::runtime {

serial_thread::~serial_thread() {
  std::deque<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    dropped.swap(jobs_);
    wake_.notify_all();
  }
  dropped.clear();  // here, outside the lock: what the jobs captured may take a while to go
  if (thread_.joinable()) thread_.join();
}

status serial_thread::post(std::function<void()> job) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return status(error_code::cancelled, "the build thread is stopping");
  if (!thread_.joinable()) {
    try {
      thread_ = std::thread([this] {
        if (!name_.empty()) name_this_thread(name_);
        loop();
      });
    } catch (const std::system_error& e) {
      return internal_error(std::string("cannot start the build thread: ") + e.what());
    }
  }
  jobs_.push_back(std::move(job));
  wake_.notify_one();
  return status::ok();
}

size_t serial_thread::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return jobs_.size() + (running_ ? 1 : 0);
}

void serial_thread::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    if (stopping_) return;
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    running_ = true;
    lock.unlock();
    job();
    job = nullptr;  // what it captured goes before the next job runs
    lock.lock();
    running_ = false;
  }
}

}  // namespace troupe::runtime
