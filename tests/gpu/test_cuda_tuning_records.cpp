// Recorded convolution choices across "processes" (kernels/tuning_records.hpp, conv_ops.cpp's
// "Recorded choices"): a session on a small conv model records its choices; the records go out as
// text, the store is cleared (a fresh process), the text comes back, and a second session times
// nothing (tuning_stats) and computes the same outputs. Records that this build's search could
// not have made (an algorithm cuDNN does not number, tensor-core math for fp32) are not adopted
// but searched for again and replaced; records of another GPU model never match.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/tuning_records.hpp"
#include "runtime/session.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/runtime/layout_test_util.hpp"

namespace troupe::testing {
namespace {

using runtime::precision;

expected<std::vector<tensor>> run_session(const std::string& bytes, const tensor& input,
                                          precision p) {
  TROUPE_ASSIGN_OR_RETURN(runtime::graph g,
                          runtime::load_onnx_bytes(bytes.data(), bytes.size(), ""));
  runtime::session_options o;
  o.where = kernels::backend::cuda;
  o.compute_precision = p;
  TROUPE_ASSIGN_OR_RETURN(auto s, runtime::session::create_from_graph(std::move(g), o));
  TROUPE_RETURN_IF_ERROR(s->prepare({input.info()}).take_status());
  return s->run(std::vector<tensor>{input});
}

/// Kernels created by one call of `f`, by how they came by their choice.
template <class F>
kernels::tuning_counts counts_during(F&& f) {
  const kernels::tuning_counts before = kernels::tuning_stats();
  f();
  const kernels::tuning_counts after = kernels::tuning_stats();
  return {after.searched - before.searched, after.adopted - before.adopted};
}

void expect_same_outputs(const std::vector<tensor>& a, const std::vector<tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    // The same algorithms on the same inputs: the same results (cuDNN's forward algorithms are
    // deterministic); a hair of slack all the same.
    EXPECT_LE(rel_l2(a[i], b[i]), 1e-6) << "output " << i;
  }
}

/// Each record line's `field` (0: variant ... 4: fused) replaced by `value`.
std::string with_record_field(const std::string& text, int field, const std::string& value) {
  std::string out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = text.find('\n', at);
    std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.rfind("r ", 0) == 0) {
      size_t begin = 2;
      for (int f = 0; f < field; ++f) begin = line.find(' ', begin) + 1;
      line.replace(begin, line.find(' ', begin) - begin, value);
    }
    out += line + "\n";
  }
  return out;
}

class CudaTuningRecords : public ::testing::TestWithParam<precision> {};

TEST_P(CudaTuningRecords, ImportedRecordsAreAdoptedUntimed) {
  TROUPE_REQUIRE_GPU();
  kernels::tuning_records& records = kernels::tuning_records::process();
  records.clear();
  const std::string bytes = resnet_like_net().bytes();
  const tensor input = random_input({2, 8, 20, 20}, 51);

  std::vector<tensor> first, second;
  const kernels::tuning_counts timed = counts_during([&] {
    auto r = run_session(bytes, input, GetParam());
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    first = std::move(*r);
  });
  EXPECT_GT(timed.searched, 0u);
  const size_t convolutions = timed.searched + timed.adopted;
  EXPECT_EQ(records.size(), timed.searched) << "one record per problem searched";
  EXPECT_GT(records.form_count(), 0u);

  const std::string text = records.to_text();
  EXPECT_NE(text.find(" sm_"), std::string::npos) << "keys name the GPU model:\n" << text;
  records.clear();  // a fresh process
  const auto imported = records.from_text(text);
  ASSERT_TRUE(imported.has_value()) << imported.error().to_string();
  EXPECT_EQ(*imported, timed.searched);

  const kernels::tuning_counts adopted = counts_during([&] {
    auto r = run_session(bytes, input, GetParam());
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    second = std::move(*r);
  });
  EXPECT_EQ(adopted.searched, 0u) << "nothing timed";
  EXPECT_EQ(adopted.adopted, convolutions);
  expect_same_outputs(first, second);
  EXPECT_EQ(records.to_text(), text) << "nothing new recorded";
}

