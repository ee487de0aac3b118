// The scaler actor on CAF's deterministic scheduler with simulated time, against a fake
// model_manager and a fake batcher whose counters the test sets: a load step scales up at the
// next tick (reason capacity), the load going away scales down once the downscale delay has
// passed, an idle version goes to zero and a wake brings it back at once (no tick waited for), a
// count model_manager has not reached is asked again every tick, and the metrics and the node
// count it publishes.

#include <gtest/gtest.h>

#include "actors/scaler.hpp"
#include "serving/metrics.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/actors/fake_manager.hpp"
#include "tests/serving/metrics_test_util.hpp"

namespace troupe::actors {

using serving::batch_ref;
using serving::job_list;
using serving::scaling_config;
using serving::serving_metrics;

namespace {

using namespace std::chrono_literals;

/// What the fakes answer and what they were asked.
struct world {
  scaled_versions list;          // (scaled): the test fills it; batcher set by the fixture
  batcher_stats stats;           // what the fake batcher answers
  bool carry_out = true;         // the fake manager makes a (scale) happen at once
  std::vector<uint32_t> scales;  // every (scale) count asked, in order
};

batcher_actor spawn_fake_batcher(caf::actor_system& sys, std::shared_ptr<world> w) {
  return sys.spawn([w](batcher_actor::pointer) -> batcher_actor::behavior_type {
    return {
        [](submit_atom, job_list) {},
        [](done_atom, batch_ref) {},
        [](tick_atom, uint64_t) {},
        [](replica_atom, const replica_handle&) {},
        [w](stats_atom) { return w->stats; },
        [](retire_atom) { return true; },
        [](detach_atom, uint32_t, uint32_t) { return true; },
        [](watch_atom) {},
    };
  });
}

manager_actor spawn_fake_manager(caf::actor_system& sys, std::shared_ptr<world> w) {
  testing::fake_manager_hooks h;
  h.scaled = [w] { return w->list; };
  h.scale = [w](const std::string&, int64_t, uint32_t n) {
    w->scales.push_back(n);
    if (w->carry_out) w->list[0].wanted = w->list[0].ready = n;
    return true;
  };
  return testing::spawn_fake_manager(sys, std::move(h));
}

class scaler_test : public testing::actor_fixture {
 protected:
  /// One version of "mlp": a replica serves a batch of 1 in 10 ms (100 req/s, well within the
  /// 100 ms SLO), on a node with `workers` CPU workers.
  void start(scaling_config c, uint32_t replicas, uint32_t workers = 2) {
    scaled_version v;
    v.model = "mlp";
    v.version = 1;
    v.scaling = c;
    v.batcher = spawn_fake_batcher(sys_, w_);
    v.wanted = v.ready = replicas;
    v.workers = workers;
    w_->list = {v};
    w_->stats.latency_profile = {{1, 10'000.0}};
    scaler_options o;
    o.manager = spawn_fake_manager(sys_, w_);
    o.metrics = &metrics_;
    o.interval = 1s;
    o.gpus = [this] { return gpus_; };
    o.budget_room = [this] { return budget_room_; };
    manager_ = o.manager;
    scaler_ = spawn_scaler(sys_, o);
    run();
  }

  void TearDown() override {
    // The fakes and the world refer to each other (the batcher answers from the world, the world
    // lists the batcher): they end only when told to.
    for (const auto& v : w_->list) caf::anon_send_exit(v.batcher, caf::exit_reason::user_shutdown);
    w_->list.clear();
    caf::anon_send_exit(scaler_, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(manager_, caf::exit_reason::user_shutdown);
    run();
  }

  /// One tick with `rps` requests arriving over it (and `queued` waiting at its end).
  void tick(double rps, uint64_t queued = 0) {
    w_->stats.submitted_jobs += static_cast<uint64_t>(rps);
    w_->stats.queued_jobs = queued;
    advance(1s);
  }

  double metric(const std::string& name, const std::map<std::string, std::string>& labels) {
    return testing::metric_sample(metrics_, name, labels);
  }

  static scaling_config bounds(uint32_t min, uint32_t max) {
    scaling_config c;
    c.min_replicas = min;
    c.max_replicas = max;
    c.slo_p99_ms = 100;
    c.upscale_delay = 0ms;
    c.downscale_delay = 5s;
    return c;
  }

  serving_metrics metrics_;
  std::vector<serving_metrics::gpu_reading> gpus_;  // what "NVML" says
  std::optional<uint64_t> budget_room_;              // what the workers' memory budgets leave
  std::shared_ptr<world> w_ = std::make_shared<world>();
  manager_actor manager_;
  scaler_actor scaler_;
};

TEST_F(scaler_test, a_load_step_scales_up_at_the_next_tick_and_publishes_what_it_wants) {
  start(bounds(1, 8), 1, /*workers=*/2);
  tick(10);
  tick(10);
  EXPECT_TRUE(w_->scales.empty()) << "10 req/s: one replica is enough";
  EXPECT_DOUBLE_EQ(metric("troupe_scaler_desired_nodes", {}), 10 / 80.0 / 2)
      << "10 req/s keep 1/8 of a replica busy, on a node of two workers";
  tick(250);  // 250 / (100 x 0.8) = 3.1: four replicas
  ASSERT_EQ(w_->scales, std::vector<uint32_t>{4});
  EXPECT_EQ(metric("troupe_scaler_decisions_total",
                   {{"model", "mlp"}, {"action", "up"}, {"reason", "capacity"}}),
            1);
  EXPECT_GE(metric("troupe_scaler_decisions_total",
                   {{"model", "mlp"}, {"action", "hold"}, {"reason", "steady"}}),
            1);
  EXPECT_EQ(metric("troupe_scaler_desired_replicas", {{"model", "mlp"}, {"version", "1"}}), 4);
  EXPECT_DOUBLE_EQ(metric("troupe_scaler_desired_nodes", {}), 3.125 / 2)
      << "3.1 busy replicas on two workers a node";
  tick(250);
  EXPECT_EQ(w_->scales.size(), 1u) << "carried out: not asked again";
}

TEST_F(scaler_test, fewer_replicas_only_after_the_downscale_delay) {
  start(bounds(1, 8), 1);
  tick(0);
  tick(250);
  ASSERT_EQ(w_->scales, std::vector<uint32_t>{4});
  for (int i = 0; i < 4; ++i) tick(20);
  EXPECT_EQ(w_->scales.size(), 1u) << "within the cooldown of the scale-up";
  EXPECT_GE(metric("troupe_scaler_decisions_total", {{"action", "hold"}, {"reason", "cooldown"}}),
            1);
  for (int i = 0; i < 4 && w_->scales.size() == 1; ++i) tick(20);
  ASSERT_EQ(w_->scales, (std::vector<uint32_t>{4, 1}));
  EXPECT_EQ(metric("troupe_scaler_decisions_total", {{"action", "down"}, {"reason", "low_load"}}),
            1);
}

TEST_F(scaler_test, an_idle_version_goes_to_zero_and_a_wake_brings_it_back_without_a_tick) {
  scaling_config c = bounds(0, 4);
  c.scale_to_zero_after = 3s;
  start(c, 1);
  for (int i = 0; i < 5 && w_->scales.empty(); ++i) tick(0);
  ASSERT_EQ(w_->scales, std::vector<uint32_t>{0});
  EXPECT_EQ(metric("troupe_scaler_decisions_total", {{"action", "to_zero"}, {"reason", "idle"}}),
            1);
  // A request reaches the cold batcher: it is queued and the batcher wakes model_manager, which
  // forwards the wake to the scaler. No time passes.
  w_->stats.submitted_jobs += 1;
  w_->stats.queued_jobs = 1;
  caf::anon_send(scaler_, wake_atom::value, std::string("mlp"), int64_t{1});
  run();
  ASSERT_EQ(w_->scales, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(
      metric("troupe_scaler_decisions_total", {{"action", "from_zero"}, {"reason", "arrival"}}), 1);
}

TEST_F(scaler_test, a_count_not_reached_is_asked_again_every_tick) {
  start(bounds(1, 4), 1);
  w_->carry_out = false;  // the loads fail: model_manager keeps one replica
  tick(0);
  tick(250);
  tick(250);
  tick(250);
  ASSERT_GE(w_->scales.size(), 3u);
  for (uint32_t n : w_->scales) EXPECT_EQ(n, 4u);
  EXPECT_EQ(metric("troupe_scaler_decisions_total", {{"action", "up"}}), 1)
      << "one decision; the count is only asked again";
}

TEST_F(scaler_test, a_memory_budget_caps_a_scale_up_where_the_device_has_room) {
  start(bounds(1, 8), 1, /*workers=*/1);
  w_->list[0].gpu = true;
  w_->list[0].replica_bytes = 1ull << 30;
  gpus_ = {{0, 0.5, 60ull << 30, 80ull << 30}};  // the device: room for dozens
  budget_room_ = (1ull << 30) + (512ull << 20);   // the budget: room for one more
  tick(0);
  tick(250);
  ASSERT_EQ(w_->scales, std::vector<uint32_t>{2});
  EXPECT_EQ(metric("troupe_scaler_decisions_total", {{"action", "up"}, {"reason", "memory"}}), 1);
  budget_room_ = 256ull << 20;  // less than a replica: held, however busy
  tick(400);
  EXPECT_EQ(w_->scales.size(), 1u);
  EXPECT_GE(metric("troupe_scaler_decisions_total", {{"action", "hold"}, {"reason", "memory"}}), 1);
}

TEST_F(scaler_test, gpu_memory_caps_a_scale_up_and_counts_in_the_nodes_needed) {
  start(bounds(1, 8), 1, /*workers=*/1);
  w_->list[0].gpu = true;
  w_->list[0].replica_bytes = 10ull << 30;
  gpus_ = {{0, 0.5, 15ull << 30, 80ull << 30}};  // 15 GiB free of 80: room for one more replica
  tick(0);
  tick(250);
  ASSERT_EQ(w_->scales, std::vector<uint32_t>{2});
  EXPECT_EQ(metric("troupe_scaler_decisions_total", {{"action", "up"}, {"reason", "memory"}}), 1);
  EXPECT_DOUBLE_EQ(metric("troupe_scaler_desired_nodes", {}), 3.125)
      << "3.1 busy replicas on one GPU worker a node: more nodes, not more memory";
  gpus_ = {{0, 0.97, 60ull << 30, 80ull << 30}};  // memory now, but the GPU is saturated
  tick(400);
  EXPECT_EQ(w_->scales.size(), 1u);
  EXPECT_GE(
      metric("troupe_scaler_decisions_total", {{"action", "hold"}, {"reason", "gpu_saturated"}}),
      1);
  // Memory and compute to spare, but every GPU's PCIe link is busy (weights paged in and out):
  // another replica there would wait on the link too.
  gpus_ = {{0, 0.5, 60ull << 30, 80ull << 30, 0.95}, {1, 0.6, 50ull << 30, 80ull << 30, 0.92}};
  tick(550);
  EXPECT_EQ(w_->scales.size(), 1u);
  EXPECT_GE(
      metric("troupe_scaler_decisions_total", {{"action", "hold"}, {"reason", "pcie_saturated"}}),
      1);
  // One link with room is enough.
  gpus_ = {{0, 0.5, 60ull << 30, 80ull << 30, 0.95}, {1, 0.6, 50ull << 30, 80ull << 30, 0.3}};
  tick(700);
  EXPECT_EQ(w_->scales.size(), 2u);
}

TEST_F(scaler_test, a_reloaded_version_gets_a_fresh_policy) {
  start(bounds(1, 8), 1);
  tick(0);
  tick(250);
  ASSERT_EQ(w_->scales, std::vector<uint32_t>{4});
  // A reload: the same version with a new batcher, back at its first count.
  caf::anon_send_exit(w_->list[0].batcher, caf::exit_reason::user_shutdown);
  w_->list[0].batcher = spawn_fake_batcher(sys_, w_);
  w_->list[0].wanted = w_->list[0].ready = 1;
  w_->stats.submitted_jobs = 0;
  tick(0);  // the new batcher's first reading: no window yet
  EXPECT_EQ(w_->scales.size(), 1u) << "the new policy starts at the count it finds";
}

}  // namespace
}  // namespace troupe::actors
