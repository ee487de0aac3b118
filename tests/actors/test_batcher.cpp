// The batcher actor on CAF's deterministic scheduler with simulated time: batching deadlines,
// per-request timeouts (queued and running), OVERLOADED, priorities, output slicing, and retry
// after a worker failure. Workers are fakes the test completes by hand.

#include <gtest/gtest.h>

#include <cstring>

#include "actors/batcher.hpp"
#include "serving/fault_plan.hpp"
#include "serving/model_table.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_ref;
using serving::fault_kind;
using serving::fault_plan;
using serving::fault_rule;
using serving::infer_job;
using serving::model_signature;
using serving::no_deadline;
using serving::output_block;
using serving::output_slice;
using serving::version_state;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

/// Batches a fake worker received, in order.
struct worker_log {
  std::vector<batch*> batches;
  size_t runs_received = 0;  // run messages, duplicates included
};

worker_actor spawn_fake_worker(caf::actor_system& sys, std::shared_ptr<worker_log> log) {
  return sys.spawn([log](worker_actor::pointer self) -> worker_actor::behavior_type {
    return {
        [](load_atom, const replica_spec&) -> caf::result<replica_info> {
          return to_caf_error(unsupported("fake worker"));
        },
        [](unload_atom, uint32_t) {},
        [log](run_atom, batch_ref ref) {
          ++log->runs_received;
          if (ref.ptr->claim(ref.sequence)) log->batches.push_back(ref.ptr.get());
        },
        [self](crash_atom) { self->quit(caf::make_error(caf::sec::runtime_error, "test crash")); },
        [](read_atom, uint64_t) {},
        [](overdue_atom, uint64_t) {},
        [](built_atom, uint64_t) {},
        [](wevent_atom, const worker_event&) {},
    };
  });
}

class batcher_test : public testing::actor_fixture {
 protected:
  void start(int64_t max_batch, std::chrono::microseconds delay, uint32_t levels = 1,
             uint32_t max_queue = 100, int per_replica = 2,
             std::chrono::microseconds default_timeout = 0us, double adaptive_slo_ms = 0) {
    auto s = std::make_shared<model_signature>();
    s->model = "mlp";
    s->version = 1;
    s->max_batch_size = max_batch;
    s->inputs = {{"x", dtype::f32, {-1, 4}}};
    s->outputs = {{"y", dtype::f32, {-1, 3}}, {"z", dtype::f32, {-1, 1}}};
    s->config.max_batch_size = max_batch;
    s->config.max_queue_delay = delay;
    s->config.priority_levels = levels;
    s->config.queue.max_queue_size = max_queue;
    s->config.queue.default_timeout = default_timeout;
    s->config.adaptive.enabled = adaptive_slo_ms > 0;
    s->config.adaptive.slo_p99_ms = adaptive_slo_ms;
    sig_ = s;
    batcher_options o;
    o.signature = sig_;
    o.state = state_;
    o.max_batches_per_replica = per_replica;
    o.faults = faults_;
    batcher_ = spawn_batcher(sys_, o);
    probe_ = testing::spawn_probe(sys_, log_);
    run();
  }

  worker_actor add_replica(std::shared_ptr<worker_log> wlog, uint32_t id = 0,
                           std::vector<replica_latency> warmup = {}) {
    worker_actor w = spawn_fake_worker(sys_, wlog);
    replica_handle h;
    h.worker = w;
    h.info.id = id;
    h.info.warmup = std::move(warmup);
    h.info.signature = sig_;
    caf::anon_send(batcher_, replica_atom::value, h);
    run();
    return w;
  }

  std::unique_ptr<owned_job> job(int64_t rows = 1, uint32_t seed = 1) {
    auto j =
        std::make_unique<owned_job>("mlp", std::vector<shape_t>{{rows, 4}}, probe_, now(), seed);
    j->job.signature = sig_;
    return j;
  }

  /// The router's part: level and deadline.
  void submit(std::initializer_list<infer_job*> jobs, std::chrono::microseconds timeout = 0us) {
    for (auto* j : jobs) {
      j->level = j->priority ? j->priority : 1;
      const auto t = sig_->effective_timeout(timeout);
      j->deadline = t.count() > 0 ? j->arrival + t : no_deadline;
    }
    caf::anon_send(batcher_, submit_atom::value, testing::list_of(jobs));
    run();
  }

