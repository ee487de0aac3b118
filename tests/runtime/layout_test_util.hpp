#pragma once
// Shared by the layout pass tests (test_layout*.cpp): runs an ONNX model through specialisation,
// the graph passes (with a chosen layout mode) and a CPU plan, and reports the optimised graph's
// op counts next to the outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/device.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/passes.hpp"
#include "runtime/plan.hpp"
#include "runtime/specialize.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::testing {

/// Values drawn from N(0, stddev), deterministic per seed.
inline std::vector<float> normal_values(size_t n, float stddev, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline tensor random_input(const shape_t& shape, uint64_t seed) {
  tensor t = tensor::allocate(dtype::f32, shape);
  const auto v = normal_values(static_cast<size_t>(t.elements()), 1.0f, seed);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

struct layout_run {
  std::vector<tensor> outputs;
  std::map<std::string, int> ops;  // "Transpose", "troupe.FusedConv", ... in the optimised graph
  int channels_last_nodes = 0;     // nodes with channels_last = 1
  std::vector<std::string> transposed;  // the values Transpose nodes read
  int count(const std::string& op) const {
    auto it = ops.find(op);
    return it == ops.end() ? 0 : it->second;
  }
};

/// Loads `model`, specialises it for `inputs`, runs the passes with `mode` on the CPU backend,
/// builds the plan and runs it once.
inline expected<layout_run> run_with_layout(const std::string& model_bytes,
                                            const std::vector<tensor>& inputs,
                                            runtime::layout_mode mode) {
  using namespace troupe::runtime;
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(model_bytes.data(), model_bytes.size(), ""));
  std::vector<tensor_info> infos;
  for (const auto& t : inputs) infos.push_back(t.info());
  TROUPE_RETURN_IF_ERROR(specialize(g, infos));
  pass_options po;
  po.where = kernels::backend::cpu;
  po.layout = mode;
  TROUPE_RETURN_IF_ERROR(run_graph_passes(g, po));
  layout_run r;
  for (const auto& n : g.nodes) {
    ++r.ops[n.op.domain.empty() ? n.op.op_type : n.op.domain + "." + n.op.op_type];
    r.channels_last_nodes += n.op.attrs.get_int("channels_last", 0) != 0;
    if (n.op.domain.empty() && n.op.op_type == "Transpose")
      r.transposed.push_back(g.values[n.inputs[0]].name);
  }
  TROUPE_ASSIGN_OR_RETURN(auto dev, make_device(kernels::backend::cpu, 0));
  TROUPE_ASSIGN_OR_RETURN(auto p, plan::build(std::move(g), dev));
  for (const auto& oi : p->output_infos()) r.outputs.push_back(tensor::allocate(oi.type, oi.shape));
  TROUPE_RETURN_IF_ERROR(p->run(inputs, r.outputs));
  return r;
}

struct layout_pair {
  layout_run nchw, channels_last;
  /// Border nodes the pass inserted.
  int transposes() const { return channels_last.count("Transpose") - nchw.count("Transpose"); }
  int reshapes() const { return channels_last.count("Reshape") - nchw.count("Reshape"); }
};

/// Runs `model` without and with channels-last planning and expects equal outputs (rel L2 <=
/// `tolerance`).
inline layout_pair expect_same_outputs(const std::string& model_bytes,
                                       const std::vector<tensor>& inputs, double tolerance = 1e-5) {
  layout_pair r;
  auto plain = run_with_layout(model_bytes, inputs, runtime::layout_mode::nchw);
  EXPECT_TRUE(plain.has_value()) << plain.error().to_string();
  auto cl = run_with_layout(model_bytes, inputs, runtime::layout_mode::channels_last);
  EXPECT_TRUE(cl.has_value()) << cl.error().to_string();
  if (!plain || !cl) return r;
  EXPECT_EQ(plain->channels_last_nodes, 0);
  EXPECT_EQ(plain->outputs.size(), cl->outputs.size());
  for (size_t i = 0; i < plain->outputs.size() && i < cl->outputs.size(); ++i) {
    EXPECT_EQ(cl->outputs[i].shape(), plain->outputs[i].shape()) << "output " << i;
    const double err = rel_l2(cl->outputs[i], plain->outputs[i]);
    EXPECT_LE(err, tolerance) << "output " << i;
  }
  r.nchw = std::move(*plain);
  r.channels_last = std::move(*cl);
  return r;
}

/// A small ONNX model under construction: every helper adds one node and returns its output.
class net {
 public:
  explicit net(int opset = 17) : m_(make_model(opset)) {}

  void input(const std::string& name, const shape_t& shape) {
    std::vector<std::string> dims;
    for (int64_t d : shape) dims.push_back(std::to_string(d));
    *m_.mutable_graph()->add_input() = make_value_info(name, 1, dims);
  }
  void output(const std::string& name) {
    auto* o = m_.mutable_graph()->add_output();
    o->set_name(name);
    o->mutable_type()->mutable_tensor_type()->set_elem_type(1);
  }
  std::string constant(const shape_t& shape, float stddev, float mean = 0.0f) {
    const std::string name = label('k');
    auto v = normal_values(static_cast<size_t>(element_count(shape)), stddev, counter_ * 7919u);
    for (float& x : v) x += mean;
    add_float_initializer(m_, name, shape, v);
    return name;
  }
  std::string filled(const shape_t& shape, float value) {
    const std::string name = label('k');
    add_float_initializer(m_, name, shape,
                          std::vector<float>(static_cast<size_t>(element_count(shape)), value));
    return name;
  }
  std::string conv(const std::string& x, int64_t cin, int64_t cout, std::vector<int64_t> kernel,
                   int64_t stride = 1, int64_t pad = 0, int64_t group = 1, bool bias = true) {
    shape_t w{cout, cin / group};
    int64_t fan_in = cin / group;
    for (int64_t k : kernel) {
      w.push_back(k);
      fan_in *= k;
    }
    std::vector<std::string> in{x, constant(w, std::sqrt(2.0f / static_cast<float>(fan_in)))};
    if (bias) in.push_back(constant({cout}, 0.1f));
    const std::string y = next();
    auto* n = add_node(m_, "Conv", in, {y});
    set_ints(n, "kernel_shape", kernel);
    set_ints(n, "strides", std::vector<int64_t>(kernel.size(), stride));
    set_ints(n, "pads", std::vector<int64_t>(2 * kernel.size(), pad));
    set_int(n, "group", group);
    return y;
  }
  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& in,
                        std::string* out) {
    *out = next();
    return add_node(m_, op, in, {*out});
  }
  std::string op(const std::string& op, const std::vector<std::string>& in) {
    std::string out;
    node(op, in, &out);
    return out;
  }
  std::string pool(const std::string& op, const std::string& x, std::vector<int64_t> kernel,
                   int64_t stride, std::vector<int64_t> pads, int64_t ceil_mode = 0,
                   int64_t include_pad = -1) {
    std::string y;
    auto* n = node(op, {x}, &y);
    set_ints(n, "kernel_shape", kernel);
    set_ints(n, "strides", std::vector<int64_t>(kernel.size(), stride));
    set_ints(n, "pads", pads);
    set_int(n, "ceil_mode", ceil_mode);
    if (include_pad >= 0) set_int(n, "count_include_pad", include_pad);
    return y;
  }
  std::string bytes() const { return serialize(m_); }
  onnx::ModelProto& model() { return m_; }

 private:
  std::string next() { return label('t'); }
  // Appended, not `"t" + std::to_string(...)`: GCC 12 warns (-Wrestrict) on that falsely.
  std::string label(char prefix) {
    std::string s(1, prefix);
    s += std::to_string(counter_++);
    return s;
  }
  onnx::ModelProto m_;
  int counter_ = 0;
};

