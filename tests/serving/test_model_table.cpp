// The traffic policy (model_table::route): explicit versions, match rules, weights (sticky by
// routing key), the newest ready version, and typed errors for unknown or unready versions.

#include <gtest/gtest.h>

#include <map>

#include "serving/model_table.hpp"

namespace troupe::serving {
namespace {

version_entry make_version(int64_t v, version_state s) {
  version_entry e;
  e.version = v;
  e.signature = std::make_shared<model_signature>();
  e.state = std::make_shared<std::atomic<uint8_t>>(static_cast<uint8_t>(s));
  return e;
}

model_entry make_model() {
  model_entry m;
  m.name = "m";
  m.versions = {make_version(1, version_state::ready), make_version(2, version_state::ready),
                make_version(3, version_state::unavailable)};
  return m;
}

using params = std::vector<std::pair<std::string_view, std::string_view>>;

TEST(model_table, explicit_version_and_errors) {
  auto m = make_model();
  uint64_t counter = 0;
  auto v = model_table::route(m, 1, "", {}, counter);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ((*v)->version, 1);
  EXPECT_EQ(model_table::route(m, 7, "", {}, counter).error().code(), error_code::not_found);
  EXPECT_EQ(model_table::route(m, 3, "", {}, counter).error().code(), error_code::unavailable);
}

TEST(model_table, newest_ready_version_by_default) {
  auto m = make_model();
  uint64_t counter = 0;
  auto v = model_table::route(m, 0, "", {}, counter);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ((*v)->version, 2) << "3 is not ready";
  m.versions[1].state->store(static_cast<uint8_t>(version_state::unavailable));
  EXPECT_EQ((*model_table::route(m, 0, "", {}, counter))->version, 1);
  m.versions[0].state->store(static_cast<uint8_t>(version_state::unavailable));
  EXPECT_EQ(model_table::route(m, 0, "", {}, counter).error().code(), error_code::unavailable);
}

TEST(model_table, match_rules_route_on_parameters) {
  auto m = make_model();
  m.traffic.match.push_back({"canary", "", "yes", 1});
  uint64_t counter = 0;
  params p = {{"canary", "yes"}};
  EXPECT_EQ((*model_table::route(m, 0, "", p, counter))->version, 1);
  params other = {{"canary", "no"}};
  EXPECT_EQ((*model_table::route(m, 0, "", other, counter))->version, 2);
}

TEST(model_table, a_node_label_rule_that_holds_routes_every_request) {
  // model_manager turns a node-label rule that holds on the node into one with no names.
  auto m = make_model();
  m.traffic.match.push_back({"", "", "eu", 1});
  uint64_t counter = 0;
  EXPECT_EQ((*model_table::route(m, 0, "", {}, counter))->version, 1);
  EXPECT_EQ((*model_table::route(m, 2, "", {}, counter))->version, 2) << "explicit versions win";
}

TEST(model_table, weights_split_traffic_and_keys_stick) {
  auto m = make_model();
  m.traffic.weights = {{1, 75}, {2, 25}};
  uint64_t counter = 0;
  std::map<int64_t, int> hits;
  for (int i = 0; i < 400; ++i) ++hits[(*model_table::route(m, 0, "", {}, counter))->version];
  EXPECT_EQ(hits[1], 300);
  EXPECT_EQ(hits[2], 100);
  for (const char* key : {"alice", "bob", "carol"}) {
    const int64_t first = (*model_table::route(m, 0, key, {}, counter))->version;
    for (int i = 0; i < 20; ++i)
      EXPECT_EQ((*model_table::route(m, 0, key, {}, counter))->version, first) << key;
  }
  // A weighted version that is not ready gets no traffic.
  m.versions[0].state->store(static_cast<uint8_t>(version_state::unavailable));
  for (int i = 0; i < 20; ++i) EXPECT_EQ((*model_table::route(m, 0, "", {}, counter))->version, 2);
}

}  // namespace
}  // namespace troupe::serving