  /// Completes a batch as a worker would: output y row r = [r, r + 0.5, r + 0.25], z row r = [-r].
  void complete(batch* b, status result = status::ok()) {
    b->result = result;
    if (result.is_ok()) {
      const int64_t rows = b->rows;
      const size_t y_bytes = static_cast<size_t>(rows) * 3 * sizeof(float);
      auto* block = new output_block(y_bytes + 64 + static_cast<size_t>(rows) * sizeof(float));
      auto* y = reinterpret_cast<float*>(block->data());
      auto* z = reinterpret_cast<float*>(block->data() + y_bytes + 64);
      for (int64_t r = 0; r < rows; ++r) {
        y[r * 3] = static_cast<float>(r);
        y[r * 3 + 1] = static_cast<float>(r) + 0.5f;
        y[r * 3 + 2] = static_cast<float>(r) + 0.25f;
        z[r] = -static_cast<float>(r);
      }
      b->block = block;  // its one reference is the batcher's
      b->bucket_rows = rows;
      b->outputs = {{{dtype::f32, {rows, 3}}, 0, 3 * sizeof(float)},
                    {{dtype::f32, {rows, 1}}, y_bytes + 64, sizeof(float)}};
    }
    b->compute_time = 50us;
    caf::anon_send(batcher_, done_atom::value, batch_ref{b->shared_from_this()});
    run();
  }

  /// model_manager's periodic (watch): the batcher checks its running batches.
  void watch() {
    caf::anon_send(batcher_, watch_atom::value);
    run();
  }

  void release_outputs(infer_job& j) {
    if (!j.result.is_ok()) return;
    for (auto& s : j.outputs) s.block->release();
    j.outputs.clear();
  }

  batcher_stats stats() {
    batcher_stats s;
    caf::scoped_actor self{sys_};
    auto h = self->request(batcher_, caf::infinite, stats_atom::value);
    run();
    h.receive([&](batcher_stats& x) { s = x; }, [&](caf::error&) { ADD_FAILURE() << "no stats"; });
    return s;
  }

  /// Set before start(): the batcher_worker hop's faults.
  std::shared_ptr<fault_plan> faults_;
  std::shared_ptr<model_signature> sig_;
  std::shared_ptr<std::atomic<uint8_t>> state_ = std::make_shared<std::atomic<uint8_t>>(0);
  std::shared_ptr<testing::probe_log> log_ = std::make_shared<testing::probe_log>();
  batcher_actor batcher_;
  caf::actor probe_;
};

TEST_F(batcher_test, state_follows_replicas) {
  start(8, 0us);
  EXPECT_EQ(static_cast<version_state>(state_->load()), version_state::loading);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  EXPECT_EQ(static_cast<version_state>(state_->load()), version_state::ready);
}

TEST_F(batcher_test, queue_delay_is_simulated_time) {
  start(8, 1000us);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto a = job(), b = job(), c = job();
  submit({&a->job, &b->job, &c->job});
  EXPECT_TRUE(wlog->batches.empty());
  advance(999us);
  EXPECT_TRUE(wlog->batches.empty()) << "left before max_queue_delay";
  advance(2us);
  ASSERT_EQ(wlog->batches.size(), 1u);
  EXPECT_EQ(wlog->batches[0]->jobs.size(), 3u);
  EXPECT_EQ(wlog->batches[0]->rows, 3);
  EXPECT_GE(a->job.queue_time, 1000us);
}

