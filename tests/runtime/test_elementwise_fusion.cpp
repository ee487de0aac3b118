// The elementwise chain pass (runtime/elementwise_fusion.hpp) on the CPU: small graphs run with
// and without the pass must agree, and the node counts show which chains became one
// troupe.FusedElementwise node and which the pass had to leave alone (an intermediate read twice
// or exported, an operand that widens the shape, a computed second operand).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <random>

#include "runtime/device.hpp"
#include "runtime/elementwise_fusion.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/passes.hpp"
#include "runtime/plan.hpp"
#include "runtime/specialize.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

struct run_result {
  std::vector<tensor> outputs;
  std::map<std::string, int> ops;  // op counts of the optimised graph
  int fused = 0;                   // chains the pass fused
};

/// Loads, specialises for `inputs`, runs the elementwise pass (or not), plans and runs on the CPU.
expected<run_result> run(const onnx::ModelProto& m, const std::vector<tensor>& inputs, bool fuse) {
  const std::string bytes = serialize(m);
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(bytes.data(), bytes.size(), ""));
  std::vector<tensor_info> infos;
  for (const auto& t : inputs) infos.push_back(t.info());
  TROUPE_RETURN_IF_ERROR(specialize(g, infos));
  run_result r;
  if (fuse) r.fused = fuse_elementwise_chains(g, kernels::backend::cpu);
  for (const auto& n : g.nodes)
    ++r.ops[n.op.domain.empty() ? n.op.op_type : n.op.domain + "." + n.op.op_type];
  TROUPE_ASSIGN_OR_RETURN(auto dev, make_device(kernels::backend::cpu, 0));
  TROUPE_ASSIGN_OR_RETURN(auto p, plan::build(std::move(g), dev));
  for (const auto& oi : p->output_infos()) r.outputs.push_back(tensor::allocate(oi.type, oi.shape));
  TROUPE_RETURN_IF_ERROR(p->run(inputs, r.outputs));
  return r;
}

/// Runs both ways, checks agreement, returns the fused run.
run_result expect_same(const onnx::ModelProto& m, const std::vector<tensor>& inputs) {
  auto plain = run(m, inputs, false);
  auto fused = run(m, inputs, true);
  EXPECT_TRUE(plain) << plain.error().to_string();
  EXPECT_TRUE(fused) << fused.error().to_string();
  if (!plain || !fused) return {};
  EXPECT_EQ(plain->ops.count("troupe.FusedElementwise"), 0u);
  EXPECT_EQ(plain->outputs.size(), fused->outputs.size());
  for (size_t i = 0; i < plain->outputs.size() && i < fused->outputs.size(); ++i) {
    EXPECT_EQ(plain->outputs[i].shape(), fused->outputs[i].shape());
    EXPECT_EQ(plain->outputs[i].type(), fused->outputs[i].type());
    EXPECT_LE(rel_l2(fused->outputs[i], plain->outputs[i]), 1e-6) << "output " << i;
  }
  return std::move(*fused);
}

void add_input(onnx::ModelProto& m, const std::string& name, const std::vector<std::string>& dims,
               int elem_type = 1) {
  *m.mutable_graph()->add_input() = make_value_info(name, elem_type, dims);
}
void add_output(onnx::ModelProto& m, const std::string& name,
                const std::vector<std::string>& dims) {
  *m.mutable_graph()->add_output() = make_value_info(name, 1, dims);
}
void add_constant(onnx::ModelProto& m, const std::string& name, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  add_float_initializer(m, name, dims, random_values(n, 0.5f, 1.5f));
}

int count(const run_result& r, const std::string& op) {
  auto it = r.ops.find(op);
  return it == r.ops.end() ? 0 : it->second;
}

TEST(ElementwiseFusion, ImageNormalizationFromUint8) {
  auto m = make_model();
  add_input(m, "img", {"2", "3", "5", "7"}, onnx::TensorProto::UINT8);
  add_constant(m, "mean", {3, 1, 1});
  add_constant(m, "inv_std", {3, 1, 1});
  set_int(add_node(m, "Cast", {"img"}, {"f"}), "to", onnx::TensorProto::FLOAT);
  add_node(m, "Sub", {"f", "mean"}, {"centered"});
  add_node(m, "Mul", {"centered", "inv_std"}, {"y"});
  add_output(m, "y", {"2", "3", "5", "7"});
  tensor img = tensor::allocate(dtype::u8, {2, 3, 5, 7});
  std::uniform_int_distribution<int> u(0, 255);
  for (int64_t i = 0; i < img.elements(); ++i)
    img.data<uint8_t>()[i] = static_cast<uint8_t>(u(test_rng()));
  auto r = expect_same(m, {img});
  EXPECT_EQ(r.fused, 1);
  EXPECT_EQ(count(r, "troupe.FusedElementwise"), 1);
  EXPECT_EQ(r.ops.size(), 1u);  // Cast, Sub and Mul all absorbed
}

