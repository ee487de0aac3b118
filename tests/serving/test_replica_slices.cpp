// A batch bucket run as slices of the batch (model_config::batch_slice_rows, and automatically
// when a bucket's plan does not fit: replica::options::max_arena_bytes, the worker's memory
// budget): one plan compiled for the slice, run once per slice over the bucket's staging and
// output block. Checked on the CPU backend against the reference in double: every row right,
// batches that fill part of a bucket included; the sliced replica's own memory is smaller.

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "serving/replica.hpp"
#include "serving/weight_residency.hpp"
#include "tests/serving/serving_test_util.hpp"

namespace troupe::serving {
namespace {

using testing::job_with_inputs;
using slices = std::vector<std::pair<int64_t, int64_t>>;

class replica_slices : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = testing::make_mlp_weights(96, 80, 23);
    dir_.write("m.onnx", testing::mlp_model_bytes(weights_));
  }

  replica::options options(int64_t max_batch, std::vector<int64_t> buckets) const {
    replica::options o;
    o.model_name = "mlp";
    o.version = 1;
    o.model_path = (dir_.path() / "m.onnx").string();
    o.config.max_batch_size = max_batch;
    o.config.batch_buckets = std::move(buckets);
    o.warmup_runs = 1;
    return o;
  }

  std::unique_ptr<replica> make(const replica::options& o) {
    auto r = replica::create(o);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? std::move(*r) : nullptr;
  }

  /// One job of `rows` rows through `r`, checked row by row.
  void expect_batch(replica& r, int64_t rows, uint32_t seed) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    job_with_inputs j("mlp", {{rows, weights_.in}}, nullptr, time_point{}, seed);
    batch b;
    b.jobs.push_back(&j.job);
    b.rows = rows;
    ASSERT_TRUE(r.run(b).is_ok()) << b.result.to_string();
    testing::expect_mlp_batch(b, weights_, j);
  }

  testing::temp_dir dir_;
  testing::mlp_weights weights_;
};

TEST_F(replica_slices, batch_slice_rows_runs_large_buckets_as_slices) {
  replica::options o = options(16, {1, 2, 4, 8, 16});
  o.config.batch_slice_rows = 4;
  auto sliced = make(o);
  ASSERT_TRUE(sliced);
  EXPECT_EQ(sliced->bucket_slices(), (slices{{1, 1}, {2, 2}, {4, 4}, {8, 4}, {16, 4}}));
  for (int64_t rows : {1, 3, 4, 5, 8, 11, 16}) expect_batch(*sliced, rows, 100 + rows);

  auto whole = make(options(16, {1, 2, 4, 8, 16}));
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->bucket_slices(), (slices{{1, 1}, {2, 2}, {4, 4}, {8, 8}, {16, 16}}));
  EXPECT_LT(sliced->memory().own_device_bytes, whole->memory().own_device_bytes)
      << "no plan for 8 or 16 rows: their arenas are not there";
}

TEST_F(replica_slices, rows_that_are_not_a_multiple_round_the_bucket_up) {
  replica::options o = options(10, {10});
  o.config.batch_slice_rows = 4;
  auto r = make(o);
  ASSERT_TRUE(r);
  // 10 rows as slices of 4: a bucket of 12, its last two rows padding.
  EXPECT_EQ(r->bucket_slices(), (slices{{12, 4}}));
  EXPECT_EQ(r->bucket_rows(), (std::vector<int64_t>{12}));
  for (int64_t rows : {1, 9, 10}) expect_batch(*r, rows, 200 + rows);
}

TEST_F(replica_slices, a_plan_larger_than_its_arena_bound_is_sliced_until_it_fits) {
  // The bound: what a replica with a bucket of 4 rows holds of its own (its arena and no more),
  // short of a 32-row plan's arena.
  auto small = make(options(4, {4}));
  ASSERT_TRUE(small);
  replica::options o = options(32, {32});
  o.max_arena_bytes = small->memory().own_device_bytes;
  auto r = make(o);
  ASSERT_TRUE(r);
  const slices got = r->bucket_slices();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].first, 32);
  EXPECT_LE(got[0].second, 4) << "halved from 32 until the plan's arena fit";
  EXPECT_EQ(32 % got[0].second, 0);
  for (int64_t rows : {1, 17, 32}) expect_batch(*r, rows, 300 + rows);

  // With batch_slice_rows set, the bound is not worked around: the load fails, typed.
  o.config.batch_slice_rows = 32;
  auto refused = replica::create(o);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), error_code::out_of_memory) << refused.error().to_string();
}

TEST(weight_residency_room, arena_room_is_the_budget_less_fixed_bytes_and_weights) {
  weight_residency::options o;
  o.budget_bytes = 1000;
  weight_residency w(o);
  EXPECT_EQ(w.arena_room(300), 700u) << "nothing loaded yet";
  EXPECT_EQ(w.arena_room(1000), 1u) << "no room at all: at least 1, so every plan is refused";
  weight_residency unbounded(weight_residency::options{});
  EXPECT_EQ(unbounded.arena_room(300), 1u) << "a worker without a budget holds none";
}

}  // namespace
}  // namespace troupe::serving
