// The bookkeeping of the CUDA backend's evictable weight heap, without a GPU: first-fit
// allocation with merging, and which chunks an allocation makes live or a free leaves empty.
#include "kernels/chunked_arena.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace troupe::kernels {
namespace {

constexpr size_t chunk = 1024;

TEST(ChunkedArena, AllocatesFirstFitAlignedAndCountsChunks) {
  chunked_arena a(4 * chunk, chunk, 256);
  EXPECT_EQ(a.chunk_count(), 4u);
  auto x = a.allocate(10);  // one alignment unit
  ASSERT_TRUE(x);
  EXPECT_EQ(x->offset, 0u);
  EXPECT_EQ(x->bytes, 256u);
  EXPECT_EQ(x->first_chunk, 0u);
  EXPECT_EQ(x->last_chunk, 0u);
  auto y = a.allocate(chunk + 1);  // spans chunks 0..2 from offset 256
  ASSERT_TRUE(y);
  EXPECT_EQ(y->offset, 256u);
  EXPECT_EQ(y->bytes, chunk + 256);
  EXPECT_EQ(y->first_chunk, 0u);
  EXPECT_EQ(y->last_chunk, 1u);
  EXPECT_EQ(a.chunk_users(0), 2u);
  EXPECT_EQ(a.chunk_users(1), 1u);
  EXPECT_EQ(a.live_chunk_count(), 2u);
  EXPECT_EQ(a.live_chunks(), (std::vector<size_t>{0, 1}));
  EXPECT_EQ(a.allocated_bytes(), 256u + chunk + 256);

  // Freeing x leaves chunk 0 to y: nothing emptied. Freeing y empties both.
  EXPECT_TRUE(a.free(x->offset).empty());
  EXPECT_EQ(a.free(y->offset), (std::vector<size_t>{0, 1}));
  EXPECT_EQ(a.live_chunk_count(), 0u);
  EXPECT_EQ(a.allocated_bytes(), 0u);
  EXPECT_TRUE(a.free(12345).empty()) << "an unknown offset frees nothing";

  // Everything merged back: the whole range is one allocation again.
  auto all = a.allocate(4 * chunk);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->offset, 0u);
  EXPECT_EQ(all->last_chunk, 3u);
  auto none = a.allocate(1);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), error_code::out_of_memory);
}

TEST(ChunkedArena, ReusesTheFirstHoleThatFits) {
  chunked_arena a(8 * chunk, chunk, 256);
  auto p = a.allocate(chunk);
  auto q = a.allocate(chunk);
  auto r = a.allocate(chunk);
  ASSERT_TRUE(p && q && r);
  EXPECT_EQ(a.free(q->offset), (std::vector<size_t>{1}));
  auto small = a.allocate(512);  // into q's hole, chunk 1 live again
  ASSERT_TRUE(small);
  EXPECT_EQ(small->offset, chunk);
  EXPECT_EQ(a.chunk_users(1), 1u);
  auto big = a.allocate(2 * chunk);  // the hole's rest is too small: after r
  ASSERT_TRUE(big);
  EXPECT_EQ(big->offset, 3 * chunk);
}

// Random allocations and frees against a model of which chunks hold something.
TEST(ChunkedArena, ChunkCountsMatchTheLiveAllocations) {
  std::mt19937 rng(7);
  chunked_arena a(64 * chunk, chunk, 256);
  std::vector<chunked_arena::grant> live;
  for (int step = 0; step < 4000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      auto g = a.allocate(1 + rng() % (3 * chunk));
      if (g) live.push_back(*g);
    } else {
      const size_t i = rng() % live.size();
      const auto emptied = a.free(live[i].offset);
      live.erase(live.begin() + static_cast<long>(i));
      for (size_t c : emptied) EXPECT_EQ(a.chunk_users(c), 0u);
    }
    std::vector<uint32_t> users(a.chunk_count(), 0);
    size_t allocated = 0;
    for (const auto& g : live) {
      for (size_t c = g.first_chunk; c <= g.last_chunk; ++c) ++users[c];
      allocated += g.bytes;
    }
    size_t live_chunks = 0;
    for (size_t c = 0; c < users.size(); ++c) {
      ASSERT_EQ(a.chunk_users(c), users[c]) << "chunk " << c << " at step " << step;
      live_chunks += users[c] > 0;
    }
    ASSERT_EQ(a.live_chunk_count(), live_chunks);
    ASSERT_EQ(a.allocated_bytes(), allocated);
  }
  // Grants never overlap.
  std::sort(live.begin(), live.end(), [](auto& x, auto& y) { return x.offset < y.offset; });
  for (size_t i = 1; i < live.size(); ++i)
    EXPECT_LE(live[i - 1].offset + live[i - 1].bytes, live[i].offset);
}

}  // namespace
}  // namespace troupe::kernels
