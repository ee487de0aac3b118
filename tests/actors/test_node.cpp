// A whole node's actors on the deterministic scheduler with real cpu_workers: model_manager loads a
// repository (config.yaml, version policy, failures), the router picks versions, batches run on
// compiled plans and the outputs match a reference MLP; the supervisor replaces a crashed worker
// and the model serves again.

#include <gtest/gtest.h>

#include "actors/node.hpp"
#include "serving/model_table.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::infer_job;
using serving::model_entry;
using serving::serving_metrics;
using serving::table_holder;
using serving::version_entry;
using serving::version_state;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

class node_test : public testing::actor_fixture {
 protected:
  void SetUp() override {
    w1_ = testing::make_mlp_weights(4, 3, 1);
    w2_ = testing::make_mlp_weights(4, 3, 2);
    repo_.write("mlp/1/model.onnx", testing::mlp_model_bytes(w1_));
    repo_.write("mlp/2/model.onnx", testing::mlp_model_bytes(w2_));
    repo_.write("mlp/config.yaml",
                "max_batch_size: 4\n"
                "dynamic_batching:\n"
                "  max_queue_delay_microseconds: 100\n"
                "version_policy: {all: {}}\n");
    repo_.write("fixed/1/model.onnx", testing::mlp_model_bytes(w1_, /*dynamic_batch=*/false));
    repo_.write("broken/1/model.onnx", "this is not an onnx model");
    repo_.write("badcfg/1/model.onnx", testing::mlp_model_bytes(w1_));
    repo_.write("badcfg/config.yaml", "max_batch_sise: 4\n");
  }

  void start(uint32_t workers = 1) {
    node_spawn_options o;
    o.config.cpu_workers = workers;
    o.config.warmup_runs = 1;
    o.detached_workers = false;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    o.holder = &holder_;
    o.after_model_load = after_model_load_;
    node_ = spawn_node(sys_, o);
    probe_ = testing::spawn_probe(sys_, log_);
    run();
    report_ = load_repository_on(node_.manager, repo_.path().string());
  }

  void TearDown() override {
    stop_node(sys_, node_);
    run();
  }

  void submit(infer_job& j) {
    caf::anon_send(node_.router, submit_atom::value, testing::list_of({&j}));
    run();
  }

  std::unique_ptr<owned_job> job(const std::string& model, shape_t shape, uint32_t seed = 7) {
    return std::make_unique<owned_job>(model, std::vector<shape_t>{shape}, probe_, now(), seed);
  }

  std::function<void()> after_model_load_;  // node_spawn_options::after_model_load
  testing::temp_dir repo_;
  testing::mlp_weights w1_, w2_;
  table_holder holder_;
  node_handles node_;
  load_report report_;
  caf::actor probe_;
  std::shared_ptr<testing::probe_log> log_ = std::make_shared<testing::probe_log>();
};

TEST_F(node_test, loads_the_repository_and_reports_failures) {
  start();
  EXPECT_EQ(report_.versions_ready, 3u);  // mlp/1, mlp/2, fixed/1
  ASSERT_EQ(report_.failures.size(), 2u);
  std::string all;
  for (const auto& f : report_.failures) all += f + "\n";
  EXPECT_NE(all.find("badcfg"), std::string::npos) << all;
  EXPECT_NE(all.find("max_batch_sise"), std::string::npos) << "the bad key is named: " << all;
  EXPECT_NE(all.find("broken/1"), std::string::npos) << all;
  EXPECT_TRUE(holder_.loaded.load());
  auto table = holder_.get();
  ASSERT_TRUE(table);
  const model_entry* mlp = table->find("mlp");
  ASSERT_NE(mlp, nullptr);
  ASSERT_EQ(mlp->versions.size(), 2u);
  EXPECT_EQ(mlp->versions[1].current_state(), version_state::ready);
  EXPECT_EQ(mlp->versions[1].signature->max_batch_size, 4);
  const model_entry* fixed = table->find("fixed");
  ASSERT_NE(fixed, nullptr);
  EXPECT_EQ(fixed->versions[0].signature->max_batch_size, 0) << "static batch dim: no batching";
  EXPECT_EQ(table->find("broken")->versions[0].current_state(), version_state::failed);
}

TEST_F(node_test, after_model_load_runs_once_the_replica_loads_have_answered) {
  // Where the node saves its tuning records (cluster/node_main.cpp): after every model load.
  int calls = 0;
  after_model_load_ = [&calls] { ++calls; };
  start();
  EXPECT_EQ(report_.versions_ready, 3u);
  const int at_start = calls;
  EXPECT_GE(at_start, 2) << "mlp and fixed loaded replicas";

  caf::scoped_actor self{sys_};
  auto h = self->request(node_.manager, caf::infinite, mload_atom::value, std::string("fixed"),
                         std::string());
  run();
  h.receive([](bool) {}, [&](caf::error& e) { FAIL() << sys_.render(e); });
  EXPECT_EQ(calls, at_start + 1) << "a load through the API";
}

