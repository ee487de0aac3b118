// A worker process's serving loop (actors/replica_host.hpp) without the process: loads build a
// replica with its config parsed from the YAML text and report its buckets' layouts; runs read
// inputs staged in the shared arena and write the outputs where the node said; wrong regions,
// unknown replicas and buckets fail their batch typed; unloads and failed loads answer; fault
// injection reaches the run. Every wait is for a message, with a deadline.

#include "actors/replica_host.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>

#include "runtime/fault_hooks.hpp"
#include "serving/batch_gather.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::batch_gather;
using serving::bucket_layout;
using serving::fault_kind;
using serving::infer_job;
using serving::shared_arena;
using serving::time_point;

namespace {

/// What the host sent, in order; `next` waits for the next message (30 s deadline).
class outbox {
 public:
  void push(worker_message m) {
    std::lock_guard<std::mutex> lock(mutex_);
    messages_.push_back(std::move(m));
    cv_.notify_all();
  }
  template <class T>
  T next() {
    std::unique_lock<std::mutex> lock(mutex_);
    const bool got =
        cv_.wait_for(lock, std::chrono::seconds(30), [&] { return !messages_.empty(); });
    EXPECT_TRUE(got) << "no message from the host";
    if (!got) return T{};
    worker_message m = std::move(messages_.front());
    messages_.pop_front();
    EXPECT_TRUE(std::holds_alternative<T>(m)) << "got " << worker_message_name(m);
    return std::holds_alternative<T>(m) ? std::get<T>(std::move(m)) : T{};
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<worker_message> messages_;
};

class replica_host_test : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = testing::make_mlp_weights(4, 3, 11);
    dir_.write("m.onnx", testing::mlp_model_bytes(weights_));
    auto a = shared_arena::create(1 << 20, "troupe-test");
    ASSERT_TRUE(a.has_value());
    arena_ = *a;
    replica_host_options o;
    o.traits = cpu_device_traits(1);
    o.fault_injection = true;
    o.arena = arena_;
    o.send = [this](worker_message m) { out_.push(std::move(m)); };
    host_ = std::make_unique<replica_host>(std::move(o));
  }
  void TearDown() override { host_.reset(); }

  worker_loaded load(const std::string& config_text, uint64_t request = 1) {
    worker_load l;
    l.request = request;
    l.model = "mlp";
    l.version = 1;
    l.path = (dir_.path() / "m.onnx").string();
    l.config_text = config_text;
    l.warmup_runs = 1;
    EXPECT_TRUE(host_->handle(l).is_ok());
    return out_.next<worker_loaded>();
  }

  /// Stages `job`'s input into a fresh region for the bucket `l` and runs it.
  worker_done run(uint32_t replica, const bucket_layout& l, testing::owned_job& job,
                  uint64_t batch_id, const std::string& fault = "") {
    auto in = arena_->allocate(l.inputs[0].bytes());
    auto block = arena_->allocate(l.block_bytes);
    EXPECT_TRUE(in && block);
    std::byte* dst = arena_->at(*in);
    const size_t capacity = in->bytes;
    std::vector<infer_job*> jobs{&job.job};
    EXPECT_TRUE(gather_.gather(jobs, {&dst, 1}, {&capacity, 1}).is_ok());
    worker_run r;
    r.batch = batch_id;
    r.replica = replica;
    r.rows = job.job.rows;
    r.bucket_rows = l.rows;
    r.inputs = {data_ref{data_ref::kind::shm, *in, 0}};
    r.outputs = data_ref{data_ref::kind::shm, *block, 0};
    r.fault = fault;
    EXPECT_TRUE(host_->handle(r).is_ok());
    worker_done d = out_.next<worker_done>();
    last_block_ = arena_->at(*block);
    return d;
  }

  testing::temp_dir dir_;
  testing::mlp_weights weights_;
  std::shared_ptr<shared_arena> arena_;
  outbox out_;
  std::unique_ptr<replica_host> host_;
  batch_gather gather_{1};
  std::byte* last_block_ = nullptr;
};

