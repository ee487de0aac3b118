// A replica of a model with a dynamic non-batch dim (the serving path of the compiled-shape
// cache): more distinct shapes than the cache holds all run, the replica's buckets follow the
// session's bounded cache, evictions reach troupe_shape_cache_evictions_total, and an output
// block a reply still reads outlives the eviction of its bucket.

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "serving/metrics.hpp"
#include "serving/replica.hpp"
#include "tests/serving/metrics_test_util.hpp"
#include "tests/serving/serving_test_util.hpp"

namespace troupe::serving {
namespace {

using testing::job_with_inputs;

/// y = relu(x + x) on x[N, W]: N the batch, W a dynamic width (a plan per width).
std::string wide_model_bytes() {
  auto m = testing::make_model(13);
  *m.mutable_graph()->add_input() = testing::make_value_info("x", 1, {"N", "W"});
  *m.mutable_graph()->add_output() = testing::make_value_info("y", 1, {"N", "W"});
  testing::add_node(m, "Add", {"x", "x"}, {"s"});
  testing::add_node(m, "Relu", {"s"}, {"y"});
  return testing::serialize(m);
}

double evictions_counted(const serving_metrics& metrics) {
  return testing::metric_sample(metrics, "troupe_shape_cache_evictions_total",
                                {{"model", "wide"}, {"version", "1"}});
}

class replica_shape_cache : public ::testing::Test {
 protected:
  void start(runtime::shape_cache_limits limits) {
    dir_.write("m.onnx", wide_model_bytes());
    replica::options o;
    o.model_name = "wide";
    o.version = 1;
    o.model_path = (dir_.path() / "m.onnx").string();
    o.config.max_batch_size = 4;
    o.config.shape_cache = limits;
    o.warmup_runs = 1;
    o.metrics = &metrics_;
    auto r = replica::create(o);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    replica_ = std::move(*r);
    // What the model manager does at load: the version's series exist (at 0) from then on.
    version_ = metrics_.for_version("wide", 1);
  }

  /// Runs one batch of jobs of `rows` rows each and width `width`; checks every output. The
  /// batch's output block stays referenced (a reply in flight) until release().
  batch& run(std::vector<int64_t> rows, int64_t width, uint32_t seed) {
    auto b = std::make_shared<batch>();
    std::vector<std::unique_ptr<job_with_inputs>> jobs;
    for (size_t i = 0; i < rows.size(); ++i) {
      jobs.push_back(
          std::make_unique<job_with_inputs>("wide", std::vector<shape_t>{{rows[i], width}}, nullptr,
                                            time_point{}, seed + static_cast<uint32_t>(i)));
      b->jobs.push_back(&jobs.back()->job);
      b->rows += rows[i];
    }
    batches_.push_back(b);
    const status s = replica_->run(*b);
    EXPECT_TRUE(s.is_ok()) << "width " << width << ": " << s.to_string();
    if (!s.is_ok()) return *b;
    EXPECT_EQ(b->outputs[0].info.shape[1], width);
    int64_t row = 0;
    for (auto& j : jobs) {
      const auto* got = reinterpret_cast<const float*>(b->block->data() + b->outputs[0].offset +
                                                       row * b->outputs[0].row_bytes);
      const std::vector<float>& x = j->data[0];
      for (size_t k = 0; k < x.size(); ++k)
        EXPECT_EQ(got[k], std::max(0.0f, x[k] + x[k])) << "width " << width << " element " << k;
      row += j->job.rows;
    }
    return *b;
  }

  static void release(batch& b) {
    if (b.block) b.block->release();
    b.block = nullptr;
  }

  testing::temp_dir dir_;
  serving_metrics metrics_;
  std::shared_ptr<version_metrics> version_;
  std::unique_ptr<replica> replica_;
  std::vector<std::shared_ptr<batch>> batches_;
};

TEST_F(replica_shape_cache, more_widths_than_max_plans_all_run_within_the_bound) {
  start({/*max_plans=*/3, /*max_bytes=*/size_t{1} << 30});
  EXPECT_EQ(replica_->shape_cache().plans, 0u) << "dynamic widths: nothing compiled at load";
  EXPECT_EQ(evictions_counted(metrics_), 0);
  for (int round = 0; round < 2; ++round) {
    for (int64_t width = 1; width <= 8; ++width) {
      batch& b = run({1, 2}, width, static_cast<uint32_t>(100 * round + width));  // bucket 4
      release(b);
      const runtime::shape_cache_stats c = replica_->shape_cache();
      EXPECT_LE(c.plans, 3u) << "round " << round << " width " << width;
      // Buckets follow the cache: no staging or output blocks kept for evicted plans.
      const replica_memory m = replica_->memory();
      EXPECT_EQ(m.output_blocks, c.plans);
      EXPECT_EQ(evictions_counted(metrics_), static_cast<double>(c.evictions));
    }
  }
  // 16 batches of 8 widths, 3 plans at a time: every compile after the third evicted one.
  EXPECT_EQ(replica_->shape_cache().evictions, 13u);
  EXPECT_EQ(evictions_counted(metrics_), 13);
}

TEST_F(replica_shape_cache, a_recently_used_width_stays_cached) {
  start({/*max_plans=*/2, /*max_bytes=*/size_t{1} << 30});
  for (int64_t width : {5, 6, 5, 7, 5, 8, 5}) release(run({1}, width, 1));
  // Width 5 ran between every new width: never the least recently used, never evicted.
  EXPECT_EQ(replica_->shape_cache().evictions, 2u);  // 6 by 7, 7 by 8
}

TEST_F(replica_shape_cache, bytes_bound_holds) {
  // Plans of width 4096 (rows bucket 1) are about the same size; room for two of them.
  start({/*max_plans=*/100, /*max_bytes=*/size_t{1} << 30});
  release(run({1}, 4096, 1));
  const size_t one_plan = replica_->shape_cache().bytes;
  ASSERT_GT(one_plan, 0u);
  start({/*max_plans=*/100, /*max_bytes=*/2 * one_plan + one_plan / 2});
  for (int64_t width = 4090; width <= 4096; ++width) {
    release(run({1}, width, static_cast<uint32_t>(width)));
    EXPECT_LE(replica_->shape_cache().bytes, 2 * one_plan + one_plan / 2) << "width " << width;
    EXPECT_LE(replica_->shape_cache().plans, 2u);
  }
  EXPECT_EQ(replica_->shape_cache().evictions, 5u);
  EXPECT_EQ(evictions_counted(metrics_), 5);
}

TEST_F(replica_shape_cache, a_block_a_reply_still_reads_outlives_its_evicted_bucket) {
  start({/*max_plans=*/1, /*max_bytes=*/size_t{1} << 30});
  batch& first = run({2}, 3, 7);
  output_block* held = first.block;  // the reply is still being sent
  std::vector<std::byte> snapshot(held->data(), held->data() + held->capacity_bytes());
  release(run({2}, 9, 8));  // evicts width 3's plan and drops its bucket
  EXPECT_EQ(replica_->shape_cache().evictions, 1u);
  EXPECT_EQ(replica_->memory().output_blocks, 1u) << "the evicted bucket is gone";
  EXPECT_EQ(std::memcmp(snapshot.data(), held->data(), snapshot.size()), 0)
      << "the reply's bytes are intact";
  release(first);           // the last reference: the block goes now
  release(run({2}, 3, 9));  // width 3 again: compiled anew
  EXPECT_EQ(replica_->shape_cache().evictions, 2u);
}

}  // namespace
}  // namespace troupe::serving
