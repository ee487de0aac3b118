#include <gtest/gtest.h>

#include "runtime/onnx_loader.hpp"
#include "runtime/symbolic_shapes.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

// y = Reshape(x, concat(shape(x)[0], [-1, 4])) as exporters write it: x [batch, sequence, 8] gives
// y [batch, sequence*2, 4]; z = MatMul-free Add keeps [batch, sequence, 8].
TEST(symbolic_shapes, follow_symbols_through_shape_chains) {
  auto m = make_model(17);
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "sequence", "8"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {});
  *m.mutable_graph()->add_output() = make_value_info("z", 1, {});
  auto* idx = m.mutable_graph()->add_initializer();
  idx->set_name("zero");
  idx->set_data_type(onnx::TensorProto::INT64);
  idx->add_int64_data(0);
  auto* tail = m.mutable_graph()->add_initializer();
  tail->set_name("tail");
  tail->set_data_type(onnx::TensorProto::INT64);
  tail->add_dims(2);
  tail->add_int64_data(-1);
  tail->add_int64_data(4);
  auto* axes = m.mutable_graph()->add_initializer();
  axes->set_name("axes");
  axes->set_data_type(onnx::TensorProto::INT64);
  axes->add_dims(1);
  axes->add_int64_data(0);
  add_node(m, "Shape", {"x"}, {"s"});
  add_node(m, "Gather", {"s", "zero"}, {"b"});
  add_node(m, "Unsqueeze", {"b", "axes"}, {"u"});
  add_node(m, "Concat", {"u", "tail"}, {"target"})->add_attribute()->set_name("axis");
  m.mutable_graph()->mutable_node(3)->mutable_attribute(0)->set_type(onnx::AttributeProto::INT);
  m.mutable_graph()->mutable_node(3)->mutable_attribute(0)->set_i(0);
  add_node(m, "Reshape", {"x", "target"}, {"y"});
  add_node(m, "Add", {"x", "x"}, {"z"});
  auto bytes = serialize(m);
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_TRUE(g) << g.error().to_string();
  auto shapes = infer_symbolic_shapes(*g);
  ASSERT_TRUE(shapes) << shapes.error().to_string();
  EXPECT_EQ(symbolic_shape_to_string(shapes->at("y").shape), "[batch,sequence*2,4]");
  EXPECT_EQ(symbolic_shape_to_string(shapes->at("z").shape), "[batch,sequence,8]");
  EXPECT_EQ(shapes->at("y").type, dtype::f32);
  auto fixed = infer_symbolic_shapes(*g, {{"batch", 3}});
  ASSERT_TRUE(fixed);
  EXPECT_EQ(symbolic_shape_to_string(fixed->at("y").shape), "[3,sequence*2,4]");
}

}  // namespace
}  // namespace troupe::runtime
