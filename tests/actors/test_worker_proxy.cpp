// The proxy of a worker process (actors/worker_proxy.hpp) on CAF's test coordinator, with a fake
// channel in place of the process: the test plays the process, answering what the proxy sends and
// reading and writing the shared memory as the process would. Loads wait for the hello and come
// back as replica_info with the process's signature and layouts; batches are gathered into one of
// two staging regions per bucket (a third waits for one to free), their outputs read from the
// block the process wrote; a process that goes, breaks the protocol or reports a device error ends
// the proxy with an error; loads time out on the actor clock and a late answer is unloaded; a full
// shared memory fails a load out_of_memory.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>

#include "actors/worker.hpp"
#include "actors/worker_channel.hpp"
#include "serving/shared_arena.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_ref;
using serving::bucket_layout;
using serving::fault_kind;
using serving::fault_plan;
using serving::fault_rule;
using serving::shared_arena;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

/// What the proxy sent its process, and the handles to play the process with.
struct fake_process {
  worker_process_spec spec;
  worker_channel_events events;
  std::vector<worker_message> sent;
  std::shared_ptr<shared_arena> memory;  // the process's mapping of the shared memory
  bool destroyed = false;

  template <class T>
  std::vector<T> sent_of() const {
    std::vector<T> out;
    for (const auto& m : sent)
      if (const T* t = std::get_if<T>(&m)) out.push_back(*t);
    return out;
  }
};

class fake_channel : public worker_channel {
 public:
  explicit fake_channel(std::shared_ptr<fake_process> p) : p_(std::move(p)) {}
  ~fake_channel() override { p_->destroyed = true; }
  status send(worker_message m) override {
    p_->sent.push_back(std::move(m));
    return status::ok();
  }
  int64_t pid() const override { return 4242; }

 private:
  std::shared_ptr<fake_process> p_;
};

/// A batcher stand-in: forwards (run) to the worker, so that the worker answers it, and keeps
/// the batches that come back.
struct batcher_log {
  std::vector<std::shared_ptr<batch>> done;
};

caf::actor spawn_batcher_probe(caf::actor_system& sys, worker_actor worker,
                               std::shared_ptr<batcher_log> log) {
  return sys.spawn([worker, log](caf::event_based_actor* self) -> caf::behavior {
    return {
        [=](run_atom, batch_ref ref) { self->send(worker, run_atom::value, ref); },
        [=](done_atom, batch_ref ref) { log->done.push_back(ref.ptr); },
    };
  });
}

class worker_proxy_test : public testing::actor_fixture {
 protected:
  void start(size_t shared_bytes = 1 << 20, std::shared_ptr<fault_plan> faults = nullptr) {
    auto processes = std::make_shared<worker_process_options>();
    processes->shared_memory_bytes = shared_bytes;
    processes->channels =
        [p = process_](const worker_process_spec& spec,
                       worker_channel_events events) -> expected<std::unique_ptr<worker_channel>> {
      p->spec = spec;
      p->events = std::move(events);
      auto mapped = shared_arena::attach(dup(spec.shm_fd), spec.shm_bytes);
      if (!mapped) return mapped.error();
      p->memory = *mapped;
      return std::unique_ptr<worker_channel>(new fake_channel(p));
    };
    worker_options o;
    o.kind = worker_kind::cpu;
    o.index = 1;
    o.fault_injection = true;
    o.processes = processes;
    o.faults = std::move(faults);
    worker_ = spawn_worker(sys_, o, /*detached=*/false);
    run();
    batcher_ = spawn_batcher_probe(sys_, worker_, batches_);
    down_ = std::make_shared<std::optional<caf::error>>();
    auto down = down_;
    monitor_ = sys_.spawn([w = worker_, down](caf::event_based_actor* self) -> caf::behavior {
      self->monitor(w);
      self->set_down_handler([down](caf::down_msg& m) { *down = m.reason; });
      return {[](int) {}};
    });
    run();
  }

  /// The channel's callbacks hold the proxy (as the real link's do until the proxy exits).
  void TearDown() override {
    if (worker_) caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
    run();
  }

  void deliver(worker_message m) {
    process_->events.on_message(std::move(m));
    run();
  }
  void hello() { deliver(worker_hello{1, 4242, "cpu", "", 0, 0, 0}); }

