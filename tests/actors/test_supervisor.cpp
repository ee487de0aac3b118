// Worker recovery on a whole node's actors (real cpu_workers) on the deterministic scheduler:
// the supervisor's restart backoff (growth, cap, reset after a stable run, no give-up), readiness
// while a worker is down, the retry of a crashed batch on the restarted worker when no other
// replica exists, reloads that a failing replacement left undone, and exactly one reply per
// request under device faults in a row. Time is the actor clock's: the tests advance it.

#include <gtest/gtest.h>

#include "actors/node.hpp"
#include "actors/supervisor.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/readiness.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/serving/metrics_test_util.hpp"

namespace troupe::actors {

using serving::clock_type;
using serving::infer_job;
using serving::job_list;
using serving::node_readiness;
using serving::readiness_policy;
using serving::serving_metrics;
using serving::table_holder;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

TEST(restart_delay, doubles_from_the_initial_delay_up_to_the_cap) {
  restart_backoff b;
  b.initial = 100ms;
  b.max = 1000ms;
  EXPECT_EQ(restart_delay(b, 1), 100ms);
  EXPECT_EQ(restart_delay(b, 2), 200ms);
  EXPECT_EQ(restart_delay(b, 3), 400ms);
  EXPECT_EQ(restart_delay(b, 4), 800ms);
  EXPECT_EQ(restart_delay(b, 5), 1000ms);
  EXPECT_EQ(restart_delay(b, 1000), 1000ms);
  const restart_backoff defaults;
  EXPECT_EQ(restart_delay(defaults, 1), 100ms);
  EXPECT_EQ(restart_delay(defaults, 40), 30s);
}

/// The value of one sample of the registry (`worker` label when given); -1 when absent.
double sample(const serving_metrics& m, const std::string& name, const std::string& worker = "") {
  if (worker.empty()) return testing::metric_sample(m, name);
  return testing::metric_sample(m, name, {{"worker", worker}});
}

class supervisor_test : public testing::actor_fixture {
 protected:
  void start(restart_backoff backoff) {
    w_ = testing::make_mlp_weights(4, 3, 1);
    repo_.write("mlp/1/model.onnx", testing::mlp_model_bytes(w_));
    repo_.write("mlp/config.yaml", "max_batch_size: 4\n");
    node_spawn_options o;
    o.config.cpu_workers = 1;
    o.config.warmup_runs = 1;
    o.config.fault_injection = true;  // troupe.fault
    o.detached_workers = false;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    o.holder = &holder_;
    o.metrics = &metrics_;
    o.worker_restart = backoff;
    node_ = spawn_node(sys_, o);
    probe_ = testing::spawn_probe(sys_, log_);
    run();
    EXPECT_EQ(load_repository_on(node_.manager, repo_.path().string()).versions_ready, 1u);
    ASSERT_TRUE(ready());
  }

  void TearDown() override {
    node_.workers = workers();  // stop_node stops what the supervisor holds now
    stop_node(sys_, node_);
    run();
  }

  /// The supervisor's current workers (null: waiting for its restart).
  std::vector<worker_actor> workers() {
    std::vector<worker_actor> out;
    caf::scoped_actor self{sys_};
    auto h = self->request(node_.supervisor, caf::infinite, workers_atom::value);
    run();
    h.receive([&](std::vector<worker_actor>& w) { out = std::move(w); },
              [&](caf::error& e) { ADD_FAILURE() << sys_.render(e); });
    return out;
  }
  worker_actor worker() { return workers().at(0); }

  bool ready() const { return evaluate_readiness(holder_, readiness_policy::strict).ready; }

  std::unique_ptr<owned_job> job(std::string_view fault = {}, uint32_t seed = 7) {
    auto j = std::make_unique<owned_job>("mlp", std::vector<shape_t>{{1, 4}}, probe_, now(), seed);
    if (!fault.empty()) j->job.parameters.emplace_back("troupe.fault", fault);
    return j;
  }
  void submit(infer_job& j) {
    caf::anon_send(node_.router, submit_atom::value, testing::list_of({&j}));
    run();
  }

