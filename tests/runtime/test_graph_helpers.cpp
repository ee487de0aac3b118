// The graph-editing helpers the passes share (runtime/graph.hpp) and tensor's element conversions.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/graph.hpp"

namespace troupe::runtime {
namespace {

TEST(tensor_values, set_value_from_double_is_read_back_by_value_as_double) {
  for (dtype t : {dtype::f32, dtype::f64, dtype::f16, dtype::bf16, dtype::i8, dtype::u8, dtype::i16,
                  dtype::u16, dtype::i32, dtype::u32, dtype::i64, dtype::u64}) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    tensor x = tensor::allocate(t, {3});
    x.set_value_from_double(0, 0.0);
    x.set_value_from_double(1, 3.0);
    x.set_value_from_double(2, 100.0);
    EXPECT_EQ(x.value_as_double(0), 0.0);
    EXPECT_EQ(x.value_as_double(1), 3.0);
    EXPECT_EQ(x.value_as_double(2), 100.0);
  }
  tensor h = tensor::allocate(dtype::f16, {1});
  h.set_value_from_double(0, 0.1);
  EXPECT_NEAR(h.value_as_double(0), 0.1, 1e-4);  // rounded to half, not truncated
  tensor b = tensor::allocate(dtype::boolean, {2});
  b.set_value_from_double(0, 0.0);
  b.set_value_from_double(1, -2.0);
  EXPECT_EQ(b.value_as_double(0), 0.0);
  EXPECT_EQ(b.value_as_double(1), 1.0);
}

/// x -> Relu -> r; Clip(r, lo, hi) -> y with lo a one-element constant and hi a graph input.
struct small_graph {
  graph g;
  int x, r, lo, hi, y;
  small_graph() {
    value vx;
    vx.name = "x";
    vx.type = dtype::f32;
    vx.is_graph_input = true;
    x = g.add_value(vx);
    value vr;
    vr.name = "r";
    vr.type = dtype::f32;
    r = g.add_value(vr);
    lo = g.add_constant("lo", tensor::from_vector<float>({-0.5f}, {}));
    value vh;
    vh.name = "hi";
    vh.type = dtype::f32;
    vh.is_graph_input = true;
    hi = g.add_value(vh);
    value vy;
    vy.name = "y";
    vy.type = dtype::f32;
    vy.is_graph_output = true;
    y = g.add_value(vy);
    node relu;
    relu.op.op_type = "Relu";
    relu.op.opset = 17;
    relu.inputs = {x};
    relu.outputs = {r};
    node clip;
    clip.op.op_type = "Clip";
    clip.op.opset = 17;
    clip.inputs = {r, lo, -1};
    clip.outputs = {y};
    g.nodes = {relu, clip};
    g.inputs = {x, hi};
    g.outputs = {y};
  }
};

TEST(graph_helpers, add_constant_and_scalar_constant) {
  small_graph s;
  EXPECT_EQ(s.g.find("lo"), s.lo);
  ASSERT_TRUE(s.g.values[s.lo].constant.has_value());
  EXPECT_EQ(s.g.values[s.lo].type, dtype::f32);
  EXPECT_EQ(scalar_constant(s.g, s.lo), -0.5);
  EXPECT_FALSE(scalar_constant(s.g, s.x).has_value());  // not a constant
  EXPECT_FALSE(scalar_constant(s.g, -1).has_value());
  const int ints = s.g.add_constant("ints", tensor::from_vector<int64_t>({4}, {1}));
  EXPECT_FALSE(scalar_constant(s.g, ints).has_value());  // not floating
  const int pair = s.g.add_constant("pair", tensor::from_vector<float>({1, 2}, {2}));
  EXPECT_FALSE(scalar_constant(s.g, pair).has_value());  // two elements
}

TEST(graph_helpers, readers_and_remove_nodes) {
  small_graph s;
  s.g.nodes.push_back(s.g.nodes[1]);  // a second Clip reading r (and lo)
  const auto readers = s.g.readers();
  EXPECT_EQ(readers[s.x], (std::vector<int>{0}));
  EXPECT_EQ(readers[s.r], (std::vector<int>{1, 2}));
  EXPECT_EQ(readers[s.lo], (std::vector<int>{1, 2}));
  EXPECT_TRUE(readers[s.y].empty());
  s.g.remove_nodes({0, 1, 0});
  ASSERT_EQ(s.g.nodes.size(), 2u);
  EXPECT_EQ(s.g.nodes[0].op.op_type, "Relu");
  EXPECT_EQ(s.g.nodes[1].op.op_type, "Clip");
}

TEST(graph_helpers, constant_clip_bounds_and_is_onnx_op) {
  small_graph s;
  node& clip = s.g.nodes[1];
  EXPECT_TRUE(is_onnx_op(clip, "Clip"));
  EXPECT_FALSE(is_onnx_op(clip, "Relu"));
  auto b = constant_clip_bounds(s.g, clip);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->first, -0.5f);
  EXPECT_TRUE(std::isinf(b->second) && b->second > 0);  // absent max
  clip.inputs[2] = s.hi;                                // a bound computed at run time
  EXPECT_FALSE(constant_clip_bounds(s.g, clip).has_value());
  clip.op.opset = 6;  // attributes before opset 11
  clip.inputs = {s.r};
  clip.op.attrs.set("min", 0.0f);
  clip.op.attrs.set("max", 6.0f);
  b = constant_clip_bounds(s.g, clip);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->first, 0.0f);
  EXPECT_EQ(b->second, 6.0f);
  clip.op.domain = "troupe";
  EXPECT_FALSE(is_onnx_op(clip, "Clip"));
}

}  // namespace
}  // namespace troupe::runtime