  /// Asks for a load of the MLP; the answer lands in load_result_.
  void request_load(std::chrono::milliseconds timeout = 10s) {
    replica_spec spec;
    spec.model = "mlp";
    spec.version = 3;
    spec.path = "/models/mlp/3/model.onnx";
    spec.config.max_batch_size = 2;
    spec.config_text = "max_batch_size: 2\n";
    spec.load_timeout = timeout;
    load_result_.reset();
    auto result = std::make_shared<std::optional<expected<replica_info>>>();
    load_result_ = result;
    sys_.spawn([w = worker_, spec, result](caf::event_based_actor* self) {
      self->request(w, caf::infinite, load_atom::value, spec)
          .then([result](replica_info& info) { *result = info; },
                [result](caf::error& e) {
                  *result = status(static_cast<error_code>(e.code()), "load failed");
                });
    });
    run();
  }

  /// The process's answer for an MLP x[N,4] -> y[N,3] with buckets of 1 and 2 rows.
  static worker_loaded mlp_loaded(uint64_t request, uint32_t replica) {
    worker_loaded l;
    l.request = request;
    l.replica = replica;
    l.inputs = {{"x", dtype::f32, {-1, 4}}};
    l.outputs = {{"y", dtype::f32, {-1, 3}}};
    l.max_batch_size = 2;
    l.bucket_rows = {1, 2};
    l.warmup = {{1, 5.0}, {2, 7.0}};
    l.pool_bytes = 1000;
    for (int64_t rows : {1, 2}) {
      bucket_layout b;
      b.rows = rows;
      b.inputs = {{dtype::f32, {rows, 4}}};
      b.outputs = {{dtype::f32, {rows, 3}}};
      b.output_offsets = {0};
      b.output_row_bytes = {12};
      b.block_bytes = 64;
      l.buckets.push_back(b);
    }
    return l;
  }

  /// Loads the MLP as replica `id`.
  replica_info load(uint32_t id = 7) {
    request_load();
    const auto loads = process_->sent_of<worker_load>();
    EXPECT_FALSE(loads.empty());
    deliver(mlp_loaded(loads.back().request, id));
    EXPECT_TRUE(load_result_->has_value() && load_result_->value().has_value());
    return load_result_->value().has_value() ? load_result_->value().value() : replica_info{};
  }

  std::shared_ptr<batch> submit(std::vector<owned_job*> jobs, uint32_t replica = 7) {
    auto b = std::make_shared<batch>();
    b->replica_id = replica;
    for (auto* j : jobs) {
      b->jobs.push_back(&j->job);
      b->rows += j->job.rows;
    }
    caf::anon_send(batcher_, run_atom::value, batch_ref{b});
    run();
    return b;
  }

  /// Plays the process: y = 2 * x, row by row, into the run's output block; then (done).
  void answer(const worker_run& r, status result = status::ok()) {
    worker_done d;
    d.batch = r.batch;
    d.bucket_rows = r.bucket_rows;
    d.result = result;
    d.compute_us = 100;
    if (result.is_ok()) {
      const auto* x = reinterpret_cast<const float*>(process_->memory->at(r.inputs[0].region));
      auto* y = reinterpret_cast<float*>(process_->memory->at(r.outputs.region));
      for (int64_t row = 0; row < r.bucket_rows; ++row)
        for (int k = 0; k < 3; ++k) y[row * 3 + k] = 2 * x[row * 4 + k];
      batch::output_layout o;
      o.info = {dtype::f32, {r.bucket_rows, 3}};
      o.offset = 0;
      o.row_bytes = 12;
      d.outputs = {o};
    }
    deliver(d);
  }

  std::shared_ptr<fake_process> process_ = std::make_shared<fake_process>();
  worker_actor worker_;
  caf::actor batcher_;
  caf::actor monitor_;  // held: an actor nobody holds is stopped as unreachable
  std::shared_ptr<batcher_log> batches_ = std::make_shared<batcher_log>();
  std::shared_ptr<std::optional<caf::error>> down_;
  std::shared_ptr<std::optional<expected<replica_info>>> load_result_;
};

