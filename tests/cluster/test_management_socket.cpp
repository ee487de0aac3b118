// The management socket's checks that need no node: which endpoints count as loopback, and what a
// token file must be. A socket beyond loopback without a token refuses to start. Its fault
// operations (inject, list, remove, clear) through management_client and as raw ControlRequests,
// on a node with and without fault injection, and the token they need like the model operations.
// The model operations against a real node: tests/integration/test_model_control.py.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <zmq.hpp>

#include "actors/fault_control.hpp"
#include "actors/model_control.hpp"
#include "cluster/management_client.hpp"
#include "cluster/management_socket.hpp"
#include "proto/troupe.pb.h"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::cluster {
namespace {

TEST(management_socket, loopback_endpoints) {
  for (const char* e : {"tcp://127.0.0.1:5556", "tcp://127.0.1.1:1", "tcp://localhost:5556",
                        "tcp://[::1]:5556", "ipc:///tmp/troupe.sock", "inproc://x"})
    EXPECT_TRUE(is_loopback_endpoint(e)) << e;
  for (const char* e : {"tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://10.0.0.5:5556",
                        "tcp://eth0:5556", "tcp://localhost.example.com:1"})
    EXPECT_FALSE(is_loopback_endpoint(e)) << e;
}

TEST(management_socket, token_files_must_be_private_regular_and_not_empty) {
  testing::temp_dir dir;
  const auto path = (dir.path() / "token").string();
  dir.write("token", "  s3cret\n");
  ::chmod(path.c_str(), 0600);
  auto t = read_token_file(path);
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(*t, "s3cret") << "surrounding whitespace dropped";
  ::chmod(path.c_str(), 0640);
  auto wide = read_token_file(path);
  ASSERT_FALSE(wide);
  EXPECT_NE(wide.error().message().find("chmod 600"), std::string::npos);
  dir.write("empty", "\n \n");
  ::chmod((dir.path() / "empty").c_str(), 0600);
  EXPECT_EQ(read_token_file((dir.path() / "empty").string()).error().code(),
            error_code::invalid_argument);
  EXPECT_EQ(read_token_file((dir.path() / "missing").string()).error().code(),
            error_code::not_found);
  EXPECT_FALSE(read_token_file(dir.path().string())) << "a directory is not a token file";
}

class management_socket_test : public testing::actor_fixture {};

TEST_F(management_socket_test, beyond_loopback_without_a_token_does_not_start) {
  // No request reaches the manager: a null handle is enough for the refusal.
  actors::model_control control(sys_, actors::manager_actor{},
                                serving::model_control_mode::explicit_);
  actors::fault_control faults(nullptr);
  management_options o;
  o.listen = "tcp://0.0.0.0:0";
  auto s = management_socket::create(o, control, faults);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), error_code::invalid_argument);
  EXPECT_NE(s.error().message().find("management_token_file"), std::string::npos);
}

// ---- fault operations --------------------------------------------------------------------------

using namespace std::chrono_literals;
namespace pb = troupe::v1;

constexpr auto kAnswer = 10s;  // fault operations answer at once; this only bounds a broken test

/// A management socket on loopback whose fault operations reach `plan` (null: fault injection
/// off). Model operations are not asked here: the manager handle stays null.
class fault_socket_test : public testing::actor_fixture {
 protected:
  void start(std::shared_ptr<serving::fault_plan> plan, std::string token = "") {
    plan_ = plan;
    control_ = std::make_unique<actors::model_control>(sys_, actors::manager_actor{},
                                                       serving::model_control_mode::explicit_);
    if (!token.empty()) control_->set_token(std::move(token));
    faults_ = std::make_unique<actors::fault_control>(std::move(plan));
    management_options o;
    o.listen = "tcp://127.0.0.1:*";
    auto s = management_socket::create(o, *control_, *faults_);
    ASSERT_TRUE(s) << s.error().to_string();
    socket_ = std::move(*s);
  }

  std::unique_ptr<management_client> client(std::string token = "") {
    auto c = management_client::connect(socket_->endpoint(), std::move(token));
    EXPECT_TRUE(c) << c.error().to_string();
    return c ? std::move(*c) : nullptr;
  }

