// Session batch buckets, instances and memory report on the CPU backend (the CUDA side is in
// tests/gpu/test_cuda_graphs.cpp and test_cuda_instances.cpp).
#include <gtest/gtest.h>

#include <cstring>

#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tests/runtime/layout_test_util.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

/// x [batch, 4, 6, 6] -> conv, relu, global pool, flatten, Gemm -> y [batch, 5].
std::string small_model(const std::string& output_batch = "batch") {
  net n;
  *n.model().mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "4", "6", "6"});
  const std::string t = n.op(
      "Flatten", {n.op("GlobalAveragePool", {n.op("Relu", {n.conv("x", 4, 8, {3, 3}, 1, 1)})})});
  std::string y;
  auto* gemm = n.node("Gemm", {t, n.constant({5, 8}, 0.3f), n.constant({5}, 0.1f)}, &y);
  set_int(gemm, "transB", 1);
  *n.model().mutable_graph()->add_output() = make_value_info(y, 1, {output_batch, "5"});
  return n.bytes();
}

expected<std::unique_ptr<session>> make(const std::string& bytes, std::vector<int64_t> buckets) {
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(bytes.data(), bytes.size(), ""));
  session_options o;
  o.batch_buckets = std::move(buckets);
  return session::create_from_graph(std::move(g), o);
}

TEST(session_buckets, padded_run_returns_the_unpadded_rows) {
  const std::string model = small_model();
  auto bucketed = make(model, {4, 1, 8, 2, 4});
  ASSERT_TRUE(bucketed) << bucketed.error().to_string();
  auto exact = make(model, {});
  ASSERT_TRUE(exact);
  EXPECT_EQ((*bucketed)->bucket_for(1), 1);
  EXPECT_EQ((*bucketed)->bucket_for(3), 4);
  EXPECT_EQ((*bucketed)->bucket_for(5), 8);
  EXPECT_EQ((*bucketed)->bucket_for(8), 8);
  EXPECT_EQ((*bucketed)->bucket_for(9), 9) << "above the largest bucket: unpadded";
  EXPECT_EQ((*exact)->bucket_for(3), 3);
  for (int64_t rows : {3, 5, 1, 7, 9}) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    const tensor x = random_input({rows, 4, 6, 6}, 10 + rows);
    auto padded = (*bucketed)->run(std::vector<tensor>{x});
    ASSERT_TRUE(padded) << padded.error().to_string();
    auto unpadded = (*exact)->run(std::vector<tensor>{x});
    ASSERT_TRUE(unpadded);
    ASSERT_EQ((*padded)[0].shape(), (shape_t{rows, 5}));
    // Rows are independent in this model, and the CPU kernels do not depend on the batch size for
    // a row's arithmetic within 1e-6.
    EXPECT_LE(rel_l2((*padded)[0], (*unpadded)[0]), 1e-6);
  }
  // Buckets 4, 8 and 1 plus the unpadded 9: four plans, none for 3, 5 or 7.
  EXPECT_EQ((*bucketed)->memory_report().plans, 4u);
  EXPECT_EQ((*exact)->memory_report().plans, 5u);
}

TEST(session_buckets, padding_rows_do_not_leak_into_the_result) {
  // Rows of the padded batch beyond n are zeros: a row-wise model's first n rows cannot change
  // with them, and a wrong slice (the padding rows, or rows of the wrong size) would differ.
  auto s = make(small_model(), {4});
  ASSERT_TRUE(s);
  const tensor x = random_input({3, 4, 6, 6}, 3);
  tensor x4 = tensor::zeros(dtype::f32, {4, 4, 6, 6});
  std::memcpy(x4.raw(), x.raw(), x.bytes());
  auto three = (*s)->run(std::vector<tensor>{x});
  auto four = (*s)->run(std::vector<tensor>{x4});
  ASSERT_TRUE(three && four);
  ASSERT_EQ((*three)[0].elements(), 15);
  EXPECT_EQ(std::memcmp((*three)[0].raw(), (*four)[0].raw(), (*three)[0].bytes()), 0);
}

