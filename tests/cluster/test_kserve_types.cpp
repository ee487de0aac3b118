// The KServe vocabulary's pure functions: a gRPC client reads back the code troupe's door sent.
#include <gtest/gtest.h>

#include "cluster/kserve_types.hpp"

namespace troupe::cluster::kserve {
namespace {

TEST(kserve_types, every_troupe_error_survives_the_grpc_round_trip) {
  for (int c = 1; c <= static_cast<int>(error_code::device_error); ++c) {
    const status sent = make_error(static_cast<error_code>(c), "input 'x': shape [2] wanted [3]");
    const status back =
        status_from_grpc(static_cast<int>(grpc_status(sent.code())), error_message(sent));
    EXPECT_EQ(back.code(), sent.code()) << to_string(sent.code());
    EXPECT_EQ(back.message(), sent.message());
  }
  EXPECT_TRUE(status_from_grpc(0, "").is_ok());
}

TEST(kserve_types, another_servers_status_maps_by_grpc_code) {
  EXPECT_EQ(status_from_grpc(3, "Request for unknown model").code(), error_code::invalid_argument);
  EXPECT_EQ(status_from_grpc(8, "queue full").code(), error_code::overloaded);
  EXPECT_EQ(status_from_grpc(12, "no such rpc").code(), error_code::unsupported);
  EXPECT_EQ(status_from_grpc(14, "connect failed").code(), error_code::unavailable);
  EXPECT_EQ(status_from_grpc(4, "late").code(), error_code::deadline_exceeded);
  // "x: y" whose prefix is not a troupe code keeps the whole message.
  const status s = status_from_grpc(3, "model 'm': not ready");
  EXPECT_EQ(s.code(), error_code::invalid_argument);
  EXPECT_EQ(s.message(), "model 'm': not ready");
  const status unknown = status_from_grpc(2, "boom");
  EXPECT_EQ(unknown.code(), error_code::internal);
  EXPECT_NE(unknown.message().find("boom"), std::string::npos);
}

}  // namespace
}  // namespace troupe::cluster::kserve