  /// One ControlRequest as bytes on a DEALER, its ControlReply back (what a client other than
  /// management_client sends: unset optional fields, a kind the enum does not know).
  pb::ControlReply raw(pb::ControlRequest q) {
    zmq::context_t ctx(1);
    zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::rcvtimeo, static_cast<int>(kAnswer / 1ms));
    dealer.connect(socket_->endpoint());
    dealer.send(zmq::buffer(q.SerializeAsString()), zmq::send_flags::none);
    zmq::message_t m;
    pb::ControlReply r;
    EXPECT_TRUE(dealer.recv(m)) << "no reply";
    EXPECT_TRUE(r.ParseFromArray(m.data(), static_cast<int>(m.size())));
    return r;
  }

  static serving::fault_rule rule(serving::fault_kind kind, std::string target) {
    serving::fault_rule r;
    r.kind = kind;
    r.target = std::move(target);
    return r;
  }

  std::shared_ptr<serving::fault_plan> plan_;
  std::unique_ptr<actors::model_control> control_;
  std::unique_ptr<actors::fault_control> faults_;
  std::unique_ptr<management_socket> socket_;  // declared last: goes first
};

TEST_F(fault_socket_test, inject_list_remove_clear) {
  start(std::make_shared<serving::fault_plan>());
  auto c = client();
  ASSERT_TRUE(c);
  serving::fault_rule delay = rule(serving::fault_kind::delay, "frontend_router");
  delay.times = 0;
  delay.delay = 50ms;
  auto first = c->inject_fault(delay, kAnswer);
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_EQ(*first, 1u) << "ids count from 1";
  serving::fault_rule hang = rule(serving::fault_kind::hang, "worker:1");
  hang.probability = 0.5;
  hang.seed = 7;
  hang.times = 3;
  auto second = c->inject_fault(hang, kAnswer);
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_EQ(*second, 2u);
  // The rules are the node's plan's: its sites see them.
  ASSERT_TRUE(plan_->fire(serving::fault_kind::delay, "frontend_router"));
  ASSERT_TRUE(plan_->fire(serving::fault_kind::delay, "frontend_router"));

  auto listed = c->list_faults(kAnswer);
  ASSERT_TRUE(listed) << listed.error().to_string();
  ASSERT_EQ(listed->size(), 2u);
  const serving::fault_rule_state& d = (*listed)[0];
  EXPECT_EQ(d.id, 1u);
  EXPECT_EQ(d.rule.kind, serving::fault_kind::delay);
  EXPECT_EQ(d.rule.target, "frontend_router");
  EXPECT_EQ(d.rule.times, 0u);
  EXPECT_EQ(d.rule.delay, 50ms);
  EXPECT_EQ(d.chances, 2u);
  EXPECT_EQ(d.fired, 2u);
  EXPECT_FALSE(d.spent());
  const serving::fault_rule_state& h = (*listed)[1];
  EXPECT_EQ(h.id, 2u);
  EXPECT_EQ(h.rule.kind, serving::fault_kind::hang);
  EXPECT_EQ(h.rule.target, "worker:1");
  EXPECT_EQ(h.rule.times, 3u);
  EXPECT_EQ(h.rule.probability, 0.5);
  EXPECT_EQ(h.rule.seed, 7u);
  EXPECT_EQ(h.fired, 0u);

  ASSERT_TRUE(c->remove_fault(1, kAnswer).is_ok());
  const status again = c->remove_fault(1, kAnswer);
  EXPECT_EQ(again.code(), error_code::not_found) << again.to_string();
  EXPECT_NE(again.message().find("no fault rule 1"), std::string::npos) << again.message();
  EXPECT_EQ(plan_->list().size(), 1u);
  EXPECT_FALSE(plan_->may_fire(serving::fault_kind::delay)) << "removed from the node's plan";

  auto third = c->inject_fault(rule(serving::fault_kind::abort, "worker"), kAnswer);
  ASSERT_TRUE(third);
  EXPECT_EQ(*third, 3u) << "ids are never reused";
  auto cleared = c->clear_faults(kAnswer);
  ASSERT_TRUE(cleared) << cleared.error().to_string();
  EXPECT_EQ(*cleared, 2u);
  EXPECT_TRUE(plan_->list().empty());
  auto empty = c->list_faults(kAnswer);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST_F(fault_socket_test, a_rule_that_is_not_valid_is_refused_naming_the_field) {
  start(std::make_shared<serving::fault_plan>());
  auto c = client();
  ASSERT_TRUE(c);
  auto refused = [&](const serving::fault_rule& r, std::string_view field) {
    auto id = c->inject_fault(r, kAnswer);
    ASSERT_FALSE(id) << "accepted: " << r.target;
    EXPECT_EQ(id.error().code(), error_code::invalid_argument);
    EXPECT_EQ(id.error().message().rfind("inject_fault." + std::string(field) + ": ", 0), 0u)
        << id.error().message();
  };
  serving::fault_rule p = rule(serving::fault_kind::hang, "worker");
  p.probability = 0;
  refused(p, "probability");
  refused(rule(serving::fault_kind::drop, "worker:1"), "target");
  refused(rule(serving::fault_kind::slow_link, "worker_link"), "delay_ms");
  serving::fault_rule a = rule(serving::fault_kind::fail_allocations, "worker:0");
  a.allocations = 0;
  refused(a, "allocations");
  EXPECT_TRUE(plan_->list().empty()) << "nothing refused reached the plan";

  pb::ControlRequest q;
  q.mutable_inject_fault()->set_kind("meltdown");
  q.mutable_inject_fault()->set_target("worker");
  pb::ControlReply r = raw(q);
  EXPECT_EQ(r.error().code(), pb::ErrorCode(static_cast<int>(error_code::invalid_argument)));
  EXPECT_EQ(r.error().message().rfind("inject_fault.kind: unknown fault kind 'meltdown'", 0), 0u)
      << r.error().message();
}

TEST_F(fault_socket_test, unset_optional_fields_take_the_defaults) {
  start(std::make_shared<serving::fault_plan>());
  pb::ControlRequest q;
  q.mutable_inject_fault()->set_kind("hang");
  q.mutable_inject_fault()->set_target("worker:0");
  pb::ControlReply r = raw(q);
  ASSERT_FALSE(r.has_error()) << r.error().message();
  EXPECT_EQ(r.fault_id(), 1u);
  const auto rules = plan_->list();
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(rules[0].rule.times, 1u) << "once";
  EXPECT_EQ(rules[0].rule.probability, 1.0) << "always";
  EXPECT_EQ(rules[0].rule.seed, 1u);
  EXPECT_EQ(rules[0].rule.allocations, 1u);
  EXPECT_EQ(rules[0].rule.delay, 0ms);

  pb::ControlRequest forever;
  forever.mutable_inject_fault()->set_kind("drop");
  forever.mutable_inject_fault()->set_target("batcher_worker");
  forever.mutable_inject_fault()->set_times(0);  // set to 0: no limit, not the default
  ASSERT_FALSE(raw(forever).has_error());
  EXPECT_EQ(plan_->list().at(1).rule.times, 0u);
}

TEST_F(fault_socket_test, a_node_without_fault_injection_says_how_to_turn_it_on) {
  start(nullptr);
  auto c = client();
  ASSERT_TRUE(c);
  auto off = [](const status& s) {
    EXPECT_EQ(s.code(), error_code::unsupported) << s.to_string();
    EXPECT_NE(s.message().find("fault injection is off"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("fault_injection: true"), std::string::npos) << s.message();
  };
  off(c->inject_fault(rule(serving::fault_kind::hang, "worker"), kAnswer).error());
  serving::fault_rule bad = rule(serving::fault_kind::hang, "worker");
  bad.probability = 7;
  off(c->inject_fault(bad, kAnswer).error());  // off before the rule is judged
  off(c->list_faults(kAnswer).error());
  off(c->remove_fault(1, kAnswer));
  off(c->clear_faults(kAnswer).error());
}

TEST_F(fault_socket_test, fault_operations_need_the_token_like_the_others) {
  start(std::make_shared<serving::fault_plan>(), "s3cret");
  for (const char* wrong : {"", "s3cre", "s3cret!"}) {
    auto c = client(wrong);
    ASSERT_TRUE(c);
    auto refused = [&](const status& s) {
      EXPECT_EQ(s.code(), error_code::invalid_argument) << wrong;
      EXPECT_NE(s.message().find("management token is missing or wrong"), std::string::npos)
          << s.message();
    };
    refused(c->inject_fault(rule(serving::fault_kind::hang, "worker"), kAnswer).error());
    refused(c->list_faults(kAnswer).error());
    refused(c->remove_fault(1, kAnswer));
    refused(c->clear_faults(kAnswer).error());
  }
  EXPECT_TRUE(plan_->list().empty()) << "a refused inject adds nothing";
  auto c = client("s3cret");
  ASSERT_TRUE(c);
  auto id = c->inject_fault(rule(serving::fault_kind::hang, "worker"), kAnswer);
  ASSERT_TRUE(id) << id.error().to_string();
  auto listed = c->list_faults(kAnswer);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), 1u);
  ASSERT_TRUE(c->remove_fault(*id, kAnswer).is_ok());
}

}  // namespace
}  // namespace troupe::cluster
