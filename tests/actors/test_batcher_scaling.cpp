// The batcher's part in scaling, on CAF's deterministic scheduler with simulated time: a detached
// replica gets no new batch and its detach is answered only once its batches are back; detaching
// the last replica makes the version cold (scaled to zero): READY, requests held, model_manager
// woken once; a replica that arrives serves what was held; held requests that wait too long get
// typed errors; the watchdog still watches a detached replica's batches. Workers and model_manager
// are fakes the test drives by hand.

#include <gtest/gtest.h>

#include "actors/batcher.hpp"
#include "serving/model_table.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/actors/fake_manager.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_ref;
using serving::infer_job;
using serving::model_signature;
using serving::no_deadline;
using serving::output_block;
using serving::version_state;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

struct worker_log {
  std::vector<batch*> batches;
};

worker_actor spawn_fake_worker(caf::actor_system& sys, std::shared_ptr<worker_log> log) {
  return sys.spawn([log](worker_actor::pointer) -> worker_actor::behavior_type {
    return {
        [](load_atom, const replica_spec&) -> caf::result<replica_info> {
          return to_caf_error(unsupported("fake worker"));
        },
        [](unload_atom, uint32_t) {},
        [log](run_atom, batch_ref ref) { log->batches.push_back(ref.ptr.get()); },
        [](crash_atom) {},
        [](read_atom, uint64_t) {},
        [](overdue_atom, uint64_t) {},
        [](built_atom, uint64_t) {},
        [](wevent_atom, const worker_event&) {},
    };
  });
}

/// The (wake) messages a fake model_manager got.
struct wake_log {
  std::vector<std::pair<std::string, int64_t>> wakes;
};

manager_actor spawn_fake_manager(caf::actor_system& sys, std::shared_ptr<wake_log> log) {
  testing::fake_manager_hooks h;
  h.wake = [log](const std::string& m, int64_t v) { log->wakes.emplace_back(m, v); };
  return testing::spawn_fake_manager(sys, std::move(h));
}

class batcher_scaling_test : public testing::actor_fixture {
 protected:
  void SetUp() override {
    auto s = std::make_shared<model_signature>();
    s->model = "mlp";
    s->version = 1;
    s->max_batch_size = 1;
    s->inputs = {{"x", dtype::f32, {-1, 4}}};
    s->outputs = {{"y", dtype::f32, {-1, 3}}};
    s->config.max_batch_size = 1;
    sig_ = s;
    batcher_options o;
    o.signature = sig_;
    o.state = state_;
    o.max_batches_per_replica = 1;
    o.recovery_wait = 5s;
    o.manager = spawn_fake_manager(sys_, wakes_);
    batcher_ = spawn_batcher(sys_, o);
    probe_ = testing::spawn_probe(sys_, log_);
    run();
  }

  void add_replica(std::shared_ptr<worker_log> wlog, uint32_t worker_index, uint32_t id) {
    replica_handle h;
    h.worker = spawn_fake_worker(sys_, wlog);
    h.worker_index = worker_index;
    h.info.id = id;
    h.info.signature = sig_;
    caf::anon_send(batcher_, replica_atom::value, h);
    run();
  }

  std::unique_ptr<owned_job> job(std::chrono::microseconds timeout = 0us) {
    auto j = std::make_unique<owned_job>("mlp", std::vector<shape_t>{{1, 4}}, probe_, now(), 1);
    j->job.signature = sig_;
    j->job.level = 1;
    j->job.deadline = timeout.count() > 0 ? j->job.arrival + timeout : no_deadline;
    return j;
  }

  void submit(infer_job& j) {
    caf::anon_send(batcher_, submit_atom::value, testing::list_of({&j}));
    run();
  }

  /// Returns a batch as a worker would, with one row of output.
  void complete(batch* b) {
    auto* block = new output_block(64);
    b->result = status::ok();
    b->block = block;
    b->bucket_rows = b->rows;
    b->outputs = {{{dtype::f32, {b->rows, 3}}, 0, 3 * sizeof(float)}};
    b->compute_time = 10ms;
    caf::anon_send(batcher_, done_atom::value, batch_ref{b->shared_from_this()});
    run();
  }

  void release(infer_job& j) {
    for (auto& s : j.outputs) s.block->release();
    j.outputs.clear();
  }

