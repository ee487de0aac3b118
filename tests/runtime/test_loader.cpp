#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>

#include "runtime/onnx_loader.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;
namespace fs = std::filesystem;

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

/// A model folder and a folder beside it ("outside") in a fresh temporary directory; the model's
/// initializer 'w' (4 floats) is read from external data at `location`, offset 4.
class external_data : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("troupe_ext_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(model_dir());
    fs::create_directories(outside());
    write_weights(model_dir() / "w.bin");
    write_weights(outside() / "secret.bin");
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path model_dir() const { return root_ / "model"; }
  fs::path outside() const { return root_ / "outside"; }

  void write_weights(const fs::path& p) const {
    std::ofstream f(p, std::ios::binary);
    f.write("PAD!", 4);
    f.write(reinterpret_cast<const char*>(weights_.data()), 16);
  }

  static std::string model_bytes(const std::string& location) {
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
  }

  expected<graph> load(const std::string& location) const {
    const std::string bytes = model_bytes(location);
    return load_onnx_bytes(bytes.data(), bytes.size(), model_dir().string());
  }

  /// Loads on another thread and waits for it with a deadline: a loader that blocked on the file
  /// fails the test instead of hanging it. `fifo` (when given) is opened for writing afterwards
  /// if the load is still blocked, so that the thread can end.
  static expected<graph> load_within_deadline(std::function<expected<graph>()> load,
                                              const fs::path& fifo) {
    auto result = std::async(std::launch::async, std::move(load));
    if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) ::close(fd);
      result.wait();
      return internal_error("the load blocked on '" + fifo.string() + "'");
    }
    return result.get();
  }

  void expect_refused(const expected<graph>& g, const std::string& location) const {
    ASSERT_FALSE(g) << location << " was read";
    EXPECT_EQ(g.error().code(), error_code::invalid_model) << g.error().to_string();
    EXPECT_NE(g.error().message().find("tensor 'w'"), std::string::npos) << g.error().message();
    EXPECT_NE(g.error().message().find(location), std::string::npos) << g.error().message();
  }

  fs::path root_;
  std::vector<float> weights_ = {1.5f, -2.0f, 3.25f, 4.0f};
};

TEST_F(external_data, is_read_from_the_model_folder) {
  auto g = load("w.bin");
  ASSERT_TRUE(g) << g.error().to_string();
  const value& wv = g->values[g->find("w")];
  ASSERT_TRUE(wv.constant);
  EXPECT_EQ(wv.constant->data<float>()[2], 3.25f);
}

TEST_F(external_data, may_not_name_a_path_outside_the_folder) {
  expect_refused(load("../outside/secret.bin"), "../outside/secret.bin");
  // libonnx's checker (opset <= 17) refuses an absolute location first, in its own words.
  auto absolute = load((outside() / "secret.bin").string());
  ASSERT_FALSE(absolute);
  EXPECT_EQ(absolute.error().code(), error_code::invalid_model) << absolute.error().to_string();
}

TEST_F(external_data, a_symlink_to_a_file_outside_is_refused) {
  fs::create_symlink(outside() / "secret.bin", model_dir() / "link.bin");
  auto g = load("link.bin");
  expect_refused(g, "link.bin");
  EXPECT_NE(g.error().message().find("outside the model folder"), std::string::npos)
      << g.error().message();
}

TEST_F(external_data, a_symlinked_folder_pointing_outside_is_refused) {
  fs::create_directory_symlink(outside(), model_dir() / "weights");
  expect_refused(load("weights/secret.bin"), "weights/secret.bin");
}

TEST_F(external_data, a_symlink_pointing_inside_the_folder_is_allowed) {
  fs::create_directories(model_dir() / "data");
  fs::rename(model_dir() / "w.bin", model_dir() / "data" / "w.bin");
  fs::create_symlink("data/w.bin", model_dir() / "w.bin");
  fs::create_directory_symlink("data", model_dir() / "alias");
  for (const std::string location : {"w.bin", "alias/w.bin"}) {
    auto g = load(location);
    ASSERT_TRUE(g) << location << ": " << g.error().to_string();
    EXPECT_EQ(g->values[g->find("w")].constant->data<float>()[3], 4.0f) << location;
  }
}

TEST_F(external_data, a_model_folder_reached_through_a_symlink_reads_its_own_files) {
  // models/<name>/<version> linked to where the files really are: the real folder is the bound.
  fs::create_directory_symlink(model_dir(), root_ / "linked_model");
  const std::string bytes = model_bytes("w.bin");
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), (root_ / "linked_model").string());
  ASSERT_TRUE(g) << g.error().to_string();
}

TEST_F(external_data, a_fifo_is_refused_without_blocking) {
  const fs::path fifo = model_dir() / "pipe.bin";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  auto g = load_within_deadline([this] { return load("pipe.bin"); }, fifo);
  expect_refused(g, "pipe.bin");
  EXPECT_NE(g.error().message().find("FIFO"), std::string::npos) << g.error().message();
}

TEST_F(external_data, a_model_file_that_is_a_fifo_is_refused_without_blocking) {
  const fs::path fifo = model_dir() / "model.onnx";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  auto g = load_within_deadline([&] { return load_onnx_file(fifo.string()); }, fifo);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code(), error_code::io_error) << g.error().to_string();
  EXPECT_NE(g.error().message().find("not a regular file"), std::string::npos)
      << g.error().message();
}

}  // namespace
}  // namespace troupe::runtime
