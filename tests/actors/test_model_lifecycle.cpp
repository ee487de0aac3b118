// model_manager's run-time control on the deterministic scheduler with real cpu_workers: a reload
// that brings a new version while requests are queued on the old one, an unload with queued and
// running requests, a failed reload that leaves the loaded version serving. Every job is answered
// exactly once, by the version it was routed to.

#include <gtest/gtest.h>

#include "actors/batcher.hpp"
#include "actors/node.hpp"
#include "serving/model_table.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::infer_job;
using serving::model_entry;
using serving::serving_metrics;
using serving::table_holder;
using serving::version_state;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

class lifecycle_test : public testing::actor_fixture {
 protected:
  void SetUp() override {
    w1_ = testing::make_mlp_weights(4, 3, 1);
    w2_ = testing::make_mlp_weights(4, 3, 2);
    repo_.write("mlp/1/model.onnx", testing::mlp_model_bytes(w1_));
    // latest: 1 (the default policy): a new version replaces the old one.
    repo_.write("mlp/config.yaml",
                "max_batch_size: 4\n"
                "dynamic_batching:\n"
                "  max_queue_delay_microseconds: 100\n");
    node_spawn_options o;
    o.config.cpu_workers = 1;
    o.config.warmup_runs = 1;
    o.detached_workers = false;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    o.holder = &holder_;
    node_ = spawn_node(sys_, o);
    probe_ = testing::spawn_probe(sys_, log_);
    run();
    ASSERT_TRUE(load_repository_on(node_.manager, repo_.path().string()).failures.empty());
  }

  void TearDown() override {
    stop_node(sys_, node_);
    run();
  }

  /// Sends (mload, name, config) and runs until it is answered.
  status mload(const std::string& name, const std::string& config = "") {
    caf::scoped_actor self{sys_};
    auto h = self->request(node_.manager, caf::infinite, mload_atom::value, name, config);
    advance(101us);
    status out = internal_error("no answer");
    h.receive([&](bool) { out = status::ok(); },
              [&](caf::error& e) { out = from_caf_error(sys_, e); });
    return out;
  }

  model_index index() {
    caf::scoped_actor self{sys_};
    auto h = self->request(node_.manager, caf::infinite, index_atom::value);
    run();
    model_index out;
    h.receive([&](model_index& i) { out = std::move(i); }, [&](caf::error&) {});
    return out;
  }

  void submit(infer_job& j) {
    caf::anon_send(node_.router, submit_atom::value, testing::list_of({&j}));
    run();
  }

  std::unique_ptr<owned_job> job(int64_t rows, uint32_t seed) {
    return std::make_unique<owned_job>("mlp", std::vector<shape_t>{{rows, 4}}, probe_, now(), seed);
  }

  /// Exactly one reply, with the outputs of the weights `w`.
  void expect_mlp(infer_job& j, const testing::mlp_weights& w, const owned_job& src) {
    ASSERT_EQ(log_->replies_of(&j), 1u);
    testing::expect_mlp_reply(j, w, src);
  }

  testing::temp_dir repo_;
  testing::mlp_weights w1_, w2_;
  table_holder holder_;
  node_handles node_;
  caf::actor probe_;
  std::shared_ptr<testing::probe_log> log_ = std::make_shared<testing::probe_log>();
};

TEST_F(lifecycle_test, a_new_version_takes_over_while_the_old_one_finishes_its_queue) {
  auto queued = job(2, 7);  // waits for the queue delay on version 1
  submit(queued->job);
  ASSERT_EQ(log_->replies_of(&queued->job), 0u);
  repo_.write("mlp/2/model.onnx", testing::mlp_model_bytes(w2_));
  ASSERT_TRUE(mload("mlp").is_ok());
  expect_mlp(queued->job, w1_, *queued);  // answered by the version it was routed to
  auto after = job(1, 8);
  submit(after->job);
  advance(101us);
  expect_mlp(after->job, w2_, *after);
  const model_index idx = index();
  ASSERT_EQ(idx.size(), 1u) << "version 1 drained and unloaded";
  EXPECT_EQ(idx[0].version, 2);
  EXPECT_EQ(idx[0].state, "READY");
  const model_entry* m = holder_.get()->find("mlp");
  ASSERT_EQ(m->versions.size(), 1u);
  EXPECT_EQ(m->versions[0].version, 2);
}

TEST_F(lifecycle_test, loading_an_unchanged_model_keeps_its_version) {
  const auto before = holder_.get()->find("mlp")->versions[0].batcher;
  ASSERT_TRUE(before);
  ASSERT_TRUE(mload("mlp").is_ok());
  const auto after = holder_.get()->find("mlp")->versions[0].batcher;
  ASSERT_TRUE(after);
  EXPECT_EQ(after->actor, before->actor) << "nothing reloaded";
}

TEST_F(lifecycle_test, unload_answers_queued_requests_then_refuses_new_ones_typed) {
  auto queued = job(1, 9);
  submit(queued->job);
  ASSERT_EQ(log_->replies_of(&queued->job), 0u) << "waiting for the queue delay";
  caf::scoped_actor self{sys_};
  auto h = self->request(node_.manager, caf::infinite, munload_atom::value, std::string("mlp"));
  run();
  bool unloaded = false;
  // The table switched at once; the queued job still runs on version 1 after its delay.
  auto late = job(1, 10);
  submit(late->job);
  ASSERT_EQ(log_->replies_of(&late->job), 1u);
  EXPECT_EQ(late->job.result.code(), error_code::not_found);
  EXPECT_NE(late->job.result.message().find("unloaded"), std::string::npos)
      << late->job.result.to_string();
  advance(101us);
  h.receive([&](bool) { unloaded = true; }, [&](caf::error& e) { FAIL() << sys_.render(e); });
  EXPECT_TRUE(unloaded);
  expect_mlp(queued->job, w1_, *queued);
  const model_index idx = index();
  ASSERT_EQ(idx.size(), 1u);
  EXPECT_EQ(idx[0].state, "UNAVAILABLE");
  EXPECT_EQ(idx[0].version, 0);
  ASSERT_TRUE(mload("mlp").is_ok()) << "and it comes back";
  auto again = job(1, 11);
  submit(again->job);
  advance(101us);
  expect_mlp(again->job, w1_, *again);
}

TEST_F(lifecycle_test, a_failed_reload_leaves_the_loaded_version_serving) {
  repo_.write("mlp/2/model.onnx", "this is not an onnx model");
  const status s = mload("mlp");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("keep serving"), std::string::npos) << s.to_string();
  EXPECT_NE(s.message().find("mlp/2"), std::string::npos) << s.to_string();
  auto j = job(3, 12);
  submit(j->job);
  advance(101us);
  expect_mlp(j->job, w1_, *j);
  EXPECT_EQ(holder_.get()->find("mlp")->versions[0].version, 1);
  const status bad = mload("mlp", "max_batch_sise: 4\n");
  EXPECT_EQ(bad.code(), error_code::invalid_argument) << bad.to_string();
  EXPECT_NE(bad.message().find("max_batch_sise"), std::string::npos) << bad.to_string();
  EXPECT_EQ(holder_.get()->find("mlp")->versions[0].current_state(), version_state::ready);
}

}  // namespace
}  // namespace troupe::actors
