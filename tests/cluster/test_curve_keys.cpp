// CURVE key files (cluster/curve_keys.hpp): fresh pairs are valid Z85 keys; a secret key file
// gives back its pair; mistyped files (garbage, a short key, no file, an authorized keys file
// with a bad line or no key) are typed errors that say where, never a node that refuses
// everyone.

#include "cluster/curve_keys.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace troupe::cluster {
namespace {

namespace fs = std::filesystem;

class curve_keys_test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "troupe_keys_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    auto pair = generate_curve_keypair();
    if (!pair && pair.error().code() == error_code::unsupported)
      GTEST_SKIP() << "libzmq without CURVE: " << pair.error().to_string();
    ASSERT_TRUE(pair.has_value()) << pair.error().to_string();
    pair_ = *pair;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (root_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  fs::path root_;
  curve_keypair pair_;
};

TEST_F(curve_keys_test, generated_keys_are_40_z85_characters) {
  EXPECT_EQ(pair_.public_key.size(), 40u);
  EXPECT_EQ(pair_.secret_key.size(), 40u);
  EXPECT_TRUE(is_curve_key(pair_.public_key)) << pair_.public_key;
  EXPECT_TRUE(is_curve_key(pair_.secret_key));
  EXPECT_NE(pair_.public_key, pair_.secret_key);
  auto other = generate_curve_keypair();
  ASSERT_TRUE(other.has_value());
  EXPECT_NE(other->public_key, pair_.public_key);  // fresh each time
}

TEST_F(curve_keys_test, is_curve_key_checks_length_and_alphabet) {
  EXPECT_FALSE(is_curve_key(""));
  EXPECT_FALSE(is_curve_key(pair_.public_key.substr(0, 39)));
  EXPECT_FALSE(is_curve_key(pair_.public_key + "0"));
  EXPECT_FALSE(is_curve_key(pair_.public_key.substr(0, 35)));  // a multiple of 5, still short
  EXPECT_FALSE(is_curve_key(std::string(40, '~')));            // not in Z85's alphabet
  EXPECT_FALSE(is_curve_key(pair_.public_key.substr(0, 39) + " "));
}

TEST_F(curve_keys_test, a_secret_key_file_gives_back_its_pair) {
  const std::string path = write("secret.key", pair_.secret_key + "\n");
  auto read = read_curve_secret_key(path);
  ASSERT_TRUE(read.has_value()) << read.error().to_string();
  EXPECT_EQ(read->secret_key, pair_.secret_key);
  EXPECT_EQ(read->public_key, pair_.public_key);

  // Without the newline, too.
  auto bare = read_curve_secret_key(write("bare.key", pair_.secret_key));
  ASSERT_TRUE(bare.has_value()) << bare.error().to_string();
  EXPECT_EQ(bare->public_key, pair_.public_key);

  auto pub = read_curve_public_key(write("public.key", pair_.public_key + "\n"));
  ASSERT_TRUE(pub.has_value()) << pub.error().to_string();
  EXPECT_EQ(*pub, pair_.public_key);
}

TEST_F(curve_keys_test, mistyped_key_files_are_typed_errors) {
  auto garbage = read_curve_secret_key(write("garbage.key", "this is not a key at all\n"));
  ASSERT_FALSE(garbage.has_value());
  EXPECT_EQ(garbage.error().code(), error_code::invalid_argument) << garbage.error().to_string();

  auto short_key = read_curve_secret_key(write("short.key", pair_.secret_key.substr(0, 39) + "\n"));
  ASSERT_FALSE(short_key.has_value());
  EXPECT_EQ(short_key.error().code(), error_code::invalid_argument)
      << short_key.error().to_string();

  auto empty = read_curve_secret_key(write("empty.key", ""));
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), error_code::invalid_argument) << empty.error().to_string();

  auto missing = read_curve_secret_key((root_ / "missing.key").string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), error_code::not_found) << missing.error().to_string();

  auto missing_public = read_curve_public_key((root_ / "missing.pub").string());
  ASSERT_FALSE(missing_public.has_value());
  EXPECT_EQ(missing_public.error().code(), error_code::not_found);

  auto bad_public = read_curve_public_key(write("bad.pub", std::string(40, '~') + "\n"));
  ASSERT_FALSE(bad_public.has_value());
  EXPECT_EQ(bad_public.error().code(), error_code::invalid_argument);
}

TEST_F(curve_keys_test, authorized_keys_skip_comments_and_empty_lines_and_take_notes) {
  auto second = generate_curve_keypair();
  ASSERT_TRUE(second.has_value());
  auto third = generate_curve_keypair();
  ASSERT_TRUE(third.has_value());
  const std::string path =
      write("authorized",
            "# the workers of rack 1\n"
            "\n" +
                pair_.public_key + " gpu-node-1\n" +
                "   \n"
                "# " +
                std::string(40, '~') + " a key commented out\n" + second->public_key + "\n" +
                third->public_key + "\tgpu-node-3 (tab)\n");
  auto keys = read_curve_authorized_keys(path);
  ASSERT_TRUE(keys.has_value()) << keys.error().to_string();
  EXPECT_EQ(*keys,
            (std::set<std::string>{pair_.public_key, second->public_key, third->public_key}));
}

TEST_F(curve_keys_test, an_authorized_keys_file_with_a_bad_line_names_the_line) {
  const std::string path = write("authorized", "# workers\n" + pair_.public_key + " ok\n" +
                                                   pair_.public_key.substr(0, 39) + " short\n");
  auto keys = read_curve_authorized_keys(path);
  ASSERT_FALSE(keys.has_value());
  EXPECT_EQ(keys.error().code(), error_code::invalid_argument) << keys.error().to_string();
  EXPECT_NE(keys.error().message().find("line 3"), std::string::npos) << keys.error().message();
  EXPECT_NE(keys.error().message().find(path), std::string::npos) << keys.error().message();

  auto garbage = read_curve_authorized_keys(write("garbage", "hello world\n"));
  ASSERT_FALSE(garbage.has_value());
  EXPECT_EQ(garbage.error().code(), error_code::invalid_argument);
  EXPECT_NE(garbage.error().message().find("line 1"), std::string::npos)
      << garbage.error().message();
}

TEST_F(curve_keys_test, an_authorized_keys_file_without_a_key_is_refused) {
  auto only_comments =
      read_curve_authorized_keys(write("comments", "# no workers yet\n\n# none\n"));
  ASSERT_FALSE(only_comments.has_value());
  EXPECT_EQ(only_comments.error().code(), error_code::invalid_argument)
      << only_comments.error().to_string();

  auto empty = read_curve_authorized_keys(write("empty", ""));
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), error_code::invalid_argument);

  auto missing = read_curve_authorized_keys((root_ / "missing").string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), error_code::not_found) << missing.error().to_string();
}

}  // namespace
}  // namespace troupe::cluster