TEST_F(replica_host_test, loads_with_the_config_text_and_runs_staged_batches) {
  const worker_loaded l = load("max_batch_size: 2\n", 42);
  ASSERT_TRUE(l.result.is_ok()) << l.result.to_string();
  EXPECT_EQ(l.request, 42u);
  EXPECT_EQ(l.max_batch_size, 2) << "the config text was parsed";
  EXPECT_EQ(l.bucket_rows, (std::vector<int64_t>{1, 2}));
  ASSERT_EQ(l.buckets.size(), 2u);
  ASSERT_EQ(l.inputs.size(), 1u);
  EXPECT_EQ(l.inputs[0].shape, (std::vector<int64_t>{-1, 4}));
  EXPECT_EQ(l.warmup.size(), 2u);
  EXPECT_EQ(host_->replicas(), 1u);

  testing::owned_job job("mlp", {{2, 4}}, caf::actor(), time_point{}, 5);
  const worker_done d = run(l.replica, l.buckets[1], job, 7);
  ASSERT_TRUE(d.result.is_ok()) << d.result.to_string();
  EXPECT_EQ(d.batch, 7u);
  EXPECT_EQ(d.bucket_rows, 2);
  ASSERT_EQ(d.outputs.size(), 1u);
  EXPECT_EQ(d.outputs[0].info.shape, (shape_t{2, 3}));
  const auto ref = testing::mlp_reference(weights_, job.data[0].data(), 2);
  const auto* y = reinterpret_cast<const float*>(last_block_ + d.outputs[0].offset);
  for (size_t k = 0; k < ref.size(); ++k) EXPECT_NEAR(y[k], ref[k], 1e-5) << "element " << k;

  // A second load of the file takes the first replica's weights.
  const worker_loaded second = load("max_batch_size: 2\n", 43);
  ASSERT_TRUE(second.result.is_ok());
  EXPECT_NE(second.replica, l.replica);

  ASSERT_TRUE(host_->handle(worker_unload{l.replica}).is_ok());
  EXPECT_EQ(host_->replicas(), 1u);
  const worker_done gone = run(l.replica, l.buckets[1], job, 8);
  EXPECT_EQ(gone.result.code(), error_code::unavailable) << gone.result.to_string();
  EXPECT_TRUE(run(second.replica, second.buckets[1], job, 9).result.is_ok());
}

TEST_F(replica_host_test, wrong_regions_and_buckets_fail_the_batch_typed) {
  const worker_loaded l = load("max_batch_size: 2\n");
  ASSERT_TRUE(l.result.is_ok());
  auto block = arena_->allocate(l.buckets[1].block_bytes);
  ASSERT_TRUE(block.has_value());
  uint64_t next_batch = 0;  // the node numbers its runs upwards: the host drops one that is not
  auto attempt = [&](worker_run r) {
    r.batch = ++next_batch;
    r.replica = l.replica;
    r.rows = 1;
    if (r.bucket_rows == 0) r.bucket_rows = 2;
    EXPECT_TRUE(host_->handle(r).is_ok());
    return out_.next<worker_done>().result;
  };
  worker_run outside;
  outside.inputs = {data_ref{data_ref::kind::shm, {0, (1 << 20) - 8, 64}, 0}};
  outside.outputs = data_ref{data_ref::kind::shm, *block, 0};
  const status s1 = attempt(outside);
  EXPECT_EQ(s1.code(), error_code::invalid_argument);
  EXPECT_NE(s1.message().find("outside"), std::string::npos) << s1.message();

  worker_run small = outside;
  small.inputs = {data_ref{data_ref::kind::shm, {0, 0, 4}, 0}};
  EXPECT_EQ(attempt(small).code(), error_code::invalid_argument);

  worker_run frames = outside;
  frames.inputs = {data_ref{data_ref::kind::frame, {}, 0}};
  EXPECT_EQ(attempt(frames).code(), error_code::unsupported);

  worker_run no_bucket = small;
  no_bucket.bucket_rows = 3;
  EXPECT_EQ(attempt(no_bucket).code(), error_code::invalid_argument);

  worker_run two_inputs = small;
  two_inputs.inputs.push_back(two_inputs.inputs[0]);
  EXPECT_EQ(attempt(two_inputs).code(), error_code::invalid_argument);

  worker_run unknown = small;
  unknown.batch = ++next_batch;
  unknown.replica = 999;
  EXPECT_TRUE(host_->handle(unknown).is_ok());
  EXPECT_EQ(out_.next<worker_done>().result.code(), error_code::unavailable);

  EXPECT_EQ(host_->handle(worker_heartbeat{1}).code(), error_code::invalid_argument);
}

