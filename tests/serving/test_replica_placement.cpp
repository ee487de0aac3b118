// Replica placement as a pure function: the order of preference (memory, replicas of the version
// on the worker and on its node, replicas overall, rendezvous score), independence from the order
// and the indices workers joined with, and the errors.

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "serving/replica_placement.hpp"

namespace troupe::serving {
namespace {

placement_candidate worker(uint32_t index, std::string node, std::string device,
                           uint32_t of_version = 0, uint32_t of_version_on_node = 0,
                           uint32_t replicas = 0, std::optional<uint64_t> free = std::nullopt) {
  placement_candidate c;
  c.worker = index;
  c.node = std::move(node);
  c.device = std::move(device);
  c.replicas_of_version = of_version;
  c.replicas_of_version_on_node = of_version_on_node;
  c.replicas = replicas;
  c.memory_free_bytes = free;
  return c;
}

constexpr uint64_t gib = uint64_t{1} << 30;

uint32_t chosen(const std::vector<placement_candidate>& cs, std::string_view model = "resnet50",
                int64_t version = 1, uint64_t replica_bytes = 0) {
  auto w = choose_worker(cs, {model, version, replica_bytes});
  EXPECT_TRUE(w.has_value()) << w.error().to_string();
  return w ? *w : UINT32_MAX;
}

TEST(ReplicaPlacement, FewestReplicasOfTheVersionFirst) {
  // Worker 0 holds more replicas overall but none of this version: it still wins.
  EXPECT_EQ(chosen({worker(0, "a", "gpu:0", 0, 0, 5), worker(1, "b", "gpu:0", 1, 1, 1)}), 0u);
}

TEST(ReplicaPlacement, SpreadsAVersionOverNodes) {
  // Both GPUs of node a and the one of node b are free of the version, but node a already holds
  // one (on its third GPU): node b's worker is chosen.
  EXPECT_EQ(chosen({worker(0, "a", "gpu:0", 0, 1), worker(1, "a", "gpu:1", 0, 1),
                    worker(2, "b", "gpu:0", 0, 0)}),
            2u);
}

TEST(ReplicaPlacement, FewestReplicasOverallBreaksTies) {
  EXPECT_EQ(chosen({worker(0, "a", "gpu:0", 0, 0, 3), worker(1, "b", "gpu:0", 0, 0, 2)}), 1u);
}

TEST(ReplicaPlacement, SkipsWorkersWithoutRoom) {
  // Worker 0 would be preferred (no replica of the version) but has 1 GiB free for a 2 GiB
  // replica; worker 2 advertises nothing (in-process) and counts as having room.
  std::vector<placement_candidate> cs{worker(0, "a", "gpu:0", 0, 0, 0, 1 * gib),
                                      worker(1, "b", "gpu:0", 1, 1, 1, 8 * gib)};
  EXPECT_EQ(chosen(cs, "m", 1, 2 * gib), 1u);
  // An unknown size (no replica loaded yet) places by the counts alone.
  EXPECT_EQ(chosen(cs, "m", 1, 0), 0u);
  cs.push_back(worker(2, "", "gpu:0", 1, 1, 0));
  EXPECT_EQ(chosen(cs, "m", 1, 16 * gib), 2u);
}

TEST(ReplicaPlacement, OwnWorkersFirstInIndexOrder) {
  auto own = [](uint32_t index) {
    placement_candidate c = worker(index, "", "cpu");
    c.local = true;
    return c;
  };
  EXPECT_EQ(chosen({worker(0, "a", "gpu:0"), own(3), own(2), worker(1, "b", "gpu:0")}), 2u);
  // Counts first: a joined worker with fewer replicas wins over the own ones.
  std::vector<placement_candidate> cs{own(1), own(2), worker(0, "a", "gpu:0")};
  cs[0].replicas = cs[1].replicas = 1;
  EXPECT_EQ(chosen(cs), 0u);
}

TEST(ReplicaPlacement, NoRoomAnywhereIsOutOfMemory) {
  auto w = choose_worker(std::vector{worker(0, "a", "gpu:0", 0, 0, 0, 1 * gib),
                                     worker(1, "b", "gpu:0", 0, 0, 0, 3 * gib)},
                         {"bert", 2, 4 * gib});
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), error_code::out_of_memory);
  EXPECT_NE(w.error().message().find("model 'bert' version 2 (4096 MiB)"), std::string::npos)
      << w.error().message();
  EXPECT_NE(w.error().message().find("3072 MiB"), std::string::npos) << w.error().message();
}

