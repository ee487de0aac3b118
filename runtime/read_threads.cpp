#include "runtime/read_threads.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

namespace troupe::runtime {

struct read_threads::shared {
  explicit shared(size_t m) : max_idle(m) {}

  const size_t max_idle;
  std::mutex mutex;  // guards everything below
  std::condition_variable wake;
  /// Threads waiting for a job and not yet promised one. run() takes one of them by decrementing
  /// this and queueing its job, so every queued job has a thread of its own coming for it: no
  /// job waits behind another.
  size_t idle = 0;
  std::deque<std::function<void()>> jobs;  // size() <= the threads waiting in loop()
  bool closed = false;

  /// A thread's life: its first job, then, while it may stay idle, the jobs handed to it.
  static void loop(std::shared_ptr<shared> s, std::function<void()> job) {
    for (;;) {
      job();
      job = nullptr;  // what the read captured goes now, not when the next read comes
      std::unique_lock<std::mutex> lock(s->mutex);
      if (s->closed || s->idle >= s->max_idle) return;
      ++s->idle;
      s->wake.wait(lock, [&] { return s->closed || !s->jobs.empty(); });
      if (s->jobs.empty()) return;  // closed while idle (run() took no slot of it)
      job = std::move(s->jobs.front());
      s->jobs.pop_front();
    }
  }
};

read_threads::read_threads(size_t max_idle) : s_(std::make_shared<shared>(max_idle)) {}

read_threads::~read_threads() {
  close();
}

status read_threads::run(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(s_->mutex);
    if (s_->closed) return status(error_code::unavailable, "the model read threads are closed");
    if (s_->idle > 0) {
      --s_->idle;
      s_->jobs.push_back(std::move(job));
      s_->wake.notify_one();
      return status::ok();
    }
  }
  try {
    std::thread(shared::loop, s_, std::move(job)).detach();
  } catch (const std::system_error& e) {
    return internal_error(std::string("cannot start a thread to read the model: ") + e.what());
  }
  return status::ok();
}

size_t read_threads::idle() const {
  std::lock_guard<std::mutex> lock(s_->mutex);
  return s_->idle;
}

void read_threads::close() {
  std::lock_guard<std::mutex> lock(s_->mutex);
  s_->closed = true;
  s_->wake.notify_all();
}

}  // namespace troupe::runtime