  /// Sends (detach) and returns a flag set once it is answered.
  std::shared_ptr<bool> detach(uint32_t worker_index, uint32_t id) {
    auto answered = std::make_shared<bool>(false);
    sys_.spawn([this, worker_index, id, answered](caf::event_based_actor* self) {
      self->request(batcher_, caf::infinite, detach_atom::value, worker_index, id)
          .then([answered](bool ok) { *answered = ok; });
    });
    run();
    return answered;
  }

  batcher_stats stats() {
    batcher_stats s;
    caf::scoped_actor self{sys_};
    auto h = self->request(batcher_, caf::infinite, stats_atom::value);
    run();
    h.receive([&](batcher_stats& x) { s = x; }, [&](caf::error&) { ADD_FAILURE() << "no stats"; });
    return s;
  }

  version_state state() const { return static_cast<version_state>(state_->load()); }

  std::shared_ptr<model_signature> sig_;
  std::shared_ptr<std::atomic<uint8_t>> state_ = std::make_shared<std::atomic<uint8_t>>(0);
  std::shared_ptr<testing::probe_log> log_ = std::make_shared<testing::probe_log>();
  std::shared_ptr<wake_log> wakes_ = std::make_shared<wake_log>();
  batcher_actor batcher_;
  caf::actor probe_;
};