  /// Crashes the current worker and checks that it is replaced exactly `delay` later.
  void crash_and_expect_restart_after(std::chrono::milliseconds delay) {
    const worker_actor before = worker();
    ASSERT_TRUE(before);
    caf::anon_send(before, crash_atom::value);
    run();
    EXPECT_FALSE(worker()) << "down during its backoff";
    EXPECT_FALSE(ready());
    EXPECT_EQ(sample(metrics_, "troupe_worker_restart_backoff_seconds", "0"),
              std::chrono::duration<double>(delay).count());
    advance(delay - 1ms);
    EXPECT_FALSE(worker()) << "restarted before its backoff of " << delay.count() << " ms";
    advance(1ms);
    const worker_actor after = worker();
    ASSERT_TRUE(after) << "not restarted after its backoff of " << delay.count() << " ms";
    EXPECT_NE(after, before);
    EXPECT_TRUE(ready()) << "the replacement holds the replica again";
  }

  testing::temp_dir repo_;
  testing::mlp_weights w_;
  table_holder holder_;
  serving_metrics metrics_;
  node_handles node_;
  caf::actor probe_;
  std::shared_ptr<testing::probe_log> log_ = std::make_shared<testing::probe_log>();
};

TEST_F(supervisor_test, a_failed_worker_is_replaced_after_its_backoff_and_readiness_follows) {
  start(restart_backoff{});
  EXPECT_EQ(sample(metrics_, "troupe_worker_restart_backoff_seconds", "0"), 0.0);
  caf::anon_send(worker(), crash_atom::value);
  run();  // time has not moved: the flip follows the failure at once
  const node_readiness r = evaluate_readiness(holder_, readiness_policy::strict);
  EXPECT_FALSE(r.ready);
  EXPECT_NE(r.reason.find("model 'mlp' version 1 has no healthy replica"), std::string::npos)
      << r.reason;
  EXPECT_FALSE(model_ready(*holder_.get(), "mlp", 1));
  EXPECT_EQ(sample(metrics_, "troupe_worker_restarts_total"), 0.0);
  advance(99ms);
  EXPECT_FALSE(worker());
  EXPECT_FALSE(ready());
  advance(1ms);
  EXPECT_TRUE(worker());
  EXPECT_TRUE(ready());
  EXPECT_TRUE(model_ready(*holder_.get(), "mlp", 1));
  EXPECT_EQ(sample(metrics_, "troupe_worker_restarts_total"), 1.0);
  auto after = job();
  submit(after->job);
  ASSERT_EQ(log_->replies_of(&after->job), 1u);
  testing::expect_mlp_reply(after->job, w_, *after);
}

TEST_F(supervisor_test,
       the_backoff_doubles_with_each_failure_in_a_row_and_resets_after_a_stable_run) {
  restart_backoff b;
  b.initial = 100ms;
  b.max = 800ms;
  b.reset_after = 10s;
  start(b);
  for (auto delay : {100ms, 200ms, 400ms, 800ms, 800ms, 800ms}) {
    SCOPED_TRACE(delay.count());
    crash_and_expect_restart_after(delay);
  }
  advance(10s - 1ms);
  EXPECT_EQ(sample(metrics_, "troupe_worker_restart_backoff_seconds", "0"), 0.8);
  advance(1ms);
  EXPECT_EQ(sample(metrics_, "troupe_worker_restart_backoff_seconds", "0"), 0.0)
      << "up for reset_after: healthy again";
  crash_and_expect_restart_after(100ms);
  crash_and_expect_restart_after(200ms);
}

TEST_F(supervisor_test, there_is_no_give_up_however_many_failures_come_in_a_row) {
  restart_backoff b;
  b.initial = 10ms;
  b.max = 40ms;
  b.reset_after = 1h;
  start(b);
  for (int i = 0; i < 30; ++i) {
    SCOPED_TRACE(i);
    crash_and_expect_restart_after(i < 3 ? b.initial * (1 << i) : b.max);
  }
  EXPECT_EQ(sample(metrics_, "troupe_worker_restarts_total"), 30.0);
  auto after = job();
  submit(after->job);
  ASSERT_EQ(log_->replies_of(&after->job), 1u);
  testing::expect_mlp_reply(after->job, w_, *after);
}

TEST_F(supervisor_test,
       a_crashed_batch_is_retried_on_the_restarted_worker_without_another_replica) {
  start(restart_backoff{});
  auto victim = job("crash_once");
  submit(victim->job);  // the worker dies holding it
  EXPECT_EQ(log_->replies_of(&victim->job), 0u) << "held for the replacement";
  EXPECT_FALSE(worker());
  EXPECT_FALSE(ready());
  advance(100ms);  // restart -> reload -> the batcher runs it again
  ASSERT_EQ(log_->replies_of(&victim->job), 1u);
  EXPECT_EQ(victim->job.attempts, 2);
  testing::expect_mlp_reply(victim->job, w_, *victim);
  EXPECT_TRUE(ready());
}

TEST_F(supervisor_test, a_held_batch_whose_deadline_passes_during_the_backoff_is_answered_then) {
  start(restart_backoff{});
  auto victim = job("crash");
  victim->job.timeout = 50ms;
  submit(victim->job);
  EXPECT_EQ(log_->replies_of(&victim->job), 0u);
  advance(50ms + 1us);  // the batcher wakes 1 us after a deadline
  ASSERT_EQ(log_->replies_of(&victim->job), 1u);
  EXPECT_EQ(victim->job.result.code(), error_code::deadline_exceeded)
      << victim->job.result.to_string();
  advance(50ms);  // the replacement comes; the job is not run or answered again
  EXPECT_EQ(log_->replies_of(&victim->job), 1u);
  EXPECT_TRUE(ready());
}

TEST_F(supervisor_test, every_request_is_answered_once_under_device_faults_in_a_row) {
  restart_backoff b;
  b.initial = 10ms;
  b.max = 80ms;
  b.reset_after = 1h;
  start(b);
  std::vector<std::unique_ptr<owned_job>> jobs;
  double restarts = 0;
  for (int i = 0; i < 21; ++i) {
    SCOPED_TRACE(i);
    // device_once fails its first run only: its retry on the replacement succeeds. device fails
    // both: the worker is replaced twice and the request answered once, with an error.
    const bool once = i % 2 == 1;
    jobs.push_back(job(once ? "device_once" : "device", 100 + static_cast<uint32_t>(i)));
    infer_job& j = jobs.back()->job;
    const worker_actor before = worker();
    submit(j);
    EXPECT_FALSE(worker()) << "a device error ends the worker";
    EXPECT_EQ(log_->replies_of(&j), 0u);
    advance(b.max);
    ++restarts;
    if (!once) {
      EXPECT_FALSE(worker()) << "the retry's device error ended the replacement too";
      advance(b.max);
      ++restarts;
    }
    const worker_actor after = worker();
    ASSERT_TRUE(after);
    EXPECT_NE(after, before);
    EXPECT_EQ(sample(metrics_, "troupe_worker_restarts_total"), restarts);
    ASSERT_EQ(log_->replies_of(&j), 1u);
    EXPECT_EQ(j.attempts, 2);
    if (once) {
      testing::expect_mlp_reply(j, w_, *jobs.back());
    } else {
      EXPECT_EQ(j.result.code(), error_code::unavailable) << j.result.to_string();
      EXPECT_NE(j.result.message().find("device error"), std::string::npos) << j.result.to_string();
      EXPECT_NE(j.result.message().find("after a retry"), std::string::npos)
          << j.result.to_string();
    }
    EXPECT_TRUE(ready());
  }
  for (const auto& j : jobs) EXPECT_EQ(log_->replies_of(&j->job), 1u);
}

TEST_F(supervisor_test, reloads_a_failing_replacement_left_undone_are_done_by_the_next_one) {
  start(restart_backoff{});
  caf::anon_send(worker(), crash_atom::value);
  run();
  // Only the supervisor runs its restart: the manager's reload is then queued, not yet sent.
  auto* supervisor =
      dynamic_cast<caf::resumable*>(caf::actor_cast<caf::abstract_actor*>(node_.supervisor));
  sched_.clock().advance_time(100ms);
  sched_.run_jobs_filtered([&](caf::resumable* r) { return r == supervisor; });
  worker_actor replacement;
  {
    caf::scoped_actor self{sys_};
    auto h = self->request(node_.supervisor, caf::infinite, workers_atom::value);
    sched_.run_jobs_filtered([&](caf::resumable* r) { return r == supervisor; });
    h.receive([&](std::vector<worker_actor>& w) { replacement = w.at(0); },
              [&](caf::error& e) { FAIL() << sys_.render(e); });
  }
  ASSERT_TRUE(replacement);
  caf::anon_send(replacement, crash_atom::value);  // before the reload reaches it
  run();
  EXPECT_FALSE(worker());
  EXPECT_FALSE(ready()) << "the reload failed with the replacement";
  advance(200ms);  // the second failure's backoff
  EXPECT_TRUE(worker());
  EXPECT_TRUE(ready()) << "the next replacement loaded the replica the last one could not";
  auto after = job();
  submit(after->job);
  ASSERT_EQ(log_->replies_of(&after->job), 1u);
  testing::expect_mlp_reply(after->job, w_, *after);
}

// The same on real threads (detached workers): the worker decides that its device failed before
// it hands the batch back. It used to read the batch's flag after the hand-off, when the batcher
// may have reset it already; the worker then stayed up with its replica written off (5 of 21
// faults in a row on a many-core machine; on 2 cores about one in a thousand). Each fault must
// replace the worker, and its request succeed on the retry.
void run_device_faults(caf::actor_system& sys, const node_handles& node,
                       const serving_metrics& metrics, const testing::mlp_weights& w, int faults) {
  caf::scoped_actor self{sys};
  const auto me = caf::actor_cast<caf::actor>(self);
  std::vector<infer_job*> replies;
  auto receive_one = [&] {
    bool timed_out = false;
    self->receive(
        [&](reply_atom, job_list l) {
          while (infer_job* j = l.pop_front()) replies.push_back(j);
        },
        caf::after(std::chrono::seconds(30)) >> [&] { timed_out = true; });
    return !timed_out;
  };
  std::vector<std::unique_ptr<owned_job>> jobs;
  for (int i = 0; i < faults; ++i) {
    SCOPED_TRACE(i);
    jobs.push_back(std::make_unique<owned_job>("mlp", std::vector<shape_t>{{1, 4}}, me,
                                               clock_type::now(), 100 + static_cast<uint32_t>(i)));
    infer_job& j = jobs.back()->job;
    j.parameters.emplace_back("troupe.fault", "device_once");
    caf::anon_send(node.router, submit_atom::value, testing::list_of({&j}));
    ASSERT_TRUE(receive_one()) << "no reply";
    ASSERT_EQ(replies.back(), &j);
    ASSERT_TRUE(j.result.is_ok()) << "the worker was not replaced: " << j.result.to_string();
    EXPECT_EQ(j.attempts, 2);
    testing::expect_mlp_reply(j, w, *jobs.back());
    // The retry ran on the replacement: the restart was counted before the reply.
    ASSERT_EQ(sample(metrics, "troupe_worker_restarts_total"), i + 1.0);
  }
  // A second reply to any of them would be in the mailbox before this one's.
  owned_job last("mlp", std::vector<shape_t>{{1, 4}}, me, clock_type::now(), 7);
  caf::anon_send(node.router, submit_atom::value, testing::list_of({&last.job}));
  ASSERT_TRUE(receive_one());
  EXPECT_EQ(replies.size(), jobs.size() + 1);
  EXPECT_EQ(replies.back(), &last.job);
  testing::expect_mlp_reply(last.job, w, last);
}

TEST(threaded_recovery, device_faults_in_a_row_replace_the_worker_every_time) {
  testing::temp_dir repo;
  const auto w = testing::make_mlp_weights(4, 3, 1);
  repo.write("mlp/1/model.onnx", testing::mlp_model_bytes(w));
  repo.write("mlp/config.yaml", "max_batch_size: 4\n");
  serving_metrics metrics;  // outlive the actor system, whose actors record into them
  table_holder holder;
  caf::actor_system_config cfg;
  cfg.set("logger.file-verbosity", caf::atom("quiet"));
  cfg.set("logger.console-verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  node_spawn_options o;
  o.config.cpu_workers = 1;
  o.config.warmup_runs = 1;
  o.config.fault_injection = true;
  o.holder = &holder;
  o.metrics = &metrics;
  // The worker spins for its next batch after a run, as on machines of 8 or more threads: the
  // batcher then had time to reset the flag before the worker read it again.
  o.worker_idle_spin_us = 500;
  o.worker_restart.initial = o.worker_restart.max = 1ms;
  o.recovery_wait = 1s;  // a worker left up would strand its request this long, then fail it
  const node_handles node = spawn_node(sys, o);
  if (auto loaded = load_repository(sys, node, repo.path().string()); !loaded)
    ADD_FAILURE() << loaded.error().to_string();
  else
    run_device_faults(sys, node, metrics, w, 200);
  stop_node(sys, node);
}

}  // namespace
}  // namespace troupe::actors