TEST(ElementwiseFusion, AddRelu) {
  auto m = make_model();
  add_input(m, "x", {"4", "16"});
  add_constant(m, "b", {16});
  add_node(m, "Add", {"b", "x"}, {"s"});
  add_node(m, "Relu", {"s"}, {"y"});
  add_output(m, "y", {"4", "16"});
  auto r = expect_same(m, {uniform_input({4, 16}, -2, 2)});
  EXPECT_EQ(r.fused, 1);
  EXPECT_EQ(r.ops.size(), 1u);
}

TEST(ElementwiseFusion, MulAddSigmoidAndReversedOperands) {
  auto m = make_model(13);
  add_input(m, "x", {"2", "3", "4"});
  add_constant(m, "a", {3, 1});
  add_constant(m, "b", {1, 1, 4});
  add_constant(m, "c", {});
  add_constant(m, "d", {2, 3, 4});
  add_float_initializer(m, "lo", {}, {-0.5f});
  add_float_initializer(m, "hi", {}, {0.75f});
  add_node(m, "Mul", {"x", "a"}, {"t1"});
  add_node(m, "Add", {"t1", "b"}, {"t2"});
  add_node(m, "Sigmoid", {"t2"}, {"t3"});
  add_node(m, "Sub", {"c", "t3"}, {"t4"});  // constant on the left: c - v
  add_node(m, "Div", {"d", "t4"}, {"t5"});  // d / v
  add_node(m, "Div", {"t5", "a"}, {"t6"});  // the same constant used twice
  add_node(m, "Tanh", {"t6"}, {"t7"});
  add_node(m, "Clip", {"t7", "lo", "hi"}, {"y"});
  add_output(m, "y", {"2", "3", "4"});
  auto r = expect_same(m, {uniform_input({2, 3, 4}, -2, 2)});
  EXPECT_EQ(r.fused, 1);
  EXPECT_EQ(r.ops.size(), 1u);
}

TEST(ElementwiseFusion, MultiConsumerIntermediateIsNotFused) {
  auto m = make_model();
  add_input(m, "x", {"4", "8"});
  add_constant(m, "b", {8});
  add_node(m, "Add", {"x", "b"}, {"s"});
  add_node(m, "Relu", {"s"}, {"y1"});
  add_node(m, "Sigmoid", {"s"}, {"y2"});
  add_output(m, "y1", {"4", "8"});
  add_output(m, "y2", {"4", "8"});
  auto r = expect_same(m, {uniform_input({4, 8}, -2, 2)});
  EXPECT_EQ(r.fused, 0);
  EXPECT_EQ(count(r, "Add"), 1);
  EXPECT_EQ(count(r, "Relu"), 1);
  EXPECT_EQ(count(r, "Sigmoid"), 1);
}

TEST(ElementwiseFusion, GraphOutputInTheMiddleSplitsTheChain) {
  auto m = make_model();
  add_input(m, "x", {"4", "8"});
  add_constant(m, "b", {8});
  add_node(m, "Add", {"x", "b"}, {"s"});
  add_node(m, "Relu", {"s"}, {"r"});
  add_node(m, "Sigmoid", {"r"}, {"y"});
  add_output(m, "r", {"4", "8"});  // exported: the chain cannot run through it
  add_output(m, "y", {"4", "8"});
  auto r = expect_same(m, {uniform_input({4, 8}, -2, 2)});
  EXPECT_EQ(r.fused, 1);
  EXPECT_EQ(count(r, "Sigmoid"), 1);  // after the exported value: a chain of one stays
  EXPECT_EQ(count(r, "troupe.FusedElementwise"), 1);  // Add -> Relu
  EXPECT_EQ(count(r, "Add"), 0);
}