TEST_P(CudaTuningRecords, OutOfRangeRecordsAreSearchedAgainAndReplaced) {
  TROUPE_REQUIRE_GPU();
  kernels::tuning_records& records = kernels::tuning_records::process();
  records.clear();
  const std::string bytes = resnet_like_net().bytes();
  const tensor input = random_input({2, 8, 20, 20}, 52);
  auto first = run_session(bytes, input, GetParam());
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  const std::string text = records.to_text();
  const size_t problems = records.size();

  struct bad_case {
    const char* name;
    int field;
    std::string value;
  };
  const bad_case cases[] = {
      {"an algorithm cuDNN does not number", 2, "999"},
      {"a math mode cuDNN does not number", 3, "77"},
      {"a variant conv_ops does not have", 0, "9"},
      {"more images per slice than the batch", 1, "4096"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    records.clear();
    const auto imported = records.from_text(with_record_field(text, c.field, c.value));
    ASSERT_TRUE(imported.has_value()) << imported.error().to_string();
    EXPECT_EQ(*imported, problems);
    std::vector<tensor> again;
    const kernels::tuning_counts n = counts_during([&] {
      auto r = run_session(bytes, input, GetParam());
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
      again = std::move(*r);
    });
    EXPECT_EQ(n.searched, problems) << "every unusable record searched for again";
    EXPECT_EQ(records.size(), problems);
    // The searched choices replaced the unusable ones: a third session adopts them.
    const kernels::tuning_counts third = counts_during([&] {
      auto r = run_session(bytes, input, GetParam());
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
    });
    EXPECT_EQ(third.searched, 0u);
    if (first.has_value() && !again.empty()) {
      for (size_t i = 0; i < again.size(); ++i) {
        EXPECT_LE(rel_l2(again[i], (*first)[i]), GetParam() == precision::fp16 ? 1e-2 : 1e-4);
      }
    }
  }
}

TEST(CudaTuningRecordsFp32, TensorCoreMathIsNotAdoptedForFp32) {
  TROUPE_REQUIRE_GPU();
  kernels::tuning_records& records = kernels::tuning_records::process();
  records.clear();
  const std::string bytes = resnet_like_net().bytes();
  const tensor input = random_input({2, 8, 20, 20}, 53);
  ASSERT_TRUE(run_session(bytes, input, precision::fp32).has_value());
  const std::string text = records.to_text();
  records.clear();
  // CUDNN_TENSOR_OP_MATH (1): TF32 would lose the CPU backend's precision.
  ASSERT_TRUE(records.from_text(with_record_field(text, 3, "1")).has_value());
  const kernels::tuning_counts n =
      counts_during([&] { ASSERT_TRUE(run_session(bytes, input, precision::fp32).has_value()); });
  EXPECT_EQ(n.adopted, 0u);
  EXPECT_GT(n.searched, 0u);
}

TEST(CudaTuningRecordsGpuModel, RecordsOfAnotherGpuModelNeverMatch) {
  TROUPE_REQUIRE_GPU();
  kernels::tuning_records& records = kernels::tuning_records::process();
  records.clear();
  const std::string bytes = resnet_like_net().bytes();
  const tensor input = random_input({2, 8, 20, 20}, 54);
  ASSERT_TRUE(run_session(bytes, input, precision::fp16).has_value());
  std::string text = records.to_text();
  // Every key starts with the GPU model: give it another one.
  for (size_t at = text.find(" sm_"); at != std::string::npos; at = text.find(" sm_", at + 1)) {
    text.replace(at, 4, " sm_1");
  }
  records.clear();
  ASSERT_TRUE(records.from_text(text).has_value());
  const kernels::tuning_counts n =
      counts_during([&] { ASSERT_TRUE(run_session(bytes, input, precision::fp16).has_value()); });
  EXPECT_GT(n.searched, 0u);
  EXPECT_EQ(n.adopted, 0u) << "no record of another GPU model was adopted";
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaTuningRecords,
                         ::testing::Values(precision::fp32, precision::fp16), [](const auto& info) {
                           return std::string(info.param == precision::fp16 ? "fp16" : "fp32");
                         });

}  // namespace
}  // namespace troupe::testing
