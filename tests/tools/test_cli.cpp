// `troupe run` / `troupe inspect` through their entry points (tools/commands.hpp) on models built
// in memory: outputs, printed lines, latency JSON, exit codes and error lines.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "tests/runtime/model_builder.hpp"
#include "tests/test_seed.hpp"
#include "tools/commands.hpp"
#include "tools/npz.hpp"

namespace troupe::tools {
namespace {

namespace fs = std::filesystem;
using troupe::testing::add_node;
using troupe::testing::make_model;
using troupe::testing::make_value_info;

class temp_dir {
 public:
  temp_dir() {
    path_ = fs::temp_directory_path() / ("troupe_cli_" + std::to_string(std::random_device{}()));
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void save(const onnx::ModelProto& m, const std::string& path) {
  std::ofstream f(path, std::ios::binary);
  f << troupe::testing::serialize(m);
}

/// y = Relu(x), x: float[batch, 6].
onnx::ModelProto relu_model() {
  onnx::ModelProto m = make_model(17);
  *m.mutable_graph()->add_input() = make_value_info("x", onnx::TensorProto::FLOAT, {"batch", "6"});
  *m.mutable_graph()->add_output() = make_value_info("y", onnx::TensorProto::FLOAT, {"batch", "6"});
  add_node(m, "Relu", {"x"}, {"y"}, "relu1");
  return m;
}

tensor random_input(shape_t shape) {
  static std::mt19937 rng(troupe::testing::test_seed());
  std::uniform_real_distribution<float> u(-1, 1);
  tensor t = tensor::allocate(dtype::f32, std::move(shape));
  for (int64_t i = 0; i < t.elements(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(CliLatency, Summary) {
  auto odd = summarize_latencies({5, 1, 3});
  EXPECT_EQ(odd.median_ms, 3);
  EXPECT_EQ(odd.min_ms, 1);
  EXPECT_EQ(odd.max_ms, 5);
  EXPECT_EQ(odd.mean_ms, 3);
  EXPECT_EQ(odd.runs, 3u);
  auto even = summarize_latencies({4, 1, 2, 10});
  EXPECT_EQ(even.median_ms, 3);
  EXPECT_EQ(even.mean_ms, 4.25);
}

TEST(CliRun, WritesOutputsLinesAndLatency) {
  temp_dir dir;
  save(relu_model(), dir.file("m.onnx"));
  const tensor x = random_input({2, 6});
  ASSERT_TRUE(write_npz(dir.file("in.npz"), {{"x", x}}).is_ok());

  run_options o;
  o.model_path = dir.file("m.onnx");
  o.inputs_path = dir.file("in.npz");
  o.outputs_path = dir.file("out.npz");
  o.latency_json_path = dir.file("lat.json");
  o.repeat = 3;
  o.warmup = 0;
  ::testing::internal::CaptureStdout();
  const int rc = run_model(o);
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, exit_ok) << out;

  auto outputs = read_npz(dir.file("out.npz"));
  ASSERT_TRUE(outputs.has_value()) << outputs.error().to_string();
  ASSERT_EQ(outputs->size(), 1u);
  EXPECT_EQ((*outputs)[0].first, "y");
  const tensor& y = (*outputs)[0].second;
  ASSERT_EQ(y.shape(), (shape_t{2, 6}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(y.data<float>()[i], std::max(0.0f, x.data<float>()[i]));

  // The top-5 line lists the first row's largest value first, by index.
  int best = 0;
  for (int i = 1; i < 6; ++i)
    if (x.data<float>()[i] > x.data<float>()[best]) best = i;
  EXPECT_NE(out.find("y: float32 [2,6]  top5: " + std::to_string(best) + ":"), std::string::npos)
      << out;
  EXPECT_NE(out.find("latency_ms: median="), std::string::npos) << out;
  EXPECT_NE(out.find("runs=3 (plan compile "), std::string::npos) << out;

  const std::string json = slurp(dir.file("lat.json"));
  for (const char* key : {"\"median_ms\": ", "\"mean_ms\": ", "\"min_ms\": ", "\"max_ms\": ",
                          "\"runs\": 3,", "\"compile_ms\": "})
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
}

TEST(CliRun, InputErrorsAreTypedWithExitCode2) {
  temp_dir dir;
  save(relu_model(), dir.file("m.onnx"));
  run_options o;
  o.model_path = dir.file("m.onnx");

  struct error_case {
    named_tensors inputs;
    std::string expect;
  };
  const error_case cases[] = {
      {{}, "error: invalid_argument: input 'x' is missing"},
      {{{"x", random_input({2, 6})}, {"z", random_input({1})}}, "error: invalid_argument:"},
      {{{"x", tensor::zeros(dtype::i64, {2, 6})}}, "error: invalid_argument:"},
      {{{"x", random_input({2, 7})}}, "error: invalid_argument:"},
  };
  for (const auto& c : cases) {
    ASSERT_TRUE(write_npz(dir.file("in.npz"), c.inputs).is_ok());
    o.inputs_path = dir.file("in.npz");
    ::testing::internal::CaptureStderr();
    const int rc = run_model(o);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(rc, exit_user_error) << err;
    EXPECT_EQ(err.rfind(c.expect, 0), 0u) << err;
  }

  o.model_path = dir.file("missing.onnx");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_model(o), exit_user_error);
  EXPECT_EQ(::testing::internal::GetCapturedStderr().rfind("error: ", 0), 0u);

  o.model_path = dir.file("m.onnx");
  o.inputs_path = dir.file("missing.npz");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_model(o), exit_user_error);
  EXPECT_EQ(::testing::internal::GetCapturedStderr().rfind("error: not_found: ", 0), 0u);
}

TEST(CliInspect, ShowsIoOpsAndPlanMemory) {
  temp_dir dir;
  save(relu_model(), dir.file("m.onnx"));
  inspect_options o;
  o.model_path = dir.file("m.onnx");
  o.shapes = {"batch=4"};
  ::testing::internal::CaptureStdout();
  const int rc = inspect_model(o);
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, exit_ok) << out;
  for (const char* want :
       {"opsets:    ai.onnx 17", "[batch,6]", "Relu", "unsupported ops on cpu: none",
        "input shapes:        x=[4,6]", "planned arena:", "sum of tensor bytes:", "constants:"})
    EXPECT_NE(out.find(want), std::string::npos) << want << " in\n" << out;

  o.shapes = {"x=3x6"};
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(inspect_model(o), exit_ok);
  EXPECT_NE(::testing::internal::GetCapturedStdout().find("x=[3,6]"), std::string::npos);
}

TEST(CliInspect, ReportsUnsupportedOpsAndSkipsThePlan) {
  temp_dir dir;
  onnx::ModelProto m = relu_model();
  auto* custom = m.add_opset_import();
  custom->set_domain("com.example");
  custom->set_version(1);
  m.mutable_graph()->mutable_output(0)->set_name("z");
  auto* n = add_node(m, "Mystery", {"y"}, {"z"}, "mystery1");
  n->set_domain("com.example");
  save(m, dir.file("m.onnx"));

  inspect_options o;
  o.model_path = dir.file("m.onnx");
  ::testing::internal::CaptureStdout();
  const int rc = inspect_model(o);
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, exit_ok) << out;
  for (const char* want : {"com.example.Mystery", "unsupported ops on cpu (1):",
                           "no schema, no cpu kernel: 'mystery1'", "not compiled"})
    EXPECT_NE(out.find(want), std::string::npos) << want << " in\n" << out;
  EXPECT_EQ(out.find("planned arena:"), std::string::npos) << out;
}

}  // namespace
}  // namespace troupe::tools