TEST_F(node_test, serves_latest_and_explicit_versions) {
  start();
  auto latest = job("mlp", {3, 4});
  submit(latest->job);
  advance(101us);  // the queue delay
  ASSERT_EQ(log_->replies_of(&latest->job), 1u);
  testing::expect_mlp_reply(latest->job, w2_, *latest);

  auto v1 = job("mlp", {2, 4}, 9);
  v1->job.version = 1;
  submit(v1->job);
  advance(101us);
  ASSERT_EQ(log_->replies_of(&v1->job), 1u);
  testing::expect_mlp_reply(v1->job, w1_, *v1);

  auto fixed = job("fixed", {1, 4});
  submit(fixed->job);
  ASSERT_EQ(log_->replies_of(&fixed->job), 1u) << "no batching: no delay";
  testing::expect_mlp_reply(fixed->job, w1_, *fixed);
}

TEST_F(node_test, concurrent_requests_share_a_batch_and_each_gets_its_rows) {
  start();
  std::vector<std::unique_ptr<owned_job>> js;
  for (uint32_t i = 0; i < 4; ++i) js.push_back(job("mlp", {1, 4}, 100 + i));
  serving::job_list l;
  for (auto& j : js) l.push_back(&j->job);
  caf::anon_send(node_.router, submit_atom::value, l);
  run();  // 4 rows = max_batch_size: no waiting
  for (auto& j : js) {
    ASSERT_EQ(log_->replies_of(&j->job), 1u);
    EXPECT_EQ(j->job.batch_rows, 4u);
    testing::expect_mlp_reply(j->job, w2_, *j);
  }
}

TEST_F(node_test, routing_errors_are_typed) {
  start();
  auto unknown = job("nope", {1, 4});
  submit(unknown->job);
  EXPECT_EQ(unknown->job.result.code(), error_code::not_found);
  auto bad_version = job("mlp", {1, 4});
  bad_version->job.version = 7;
  submit(bad_version->job);
  EXPECT_EQ(bad_version->job.result.code(), error_code::not_found);
  auto bad_shape = job("mlp", {1, 5});
  submit(bad_shape->job);
  EXPECT_EQ(bad_shape->job.result.code(), error_code::invalid_argument);
  auto too_many_rows = job("mlp", {5, 4});
  submit(too_many_rows->job);
  EXPECT_EQ(too_many_rows->job.result.code(), error_code::invalid_argument);
  auto failed = job("broken", {1, 4});
  submit(failed->job);
  EXPECT_EQ(failed->job.result.code(), error_code::unavailable);
  auto bad_priority = job("mlp", {1, 4});
  bad_priority->job.priority = 3;
  submit(bad_priority->job);
  EXPECT_EQ(bad_priority->job.result.code(), error_code::invalid_argument);
}

TEST_F(node_test, timeout_that_already_passed_is_refused_by_the_router) {
  start();
  auto late = job("mlp", {1, 4});
  late->job.timeout = 10us;
  late->job.arrival = now() - 20us;
  submit(late->job);
  EXPECT_EQ(late->job.result.code(), error_code::deadline_exceeded);
}

TEST_F(node_test, supervisor_replaces_a_crashed_worker_and_replicas_return) {
  start();
  auto table = holder_.get();
  const version_entry* v2 = table->find("mlp")->find(2);
  ASSERT_EQ(v2->current_state(), version_state::ready);
  caf::anon_send(node_.workers[0], crash_atom::value);
  run();  // crash -> batchers see it (not ready) -> the supervisor waits for its backoff
  EXPECT_EQ(v2->current_state(), version_state::unavailable);
  advance(100ms);  // -> it respawns -> the manager reloads -> the batchers adopt
  EXPECT_EQ(v2->current_state(), version_state::ready) << "reloaded on the replacement worker";
  caf::scoped_actor self{sys_};
  std::vector<worker_actor> workers;
  auto h = self->request(node_.supervisor, caf::infinite, workers_atom::value);
  run();
  h.receive([&](std::vector<worker_actor>& w) { workers = w; }, [&](caf::error&) {});
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_NE(workers[0], node_.workers[0]) << "a fresh worker";
  auto after = job("mlp", {1, 4});
  submit(after->job);
  advance(101us);
  ASSERT_EQ(log_->replies_of(&after->job), 1u);
  testing::expect_mlp_reply(after->job, w2_, *after);
  node_.workers = workers;
}

}  // namespace
}  // namespace troupe::actors
