// serving::fault_plan: which rule fires at which chance — targets and sites, times, seeded
// probability, spent rules, removal — and the checks a rule must pass before it is added.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "serving/fault_plan.hpp"

namespace troupe::serving {
namespace {

using namespace std::chrono_literals;

fault_rule rule(fault_kind kind, std::string target, uint32_t times = 1) {
  fault_rule r;
  r.kind = kind;
  r.target = std::move(target);
  r.times = times;
  if (kind == fault_kind::delay || kind == fault_kind::slow_link) r.delay = 5ms;
  return r;
}

TEST(FaultPlan, TargetsCoverTheirSites) {
  EXPECT_TRUE(target_matches("worker:2", "worker:2"));
  EXPECT_FALSE(target_matches("worker:2", "worker:3"));
  EXPECT_FALSE(target_matches("worker:2", "worker:20"));
  EXPECT_TRUE(target_matches("worker", "worker:7"));
  EXPECT_TRUE(target_matches("worker:*", "worker:0"));
  EXPECT_TRUE(target_matches("batcher_worker", "batcher_worker:1"));
  EXPECT_FALSE(target_matches("batcher_worker", "worker_link:1"));
  EXPECT_TRUE(target_matches("frontend_router", "frontend_router"));
  EXPECT_FALSE(target_matches("worker", "workers:1"));
}

TEST(FaultPlan, ARuleFiresItsTimesAtMatchingSitesOnly) {
  fault_plan plan;
  auto id = plan.add(rule(fault_kind::hang, "worker:1", 2));
  ASSERT_TRUE(id) << id.error().to_string();
  EXPECT_FALSE(plan.fire(fault_kind::hang, "worker:0")) << "another worker";
  EXPECT_FALSE(plan.fire(fault_kind::abort, "worker:1")) << "another kind";
  EXPECT_TRUE(plan.fire(fault_kind::hang, "worker:1"));
  EXPECT_TRUE(plan.fire(fault_kind::hang, "worker:1"));
  EXPECT_FALSE(plan.fire(fault_kind::hang, "worker:1")) << "spent after 2";
  EXPECT_FALSE(plan.may_fire(fault_kind::hang));
  const auto rules = plan.list();
  ASSERT_EQ(rules.size(), 1u) << "a spent rule stays listed";
  EXPECT_EQ(rules[0].id, *id);
  EXPECT_EQ(rules[0].fired, 2u);
  EXPECT_TRUE(rules[0].spent());
}

TEST(FaultPlan, TimesZeroFiresForEverUntilRemoved) {
  fault_plan plan;
  auto id = plan.add(rule(fault_kind::drop, "batcher_worker", 0));
  ASSERT_TRUE(id);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(plan.fire(fault_kind::drop, "batcher_worker:3"));
  EXPECT_TRUE(plan.remove(*id));
  EXPECT_FALSE(plan.remove(*id));
  EXPECT_FALSE(plan.fire(fault_kind::drop, "batcher_worker:3"));
}

TEST(FaultPlan, ProbabilityIsSeededAndRepeats) {
  auto run = [](uint64_t seed) {
    fault_plan plan;
    fault_rule r = rule(fault_kind::duplicate, "worker_link", 0);
    r.probability = 0.25;
    r.seed = seed;
    EXPECT_TRUE(plan.add(r));
    std::vector<bool> fired;
    for (int i = 0; i < 2000; ++i) fired.push_back(plan.fire(fault_kind::duplicate, "worker_link:0").has_value());
    return fired;
  };
  const auto a = run(42), b = run(42), c = run(43);
  EXPECT_EQ(a, b) << "the same seed, the same firings";
  EXPECT_NE(a, c);
  const auto n = std::count(a.begin(), a.end(), true);
  EXPECT_GT(n, 400);  // 500 expected; binomial sd ~19
  EXPECT_LT(n, 600);
}

TEST(FaultPlan, RulesAreAskedInOrderAndTheFirstThatFiresWins) {
  fault_plan plan;
  fault_rule first = rule(fault_kind::delay, "batcher_worker:0", 1);
  first.delay = 10ms;
  fault_rule second = rule(fault_kind::delay, "batcher_worker", 0);
  second.delay = 20ms;
  ASSERT_TRUE(plan.add(first));
  ASSERT_TRUE(plan.add(second));
  auto f = plan.fire(fault_kind::delay, "batcher_worker:0");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->delay, 10ms);
  f = plan.fire(fault_kind::delay, "batcher_worker:0");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->delay, 20ms) << "the first is spent";
  plan.clear();
  EXPECT_TRUE(plan.list().empty());
  EXPECT_FALSE(plan.may_fire(fault_kind::delay));
}

