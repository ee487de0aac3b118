// serving::run_number_window: a number is new once; numbers may come out of order within the
// window; below the numbers remembered, every number counts as seen.

#include "serving/run_number_window.hpp"

#include <gtest/gtest.h>

namespace troupe::serving {
namespace {

TEST(run_number_window, a_number_is_new_once_in_any_order) {
  run_number_window w;
  EXPECT_FALSE(w.seen(9));
  EXPECT_TRUE(w.insert(9));
  EXPECT_TRUE(w.insert(7)) << "an earlier number that overtook nothing is new";
  EXPECT_TRUE(w.seen(9));
  EXPECT_TRUE(w.seen(7));
  EXPECT_FALSE(w.seen(8));
  EXPECT_FALSE(w.insert(9));
  EXPECT_FALSE(w.insert(7));
  EXPECT_TRUE(w.insert(8));
}

TEST(run_number_window, up_to_the_last_number_forgotten_everything_counts_as_seen) {
  run_number_window w(3);
  for (uint64_t n : {10u, 12u, 13u, 14u}) EXPECT_TRUE(w.insert(n));
  // 10 went out of the window: it and every number below it count as seen; 11, never seen and
  // above it, is still new.
  EXPECT_TRUE(w.seen(10));
  EXPECT_TRUE(w.seen(5));
  EXPECT_FALSE(w.insert(10));
  EXPECT_FALSE(w.seen(11));
  EXPECT_TRUE(w.insert(11));
  EXPECT_TRUE(w.seen(11));  // forgotten at once (the smallest of four), still seen
  EXPECT_FALSE(w.insert(11));
  EXPECT_TRUE(w.insert(15));
}

}  // namespace
}  // namespace troupe::serving
