#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "runtime/memory_plan.hpp"
#include "tests/test_seed.hpp"

namespace troupe::runtime {
namespace {

// Invariant: two buffers alive at the same step never overlap in the arena.
void expect_no_overlap(const std::vector<buffer>& b, size_t arena) {
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_LE(b[i].offset + b[i].bytes, arena);
    for (size_t j = i + 1; j < b.size(); ++j) {
      const bool alive_together =
          b[i].first_step <= b[j].last_step && b[j].first_step <= b[i].last_step;
      const bool disjoint =
          b[i].offset + b[i].bytes <= b[j].offset || b[j].offset + b[j].bytes <= b[i].offset;
      if (alive_together) EXPECT_TRUE(disjoint) << "buffers " << i << " and " << j;
    }
  }
}

TEST(pack_buffers, random_lifetimes_never_overlap_and_beat_the_sum) {
  std::mt19937 rng(troupe::testing::test_seed());
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<buffer> bufs;
    size_t sum = 0;
    for (int i = 0; i < 40; ++i) {
      const int first = static_cast<int>(rng() % 30);
      const int last = first + static_cast<int>(rng() % 6);
      const size_t bytes = 1 + rng() % 5000;
      bufs.push_back({bytes, first, last, 0});
      sum += (bytes + 63) / 64 * 64;
    }
    const size_t arena = pack_buffers(bufs, 64);
    expect_no_overlap(bufs, arena);
    EXPECT_LE(arena, sum);
    for (const auto& b : bufs) EXPECT_EQ(b.offset % 64, 0u);
  }
}

// Lifetime packing (several orders, first and best fit) against the former greedy-by-size packing
// on the same buffers: never larger, never below the bytes alive at the busiest step, and no two
// buffers alive together overlap (every pair checked by expect_no_overlap).
TEST(pack_buffers, never_worse_than_greedy_by_size_nor_below_the_live_peak) {
  std::mt19937 rng(12345);
  int strictly_better = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<buffer> bufs;
    const int steps = 5 + static_cast<int>(rng() % 40);
    for (int i = 0; i < 10 + static_cast<int>(rng() % 60); ++i) {
      const int first = static_cast<int>(rng() % steps) - 1;
      const int last = std::min(steps, first + 1 + static_cast<int>(rng() % 8));
      // Sizes spread over orders of magnitude, as activations of a network are.
      const size_t bytes = size_t{1} << (6 + rng() % 14);
      bufs.push_back({bytes + rng() % 100, first, last, 0});
    }
    std::vector<buffer> greedy = bufs;
    const size_t greedy_arena = pack_buffers_greedy_by_size(greedy, 64);
    expect_no_overlap(greedy, greedy_arena);
    const size_t arena = pack_buffers(bufs, 64);
    expect_no_overlap(bufs, arena);
    EXPECT_LE(arena, greedy_arena);
    EXPECT_GE(arena, peak_live_bytes(bufs, 64));
    strictly_better += arena < greedy_arena;
  }
  // Not a bound, a sign that the other orders are tried at all: greedy by size is not always best.
  EXPECT_GT(strictly_better, 0);
}

TEST(pack_buffers, live_peak_counts_buffers_alive_at_one_step) {
  // a [0,1] 100, b [1,2] 200, c [3,3] 250: the peak is step 1 (a + b), padded to 64.
  std::vector<buffer> b{{100, 0, 1, 0}, {200, 1, 2, 0}, {250, 3, 3, 0}};
  EXPECT_EQ(peak_live_bytes(b, 64), 128u + 256u);
  EXPECT_EQ(pack_buffers(b, 64), 128u + 256u);
  // A buffer born the step after another dies may take its bytes.
  std::vector<buffer> chain{{1000, 0, 1, 0}, {1000, 2, 3, 0}};
  EXPECT_EQ(pack_buffers(chain, 8), 1000u);
  EXPECT_EQ(chain[0].offset, chain[1].offset);
}

// A chain a -> relu -> b -> relu -> c: in-place reuse puts all three in one buffer.
TEST(plan_memory_layout, elementwise_chain_runs_in_place) {
  std::vector<value_desc> values(3);
  for (auto& v : values) v.bytes = 1024;
  values[0].graph_input = 0;
  values[2].is_graph_output = true;
  std::vector<step_desc> steps(2);
  steps[0].inputs = {0};
  steps[0].outputs = {1};
  steps[0].inplace = {{0, 0}};
  steps[1].inputs = {1};
  steps[1].outputs = {2};
  steps[1].inplace = {{0, 0}};
  // On the host the input is the caller's: step 0 cannot write over it.
  auto host = plan_memory_layout(steps, values, false, 64);
  EXPECT_EQ(host.values[0].kind, storage_kind::graph_input);
  EXPECT_EQ(host.values[1].kind, storage_kind::arena);
  EXPECT_EQ(host.values[1].id, host.values[2].id);
  EXPECT_EQ(host.arena_bytes, 1024u);
  EXPECT_EQ(host.sum_of_tensor_bytes, 2048u);
  // On a device the input is copied into the arena and may be overwritten.
  auto dev = plan_memory_layout(steps, values, true, 256);
  EXPECT_EQ(dev.values[0].id, dev.values[2].id);
  EXPECT_EQ(dev.arena_bytes, 1024u);
}

// Not in place when the input is read again later (a residual connection).
TEST(plan_memory_layout, no_in_place_over_a_value_read_later) {
  std::vector<value_desc> values(3);
  for (auto& v : values) v.bytes = 256;
  values[0].graph_input = 0;
  values[2].is_graph_output = true;
  std::vector<step_desc> steps(3);
  steps[0] = {{0}, {1}, false, {}, 0};           // x -> a (not in place: no pair)
  steps[1] = {{1}, {2}, false, {{0, 0}}, 0};     // a -> b, may reuse a
  values.push_back({256, false, -1, true});      // value 3
  steps[2] = {{1, 2}, {3}, false, {{0, 0}}, 0};  // a + b -> out: a still read here
  auto m = plan_memory_layout(steps, values, true, 64);
  EXPECT_NE(m.values[1].id, m.values[2].id) << "b must not overwrite a, which step 2 still reads";
  expect_no_overlap(m.buffers, m.arena_bytes);
}

TEST(plan_memory_layout, views_share_and_graph_outputs_live_to_the_end) {
  std::vector<value_desc> values(4);
  for (auto& v : values) v.bytes = 512;
  values[0].graph_input = 0;
  values[2].is_graph_output = true;
  values[3].is_graph_output = true;
  std::vector<step_desc> steps(3);
  steps[0] = {{0}, {1}, false, {}, 128};
  steps[1] = {{1}, {2}, true, {}, 0};         // view
  steps[2] = {{2}, {3}, false, {{0, 0}}, 0};  // may not reuse: 2 is a graph output
  auto m = plan_memory_layout(steps, values, false, 64);
  EXPECT_EQ(m.values[1].id, m.values[2].id);
  EXPECT_NE(m.values[3].id, m.values[2].id);
  EXPECT_GE(m.workspace_buffer[0], 0);
  expect_no_overlap(m.buffers, m.arena_bytes);
}

}  // namespace
}  // namespace troupe::runtime
