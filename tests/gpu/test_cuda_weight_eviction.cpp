// Evictable weights on a GPU (runtime::session_options::evictable_weights; the constant store's
// evictable heap, kernels/cuda/evictable_heap.hpp): a model's weights go to pinned host memory
// and the device gets their memory back; paged in again, they sit at the same addresses, so the
// plans, their captured CUDA graphs and their convolution choices are used as they are, and the
// outputs are bit-identical to those before the eviction. Runs while evicted are refused (a
// kernel reading unmapped weights would poison the context), and so are plan compiles.
//
// ResNet-50 (deterministic weights, fp16, batch 8) when tests/models/resnet50.onnx is there, and
// always the small conv + matmul model of the CUDA graph tests. Prints the eviction and page-in
// times: the page-in is what a batch for an evicted model waits for.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/gpu/test_cuda_graphs_models.hpp"
#include "tests/runtime/layout_test_util.hpp"

namespace troupe::testing {
namespace {

using runtime::precision;

expected<std::unique_ptr<runtime::session>> evictable_session(const std::string& bytes, precision p,
                                                              bool evictable = true,
                                                              bool evictable_arenas = false) {
  TROUPE_ASSIGN_OR_RETURN(runtime::graph g,
                          runtime::load_onnx_bytes(bytes.data(), bytes.size(), ""));
  runtime::session_options o;
  o.where = kernels::backend::cuda;
  o.compute_precision = p;
  o.evictable_weights = evictable;
  o.evictable_arenas = evictable_arenas;
  return runtime::session::create_from_graph(std::move(g), o);
}

size_t device_free_bytes() {
  size_t free_bytes = 0, total = 0;
  EXPECT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  return free_bytes;
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

expected<tensor> run_plan(runtime::plan& p, const tensor& x) {
  tensor y = tensor::allocate(p.output_infos()[0].type, p.output_infos()[0].shape);
  std::vector<tensor> out{y};
  TROUPE_RETURN_IF_ERROR(p.run(std::vector<tensor>{x}, out));
  return out[0];
}

/// A plan for `x` run three times (eager, then captured, then replayed) and what a run after its
/// memory came back must match: the graph's output and how it launched.
struct warmed_plan {
  std::shared_ptr<runtime::plan> plan;
  tensor want;
  runtime::plan::launch_mode mode{};
  size_t graph_nodes = 0;
};

void warm_up(runtime::session& s, const tensor& x, warmed_plan& out) {
  out.plan = plan_for(s, x);
  ASSERT_NE(out.plan, nullptr);
  for (int i = 0; i < 3; ++i) {
    auto y = run_plan(*out.plan, x);
    ASSERT_TRUE(y) << y.error().to_string();
    out.want = *y;
  }
  out.mode = out.plan->mode();
  out.graph_nodes = out.plan->graph_node_count();
}

/// The same bytes as before, from the same plan and CUDA graph (nothing rebuilt or re-captured).
void expect_as_before(const warmed_plan& w, const tensor& x) {
  auto got = run_plan(*w.plan, x);
  ASSERT_TRUE(got) << got.error().to_string();
  EXPECT_TRUE(same_bytes(*got, w.want)) << "rel L2 " << rel_l2(*got, w.want);
  EXPECT_EQ(w.plan->mode(), w.mode) << "the plan was not rebuilt";
  EXPECT_EQ(w.plan->graph_node_count(), w.graph_nodes) << "the CUDA graph was not re-captured";
}

/// Evicts and pages in `bytes`'s weights `cycles` times around runs of input `x`; every output
/// after a page-in equals the first bit for bit.
void expect_eviction_round_trips(const std::string& name, const std::string& bytes, const tensor& x,
                                 precision p, int cycles) {
  SCOPED_TRACE(name);
  auto s = evictable_session(bytes, p);
  ASSERT_TRUE(s) << s.error().to_string();
  warmed_plan w;
  ASSERT_NO_FATAL_FAILURE(warm_up(**s, x, w));
  const runtime::instance_memory before = (*s)->memory_report();
  ASSERT_GT(before.weights_footprint_bytes, 0u);
  EXPECT_GE(before.weights_footprint_bytes, before.weights_bytes);
  EXPECT_GE(before.weights_reserved_bytes, before.weights_footprint_bytes)
      << "resident: every live chunk is mapped";
  EXPECT_TRUE(before.weights_resident);

  for (int cycle = 0; cycle < cycles; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const size_t free_before = device_free_bytes();
    auto t0 = std::chrono::steady_clock::now();
    auto released = (*s)->evict_weights();
    const double evict_ms = ms_since(t0);
    ASSERT_TRUE(released) << released.error().to_string();
    // Every live chunk, and any emptied since the last trim.
    EXPECT_GE(*released, before.weights_footprint_bytes);
    const runtime::instance_memory evicted = (*s)->memory_report();
    EXPECT_FALSE(evicted.weights_resident);
    EXPECT_EQ(evicted.weights_reserved_bytes, 0u);
    EXPECT_EQ(evicted.weights_footprint_bytes, before.weights_footprint_bytes);
    EXPECT_GE(evicted.weights_host_bytes, before.weights_footprint_bytes) << "pinned copies";
    // The device got the memory back. The driver may allocate a little of its own meanwhile
    // (pinning host memory, first uses): judged where the weights dwarf that, printed always.
    const size_t free_evicted = device_free_bytes();
    const size_t slack = std::max(*released / 10, size_t{4} << 20);
    std::printf("%s: device free %.1f -> %.1f MiB after releasing %.1f MiB\n", name.c_str(),
                static_cast<double>(free_before) / (1 << 20),
                static_cast<double>(free_evicted) / (1 << 20),
                static_cast<double>(*released) / (1 << 20));
    if (*released >= (size_t{16} << 20)) {
      EXPECT_GE(free_evicted + slack, free_before + *released);
    }

    // While evicted: runs and compiles are refused, typed, and the context stays healthy.
    auto refused = run_plan(*w.plan, x);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code(), error_code::unavailable) << refused.error().to_string();
    tensor other = random_input({x.dim(0) + 1, x.dim(1), x.dim(2), x.dim(3)}, 99);
    auto compiled = (*s)->prepare({other.info()});
    ASSERT_FALSE(compiled);
    EXPECT_EQ(compiled.error().code(), error_code::unavailable);
    auto again = (*s)->evict_weights();
    ASSERT_TRUE(again);
    EXPECT_EQ(*again, 0u) << "evicting twice is a no-op";

    t0 = std::chrono::steady_clock::now();
    auto mapped = (*s)->page_in_weights();
    const double page_in_ms = ms_since(t0);
    ASSERT_TRUE(mapped) << mapped.error().to_string();
    EXPECT_EQ(*mapped, before.weights_footprint_bytes);
    const size_t free_paged = device_free_bytes();
    if (*mapped >= (size_t{16} << 20)) {
      EXPECT_LE(free_paged, free_evicted - *mapped + slack);
    }
    EXPECT_TRUE((*s)->weights_resident());
    std::printf(
        "%s cycle %d: %.1f MiB of weights, evicted in %.2f ms, paged in in %.2f ms (%.1f GB/s)\n",
        name.c_str(), cycle, static_cast<double>(*mapped) / (1 << 20), evict_ms, page_in_ms,
        static_cast<double>(*mapped) / (page_in_ms * 1e6));

    expect_as_before(w, x);
  }
}

TEST(CudaWeightEviction, SmallConvModelRoundTripsBitIdentical) {
  TROUPE_REQUIRE_GPU();
  for (precision p : {precision::fp32, precision::fp16})
    expect_eviction_round_trips(p == precision::fp16 ? "conv_matmul fp16" : "conv_matmul fp32",
                                conv_matmul_model(), random_input({4, 8, 12, 12}, 7), p, 3);
}

TEST(CudaWeightEviction, ResNet50RoundTripsBitIdentical) {
  TROUPE_REQUIRE_GPU();
  const std::string bytes = filled_model("resnet50");
  if (bytes.empty()) GTEST_SKIP() << "resnet50.onnx is not on disk";
  expect_eviction_round_trips("resnet50 fp16", bytes, random_input({8, 3, 224, 224}, 24),
                              precision::fp16, 3);
}

/// Discards and restores the arenas of a session (session_options::evictable_arenas) `cycles`
/// times around runs of `x`: the device gets the arenas' memory back, runs and compiles are
/// refused meanwhile, and after a restore the plan (its CUDA graph, baked with the arenas'
/// addresses) runs as it was and gives the same bytes.
void expect_arena_round_trips(const std::string& name, const std::string& bytes, const tensor& x,
                              precision p, int cycles) {
  SCOPED_TRACE(name);
  auto s = evictable_session(bytes, p, /*evictable=*/true, /*evictable_arenas=*/true);
  ASSERT_TRUE(s) << s.error().to_string();
  warmed_plan w;
  ASSERT_NO_FATAL_FAILURE(warm_up(**s, x, w));
  const runtime::instance_memory before = (*s)->memory_report();
  ASSERT_GE(before.arena_footprint_bytes, before.arena_bytes) << "every plan's arena in the heap";
  ASSERT_GT(before.arena_footprint_bytes, 0u);
  EXPECT_GE(before.arena_reserved_bytes, before.arena_footprint_bytes);
  EXPECT_GE(before.own_reserved_bytes, before.arena_reserved_bytes);
  EXPECT_TRUE(before.arenas_resident);

  for (int cycle = 0; cycle < cycles; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const size_t free_before = device_free_bytes();
    auto t0 = std::chrono::steady_clock::now();
    auto released = (*s)->discard_arenas();
    const double discard_ms = ms_since(t0);
    ASSERT_TRUE(released) << released.error().to_string();
    EXPECT_GE(*released, before.arena_footprint_bytes);
    const runtime::instance_memory away = (*s)->memory_report();
    EXPECT_FALSE(away.arenas_resident);
    EXPECT_EQ(away.arena_reserved_bytes, 0u);
    EXPECT_EQ(away.arena_footprint_bytes, before.arena_footprint_bytes);
    EXPECT_TRUE(away.weights_resident) << "the weights are another matter";
    const size_t free_away = device_free_bytes();
    const size_t slack = std::max(*released / 10, size_t{4} << 20);
    if (*released >= (size_t{16} << 20)) EXPECT_GE(free_away + slack, free_before + *released);

    auto refused = run_plan(*w.plan, x);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code(), error_code::unavailable) << refused.error().to_string();
    EXPECT_NE(refused.error().message().find("arenas"), std::string::npos);
    tensor other = random_input({x.dim(0) + 1, x.dim(1), x.dim(2), x.dim(3)}, 98);
    auto compiled = (*s)->prepare({other.info()});
    ASSERT_FALSE(compiled);
    EXPECT_EQ(compiled.error().code(), error_code::unavailable);

    t0 = std::chrono::steady_clock::now();
    auto mapped = (*s)->restore_arenas();
    const double restore_ms = ms_since(t0);
    ASSERT_TRUE(mapped) << mapped.error().to_string();
    EXPECT_EQ(*mapped, before.arena_footprint_bytes);
    EXPECT_TRUE((*s)->arenas_resident());
    std::printf("%s cycle %d: %.1f MiB of arenas, discarded in %.2f ms, restored in %.2f ms\n",
                name.c_str(), cycle, static_cast<double>(*mapped) / (1 << 20), discard_ms,
                restore_ms);

    expect_as_before(w, x);
  }
}

TEST(CudaArenaEviction, SmallConvModelRoundTripsBitIdentical) {
  TROUPE_REQUIRE_GPU();
  for (precision p : {precision::fp32, precision::fp16})
    expect_arena_round_trips(p == precision::fp16 ? "conv_matmul fp16" : "conv_matmul fp32",
                             conv_matmul_model(), random_input({4, 8, 12, 12}, 7), p, 3);
}

TEST(CudaArenaEviction, ResNet50RoundTripsBitIdentical) {
  TROUPE_REQUIRE_GPU();
  const std::string bytes = filled_model("resnet50");
  if (bytes.empty()) GTEST_SKIP() << "resnet50.onnx is not on disk";
  expect_arena_round_trips("resnet50 fp16", bytes, random_input({32, 3, 224, 224}, 25),
                           precision::fp16, 3);
}

// Instances share the weights and their state: evicted through one, refused on both; paged in
// through the other, both run and agree with a session that never evicted.
TEST(CudaWeightEviction, InstancesShareTheEvictedState) {
  TROUPE_REQUIRE_GPU();
  const std::string model = conv_matmul_model();
  const tensor x = random_input({2, 8, 12, 12}, 11);
  auto a = evictable_session(model, precision::fp32);
  ASSERT_TRUE(a) << a.error().to_string();
  auto b = (*a)->create_instance();
  ASSERT_TRUE(b) << b.error().to_string();
  auto plain = evictable_session(model, precision::fp32, /*evictable=*/false);
  ASSERT_TRUE(plain);
  auto pa = plan_for(**a, x), pb = plan_for(**b, x), pp = plan_for(**plain, x);
  ASSERT_TRUE(pa && pb && pp);
  auto want = run_plan(*pp, x);
  ASSERT_TRUE(want);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(run_plan(*pa, x) && run_plan(*pb, x));

  auto released = (*a)->evict_weights();
  ASSERT_TRUE(released) << released.error().to_string();
  EXPECT_FALSE((*b)->weights_resident());
  EXPECT_FALSE(run_plan(*pb, x)) << "the sibling's weights are the same, and gone";
  ASSERT_TRUE((*b)->page_in_weights());
  EXPECT_TRUE((*a)->weights_resident());
  for (auto* p : {pa.get(), pb.get()}) {
    auto y = run_plan(*p, x);
    ASSERT_TRUE(y) << y.error().to_string();
    EXPECT_LE(rel_l2(*y, *want), 1e-5);
  }

  // A session made without evictable weights refuses, typed.
  auto refused = (*plain)->evict_weights();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), error_code::unsupported);
}

