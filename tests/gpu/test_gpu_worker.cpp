// The serving core's GPU path on a real device, checked against the CPU backend: pinned staging,
// a replica on the CUDA backend (fp32 within 1e-4 and fp16 within 1e-2 relative L2 of the CPU
// replica, batch after batch through the same reused staging), and a whole node whose model runs
// on a gpu_worker, including a device error: the supervisor replaces the gpu_worker (fresh
// contexts on the same GPU), the replica is reloaded and the model serves again. Replicas of one
// model on one GPU share the weights (the second made from the first's session).

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "actors/gpu_worker.hpp"
#include "actors/node.hpp"
#include "kernels/cuda/host_staging.hpp"
#include "runtime/host_staging.hpp"
#include "serving/model_table.hpp"
#include "serving/replica.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/gpu/gpu_test_util.hpp"

namespace troupe::actors {

using serving::batch;
using serving::output_slice;
using serving::replica;
using serving::replica_memory;
using serving::table_holder;
using serving::time_point;
using serving::version_state;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

double relative_l2(const float* got, const float* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(gpu_staging, cuda_host_buffers_are_pinned) {
  TROUPE_REQUIRE_GPU();
  auto b = runtime::host_buffer::allocate(kernels::backend::cuda, 0, 1 << 20);
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_TRUE(b->pinned());
  EXPECT_TRUE(kernels::cuda::is_pinned_host(b->data()));
  std::memset(b->data(), 1, b->bytes());
  auto plain = runtime::host_buffer::allocate(kernels::backend::cpu, 0, 1 << 20);
  ASSERT_TRUE(plain.has_value());
  EXPECT_FALSE(kernels::cuda::is_pinned_host(plain->data()));
  EXPECT_FALSE(kernels::cuda::is_pinned_host(nullptr));
}

/// The same MLP file served by a CPU replica and a CUDA replica.
class gpu_replica : public ::testing::Test {
 protected:
  void SetUp() override {
    TROUPE_REQUIRE_GPU();
    weights_ = testing::make_mlp_weights(64, 48, 21);
    dir_.write("m.onnx", testing::mlp_model_bytes(weights_));
  }

  std::unique_ptr<replica> make(kernels::backend where, runtime::precision p,
                                const replica* weights_from = nullptr) {
    replica::options o;
    o.model_name = "mlp";
    o.model_path = (dir_.path() / "m.onnx").string();
    o.config.max_batch_size = 8;
    o.warmup_runs = 1;
    o.where = where;
    o.compute_precision = p;
    o.weights_from = weights_from;
    auto r = replica::create(o);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? std::move(*r) : nullptr;
  }

  /// Runs the same jobs on both replicas; returns the relative L2 of the GPU rows against the CPU.
  double compare(replica& gpu, replica& cpu, std::vector<int64_t> rows, uint32_t seed) {
    std::vector<std::unique_ptr<owned_job>> jobs;
    batch on_gpu, on_cpu;
    for (size_t i = 0; i < rows.size(); ++i) {
      jobs.push_back(std::make_unique<owned_job>("mlp", std::vector<shape_t>{{rows[i], 64}},
                                                 caf::actor(), time_point{},
                                                 seed + static_cast<uint32_t>(i)));
      for (batch* b : {&on_gpu, &on_cpu}) {
        b->jobs.push_back(&jobs.back()->job);
        b->rows += rows[i];
      }
    }
    const status gs = gpu.run(on_gpu);
    const status cs = cpu.run(on_cpu);
    EXPECT_TRUE(gs.is_ok()) << gs.to_string();
    EXPECT_TRUE(cs.is_ok()) << cs.to_string();
    if (!gs.is_ok() || !cs.is_ok()) return 1e9;
    const size_t n = static_cast<size_t>(on_cpu.rows) * 48;
    const double err = relative_l2(
        reinterpret_cast<const float*>(on_gpu.block->data() + on_gpu.outputs[0].offset),
        reinterpret_cast<const float*>(on_cpu.block->data() + on_cpu.outputs[0].offset), n);
    EXPECT_TRUE(on_gpu.block->pinned()) << "the GPU writes its outputs into pinned memory";
    return err;
  }

  testing::temp_dir dir_;
  testing::mlp_weights weights_;
};

TEST_F(gpu_replica, fp32_and_fp16_match_the_cpu_backend_batch_after_batch) {
  auto cpu = make(kernels::backend::cpu, runtime::precision::fp32);
  auto fp32 = make(kernels::backend::cuda, runtime::precision::fp32);
  auto fp16 = make(kernels::backend::cuda, runtime::precision::fp16);
  ASSERT_TRUE(cpu && fp32 && fp16);
  const replica_memory before = fp16->memory();
  EXPECT_TRUE(before.pinned) << "staging and output blocks are page-locked";
  EXPECT_GT(before.device_pool_bytes, 0u) << "weights and arenas live in the context's pool";
  // Different inputs and bucket sizes through the same staging: stale or racing staging shows.
  const std::vector<std::vector<int64_t>> batches = {{1}, {3, 2}, {8}, {2}, {4, 1, 2}};
  for (size_t i = 0; i < batches.size(); ++i) {
    EXPECT_LE(compare(*fp32, *cpu, batches[i], 100 * static_cast<uint32_t>(i)), 1e-4)
        << "batch " << i;
    EXPECT_LE(compare(*fp16, *cpu, batches[i], 100 * static_cast<uint32_t>(i)), 1e-2)
        << "batch " << i;
  }
  const replica_memory after = fp16->memory();
  EXPECT_EQ(after.staging_bytes, before.staging_bytes) << "staging allocated once per bucket";
  EXPECT_EQ(after.output_blocks, before.output_blocks) << "output blocks reused";
}

TEST_F(gpu_replica, a_second_replica_shares_the_weights_on_the_device) {
  auto cpu = make(kernels::backend::cpu, runtime::precision::fp32);
  auto first = make(kernels::backend::cuda, runtime::precision::fp16);
  ASSERT_TRUE(cpu && first);
  auto second = make(kernels::backend::cuda, runtime::precision::fp16, first.get());
  auto separate = make(kernels::backend::cuda, runtime::precision::fp16);
  ASSERT_TRUE(second && separate);
  EXPECT_TRUE(second->shares_weights_with(*first)) << "one constant store on the device";
  EXPECT_FALSE(separate->shares_weights_with(*first)) << "loaded on its own: its own copy";
  const replica_memory a = first->memory(), b = second->memory();
  EXPECT_GT(a.shared_weights_bytes, 0u);
  EXPECT_EQ(b.shared_weights_bytes, a.shared_weights_bytes) << "the same pool, seen from both";
  EXPECT_TRUE(b.pinned);
  // Both replicas, interleaved as a worker runs them, against the CPU.
  const std::vector<std::vector<int64_t>> batches = {{2}, {8}, {3, 1}};
  for (size_t i = 0; i < batches.size(); ++i) {
    EXPECT_LE(compare(*first, *cpu, batches[i], 7 * static_cast<uint32_t>(i)), 1e-2) << i;
    EXPECT_LE(compare(*second, *cpu, batches[i], 7 * static_cast<uint32_t>(i)), 1e-2) << i;
  }
  first.reset();  // the weights live on while a replica uses them
  EXPECT_LE(compare(*second, *cpu, {4, 4}, 99), 1e-2);
}

/// A gpu_worker asked for a second replica of a model it holds makes it from the first replica's
/// session: the model file, broken between the loads, is not read again.
class gpu_worker_sharing : public testing::actor_fixture {
 protected:
  void SetUp() override {
    TROUPE_REQUIRE_GPU();
    dir_.write("m.onnx", testing::mlp_model_bytes(testing::make_mlp_weights(16, 8, 9)));
    worker_options o;
    o.kind = worker_kind::gpu;
    o.device_index = 0;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    worker_ = spawn_worker(sys_, o, /*detached=*/false);
  }
  void TearDown() override {
    if (worker_) caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
    run();
  }
  status load(int64_t version) {
    replica_spec spec;
    spec.model = "mlp";
    spec.version = version;
    spec.path = (dir_.path() / "m.onnx").string();
    spec.config.max_batch_size = 4;
    spec.warmup_runs = 1;
    auto loaded = load_replica(worker_, spec);
    return loaded ? status::ok() : loaded.error();
  }
  testing::temp_dir dir_;
  worker_actor worker_;
};

TEST_F(gpu_worker_sharing, a_second_replica_of_a_loaded_model_does_not_read_the_file_again) {
  const status first = load(1);
  ASSERT_TRUE(first.is_ok()) << first.to_string();
  dir_.write("m.onnx", "not an onnx model");
  const status second = load(1);
  EXPECT_TRUE(second.is_ok()) << "made from the first replica's session: " << second.to_string();
  EXPECT_EQ(load(2).code(), error_code::invalid_model) << "no sibling: it reads the broken file";
}

class gpu_node : public testing::actor_fixture {
 protected:
  void SetUp() override {
    TROUPE_REQUIRE_GPU();
    w_ = testing::make_mlp_weights(16, 8, 3);
    repo_.write("exact/1/model.onnx", testing::mlp_model_bytes(w_));
    repo_.write("exact/config.yaml", "max_batch_size: 4\nprecision: fp32\n");
    repo_.write("half/1/model.onnx", testing::mlp_model_bytes(w_));
    repo_.write("half/config.yaml", "max_batch_size: 4\n");  // GPU default: fp16
    node_spawn_options o;
    o.config.cpu_workers = 1;
    o.config.warmup_runs = 1;
    o.config.fault_injection = true;
    o.gpus = {0};
    o.detached_workers = false;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    o.holder = &holder_;
    node_ = spawn_node(sys_, o);
    probe_ = testing::spawn_probe(sys_, log_);
    run();
    report_ = load_repository_on(node_.manager, repo_.path().string());
  }

  void TearDown() override {
    if (node_.manager) {
      stop_node(sys_, node_);
      run();
    }
  }

  /// Submits one job of `rows` rows to `model`, lets the queue delay pass and returns it answered.
  std::unique_ptr<owned_job> infer(const std::string& model, int64_t rows, uint32_t seed,
                                   const char* fault = nullptr) {
    auto j =
        std::make_unique<owned_job>(model, std::vector<shape_t>{{rows, 16}}, probe_, now(), seed);
    if (fault) j->job.parameters.emplace_back("troupe.fault", fault);
    caf::anon_send(node_.router, submit_atom::value, testing::list_of({&j->job}));
    run();
    advance(1ms);
    EXPECT_EQ(log_->replies_of(&j->job), 1u);
    return j;
  }

  /// The job's output against relu(x W + b) in double.
  double error_of(owned_job& j) {
    EXPECT_TRUE(j.job.result.is_ok()) << j.job.result.to_string();
    if (!j.job.result.is_ok() || j.job.outputs.size() != 1) return 1e9;
    const output_slice& y = j.job.outputs[0];
    const auto ref = testing::mlp_reference(w_, j.data[0].data(), j.job.rows);
    std::vector<float> want(ref.begin(), ref.end());
    const double err = relative_l2(reinterpret_cast<const float*>(y.block->data() + y.offset),
                                   want.data(), want.size());
    y.block->release();
    j.job.outputs.clear();
    return err;
  }

  std::vector<worker_actor> current_workers() {
    caf::scoped_actor self{sys_};
    std::vector<worker_actor> workers;
    auto h = self->request(node_.supervisor, caf::infinite, workers_atom::value);
    run();
    h.receive([&](std::vector<worker_actor>& w) { workers = w; }, [&](caf::error&) {});
    return workers;
  }

  testing::temp_dir repo_;
  testing::mlp_weights w_;
  table_holder holder_;
  node_handles node_;
  load_report report_;
  caf::actor probe_;
  std::shared_ptr<testing::probe_log> log_ = std::make_shared<testing::probe_log>();
};

TEST_F(gpu_node, models_run_on_the_gpu_worker_at_their_precision) {
  ASSERT_EQ(report_.versions_ready, 2u);
  ASSERT_TRUE(report_.failures.empty()) << report_.failures[0];
  auto exact = infer("exact", 3, 1);
  EXPECT_LE(error_of(*exact), 1e-4);
  auto half = infer("half", 4, 2);
  EXPECT_LE(error_of(*half), 1e-2);
}

TEST_F(gpu_node, a_device_error_replaces_the_gpu_worker_and_its_request_is_retried_there) {
  ASSERT_EQ(report_.versions_ready, 2u);
  const std::vector<worker_actor> before = current_workers();
  ASSERT_EQ(before.size(), 2u);  // gpu_worker 0, cpu_worker 1
  auto j = std::make_unique<owned_job>("exact", std::vector<shape_t>{{1, 16}}, probe_, now(), 5);
  j->job.parameters.emplace_back("troupe.fault", "device_once");  // its retry runs clean
  caf::anon_send(node_.router, submit_atom::value, testing::list_of({&j->job}));
  run();
  // The only replica's worker failed: the request waits for the replacement (never lost).
  EXPECT_EQ(log_->replies_of(&j->job), 0u);
  EXPECT_EQ(holder_.get()->find("exact")->find(1)->current_state(), version_state::unavailable);
  EXPECT_FALSE(current_workers()[0]) << "down for its restart backoff";
  advance(100ms);  // the supervisor replaces it, model_manager reloads, the batcher retries
  ASSERT_EQ(log_->replies_of(&j->job), 1u);
  EXPECT_EQ(j->job.attempts, 2);
  EXPECT_LE(error_of(*j), 1e-4);
  const std::vector<worker_actor> after = current_workers();
  ASSERT_EQ(after.size(), 2u);
  EXPECT_TRUE(after[0]);
  EXPECT_NE(after[0], before[0]) << "a fresh gpu_worker";
  EXPECT_EQ(after[1], before[1]) << "the cpu_worker was not touched";
  EXPECT_EQ(holder_.get()->find("exact")->find(1)->current_state(), version_state::ready);
  auto again = infer("exact", 2, 6);
  EXPECT_LE(error_of(*again), 1e-4);
  node_.workers = after;
}

}  // namespace
}  // namespace troupe::actors
