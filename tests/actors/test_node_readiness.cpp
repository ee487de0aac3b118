// A whole node's readiness (serving/readiness.hpp over the table it publishes), on the
// deterministic scheduler: loaded asynchronously after a delay (live, not ready, meanwhile), with a
// model whose op has no CPU kernel, and stopped while its load waits.

#include <gtest/gtest.h>

#include <optional>

#include "actors/node.hpp"
#include "serving/model_table.hpp"
#include "serving/readiness.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::node_readiness;
using serving::readiness_policy;
using serving::serving_metrics;
using serving::table_holder;
using serving::version_state;

namespace {

using namespace std::chrono_literals;

/// An Einsum node: the CPU backend has no kernel for it.
std::string einsum_model_bytes() {
  auto m = testing::make_model();
  *m.mutable_graph()->add_input() = testing::make_value_info("x", 1, {"N", "4"});
  *m.mutable_graph()->add_output() = testing::make_value_info("y", 1, {"N"});
  auto* e = testing::add_node(m, "Einsum", {"x"}, {"y"}, "einsum_0");
  auto* a = e->add_attribute();
  a->set_name("equation");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("bi->b");
  return testing::serialize(m);
}

class readiness_node_test : public testing::actor_fixture {
 protected:
  void SetUp() override {
    repo_.write("mlp/1/model.onnx", testing::mlp_model_bytes(testing::make_mlp_weights(4, 3, 1)));
    repo_.write("einsum/1/model.onnx", einsum_model_bytes());
    node_spawn_options o;
    o.config.cpu_workers = 1;
    o.config.warmup_runs = 1;
    o.detached_workers = false;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    o.holder = &holder_;
    node_ = spawn_node(sys_, o);
    run();
  }

  void TearDown() override {
    stop_node(sys_, node_);
    run();
  }

  void load_after(std::chrono::milliseconds delay) {
    load_repository_async(sys_, node_, repo_.path().string(), delay,
                          [this](expected<load_report> r) { outcome_ = std::move(r); });
    run();
  }

  testing::temp_dir repo_;
  table_holder holder_;
  node_handles node_;
  std::optional<expected<load_report>> outcome_;
};

TEST_F(readiness_node_test, live_not_ready_while_loading_then_strict_names_the_broken_model) {
  load_after(5000ms);
  EXPECT_FALSE(outcome_.has_value()) << "the load waits for its delay";
  node_readiness r = evaluate_readiness(holder_, readiness_policy::strict);
  EXPECT_TRUE(r.live);
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.reason, "loading");
  advance(4999ms);
  EXPECT_FALSE(outcome_.has_value());
  advance(1ms);
  ASSERT_TRUE(outcome_.has_value()) << "the load finished once the delay was over";
  ASSERT_TRUE(outcome_->has_value()) << outcome_->error().to_string();
  EXPECT_EQ((*outcome_)->versions_ready, 1u);

  r = evaluate_readiness(holder_, readiness_policy::strict);
  EXPECT_FALSE(r.ready);
  EXPECT_NE(r.reason.find("model 'einsum' version 1 failed to load: unsupported"),
            std::string::npos)
      << r.reason;
  EXPECT_NE(r.reason.find("op 'Einsum' (node 'einsum_0') has no kernel on the cpu backend"),
            std::string::npos)
      << r.reason;
  EXPECT_EQ(r.reason.find("mlp"), std::string::npos) << "mlp is ready: " << r.reason;
  EXPECT_TRUE(evaluate_readiness(holder_, readiness_policy::any).ready);
  auto table = holder_.get();
  ASSERT_TRUE(table);
  EXPECT_TRUE(model_ready(*table, "mlp", 0));
  EXPECT_FALSE(model_ready(*table, "einsum", 1));
  EXPECT_EQ(table->find("einsum")->versions[0].current_state(), version_state::failed)
      << "never READY-then-fail";
}

TEST_F(readiness_node_test, stopping_during_the_delay_ends_the_load_at_once) {
  load_after(std::chrono::hours(1));
  EXPECT_FALSE(outcome_.has_value());
  stop_node(sys_, node_);
  run();
  ASSERT_TRUE(outcome_.has_value()) << "the waiter learns that the manager is gone";
  ASSERT_FALSE(outcome_->has_value());
  EXPECT_EQ(outcome_->error().code(), error_code::unavailable);
  EXPECT_NE(outcome_->error().message().find("stopped"), std::string::npos);
  EXPECT_EQ(evaluate_readiness(holder_, readiness_policy::strict).reason, "loading");
}

}  // namespace
}  // namespace troupe::actors