// A plan compiled after a page-in (a new batch size) adds its constants to the same heap; they
// go and come back with the rest. Two sessions evicted and paged in alternately keep their own.
TEST(CudaWeightEviction, PlansCompiledAfterAPageInAndTwoModelsAlternating) {
  TROUPE_REQUIRE_GPU();
  const tensor x2 = random_input({2, 8, 12, 12}, 21);
  const tensor x5 = random_input({5, 8, 12, 12}, 22);
  auto first = evictable_session(conv_matmul_model(), precision::fp16);
  auto second = evictable_session(conv_matmul_model(), precision::fp16);
  ASSERT_TRUE(first && second);
  auto p2 = plan_for(**first, x2);
  ASSERT_TRUE(p2);
  auto want2 = run_plan(*p2, x2);
  ASSERT_TRUE(want2);
  ASSERT_TRUE((*first)->evict_weights());
  ASSERT_TRUE((*first)->page_in_weights());
  auto p5 = plan_for(**first, x5);
  ASSERT_TRUE(p5);
  auto want5 = run_plan(*p5, x5);
  ASSERT_TRUE(want5);
  auto q2 = plan_for(**second, x2);
  ASSERT_TRUE(q2);
  auto other2 = run_plan(*q2, x2);
  ASSERT_TRUE(other2);
  for (int i = 0; i < 4; ++i) {
    runtime::session& out = **(i % 2 ? first : second);
    runtime::session& in = **(i % 2 ? second : first);
    ASSERT_TRUE(out.evict_weights());
    ASSERT_TRUE(in.page_in_weights());
    if (&in == first->get()) {
      auto y2 = run_plan(*p2, x2);
      auto y5 = run_plan(*p5, x5);
      ASSERT_TRUE(y2 && y5);
      EXPECT_TRUE(same_bytes(*y2, *want2));
      EXPECT_TRUE(same_bytes(*y5, *want5));
    } else {
      auto y = run_plan(*q2, x2);
      ASSERT_TRUE(y);
      EXPECT_TRUE(same_bytes(*y, *other2));
    }
  }
}

}  // namespace
}  // namespace troupe::testing
