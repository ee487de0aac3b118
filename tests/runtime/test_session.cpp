#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

expected<std::unique_ptr<session>> session_from(const onnx::ModelProto& m) {
  auto bytes = serialize(m);
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(bytes.data(), bytes.size(), ""));
  return session::create_from_graph(std::move(g), {});
}

// y = relu(x + b) with a dynamic batch: one plan per batch size, results exact.
TEST(session, runs_with_dynamic_batch_and_caches_plans) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "3"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "3"});
  add_float_initializer(m, "b", {3}, {0.5f, -1.0f, 2.0f});
  add_node(m, "Add", {"x", "b"}, {"s"});
  add_node(m, "Relu", {"s"}, {"y"});
  auto s = session_from(m);
  ASSERT_TRUE(s) << s.error().to_string();
  for (int64_t batch : {1, 4, 1}) {
    tensor x = tensor::allocate(dtype::f32, {batch, 3});
    for (int64_t i = 0; i < x.elements(); ++i) x.data<float>()[i] = static_cast<float>(i % 5) - 2.0f;
    auto out = (*s)->run(std::map<std::string, tensor>{{"x", x}});
    ASSERT_TRUE(out) << out.error().to_string();
    ASSERT_EQ((*out)[0].shape(), (shape_t{batch, 3}));
    const float b[3] = {0.5f, -1.0f, 2.0f};
    for (int64_t i = 0; i < x.elements(); ++i) {
      EXPECT_EQ((*out)[0].data<float>()[i], std::max(0.0f, x.data<float>()[i] + b[i % 3]));
    }
  }
}

TEST(session, wrong_inputs_get_typed_errors) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "3"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "3"});
  add_node(m, "Relu", {"x"}, {"y"});
  auto s = session_from(m);
  ASSERT_TRUE(s);
  auto missing = (*s)->run(std::map<std::string, tensor>{});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), error_code::invalid_argument);
  auto wrong_dim = (*s)->run(std::map<std::string, tensor>{{"x", tensor::zeros(dtype::f32, {2, 4})}});
  ASSERT_FALSE(wrong_dim);
  EXPECT_EQ(wrong_dim.error().code(), error_code::invalid_argument);
  auto wrong_type = (*s)->run(std::map<std::string, tensor>{{"x", tensor::zeros(dtype::i64, {2, 3})}});
  ASSERT_FALSE(wrong_type);
  EXPECT_EQ(wrong_type.error().code(), error_code::invalid_argument);
  auto unknown = (*s)->run(std::map<std::string, tensor>{{"x", tensor::zeros(dtype::f32, {2, 3})},
                                                         {"bogus", tensor::zeros(dtype::f32, {1})}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), error_code::invalid_argument);
}

TEST(session, unsupported_op_names_op_and_node) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"2"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"2"});
  add_node(m, "Einsum", {"x"}, {"y"}, "my_einsum")->add_attribute()->set_name("equation");
  m.mutable_graph()->mutable_node(0)->mutable_attribute(0)->set_type(onnx::AttributeProto::STRING);
  m.mutable_graph()->mutable_node(0)->mutable_attribute(0)->set_s("i->i");
  auto s = session_from(m);
  ASSERT_TRUE(s);
  auto out = (*s)->run(std::map<std::string, tensor>{{"x", tensor::zeros(dtype::f32, {2})}});
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code(), error_code::unsupported);
  EXPECT_NE(out.error().message().find("Einsum"), std::string::npos);
  EXPECT_NE(out.error().message().find("my_einsum"), std::string::npos);
}

// The planner reuses memory: a chain of 8 elementwise ops needs far less than 8 buffers.
TEST(session, planned_arena_is_smaller_than_the_sum_of_tensors) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"64", "64"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"64", "64"});
  std::string prev = "x";
  for (int i = 0; i < 8; ++i) {
    const std::string out = i == 7 ? "y" : "t" + std::to_string(i);
    add_node(m, "Relu", {prev}, {out});
    prev = out;
  }
  // The elementwise chain pass would make this one node: keep the 8 buffers to plan.
  ::setenv("TROUPE_FUSE_ELEMENTWISE", "0", 1);
  auto s = session_from(m);
  ASSERT_TRUE(s);
  auto p = (*s)->prepare({{dtype::f32, {64, 64}}});
  ::unsetenv("TROUPE_FUSE_ELEMENTWISE");
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_EQ((*p)->memory().sum_of_tensor_bytes, 8u * 64 * 64 * 4);
  EXPECT_EQ((*p)->memory().planned_arena_bytes, 64u * 64 * 4);
}

}  // namespace
}  // namespace troupe::runtime
