// What the workers share whatever their device: host staging memory (runtime::host_buffer, here
// its CPU fallback), a replica that gathers requests into staging allocated once per bucket and
// reuses it and its output blocks, never overwriting a block a reply still reads; workers that
// report their memory; model placement by device kind; and a gpu_worker on a machine without a
// GPU failing its loads with a typed error instead of crashing.

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "actors/gpu_worker.hpp"
#include "actors/node.hpp"
#include "runtime/host_staging.hpp"
#include "serving/batch_gather.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/replica.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/serving/metrics_test_util.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_gather;
using serving::bucket_layout;
using serving::infer_job;
using serving::output_block;
using serving::replica;
using serving::replica_memory;
using serving::serving_metrics;
using serving::table_holder;
using serving::time_point;
using serving::version_state;

namespace {

using testing::owned_job;

TEST(host_buffer, cpu_fallback_is_aligned_owned_and_movable) {
  auto b = runtime::host_buffer::allocate(kernels::backend::cpu, 0, 1000);
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_NE(b->data(), nullptr);
  EXPECT_EQ(b->bytes(), 1000u);
  EXPECT_FALSE(b->pinned());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % 64, 0u);
  std::memset(b->data(), 0x5a, b->bytes());  // the whole range is writable (ASan build checks)
  std::byte* p = b->data();
  runtime::host_buffer moved = std::move(*b);
  EXPECT_EQ(moved.data(), p);
  EXPECT_EQ(b->data(), nullptr) << "the source gave its bytes away";
  moved.reset();
  EXPECT_FALSE(moved);
  auto empty = runtime::host_buffer::allocate(kernels::backend::cpu, 0, 0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_NE(empty->data(), nullptr) << "0 bytes still gives a valid pointer";
}

TEST(host_buffer, cuda_request_is_pinned_or_a_typed_error) {
  auto gpus = resolve_gpus(std::nullopt);
  ASSERT_TRUE(gpus.has_value());
  auto b = runtime::host_buffer::allocate(kernels::backend::cuda, 0, 4096);
  if (!gpus->empty()) {
    ASSERT_TRUE(b.has_value()) << b.error().to_string();
    EXPECT_TRUE(b->pinned());
  } else {
    ASSERT_FALSE(b.has_value()) << "no GPU here: pinned memory cannot be had";
    EXPECT_TRUE(b.error().code() == error_code::unavailable ||
                b.error().code() == error_code::device_error)
        << b.error().to_string();
  }
}

TEST(resolve_gpus, explicit_devices_are_checked) {
  auto none = resolve_gpus(std::vector<int>{});
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
  auto missing = resolve_gpus(std::vector<int>{999});
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), error_code::invalid_argument);
  EXPECT_NE(missing.error().message().find("gpus"), std::string::npos);
}

/// A replica of the test MLP on the CPU and batches formed as the batcher forms them.
class replica_staging : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = testing::make_mlp_weights(4, 3, 5);
    dir_.write("m.onnx", testing::mlp_model_bytes(weights_));
    replica::options o;
    o.model_name = "mlp";
    o.model_path = (dir_.path() / "m.onnx").string();
    o.config.max_batch_size = 4;
    o.warmup_runs = 1;
    configure(o);
    auto r = replica::create(o);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    replica_ = std::move(*r);
  }

  virtual void configure(replica::options&) {}

  /// Runs one batch of jobs with these row counts; checks every job's rows against the reference.
  batch& run(std::vector<int64_t> rows, uint32_t seed) {
    jobs_.clear();
    auto b = std::make_shared<batch>();
    for (size_t i = 0; i < rows.size(); ++i) {
      jobs_.push_back(std::make_unique<owned_job>("mlp", std::vector<shape_t>{{rows[i], 4}},
                                                  caf::actor(), time_point{},
                                                  seed + static_cast<uint32_t>(i)));
      b->jobs.push_back(&jobs_.back()->job);
      b->rows += rows[i];
    }
    batches_.push_back(b);
    const status s = replica_->run(*b);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    if (!s.is_ok()) return *b;
    int64_t row = 0;
    for (auto& j : jobs_) {
      const auto ref = testing::mlp_reference(weights_, j->data[0].data(), j->job.rows);
      const auto* got = reinterpret_cast<const float*>(b->block->data() + b->outputs[0].offset +
                                                       row * b->outputs[0].row_bytes);
      for (size_t k = 0; k < ref.size(); ++k) EXPECT_NEAR(got[k], ref[k], 1e-5) << "element " << k;
      row += j->job.rows;
    }
    return *b;
  }

  testing::temp_dir dir_;
  testing::mlp_weights weights_;
  std::unique_ptr<replica> replica_;
  std::vector<std::unique_ptr<owned_job>> jobs_;
  std::vector<std::shared_ptr<batch>> batches_;
};

