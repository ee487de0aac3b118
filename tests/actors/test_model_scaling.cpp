// model_manager carrying out replica counts, on the deterministic scheduler with real cpu_workers
// and the node's scaler: a model without `scaling:` keeps instance_count per worker; (scale)
// spreads new replicas over the workers and takes replicas away only once their batches are back
// (every request answered once, with the right outputs); an idle version goes to zero replicas and
// stays in the table, and a request brings a replica back; a version that cannot come back answers
// its held requests with typed errors. troupe_replicas follows all of it.

#include <gtest/gtest.h>


#include <filesystem>

#include "actors/batcher.hpp"
#include "actors/node.hpp"
#include "actors/worker.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/serving/metrics_test_util.hpp"

namespace troupe::actors {

using serving::infer_job;
using serving::job_list;
using serving::model_entry;
using serving::serving_metrics;
using serving::table_holder;
using serving::version_state;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

class model_scaling_test : public testing::actor_fixture {
 protected:
  /// `scaling` is mlp's config.yaml scaling block; `interval` the scaler's tick (long: the test
  /// alone asks for counts).
  void start(const std::string& scaling, std::chrono::milliseconds interval = 3'600'000ms) {
    w_ = testing::make_mlp_weights(4, 3, 1);
    repo_.write("mlp/1/model.onnx", testing::mlp_model_bytes(w_));
    repo_.write("mlp/config.yaml", "max_batch_size: 1\nscaling: " + scaling + "\n");
    repo_.write("plain/1/model.onnx", testing::mlp_model_bytes(w_));
    repo_.write("plain/config.yaml", "max_batch_size: 1\ninstance_count: 2\n");
    node_spawn_options o;
    o.config.cpu_workers = 3;
    o.config.warmup_runs = 1;
    o.config.scaler_interval = interval;
    o.detached_workers = false;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    o.holder = &holder_;
    o.metrics = &metrics_;
    o.recovery_wait = 5s;
    node_ = spawn_node(sys_, o);
    probe_ = testing::spawn_probe(sys_, log_);
    run();
    const load_report r = load_repository_on(node_.manager, repo_.path().string());
    ASSERT_TRUE(r.failures.empty()) << r.failures[0];
  }

  void TearDown() override {
    stop_node(sys_, node_);
    run();
  }

  status scale(uint32_t n, const std::string& model = "mlp", int64_t version = 1) {
    caf::scoped_actor self{sys_};
    auto h = self->request(node_.manager, caf::infinite, scale_atom::value, model, version, n);
    run();
    status out = internal_error("no answer");
    h.receive([&](bool) { out = status::ok(); },
              [&](caf::error& e) { out = from_caf_error(sys_, e); });
    return out;
  }

  scaled_version scaled() {
    caf::scoped_actor self{sys_};
    auto h = self->request(node_.manager, caf::infinite, scaled_atom::value);
    run();
    scaled_version out;
    h.receive(
        [&](scaled_versions& l) {
          ASSERT_EQ(l.size(), 1u) << "only mlp is scaled";
          out = l[0];
        },
        [&](caf::error& e) { FAIL() << sys_.render(e); });
    return out;
  }

  batcher_stats stats() {
    caf::scoped_actor self{sys_};
    auto h = self->request(holder_.get()->find("mlp")->versions[0].batcher->actor, caf::infinite,
                           stats_atom::value);
    run();
    batcher_stats out;
    h.receive([&](batcher_stats& s) { out = s; }, [&](caf::error& e) { FAIL() << sys_.render(e); });
    return out;
  }

  double metric(const std::string& name, const std::map<std::string, std::string>& labels) {
    return testing::metric_sample(metrics_, name, labels);
  }
  double replicas(const std::string& model = "mlp") {
    return metric("troupe_replicas", {{"model", model}, {"version", "1"}});
  }
  double pool_bytes(uint32_t worker) {
    return metric("troupe_pool_bytes", {{"worker", std::to_string(worker)}});
  }

  void submit(infer_job& j) {
    caf::anon_send(node_.router, submit_atom::value, testing::list_of({&j}));
    run();
  }

  std::unique_ptr<owned_job> job(uint32_t seed, std::chrono::microseconds timeout = 0us) {
    auto j = std::make_unique<owned_job>("mlp", std::vector<shape_t>{{1, 4}}, probe_, now(), seed);
    j->job.timeout = timeout;
    return j;
  }

  void expect_mlp(infer_job& j, const owned_job& src) {
    ASSERT_EQ(log_->replies_of(&j), 1u);
    testing::expect_mlp_reply(j, w_, src);
  }

