// The session's compiled-shape cache (runtime/plan_cache.hpp): bounded by plans and by arena
// bytes, least recently used plans evicted first, a plan in use never evicted, evictions counted;
// every run succeeds whatever the bounds (an evicted shape is compiled again).

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

/// y = relu((x + x) * x) on x[batch, width], both dims symbolic: one plan per (batch, width),
/// with intermediates in the arena.
expected<std::unique_ptr<session>> dynamic_session(shape_cache_limits limits) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "width"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "width"});
  add_node(m, "Add", {"x", "x"}, {"s"});
  add_node(m, "Mul", {"s", "x"}, {"t"});
  add_node(m, "Relu", {"t"}, {"y"});
  const std::string bytes = serialize(m);
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(bytes.data(), bytes.size(), ""));
  session_options o;
  o.shape_cache = limits;
  return session::create_from_graph(std::move(g), o);
}

tensor input(int64_t batch, int64_t width) {
  tensor x = tensor::allocate(dtype::f32, {batch, width});
  for (int64_t i = 0; i < x.elements(); ++i) x.data<float>()[i] = static_cast<float>(i % 7) - 3.0f;
  return x;
}

/// Runs x[batch, width] and checks every output element.
void run_and_check(session& s, int64_t batch, int64_t width) {
  const tensor x = input(batch, width);
  auto out = s.run(std::vector<tensor>{x});
  ASSERT_TRUE(out) << "[" << batch << ", " << width << "]: " << out.error().to_string();
  ASSERT_EQ((*out)[0].shape(), (shape_t{batch, width}));
  for (int64_t i = 0; i < x.elements(); ++i) {
    const float v = x.data<float>()[i];
    ASSERT_EQ((*out)[0].data<float>()[i], std::max(0.0f, 2 * v * v)) << "element " << i;
  }
}

std::string key_of(int64_t batch, int64_t width) {
  return session::plan_key({{dtype::f32, {batch, width}}});
}

TEST(shape_cache, more_shapes_than_max_plans_all_run_and_the_oldest_are_evicted) {
  auto s = dynamic_session({/*max_plans=*/3, /*max_bytes=*/size_t{1} << 30});
  ASSERT_TRUE(s) << s.error().to_string();
  for (int64_t width = 1; width <= 10; ++width) {
    run_and_check(**s, 2, width);
    const shape_cache_stats c = (*s)->shape_cache();
    EXPECT_LE(c.plans, 3u) << "after width " << width;
    EXPECT_EQ(c.evictions, static_cast<uint64_t>(std::max<int64_t>(0, width - 3)));
    EXPECT_EQ((*s)->memory_report().plans, c.plans);
  }
  // The three most recent shapes are cached; an evicted one runs again, compiled anew.
  for (int64_t width : {8, 9, 10}) EXPECT_TRUE((*s)->caches_plan(key_of(2, width))) << width;
  EXPECT_FALSE((*s)->caches_plan(key_of(2, 1)));
  run_and_check(**s, 2, 1);
  EXPECT_TRUE((*s)->caches_plan(key_of(2, 1)));
  EXPECT_EQ((*s)->shape_cache().evictions, 8u);
  EXPECT_EQ((*s)->shape_cache().plans, 3u);
}

TEST(shape_cache, eviction_follows_use_not_compilation) {
  auto s = dynamic_session({/*max_plans=*/2, /*max_bytes=*/size_t{1} << 30});
  ASSERT_TRUE(s) << s.error().to_string();
  run_and_check(**s, 1, 4);  // A
  run_and_check(**s, 1, 5);  // B
  run_and_check(**s, 1, 4);  // A again: now B is the least recently used
  run_and_check(**s, 1, 6);  // C evicts B
  EXPECT_TRUE((*s)->caches_plan(key_of(1, 4)));
  EXPECT_FALSE((*s)->caches_plan(key_of(1, 5)));
  EXPECT_TRUE((*s)->caches_plan(key_of(1, 6)));
  // cached_plan also counts as a use: A is kept over C.
  ASSERT_NE((*s)->cached_plan(key_of(1, 4)), nullptr);
  run_and_check(**s, 1, 7);
  EXPECT_TRUE((*s)->caches_plan(key_of(1, 4)));
  EXPECT_FALSE((*s)->caches_plan(key_of(1, 6)));
  EXPECT_EQ((*s)->cached_plan(key_of(1, 6)), nullptr) << "evicted: not cached any more";
}

