// The shared memory of a worker process (serving/shared_arena.hpp): regions allocated first fit
// and merged when freed, a full arena failing typed, peer-named regions checked, the same bytes
// seen through a second mapping of the descriptor (as the worker process maps it), and output
// blocks whose last release, on any thread, gives their region back.

#include "serving/shared_arena.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

namespace troupe::serving {
namespace {

constexpr size_t kib = 1024;

std::shared_ptr<shared_arena> make_arena(size_t bytes) {
  auto a = shared_arena::create(bytes, "troupe-test");
  EXPECT_TRUE(a.has_value()) << a.error().to_string();
  return a.has_value() ? *a : nullptr;
}

TEST(shared_arena, allocates_aligned_regions_and_merges_what_is_freed) {
  auto a = make_arena(64 * kib);
  ASSERT_TRUE(a);
  auto r1 = a->allocate(1000);
  auto r2 = a->allocate(3000);
  auto r3 = a->allocate(1);
  ASSERT_TRUE(r1 && r2 && r3);
  for (const auto* r : {&*r1, &*r2, &*r3}) EXPECT_EQ(r->offset % shared_arena::alignment, 0u);
  EXPECT_EQ(r1->bytes, 1000u) << "the region keeps the size asked for";
  EXPECT_GE(r2->offset, r1->offset + 1000);
  EXPECT_GE(r3->offset, r2->offset + 3000);
  EXPECT_EQ(a->used_bytes(), 1024u + 3072u + 256u);
  // Freed in an order that needs both merges (with the next range and with the previous one).
  a->release(*r1);
  a->release(*r3);
  a->release(*r2);
  EXPECT_EQ(a->used_bytes(), 0u);
  auto whole = a->allocate(64 * kib);
  ASSERT_TRUE(whole.has_value()) << "the free ranges merged back into one: "
                                 << whole.error().to_string();
  EXPECT_EQ(whole->offset, 0u);
  a->release(shm_region{0, 12345, 1});  // not a region: ignored
  a->release(*whole);
  a->release(*whole);  // twice: ignored
  EXPECT_EQ(a->used_bytes(), 0u);
}

TEST(shared_arena, a_full_arena_fails_out_of_memory) {
  auto a = make_arena(16 * kib);
  ASSERT_TRUE(a);
  auto big = a->allocate(12 * kib);
  ASSERT_TRUE(big.has_value());
  auto more = a->allocate(8 * kib);
  ASSERT_FALSE(more.has_value());
  EXPECT_EQ(more.error().code(), error_code::out_of_memory);
  EXPECT_NE(more.error().message().find("worker_shared_memory_mb"), std::string::npos);
  EXPECT_TRUE(a->allocate(4 * kib).has_value()) << "what is left still serves";
}

TEST(shared_arena, sizes_that_are_not_whole_units_are_refused) {
  EXPECT_FALSE(shared_arena::create(0, "x").has_value());
  EXPECT_FALSE(shared_arena::create(1000, "x").has_value());
}

TEST(shared_arena, regions_a_peer_names_are_checked_without_overflow) {
  auto a = make_arena(4 * kib);
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->contains({0, 0, 4 * kib}));
  EXPECT_TRUE(a->contains({0, 4 * kib, 0}));
  EXPECT_FALSE(a->contains({0, 1, 4 * kib}));
  EXPECT_FALSE(a->contains({0, 4 * kib + 1, 0}));
  EXPECT_FALSE(a->contains({0, 256, UINT64_MAX}));
  EXPECT_FALSE(a->contains({0, UINT64_MAX, 2}));
  EXPECT_FALSE(a->contains({1, 0, 16})) << "another segment";
}

TEST(shared_arena, a_second_mapping_of_the_descriptor_sees_the_same_bytes) {
  auto node = make_arena(8 * kib);
  ASSERT_TRUE(node);
  auto r = node->allocate(100);
  ASSERT_TRUE(r.has_value());
  std::memcpy(node->at(*r), "staged", 7);
  // The worker process inherits the descriptor; here a duplicate stands in for it.
  auto worker = shared_arena::attach(dup(node->fd()), 8 * kib);
  ASSERT_TRUE(worker.has_value()) << worker.error().to_string();
  EXPECT_STREQ(reinterpret_cast<const char*>((*worker)->at(*r)), "staged");
  std::memcpy((*worker)->at(*r), "result", 7);
  EXPECT_STREQ(reinterpret_cast<const char*>(node->at(*r)), "result");
  auto too_big = shared_arena::attach(dup(node->fd()), 16 * kib);
  ASSERT_FALSE(too_big.has_value()) << "a descriptor smaller than announced";
  EXPECT_EQ(too_big.error().code(), error_code::invalid_argument);
}

TEST(shared_arena, an_output_block_gives_its_region_back_at_its_last_release) {
  auto a = make_arena(64 * kib);
  ASSERT_TRUE(a);
  std::vector<output_block*> blocks;
  for (int i = 0; i < 8; ++i) {
    auto r = a->allocate(4 * kib);
    ASSERT_TRUE(r.has_value());
    blocks.push_back(new output_block(a->at(*r), r->bytes, a));
  }
  EXPECT_EQ(a->used_bytes(), 32 * kib);
  std::weak_ptr<shared_arena> weak = a;
  a.reset();  // the pool went first: the blocks keep the mapping alive
  ASSERT_FALSE(weak.expired());
  // Replies hold references and release them on other threads (as ZeroMQ's I/O thread does).
  for (auto* b : blocks) b->retain(3);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&blocks, t] {
      for (auto* b : blocks)
        if (t < 3) b->release();
    });
  for (auto& t : threads) t.join();
  for (auto* b : blocks) EXPECT_TRUE(b->idle());
  for (auto* b : blocks) std::memset(b->data(), 1, b->capacity_bytes());  // still mapped
  for (size_t i = 0; i + 1 < blocks.size(); ++i) blocks[i]->release();
  ASSERT_FALSE(weak.expired());
  EXPECT_EQ(weak.lock()->used_bytes(), 4 * kib) << "seven regions went back";
  blocks.back()->release();
  EXPECT_TRUE(weak.expired()) << "the last block's release unmapped the arena";
}

}  // namespace
}  // namespace troupe::serving