TEST(ReplicaPlacement, NoCandidateIsAnError) {
  auto w = choose_worker({}, {"m", 1, 0});
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), error_code::invalid_argument);
}

// Two control nodes see the same workers, joined in other orders (so with other indices): among
// equals they choose the same worker (node and device), for every model.
TEST(ReplicaPlacement, SameChoiceWhateverTheJoinOrder) {
  const std::vector<std::pair<std::string, std::string>> places{
      {"node-0", "gpu:0"}, {"node-0", "gpu:1"}, {"node-1", "gpu:0"},
      {"node-1", "gpu:1"}, {"node-2", "gpu:0"}, {"node-3", "cpu"}};
  std::vector<size_t> order(places.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (int model = 0; model < 50; ++model) {
    const std::string name = "model-" + std::to_string(model);
    std::set<std::pair<std::string, std::string>> choices;
    std::vector<size_t> perm = order;
    for (int round = 0; round < 6; ++round) {
      std::vector<placement_candidate> cs;
      for (uint32_t i = 0; i < perm.size(); ++i)
        cs.push_back(worker(i, places[perm[i]].first, places[perm[i]].second));
      const uint32_t w = chosen(cs, name);
      choices.insert(places[perm[w]]);
      std::next_permutation(perm.begin(), perm.end());
      std::rotate(perm.begin(), perm.begin() + 1, perm.end());
    }
    EXPECT_EQ(choices.size(), 1u) << name;
  }
}

// Rendezvous hashing: the versions spread over equal workers, and a worker that leaves moves only
// the versions it had (the others keep their worker).
TEST(ReplicaPlacement, RendezvousSpreadsAndMovesLittle) {
  std::vector<placement_candidate> cs;
  for (uint32_t i = 0; i < 4; ++i) cs.push_back(worker(i, "node-" + std::to_string(i), "gpu:0"));
  std::map<uint32_t, int> per_worker;
  std::map<std::string, uint32_t> before;
  for (int model = 0; model < 200; ++model) {
    const std::string name = "m" + std::to_string(model);
    before[name] = chosen(cs, name);
    ++per_worker[before[name]];
  }
  ASSERT_EQ(per_worker.size(), 4u);
  for (const auto& [w, n] : per_worker) EXPECT_GT(n, 20) << "worker " << w;
  std::vector<placement_candidate> without_2;
  for (const auto& c : cs)
    if (c.worker != 2) without_2.push_back(c);
  for (const auto& [name, w] : before) {
    if (w != 2) EXPECT_EQ(chosen(without_2, name), w) << name;
  }
  // Versions of one model hash apart too.
  std::set<uint32_t> by_version;
  for (int64_t v = 1; v <= 40; ++v) by_version.insert(chosen(cs, "one-model", v));
  EXPECT_GT(by_version.size(), 1u);
}

TEST(ReplicaPlacement, ScoreIsStable) {
  // Pinned values: the score must be the same on every machine and build (control nodes of
  // different builds side by side during a rolling upgrade place alike).
  EXPECT_EQ(rendezvous_score("resnet50", 1, "node-0", "gpu:0"), 1349733015687324032ull);
  EXPECT_NE(rendezvous_score("ab", 1, "c", "gpu:0"), rendezvous_score("a", 1, "bc", "gpu:0"));
  EXPECT_NE(rendezvous_score("m", 1, "n", "gpu:0"), rendezvous_score("m", 2, "n", "gpu:0"));
}

}  // namespace
}  // namespace troupe::serving