TEST(ElementwiseFusion, ShapeWideningOperandIsNotFused) {
  auto m = make_model();
  add_input(m, "x", {"2", "3"});
  add_constant(m, "wide", {4, 2, 3});  // broadcasts x up: the main operand lacks the full shape
  add_node(m, "Add", {"x", "wide"}, {"s"});
  add_node(m, "Relu", {"s"}, {"y"});
  add_output(m, "y", {"4", "2", "3"});
  auto r = expect_same(m, {uniform_input({2, 3}, -2, 2)});
  EXPECT_EQ(r.fused, 0);
  EXPECT_EQ(count(r, "Add"), 1);
  EXPECT_EQ(count(r, "Relu"), 1);
}

TEST(ElementwiseFusion, ComputedSecondOperandIsNotFused) {
  auto m = make_model();
  add_input(m, "x", {"4", "8"});
  add_input(m, "z", {"4", "8"});
  add_node(m, "Add", {"x", "z"}, {"s"});
  add_node(m, "Relu", {"s"}, {"y"});
  add_output(m, "y", {"4", "8"});
  auto r = expect_same(m, {uniform_input({4, 8}, -2, 2), uniform_input({4, 8}, -2, 2)});
  EXPECT_EQ(r.fused, 0);
  EXPECT_EQ(count(r, "Add"), 1);
}

TEST(ElementwiseFusion, ComputedOperandMidChainEndsTheChain) {
  auto m = make_model();
  add_input(m, "x", {"4", "8"});
  add_input(m, "z", {"4", "8"});
  add_constant(m, "b", {8});
  add_node(m, "Add", {"x", "b"}, {"s"});
  add_node(m, "Relu", {"s"}, {"r"});
  add_node(m, "Mul", {"r", "z"}, {"p"});  // computed operand: not a step
  add_node(m, "Tanh", {"p"}, {"t"});
  add_node(m, "Mul", {"t", "b"}, {"y"});
  add_output(m, "y", {"4", "8"});
  auto r = expect_same(m, {uniform_input({4, 8}, -2, 2), uniform_input({4, 8}, -2, 2)});
  EXPECT_EQ(r.fused, 2);  // Add -> Relu, and Tanh -> Mul
  EXPECT_EQ(count(r, "Mul"), 1);
  EXPECT_EQ(count(r, "troupe.FusedElementwise"), 2);
}

TEST(ElementwiseFusion, LongChainSplitsAtTheStepLimit) {
  auto m = make_model();
  add_input(m, "x", {"3", "5"});
  add_constant(m, "b", {5});
  std::string v = "x";
  for (int i = 0; i < 20; ++i) {
    std::string o = "v";  // (not "v" + ...: GCC 12 warns falsely)
    o += std::to_string(i);
    if (i % 2)
      add_node(m, "Tanh", {v}, {o});
    else
      add_node(m, "Add", {v, "b"}, {o});
    v = o;
  }
  add_output(m, v, {"3", "5"});
  auto r = expect_same(m, {uniform_input({3, 5}, -2, 2)});
  EXPECT_EQ(r.fused, 2);  // 16 steps, then 4
  EXPECT_EQ(r.ops.size(), 1u);
}

/// All passes (run_graph_passes, channels-last layout forced) with the elementwise pass on or off.
expected<run_result> run_all_passes(const onnx::ModelProto& m, const std::vector<tensor>& inputs,
                                    bool fuse) {
  ::setenv("TROUPE_FUSE_ELEMENTWISE", fuse ? "1" : "0", 1);
  const std::string bytes = serialize(m);
  auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
  std::vector<tensor_info> infos;
  for (const auto& t : inputs) infos.push_back(t.info());
  status st = g ? specialize(*g, infos) : g.take_status();
  pass_options po;
  po.layout = layout_mode::channels_last;
  if (st.is_ok()) st = run_graph_passes(*g, po);
  ::unsetenv("TROUPE_FUSE_ELEMENTWISE");
  TROUPE_RETURN_IF_ERROR(st);
  run_result r;
  for (const auto& n : g->nodes) {
    ++r.ops[n.op.domain.empty() ? n.op.op_type : n.op.domain + "." + n.op.op_type];
    r.fused += n.op.op_type == "FusedElementwise";
  }
  TROUPE_ASSIGN_OR_RETURN(auto dev, make_device(kernels::backend::cpu, 0));
  TROUPE_ASSIGN_OR_RETURN(auto p, plan::build(std::move(*g), dev));
  for (const auto& oi : p->output_infos()) r.outputs.push_back(tensor::allocate(oi.type, oi.shape));
  TROUPE_RETURN_IF_ERROR(p->run(inputs, r.outputs));
  return r;
}

