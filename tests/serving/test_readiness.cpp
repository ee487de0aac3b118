// Node readiness (serving/readiness.hpp): strict and any policies over hand-built tables (failed
// models and versions, replicas lost, an empty repository), not ready before the first load and
// while draining. A whole node's readiness is tests/actors/test_node_readiness.cpp.

#include <gtest/gtest.h>

#include "serving/model_table.hpp"
#include "serving/readiness.hpp"

namespace troupe::serving {
namespace {

version_entry make_version(int64_t v, version_state s, status error = status::ok()) {
  version_entry e;
  e.version = v;
  if (s != version_state::failed) e.signature = std::make_shared<model_signature>();
  e.state = std::make_shared<std::atomic<uint8_t>>(static_cast<uint8_t>(s));
  e.load_error = std::move(error);
  return e;
}

model_entry make_model(const std::string& name, std::vector<version_entry> versions) {
  model_entry m;
  m.name = name;
  m.versions = std::move(versions);
  return m;
}

/// A holder with a published table and `loaded` set, as after a repository load.
void publish(table_holder& holder, std::vector<model_entry> models) {
  auto t = std::make_shared<model_table>();
  for (auto& m : models) t->models.emplace(m.name, std::move(m));
  holder.publish(t);
  holder.loaded.store(true);
}

TEST(readiness, not_ready_before_the_first_load) {
  table_holder holder;
  for (auto policy : {readiness_policy::strict, readiness_policy::any}) {
    const node_readiness r = evaluate_readiness(holder, policy);
    EXPECT_TRUE(r.live);
    EXPECT_FALSE(r.ready);
    EXPECT_EQ(r.reason, "loading");
  }
  // A table published but the load not finished (loaded unset) is still loading.
  holder.publish(std::make_shared<model_table>());
  EXPECT_EQ(evaluate_readiness(holder, readiness_policy::strict).reason, "loading");
}

TEST(readiness, strict_needs_every_version_any_needs_one) {
  table_holder holder;
  publish(holder,
          {make_model("good", {make_version(1, version_state::ready)}),
           make_model("einsum", {make_version(1, version_state::failed,
                                              unsupported("op 'Einsum' (node 'e0') has no kernel "
                                                          "on the cpu backend"))})});
  const node_readiness strict = evaluate_readiness(holder, readiness_policy::strict);
  EXPECT_TRUE(strict.live);
  EXPECT_FALSE(strict.ready);
  EXPECT_EQ(strict.reason,
            "model 'einsum' version 1 failed to load: unsupported: op 'Einsum' (node 'e0') has no "
            "kernel on the cpu backend");
  const node_readiness any = evaluate_readiness(holder, readiness_policy::any);
  EXPECT_TRUE(any.ready);
  EXPECT_TRUE(any.reason.empty());
}

TEST(readiness, a_model_whose_config_failed_counts_under_strict) {
  table_holder holder;
  model_entry bad = make_model("badcfg", {});
  bad.load_error = invalid_argument("config.yaml: unknown key 'max_batch_sise'");
  publish(holder, {make_model("good", {make_version(1, version_state::ready)}), std::move(bad)});
  const node_readiness r = evaluate_readiness(holder, readiness_policy::strict);
  EXPECT_FALSE(r.ready);
  EXPECT_NE(r.reason.find("model 'badcfg' failed to load"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("max_batch_sise"), std::string::npos) << r.reason;
  EXPECT_TRUE(evaluate_readiness(holder, readiness_policy::any).ready);
}

TEST(readiness, every_problem_is_named) {
  table_holder holder;
  publish(holder, {make_model("m", {make_version(1, version_state::ready),
                                    make_version(2, version_state::unavailable),
                                    make_version(3, version_state::loading)})});
  const node_readiness r = evaluate_readiness(holder, readiness_policy::strict);
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.reason, "model 'm' version 2 has no healthy replica; model 'm' version 3 is loading");
  EXPECT_TRUE(evaluate_readiness(holder, readiness_policy::any).ready);
}

TEST(readiness, any_needs_at_least_one_ready_version) {
  table_holder holder;
  publish(holder, {make_model("m", {make_version(1, version_state::failed, io_error("corrupt"))})});
  const node_readiness r = evaluate_readiness(holder, readiness_policy::any);
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.reason,
            "no model version is ready: model 'm' version 1 failed to load: io_error: corrupt")
      << r.reason;
}

TEST(readiness, an_empty_repository_asks_for_nothing) {
  table_holder holder;
  publish(holder, {});
  EXPECT_TRUE(evaluate_readiness(holder, readiness_policy::strict).ready);
  const node_readiness any = evaluate_readiness(holder, readiness_policy::any);
  EXPECT_FALSE(any.ready);
  EXPECT_NE(any.reason.find("empty"), std::string::npos) << any.reason;
}

TEST(readiness, not_ready_while_draining) {
  table_holder holder;
  publish(holder, {make_model("m", {make_version(1, version_state::ready)})});
  ASSERT_TRUE(evaluate_readiness(holder, readiness_policy::strict).ready);
  holder.draining.store(true);
  for (auto policy : {readiness_policy::strict, readiness_policy::any}) {
    const node_readiness r = evaluate_readiness(holder, policy);
    EXPECT_TRUE(r.live);
    EXPECT_FALSE(r.ready);
    EXPECT_EQ(r.reason, "draining");
  }
}

TEST(readiness, model_ready_by_version_and_default) {
  model_table t;
  t.models.emplace("m", make_model("m", {make_version(1, version_state::ready),
                                         make_version(2, version_state::unavailable)}));
  model_entry bad = make_model("bad", {});
  bad.load_error = invalid_argument("bad config");
  t.models.emplace("bad", std::move(bad));
  EXPECT_TRUE(model_ready(t, "m", 1));
  EXPECT_FALSE(model_ready(t, "m", 2));
  EXPECT_TRUE(model_ready(t, "m", 0)) << "the default version is the newest ready one";
  EXPECT_FALSE(model_ready(t, "m", 7));
  EXPECT_FALSE(model_ready(t, "bad", 0));
  EXPECT_FALSE(model_ready(t, "nope", 0));
  t.models.at("m").versions[0].state->store(static_cast<uint8_t>(version_state::unavailable));
  EXPECT_FALSE(model_ready(t, "m", 0));
}

}  // namespace
}  // namespace troupe::serving
