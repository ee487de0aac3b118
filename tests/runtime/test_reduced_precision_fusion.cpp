// Fusions must happen on reduced-precision graphs too: sessions convert weights to fp16/bf16 at load,
// before the per-plan passes, so a pass that only recognised float32 left every Conv+Add+Relu and
// MatMul+Add unfused on the GPU. The passes are checked here on the CUDA backend's kernel table (no
// device needed: only the registry is consulted); CPU-only builds have no fp16 fused kernels.
#include <gtest/gtest.h>

#include "runtime/onnx_loader.hpp"
#include "runtime/passes.hpp"
#include "runtime/precision.hpp"
#include "runtime/specialize.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

int count_ops(const graph& g, const std::string& op) {
  int n = 0;
  for (const auto& x : g.nodes) n += x.op.op_type == op;
  return n;
}

// X -> Conv(W, B) -> BatchNormalization -> Add(residual X) -> Relu -> MatMul(Wm) -> Add(bm) -> Y
graph conv_block_then_matmul() {
  onnx::ModelProto m = make_model(17);
  auto* g = m.mutable_graph();
  *g->add_input() = make_value_info("X", onnx::TensorProto::FLOAT, {"1", "4", "3", "3"});
  *g->add_output() = make_value_info("Y", onnx::TensorProto::FLOAT, {});
  std::vector<float> w(4 * 4 * 3 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i % 17) - 0.05f;
  add_float_initializer(m, "W", {4, 4, 3, 3}, w);
  add_float_initializer(m, "B", {4}, {0.1f, -0.2f, 0.3f, 0.0f});
  add_float_initializer(m, "scale", {4}, {1.0f, 2.0f, 0.5f, 1.5f});
  add_float_initializer(m, "shift", {4}, {0.0f, 0.1f, 0.2f, 0.3f});
  add_float_initializer(m, "mean", {4}, {0.0f, 0.5f, -0.5f, 0.1f});
  add_float_initializer(m, "var", {4}, {1.0f, 0.25f, 4.0f, 1e-4f});
  std::vector<float> wm(3 * 5, 0.1f), bm(5, 0.5f);
  add_float_initializer(m, "Wm", {3, 5}, wm);
  add_float_initializer(m, "bm", {5}, bm);
  auto* conv = add_node(m, "Conv", {"X", "W", "B"}, {"c"});
  auto* pads = conv->add_attribute();
  pads->set_name("pads");
  pads->set_type(onnx::AttributeProto::INTS);
  for (int i = 0; i < 4; ++i) pads->add_ints(1);
  add_node(m, "BatchNormalization", {"c", "scale", "shift", "mean", "var"}, {"bn"});
  add_node(m, "Add", {"bn", "X"}, {"s"});
  add_node(m, "Relu", {"s"}, {"r"});
  add_node(m, "MatMul", {"r", "Wm"}, {"mm"});
  add_node(m, "Add", {"mm", "bm"}, {"Y"});
  const std::string bytes = serialize(m);
  auto loaded = load_onnx_bytes(bytes.data(), bytes.size(), "");
  EXPECT_TRUE(loaded.has_value()) << loaded.error().to_string();
  return std::move(*loaded);
}

TEST(ReducedPrecisionFusion, Fp16GraphFusesOnTheCudaBackend) {
  if (!kernels::kernel_registry::standard().has_op(kernels::backend::cuda, "troupe", "FusedConv")) {
    GTEST_SKIP() << "this build has no CUDA kernels (configure with CUDA to run this test)";
  }
  graph g = conv_block_then_matmul();
  // What a session does: fold BatchNormalization in float32, convert, then specialise + passes.
  ASSERT_EQ(fold_batchnorm_into_conv(g).value(), 1);
  ASSERT_TRUE(convert_float_precision(g, dtype::f16).has_value());
  ASSERT_TRUE(specialize(g, {tensor_info{dtype::f32, {1, 4, 3, 3}}}).is_ok());
  pass_options po;
  po.where = kernels::backend::cuda;
  ASSERT_TRUE(run_graph_passes(g, po).is_ok());
  EXPECT_EQ(count_ops(g, "FusedConv"), 1);
  EXPECT_EQ(count_ops(g, "FusedMatMul"), 1);
  EXPECT_EQ(count_ops(g, "Relu"), 0);
  EXPECT_EQ(count_ops(g, "Add"), 0);
  EXPECT_EQ(count_ops(g, "BatchNormalization"), 0);
  for (const auto& n : g.nodes) {
    if (n.op.op_type == "FusedConv") {
      EXPECT_EQ(n.op.attrs.get_string("activation", ""), "Relu");
      EXPECT_GE(n.inputs[3], 0) << "the residual Add becomes Z";
      EXPECT_EQ(g.values[n.inputs[1]].type, dtype::f16);
    }
  }
}

TEST(ReducedPrecisionFusion, CpuBackendKeepsFp32Fusions) {
  graph g = conv_block_then_matmul();
  ASSERT_TRUE(specialize(g, {tensor_info{dtype::f32, {1, 4, 3, 3}}}).is_ok());
  ASSERT_TRUE(run_graph_passes(g, pass_options{}).is_ok());
  EXPECT_EQ(count_ops(g, "FusedConv"), 1);
  EXPECT_EQ(count_ops(g, "BatchNormalization"), 0);
  EXPECT_EQ(count_ops(g, "Relu"), 0);
}

}  // namespace
}  // namespace troupe::runtime