// Conv -> Mul(per channel) -> Sigmoid -> Conv stored channels-last: the layout pass keeps Mul in
// the region (its [C,1,1] constant re-laid out) and the chain then fuses on the stored shapes,
// adding no border transpose.
TEST(ElementwiseFusion, ChainInsideAChannelsLastRegion) {
  auto m = make_model();
  add_input(m, "x", {"2", "4", "6", "6"});
  add_float_initializer(m, "w1", {8, 4, 3, 3}, random_values(8 * 4 * 9, -0.3f, 0.3f));
  add_float_initializer(m, "w2", {4, 8, 1, 1}, random_values(4 * 8, -0.3f, 0.3f));
  add_constant(m, "scale", {8, 1, 1});
  add_node(m, "Conv", {"x", "w1"}, {"c1"});
  add_node(m, "Mul", {"c1", "scale"}, {"m"});
  add_node(m, "Sigmoid", {"m"}, {"s"});
  add_node(m, "Conv", {"s", "w2"}, {"y"});
  add_output(m, "y", {"2", "4", "4", "4"});
  const std::vector<tensor> inputs{uniform_input({2, 4, 6, 6}, -2, 2)};
  auto plain = run_all_passes(m, inputs, false);
  auto fused = run_all_passes(m, inputs, true);
  ASSERT_TRUE(plain) << plain.error().to_string();
  ASSERT_TRUE(fused) << fused.error().to_string();
  EXPECT_EQ(plain->fused, 0);
  EXPECT_EQ(fused->fused, 1);
  EXPECT_EQ(count(*fused, "Mul") + count(*fused, "Sigmoid"), 0);
  EXPECT_EQ(count(*fused, "Transpose"), count(*plain, "Transpose"));
  EXPECT_EQ(count(*fused, "Transpose"), 2) << "one in, one out";
  ASSERT_EQ(fused->outputs.size(), 1u);
  EXPECT_LE(rel_l2(fused->outputs[0], plain->outputs[0]), 1e-6);
}

TEST(ElementwiseFusion, EnvironmentGate) {
  const char* old = std::getenv("TROUPE_FUSE_ELEMENTWISE");
  const std::string saved = old ? old : "";
  unsetenv("TROUPE_FUSE_ELEMENTWISE");
  EXPECT_TRUE(elementwise_fusion_enabled(kernels::backend::cpu));
  EXPECT_TRUE(elementwise_fusion_enabled(kernels::backend::cuda));
  setenv("TROUPE_FUSE_ELEMENTWISE", "1", 1);
  EXPECT_TRUE(elementwise_fusion_enabled(kernels::backend::cuda));
  setenv("TROUPE_FUSE_ELEMENTWISE", "0", 1);
  EXPECT_FALSE(elementwise_fusion_enabled(kernels::backend::cpu));
  EXPECT_FALSE(elementwise_fusion_enabled(kernels::backend::cuda));

  // run_graph_passes honours the gate.
  auto m = make_model();
  add_input(m, "x", {"4", "8"});
  add_constant(m, "b", {8});
  add_node(m, "Add", {"x", "b"}, {"s"});
  add_node(m, "Relu", {"s"}, {"y"});
  add_output(m, "y", {"4", "8"});
  const std::string bytes = serialize(m);
  for (const char* setting : {"0", ""}) {
    if (*setting)
      setenv("TROUPE_FUSE_ELEMENTWISE", setting, 1);
    else
      unsetenv("TROUPE_FUSE_ELEMENTWISE");
    auto g = load_onnx_bytes(bytes.data(), bytes.size(), "");
    ASSERT_TRUE(g) << g.error().to_string();
    ASSERT_TRUE(specialize(*g, {tensor_info{dtype::f32, {4, 8}}}).is_ok());
    ASSERT_TRUE(run_graph_passes(*g, pass_options{}).is_ok());
    int fused = 0;
    for (const auto& n : g->nodes) fused += n.op.op_type == "FusedElementwise";
    EXPECT_EQ(fused, *setting ? 0 : 1) << "TROUPE_FUSE_ELEMENTWISE='" << setting << "'";
  }
  if (old)
    setenv("TROUPE_FUSE_ELEMENTWISE", saved.c_str(), 1);
  else
    unsetenv("TROUPE_FUSE_ELEMENTWISE");
}

}  // namespace
}  // namespace troupe::runtime
