#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/backend_coverage.hpp"
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
    for (int64_t i = 0; i < x.elements(); ++i)
      x.data<float>()[i] = static_cast<float>(i % 5) - 2.0f;
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
  auto wrong_dim =
      (*s)->run(std::map<std::string, tensor>{{"x", tensor::zeros(dtype::f32, {2, 4})}});
  ASSERT_FALSE(wrong_dim);
  EXPECT_EQ(wrong_dim.error().code(), error_code::invalid_argument);
  auto wrong_type =
      (*s)->run(std::map<std::string, tensor>{{"x", tensor::zeros(dtype::i64, {2, 3})}});
  ASSERT_FALSE(wrong_type);
  EXPECT_EQ(wrong_type.error().code(), error_code::invalid_argument);
  auto unknown = (*s)->run(std::map<std::string, tensor>{
      {"x", tensor::zeros(dtype::f32, {2, 3})}, {"bogus", tensor::zeros(dtype::f32, {1})}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), error_code::invalid_argument);
}

// An op without a kernel on the backend fails the session at create, naming op and node: a model
// with one must not load and then fail every request. The input's dims are dynamic, so no plan is
// compiled at load: only the coverage check can catch it.
TEST(session, unsupported_op_fails_at_create_naming_op_and_node) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "n"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch"});
  auto* e = add_node(m, "Einsum", {"x"}, {"y"}, "einsum_0");
  e->add_attribute()->set_name("equation");
  e->mutable_attribute(0)->set_type(onnx::AttributeProto::STRING);
  e->mutable_attribute(0)->set_s("bi->b");
  auto s = session_from(m);
  ASSERT_FALSE(s) << "a session that cannot run any request must not be created";
  EXPECT_EQ(s.error().code(), error_code::unsupported);
  EXPECT_NE(
      s.error().message().find("op 'Einsum' (node 'einsum_0') has no kernel on the cpu backend"),
      std::string::npos)
      << s.error().message();
}

TEST(session, every_unsupported_node_is_listed) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"4"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"4"});
  add_node(m, "Relu", {"x"}, {"r"});
  add_node(m, "MyOp", {"r"}, {"t"}, "first")->set_domain("com.example");
  add_node(m, "Trilu", {"t"}, {"y"}, "second");
  m.add_opset_import()->set_domain("com.example");
  m.mutable_opset_import(m.opset_import_size() - 1)->set_version(1);
  auto bytes = serialize(m);
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_TRUE(g) << g.error().to_string();
  const status st = check_backend_coverage(*g, kernels::backend::cpu);
  EXPECT_EQ(st.code(), error_code::unsupported);
  EXPECT_NE(st.message().find("(node 'first') has no kernel on the cpu backend"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("op 'Trilu' (node 'second') has no kernel"), std::string::npos)
      << st.message();
  EXPECT_EQ(st.message().find("Relu"), std::string::npos) << st.message();
}

// A node every plan folds on the host needs no kernel on the backend: a Constant (no CUDA
// kernel) feeding an Add. EyeLike of a run-time input has no CUDA kernel and is not folded.
TEST(session, nodes_folded_at_plan_time_need_no_backend_kernel) {
  auto m = make_model();
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"2", "2"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"2", "2"});
  *m.mutable_graph()->add_output() = make_value_info("eye", 1, {"2", "2"});
  auto* c = add_node(m, "Constant", {}, {"c"}, "const_0");
  auto* a = c->add_attribute();
  a->set_name("value_float");
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(2.0f);
  add_node(m, "Add", {"x", "c"}, {"y"}, "add_0");
  add_node(m, "EyeLike", {"x"}, {"eye"}, "eye_0");
  auto bytes = serialize(m);
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_TRUE(g) << g.error().to_string();
  EXPECT_TRUE(check_backend_coverage(*g, kernels::backend::cpu).is_ok());
  // The CUDA table may be absent from this build (then Add is reported too); Constant never is.
  const status st = check_backend_coverage(*g, kernels::backend::cuda);
  EXPECT_EQ(st.code(), error_code::unsupported);
  EXPECT_NE(st.message().find("(node 'eye_0') has no kernel on the cuda backend"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(st.message().find("const_0"), std::string::npos) << st.message();
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
