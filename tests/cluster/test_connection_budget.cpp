// connection_budget without sockets: requests are admitted while fewer than max_outstanding of
// their connection are outstanding, refused ones count too, counts given back (from any thread)
// re-open the connection, connections are independent, and idle ones are swept while busy ones
// stay.

#include "cluster/connection_budget.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace troupe::cluster {
namespace {

TEST(connection_budget, admits_up_to_the_cap_then_refuses_until_replies_leave) {
  connection_budget b(3);
  std::vector<connection_budget::connection*> held;
  for (int i = 0; i < 3; ++i) {
    const auto a = b.arrive("client-a");
    EXPECT_TRUE(a.admitted) << i;
    held.push_back(a.conn);
  }
  EXPECT_EQ(held[0], held[2]) << "one count per connection";
  const auto refused = b.arrive("client-a");
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.conn->outstanding(), 4u) << "a refusal is outstanding until its reply leaves";
  // The refusal's reply leaves: still three outstanding, still full.
  refused.conn->reply_left();
  EXPECT_FALSE(b.arrive("client-a").admitted);
  held[0]->reply_left();  // the last refusal's reply
  held[0]->reply_left();  // one admitted reply is read: room for one
  const auto again = b.arrive("client-a");
  EXPECT_TRUE(again.admitted);
  EXPECT_EQ(again.conn->outstanding(), 3u);
}

TEST(connection_budget, connections_are_counted_apart) {
  connection_budget b(1);
  const auto a = b.arrive(std::string("\0\x01\x02\x03\x04", 5));  // ROUTER ids are binary
  EXPECT_TRUE(a.admitted);
  EXPECT_FALSE(b.arrive(std::string("\0\x01\x02\x03\x04", 5)).admitted);
  EXPECT_TRUE(b.arrive(std::string("\0\x01\x02\x03\x05", 5)).admitted);
  EXPECT_EQ(b.connections(), 2u);
}

TEST(connection_budget, a_cap_of_zero_admits_one) {
  connection_budget b(0);
  EXPECT_EQ(b.max_outstanding(), 1u);
  EXPECT_TRUE(b.arrive("x").admitted);
  EXPECT_FALSE(b.arrive("x").admitted);
}

TEST(connection_budget, idle_connections_are_swept_busy_ones_kept) {
  connection_budget b(4);
  const auto busy = b.arrive("busy");
  for (int i = 0; i < 1000; ++i) {
    const auto a = b.arrive("client-" + std::to_string(i));
    ASSERT_TRUE(a.admitted);
    a.conn->reply_left();
    ASSERT_LE(b.connections(), 200u) << "idle connections pile up";
  }
  // The busy connection kept its count through every sweep.
  EXPECT_EQ(busy.conn->outstanding(), 1u);
  EXPECT_EQ(b.arrive("busy").conn, busy.conn);
  EXPECT_EQ(busy.conn->outstanding(), 2u);
}

TEST(connection_budget, counts_come_back_from_other_threads) {
  connection_budget b(100000);
  std::vector<connection_budget::connection*> out;
  for (int i = 0; i < 40000; ++i) out.push_back(b.arrive("c").conn);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&out, t] {
      for (size_t i = static_cast<size_t>(t); i < out.size(); i += 4) out[i]->reply_left();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(out[0]->outstanding(), 0u);
  EXPECT_TRUE(b.arrive("c").admitted);
}

}  // namespace
}  // namespace troupe::cluster