/// Test graphs shared by the CPU layout tests and the CUDA ones (see test_layout.cpp for what
/// each exercises). Inputs: "x" of the shapes named in the function.

/// x [2, 8, 20, 20]: stem conv, MaxPool, residual blocks (one with a strided projection), a
/// depthwise conv, GlobalAveragePool, Flatten, Gemm.
inline net resnet_like_net() {
  net n;
  n.input("x", {2, 8, 20, 20});
  std::string t = n.op("Relu", {n.conv("x", 8, 16, {3, 3}, 1, 1)});
  const std::string pooled = n.pool("MaxPool", t, {3, 3}, 2, {1, 1, 1, 1});
  t = n.op("Relu", {n.conv(pooled, 16, 16, {1, 1})});
  t = n.op("Relu", {n.conv(t, 16, 16, {3, 3}, 1, 1, /*group=*/16)});
  t = n.conv(t, 16, 16, {3, 3}, 1, 1);
  const std::string block = n.op("Relu", {n.op("Add", {t, pooled})});
  const std::string main = n.conv(block, 16, 32, {3, 3}, 2, 1);
  const std::string projection = n.conv(block, 16, 32, {1, 1}, 2, 0);
  t = n.op("Relu", {n.op("Add", {main, projection})});
  t = n.op("Flatten", {n.op("GlobalAveragePool", {t})});
  std::string y;
  auto* gemm = n.node("Gemm", {t, n.constant({10, 32}, 0.2f), n.constant({10}, 0.1f)}, &y);
  set_int(gemm, "transB", 1);
  n.output(y);

  return n;
}