TEST(session_buckets, models_without_a_shared_batch_symbol_are_refused) {
  auto fixed_output = make(small_model("5"), {1, 2});
  ASSERT_FALSE(fixed_output);
  EXPECT_EQ(fixed_output.error().code(), error_code::invalid_argument);
  auto other_symbol = make(small_model("n"), {1, 2});
  ASSERT_FALSE(other_symbol);
  EXPECT_EQ(other_symbol.error().code(), error_code::invalid_argument);
  auto zero = make(small_model(), {0, 2});
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code(), error_code::invalid_argument);
  // The same models without buckets load.
  EXPECT_TRUE(make(small_model("5"), {}));
}

TEST(session_buckets, mismatched_batch_rows_get_a_typed_error) {
  net n;
  *n.model().mutable_graph()->add_input() = make_value_info("a", 1, {"batch", "3"});
  *n.model().mutable_graph()->add_input() = make_value_info("b", 1, {"batch", "3"});
  std::string y;
  n.node("Add", {"a", "b"}, &y);
  *n.model().mutable_graph()->add_output() = make_value_info(y, 1, {"batch", "3"});
  auto s = make(n.bytes(), {4});
  ASSERT_TRUE(s) << s.error().to_string();
  auto r = (*s)->run(
      std::vector<tensor>{tensor::zeros(dtype::f32, {2, 3}), tensor::zeros(dtype::f32, {3, 3})});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), error_code::invalid_argument);
}

TEST(session_buckets, warm_up_compiles_every_bucket) {
  auto s = make(small_model(), {1, 2, 4});
  ASSERT_TRUE(s);
  ASSERT_TRUE((*s)->warm_up().is_ok());
  const instance_memory m = (*s)->memory_report();
  EXPECT_EQ(m.plans, 3u);
  EXPECT_EQ(m.graph_plans, 0u) << "the CPU records no graphs";
  EXPECT_GT(m.arena_bytes, 0u);
  auto none = make(small_model(), {});
  ASSERT_TRUE(none);
  EXPECT_EQ((*none)->warm_up().code(), error_code::invalid_argument);
}

TEST(session_instances, an_instance_runs_the_same_model_on_its_own_plans) {
  auto a = make(small_model(), {2});
  ASSERT_TRUE(a);
  const tensor x = random_input({2, 4, 6, 6}, 5);
  auto ya = (*a)->run(std::vector<tensor>{x});
  ASSERT_TRUE(ya);
  auto b = (*a)->create_instance();
  ASSERT_TRUE(b) << b.error().to_string();
  EXPECT_TRUE((*a)->shares_weights_with(**b));
  EXPECT_EQ((*b)->memory_report().plans, 0u) << "plans are per instance";
  EXPECT_EQ((*b)->bucket_for(1), 2) << "buckets carry over";
  auto yb = (*b)->run(std::vector<tensor>{x});
  ASSERT_TRUE(yb);
  EXPECT_EQ(std::memcmp((*ya)[0].raw(), (*yb)[0].raw(), (*ya)[0].bytes()), 0);
  // The weights are the session's host constants, the same bytes for both instances.
  EXPECT_EQ((*a)->memory_report().weights_bytes, (*b)->memory_report().weights_bytes);
  EXPECT_EQ((*a)->memory_report().weights_bytes, (8u * 4 * 3 * 3 + 8 + 5 * 8 + 5) * sizeof(float));
}

TEST(session_memory, report_adds_up_the_plans) {
  auto s = make(small_model(), {});
  ASSERT_TRUE(s);
  size_t arenas = 0;
  for (int64_t rows : {1, 3}) {
    auto p = (*s)->prepare({{dtype::f32, {rows, 4, 6, 6}}});
    ASSERT_TRUE(p);
    arenas += (*p)->memory().planned_arena_bytes;
    EXPECT_EQ((*p)->mode(), plan::launch_mode::eager);
    EXPECT_EQ((*p)->eager_reason(), "") << "the CPU is eager by nature, not for a reason";
    EXPECT_LE((*p)->memory().peak_live_bytes, (*p)->memory().planned_arena_bytes);
  }
  const instance_memory m = (*s)->memory_report();
  EXPECT_EQ(m.plans, 2u);
  EXPECT_EQ(m.arena_bytes, arenas);
  EXPECT_GE(m.own_reserved_bytes, arenas);
  EXPECT_EQ(m.device_reserved_bytes, (*s)->device_reserved_bytes());
}

}  // namespace
}  // namespace troupe::runtime