TEST(shape_cache, bytes_bound_holds_and_evicts) {
  // Eight shapes of about the same size; the arena bytes of each plan measured on a session of
  // its own.
  auto probe = dynamic_session({});
  ASSERT_TRUE(probe) << probe.error().to_string();
  std::vector<int64_t> widths;
  size_t largest = 0;
  for (int64_t width = 1000; width < 1008; ++width) {
    widths.push_back(width);
    auto p = (*probe)->prepare({{dtype::f32, {4, width}}});
    ASSERT_TRUE(p) << p.error().to_string();
    ASSERT_GT((*p)->memory().planned_arena_bytes, 0u) << "the model's intermediates need an arena";
    largest = std::max(largest, (*p)->memory().planned_arena_bytes);
  }
  // Room for three plans by bytes, for a hundred by count: bytes decide.
  const size_t max_bytes = 3 * largest;
  auto s = dynamic_session({/*max_plans=*/100, max_bytes});
  ASSERT_TRUE(s) << s.error().to_string();
  for (int64_t width : widths) {
    run_and_check(**s, 4, width);
    const shape_cache_stats c = (*s)->shape_cache();
    EXPECT_LE(c.bytes, max_bytes) << "after width " << width;
    EXPECT_EQ((*s)->memory_report().arena_bytes, c.bytes);
  }
  EXPECT_LE((*s)->shape_cache().plans, 3u);
  EXPECT_GE((*s)->shape_cache().evictions, widths.size() - 3);

  // A plan larger than max_bytes on its own still runs; it is not kept once its run is over.
  run_and_check(**s, 64, 1000);
  EXPECT_LE((*s)->shape_cache().bytes, max_bytes);
  EXPECT_FALSE((*s)->caches_plan(key_of(64, 1000)));
}

TEST(shape_cache, a_plan_in_use_is_never_evicted) {
  auto s = dynamic_session({/*max_plans=*/1, /*max_bytes=*/size_t{1} << 30});
  ASSERT_TRUE(s) << s.error().to_string();
  // A lease held across other shapes' compilation, as a run holds one.
  auto held = (*s)->prepare({{dtype::f32, {2, 3}}});
  ASSERT_TRUE(held) << held.error().to_string();
  run_and_check(**s, 2, 5);
  run_and_check(**s, 2, 6);
  EXPECT_TRUE((*s)->caches_plan(key_of(2, 3))) << "in use: not evicted";
  // Each run's own plan was evicted once that run had ended, the held one could not be.
  EXPECT_FALSE((*s)->caches_plan(key_of(2, 6)));
  EXPECT_EQ((*s)->shape_cache().plans, 1u);
  // The held plan still runs.
  const tensor x = input(2, 3);
  std::vector<tensor> out{tensor::allocate(dtype::f32, {2, 3})};
  ASSERT_TRUE((*held)->run(std::vector<tensor>{x}, out).is_ok());
  EXPECT_EQ(out[0].data<float>()[0], 2 * 9.0f);  // x[0] = -3: 2 * (-3)^2
  held = invalid_argument("lease returned");
  run_and_check(**s, 2, 7);
  EXPECT_EQ((*s)->shape_cache().plans, 1u) << "no longer in use: evicted, the bound holds again";
  EXPECT_FALSE((*s)->caches_plan(key_of(2, 3)));
}

TEST(shape_cache, concurrent_runs_of_many_shapes_on_one_session) {
  // Two plans for eight shapes across four threads: plans are evicted and rebuilt while other
  // threads run theirs, and no run loses its plan (the run's lease).
  auto s = dynamic_session({/*max_plans=*/2, /*max_bytes=*/size_t{1} << 30});
  ASSERT_TRUE(s) << s.error().to_string();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const int64_t width = 1 + (t * 3 + i) % 8;
        const tensor x = input(3, width);
        auto out = (*s)->run(std::vector<tensor>{x});
        if (!out || (*out)[0].shape() != shape_t{3, width}) {
          ++failures;
          continue;
        }
        for (int64_t k = 0; k < x.elements(); ++k) {
          const float v = x.data<float>()[k];
          if ((*out)[0].data<float>()[k] != std::max(0.0f, 2 * v * v)) ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE((*s)->shape_cache().plans, 2u) << "no run in flight: the bound holds";
  EXPECT_GT((*s)->shape_cache().evictions, 0u);
}

TEST(shape_cache, bounds_must_be_positive) {
  for (shape_cache_limits bad : {shape_cache_limits{0, 1}, shape_cache_limits{1, 0}}) {
    auto s = dynamic_session(bad);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code(), error_code::invalid_argument);
    EXPECT_NE(s.error().message().find("max_plans"), std::string::npos) << s.error().message();
  }
}

TEST(shape_cache, instances_have_caches_of_their_own_with_the_same_bounds) {
  auto s = dynamic_session({/*max_plans=*/2, /*max_bytes=*/size_t{1} << 30});
  ASSERT_TRUE(s) << s.error().to_string();
  auto other = (*s)->create_instance();
  ASSERT_TRUE(other) << other.error().to_string();
  for (int64_t width = 1; width <= 4; ++width) run_and_check(**other, 1, width);
  EXPECT_EQ((*other)->shape_cache().plans, 2u);
  EXPECT_EQ((*other)->shape_cache().evictions, 2u);
  EXPECT_EQ((*s)->shape_cache().plans, 0u);
}

}  // namespace
}  // namespace troupe::runtime
