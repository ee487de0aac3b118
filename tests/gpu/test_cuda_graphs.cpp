// Whole-plan CUDA graphs: the replay of a captured plan gives the bytes the direct (eager) run
// gave, on several runs with changing inputs and in several batch buckets; a batch padded to its
// bucket gives the unpadded batch's rows; TROUPE_CUDA_GRAPHS=0 keeps plans eager; warm_up captures
// every bucket.
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/gpu/test_cuda_graphs_models.hpp"

namespace troupe::testing {
namespace {

using runtime::plan;

expected<tensor> run_one(runtime::session& s, const tensor& x) {
  TROUPE_ASSIGN_OR_RETURN(std::vector<tensor> out, s.run(std::vector<tensor>{x}));
  if (out.size() != 1) return internal_error("expected one output");
  return out[0];
}

TEST(CudaGraphs, ReplayEqualsDirectExecutionBitwise) {
  TROUPE_REQUIRE_GPU();
  const std::string model = conv_matmul_model();
  auto cpu = make_session(model, kernels::backend::cpu);
  ASSERT_TRUE(cpu) << cpu.error().to_string();
  for (int64_t batch : {1, 4, 8}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    auto s = make_session(model, kernels::backend::cuda);
    ASSERT_TRUE(s) << s.error().to_string();
    const tensor x1 = random_input({batch, 8, 12, 12}, 100 + batch);
    const tensor x2 = random_input({batch, 8, 12, 12}, 200 + batch);
    std::shared_ptr<plan> p = plan_for(**s, x1);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->mode(), plan::launch_mode::graph_pending) << p->eager_reason();

    // Run 1 is direct: every kernel computes on the stream.
    auto direct1 = run_one(**s, x1);
    ASSERT_TRUE(direct1) << direct1.error().to_string();
    EXPECT_EQ(p->mode(), plan::launch_mode::graph_pending);
    // Run 2 captures and replays.
    auto replay1 = run_one(**s, x1);
    ASSERT_TRUE(replay1) << replay1.error().to_string();
    ASSERT_EQ(p->mode(), plan::launch_mode::graph) << p->eager_reason();
    EXPECT_GE(p->graph_node_count(), p->step_count());
    EXPECT_TRUE(same_bytes(*replay1, *direct1))
        << "replay differs from the direct run, rel L2 " << rel_l2(*replay1, *direct1);

    // Later replays read each run's inputs (copied into the arena before the launch).
    auto cpu2 = run_one(**cpu, x2);
    ASSERT_TRUE(cpu2) << cpu2.error().to_string();
    for (int round = 0; round < 3; ++round) {
      auto replay2 = run_one(**s, x2);
      ASSERT_TRUE(replay2) << replay2.error().to_string();
      EXPECT_FALSE(same_bytes(*replay2, *direct1)) << "the replay ignored the new input";
      EXPECT_LE(rel_l2(*replay2, *cpu2), 1e-4);
      auto again = run_one(**s, x1);
      ASSERT_TRUE(again) << again.error().to_string();
      EXPECT_TRUE(same_bytes(*again, *direct1)) << "round " << round;
    }
    // execute() replays too (the benchmark path).
    EXPECT_TRUE(p->execute().is_ok());
    EXPECT_EQ(p->mode(), plan::launch_mode::graph);
  }
}

// Whole models: every kernel of ResNet-50 (cuDNN, channels-last copies, pooling) and BERT-base
// (cuBLASLt, attention, layer norm, gather) must be capturable, and the replay must give the
// direct run's bytes.
TEST(CudaGraphs, WholeModelsReplayLikeTheirDirectRun) {
  TROUPE_REQUIRE_GPU();
  struct case_t {
    const char* model;
    std::vector<tensor> inputs;
  };
  tensor ids = tensor::allocate(dtype::i64, {2, 128});
  tensor mask = tensor::allocate(dtype::i64, {2, 128});
  for (int64_t i = 0; i < ids.elements(); ++i) {
    ids.data<int64_t>()[i] = (i * 7919) % 30522;
    mask.data<int64_t>()[i] = (i % 128) < 100 ? 1 : 0;
  }
  const std::vector<case_t> cases{{"resnet50", {random_input({8, 3, 224, 224}, 77)}},
                                  {"bert_base", {ids, mask}}};
  int ran = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.model);
    const std::string bytes = filled_model(c.model);
    if (bytes.empty()) continue;
    auto s = make_session(bytes, kernels::backend::cuda, {}, runtime::precision::fp16);
    ASSERT_TRUE(s) << s.error().to_string();
    std::vector<tensor_info> infos;
    for (const auto& t : c.inputs) infos.push_back(t.info());
    auto p = (*s)->prepare(infos);
    ASSERT_TRUE(p) << p.error().to_string();
    auto direct = (*s)->run(c.inputs);
    ASSERT_TRUE(direct) << direct.error().to_string();
    for (int i = 0; i < 3; ++i) {
      auto replay = (*s)->run(c.inputs);
      ASSERT_TRUE(replay) << replay.error().to_string();
      ASSERT_EQ((*p)->mode(), plan::launch_mode::graph) << (*p)->eager_reason();
      ASSERT_EQ(replay->size(), direct->size());
      for (size_t o = 0; o < direct->size(); ++o) {
        EXPECT_TRUE(same_bytes((*replay)[o], (*direct)[o])) << "output " << o << " run " << i;
      }
    }
    std::printf("%s: CUDA graph of %zu nodes for %zu steps\n", c.model, (*p)->graph_node_count(),
                (*p)->step_count());
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "no model files under tests/models";
}

