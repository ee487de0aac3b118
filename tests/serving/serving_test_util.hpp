#pragma once
// Shared pieces of the serving tests, CAF-free: jobs with their own input bytes, a tiny ONNX MLP
// (its bytes, its reference in double, checks of a batch and of a reply against it) and a
// temporary directory to write a model repository into. tests/actors/actor_test_util.hpp adds the
// actor system and the probes.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "serving/job.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::testing {

/// A job that owns its input bytes.
struct job_with_inputs {
  serving::infer_job job;
  std::vector<std::vector<float>> data;

  job_with_inputs(const std::string& model, std::vector<shape_t> shapes,
                  std::shared_ptr<serving::job_sink> reply_to, serving::time_point arrival,
                  uint32_t seed = 1) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1, 1);
    job.model = model;
    job.reply_to = std::move(reply_to);
    job.arrival = arrival;
    for (auto& s : shapes) {
      std::vector<float> v(static_cast<size_t>(element_count(s)));
      for (auto& x : v) x = dist(rng);
      data.push_back(std::move(v));
      serving::input_view in;
      in.info = {dtype::f32, s};
      in.data = reinterpret_cast<const std::byte*>(data.back().data());
      in.bytes = data.back().size() * sizeof(float);
      job.inputs.push_back(in);
    }
    job.rows = shapes.empty() || shapes[0].empty() ? 1 : shapes[0][0];
  }
};

inline serving::job_list list_of(std::initializer_list<serving::infer_job*> jobs) {
  serving::job_list l;
  for (auto* j : jobs) l.push_back(j);
  return l;
}

/// A MatMul + Add + Relu MLP: x[N,in] -> y[N,out] = relu(x W + b), with a dynamic batch dim N.
struct mlp_weights {
  int64_t in = 4, out = 3;
  std::vector<float> w, b;
};

inline mlp_weights make_mlp_weights(int64_t in, int64_t out, uint32_t seed) {
  mlp_weights m;
  m.in = in;
  m.out = out;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  m.w.resize(static_cast<size_t>(in * out));
  m.b.resize(static_cast<size_t>(out));
  for (auto& x : m.w) x = dist(rng);
  for (auto& x : m.b) x = dist(rng);
  return m;
}

inline std::string mlp_model_bytes(const mlp_weights& m, bool dynamic_batch = true) {
  auto model = make_model(13);
  auto* g = model.mutable_graph();
  *g->add_input() = make_value_info("x", 1, {dynamic_batch ? "N" : "1", std::to_string(m.in)});
  *g->add_output() = make_value_info("y", 1, {dynamic_batch ? "N" : "1", std::to_string(m.out)});
  add_float_initializer(model, "W", {m.in, m.out}, m.w);
  add_float_initializer(model, "B", {m.out}, m.b);
  add_node(model, "MatMul", {"x", "W"}, {"xw"});
  add_node(model, "Add", {"xw", "B"}, {"xwb"});
  add_node(model, "Relu", {"xwb"}, {"y"});
  return serialize(model);
}

/// relu(x W + b) for `rows` rows, in double.
inline std::vector<double> mlp_reference(const mlp_weights& m, const float* x, int64_t rows) {
  std::vector<double> y(static_cast<size_t>(rows * m.out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < m.out; ++o) {
      double acc = m.b[static_cast<size_t>(o)];
      for (int64_t i = 0; i < m.in; ++i)
        acc += static_cast<double>(x[r * m.in + i]) * m.w[static_cast<size_t>(i * m.out + o)];
      y[static_cast<size_t>(r * m.out + o)] = acc > 0 ? acc : 0;
    }
  return y;
}

/// Checks the outputs of a batch that ran the MLP `w` on job `j` alone, then releases the batch's
/// output block (as the reply would).
inline void expect_mlp_batch(serving::batch& b, const mlp_weights& w, const job_with_inputs& j) {
  ASSERT_TRUE(b.result.is_ok()) << b.result.to_string();
  const auto ref = mlp_reference(w, j.data[0].data(), j.job.rows);
  const auto* y = reinterpret_cast<const float*>(b.block->data() + b.outputs[0].offset);
  for (size_t k = 0; k < ref.size(); ++k) EXPECT_NEAR(y[k], ref[k], 1e-5) << "element " << k;
  b.block->release();
  b.block = nullptr;
}

/// Checks the reply of job `j` (the MLP `w` on `src`'s input: its one output [rows, 3]), then
/// releases the output slice (as a frontend would).
inline void expect_mlp_reply(serving::infer_job& j, const mlp_weights& w,
                             const job_with_inputs& src) {
  ASSERT_TRUE(j.result.is_ok()) << j.result.to_string();
  ASSERT_EQ(j.outputs.size(), 1u);
  const serving::output_slice& y = j.outputs[0];
  EXPECT_EQ(y.info.shape, (shape_t{j.rows, 3}));
  const auto ref = mlp_reference(w, src.data[0].data(), j.rows);
  const auto* got = reinterpret_cast<const float*>(y.block->data() + y.offset);
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-5) << "element " << i;
  y.block->release();
  j.outputs.clear();
}

/// A fresh directory under the system temp dir, removed with the object.
class temp_dir {
 public:
  temp_dir() {
    static std::mt19937_64 rng(std::random_device{}());
    path_ = std::filesystem::temp_directory_path() / ("troupe_test_" + std::to_string(rng()));
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

  void write(const std::filesystem::path& rel, const std::string& bytes) const {
    std::filesystem::create_directories((path_ / rel).parent_path());
    std::ofstream(path_ / rel, std::ios::binary) << bytes;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace troupe::testing