TEST_F(batcher_scaling_test, a_detached_replica_finishes_its_batch_and_gets_no_new_one) {
  auto w0 = std::make_shared<worker_log>(), w1 = std::make_shared<worker_log>();
  add_replica(w0, 0, 7);
  add_replica(w1, 1, 7);  // the same replica id on another worker: (worker, id) names a replica
  auto a = job(), b = job();
  submit(a->job);
  submit(b->job);
  ASSERT_EQ(w0->batches.size(), 1u);
  ASSERT_EQ(w1->batches.size(), 1u);

  auto detached = detach(0, 7);
  EXPECT_FALSE(*detached) << "its batch still runs";
  EXPECT_EQ(state(), version_state::ready);
  complete(w1->batches[0]);
  auto c = job();
  submit(c->job);
  EXPECT_EQ(w0->batches.size(), 1u) << "no new batch for the detached replica";
  ASSERT_EQ(w1->batches.size(), 2u);
  EXPECT_FALSE(*detached);

  complete(w0->batches[0]);
  EXPECT_TRUE(*detached) << "answered once its batch is back";
  complete(w1->batches[1]);
  for (auto* j : {&a->job, &b->job, &c->job}) {
    EXPECT_EQ(log_->replies_of(j), 1u);
    EXPECT_TRUE(j->result.is_ok()) << j->result.to_string();
    release(*j);
  }
  const batcher_stats s = stats();
  EXPECT_EQ(s.alive_replicas, 1u);
  EXPECT_FALSE(s.cold);
  EXPECT_EQ(s.submitted_jobs, 3u);
  EXPECT_EQ(s.busy_us, 30'000u);
  EXPECT_TRUE(wakes_->wakes.empty());
}

TEST_F(batcher_scaling_test,
       a_detached_replica_whose_worker_hangs_is_killed_and_its_batch_retried) {
  auto w0 = std::make_shared<worker_log>(), w1 = std::make_shared<worker_log>();
  add_replica(w0, 0, 1);
  add_replica(w1, 1, 1);
  auto a = job();
  submit(a->job);
  ASSERT_EQ(w0->batches.size(), 1u);
  auto detached = detach(0, 1);
  EXPECT_FALSE(*detached);
  advance(2100ms);  // past the watchdog's floor (2 s): worker 0 never answers
  caf::anon_send(batcher_, watch_atom::value);  // model_manager's periodic (watch)
  run();
  EXPECT_TRUE(*detached) << "its worker was killed; nothing runs there any more";
  ASSERT_EQ(w1->batches.size(), 1u) << "the batch retried on the replica that stays";
  complete(w1->batches[0]);
  EXPECT_EQ(log_->replies_of(&a->job), 1u);
  EXPECT_TRUE(a->job.result.is_ok()) << a->job.result.to_string();
  release(a->job);
}

TEST_F(batcher_scaling_test, an_idle_replica_is_detached_at_once_and_an_unknown_one_too) {
  auto w0 = std::make_shared<worker_log>(), w1 = std::make_shared<worker_log>();
  add_replica(w0, 0, 1);
  add_replica(w1, 1, 2);
  EXPECT_TRUE(*detach(1, 2));
  EXPECT_TRUE(*detach(1, 2)) << "already detached: nothing runs there";
  EXPECT_TRUE(*detach(5, 9)) << "never attached";
  EXPECT_EQ(stats().alive_replicas, 1u);
}

TEST_F(batcher_scaling_test,
       the_last_detach_makes_the_version_cold_and_a_new_replica_serves_what_it_held) {
  auto w0 = std::make_shared<worker_log>();
  add_replica(w0, 0, 1);
  ASSERT_TRUE(*detach(0, 1));
  EXPECT_EQ(state(), version_state::ready) << "scaled to zero, still served";
  EXPECT_TRUE(stats().cold);

  auto a = job(), b = job();
  submit(a->job);
  submit(b->job);
  EXPECT_EQ(log_->replies_of(&a->job), 0u) << "held, not refused";
  EXPECT_EQ(log_->replies_of(&b->job), 0u);
  ASSERT_EQ(wakes_->wakes.size(), 1u) << "one wake for what is held";
  EXPECT_EQ(wakes_->wakes[0], std::make_pair(std::string("mlp"), int64_t{1}));

  auto w1 = std::make_shared<worker_log>();
  add_replica(w1, 0, 2);
  EXPECT_FALSE(stats().cold);
  ASSERT_EQ(w1->batches.size(), 1u);
  complete(w1->batches[0]);
  ASSERT_EQ(w1->batches.size(), 2u);
  complete(w1->batches[1]);
  for (auto* j : {&a->job, &b->job}) {
    EXPECT_EQ(log_->replies_of(j), 1u);
    EXPECT_TRUE(j->result.is_ok()) << j->result.to_string();
    release(*j);
  }
}

TEST_F(batcher_scaling_test, held_requests_get_typed_errors_when_no_replica_comes) {
  auto w0 = std::make_shared<worker_log>();
  add_replica(w0, 0, 1);
  ASSERT_TRUE(*detach(0, 1));
  auto soon = job(1s), later = job();
  submit(soon->job);
  submit(later->job);
  advance(1001ms);  // the batcher's wake-up comes 1 us after the deadline
  ASSERT_EQ(log_->replies_of(&soon->job), 1u);
  EXPECT_EQ(soon->job.result.code(), error_code::deadline_exceeded);
  EXPECT_NE(soon->job.result.message().find("scaled to zero"), std::string::npos)
      << soon->job.result.to_string();
  EXPECT_EQ(log_->replies_of(&later->job), 0u);
  advance(4s);  // recovery_wait (5 s) after the first held request
  ASSERT_EQ(log_->replies_of(&later->job), 1u);
  EXPECT_EQ(later->job.result.code(), error_code::unavailable);
  EXPECT_NE(later->job.result.message().find("no replica started within 5000 ms"),
            std::string::npos)
      << later->job.result.to_string();

  EXPECT_EQ(wakes_->wakes.size(), 1u);
  auto again = job();
  submit(again->job);
  EXPECT_EQ(wakes_->wakes.size(), 2u) << "still cold: the next request asks again";
  EXPECT_EQ(log_->replies_of(&again->job), 0u);
  EXPECT_EQ(state(), version_state::ready);
}

TEST_F(batcher_scaling_test, a_cold_version_that_retires_answers_what_it_holds) {
  auto w0 = std::make_shared<worker_log>();
  add_replica(w0, 0, 1);
  ASSERT_TRUE(*detach(0, 1));
  auto held = job();
  submit(held->job);
  auto retired = std::make_shared<bool>(false);
  sys_.spawn([this, retired](caf::event_based_actor* self) {
    self->request(batcher_, caf::infinite, retire_atom::value).then([retired](bool) {
      *retired = true;
    });
  });
  run();
  EXPECT_TRUE(*retired);
  ASSERT_EQ(log_->replies_of(&held->job), 1u);
  EXPECT_EQ(held->job.result.code(), error_code::unavailable);
  EXPECT_EQ(state(), version_state::draining);
}

}  // namespace
}  // namespace troupe::actors
