// Whole graphs on the CUDA backend, where the layout pass is on by default, against the CPU
// backend (fp32, NCHW): the small graphs of the CPU layout tests and ResNet-50 (deterministic
// weights, batch 8), in fp32 (rel L2 <= 1e-4) and fp16 (<= 1e-2); ResNet-50's CUDA plan has
// exactly one transpose. TROUPE_CHANNELS_LAST=0 turns the pass off.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/session.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/runtime/layout_test_util.hpp"

namespace troupe::testing {
namespace {

using runtime::precision;

struct session_run {
  std::vector<tensor> outputs;
  int transposes = 0;
  int channels_last_nodes = 0;
};

expected<session_run> run_session(const std::string& bytes, const std::vector<tensor>& inputs,
                                  kernels::backend where, precision p) {
  TROUPE_ASSIGN_OR_RETURN(runtime::graph g,
                          runtime::load_onnx_bytes(bytes.data(), bytes.size(), ""));
  runtime::session_options o;
  o.where = where;
  o.compute_precision = p;
  TROUPE_ASSIGN_OR_RETURN(auto s, runtime::session::create_from_graph(std::move(g), o));
  std::vector<tensor_info> infos;
  for (const auto& t : inputs) infos.push_back(t.info());
  TROUPE_ASSIGN_OR_RETURN(std::shared_ptr<runtime::plan> plan, s->prepare(infos));
  session_run r;
  for (const auto& n : plan->specialized_graph().nodes) {
    r.transposes += n.op.domain.empty() && n.op.op_type == "Transpose";
    r.channels_last_nodes += n.op.attrs.get_int("channels_last", 0) != 0;
  }
  TROUPE_ASSIGN_OR_RETURN(r.outputs, s->run(inputs));
  return r;
}

/// CUDA fp32 and fp16 against the CPU; returns the CUDA fp16 run.
session_run expect_cuda_matches_cpu(const std::string& bytes, const std::vector<tensor>& inputs) {
  auto cpu = run_session(bytes, inputs, kernels::backend::cpu, precision::fp32);
  EXPECT_TRUE(cpu.has_value()) << cpu.error().to_string();
  if (!cpu) return {};
  EXPECT_EQ(cpu->channels_last_nodes, 0)
      << "the CPU reference runs NCHW (TROUPE_CHANNELS_LAST set?)";
  session_run last;
  for (precision p : {precision::fp32, precision::fp16}) {
    const char* name = p == precision::fp16 ? "fp16" : "fp32";
    SCOPED_TRACE(name);
    auto gpu = run_session(bytes, inputs, kernels::backend::cuda, p);
    EXPECT_TRUE(gpu.has_value()) << gpu.error().to_string();
    if (!gpu) continue;
    EXPECT_GT(gpu->channels_last_nodes, 0);
    EXPECT_EQ(gpu->outputs.size(), cpu->outputs.size());
    for (size_t i = 0; i < gpu->outputs.size() && i < cpu->outputs.size(); ++i) {
      const double err = rel_l2(gpu->outputs[i], cpu->outputs[i]);
      EXPECT_LE(err, p == precision::fp16 ? 1e-2 : 1e-4) << "output " << i;
      std::printf("output %zu (%s): rel L2 %.3e\n", i, name, err);
    }
    last = std::move(*gpu);
  }
  return last;
}

TEST(CudaNhwcModel, SmallGraphsMatchCpu) {
  TROUPE_REQUIRE_GPU();
  {
    SCOPED_TRACE("resnet-like");
    const auto r =
        expect_cuda_matches_cpu(resnet_like_net().bytes(), {random_input({2, 8, 20, 20}, 21)});
    EXPECT_EQ(r.transposes, 1);
    EXPECT_EQ(r.channels_last_nodes, 8);
  }
  {
    SCOPED_TRACE("squeeze-excitation");
    const auto r = expect_cuda_matches_cpu(squeeze_excitation_net().bytes(),
                                           {random_input({2, 8, 12, 12}, 22)});
    EXPECT_EQ(r.transposes, 2);
  }
  {
    SCOPED_TRACE("concat and pools");
    const auto r =
        expect_cuda_matches_cpu(concat_pools_net().bytes(), {random_input({1, 6, 17, 17}, 23)});
    EXPECT_EQ(r.transposes, 1);
  }
}

TEST(CudaNhwcModel, ResNet50MatchesCpuWithOneTranspose) {
  TROUPE_REQUIRE_GPU();
  const std::string bytes = filled_model("resnet50");
  if (bytes.empty()) GTEST_SKIP() << "resnet50.onnx is not on disk";
  const auto r = expect_cuda_matches_cpu(bytes, {random_input({8, 3, 224, 224}, 24)});
  EXPECT_EQ(r.transposes, 1);
  EXPECT_EQ(r.channels_last_nodes, 55);  // 53 convolutions, the max pool, the global pool
}

TEST(CudaNhwcModel, EnvironmentTurnsThePassOff) {
  TROUPE_REQUIRE_GPU();
  setenv("TROUPE_CHANNELS_LAST", "0", 1);
  auto r = run_session(resnet_like_net().bytes(), {random_input({2, 8, 20, 20}, 25)},
                       kernels::backend::cuda, precision::fp16);
  unsetenv("TROUPE_CHANNELS_LAST");
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->transposes, 0);
  EXPECT_EQ(r->channels_last_nodes, 0);
}

}  // namespace
}  // namespace troupe::testing
