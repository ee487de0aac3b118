// Several instances of one model on one GPU: each its own context (stream, handles, pool), the
// weights uploaded once to the device's constant store and shared; runs on two threads at once
// give each instance's own (bitwise repeatable) outputs; pool statistics stay put over many runs.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/gpu/test_cuda_graphs_models.hpp"

namespace troupe::testing {
namespace {

expected<tensor> run_one(runtime::session& s, const tensor& x) {
  TROUPE_ASSIGN_OR_RETURN(std::vector<tensor> out, s.run(std::vector<tensor>{x}));
  if (out.size() != 1) return internal_error("expected one output");
  return out[0];
}

void expect_buckets_and_instances_share_weights();

// The constants the plans read come from the device's store. With the channels-last layout pass
// on, the full-shape constant the Add reads is rebuilt per plan (a new host tensor with equal
// bytes): the store finds it by content. With the pass off it keeps its identity.
TEST(CudaInstances, BucketsAndInstancesShareWeights) {
  TROUPE_REQUIRE_GPU();
  for (const char* channels_last : {"0", "1"}) {
    SCOPED_TRACE(std::string("TROUPE_CHANNELS_LAST=") + channels_last);
    scoped_env layout("TROUPE_CHANNELS_LAST", channels_last);
    expect_buckets_and_instances_share_weights();
  }
}

void expect_buckets_and_instances_share_weights() {
  const std::string model = conv_matmul_model();
  auto a = make_session(model, kernels::backend::cuda);
  ASSERT_TRUE(a) << a.error().to_string();
  const tensor x1 = random_input({1, 8, 12, 12}, 41);
  const tensor x4 = random_input({4, 8, 12, 12}, 44);

  ASSERT_NE(plan_for(**a, x1), nullptr);
  const runtime::instance_memory after_first = (*a)->memory_report();
  // At least the full-shape constant the Add reads from the plan's table.
  EXPECT_GE(after_first.weights_bytes, 16u * 12 * 12 * sizeof(float));
  EXPECT_GT(after_first.weights_reserved_bytes, 0u);

  // A second batch bucket of the same session: no constant uploaded again.
  ASSERT_NE(plan_for(**a, x4), nullptr);
  EXPECT_EQ((*a)->memory_report().weights_bytes, after_first.weights_bytes);

  // A second instance: its own plans and pool, the same constants.
  auto b = (*a)->create_instance();
  ASSERT_TRUE(b) << b.error().to_string();
  EXPECT_TRUE((*a)->shares_weights_with(**b));
  auto other_model = make_session(model, kernels::backend::cuda);
  ASSERT_TRUE(other_model);
  EXPECT_FALSE((*a)->shares_weights_with(**other_model)) << "a separate session has its own store";
  ASSERT_NE(plan_for(**b, x4), nullptr);
  const runtime::instance_memory ma = (*a)->memory_report();
  const runtime::instance_memory mb = (*b)->memory_report();
  EXPECT_EQ(ma.weights_bytes, after_first.weights_bytes)
      << "the second instance uploaded weights again";
  EXPECT_EQ(mb.weights_bytes, ma.weights_bytes) << "both instances see one store";
  EXPECT_EQ(mb.plans, 1u);
  EXPECT_GE(mb.own_in_use_bytes, mb.arena_bytes) << "the instance's arena comes from its own pool";
  EXPECT_EQ(ma.device_reserved_bytes, ma.own_reserved_bytes + ma.weights_reserved_bytes);
  EXPECT_EQ(mb.device_reserved_bytes, mb.own_reserved_bytes + mb.weights_reserved_bytes);

  // The constants live while any instance holds them: dropping the first keeps the second right.
  auto cpu = make_session(model, kernels::backend::cpu);
  ASSERT_TRUE(cpu);
  auto want = run_one(**cpu, x4);
  ASSERT_TRUE(want);
  a->reset();
  for (int i = 0; i < 3; ++i) {
    auto y = run_one(**b, x4);
    ASSERT_TRUE(y) << y.error().to_string();
    EXPECT_LE(rel_l2(*y, *want), 1e-4);
  }
  EXPECT_EQ((*b)->memory_report().weights_bytes, mb.weights_bytes);
}

// The convolution search's choice is recorded per problem: the second instance (and a second
// bucket's plan of the same shapes) adopts it untimed, so both instances run the same
// configuration and read one copy of its weights, however close the timings were.
TEST(CudaInstances, SecondInstanceAdoptsTheRecordedConvolutionChoice) {
  TROUPE_REQUIRE_GPU();
  scoped_env layout("TROUPE_CHANNELS_LAST", "1");
  // A shape no other test in this binary builds, so that the first instance times it here.
  const tensor x = random_input({3, 8, 12, 12}, 71);
  auto a = make_session(conv_matmul_model(), kernels::backend::cuda, {}, runtime::precision::fp16);
  ASSERT_TRUE(a) << a.error().to_string();
  auto b = (*a)->create_instance();
  ASSERT_TRUE(b) << b.error().to_string();
  scoped_env debug("TROUPE_CUDNN_DEBUG", "1");
  ::testing::internal::CaptureStderr();
  ASSERT_NE(plan_for(**a, x), nullptr);
  const std::string first = ::testing::internal::GetCapturedStderr();
  ::testing::internal::CaptureStderr();
  ASSERT_NE(plan_for(**b, x), nullptr);
  const std::string second = ::testing::internal::GetCapturedStderr();
  auto chosen_lines = [](const std::string& log) {
    std::vector<std::string> lines;
    for (size_t at = log.find("chosen:"); at != std::string::npos; at = log.find("chosen:", at + 1))
      lines.push_back(log.substr(at, log.find('\n', at) - at));
    return lines;
  };
  const std::vector<std::string> timed = chosen_lines(first), adopted = chosen_lines(second);
  // The model's two convolutions (8 -> 16; 16 -> 16 with the residual): two problems.
  ASSERT_EQ(timed.size(), 2u) << first;
  ASSERT_EQ(adopted.size(), timed.size()) << second;
  // Same configuration label, algorithm, math and mode ("... ws N" follows both).
  auto head = [](const std::string& line) { return line.substr(0, line.find(" ws ")); };
  for (size_t i = 0; i < timed.size(); ++i) {
    EXPECT_EQ(timed[i].find(", recorded"), std::string::npos) << "the first build times";
    EXPECT_NE(adopted[i].find(", recorded"), std::string::npos) << adopted[i];
    EXPECT_EQ(head(adopted[i]), head(timed[i]));
  }
  EXPECT_EQ((*a)->memory_report().weights_bytes, (*b)->memory_report().weights_bytes);

  auto cpu = make_session(conv_matmul_model(), kernels::backend::cpu);
  ASSERT_TRUE(cpu);
  auto want = run_one(**cpu, x);
  auto ya = run_one(**a, x);
  auto yb = run_one(**b, x);
  ASSERT_TRUE(want && ya && yb);
  EXPECT_TRUE(same_bytes(*ya, *yb)) << "one configuration, one result";
  EXPECT_LE(rel_l2(*yb, *want), 1e-2);
}

TEST(CudaInstances, TwoInstancesRunInParallelOnTheirOwnStreams) {
  TROUPE_REQUIRE_GPU();
  const std::string model = conv_matmul_model();
  auto a = make_session(model, kernels::backend::cuda, {}, runtime::precision::fp16);
  ASSERT_TRUE(a) << a.error().to_string();
  auto b = (*a)->create_instance();
  ASSERT_TRUE(b) << b.error().to_string();
  auto cpu = make_session(model, kernels::backend::cpu);
  ASSERT_TRUE(cpu);
  const tensor xa = random_input({8, 8, 12, 12}, 51);
  const tensor xb = random_input({8, 8, 12, 12}, 52);
  auto ya = run_one(**a, xa);
  auto yb = run_one(**b, xb);
  ASSERT_TRUE(ya && yb);
  auto want_a = run_one(**cpu, xa);
  auto want_b = run_one(**cpu, xb);
  ASSERT_TRUE(want_a && want_b);
  EXPECT_LE(rel_l2(*ya, *want_a), 1e-2);
  EXPECT_LE(rel_l2(*yb, *want_b), 1e-2);

  // Each thread drives one instance; every output must be its instance's first output, bitwise.
  constexpr int kRuns = 40;
  int mismatches_a = 0, mismatches_b = 0;
  std::string error_a, error_b;
  auto drive = [](runtime::session& s, const tensor& x, const tensor& first, int* mismatches,
                  std::string* error) {
    for (int i = 0; i < kRuns; ++i) {
      auto y = s.run(std::vector<tensor>{x});
      if (!y) {
        *error = y.error().to_string();
        return;
      }
      *mismatches += same_bytes((*y)[0], first) ? 0 : 1;
    }
  };
  std::thread ta(drive, std::ref(**a), std::cref(xa), std::cref(*ya), &mismatches_a, &error_a);
  std::thread tb(drive, std::ref(**b), std::cref(xb), std::cref(*yb), &mismatches_b, &error_b);
  ta.join();
  tb.join();
  EXPECT_EQ(error_a, "");
  EXPECT_EQ(error_b, "");
  EXPECT_EQ(mismatches_a, 0);
  EXPECT_EQ(mismatches_b, 0);
  // Both plans replayed graphs on their own streams.
  EXPECT_EQ((*a)->memory_report().graph_plans, 1u);
  EXPECT_EQ((*b)->memory_report().graph_plans, 1u);
}

TEST(CudaInstances, PoolStatisticsStayPutOverManyRuns) {
  TROUPE_REQUIRE_GPU();
  auto s = make_session(conv_matmul_model(), kernels::backend::cuda);
  ASSERT_TRUE(s) << s.error().to_string();
  const tensor x = random_input({8, 8, 12, 12}, 61);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(run_one(**s, x));  // eager, capture, replay
  const runtime::instance_memory before = (*s)->memory_report();
  EXPECT_GE(before.own_in_use_bytes, before.arena_bytes);
  EXPECT_EQ(before.fragmentation_bytes, before.own_reserved_bytes - before.own_in_use_bytes);
  EXPECT_GE(before.own_peak_bytes, before.own_in_use_bytes);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(run_one(**s, x));
  const runtime::instance_memory after = (*s)->memory_report();
  EXPECT_EQ(after.own_in_use_bytes, before.own_in_use_bytes)
      << "a run allocated or leaked device memory";
  EXPECT_EQ(after.own_peak_bytes, before.own_peak_bytes);
  EXPECT_EQ(after.own_reserved_bytes, before.own_reserved_bytes);
  EXPECT_EQ(after.fragmentation_bytes, before.fragmentation_bytes);
  EXPECT_EQ(after.weights_bytes, before.weights_bytes);
  EXPECT_EQ(after.weights_reserved_bytes, before.weights_reserved_bytes);

  // A new bucket grows the pool by about its arena; runs of both leave the figures put again.
  const tensor x2 = random_input({2, 8, 12, 12}, 62);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(run_one(**s, x2));
  const runtime::instance_memory two = (*s)->memory_report();
  EXPECT_GE(two.own_in_use_bytes, before.own_in_use_bytes + (two.arena_bytes - before.arena_bytes));
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(run_one(**s, x));
    ASSERT_TRUE(run_one(**s, x2));
  }
  EXPECT_EQ((*s)->memory_report().own_in_use_bytes, two.own_in_use_bytes);
  EXPECT_EQ((*s)->memory_report().own_peak_bytes, two.own_peak_bytes);
}

}  // namespace
}  // namespace troupe::testing
