// The scaler's measurements as plain functions: the p99 of a window from two histogram readings,
// the policy's signals from two batcher readings, and the worker nodes a demand needs.

#include "actors/scaler_signals.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace troupe::actors {

using serving::batch_service_time;
using serving::scaling_clock;
using serving::scaling_signals;

namespace {

using namespace std::chrono_literals;

latency_histogram histogram(std::vector<double> cumulative) {
  latency_histogram h;
  h.upper_bounds_s = {0.01, 0.025, 0.05, std::numeric_limits<double>::infinity()};
  h.cumulative = std::move(cumulative);
  return h;
}

TEST(scaler_signals, p99_of_a_window_is_interpolated_inside_its_bucket) {
  // Before: 1000 requests, all under 10 ms. In the window: 100 more, 50 under 10 ms, 50 in
  // (25, 50] ms: the 99th is the 49th of those 50, at 25 + 25 x 49/50 ms.
  const auto before = histogram({1000, 1000, 1000, 1000});
  const auto now = histogram({1050, 1050, 1100, 1100});
  const auto p99 = p99_between_ms(before, now);
  ASSERT_TRUE(p99);
  EXPECT_NEAR(*p99, 25 + 25 * 49.0 / 50, 1e-9);
  EXPECT_FALSE(p99_between_ms(now, now)) << "nothing answered in the window";
  // Beyond the last finite bound: that bound.
  EXPECT_DOUBLE_EQ(*p99_between_ms(before, histogram({1000, 1000, 1000, 1100})), 50);
  latency_histogram other = now;
  other.upper_bounds_s[0] = 0.02;
  EXPECT_FALSE(p99_between_ms(before, other)) << "different buckets are not compared";
}

TEST(scaler_signals, signals_are_rates_over_the_window) {
  version_reading a, b;
  a.at = scaling_clock::time_point{} + 10s;
  a.submitted_jobs = 100;
  a.busy_us = 1'000'000;
  b.at = a.at + 2s;
  b.submitted_jobs = 300;
  b.busy_us = 3'000'000;
  b.queued = 7;
  const std::vector<batch_service_time> profile = {{1, 10}, {4, 20}};
  const scaling_signals s = signals_between(a, b, /*ready=*/2, profile, /*slo_p99_ms=*/100);
  EXPECT_DOUBLE_EQ(s.arrival_rps, 100);
  EXPECT_DOUBLE_EQ(s.busy_fraction, 0.5);  // 2 busy seconds over 2 replicas x 2 s
  EXPECT_EQ(s.queued, 7u);
  EXPECT_EQ(s.ready_replicas, 2u);
  EXPECT_DOUBLE_EQ(s.replica_capacity_rps, 200);  // 4 rows in 20 ms
  EXPECT_FALSE(s.p99_ms);
  const scaling_signals same = signals_between(b, b, 2, profile, 100);
  EXPECT_EQ(same.arrival_rps, 0) << "no window, no rate";
  EXPECT_EQ(same.queued, 7u);
  version_reading reset = b;
  reset.submitted_jobs = 5;  // another batcher's counter (a reload)
  reset.at = b.at + 1s;
  EXPECT_EQ(signals_between(b, reset, 2, profile, 100).arrival_rps, 0);
}

TEST(scaler_signals, desired_nodes_divide_the_busy_replicas_by_the_workers) {
  EXPECT_EQ(desired_nodes({}, 0), 0) << "no scaled model: no demand";
  // {gpu, workers, needed, replicas, replica_bytes}
  const std::vector<replica_demand> cpu = {{false, 4, 2.5, 3, 0}, {false, 4, 6.5, 7, 0}};
  EXPECT_DOUBLE_EQ(desired_nodes(cpu, 0), 9.0 / 4) << "9 busy replicas, 4 CPU workers a node";
  const std::vector<replica_demand> idle = {{false, 4, 0, 1, 0},
                                            {false, 4, 0, 1, 0},
                                            {false, 4, 0, 1, 0},
                                            {false, 4, 0, 1, 0},
                                            {false, 4, 0, 1, 0}};
  EXPECT_EQ(desired_nodes(idle, 0), 0) << "idle replicas (min_replicas) need no worker";
  const std::vector<replica_demand> gpu = {{true, 1, 1.5, 2, 30ull << 30}, {false, 4, 1, 1, 0}};
  EXPECT_DOUBLE_EQ(desired_nodes(gpu, 0), 1.5) << "one GPU worker a node";
  const std::vector<replica_demand> big = {{true, 2, 0.1, 2, 50ull << 30}};
  EXPECT_DOUBLE_EQ(desired_nodes(big, 80ull << 30), 1.25)
      << "100 GiB of replicas, 80 GiB of GPU memory a node";
  const std::vector<replica_demand> unknown = {{true, 2, 0.1, 2, 0}};
  EXPECT_DOUBLE_EQ(desired_nodes(unknown, 80ull << 30), 0.05) << "unknown sizes: workers only";
}

}  // namespace
}  // namespace troupe::actors