TEST_F(worker_proxy_test, loads_wait_for_the_hello_and_report_the_process_replica) {
  start();
  EXPECT_EQ(process_->spec.index, 1u);
  EXPECT_TRUE(process_->spec.fault_injection);
  EXPECT_GE(process_->spec.shm_bytes, 1u << 20);
  request_load();
  EXPECT_TRUE(process_->sent.empty()) << "nothing goes before the process said hello";
  hello();
  const auto loads = process_->sent_of<worker_load>();
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_EQ(loads[0].config_text, "max_batch_size: 2\n");
  EXPECT_EQ(loads[0].path, "/models/mlp/3/model.onnx");
  EXPECT_FALSE(load_result_->has_value());
  deliver(mlp_loaded(loads[0].request, 7));
  ASSERT_TRUE(load_result_->has_value());
  ASSERT_TRUE(load_result_->value().has_value()) << load_result_->value().error().to_string();
  const replica_info& info = load_result_->value().value();
  EXPECT_EQ(info.id, 7u);
  EXPECT_EQ(info.bucket_rows, (std::vector<int64_t>{1, 2}));
  ASSERT_EQ(info.warmup.size(), 2u);
  EXPECT_EQ(info.signature->model, "mlp");
  EXPECT_EQ(info.signature->version, 3);
  EXPECT_EQ(info.signature->max_batch_size, 2);
  EXPECT_EQ(info.signature->inputs[0].shape, (std::vector<int64_t>{-1, 4}));
  EXPECT_GT(info.pool_bytes, 1000u) << "the process's pool plus the node's staging and blocks";
  EXPECT_FALSE(down_->has_value());
}

TEST_F(worker_proxy_test, batches_are_staged_in_shared_memory_and_answered_from_it) {
  start();
  hello();
  load();
  owned_job a("mlp", {{1, 4}}, caf::actor(), now(), 1);
  owned_job b("mlp", {{1, 4}}, caf::actor(), now(), 2);
  owned_job c("mlp", {{2, 4}}, caf::actor(), now(), 3);
  owned_job d("mlp", {{2, 4}}, caf::actor(), now(), 4);
  auto first = submit({&a, &b});
  auto second = submit({&c});
  auto third = submit({&d});
  auto runs = process_->sent_of<worker_run>();
  ASSERT_EQ(runs.size(), 2u) << "two staging regions per bucket: the third batch waits";
  EXPECT_EQ(runs[0].bucket_rows, 2);
  EXPECT_EQ(runs[0].rows, 2);
  EXPECT_NE(runs[0].inputs[0].region.offset, runs[1].inputs[0].region.offset);
  EXPECT_NE(runs[0].outputs.region.offset, runs[1].outputs.region.offset)
      << "a block a run writes is not given to another run";
  // The gather: both jobs' rows, in order, in the first staging region.
  const auto* staged =
      reinterpret_cast<const float*>(process_->memory->at(runs[0].inputs[0].region));
  EXPECT_EQ(std::memcmp(staged, a.data[0].data(), 16), 0);
  EXPECT_EQ(std::memcmp(staged + 4, b.data[0].data(), 16), 0);

  answer(runs[0]);
  ASSERT_EQ(batches_->done.size(), 1u);
  ASSERT_EQ(batches_->done[0], first);
  ASSERT_TRUE(first->result.is_ok()) << first->result.to_string();
  ASSERT_NE(first->block, nullptr);
  EXPECT_EQ(first->bucket_rows, 2);
  EXPECT_EQ(first->outputs[0].info.shape, (shape_t{2, 3}));
  EXPECT_EQ(first->outputs[0].row_bytes, 12u);
  const auto* y = reinterpret_cast<const float*>(first->block->data() + first->outputs[0].offset);
  EXPECT_FLOAT_EQ(y[0], 2 * a.data[0][0]);
  EXPECT_FLOAT_EQ(y[3 + 2], 2 * b.data[0][2]);
  EXPECT_GE(first->compute_time, 100us) << "the process's compute time and the gather";
  // The freed staging region took the waiting batch.
  runs = process_->sent_of<worker_run>();
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[2].bucket_rows, 2);
  EXPECT_EQ(runs[2].inputs[0].region.offset, runs[0].inputs[0].region.offset);
  answer(runs[1]);
  answer(runs[2]);
  ASSERT_EQ(batches_->done.size(), 3u);
  EXPECT_TRUE(second->result.is_ok());
  EXPECT_TRUE(third->result.is_ok());
  for (auto& bt : {first, second, third}) {
    bt->block->release();  // the replies went out
    bt->block = nullptr;
  }
  // A run on a replica the process does not hold is answered at once.
  auto unknown = submit({&d}, 99);
  EXPECT_EQ(unknown->result.code(), error_code::unavailable);
  EXPECT_FALSE(down_->has_value());
}

