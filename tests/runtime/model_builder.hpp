#pragma once
// Builds small ONNX models in memory for runtime tests (libonnx's protobuf classes).
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.hpp"

namespace troupe::testing {

inline onnx::ValueInfoProto make_value_info(const std::string& name, int elem_type, const std::vector<std::string>& dims) {
  onnx::ValueInfoProto v;
  v.set_name(name);
  auto* tt = v.mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem_type);
  auto* shape = tt->mutable_shape();
  for (const auto& d : dims) {
    auto* dim = shape->add_dim();
    if (!d.empty() && (isdigit(static_cast<unsigned char>(d[0])))) dim->set_dim_value(std::stoll(d));
    else dim->set_dim_param(d);
  }
  return v;
}

inline onnx::ModelProto make_model(int opset = 17) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* o = m.add_opset_import();
  o->set_domain("");
  o->set_version(opset);
  m.mutable_graph()->set_name("test");
  return m;
}

inline onnx::NodeProto* add_node(onnx::ModelProto& m, const std::string& op, const std::vector<std::string>& in,
                                 const std::vector<std::string>& out, const std::string& name = "") {
  auto* n = m.mutable_graph()->add_node();
  n->set_op_type(op);
  n->set_name(name.empty() ? op + std::to_string(m.graph().node_size()) : name);
  for (const auto& i : in) n->add_input(i);
  for (const auto& o : out) n->add_output(o);
  return n;
}

inline void add_float_initializer(onnx::ModelProto& m, const std::string& name, const std::vector<int64_t>& dims,
                                  const std::vector<float>& values) {
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float v : values) t->add_float_data(v);
}

inline std::string serialize(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  return s;
}

inline void set_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
inline void set_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
inline void set_float(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

/// The test binary's random stream: one fixed seed, so a run repeats the last one's values.
inline std::mt19937_64& test_rng() {
  static std::mt19937_64 r(20261124);
  return r;
}
/// n values uniform in [lo, hi) from test_rng().
inline std::vector<float> random_values(int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = u(test_rng());
  return v;
}
/// An f32 tensor of `shape` uniform in [lo, hi) from test_rng().
inline tensor uniform_input(const shape_t& shape, float lo = -1.0f, float hi = 1.0f) {
  tensor t = tensor::allocate(dtype::f32, shape);
  const auto v = random_values(t.elements(), lo, hi);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

/// ||a - b|| / ||b|| over the values as doubles (any dtype); infinity when the shapes differ.
inline double rel_l2(const tensor& a, const tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.elements(); ++i) {
    const double x = a.value_as_double(i), y = b.value_as_double(i);
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

}  // namespace troupe::testing