TEST_F(replica_host_test, a_second_copy_of_a_run_is_dropped) {
  // A duplicate on the link (fault injection) must not run the batch again: the node may already
  // be replying from its output block.
  const worker_loaded l = load("max_batch_size: 2\n");
  ASSERT_TRUE(l.result.is_ok());
  testing::owned_job job("mlp", {{1, 4}}, caf::actor(), time_point{}, 5);
  EXPECT_EQ(run(l.replica, l.buckets[0], job, 5).batch, 5u);
  worker_run again;
  again.batch = 5;
  again.replica = l.replica;
  EXPECT_TRUE(host_->handle(again).is_ok());  // dropped: no answer
  // The next answer is the next run's: the copy left none behind.
  EXPECT_EQ(run(l.replica, l.buckets[0], job, 6).batch, 6u);
}

TEST_F(replica_host_test, runs_that_arrive_out_of_order_all_run_once) {
  // Over several connections (a remote worker's data lanes) a run may overtake an earlier one:
  // both run, and a copy of either is still dropped.
  const worker_loaded l = load("max_batch_size: 2\n");
  ASSERT_TRUE(l.result.is_ok());
  testing::owned_job job("mlp", {{1, 4}}, caf::actor(), time_point{}, 5);
  EXPECT_EQ(run(l.replica, l.buckets[0], job, 9).batch, 9u);
  EXPECT_EQ(run(l.replica, l.buckets[0], job, 7).batch, 7u);
  for (uint64_t copy : {7u, 9u}) {
    worker_run again;
    again.batch = copy;
    again.replica = l.replica;
    EXPECT_TRUE(host_->handle(again).is_ok());  // dropped: no answer
  }
  EXPECT_EQ(run(l.replica, l.buckets[0], job, 8).batch, 8u);
}

TEST_F(replica_host_test, failed_loads_answer_with_their_error) {
  const worker_loaded bad_config = load("max_batch_size: [oops]\n");
  EXPECT_FALSE(bad_config.result.is_ok());
  EXPECT_NE(bad_config.result.message().find("worker process"), std::string::npos);
  worker_load missing;
  missing.request = 9;
  missing.model = "nope";
  missing.path = (dir_.path() / "missing.onnx").string();
  ASSERT_TRUE(host_->handle(missing).is_ok());
  const worker_loaded l = out_.next<worker_loaded>();
  EXPECT_EQ(l.request, 9u);
  EXPECT_FALSE(l.result.is_ok());
  EXPECT_EQ(host_->replicas(), 0u);
}

TEST_F(replica_host_test, fault_injection_reaches_the_run) {
  const worker_loaded l = load("");
  ASSERT_TRUE(l.result.is_ok());
  testing::owned_job job("mlp", {{1, 4}}, caf::actor(), time_point{}, 5);
  const worker_done d = run(l.replica, l.buckets[0], job, 1, "device");
  EXPECT_EQ(d.result.code(), error_code::device_error);
}

TEST_F(replica_host_test, an_injected_allocation_fault_fails_the_next_load_out_of_memory) {
  // The node's fault plan fired fail_allocations for this process: it rides on the load.
  worker_load l;
  l.request = 1;
  l.model = "mlp";
  l.version = 1;
  l.path = (dir_.path() / "m.onnx").string();
  l.warmup_runs = 1;
  l.injected = injected_fault{fault_kind::fail_allocations, std::chrono::milliseconds(0), 1000};
  ASSERT_TRUE(host_->handle(l).is_ok());
  const worker_loaded failed = out_.next<worker_loaded>();
  EXPECT_EQ(failed.result.code(), error_code::out_of_memory) << failed.result.to_string();
  runtime::fail_next_allocations(kernels::backend::cpu, 0);  // what this test left armed
  EXPECT_TRUE(load("", 2).result.is_ok());
}

}  // namespace
}  // namespace troupe::actors