TEST(FaultPlan, BadRulesAreRefusedNamingWhatIsWrong) {
  fault_plan plan;
  auto refused = [&](fault_rule r, std::string_view words) {
    auto id = plan.add(r);
    ASSERT_FALSE(id) << "accepted: " << r.target;
    EXPECT_EQ(id.error().code(), error_code::invalid_argument);
    EXPECT_NE(id.error().message().find(words), std::string::npos) << id.error().message();
  };
  refused(rule(fault_kind::hang, ""), "no target");
  refused(rule(fault_kind::hang, "batcher_worker"), "happens to a worker");
  refused(rule(fault_kind::drop, "worker:1"), "happens on a hop");
  refused(rule(fault_kind::drop, "frontend_router:1"), "no workers");
  refused(rule(fault_kind::duplicate, "frontend_router"), "cannot be duplicated");
  refused(rule(fault_kind::hang, "worker:x"), "names no worker");
  refused(rule(fault_kind::hang, "worker:"), "names no worker");
  fault_rule p = rule(fault_kind::hang, "worker");
  p.probability = 0;
  refused(p, "probability");
  p.probability = std::nan("");
  refused(p, "probability");
  fault_rule d = rule(fault_kind::delay, "batcher_worker");
  d.delay = 0ms;
  refused(d, "delay");
  fault_rule a = rule(fault_kind::fail_allocations, "worker:0");
  a.allocations = 0;
  refused(a, "allocation");
  EXPECT_TRUE(plan.list().empty());
  EXPECT_EQ(parse_fault_kind("segfault").value(), fault_kind::segfault);
  EXPECT_FALSE(parse_fault_kind("meltdown"));
}

TEST(FaultPlan, TheObserverHearsOfEachFiringWithTheRuleItsIdAndTheSite) {
  fault_plan plan;
  struct heard {
    fault_kind kind;
    std::string target;
    uint64_t id;
    std::string site;
    size_t rules_seen;  // plan.list() from inside the observer: it runs outside the plan's lock
  };
  std::vector<heard> told;
  plan.set_observer([&](const fault_rule& r, uint64_t id, std::string_view site) {
    told.push_back({r.kind, r.target, id, std::string(site), plan.list().size()});
  });
  auto hang = plan.add(rule(fault_kind::hang, "worker:1", 1));
  auto drop = plan.add(rule(fault_kind::drop, "batcher_worker", 0));
  ASSERT_TRUE(hang && drop);
  EXPECT_FALSE(plan.fire(fault_kind::hang, "worker:0"));
  EXPECT_TRUE(told.empty()) << "a chance that does not fire is not told";
  EXPECT_TRUE(plan.fire(fault_kind::hang, "worker:1"));
  EXPECT_TRUE(plan.fire(fault_kind::drop, "batcher_worker:3"));
  EXPECT_FALSE(plan.fire(fault_kind::hang, "worker:1")) << "spent";
  ASSERT_EQ(told.size(), 2u);
  EXPECT_EQ(told[0].kind, fault_kind::hang);
  EXPECT_EQ(told[0].target, "worker:1");
  EXPECT_EQ(told[0].id, *hang);
  EXPECT_EQ(told[0].site, "worker:1");
  EXPECT_EQ(told[0].rules_seen, 2u);
  EXPECT_EQ(told[1].kind, fault_kind::drop);
  EXPECT_EQ(told[1].id, *drop);
  EXPECT_EQ(told[1].site, "batcher_worker:3") << "the site, not the target";

  fault_rule seldom = rule(fault_kind::duplicate, "worker_link", 0);
  seldom.probability = 0.5;
  ASSERT_TRUE(plan.add(seldom));
  told.clear();
  size_t fired = 0;
  for (int i = 0; i < 200; ++i) fired += plan.fire(fault_kind::duplicate, "worker_link:0") ? 1 : 0;
  EXPECT_EQ(told.size(), fired) << "told exactly of the chances that fired";

  plan.set_observer({});
  told.clear();
  EXPECT_TRUE(plan.fire(fault_kind::drop, "batcher_worker:0"));
  EXPECT_TRUE(told.empty()) << "no observer any more";
  EXPECT_EQ(plan.clear(), 3u) << "clear says how many rules it removed";
  EXPECT_EQ(plan.clear(), 0u);
}

TEST(FaultPlan, ErrorsStartWithTheFieldTheyAreAbout) {
  auto field_of = [](fault_rule r) {
    const status s = validate(r);
    EXPECT_FALSE(s.is_ok());
    return s.message().substr(0, s.message().find(':'));
  };
  EXPECT_EQ(field_of(rule(fault_kind::hang, "")), "target");
  EXPECT_EQ(field_of(rule(fault_kind::drop, "worker:1")), "target");
  fault_rule p = rule(fault_kind::hang, "worker");
  p.probability = 1.5;
  EXPECT_EQ(field_of(p), "probability");
  EXPECT_NE(validate(p).message().find("got 1.5"), std::string::npos) << validate(p).message();
  fault_rule d = rule(fault_kind::slow_link, "worker_link");
  d.delay = 0ms;
  EXPECT_EQ(field_of(d), "delay_ms");
  d.delay = std::chrono::hours(2);
  EXPECT_EQ(field_of(d), "delay_ms");
  fault_rule a = rule(fault_kind::fail_allocations, "worker:0");
  a.allocations = 0;
  EXPECT_EQ(field_of(a), "allocations");
}

TEST(FaultPlan, ChancesFromManyThreadsFireExactlyTheRulesTimes) {
  fault_plan plan;
  ASSERT_TRUE(plan.add(rule(fault_kind::abort, "worker", 100)));
  std::atomic<int> fired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i)
        if (plan.fire(fault_kind::abort, "worker:" + std::to_string(t))) ++fired;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(fired.load(), 100);
}

}  // namespace
}  // namespace troupe::serving