  serving_metrics metrics_;
  testing::temp_dir repo_;
  testing::mlp_weights w_;
  table_holder holder_;
  node_handles node_;
  caf::actor probe_;
  std::shared_ptr<testing::probe_log> log_ = std::make_shared<testing::probe_log>();
};

TEST_F(model_scaling_test, scaled_models_start_at_min_replicas_and_others_keep_instance_count) {
  start("{min_replicas: 2, max_replicas: 3, slo_p99_ms: 50}");
  EXPECT_EQ(replicas("plain"), 6) << "instance_count 2 on each of 3 workers, as without a scaler";
  EXPECT_EQ(replicas("mlp"), 2);
  const scaled_version v = scaled();
  EXPECT_EQ(v.wanted, 2u);
  EXPECT_EQ(v.ready, 2u);
  EXPECT_EQ(v.workers, 3u);
  EXPECT_FALSE(v.gpu);
  EXPECT_EQ(scale(3, "plain").code(), error_code::invalid_argument);
  EXPECT_EQ(scale(3, "mlp", 9).code(), error_code::not_found);
  EXPECT_EQ(scale(3, "nope").code(), error_code::not_found);
  EXPECT_EQ(replicas("plain"), 6);
}

TEST_F(model_scaling_test, scale_up_spreads_replicas_and_scale_down_answers_every_request_once) {
  start("{min_replicas: 1, max_replicas: 3, slo_p99_ms: 50}");
  // Only the plain model's replicas on workers 1 and 2 before: mlp's one replica is on worker 0.
  const double plain_only = pool_bytes(1);
  ASSERT_EQ(pool_bytes(2), plain_only);
  ASSERT_TRUE(scale(3).is_ok());
  EXPECT_EQ(replicas(), 3);
  EXPECT_EQ(stats().alive_replicas, 3u);
  EXPECT_GT(pool_bytes(1), plain_only) << "one new replica on each worker";
  EXPECT_GT(pool_bytes(2), plain_only);
  EXPECT_EQ(scale(9).code(), error_code::ok);
  EXPECT_EQ(scaled().wanted, 3u) << "held to max_replicas";

  // Nine requests, six batches running on the three replicas at once (two each), then a
  // scale-down to one before any of them came back.
  std::vector<std::unique_ptr<owned_job>> jobs;
  job_list list;
  for (uint32_t i = 0; i < 9; ++i) {
    jobs.push_back(job(20 + i));
    list.push_back(&jobs.back()->job);
  }
  caf::anon_send(node_.router, submit_atom::value, list);
  caf::anon_send(node_.manager, scale_atom::value, std::string("mlp"), int64_t{1}, uint32_t{1});
  run();
  for (auto& j : jobs) expect_mlp(j->job, *j);
  EXPECT_EQ(replicas(), 1);
  EXPECT_EQ(stats().alive_replicas, 1u);
  EXPECT_EQ(pool_bytes(1) + pool_bytes(2), 2 * plain_only) << "the two replicas were unloaded";
  const scaled_version v = scaled();
  EXPECT_EQ(v.wanted, 1u);
  EXPECT_EQ(v.ready, 1u);
  EXPECT_EQ(v.starting, 0u);
  auto after = job(40);
  submit(after->job);
  expect_mlp(after->job, *after);
}

// Workers of worker nodes (docs/cluster.md) join with the memory they advertise and report it again
// in their heartbeats: a scale-up spreads the version over nodes (a node without one of its
// replicas first) and never places a replica on a worker without room for it (the size known
// from the version's first replica).
TEST_F(model_scaling_test, joined_workers_get_replicas_by_node_and_by_the_memory_they_advertise) {
  start("{min_replicas: 1, max_replicas: 6, slo_p99_ms: 50}");
  auto join = [&](uint32_t index, const std::string& node, uint64_t free_bytes) {
    worker_options wo;
    wo.kind = worker_kind::cpu;
    wo.index = index;
    wo.metrics = &metrics_;
    wo.background_model_reads = false;  // the test coordinator: reads on the worker
    joined_worker where;
    where.node = node;
    where.device = "cpu";
    where.memory_total_bytes = uint64_t{64} << 30;
    where.memory_free_bytes = free_bytes;
    caf::anon_send(node_.manager, joined_atom::value, index, spawn_worker(sys_, wo, false), where);
    run();
  };
  join(3, "small", 1);  // room for nothing
  join(4, "big", uint64_t{64} << 30);
  EXPECT_EQ(replicas("plain"), 8) << "instance_count 2 on every worker with room: not on small";
  const double big_before = pool_bytes(4);
  const double local_before = pool_bytes(1);  // plain's two replicas, as on every worker
  EXPECT_EQ(big_before, local_before);
  EXPECT_LE(pool_bytes(3), 0) << "nothing loaded on small";
  // mlp's first replica is on worker 0 (the node's own workers are one node). `big` reports in
  // its heartbeats that something else took its memory: the next replica goes to worker 1.
  auto report = [&](uint32_t index, uint64_t free_bytes) {
    caf::anon_send(node_.manager, memory_atom::value, index, free_bytes);
    run();
  };
  report(4, 1);
  ASSERT_TRUE(scale(2).is_ok());
  EXPECT_EQ(replicas(), 2);
  EXPECT_EQ(pool_bytes(4), big_before);
  EXPECT_GT(pool_bytes(1), local_before);
  // Its memory back, `big` gets the next one (a node without a replica of the version first).
  report(4, uint64_t{64} << 30);
  ASSERT_TRUE(scale(3).is_ok());
  EXPECT_GT(pool_bytes(4), big_before);
  EXPECT_EQ(pool_bytes(2), local_before);
  ASSERT_TRUE(scale(6).is_ok());
  EXPECT_EQ(replicas(), 6);
  EXPECT_LE(pool_bytes(3), 0) << "no room there: no replica";
  EXPECT_EQ(stats().alive_replicas, 6u);
  auto j = job(60);
  submit(j->job);
  expect_mlp(j->job, *j);

  // `small` reports its memory freed (another process let go of it): plain's two replicas it had
  // no room for when it joined are placed there now; mlp's count is the scaler's, untouched.
  report(3, uint64_t{64} << 30);
  EXPECT_EQ(replicas("plain"), 10) << "instance_count 2 on small too, once it has room";
  EXPECT_GT(pool_bytes(3), 0);
  EXPECT_EQ(replicas(), 6);
  report(3, uint64_t{64} << 30);  // the same again: nothing more to place
  EXPECT_EQ(replicas("plain"), 10);
}

TEST_F(model_scaling_test, an_idle_version_goes_to_zero_and_a_request_brings_it_back) {
  start("{min_replicas: 0, max_replicas: 2, slo_p99_ms: 50, scale_to_zero_after_s: 2}", 1s);
  EXPECT_EQ(replicas(), 1) << "one replica to start with";
  for (int i = 0; i < 10 && replicas() != 0; ++i) advance(1s);
  ASSERT_EQ(replicas(), 0);
  EXPECT_EQ(metric("troupe_scaler_decisions_total",
                   {{"model", "mlp"}, {"action", "to_zero"}, {"reason", "idle"}}),
            1);
  EXPECT_TRUE(stats().cold);
  const model_entry* m = holder_.get()->find("mlp");
  ASSERT_NE(m, nullptr) << "still in the table";
  EXPECT_EQ(m->versions[0].current_state(), version_state::ready);

  // The request is held, wakes the scaler, which brings one replica back: no time passes.
  auto j = job(50);
  submit(j->job);
  expect_mlp(j->job, *j);
  EXPECT_EQ(replicas(), 1);
  EXPECT_FALSE(stats().cold);
  EXPECT_EQ(metric("troupe_scaler_decisions_total",
                   {{"model", "mlp"}, {"action", "from_zero"}, {"reason", "arrival"}}),
            1);
}

TEST_F(model_scaling_test, a_version_that_cannot_come_back_answers_held_requests_typed) {
  start("{min_replicas: 0, max_replicas: 2, slo_p99_ms: 50, scale_to_zero_after_s: 2}", 1s);
  for (int i = 0; i < 10 && replicas() != 0; ++i) advance(1s);
  ASSERT_EQ(replicas(), 0);
  std::filesystem::remove(repo_.path() / "mlp" / "1" / "model.onnx");  // its loads now fail
  auto soon = job(60, 500ms), later = job(61);
  submit(soon->job);
  submit(later->job);
  EXPECT_EQ(log_->replies_of(&soon->job), 0u) << "held while a replica is asked for";
  advance(501ms);  // the batcher's wake-up comes 1 us after the deadline
  ASSERT_EQ(log_->replies_of(&soon->job), 1u);
  EXPECT_EQ(soon->job.result.code(), error_code::deadline_exceeded);
  EXPECT_NE(soon->job.result.message().find("scaled to zero"), std::string::npos)
      << soon->job.result.to_string();
  for (int i = 0; i < 5; ++i) advance(1s);  // recovery_wait: 5 s after the first held request
  ASSERT_EQ(log_->replies_of(&later->job), 1u);
  EXPECT_EQ(later->job.result.code(), error_code::unavailable);
  EXPECT_NE(later->job.result.message().find("scaled to zero"), std::string::npos)
      << later->job.result.to_string();
  EXPECT_EQ(replicas(), 0);
  EXPECT_EQ(holder_.get()->find("mlp")->versions[0].current_state(), version_state::ready);
}

}  // namespace
}  // namespace troupe::actors
