// The system shared-memory registry against real POSIX shared memory: register, find ranges,
// status, unregister (one and all), the errors a client can cause (unknown object, too small,
// duplicate name, bad key, range outside the region), and that a mapping outlives its
// unregistration while a request still holds it.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "cluster/shared_memory_registry.hpp"
#include "tests/cluster/shm_test_object.hpp"

namespace troupe::cluster {
namespace {

TEST(shared_memory_registry, register_find_status_unregister) {
  shm_test_object obj(4096);
  std::memcpy(obj.data() + 128, "hello", 5);
  shared_memory_registry reg;
  ASSERT_TRUE(reg.register_region("in", obj.key(), 64, 1024).is_ok());
  auto span = reg.find("in", 64, 5);
  ASSERT_TRUE(span.has_value()) << span.error().to_string();
  EXPECT_EQ(std::memcmp(span->data, "hello", 5), 0) << "offsets add up: region 64 + 64";
  EXPECT_EQ(span->bytes, 5u);
  std::memcpy(span->data, "HELLO", 5);  // writes reach the client's object
  EXPECT_EQ(std::memcmp(obj.data() + 128, "HELLO", 5), 0);

  auto all = reg.status_of("");
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0]->name(), "in");
  EXPECT_EQ((*all)[0]->key(), obj.key());
  EXPECT_EQ((*all)[0]->offset(), 64u);
  EXPECT_EQ((*all)[0]->byte_size(), 1024u);

  EXPECT_EQ(reg.find("in", 1000, 25).error().code(), error_code::invalid_argument);
  EXPECT_EQ(reg.find("in", 1025, 0).error().code(), error_code::invalid_argument);
  EXPECT_TRUE(reg.find("in", 1024, 0).has_value()) << "an empty range at the end fits";
  EXPECT_EQ(reg.find("nope", 0, 1).error().code(), error_code::not_found);

  ASSERT_TRUE(reg.unregister_region("in").is_ok());
  EXPECT_EQ(reg.unregister_region("in").code(), error_code::not_found);
  EXPECT_EQ(reg.status_of("in").error().code(), error_code::not_found);
  // The span still maps the memory: a request in flight keeps its region.
  EXPECT_EQ(std::memcmp(span->data, "HELLO", 5), 0);
}

TEST(shared_memory_registry, client_errors) {
  shm_test_object small(100);
  shared_memory_registry reg;
  EXPECT_EQ(reg.register_region("r", "/troupe_no_such_object_x", 0, 10).code(),
            error_code::not_found);
  EXPECT_EQ(reg.register_region("r", small.key(), 50, 51).code(), error_code::invalid_argument)
      << "larger than the object";
  EXPECT_EQ(reg.register_region("r", "no-slash", 0, 10).code(), error_code::invalid_argument);
  EXPECT_EQ(reg.register_region("r", "/a/b", 0, 10).code(), error_code::invalid_argument);
  EXPECT_EQ(reg.register_region("", small.key(), 0, 10).code(), error_code::invalid_argument);
  EXPECT_EQ(reg.register_region("r", small.key(), 0, 0).code(), error_code::invalid_argument);
  ASSERT_TRUE(reg.register_region("r", small.key(), 0, 100).is_ok());
  EXPECT_EQ(reg.register_region("r", small.key(), 0, 10).code(), error_code::invalid_argument)
      << "the name is taken";
  ASSERT_TRUE(reg.register_region("r2", small.key(), 10, 10).is_ok()) << "one object, two regions";
  EXPECT_EQ(reg.status_of("")->size(), 2u);
  ASSERT_TRUE(reg.unregister_region("").is_ok()) << "empty name: every region";
  EXPECT_TRUE(reg.status_of("")->empty());
}

}  // namespace
}  // namespace troupe::cluster
