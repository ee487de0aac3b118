#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/onnx_loader.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

onnx::ModelProto relu_model(int opset = 17) {
  auto m = make_model(opset);
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "4"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "4"});
  add_node(m, "Relu", {"x"}, {"y"});
  return m;
}

TEST(loader, reads_inputs_outputs_and_symbolic_dims) {
  auto bytes = serialize(relu_model());
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_TRUE(g) << g.error().to_string();
  ASSERT_EQ(g->inputs.size(), 1u);
  const value& x = g->values[g->inputs[0]];
  EXPECT_EQ(x.name, "x");
  EXPECT_EQ(x.type, dtype::f32);
  ASSERT_TRUE(x.declared_shape);
  EXPECT_EQ((*x.declared_shape)[0].symbol, "batch");
  EXPECT_EQ((*x.declared_shape)[1].size, 4);
  EXPECT_EQ(g->nodes.size(), 1u);
}

TEST(loader, garbage_bytes_are_an_invalid_model) {
  const std::string junk = "this is not a protobuf \x01\x02\x03\xff\xfe";
  auto g = load_onnx_bytes(junk.data(), junk.size(), "");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code(), error_code::invalid_model);
}

TEST(loader, truncated_model_is_an_error_not_a_crash) {
  auto bytes = serialize(relu_model());
  for (size_t cut = 1; cut < bytes.size(); cut += 3) {
    auto g = load_onnx_bytes(bytes.data(), cut, "");
    if (!g) EXPECT_NE(g.error().code(), error_code::ok);
  }
}

TEST(loader, missing_file_is_not_found) {
  auto g = load_onnx_file("/nonexistent/model.onnx");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code(), error_code::not_found);
}

TEST(loader, unsupported_opset_is_named) {
  auto bytes = serialize(relu_model(19));
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code(), error_code::unsupported);
  EXPECT_NE(g.error().message().find("opset 19"), std::string::npos) << g.error().message();
}

TEST(loader, undefined_node_input_is_an_invalid_model) {
  auto m = relu_model();
  add_node(m, "Relu", {"nowhere"}, {"z"});
  auto bytes = serialize(m);
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code(), error_code::invalid_model);
}

TEST(loader, raw_data_size_mismatch_is_an_invalid_model) {
  auto m = relu_model();
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name("w");
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims(10);
  t->set_raw_data(std::string(12, '\0'));  // 3 floats, not 10
  auto bytes = serialize(m);
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code(), error_code::invalid_model);
}

TEST(loader, external_data_is_read_and_may_not_escape_the_folder) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("troupe_ext_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<float> w = {1.5f, -2.0f, 3.25f, 4.0f};
  {
    std::ofstream f(dir / "w.bin", std::ios::binary);
    f.write("PAD!", 4);
    f.write(reinterpret_cast<const char*>(w.data()), 16);
  }
  auto make = [&](const std::string& location) {
    auto m = relu_model();
    auto* t = m.mutable_graph()->add_initializer();
    t->set_name("w");
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(4);
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* e = t->add_external_data();
    e->set_key("location");
    e->set_value(location);
    e = t->add_external_data();
    e->set_key("offset");
    e->set_value("4");
    return serialize(m);
  };
  auto ok = make("w.bin");
  auto g = load_onnx_bytes(ok.data(), ok.size(), dir.string());
  ASSERT_TRUE(g) << g.error().to_string();
  const value& wv = g->values[g->find("w")];
  ASSERT_TRUE(wv.constant);
  EXPECT_EQ(wv.constant->data<float>()[2], 3.25f);
  auto escape = make("../etc/passwd");
  auto bad = load_onnx_bytes(escape.data(), escape.size(), dir.string());
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), error_code::invalid_model);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace troupe::runtime