TEST_F(batcher_test, full_batch_leaves_at_once_and_outputs_are_sliced_per_request) {
  start(4, 1s);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto a = job(1), b = job(2), c = job(1);
  c->job.requested_outputs = {1};  // only z
  submit({&a->job, &b->job, &c->job});
  ASSERT_EQ(wlog->batches.size(), 1u);
  batch* bt = wlog->batches[0];
  EXPECT_EQ(bt->rows, 4);
  complete(bt);
  ASSERT_EQ(log_->replies.size(), 3u);
  for (auto* j : {&a->job, &b->job, &c->job}) EXPECT_EQ(log_->replies_of(j), 1u);
  ASSERT_TRUE(a->job.result.is_ok());
  ASSERT_EQ(a->job.outputs.size(), 2u);
  // b holds rows 1..2 of the batch.
  ASSERT_TRUE(b->job.result.is_ok());
  const output_slice& by = b->job.outputs[0];
  EXPECT_EQ(by.info.shape, (shape_t{2, 3}));
  const auto* y = reinterpret_cast<const float*>(by.block->data() + by.offset);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], 1.5f);
  EXPECT_EQ(y[3], 2.0f);
  ASSERT_EQ(c->job.outputs.size(), 1u);
  EXPECT_EQ(c->job.outputs[0].output_index, 1);
  EXPECT_EQ(c->job.outputs[0].info.shape, (shape_t{1, 1}));
  EXPECT_EQ(
      *reinterpret_cast<const float*>(c->job.outputs[0].block->data() + c->job.outputs[0].offset),
      -3.0f);
  EXPECT_EQ(a->job.batch_rows, 4u);
  for (auto* j : {&a->job, &b->job, &c->job}) release_outputs(*j);
}

TEST_F(batcher_test, busy_replicas_accumulate_the_next_batch) {
  start(8, 0us, 1, 100, /*per_replica=*/1);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto a = job();
  submit({&a->job});
  ASSERT_EQ(wlog->batches.size(), 1u);  // delay 0: alone, at once
  std::vector<std::unique_ptr<owned_job>> more;
  for (int i = 0; i < 5; ++i) {
    more.push_back(job());
    submit({&more.back()->job});
  }
  EXPECT_EQ(wlog->batches.size(), 1u) << "the replica is busy: requests wait";
  complete(wlog->batches[0]);
  ASSERT_EQ(wlog->batches.size(), 2u);
  EXPECT_EQ(wlog->batches[1]->jobs.size(), 5u) << "the queue became one batch";
  complete(wlog->batches[1]);
  EXPECT_EQ(log_->replies.size(), 6u);
  release_outputs(a->job);
  for (auto& m : more) release_outputs(m->job);
}

