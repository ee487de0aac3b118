// The channels-last layout pass (runtime/layout.hpp) on small whole graphs, CPU backend: the same
// outputs with and without the pass, and the border nodes it inserts.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/layout.hpp"
#include "tests/runtime/layout_test_util.hpp"

namespace troupe::testing {
namespace {

using runtime::layout_mode;

// ResNet's pattern: stem conv, max pool, bottleneck-like blocks with residual adds (one with a
// strided 1x1 projection), a depthwise conv, global average pool, Flatten, Gemm. Everything up to
// the pool runs channels-last: one transpose at the input, and the pool's [N, C, 1, 1] output
// leaves through a free Reshape.
TEST(layout, resnet_like_block_needs_one_transpose) {
  const net n = resnet_like_net();
  const auto r = expect_same_outputs(n.bytes(), {random_input({2, 8, 20, 20}, 1)});
  EXPECT_EQ(r.transposes(), 1);
  EXPECT_EQ(r.reshapes(), 1);
  EXPECT_EQ(r.channels_last.count("troupe.FusedConv"), 6);
  EXPECT_EQ(r.channels_last.count("troupe.MaxPool"), 1);
  EXPECT_EQ(r.channels_last.count("troupe.GlobalAveragePool"), 1);
  EXPECT_EQ(r.channels_last.channels_last_nodes, 8);
  EXPECT_EQ(r.channels_last.count("Gemm"), 1);
  EXPECT_EQ(r.channels_last.transposed, std::vector<std::string>{"x"});
}

// Squeeze-and-excitation: the gate [N, C, 1, 1] multiplies [N, C, H, W]; stored as [N, 1, 1, C]
// and [N, H, W, C] the broadcast still lines up. Constant operands (per channel, and of full
// shape) are rewritten to the stored layout. The 4-D graph output leaves through a transpose.
TEST(layout, squeeze_excitation_block) {
  const net n = squeeze_excitation_net();
  const auto r = expect_same_outputs(n.bytes(), {random_input({2, 8, 12, 12}, 2)});
  EXPECT_EQ(r.transposes(), 2);  // the input and the output
  EXPECT_EQ(r.reshapes(), 0);
  EXPECT_EQ(r.channels_last.count("troupe.FusedConv"), 4);
  EXPECT_EQ(r.channels_last.count("troupe.GlobalAveragePool"), 1);
}

// Concat on the channel axis (axis remapped), average and max pools in the forms oneDNN runs and
// in the ones it cannot (count_include_pad with a ceil_mode window past the pads: direct loop),
// scalar operands, Clip, GlobalMaxPool leaving through a free Reshape and a ReduceMean over the
// spatial axes without keepdims, whose output is already in logical order.
TEST(layout, concat_pools_and_reductions) {
  const net n = concat_pools_net();
  const auto r = expect_same_outputs(n.bytes(), {random_input({1, 6, 17, 17}, 3)});
  EXPECT_EQ(r.transposes(), 1);
  EXPECT_EQ(r.reshapes(), 1);
  EXPECT_EQ(r.channels_last.count("troupe.AveragePool"), 3);
  EXPECT_EQ(r.channels_last.count("troupe.MaxPool"), 1);
  EXPECT_EQ(r.channels_last.count("troupe.GlobalMaxPool"), 1);
  EXPECT_EQ(r.channels_last.count("Concat"), 1);
  EXPECT_EQ(r.channels_last.count("ReduceMean"), 1);
}

// A region pays only when it removes more layout changes than it adds: a lone convolution would
// trade its two internal layout changes for two transposes and stays; two in a row go
// channels-last.
TEST(layout, converts_only_regions_that_pay) {
  {
    net n;
    n.input("x", {1, 4, 9, 9});
    n.output(n.op("Relu", {n.conv("x", 4, 8, {3, 3}, 1, 1)}));
    const auto r = expect_same_outputs(n.bytes(), {random_input({1, 4, 9, 9}, 4)});
    EXPECT_EQ(r.transposes(), 0);
    EXPECT_EQ(r.channels_last.channels_last_nodes, 0);
  }
  {
    net n;
    n.input("x", {1, 4, 9, 9});
    n.output(n.conv(n.op("Relu", {n.conv("x", 4, 8, {3, 3}, 1, 1)}), 8, 4, {3, 3}, 1, 1));
    const auto r = expect_same_outputs(n.bytes(), {random_input({1, 4, 9, 9}, 5)});
    EXPECT_EQ(r.transposes(), 2);
    EXPECT_EQ(r.channels_last.channels_last_nodes, 2);
  }
}

// A binary op whose other operand comes from outside the region would need a transpose of its
// own: the pass leaves it out of the region (one exit instead of an entry and an exit).
TEST(layout, leaves_out_nodes_that_only_add_borders) {
  net n;
  n.input("x", {1, 4, 9, 9});
  n.input("u", {1, 8, 9, 9});
  const std::string t = n.conv(n.op("Relu", {n.conv("x", 4, 8, {3, 3}, 1, 1)}), 8, 8, {3, 3}, 1, 1);
  n.output(n.op("Sub", {t, "u"}));
  const auto r = expect_same_outputs(
      n.bytes(), {random_input({1, 4, 9, 9}, 6), random_input({1, 8, 9, 9}, 7)});
  EXPECT_EQ(r.transposes(), 2);
  EXPECT_EQ(r.channels_last.channels_last_nodes, 2);
  EXPECT_EQ(r.channels_last.count("Sub"), 1);
}

// MaxPool's Indices output has no channels-last form: such a pool stays outside the region.
TEST(layout, max_pool_with_indices_stays_nchw) {
  net n;
  n.input("x", {1, 4, 10, 10});
  const std::string t = n.conv(n.op("Relu", {n.conv("x", 4, 8, {3, 3}, 1, 1)}), 8, 8, {3, 3}, 1, 1);
  auto* mp = add_node(n.model(), "MaxPool", {t}, {"pooled", "indices"});
  set_ints(mp, "kernel_shape", {2, 2});
  set_ints(mp, "strides", {2, 2});
  n.output("pooled");
  auto* o = n.model().mutable_graph()->add_output();
  o->set_name("indices");
  o->mutable_type()->mutable_tensor_type()->set_elem_type(7);
  auto plain = run_with_layout(n.bytes(), {random_input({1, 4, 10, 10}, 8)}, layout_mode::nchw);
  auto cl =
      run_with_layout(n.bytes(), {random_input({1, 4, 10, 10}, 8)}, layout_mode::channels_last);
  ASSERT_TRUE(plain) << plain.error().to_string();
  ASSERT_TRUE(cl) << cl.error().to_string();
  EXPECT_EQ(cl->count("MaxPool"), 1);
  EXPECT_EQ(cl->channels_last_nodes, 2);
  EXPECT_LE(rel_l2(cl->outputs[0], plain->outputs[0]), 1e-5);
  for (int64_t i = 0; i < plain->outputs[1].elements(); ++i) {
    ASSERT_EQ(cl->outputs[1].data<int64_t>()[i], plain->outputs[1].data<int64_t>()[i]) << i;
  }
}

// 1-D and 3-D convolutions and pools: stored (N, L, C) and (N, D, H, W, C).
TEST(layout, one_and_three_spatial_axes) {
  {
    net n;
    n.input("x", {2, 4, 30});
    std::string t = n.op("Relu", {n.conv("x", 4, 6, {5}, 1, 2)});
    t = n.pool("MaxPool", t, {3}, 2, {1, 1});
    n.output(n.conv(t, 6, 5, {3}, 2, 1));
    const auto r = expect_same_outputs(n.bytes(), {random_input({2, 4, 30}, 9)});
    EXPECT_EQ(r.transposes(), 2);
    EXPECT_EQ(r.channels_last.channels_last_nodes, 3);
  }
  {
    net n;
    n.input("x", {1, 3, 6, 7, 8});
    std::string t = n.op("Relu", {n.conv("x", 3, 4, {3, 3, 3}, 1, 1)});
    t = n.pool("AveragePool", t, {2, 2, 2}, 2, {0, 0, 0, 1, 1, 1}, 0, 0);
    n.output(n.conv(t, 4, 4, {3, 3, 3}, 1, 1));
    const auto r = expect_same_outputs(n.bytes(), {random_input({1, 3, 6, 7, 8}, 10)});
    EXPECT_EQ(r.transposes(), 2);
    EXPECT_EQ(r.channels_last.channels_last_nodes, 3);
  }
}

// The pass is off on the CPU by default and on with layout_mode::channels_last.
TEST(layout, cpu_default_is_off) {
  runtime::pass_options po;
  po.where = kernels::backend::cpu;
  if (std::getenv("TROUPE_CHANNELS_LAST") == nullptr) {
    EXPECT_FALSE(runtime::channels_last_enabled(po));
  }
  po.layout = layout_mode::channels_last;
  EXPECT_TRUE(runtime::channels_last_enabled(po));
  po.where = kernels::backend::cuda;
  po.layout = layout_mode::nchw;
  EXPECT_FALSE(runtime::channels_last_enabled(po));
}

}  // namespace
}  // namespace troupe::testing