TEST_F(worker_proxy_test, a_batch_failed_by_the_process_is_answered_with_its_error) {
  start();
  hello();
  load();
  owned_job a("mlp", {{1, 4}}, caf::actor(), now(), 1);
  a.job.parameters = {{"troupe.fault", "crash"}, {"troupe.sleep_ms", "5"}};
  auto bt = submit({&a});
  const auto runs = process_->sent_of<worker_run>();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].fault, "crash") << "fault injection goes to the process";
  EXPECT_EQ(runs[0].sleep_ms, 5u);
  answer(runs[0], internal_error("fault injection: this version is configured to fail"));
  ASSERT_EQ(batches_->done.size(), 1u);
  EXPECT_EQ(bt->result.code(), error_code::internal);
  EXPECT_EQ(bt->block, nullptr);
  EXPECT_FALSE(bt->worker_failed);
  EXPECT_FALSE(down_->has_value()) << "an error in a batch does not end the worker";
}

TEST_F(worker_proxy_test, a_device_error_ends_the_proxy_after_answering) {
  start();
  hello();
  load();
  owned_job a("mlp", {{1, 4}}, caf::actor(), now(), 1);
  auto bt = submit({&a});
  answer(process_->sent_of<worker_run>()[0],
         status(error_code::device_error, "cudaErrorIllegalAddress"));
  ASSERT_EQ(batches_->done.size(), 1u);
  EXPECT_TRUE(bt->worker_failed) << "the batcher retries it elsewhere";
  ASSERT_TRUE(down_->has_value());
  EXPECT_TRUE(static_cast<bool>(**down_)) << "exited with an error: the supervisor replaces it";
  EXPECT_TRUE(process_->destroyed) << "the process went with the proxy";
}

TEST_F(worker_proxy_test, the_process_going_ends_the_proxy_and_its_loads) {
  start();
  hello();
  request_load();
  process_->events.on_closed(status(error_code::unavailable, "killed by signal 9"));
  run();
  ASSERT_TRUE(down_->has_value());
  EXPECT_TRUE(static_cast<bool>(**down_));
  EXPECT_NE(sys_.render(**down_).find("killed by signal 9"), std::string::npos)
      << sys_.render(**down_);
  ASSERT_TRUE(load_result_->has_value());
  EXPECT_FALSE(load_result_->value().has_value()) << "the load waiting for it is answered";
}

TEST_F(worker_proxy_test, protocol_violations_end_the_proxy) {
  start();
  hello();
  worker_done stray;
  stray.batch = 12345;
  deliver(stray);
  ASSERT_TRUE(down_->has_value()) << "a done for a batch it was never given";
}

TEST_F(worker_proxy_test, a_hello_from_another_worker_ends_the_proxy) {
  start();
  deliver(worker_hello{9, 4242, "cpu", "", 0, 0, 0});
  ASSERT_TRUE(down_->has_value());
}

TEST_F(worker_proxy_test, layouts_that_do_not_fit_fail_the_load) {
  start();
  hello();
  request_load();
  auto l = mlp_loaded(process_->sent_of<worker_load>()[0].request, 7);
  l.buckets[1].output_offsets[0] = 60;  // 24 bytes at 60 in a block of 64
  deliver(l);
  ASSERT_TRUE(load_result_->has_value());
  ASSERT_FALSE(load_result_->value().has_value());
  EXPECT_EQ(load_result_->value().error().code(), error_code::internal);
  const auto unloads = process_->sent_of<worker_unload>();
  ASSERT_EQ(unloads.size(), 1u) << "the process drops the replica the node refused";
  EXPECT_EQ(unloads[0].replica, 7u);
}

TEST_F(worker_proxy_test, a_load_the_process_does_not_answer_times_out) {
  start();
  hello();
  request_load(2s);
  advance(1s);
  EXPECT_FALSE(load_result_->has_value());
  advance(1s);
  ASSERT_TRUE(load_result_->has_value());
  ASSERT_FALSE(load_result_->value().has_value());
  EXPECT_EQ(load_result_->value().error().code(), error_code::deadline_exceeded);
  // The late answer's replica is not wanted.
  deliver(mlp_loaded(process_->sent_of<worker_load>()[0].request, 5));
  const auto unloads = process_->sent_of<worker_unload>();
  ASSERT_EQ(unloads.size(), 1u);
  EXPECT_EQ(unloads[0].replica, 5u);
  EXPECT_FALSE(down_->has_value());
}

TEST_F(worker_proxy_test, a_full_shared_memory_fails_the_load_out_of_memory) {
  start(1024);  // four regions of 256 bytes: not the four staging regions and two blocks
  hello();
  request_load();
  deliver(mlp_loaded(process_->sent_of<worker_load>()[0].request, 7));
  ASSERT_TRUE(load_result_->has_value());
  ASSERT_FALSE(load_result_->value().has_value());
  EXPECT_EQ(load_result_->value().error().code(), error_code::out_of_memory);
  EXPECT_EQ(process_->sent_of<worker_unload>().size(), 1u);
}

