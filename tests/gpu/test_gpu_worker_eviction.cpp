// A gpu_worker with a memory budget (worker_options::memory_budget_bytes, node.yaml
// worker_memory_budget_mb) on a real device: three models whose weights and arenas do not all
// fit are served round robin; every batch is right (fp32, against the reference in double), a batch on
// the same inputs gives the same bytes before its model's weights were evicted and after they
// were paged back, and the device memory the replicas hold stays within the budget. On the test
// coordinator, as the CPU version (tests/actors/test_weight_residency.cpp).
#include <gtest/gtest.h>

#include <prometheus/counter.h>

#include <cmath>
#include <cstring>

#include "actors/gpu_worker.hpp"
#include "actors/worker.hpp"
#include "serving/metrics.hpp"
#include "serving/replica.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/serving/metrics_test_util.hpp"

namespace troupe::actors {

using serving::batch;
using serving::replica;
using serving::replica_memory;
using serving::serving_metrics;
using serving::version_metrics;

namespace {

using testing::owned_job;

constexpr int64_t in_features = 1024, out_features = 768;  // 3 MiB of fp32 weights a model

class gpu_worker_budget : public testing::actor_fixture {
 protected:
  void SetUp() override {
    TROUPE_REQUIRE_GPU();
    for (int i = 0; i < 3; ++i) {
      weights_.push_back(
          testing::make_mlp_weights(in_features, out_features, 70 + static_cast<uint32_t>(i)));
      dir_.write(name(i) + ".onnx", testing::mlp_model_bytes(weights_.back()));
    }
  }
  void TearDown() override {
    if (worker_) caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
    run();
  }

  static std::string name(int i) { return "m" + std::to_string(i); }

  replica_spec spec(int i) const {
    replica_spec s;
    s.model = name(i);
    s.version = 1;
    s.path = (dir_.path() / (name(i) + ".onnx")).string();
    s.config.max_batch_size = 4;
    s.config.gpu_precision = "fp32";
    s.warmup_runs = 1;
    return s;
  }

  /// The budget: what each replica holds however it goes (kernel-owned memory), measured on
  /// replicas made here as the worker makes them, and room for two models' weights and arenas,
  /// not three.
  size_t budget_for_two() {
    EXPECT_TRUE(gpu_device_traits(0).thread_setup().is_ok());
    size_t fixed = 0, group = 0;
    for (int i = 0; i < 3; ++i) {
      replica::options o;
      o.model_name = name(i);
      o.model_path = spec(i).path;
      o.config = spec(i).config;
      o.warmup_runs = 1;
      o.where = kernels::backend::cuda;
      o.compute_precision = runtime::precision::fp32;
      o.evictable_weights = true;
      auto r = replica::create(o);
      EXPECT_TRUE(r) << r.error().to_string();
      if (!r) return 0;
      const replica_memory m = (*r)->memory();
      EXPECT_GT(m.arena_footprint_bytes, 0u) << "a budget's replicas keep their arenas evictable";
      fixed += m.own_device_bytes - m.arena_reserved_bytes;
      group = std::max(group, m.weights_footprint_bytes + m.arena_footprint_bytes);
    }
    // Slack for the worker's replicas holding a little more of their own than these (kernel
    // scratch): far less than a third model's weights and arenas.
    return fixed + 2 * group + (size_t{1} << 20);
  }

  void start(size_t budget) {
    worker_options o;
    o.kind = worker_kind::gpu;
    o.device_index = 0;
    o.background_model_reads = false;
    o.memory_budget_bytes = budget;
    o.metrics = &metrics_;
    worker_ = spawn_worker(sys_, o, /*detached=*/false);
  }

  expected<replica_info> load(int i) { return load_replica(worker_, spec(i)); }

  /// One batch of model `i` (inputs from `seed`); returns its output rows, checked against the
  /// reference.
  std::vector<float> run_batch(int i, uint32_t id, int64_t rows, uint32_t seed) {
    owned_job j(name(i), {{rows, in_features}}, caf::actor(), now(), seed);
    auto b = std::make_shared<batch>();
    b->jobs.push_back(&j.job);
    b->rows = rows;
    b->replica_id = id;
    const bool done = run_batch_on(worker_, b);
    EXPECT_TRUE(done);
    EXPECT_TRUE(b->result.is_ok()) << b->result.to_string();
    if (!done || !b->result.is_ok()) return {};
    const auto* y = reinterpret_cast<const float*>(b->block->data() + b->outputs[0].offset);
    std::vector<float> got(y, y + rows * out_features);
    b->block->release();  // the batcher's reference, as the batcher drops it
    b->block = nullptr;
    const auto want =
        testing::mlp_reference(weights_[static_cast<size_t>(i)], j.data[0].data(), rows);
    double num = 0, den = 0;
    for (size_t k = 0; k < want.size(); ++k) {
      num += (got[k] - want[k]) * (got[k] - want[k]);
      den += want[k] * want[k];
    }
    EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), 1e-5) << "model " << i;
    return got;
  }

  double total(prometheus::Counter* version_metrics::*which) {
    double sum = 0;
    for (int i = 0; i < 3; ++i) sum += (metrics_.for_version(name(i), 1).get()->*which)->Value();
    return sum;
  }

  testing::temp_dir dir_;
  std::vector<testing::mlp_weights> weights_;
  serving_metrics metrics_;
  worker_actor worker_;
};

TEST_F(gpu_worker_budget, three_models_round_robin_from_a_budget_that_holds_two) {
  const size_t budget = budget_for_two();
  ASSERT_GT(budget, 0u);
  start(budget);
  std::vector<uint32_t> ids;
  auto load_one = [&](int i) {
    auto info = load(i);
    ASSERT_TRUE(info) << info.error().to_string();
    ids.push_back(info->id);
  };
  load_one(0);
  load_one(1);
  // Model 0 on its weights as loaded, before any eviction.
  const auto first = run_batch(0, ids[0], 3, 1);
  load_one(2);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(total(&version_metrics::weight_evictions), 1) << "model 1, the least recently used";
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 3; ++i)
      (void)run_batch(i, ids[static_cast<size_t>(i)], 1 + (round + i) % 4,
                      static_cast<uint32_t>(10 * round + i));
  const double model0_page_ins = metrics_.for_version(name(0), 1)->weight_page_ins->Value();
  EXPECT_GE(model0_page_ins, 1) << "round robin over three with room for two evicts each";
  const auto again = run_batch(0, ids[0], 3, 1);
  ASSERT_EQ(first.size(), again.size());
  EXPECT_EQ(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)), 0)
      << "the same inputs after an eviction and a page-in give the same bytes";
  EXPECT_GE(total(&version_metrics::weight_page_ins), 9);
  // What the worker counts against its budget, as it publishes it, stayed within it.
  const double resident = testing::metric_sample(metrics_, "troupe_worker_resident_bytes");
  const double budget_published =
      testing::metric_sample(metrics_, "troupe_worker_memory_budget_bytes");
  EXPECT_EQ(budget_published, static_cast<double>(budget));
  EXPECT_GT(resident, 0);
  EXPECT_LE(resident, static_cast<double>(budget));
}

}  // namespace
}  // namespace troupe::actors
