#pragma once
/// One thread that runs the jobs posted to it one after another, in the order posted: a worker's
/// replica builds (compile, convolution timing, warm-up), which take from milliseconds to seconds
/// and must not run on the thread that serves the worker's batches (a load would stall every
/// other model on the device for that long).
///
/// One thread and not a pool: builds of one device run one at a time, so their timings do not
/// compete with each other and the device's peak memory is one build's; and a later job may
/// rely on an earlier one having finished.
///
/// The thread starts with the first job. The destructor drops the jobs not started (destroying
/// them on the caller's thread) and waits for the running one: the owner makes that one end
/// early first, by whatever means the job has (a replica build checks a flag between buckets).

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/status.hpp"

namespace troupe::runtime {

class serial_thread {
 public:
  /// `name`: the thread's name (core/thread_name.hpp); "": the process's.
  explicit serial_thread(std::string name = "") : name_(std::move(name)) {}
  ~serial_thread();
  serial_thread(const serial_thread&) = delete;
  serial_thread& operator=(const serial_thread&) = delete;

  /// Queues `job` behind the jobs posted before. `job` must not throw. Fails (a typed error)
  /// when the thread cannot be started.
  status post(std::function<void()> job);

  /// Jobs posted and not finished (the running one included).
  size_t pending() const;

 private:
  void loop();

  mutable std::mutex mutex_;  // guards everything below but thread_
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool running_ = false;  // a job is out of jobs_ and running
  bool stopping_ = false;
  std::string name_;
  std::thread thread_;  // started by the first post; joined by the destructor
};

}  // namespace troupe::runtime