// ---- duplicates and the worker_link hop's faults (fault injection) ----

TEST_F(worker_proxy_test, a_second_answer_to_a_batch_is_dropped) {
  start();
  hello();
  load();
  owned_job a("mlp", {{1, 4}}, caf::actor(), now(), 1);
  auto first = submit({&a});
  const auto runs = process_->sent_of<worker_run>();
  ASSERT_EQ(runs.size(), 1u);
  answer(runs[0]);
  answer(runs[0]);  // a duplicate on the link
  EXPECT_EQ(batches_->done.size(), 1u);
  EXPECT_FALSE(down_->has_value()) << "a second answer is not a protocol violation";
  first->block->release();
  first->block = nullptr;
}

TEST_F(worker_proxy_test, a_run_message_copied_by_a_duplicate_claims_nothing) {
  start();
  hello();
  load();
  owned_job a("mlp", {{1, 4}}, caf::actor(), now(), 1);
  auto b = std::make_shared<batch>();
  b->replica_id = 7;
  b->jobs.push_back(&a.job);
  b->rows = 1;
  b->sequence = 5;
  b->dispatched.store(5);
  caf::anon_send(batcher_, run_atom::value, batch_ref{b, 5});
  caf::anon_send(batcher_, run_atom::value, batch_ref{b, 5});
  run();
  EXPECT_EQ(process_->sent_of<worker_run>().size(), 1u) << "the batch is staged once";
}

std::shared_ptr<fault_plan> plan_with(fault_kind kind, std::chrono::milliseconds delay = 0ms) {
  auto plan = std::make_shared<fault_plan>();
  fault_rule r;
  r.kind = kind;
  r.target = is_message_fault(kind) ? "worker_link:1" : "worker:1";
  r.delay = delay;
  EXPECT_TRUE(plan->add(r).has_value());
  return plan;
}

TEST_F(worker_proxy_test, worker_faults_ride_on_the_run_to_the_process) {
  start(1 << 20, plan_with(fault_kind::segfault));
  hello();
  load();
  owned_job a("mlp", {{1, 4}}, caf::actor(), now(), 1);
  submit({&a});
  const auto runs = process_->sent_of<worker_run>();
  ASSERT_EQ(runs.size(), 1u);
  ASSERT_TRUE(runs[0].injected.has_value());
  EXPECT_EQ(runs[0].injected->kind, fault_kind::segfault);
}

TEST_F(worker_proxy_test, the_link_drops_duplicates_and_delays_messages_in_order) {
  {
    start(1 << 20, plan_with(fault_kind::duplicate));
    hello();
    request_load();
    EXPECT_EQ(process_->sent_of<worker_load>().size(), 2u) << "the load went twice";
    const auto loads = process_->sent_of<worker_load>();
    deliver(mlp_loaded(loads[0].request, 7));
    EXPECT_TRUE(load_result_->has_value() && load_result_->value().has_value());
    // The second copy's answer names a load answered already: its replica is unloaded.
    deliver(mlp_loaded(loads[1].request, 8));
    const auto unloads = process_->sent_of<worker_unload>();
    ASSERT_EQ(unloads.size(), 1u);
    EXPECT_EQ(unloads[0].replica, 8u);
    EXPECT_FALSE(down_->has_value());
  }
}

TEST_F(worker_proxy_test, a_delayed_message_waits_and_later_ones_queue_behind_it) {
  start(1 << 20, plan_with(fault_kind::delay, 50ms));
  hello();
  request_load();
  EXPECT_TRUE(process_->sent_of<worker_load>().empty()) << "held back";
  request_load();  // not delayed itself, but behind the held one
  EXPECT_TRUE(process_->sent_of<worker_load>().empty());
  advance(51ms);
  const auto loads = process_->sent_of<worker_load>();
  ASSERT_EQ(loads.size(), 2u);
  EXPECT_LT(loads[0].request, loads[1].request) << "in order";
}

TEST_F(worker_proxy_test, a_dropped_message_is_not_sent) {
  start(1 << 20, plan_with(fault_kind::drop));
  hello();
  request_load(100ms);
  EXPECT_TRUE(process_->sent_of<worker_load>().empty());
  advance(101ms);
  ASSERT_TRUE(load_result_->has_value());
  EXPECT_EQ(load_result_->value().error().code(), error_code::deadline_exceeded)
      << "a lost load times out";
}

}  // namespace
}  // namespace troupe::actors
