// Replicas of one model on one device share the weights: a second replica is made from the
// first's session (session::create_instance) instead of loading the model file again. Checked on
// the CPU backend here (tests/gpu/test_gpu_worker.cpp does the same on a GPU): the second replica
// reads the same constant bytes, computes the same outputs through its own staging and plans, and
// a worker asked for a second replica of a model it holds does not read the file again.

#include <gtest/gtest.h>

#include <cstring>

#include "actors/worker.hpp"
#include "actors/worker_core.hpp"
#include "serving/replica.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::actors {

using serving::batch;
using serving::replica;
using serving::replica_memory;
using serving::time_point;

namespace {

using testing::owned_job;

class replica_sharing : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = testing::make_mlp_weights(6, 5, 17);
    dir_.write("m.onnx", testing::mlp_model_bytes(weights_));
  }

  replica::options options() const {
    replica::options o;
    o.model_name = "mlp";
    o.version = 1;
    o.model_path = (dir_.path() / "m.onnx").string();
    o.config.max_batch_size = 4;
    o.warmup_runs = 1;
    return o;
  }

  std::unique_ptr<replica> make(const replica::options& o) {
    auto r = replica::create(o);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? std::move(*r) : nullptr;
  }

  /// Runs jobs of these row counts on `r`; returns the output rows (copied) after checking them
  /// against the reference.
  std::vector<float> run(replica& r, std::vector<int64_t> rows, uint32_t seed) {
    std::vector<std::unique_ptr<owned_job>> jobs;
    batch b;
    for (size_t i = 0; i < rows.size(); ++i) {
      jobs.push_back(std::make_unique<owned_job>("mlp", std::vector<shape_t>{{rows[i], 6}},
                                                 caf::actor(), time_point{},
                                                 seed + static_cast<uint32_t>(i)));
      b.jobs.push_back(&jobs.back()->job);
      b.rows += rows[i];
    }
    const status s = r.run(b);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    if (!s.is_ok()) return {};
    const auto* y = reinterpret_cast<const float*>(b.block->data() + b.outputs[0].offset);
    std::vector<float> out(y, y + b.rows * 5);
    int64_t row = 0;
    for (auto& j : jobs) {
      const auto ref = testing::mlp_reference(weights_, j->data[0].data(), j->job.rows);
      for (size_t k = 0; k < ref.size(); ++k)
        EXPECT_NEAR(out[static_cast<size_t>(row * 5) + k], ref[k], 1e-5) << "element " << k;
      row += j->job.rows;
    }
    b.block->release();  // the reply went out
    b.block = nullptr;
    return out;
  }

  testing::temp_dir dir_;
  testing::mlp_weights weights_;
};

TEST_F(replica_sharing, a_replica_made_from_another_shares_its_weights_and_computes_the_same) {
  auto first = make(options());
  ASSERT_TRUE(first);
  replica::options o = options();
  o.weights_from = first.get();
  auto second = make(o);
  ASSERT_TRUE(second);
  EXPECT_TRUE(second->shares_weights_with(*first));
  EXPECT_TRUE(first->shares_weights_with(*second));
  // A replica that loaded the file itself holds its own copy: the check can say no.
  auto separate = make(options());
  ASSERT_TRUE(separate);
  EXPECT_FALSE(separate->shares_weights_with(*first));

  EXPECT_EQ(second->bucket_rows(), first->bucket_rows());
  EXPECT_EQ(second->warmup_latency().size(), first->warmup_latency().size())
      << "every bucket compiled and warmed up on the second replica too";
  const replica_memory a = first->memory(), b = second->memory();
  EXPECT_EQ(a.staging_bytes, b.staging_bytes);
  EXPECT_EQ(a.output_blocks, b.output_blocks) << "staging and output blocks are per replica";
  // Same inputs through both (and interleaved, as a worker alternates): identical outputs.
  for (uint32_t i = 0; i < 4; ++i) {
    const std::vector<int64_t> rows = {1 + static_cast<int64_t>(i % 3), 1};
    const auto y1 = run(*first, rows, 40 + i);
    const auto y2 = run(*second, rows, 40 + i);
    ASSERT_EQ(y1.size(), y2.size());
    EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)), 0) << "batch " << i;
  }
  // The second replica outlives the first: the weights it shares stay alive.
  first.reset();
  run(*second, {4}, 90);
}

