// A worker's memory budget without a worker (serving/replica_residency.hpp): what it counts, which
// idle weights it chooses (least recently used first, never held ones) and when nothing can
// make room.
#include "serving/replica_residency.hpp"

#include <gtest/gtest.h>

namespace troupe::serving {
namespace {

using groups = std::vector<replica_residency::group_id>;

TEST(ReplicaResidency, CountsOwnBytesAndResidentWeightsOncePerGroup) {
  replica_residency r(1000);
  r.add(1, 10, 50, 200);
  r.add(2, 10, 60, 200);  // a second instance of the same weights
  r.add(3, 20, 70, 300);
  EXPECT_EQ(r.resident_bytes(), 50u + 60 + 70 + 200 + 300);
  EXPECT_EQ(r.replicas_of(10), (std::vector<uint32_t>{1, 2}));
  r.set_resident(10, false);
  EXPECT_EQ(r.resident_bytes(), 50u + 60 + 70 + 300) << "evicted weights are not counted";
  EXPECT_FALSE(r.resident(10));
  r.update(3, 90, 400);  // a plan compiled for a new shape
  EXPECT_EQ(r.resident_bytes(), 50u + 60 + 90 + 400);
  EXPECT_FALSE(r.remove(1)) << "the group keeps replica 2";
  EXPECT_TRUE(r.remove(2));
  EXPECT_FALSE(r.has_group(10));
  EXPECT_FALSE(r.remove(2)) << "removed already";
  EXPECT_EQ(r.group_of(3), replica_residency::group_id{20});
  EXPECT_EQ(r.group_of(1), std::nullopt);
}

TEST(ReplicaResidency, ArenasAreCountedAndEvictedWithTheirGroup) {
  replica_residency r(1000);
  r.add(1, 10, 50, 200, 100);
  r.add(2, 10, 60, 200, 120);  // a second instance: its own arenas, the same weights
  r.add(3, 20, 70, 300, 80);
  EXPECT_EQ(r.resident_bytes(), 50u + 60 + 70 + 200 + 100 + 120 + 300 + 80);
  EXPECT_EQ(r.evictable_bytes(10), 200u + 100 + 120);
  EXPECT_EQ(r.evictable_bytes(20), 300u + 80);
  r.set_resident(10, false);
  EXPECT_EQ(r.resident_bytes(), 50u + 60 + 70 + 300 + 80)
      << "an evicted group's arenas are not counted; fixed bytes are";
  r.set_resident(10, true);
  // 980 resident: 400 more needs 380 back. Group 10's weights alone (200) would not do; with
  // its arenas (420) they do.
  r.touch(20);
  auto v = r.victims_for(400);
  ASSERT_TRUE(v) << v.error().to_string();
  EXPECT_EQ(*v, (groups{10}));
  r.update(3, 70, 300, 500);  // a plan for a larger shape
  EXPECT_EQ(r.evictable_bytes(20), 800u);
  // Fixed bytes alone beyond the budget: nothing helps.
  v = r.victims_for(1000 - 180 + 1);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code(), error_code::out_of_memory);
}

TEST(ReplicaResidency, NoBudgetFitsEverything) {
  replica_residency r(0);
  r.add(1, 1, 1 << 30, 1 << 30);
  EXPECT_TRUE(r.fits(size_t{1} << 40));
  auto v = r.victims_for(size_t{1} << 40);
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->empty());
}

TEST(ReplicaResidency, ChoosesLeastRecentlyUsedIdleWeights) {
  replica_residency r(1000);
  r.add(1, 1, 10, 300);  // used first ...
  r.add(2, 2, 10, 300);
  r.add(3, 3, 10, 300);  // ... 930 bytes resident
  EXPECT_TRUE(r.fits(70));
  EXPECT_FALSE(r.fits(71));
  r.touch(1);  // now 2 is the least recently used, then 3, then 1
  auto v = r.victims_for(100);
  ASSERT_TRUE(v) << v.error().to_string();
  EXPECT_EQ(*v, (groups{2}));
  v = r.victims_for(400);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, (groups{2, 3}));

  // Held weights are never chosen; nor is the group asking for room.
  r.pin(2);
  v = r.victims_for(100);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, (groups{3}));
  v = r.victims_for(100, replica_residency::group_id{3});
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, (groups{1}));
  r.pin(2);
  r.unpin(2);
  EXPECT_TRUE(r.pinned(2)) << "pins count";
  r.unpin(2);
  EXPECT_FALSE(r.pinned(2));

  // Evicted groups are not candidates twice.
  r.set_resident(2, false);
  v = r.victims_for(400);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, (groups{3})) << "630 resident + 400 needs 300 back: group 3, the oldest left";
}

TEST(ReplicaResidency, SaysWhenNothingCanMakeRoom) {
  replica_residency r(1000);
  r.add(1, 1, 400, 300);
  r.add(2, 2, 200, 100);
  r.pin(1);
  // 1000 resident + 100: evicting group 2 (100) leaves 1000, within the budget.
  auto v = r.victims_for(100);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, (groups{2}));
  // + 200: group 1 is held and own bytes never go.
  v = r.victims_for(200);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().code(), error_code::out_of_memory);
  EXPECT_NE(v.error().message().find("budget"), std::string::npos) << v.error().message();
  r.unpin(1);
  v = r.victims_for(200);
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, (groups{1})) << "group 1 was used first";
  // Own bytes alone beyond the budget: nothing helps.
  v = r.victims_for(2000);
  ASSERT_FALSE(v);
}

}  // namespace
}  // namespace troupe::serving
