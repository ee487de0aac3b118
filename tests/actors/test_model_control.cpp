// model_control, the doors' facade over model_manager's control messages, on CAF's deterministic
// scheduler with a fake manager: the control mode decides what is allowed, `done` runs once with
// the manager's answer or with UNAVAILABLE when the manager is gone, and the short-lived actor
// that asked leaves nothing behind on the manager.

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "actors/model_control.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/actors/fake_manager.hpp"

namespace troupe::actors {

using serving::model_control_mode;

namespace {

/// The actors that asked the fake manager, by weak reference (their memory blocks).
struct asked_log {
  std::vector<caf::actor_addr> askers;
  std::vector<std::string> loads;
};

manager_actor spawn_fake_manager(caf::actor_system& sys, std::shared_ptr<asked_log> log) {
  testing::fake_manager_hooks h;
  h.asked = [log](const caf::actor_addr& asker) { log->askers.push_back(asker); };
  h.mload = [log](const std::string& name) -> caf::result<bool> {
    log->loads.push_back(name);
    if (name == "broken") return to_caf_error(invalid_argument("model 'broken' is broken"));
    return true;
  };
  return testing::spawn_fake_manager(sys, std::move(h));
}

class model_control_test : public testing::actor_fixture {
 protected:
  std::shared_ptr<asked_log> log_ = std::make_shared<asked_log>();
  manager_actor manager_ = spawn_fake_manager(sys_, log_);
};

TEST_F(model_control_test, answers_once_and_the_asking_actor_leaves_nothing_on_the_manager) {
  model_control control(sys_, manager_, model_control_mode::explicit_);
  std::vector<status> answers;
  control.load("mlp", "", [&](status s) { answers.push_back(s); });
  control.load("broken", "", [&](status s) { answers.push_back(s); });
  control.unload("mlp", [&](status s) { answers.push_back(s); });
  control.index([&](expected<model_index> r) { answers.push_back(r ? status::ok() : r.error()); });
  run();
  ASSERT_EQ(answers.size(), 4u);
  EXPECT_TRUE(answers[0].is_ok() && answers[2].is_ok() && answers[3].is_ok());
  EXPECT_EQ(answers[1].code(), error_code::invalid_argument) << answers[1].to_string();
  ASSERT_EQ(log_->askers.size(), 4u);
  for (const auto& a : log_->askers) {
    // CAF 0.17 keeps a monitor's record, with a weak reference to the monitoring actor, on the
    // monitored one: an asker that kept its monitor stayed allocated as long as the manager.
    auto* block = caf::actor_cast<caf::actor_control_block*>(a);
    ASSERT_NE(block, nullptr);
    EXPECT_EQ(block->weak_refs.load(), 1u) << "only the log's reference keeps the asker's memory";
  }
}

TEST_F(model_control_test, a_manager_that_is_gone_is_answered_unavailable) {
  model_control control(sys_, manager_, model_control_mode::explicit_);
  caf::anon_send_exit(manager_, caf::exit_reason::user_shutdown);
  run();
  std::vector<status> answers;
  control.load("mlp", "", [&](status s) { answers.push_back(s); });
  run();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].code(), error_code::unavailable) << answers[0].to_string();
}

TEST_F(model_control_test, the_control_mode_decides_what_is_allowed) {
  for (auto mode : {model_control_mode::none, model_control_mode::poll}) {
    model_control control(sys_, manager_, mode);
    std::vector<status> answers;
    control.load("mlp", "", [&](status s) { answers.push_back(s); });
    control.unload("mlp", [&](status s) { answers.push_back(s); });
    bool indexed = false;
    control.index([&](expected<model_index> r) { indexed = r.has_value(); });
    run();
    ASSERT_EQ(answers.size(), 2u);
    for (const auto& s : answers) EXPECT_EQ(s.code(), error_code::unsupported) << s.to_string();
    EXPECT_TRUE(indexed) << "the index is served in every mode";
  }
  EXPECT_TRUE(log_->loads.empty()) << "a refused load never reaches the manager";
}

}  // namespace
}  // namespace troupe::actors