TEST_F(replica_sharing, weights_from_another_model_version_or_precision_is_refused) {
  auto first = make(options());
  ASSERT_TRUE(first);
  replica::options other_version = options();
  other_version.version = 2;
  EXPECT_FALSE(first->can_share_weights(other_version));
  other_version.weights_from = first.get();
  auto r = replica::create(other_version);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), error_code::internal);
  replica::options other_precision = options();
  other_precision.compute_precision = runtime::precision::fp16;
  EXPECT_FALSE(first->can_share_weights(other_precision));
  replica::options other_device = options();
  other_device.where = kernels::backend::cuda;
  EXPECT_FALSE(first->can_share_weights(other_device));
  replica::options normalized = options();
  runtime::input_normalization n;
  n.client_type = dtype::u8;
  n.mean = {1, 2, 3, 4, 5, 6};
  n.stddev = {1, 1, 1, 1, 1, 1};
  normalized.config.input_normalization = n;
  EXPECT_FALSE(first->can_share_weights(normalized)) << "the normalisation is in the graph";
  EXPECT_TRUE(first->can_share_weights(options()));
}

TEST_F(replica_sharing, weights_sibling_picks_a_live_replica_of_the_same_model) {
  replica_table replicas;
  EXPECT_EQ(weights_sibling(replicas, options()), nullptr) << "nothing loaded: load the file";
  replicas.emplace(0, make(options()));
  replicas.emplace(1, make(options()));
  ASSERT_TRUE(replicas[0] && replicas[1]);
  EXPECT_EQ(weights_sibling(replicas, options()).get(), replicas[0].get());
  replicas.erase(0);  // unloaded
  EXPECT_EQ(weights_sibling(replicas, options()).get(), replicas[1].get());
  replica::options other = options();
  other.version = 3;
  EXPECT_EQ(weights_sibling(replicas, other), nullptr);
}

/// Through the worker actor: the second load of a model it holds takes the first replica's
/// session. The model file is made unreadable between the loads, so a worker that loaded the
/// file again would fail.
class worker_sharing : public testing::actor_fixture {
 protected:
  void SetUp() override {
    weights_ = testing::make_mlp_weights(6, 5, 23);
    dir_.write("m.onnx", testing::mlp_model_bytes(weights_));
    worker_options o;
    o.kind = worker_kind::cpu;
    o.compute_threads = 1;
    o.background_model_reads = false;  // the test coordinator: reads on the worker
    worker_ = spawn_worker(sys_, o, /*detached=*/false);
  }

  void TearDown() override {
    caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
    run();
  }

  replica_spec spec(int64_t version) const {
    replica_spec s;
    s.model = "mlp";
    s.version = version;
    s.path = (dir_.path() / "m.onnx").string();
    s.config.max_batch_size = 2;
    s.warmup_runs = 1;
    return s;
  }

  expected<replica_info> load(const replica_spec& s) { return load_replica(worker_, s); }

  testing::temp_dir dir_;
  testing::mlp_weights weights_;
  worker_actor worker_;
};

TEST_F(worker_sharing, a_second_replica_of_a_loaded_model_does_not_read_the_file_again) {
  auto first = load(spec(1));
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  dir_.write("m.onnx", "not an onnx model");
  auto second = load(spec(1));
  ASSERT_TRUE(second.has_value()) << "made from the first replica's session: "
                                  << second.error().to_string();
  EXPECT_EQ(second->id, first->id + 1);
  EXPECT_EQ(second->bucket_rows, first->bucket_rows);
  // Another version has no sibling: it reads the (now broken) file and fails typed.
  auto other = load(spec(2));
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().code(), error_code::invalid_model) << other.error().to_string();

  // The second replica runs batches and gets them right.
  owned_job j("mlp", {{2, 6}}, caf::actor(), now(), 7);
  auto b = std::make_shared<batch>();
  b->jobs.push_back(&j.job);
  b->rows = 2;
  b->replica_id = second->id;
  ASSERT_TRUE(run_batch_on(worker_, b));
  testing::expect_mlp_batch(*b, weights_, j);
}

}  // namespace
}  // namespace troupe::actors
