// The batching rules as plain functions of (simulated) time: Triton's knobs and the adaptive
// policy.

#include <gtest/gtest.h>

#include "serving/batch_scheduler.hpp"
#include "serving/model_config.hpp"

namespace troupe::serving {
namespace {

using namespace std::chrono_literals;

const time_point t0 = time_point{} + std::chrono::hours(1);

model_signature make_sig(int64_t max_batch, std::chrono::microseconds delay,
                         std::vector<int64_t> preferred = {}, uint32_t levels = 1,
                         uint32_t max_queue = 100) {
  model_signature s;
  s.model = "m";
  s.version = 1;
  s.max_batch_size = max_batch;
  s.inputs = {{"x", dtype::f32, {-1, 2}}};
  s.config.max_batch_size = max_batch;
  s.config.max_queue_delay = delay;
  s.config.preferred_batch_sizes = std::move(preferred);
  s.config.priority_levels = levels;
  s.config.queue.max_queue_size = max_queue;
  return s;
}

struct jobs {
  std::vector<std::unique_ptr<infer_job>> all;
  infer_job* make(time_point arrival, int64_t rows = 1, uint32_t level = 1, int64_t width = 2) {
    auto j = std::make_unique<infer_job>();
    j->arrival = arrival;
    j->rows = rows;
    j->level = level;
    input_view in;
    in.info = {dtype::f32, {rows, width}};
    j->inputs.push_back(in);
    all.push_back(std::move(j));
    return all.back().get();
  }
};

TEST(batch_scheduler, waits_for_the_queue_delay_then_sends_everything) {
  auto sig = make_sig(8, 100us);
  batch_scheduler s(sig, {1, 2, 4, 8});
  jobs js;
  ASSERT_TRUE(s.enqueue(js.make(t0), t0).is_ok());
  ASSERT_TRUE(s.enqueue(js.make(t0 + 30us), t0 + 30us).is_ok());
  auto d = s.decide(t0 + 50us, 1);
  EXPECT_FALSE(d.dispatch);
  EXPECT_EQ(d.wake_at, t0 + 100us);  // the oldest request's delay
  EXPECT_FALSE(s.decide(t0 + 99us, 1).dispatch);
  d = s.decide(t0 + 100us, 1);
  ASSERT_TRUE(d.dispatch);
  std::vector<infer_job*> out;
  s.take(d.max_rows, out);
  EXPECT_EQ(out.size(), 2u);
  EXPECT_EQ(s.queued_jobs(), 0u);
}

TEST(batch_scheduler, a_full_batch_leaves_at_once) {
  auto sig = make_sig(4, 1s);
  batch_scheduler s(sig, {1, 2, 4});
  jobs js;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s.enqueue(js.make(t0), t0).is_ok());
  auto d = s.decide(t0, 1);
  ASSERT_TRUE(d.dispatch);
  EXPECT_EQ(d.max_rows, 4);
  std::vector<infer_job*> out;
  s.take(d.max_rows, out);
  EXPECT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0], js.all[0].get());  // FIFO
  EXPECT_EQ(s.queued_jobs(), 1u);
  EXPECT_FALSE(s.decide(t0, 1).dispatch);  // one left, delay not over
}

TEST(batch_scheduler, rows_of_multi_row_requests_count_toward_the_batch) {
  auto sig = make_sig(8, 1s);
  batch_scheduler s(sig, {8});
  jobs js;
  ASSERT_TRUE(s.enqueue(js.make(t0, 3), t0).is_ok());
  ASSERT_TRUE(s.enqueue(js.make(t0, 4), t0).is_ok());
  EXPECT_FALSE(s.decide(t0, 1).dispatch);
  ASSERT_TRUE(s.enqueue(js.make(t0, 2), t0).is_ok());  // 9 rows queued
  auto d = s.decide(t0, 1);
  ASSERT_TRUE(d.dispatch);
  std::vector<infer_job*> out;
  s.take(d.max_rows, out);
  EXPECT_EQ(out.size(), 2u);  // 3 + 4 fit, 3 + 4 + 2 would not
  EXPECT_EQ(s.queued_rows(), 2);
}

