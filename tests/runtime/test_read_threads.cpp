// runtime::read_threads: a job runs on an idle thread or a new one, never behind another job (a
// read may block for ever); up to max_idle threads stay for the next job, the others end; close()
// ends the idle ones and refuses later jobs. Threads are counted through /proc/self/task, the
// only sign of a detached thread's end; waits poll with a deadline.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "runtime/read_threads.hpp"
#include "tests/eventually.hpp"

namespace troupe::runtime {
namespace {

using namespace std::chrono_literals;
using testing::eventually;

size_t process_threads() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// Jobs that record the thread they ran on.
struct ran_on {
  std::mutex mutex;
  std::set<std::thread::id> ids;
  std::atomic<int> jobs{0};

  std::function<void()> job() {
    return [this] {
      std::lock_guard<std::mutex> lock(mutex);
      ids.insert(std::this_thread::get_id());
      ++jobs;
    };
  }
};

TEST(read_threads, jobs_one_after_another_run_on_one_kept_thread) {
  const size_t before = process_threads();
  read_threads threads(1);
  ran_on r;
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(threads.run(r.job()).is_ok());
    ASSERT_TRUE(eventually([&] { return r.jobs == i && threads.idle() == 1; }));
  }
  EXPECT_EQ(r.ids.size(), 1u) << "every job on the kept thread";
  EXPECT_EQ(process_threads(), before + 1);
  threads.close();
  EXPECT_TRUE(eventually([&] { return process_threads() == before; })) << "the idle thread ends";
  const status refused = threads.run(r.job());
  EXPECT_EQ(refused.code(), error_code::unavailable) << refused.to_string();
}

TEST(read_threads, a_blocked_job_holds_up_no_other_and_only_max_idle_threads_stay) {
  const size_t before = process_threads();
  ran_on r;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> blocked_started{false}, blocked_returned{false};
  {
    read_threads threads(1);
    // A kept thread first, so that the blocked job takes it and the next needs a new one.
    ASSERT_TRUE(threads.run(r.job()).is_ok());
    ASSERT_TRUE(eventually([&] { return threads.idle() == 1; }));
    ASSERT_TRUE(threads
                    .run([&blocked_started, &blocked_returned, released] {
                      blocked_started = true;
                      released.wait();  // a read on a hung mount
                      blocked_returned = true;
                    })
                    .is_ok());
    ASSERT_TRUE(eventually([&] { return blocked_started.load(); }));
    EXPECT_EQ(threads.idle(), 0u);
    for (int i = 2; i <= 4; ++i) {
      ASSERT_TRUE(threads.run(r.job()).is_ok());
      ASSERT_TRUE(eventually([&] { return r.jobs == i; })) << "not behind the blocked job";
    }
    EXPECT_FALSE(blocked_returned.load());
    ASSERT_TRUE(eventually([&] { return threads.idle() == 1; }));
    EXPECT_EQ(process_threads(), before + 2) << "the blocked thread and one kept";
    release.set_value();  // the mount recovers: one idle thread is enough, this one ends
    ASSERT_TRUE(eventually([&] { return blocked_returned && process_threads() == before + 1; }));
    EXPECT_EQ(threads.idle(), 1u);
  }
  EXPECT_TRUE(eventually([&] { return process_threads() == before; }))
      << "the destructor closes: the kept thread ends";
}

}  // namespace
}  // namespace troupe::runtime
