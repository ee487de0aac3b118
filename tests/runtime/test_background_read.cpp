// runtime::background_read: a model read on a thread that runs nothing else meanwhile, whose
// result the caller takes once the completion callback has run, or abandons; an abandoned read
// calls nothing back, even when it returns later, and lets go of what it holds then.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>

#include "runtime/background_read.hpp"
#include "runtime/onnx_loader.hpp"
#include "tests/eventually.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;
using namespace std::chrono_literals;

expected<graph> relu_graph() {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "4"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "4"});
  add_node(m, "Relu", {"x"}, {"y"});
  const std::string bytes = serialize(m);
  return load_onnx_bytes(bytes.data(), bytes.size(), "");
}

TEST(background_read, the_callback_runs_once_and_the_graph_is_taken) {
  read_threads threads;
  std::promise<void> called;
  std::atomic<int> calls{0};
  auto read = background_read::start(threads, relu_graph, [&] {
    ++calls;
    called.set_value();
  });
  ASSERT_TRUE(read) << read.error().to_string();
  ASSERT_EQ(called.get_future().wait_for(20s), std::future_status::ready);
  auto g = (*read)->take();
  ASSERT_TRUE(g) << g.error().to_string();
  EXPECT_EQ(g->nodes.size(), 1u);
  EXPECT_EQ(calls.load(), 1);
  auto again = (*read)->take();
  ASSERT_FALSE(again) << "the result is taken once";
  EXPECT_EQ(again.error().code(), error_code::internal);
}

TEST(background_read, errors_and_exceptions_of_the_read_are_its_result) {
  read_threads threads;
  for (int throws = 0; throws < 2; ++throws) {
    std::promise<void> called;
    auto read = background_read::start(
        threads,
        [throws]() -> expected<graph> {
          if (throws) throw std::runtime_error("disk on fire");
          return io_error("cannot read 'm.onnx'");
        },
        [&] { called.set_value(); });
    ASSERT_TRUE(read) << read.error().to_string();
    ASSERT_EQ(called.get_future().wait_for(20s), std::future_status::ready);
    auto g = (*read)->take();
    ASSERT_FALSE(g);
    EXPECT_EQ(g.error().code(), throws ? error_code::internal : error_code::io_error);
    EXPECT_NE(g.error().message().find(throws ? "disk on fire" : "m.onnx"), std::string::npos)
        << g.error().message();
  }
}

TEST(background_read, an_abandoned_read_calls_nothing_back_and_its_thread_ends) {
  read_threads threads;
  // The read blocks until released, as one on a hung mount does until the mount recovers.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> reading;
  std::atomic<int> calls{0};
  auto read = background_read::start(
      threads,
      [released, &reading] {
        reading.set_value();
        released.wait();
        return relu_graph();
      },
      [&] { ++calls; });
  ASSERT_TRUE(read) << read.error().to_string();
  ASSERT_EQ(reading.get_future().wait_for(20s), std::future_status::ready);
  (*read)->abandon();  // returns at once: the read is still blocked
  std::weak_ptr<background_read> alive = *read;
  read = internal_error("the caller let go");
  EXPECT_FALSE(alive.expired()) << "the blocked thread still holds the read";
  release.set_value();  // the mount recovers
  ASSERT_TRUE(eventually([&] { return alive.expired(); })) << "the thread ended";
  EXPECT_EQ(calls.load(), 0) << "abandoned: no callback";
}

}  // namespace
}  // namespace troupe::runtime