TEST_F(replica_staging, staging_and_output_blocks_are_allocated_once_and_reused) {
  // Warm-up built every bucket (1, 2, 4 rows) with its staging and one output block.
  const replica_memory before = replica_->memory();
  EXPECT_EQ(before.output_blocks, 3u);
  EXPECT_GT(before.staging_bytes, 0u);
  EXPECT_FALSE(before.pinned) << "CPU fallback: plain memory";
  std::map<int64_t, const std::byte*> block_of_bucket;
  for (uint32_t i = 0; i < 12; ++i) {
    batch& b = run({1 + static_cast<int64_t>(i % 4)}, 10 + i);  // buckets 1, 2, 4, 4
    ASSERT_NE(b.block, nullptr);
    const auto [it, fresh] = block_of_bucket.emplace(b.bucket_rows, b.block->data());
    if (!fresh) EXPECT_EQ(it->second, b.block->data()) << "the bucket's block is reused";
    b.block->release();  // the reply went out
    b.block = nullptr;
  }
  const replica_memory after = replica_->memory();
  EXPECT_EQ(after.staging_bytes, before.staging_bytes) << "no staging allocated per request";
  EXPECT_EQ(after.output_blocks, before.output_blocks) << "no output block allocated per request";
}

TEST_F(replica_staging, a_block_a_reply_still_reads_is_never_overwritten) {
  batch& first = run({2, 1}, 1);  // 3 rows: bucket 4
  ASSERT_NE(first.block, nullptr);
  output_block* held = first.block;  // a reply still in flight holds it
  std::vector<std::byte> snapshot(held->data(), held->data() + held->capacity_bytes());
  const size_t blocks = replica_->memory().output_blocks;

  batch& second = run({4}, 50);  // bucket 4 again, different inputs
  ASSERT_NE(second.block, nullptr);
  EXPECT_NE(second.block, held) << "the held block is busy: another one is used";
  EXPECT_EQ(replica_->memory().output_blocks, blocks + 1) << "the pool grew by one";
  EXPECT_EQ(std::memcmp(snapshot.data(), held->data(), snapshot.size()), 0)
      << "the first batch's outputs are intact";

  held->release();
  first.block = nullptr;
  second.block->release();
  second.block = nullptr;
  batch& third = run({3}, 70);
  EXPECT_EQ(replica_->memory().output_blocks, blocks + 1) << "idle blocks are reused, no growth";
  third.block->release();
  third.block = nullptr;
}

/// Every batch staged by several threads (the path large GPU batches take), whatever its size.
class replica_parallel_staging : public replica_staging {
 protected:
  void configure(replica::options& o) override {
    o.staging_threads = 3;
    o.parallel_staging_bytes = 1;
  }
};

TEST_F(replica_parallel_staging, every_job_lands_in_its_own_rows) {
  // Jobs of 1 to 4 rows in every mix: each job's outputs are checked against its own inputs.
  for (uint32_t i = 0; i < 8; ++i) {
    for (const auto& rows :
         std::vector<std::vector<int64_t>>{{1, 1, 1, 1}, {2, 1, 1}, {1, 3}, {4}, {1, 2}, {3}}) {
      batch& b = run(rows, 100 + 10 * i);
      ASSERT_NE(b.block, nullptr);
      b.block->release();
      b.block = nullptr;
    }
  }
}

/// A replica with external staging (a worker process's): its buckets' layouts, and runs on inputs
/// staged by someone else (the gather both kinds of replica use) that match the in-process run.
TEST(replica_external_staging, runs_on_staged_inputs_as_the_in_process_replica_does) {
  testing::temp_dir dir;
  const auto weights = testing::make_mlp_weights(4, 3, 7);
  dir.write("m.onnx", testing::mlp_model_bytes(weights));
  replica::options o;
  o.model_name = "mlp";
  o.model_path = (dir.path() / "m.onnx").string();
  o.config.max_batch_size = 4;
  o.warmup_runs = 1;
  o.external_staging = true;
  auto r = replica::create(o);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  const replica_memory mem = (*r)->memory();
  EXPECT_EQ(mem.staging_bytes, 0u) << "no staging of its own";
  EXPECT_EQ(mem.output_blocks, 0u) << "no output blocks of its own";
  const std::vector<bucket_layout> layouts = (*r)->layouts();
  ASSERT_EQ(layouts.size(), 3u);  // 1, 2, 4 rows
  EXPECT_EQ(layouts[0].rows, 1);
  EXPECT_EQ(layouts[2].rows, 4);
  const bucket_layout& l = layouts[1];
  ASSERT_EQ(l.inputs.size(), 1u);
  EXPECT_EQ(l.inputs[0].shape, (shape_t{2, 4}));
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_EQ(l.outputs[0].shape, (shape_t{2, 3}));
  EXPECT_EQ(l.output_row_bytes[0], 3 * sizeof(float));
  EXPECT_GE(l.block_bytes, l.output_offsets[0] + l.outputs[0].bytes());

  // Two jobs of one row each, gathered into bucket 2's staging as the proxy does.
  owned_job a("mlp", {{1, 4}}, caf::actor(), time_point{}, 3);
  owned_job b("mlp", {{1, 4}}, caf::actor(), time_point{}, 4);
  std::vector<infer_job*> jobs{&a.job, &b.job};
  std::vector<std::byte> staging(l.inputs[0].bytes()), block(l.block_bytes);
  batch_gather gather(1);
  std::byte* dst = staging.data();
  const size_t capacity = staging.size();
  ASSERT_TRUE(gather.gather(jobs, {&dst, 1}, {&capacity, 1}).is_ok());
  ASSERT_TRUE((*r)->run_staged(2, {&dst, 1}, block.data()).is_ok());
  const auto* y = reinterpret_cast<const float*>(block.data() + l.output_offsets[0]);
  for (const owned_job* j : {&a, &b}) {
    const auto ref = testing::mlp_reference(weights, j->data[0].data(), 1);
    for (size_t k = 0; k < ref.size(); ++k) EXPECT_NEAR(y[k], ref[k], 1e-5) << "element " << k;
    y += 3;
  }
  EXPECT_EQ((*r)->run_staged(3, {&dst, 1}, block.data()).code(), error_code::invalid_argument)
      << "no bucket of 3 rows";
  // A batch larger than the staging is refused before anything is copied.
  const size_t small = l.inputs[0].bytes() / 2;
  EXPECT_EQ(gather.gather(jobs, {&dst, 1}, {&small, 1}).code(), error_code::internal);
  // The in-process path is not open to it.
  batch whole;
  whole.jobs = jobs;
  whole.rows = 2;
  EXPECT_FALSE((*r)->run(whole).is_ok());
}