TEST_F(batcher_test, timeout_while_queued_behind_a_busy_model) {
  start(8, 0us, 1, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto first = job();
  submit({&first->job});
  auto waiting = job();
  submit({&waiting->job}, 500us);
  advance(499us);
  EXPECT_EQ(log_->replies_of(&waiting->job), 0u);
  advance(2us);
  ASSERT_EQ(log_->replies_of(&waiting->job), 1u)
      << "answered at its deadline although the model is busy";
  EXPECT_EQ(waiting->job.result.code(), error_code::deadline_exceeded);
  complete(wlog->batches[0]);
  EXPECT_EQ(wlog->batches.size(), 1u) << "the expired request never ran";
  EXPECT_EQ(log_->replies_of(&waiting->job), 1u);
  release_outputs(first->job);
}

TEST_F(batcher_test, timeout_while_running_replies_once_and_releases_later) {
  start(8, 0us);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto a = job();
  submit({&a->job}, 300us);
  ASSERT_EQ(wlog->batches.size(), 1u);
  advance(301us);
  ASSERT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_EQ(a->job.result.code(), error_code::deadline_exceeded);
  EXPECT_TRUE(a->job.early_reply);
  EXPECT_TRUE(log_->releases.empty()) << "the worker still reads its inputs";
  complete(wlog->batches[0]);
  EXPECT_EQ(log_->replies_of(&a->job), 1u) << "exactly one reply";
  ASSERT_EQ(log_->releases.size(), 1u);
  EXPECT_EQ(log_->releases[0], &a->job);
}

TEST_F(batcher_test, default_timeout_from_the_queue_policy) {
  start(8, 0us, 1, 100, 1, 200us);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto a = job(), b = job();
  submit({&a->job});
  submit({&b->job});
  advance(201us);
  EXPECT_EQ(b->job.result.code(), error_code::deadline_exceeded);
  EXPECT_EQ(a->job.result.code(), error_code::deadline_exceeded);
  complete(wlog->batches[0]);
  EXPECT_EQ(log_->releases.size(), 1u);
}

TEST_F(batcher_test, full_queue_answers_overloaded_at_once) {
  start(8, 0us, 1, /*max_queue=*/2, /*per_replica=*/1);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  std::vector<std::unique_ptr<owned_job>> js;
  for (int i = 0; i < 4; ++i) js.push_back(job());
  submit({&js[0]->job});                            // runs
  submit({&js[1]->job, &js[2]->job, &js[3]->job});  // two queue, one is refused
  ASSERT_EQ(log_->replies.size(), 1u);
  EXPECT_EQ(log_->replies[0], &js[3]->job);
  EXPECT_EQ(js[3]->job.result.code(), error_code::overloaded);
  complete(wlog->batches[0]);
  complete(wlog->batches[1]);
  EXPECT_EQ(log_->replies.size(), 4u);
  for (auto& j : js) release_outputs(j->job);
}

TEST_F(batcher_test, higher_priority_jumps_the_queue) {
  start(1, 0us, 2, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto first = job(), low = job(), high = job();
  low->job.priority = 2;
  high->job.priority = 1;
  submit({&first->job});
  submit({&low->job});
  submit({&high->job});
  complete(wlog->batches[0]);
  ASSERT_EQ(wlog->batches.size(), 2u);
  EXPECT_EQ(wlog->batches[1]->jobs[0], &high->job);
  complete(wlog->batches[1]);
  complete(wlog->batches[2]);
  for (auto* j : {&first->job, &low->job, &high->job}) release_outputs(*j);
}

TEST_F(batcher_test, worker_failure_retries_once_on_another_replica) {
  start(8, 0us, 1, 100, 1);
  auto wlog_a = std::make_shared<worker_log>();
  auto wlog_b = std::make_shared<worker_log>();
  worker_actor wa = add_replica(wlog_a, 0);
  worker_actor wb = add_replica(wlog_b, 0);
  auto a = job(), b = job();
  submit({&a->job});
  submit({&b->job});
  ASSERT_EQ(wlog_a->batches.size() + wlog_b->batches.size(), 2u);
  auto& crashed_log = wlog_a->batches.empty() ? wlog_b : wlog_a;
  auto& other_log = wlog_a->batches.empty() ? wlog_a : wlog_b;
  infer_job* victim = crashed_log->batches[0]->jobs[0];
  caf::anon_send(wlog_a->batches.empty() ? wb : wa, crash_atom::value);
  run();
  EXPECT_EQ(log_->replies_of(victim), 0u) << "a retry, not an error";
  complete(other_log->batches[0]);
  ASSERT_EQ(other_log->batches.size(), 2u) << "the failed batch ran again on the surviving replica";
  EXPECT_EQ(other_log->batches[1]->jobs[0], victim);
  EXPECT_EQ(victim->attempts, 2);
  complete(other_log->batches[1]);
  EXPECT_TRUE(victim->result.is_ok());
  EXPECT_EQ(log_->replies_of(victim), 1u);
  release_outputs(a->job);
  release_outputs(b->job);
}

TEST_F(batcher_test, the_jobs_of_a_failed_last_replica_wait_for_its_replacement) {
  start(8, 0us, 1, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  worker_actor w = add_replica(wlog);
  auto a = job(), b = job();
  submit({&a->job});  // runs
  submit({&b->job});  // queued: the one replica holds its one batch
  ASSERT_EQ(wlog->batches.size(), 1u);
  caf::anon_send(w, crash_atom::value);
  run();
  EXPECT_EQ(log_->replies_of(&a->job), 0u) << "held for a retry on the replacement";
  EXPECT_EQ(log_->replies_of(&b->job), 0u) << "still queued";
  EXPECT_EQ(static_cast<version_state>(state_->load()), version_state::unavailable);
  auto c = job();
  submit({&c->job});
  EXPECT_EQ(c->job.result.code(), error_code::unavailable) << "new work is refused meanwhile";
  // The replacement's replica makes the version ready again and runs what was held, in order.
  auto wlog2 = std::make_shared<worker_log>();
  add_replica(wlog2);
  EXPECT_EQ(static_cast<version_state>(state_->load()), version_state::ready);
  ASSERT_EQ(wlog2->batches.size(), 1u);
  ASSERT_EQ(wlog2->batches[0]->jobs.size(), 2u);
  EXPECT_EQ(wlog2->batches[0]->jobs[0], &a->job);
  EXPECT_EQ(wlog2->batches[0]->jobs[1], &b->job);
  EXPECT_EQ(a->job.attempts, 2);
  EXPECT_EQ(b->job.attempts, 1);
  complete(wlog2->batches[0]);
  for (auto* j : {&a->job, &b->job}) {
    EXPECT_TRUE(j->result.is_ok()) << j->result.to_string();
    EXPECT_EQ(log_->replies_of(j), 1u);
    release_outputs(*j);
  }
  EXPECT_EQ(log_->replies_of(&c->job), 1u);
}

TEST_F(batcher_test, held_jobs_end_at_their_deadline_or_at_the_recovery_wait) {
  start(8, 0us, 1, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  worker_actor w = add_replica(wlog);
  auto a = job(), b = job();
  submit({&a->job}, 50ms);
  submit({&b->job});  // no deadline
  caf::anon_send(w, crash_atom::value);
  run();
  advance(50ms + 1us);  // the batcher wakes 1 us after a deadline
  EXPECT_EQ(a->job.result.code(), error_code::deadline_exceeded) << a->job.result.to_string();
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_EQ(log_->replies_of(&b->job), 0u);
  advance(30s - 50ms - 1us);
  EXPECT_EQ(log_->replies_of(&b->job), 0u);
  advance(1us);
  ASSERT_EQ(log_->replies_of(&b->job), 1u) << "no replica within recovery_wait (30 s)";
  EXPECT_EQ(b->job.result.code(), error_code::unavailable);
  EXPECT_NE(b->job.result.message().find("came back"), std::string::npos)
      << b->job.result.to_string();
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
}

TEST_F(batcher_test, a_worker_that_exits_normally_is_not_waited_for) {
  start(8, 0us, 1, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  worker_actor w = add_replica(wlog);
  auto a = job(), b = job();
  submit({&a->job});
  submit({&b->job});
  caf::anon_send_exit(w, caf::exit_reason::user_shutdown);  // the node stops its workers
  run();
  EXPECT_EQ(a->job.result.code(), error_code::unavailable);
  EXPECT_EQ(b->job.result.code(), error_code::unavailable);
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_EQ(log_->replies_of(&b->job), 1u);
  EXPECT_EQ(static_cast<version_state>(state_->load()), version_state::unavailable);
}

TEST_F(batcher_test, a_device_error_retries_the_batch_once_on_the_replacement) {
  start(8, 0us, 1, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  worker_actor w = add_replica(wlog);
  auto a = job();
  submit({&a->job});
  ASSERT_EQ(wlog->batches.size(), 1u);
  wlog->batches[0]->worker_failed = true;  // as a worker answers a device error, then exits
  complete(wlog->batches[0], make_error(error_code::device_error, "injected"));
  EXPECT_EQ(log_->replies_of(&a->job), 0u);
  EXPECT_EQ(static_cast<version_state>(state_->load()), version_state::unavailable);
  caf::anon_send(w, crash_atom::value);  // its exit finds nothing more to retry
  run();
  EXPECT_EQ(log_->replies_of(&a->job), 0u);
  auto wlog2 = std::make_shared<worker_log>();
  worker_actor w2 = add_replica(wlog2);
  ASSERT_EQ(wlog2->batches.size(), 1u);
  EXPECT_EQ(a->job.attempts, 2);
  // The retry fails the same way: the job has had its retry and is answered, once.
  wlog2->batches[0]->worker_failed = true;
  complete(wlog2->batches[0], make_error(error_code::device_error, "injected"));
  ASSERT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_EQ(a->job.result.code(), error_code::unavailable);
  EXPECT_NE(a->job.result.message().find("after a retry"), std::string::npos);
  caf::anon_send(w2, crash_atom::value);
  run();
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
}

TEST_F(batcher_test, run_errors_reach_every_job_of_the_batch) {
  start(8, 10us);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto a = job(), b = job();
  submit({&a->job, &b->job});
  advance(11us);
  ASSERT_EQ(wlog->batches.size(), 1u);
  complete(wlog->batches[0], unsupported("kernel says no"));
  EXPECT_EQ(a->job.result.code(), error_code::unsupported);
  EXPECT_EQ(b->job.result.code(), error_code::unsupported);
  EXPECT_EQ(log_->replies.size(), 2u);
}

TEST_F(batcher_test, stats_report_the_queue) {
  start(8, 1s);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog);
  auto a = job();
  submit({&a->job});
  const auto s = stats();
  EXPECT_EQ(s.queued_jobs, 1u);
  EXPECT_EQ(s.alive_replicas, 1u);
  advance(1001ms);
  ASSERT_EQ(wlog->batches.size(), 1u);
  complete(wlog->batches[0]);
  release_outputs(a->job);
}

TEST_F(batcher_test, adaptive_policy_follows_the_arrival_rate) {
  start(16, 0us, 1, 100000, 1, 0us, /*slo_ms=*/10);
  auto wlog = std::make_shared<worker_log>();
  // Warm-up latencies: 100 us + 10 us per row.
  add_replica(wlog, 0, {{1, 110}, {2, 120}, {4, 140}, {8, 180}, {16, 260}});
  auto st = stats();
  EXPECT_EQ(st.adaptive_rows, 1) << "no traffic: no batching";
  EXPECT_EQ(st.adaptive_wait_us, 0);
  auto first = job();
  submit({&first->job});
  ASSERT_EQ(wlog->batches.size(), 1u) << "alone and unhurried: sent at once";
  // 40k requests/s for 1 s of simulated time (the replica never finishes: they queue).
  std::vector<std::unique_ptr<owned_job>> flood;
  for (int i = 0; i < 40000; ++i) {
    flood.push_back(job());
    submit({&flood.back()->job});
    advance(25us);
  }
  st = stats();
  EXPECT_EQ(st.adaptive_rows, 16) << "8 rows per 180 us cannot keep up with 40k/s with headroom";
  EXPECT_GT(st.adaptive_wait_us, 0);
  // The load stops: after a few time constants the rate estimate decays and batching shrinks.
  advance(std::chrono::microseconds(3'000'000));
  st = stats();
  EXPECT_EQ(st.adaptive_rows, 1);
}

TEST_F(batcher_test, an_exited_batcher_leaves_no_monitor_on_its_workers) {
  // CAF 0.17 keeps a monitor's record on the monitored actor, with a weak reference to the
  // monitoring one, after the latter exits: a batcher that did not drop its monitors stayed
  // allocated as long as its workers lived (issue 11's load/unload cycles).
  start(8, 0us);
  auto wlog = std::make_shared<worker_log>();
  worker_actor a = add_replica(wlog, 0);
  worker_actor b = add_replica(wlog, 1);
  replica_handle second;  // a second replica on worker a: one monitor for both
  second.worker = a;
  second.info.id = 2;
  second.info.signature = sig_;
  caf::anon_send(batcher_, replica_atom::value, second);
  run();
  EXPECT_EQ(stats().alive_replicas, 3u);
  auto* block = caf::actor_cast<caf::actor_control_block*>(batcher_);
  const caf::actor_addr held = batcher_.address();  // this test's weak reference
  caf::anon_send_exit(batcher_, caf::exit_reason::user_shutdown);
  batcher_ = nullptr;
  run();
  EXPECT_EQ(block->weak_refs.load(), 1u) << "only this test's reference keeps the batcher's memory";
  EXPECT_TRUE(a && b) << "the workers live on";
}

// ---- the watchdog and the batcher_worker hop's faults ----

/// Which of two fake workers got the one batch sent.
struct two_workers {
  worker_actor wa, wb;
  std::shared_ptr<worker_log> la = std::make_shared<worker_log>();
  std::shared_ptr<worker_log> lb = std::make_shared<worker_log>();
};

TEST_F(batcher_test, the_watchdog_kills_a_worker_whose_batch_never_returns_and_retries_it) {
  start(8, 0us, 1, 100, 1);
  two_workers w;
  w.wa = add_replica(w.la, 0);
  w.wb = add_replica(w.lb, 0);
  auto a = job();
  submit({&a->job});
  ASSERT_EQ(w.la->batches.size() + w.lb->batches.size(), 1u);
  auto& hung = w.la->batches.empty() ? w.lb : w.la;
  auto& other = w.la->batches.empty() ? w.la : w.lb;
  advance(1999ms);
  watch();
  EXPECT_TRUE(other->batches.empty()) << "not overdue before watchdog_min";
  advance(2ms);
  watch();
  ASSERT_EQ(other->batches.size(), 1u) << "killed and retried on the other replica";
  EXPECT_EQ(other->batches[0]->jobs[0], &a->job);
  EXPECT_EQ(hung->batches.size(), 1u);
  complete(other->batches[0]);
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_TRUE(a->job.result.is_ok());
  release_outputs(a->job);
}

TEST_F(batcher_test, the_watchdog_limit_follows_the_measured_latency) {
  start(8, 0us, 1, 100, 1);
  two_workers w;
  // Warm-up measured 400 ms a batch: 10 x its p99 (over 400 ms) is the limit, beyond the 2 s
  // minimum.
  w.wa = add_replica(w.la, 0, {{1, 400'000.0}, {8, 400'000.0}});
  w.wb = add_replica(w.lb, 0, {{1, 400'000.0}, {8, 400'000.0}});
  auto a = job();
  submit({&a->job});
  auto& other = w.la->batches.empty() ? w.la : w.lb;
  advance(4s);
  watch();
  EXPECT_TRUE(other->batches.empty()) << "a slow model is not a hung one";
  advance(5s);
  watch();
  EXPECT_EQ(other->batches.size(), 1u);
  complete(other->batches[0]);
  release_outputs(a->job);
}

TEST_F(batcher_test, a_dropped_run_is_found_by_the_watchdog) {
  faults_ = std::make_shared<fault_plan>();
  fault_rule r;
  r.kind = fault_kind::drop;
  r.target = "batcher_worker:0";
  ASSERT_TRUE(faults_->add(r).has_value());
  start(8, 0us, 1, 100, 1);
  two_workers w;
  w.wa = add_replica(w.la, 0);
  w.wb = add_replica(w.lb, 0);
  auto a = job();
  submit({&a->job});
  EXPECT_EQ(w.la->runs_received + w.lb->runs_received, 0u) << "dropped";
  advance(2001ms);
  watch();
  ASSERT_EQ(w.la->batches.size() + w.lb->batches.size(), 1u) << "retried after the kill";
  batch* b = w.la->batches.empty() ? w.lb->batches[0] : w.la->batches[0];
  EXPECT_EQ(b->jobs[0], &a->job);
  EXPECT_EQ(a->job.attempts, 2);
  complete(b);
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_TRUE(a->job.result.is_ok());
  release_outputs(a->job);
}

TEST_F(batcher_test, a_duplicated_run_runs_once) {
  faults_ = std::make_shared<fault_plan>();
  fault_rule r;
  r.kind = fault_kind::duplicate;
  r.target = "batcher_worker";
  r.times = 0;
  ASSERT_TRUE(faults_->add(r).has_value());
  start(8, 0us, 1, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog, 0);
  auto a = job();
  submit({&a->job});
  EXPECT_EQ(wlog->runs_received, 2u);
  ASSERT_EQ(wlog->batches.size(), 1u) << "the second copy claims nothing";
  complete(wlog->batches[0]);
  auto b = job();
  submit({&b->job});  // the recycled batch: the first batch's copies cannot claim it
  EXPECT_EQ(wlog->runs_received, 4u);
  ASSERT_EQ(wlog->batches.size(), 2u);
  complete(wlog->batches[1]);
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_EQ(log_->replies_of(&b->job), 1u);
  release_outputs(a->job);
  release_outputs(b->job);
}

TEST_F(batcher_test, a_delayed_run_arrives_late) {
  faults_ = std::make_shared<fault_plan>();
  fault_rule r;
  r.kind = fault_kind::delay;
  r.target = "batcher_worker:0";
  r.delay = 300ms;
  ASSERT_TRUE(faults_->add(r).has_value());
  start(8, 0us, 1, 100, 1);
  auto wlog = std::make_shared<worker_log>();
  add_replica(wlog, 0);
  auto a = job();
  submit({&a->job});
  EXPECT_EQ(wlog->runs_received, 0u);
  advance(301ms);
  ASSERT_EQ(wlog->batches.size(), 1u);
  complete(wlog->batches[0]);
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
  release_outputs(a->job);
}

}  // namespace
}  // namespace troupe::actors