/// x [2, 8, 12, 12]: squeeze-and-excitation gate, per-channel and full-shape constant operands.
inline net squeeze_excitation_net() {
  net n;
  n.input("x", {2, 8, 12, 12});
  const std::string features = n.op("Relu", {n.conv("x", 8, 16, {3, 3}, 1, 1)});
  std::string gate = n.op("GlobalAveragePool", {features});
  gate = n.op("Relu", {n.conv(gate, 16, 4, {1, 1})});
  gate = n.op("HardSigmoid", {n.conv(gate, 4, 16, {1, 1})});
  std::string t = n.op("Mul", {features, gate});
  t = n.op("Add", {t, n.constant({16, 1, 1}, 0.5f)});
  t = n.op("Mul", {n.constant({1, 16, 12, 12}, 1.0f, 1.0f), t});
  t = n.op("Sigmoid", {t});
  const std::string y = n.op("HardSwish", {n.conv(t, 16, 8, {3, 3}, 1, 1)});
  n.output(y);

  return n;
}

/// x [1, 6, 17, 17]: Concat on channels, max/average pools (oneDNN and direct-loop forms), scalar
/// operands, Clip, GlobalMaxPool and ReduceMean outputs.
inline net concat_pools_net() {
  net n;
  n.input("x", {1, 6, 17, 17});
  const std::string a = n.op("Relu", {n.conv("x", 6, 8, {3, 3}, 1, 1)});
  const std::string b = n.op("Relu", {n.conv("x", 6, 4, {1, 1})});
  const std::string avg = n.pool("AveragePool", "x", {3, 3}, 1, {1, 1, 1, 1}, 0, 1);
  std::string cat;
  set_int(n.node("Concat", {a, b, avg}, &cat), "axis", 1);
  std::string t = n.pool("MaxPool", cat, {3, 3}, 2, {0, 0, 0, 0}, 1);
  t = n.pool("AveragePool", t, {3, 3}, 2, {0, 0, 0, 0}, 1, 1);
  t = n.pool("AveragePool", t, {3, 3}, 1, {1, 1, 1, 1}, 0, 0);
  t = n.conv(t, 18, 8, {3, 3}, 1, 1);
  t = n.op("Sub", {t, n.filled({1}, 0.5f)});
  std::string clipped;
  n.node("Clip", {t, n.filled({}, -1.0f), n.filled({}, 2.0f)}, &clipped);
  t = n.conv(clipped, 8, 8, {1, 1});
  const std::string gmp = n.op("GlobalMaxPool", {t});
  std::string mean;
  auto* rm = n.node("ReduceMean", {t}, &mean);
  set_ints(rm, "axes", {2, 3});
  set_int(rm, "keepdims", 0);
  n.output(gmp);
  n.output(mean);

  return n;
}

#ifdef TROUPE_SOURCE_DIR
/// tests/models/<name>.onnx with every external float initializer filled in, serialised; empty
/// when the file is absent. The committed graphs keep their weights outside (not committed); the
/// values here are deterministic: N(0, 2 / fan_in) for weights of rank >= 2, positive values near
/// 1 for scales and variances, small ones for biases and means.
inline std::string filled_model(const std::string& name) {
  const std::string path = std::string(TROUPE_SOURCE_DIR) + "/tests/models/" + name + ".onnx";
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  onnx::ModelProto m;
  if (!m.ParseFromIstream(&f)) {
    ADD_FAILURE() << "cannot parse " << path;
    return {};
  }
  for (auto& t : *m.mutable_graph()->mutable_initializer()) {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) continue;
    if (t.data_type() != onnx::TensorProto::FLOAT) {
      ADD_FAILURE() << "external initializer " << t.name() << " is not float32";
      return {};
    }
    int64_t count = 1, fan_in = 1;
    for (int i = 0; i < t.dims_size(); ++i) {
      count *= t.dims(i);
      if (i > 0) fan_in *= t.dims(i);
    }
    uint64_t seed = 1469598103934665603ull;  // FNV-1a of the name
    for (char ch : t.name()) seed = (seed ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
    std::vector<float> v;
    const std::string& n = t.name();
    const auto ends_with = [&](const std::string& s) {
      return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
    };
    if (t.dims_size() >= 2) {
      v = normal_values(static_cast<size_t>(count), std::sqrt(2.0f / static_cast<float>(fan_in)),
                        seed);
    } else if (ends_with("running_var") || ends_with("weight")) {
      v = normal_values(static_cast<size_t>(count), 0.1f, seed);
      for (float& x : v) x = 1.0f + std::fabs(x);  // scales and variances: positive, near 1
    } else {
      v = normal_values(static_cast<size_t>(count), 0.05f, seed);
    }
    t.clear_external_data();
    t.set_data_location(onnx::TensorProto::DEFAULT);
    t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
  }
  return serialize(m);
}
#endif

}  // namespace troupe::testing