TEST(worker_memory, workers_report_device_pool_and_staging_bytes) {
  serving_metrics metrics;
  metrics.set_worker_memory(3, "cuda:1", 1000, 24);
  const std::map<std::string, std::string> labels{{"worker", "3"}, {"device", "cuda:1"}};
  EXPECT_EQ(testing::metric_sample(metrics, "troupe_pool_bytes", labels), 1000);
  EXPECT_EQ(testing::metric_sample(metrics, "troupe_staging_bytes", labels), 24);
}

class placement_test : public testing::actor_fixture {
 protected:
  void SetUp() override {
    const auto w = testing::make_mlp_weights(4, 3, 1);
    for (const char* name : {"anywhere", "cpuonly", "gpuonly"})
      repo_.write(std::string(name) + "/1/model.onnx", testing::mlp_model_bytes(w));
    repo_.write("cpuonly/config.yaml", "device: cpu\n");
    repo_.write("gpuonly/config.yaml", "instance_group: [{count: 1, kind: KIND_GPU}]\n");
  }

  load_report load(std::vector<int> gpus, uint32_t cpu_workers) {
    node_spawn_options o;
    o.config.cpu_workers = cpu_workers;
    o.config.warmup_runs = 1;
    o.gpus = std::move(gpus);
    o.detached_workers = false;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    o.holder = &holder_;
    node_ = spawn_node(sys_, o);
    run();
    return load_repository_on(node_.manager, repo_.path().string());
  }

  void TearDown() override {
    stop_node(sys_, node_);
    run();
  }

  static std::string joined(const load_report& r) {
    std::string all;
    for (const auto& f : r.failures) all += f + "\n";
    return all;
  }

  testing::temp_dir repo_;
  table_holder holder_;
  node_handles node_;
};

TEST_F(placement_test, models_pinned_to_a_missing_device_kind_fail_by_name) {
  const load_report r = load({}, 1);
  EXPECT_EQ(r.versions_ready, 2u) << joined(r);  // anywhere and cpuonly on the CPU worker
  ASSERT_EQ(r.failures.size(), 1u) << joined(r);
  EXPECT_NE(r.failures[0].find("gpuonly"), std::string::npos) << joined(r);
  EXPECT_NE(r.failures[0].find("device gpu"), std::string::npos) << joined(r);
  EXPECT_EQ(holder_.get()->find("gpuonly")->versions[0].current_state(), version_state::failed);
}

TEST_F(placement_test, a_gpu_worker_without_a_usable_gpu_fails_its_loads_typed) {
  auto visible = resolve_gpus(std::nullopt);
  ASSERT_TRUE(visible.has_value());
  if (!visible->empty()) GTEST_SKIP() << "a GPU is present: tests/gpu/test_gpu_worker covers it";
  // A node told to use GPU 0 where there is none (resolve_gpus would have refused; spawn_node
  // takes the list as given): `any` and `gpu` models go to the GPU worker and fail with a typed
  // error; the CPU-pinned model serves.
  const load_report r = load({0}, 1);
  EXPECT_EQ(r.versions_ready, 1u) << joined(r);
  ASSERT_EQ(r.failures.size(), 2u) << joined(r);
  for (const auto& f : r.failures) EXPECT_NE(f.find("cuda:0"), std::string::npos) << f;
  EXPECT_EQ(holder_.get()->find("cpuonly")->versions[0].current_state(), version_state::ready);
}

}  // namespace
}  // namespace troupe::actors
