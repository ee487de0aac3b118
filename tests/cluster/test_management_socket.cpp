// The management socket's checks that need no node: which endpoints count as loopback, and what a
// token file must be. A socket beyond loopback without a token refuses to start. The socket's
// operations against a real node: tests/integration/test_model_control.py.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "actors/model_control.hpp"
#include "cluster/management_socket.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::cluster {
namespace {

TEST(management_socket, loopback_endpoints) {
  for (const char* e : {"tcp://127.0.0.1:5556", "tcp://127.0.1.1:1", "tcp://localhost:5556",
                        "tcp://[::1]:5556", "ipc:///tmp/troupe.sock", "inproc://x"})
    EXPECT_TRUE(is_loopback_endpoint(e)) << e;
  for (const char* e : {"tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://10.0.0.5:5556",
                        "tcp://eth0:5556", "tcp://localhost.example.com:1"})
    EXPECT_FALSE(is_loopback_endpoint(e)) << e;
}

TEST(management_socket, token_files_must_be_private_regular_and_not_empty) {
  testing::temp_dir dir;
  const auto path = (dir.path() / "token").string();
  dir.write("token", "  s3cret\n");
  ::chmod(path.c_str(), 0600);
  auto t = read_token_file(path);
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_EQ(*t, "s3cret") << "surrounding whitespace dropped";
  ::chmod(path.c_str(), 0640);
  auto wide = read_token_file(path);
  ASSERT_FALSE(wide);
  EXPECT_NE(wide.error().message().find("chmod 600"), std::string::npos);
  dir.write("empty", "\n \n");
  ::chmod((dir.path() / "empty").c_str(), 0600);
  EXPECT_EQ(read_token_file((dir.path() / "empty").string()).error().code(),
            error_code::invalid_argument);
  EXPECT_EQ(read_token_file((dir.path() / "missing").string()).error().code(),
            error_code::not_found);
  EXPECT_FALSE(read_token_file(dir.path().string())) << "a directory is not a token file";
}

class management_socket_test : public testing::actor_fixture {};

TEST_F(management_socket_test, beyond_loopback_without_a_token_does_not_start) {
  // No request reaches the manager: a null handle is enough for the refusal.
  actors::model_control control(sys_, actors::manager_actor{}, actors::model_control_mode::explicit_);
  management_options o;
  o.listen = "tcp://0.0.0.0:0";
  auto s = management_socket::create(o, control);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), error_code::invalid_argument);
  EXPECT_NE(s.error().message().find("management_token_file"), std::string::npos);
}

}  // namespace
}  // namespace troupe::cluster