TEST(batch_scheduler, preferred_batch_size_leaves_without_waiting) {
  auto sig = make_sig(8, 1s, {2, 4});
  batch_scheduler s(sig, {1, 2, 4, 8});
  jobs js;
  ASSERT_TRUE(s.enqueue(js.make(t0), t0).is_ok());
  EXPECT_FALSE(s.decide(t0, 1).dispatch);  // 1 < smallest preferred
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(s.enqueue(js.make(t0), t0).is_ok());
  auto d = s.decide(t0, 1);
  ASSERT_TRUE(d.dispatch);
  EXPECT_EQ(d.max_rows, 4);  // the largest preferred size reachable with 5 queued
  std::vector<infer_job*> out;
  s.take(d.max_rows, out);
  EXPECT_EQ(out.size(), 4u);
}

TEST(batch_scheduler, higher_priority_goes_first) {
  auto sig = make_sig(2, 0us, {}, 2);
  batch_scheduler s(sig, {1, 2});
  jobs js;
  infer_job* low_a = js.make(t0, 1, 2);
  infer_job* low_b = js.make(t0, 1, 2);
  infer_job* high = js.make(t0 + 5us, 1, 1);
  ASSERT_TRUE(s.enqueue(low_a, t0).is_ok());
  ASSERT_TRUE(s.enqueue(low_b, t0).is_ok());
  ASSERT_TRUE(s.enqueue(high, t0 + 5us).is_ok());
  auto d = s.decide(t0 + 5us, 1);
  ASSERT_TRUE(d.dispatch);
  std::vector<infer_job*> out;
  s.take(d.max_rows, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], high);
  EXPECT_EQ(out[1], low_a);
}

TEST(batch_scheduler, a_full_level_is_overloaded_and_others_still_queue) {
  auto sig = make_sig(4, 1s, {}, 2, 2);
  batch_scheduler s(sig, {1, 2, 4});
  jobs js;
  ASSERT_TRUE(s.enqueue(js.make(t0, 1, 2), t0).is_ok());
  ASSERT_TRUE(s.enqueue(js.make(t0, 1, 2), t0).is_ok());
  const status st = s.enqueue(js.make(t0, 1, 2), t0);
  EXPECT_EQ(st.code(), error_code::overloaded);
  EXPECT_TRUE(s.enqueue(js.make(t0, 1, 1), t0).is_ok());
  EXPECT_EQ(s.queued_jobs(), 3u);
}

TEST(batch_scheduler, expired_jobs_leave_the_queue) {
  auto sig = make_sig(4, 1s);
  batch_scheduler s(sig, {1, 2, 4});
  jobs js;
  infer_job* a = js.make(t0);
  infer_job* b = js.make(t0);
  a->deadline = t0 + 10us;
  ASSERT_TRUE(s.enqueue(a, t0).is_ok());
  ASSERT_TRUE(s.enqueue(b, t0).is_ok());
  EXPECT_EQ(s.earliest_deadline(), t0 + 10us);
  job_list expired;
  s.expire(t0 + 9us, expired);
  EXPECT_TRUE(expired.empty());
  s.expire(t0 + 10us, expired);
  ASSERT_EQ(expired.size, 1u);
  EXPECT_EQ(expired.head, a);
  EXPECT_EQ(s.queued_jobs(), 1u);
  EXPECT_EQ(s.earliest_deadline(), no_deadline);
}

TEST(batch_scheduler, a_batch_stops_at_a_different_shape) {
  auto sig = make_sig(8, 0us);
  batch_scheduler s(sig, {8});
  jobs js;
  ASSERT_TRUE(s.enqueue(js.make(t0, 1, 1, 2), t0).is_ok());
  ASSERT_TRUE(s.enqueue(js.make(t0, 1, 1, 3), t0).is_ok());
  ASSERT_TRUE(s.enqueue(js.make(t0, 1, 1, 2), t0).is_ok());
  std::vector<infer_job*> out;
  s.take(8, out);
  EXPECT_EQ(out.size(), 1u);  // order is kept: the second request has another width
}

TEST(batch_scheduler, without_batching_each_request_runs_alone) {
  auto sig = make_sig(0, 1s);
  batch_scheduler s(sig, {1});
  jobs js;
  ASSERT_TRUE(s.enqueue(js.make(t0), t0).is_ok());
  ASSERT_TRUE(s.enqueue(js.make(t0), t0).is_ok());
  auto d = s.decide(t0, 1);
  ASSERT_TRUE(d.dispatch);
  std::vector<infer_job*> out;
  s.take(d.max_rows, out);
  EXPECT_EQ(out.size(), 1u);
}

