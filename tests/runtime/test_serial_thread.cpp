// runtime::serial_thread: jobs run one after another in the order posted, all on one thread that
// is not the caller's; the destructor drops the jobs not started and waits for the running one.
// Waits are for events (futures), each with a deadline.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "runtime/serial_thread.hpp"
#include "tests/eventually.hpp"

namespace troupe::runtime {
namespace {

using namespace std::chrono_literals;

TEST(serial_thread, jobs_run_in_order_on_one_thread_of_their_own) {
  std::mutex mutex;
  std::vector<int> order;
  std::set<std::thread::id> threads;
  std::promise<void> last;
  {
    serial_thread t;
    EXPECT_EQ(t.pending(), 0u);
    for (int i = 0; i < 50; ++i)
      ASSERT_TRUE(t.post([&, i] {
                     std::lock_guard<std::mutex> lock(mutex);
                     order.push_back(i);
                     threads.insert(std::this_thread::get_id());
                     if (i == 49) last.set_value();
                   }).is_ok());
    ASSERT_EQ(last.get_future().wait_for(30s), std::future_status::ready);
  }
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
  ASSERT_EQ(threads.size(), 1u);
  EXPECT_NE(*threads.begin(), std::this_thread::get_id());
}

TEST(serial_thread, the_destructor_waits_for_the_running_job_and_drops_the_queued_ones) {
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> first_finished{false};
  auto queued_ran = std::make_shared<std::atomic<bool>>(false);
  std::weak_ptr<std::atomic<bool>> queued_capture = queued_ran;
  std::thread destroyer;
  {
    auto t = std::make_unique<serial_thread>();
    ASSERT_TRUE(t->post([&] {
                   started.set_value();
                   released.wait();
                   first_finished = true;
                 }).is_ok());
    ASSERT_TRUE(t->post([flag = std::move(queued_ran)] { *flag = true; }).is_ok());
    ASSERT_EQ(started.get_future().wait_for(30s), std::future_status::ready);
    EXPECT_EQ(t->pending(), 2u);
    std::promise<void> destroyed;
    auto done = destroyed.get_future();
    destroyer = std::thread([t = std::move(t), destroyed = std::move(destroyed)]() mutable {
      t.reset();
      destroyed.set_value();
    });
    // The queued job goes at once (what it captured is released), the running one is waited for.
    EXPECT_TRUE(testing::eventually([&] { return queued_capture.expired(); }, 30s))
        << "the job not started was dropped";
    EXPECT_EQ(done.wait_for(0s), std::future_status::timeout) << "the running job holds it";
    release.set_value();
    ASSERT_EQ(done.wait_for(30s), std::future_status::ready);
    EXPECT_TRUE(first_finished);
  }
  destroyer.join();
}

}  // namespace
}  // namespace troupe::runtime