TEST(CudaGraphs, EnvironmentKeepsPlansEager) {
  TROUPE_REQUIRE_GPU();
  const std::string model = conv_matmul_model();
  const tensor x = random_input({4, 8, 12, 12}, 7);
  auto cpu = make_session(model, kernels::backend::cpu);
  ASSERT_TRUE(cpu);
  auto want = run_one(**cpu, x);
  ASSERT_TRUE(want);
  scoped_env off("TROUPE_CUDA_GRAPHS", "0");
  auto s = make_session(model, kernels::backend::cuda);
  ASSERT_TRUE(s) << s.error().to_string();
  std::shared_ptr<plan> p = plan_for(**s, x);
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 3; ++i) {
    auto y = run_one(**s, x);
    ASSERT_TRUE(y) << y.error().to_string();
    EXPECT_LE(rel_l2(*y, *want), 1e-4);
  }
  EXPECT_EQ(p->mode(), plan::launch_mode::eager);
  EXPECT_EQ(p->graph_node_count(), 0u);
  EXPECT_NE(p->eager_reason().find("TROUPE_CUDA_GRAPHS"), std::string::npos) << p->eager_reason();
}

// A batch of n rows padded to its bucket gives the rows an n-row plan gives (and the CPU gives).
TEST(CudaGraphs, PaddedBucketRunEqualsUnpaddedRows) {
  TROUPE_REQUIRE_GPU();
  const std::string model = conv_matmul_model();
  auto cpu = make_session(model, kernels::backend::cpu);
  ASSERT_TRUE(cpu);
  for (runtime::precision prec : {runtime::precision::fp32, runtime::precision::fp16}) {
    const bool half = prec == runtime::precision::fp16;
    SCOPED_TRACE(half ? "fp16" : "fp32");
    auto bucketed = make_session(model, kernels::backend::cuda, {8, 1, 2, 4}, prec);
    ASSERT_TRUE(bucketed) << bucketed.error().to_string();
    auto exact = make_session(model, kernels::backend::cuda, {}, prec);
    ASSERT_TRUE(exact) << exact.error().to_string();
    for (int64_t rows : {1, 3, 5, 7, 3, 5}) {
      SCOPED_TRACE("rows " + std::to_string(rows));
      const tensor x = random_input({rows, 8, 12, 12}, 300 + rows);
      auto padded = run_one(**bucketed, x);
      ASSERT_TRUE(padded) << padded.error().to_string();
      ASSERT_EQ(padded->shape(), (shape_t{rows, 10}));
      auto unpadded = run_one(**exact, x);
      ASSERT_TRUE(unpadded) << unpadded.error().to_string();
      auto reference = run_one(**cpu, x);
      ASSERT_TRUE(reference);
      // Another plan (batch) may pick other algorithms: equal within the precision's bound.
      EXPECT_LE(rel_l2(*padded, *unpadded), half ? 1e-2 : 1e-5);
      EXPECT_LE(rel_l2(*padded, *reference), half ? 1e-2 : 1e-4);
    }
    EXPECT_EQ((*bucketed)->bucket_for(3), 4);
    EXPECT_EQ((*bucketed)->bucket_for(9), 9);
    // Rows 1, 3 and 5/7 ran in buckets 1, 4 and 8: three plans; bucket 4 and 8 ran twice or more
    // and replay their graphs.
    const runtime::instance_memory m = (*bucketed)->memory_report();
    EXPECT_EQ(m.plans, 3u);
    EXPECT_EQ(m.graph_plans, 2u);
  }
}

TEST(CudaGraphs, WarmUpCapturesEveryBucket) {
  TROUPE_REQUIRE_GPU();
  auto s = make_session(conv_matmul_model(), kernels::backend::cuda, {1, 2, 4});
  ASSERT_TRUE(s) << s.error().to_string();
  ASSERT_TRUE((*s)->warm_up().is_ok());
  const runtime::instance_memory m = (*s)->memory_report();
  EXPECT_EQ(m.plans, 3u);
  EXPECT_EQ(m.graph_plans, 3u);
  // The first real run of a warmed bucket replays at once, and is right.
  const tensor x = random_input({2, 8, 12, 12}, 9);
  std::shared_ptr<plan> p = plan_for(**s, x);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->mode(), plan::launch_mode::graph);
  auto cpu = make_session(conv_matmul_model(), kernels::backend::cpu);
  ASSERT_TRUE(cpu);
  auto y = run_one(**s, x);
  auto want = run_one(**cpu, x);
  ASSERT_TRUE(y && want);
  EXPECT_LE(rel_l2(*y, *want), 1e-4);
}

}  // namespace
}  // namespace troupe::testing