TEST(batch_scheduler, requeued_jobs_go_first) {
  auto sig = make_sig(1, 0us);
  batch_scheduler s(sig, {1});
  jobs js;
  infer_job* a = js.make(t0);
  infer_job* retry = js.make(t0);
  ASSERT_TRUE(s.enqueue(a, t0).is_ok());
  s.requeue_front(retry);
  std::vector<infer_job*> out;
  s.take(1, out);
  EXPECT_EQ(out.at(0), retry);
}

// ---- adaptive policy ---------------------------------------------------------------------------

adaptive_policy make_policy(double slo_ms) {
  adaptive_policy p(slo_ms * 1000, {1, 2, 4, 8, 16});
  // A model whose batch costs 100 us + 10 us per row: bigger batches are much cheaper per row.
  for (int64_t r : {1, 2, 4, 8, 16}) p.seed_latency(r, 100.0 + 10.0 * static_cast<double>(r));
  return p;
}

void arrive(adaptive_policy& p, time_point start, double rows_per_s,
            std::chrono::milliseconds span) {
  const auto step = std::chrono::nanoseconds(static_cast<int64_t>(1e9 / rows_per_s));
  for (time_point t = start; t < start + span; t += step) p.observe_arrival(t, 1);
}

TEST(adaptive_policy, no_load_means_no_batching) {
  auto p = make_policy(10);
  const auto c = p.choose(t0, 1);
  EXPECT_EQ(c.batch_rows, 1);
  EXPECT_EQ(c.max_wait.count(), 0);
}

TEST(adaptive_policy, batch_grows_with_the_arrival_rate) {
  auto low = make_policy(10);
  arrive(low, t0, 2000, std::chrono::milliseconds(1000));  // 2k rows/s: batch 1 (110 us) covers it
  auto high = make_policy(10);
  arrive(high, t0, 40000, std::chrono::milliseconds(1000));  // 40k rows/s: needs batches of 8+
  const time_point end = t0 + std::chrono::milliseconds(1000);
  EXPECT_NEAR(low.arrival_rows_per_s(end), 2000, 200);
  EXPECT_NEAR(high.arrival_rows_per_s(end), 40000, 4000);
  const auto cl = low.choose(end, 1);
  const auto ch = high.choose(end, 1);
  EXPECT_EQ(cl.batch_rows, 1);
  EXPECT_GE(ch.batch_rows, 8);
  // Batch 8 serves 8 / 180 us = 44k rows/s, short of 1.25 x 40k; 16 serves 62k rows/s.
  EXPECT_EQ(ch.batch_rows, 16);
  EXPECT_GT(ch.max_wait.count(), 0);
  EXPECT_LE(ch.max_wait.count(), 10000);
}

TEST(adaptive_policy, a_tight_slo_caps_the_batch) {
  auto p = make_policy(0.5);  // 500 us: batch 16 (260 us p99-ish, plus fill time) does not fit
  arrive(p, t0, 20000, std::chrono::milliseconds(1000));
  const auto c = p.choose(t0 + std::chrono::milliseconds(1000), 1);
  EXPECT_LT(c.batch_rows, 16);
  EXPECT_GE(c.batch_rows, 4);  // 20k rows/s needs at least 4 rows per 140 us
}

TEST(adaptive_policy, overload_picks_throughput) {
  auto p = make_policy(1);
  arrive(p, t0, 200000, std::chrono::milliseconds(200));  // beyond any batch size's capacity
  const auto c = p.choose(t0 + std::chrono::milliseconds(200), 1);
  EXPECT_EQ(c.batch_rows, 16);
  EXPECT_EQ(c.max_wait.count(), 0);
}

TEST(adaptive_policy, observed_latency_moves_the_estimate) {
  auto p = make_policy(10);
  const double before = p.latency_mean_us(8);
  for (int i = 0; i < 100; ++i) p.observe_latency(8, 1000);
  EXPECT_GT(p.latency_mean_us(8), before * 4);
  EXPECT_GT(p.latency_p99_us(8), p.latency_mean_us(8) * 0.99);
}

}  // namespace
}  // namespace troupe::serving
