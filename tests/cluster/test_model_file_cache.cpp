// A remote worker's cache of model files (cluster/model_file_cache.hpp) and the SHA-256 it names
// them by (cluster/content_digest.hpp): open makes the directory; find knows only a file of the
// right hash and size; store keeps bytes whose hash is the one asked for under <sha256>.onnx and
// nothing at all (no file, no temporary) for bytes whose hash is another.

#include "cluster/model_file_cache.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cluster/content_digest.hpp"

namespace troupe::cluster {
namespace {

namespace fs = std::filesystem;

/// A fresh directory of the test's own, removed at the end.
class model_file_cache_test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "troupe_cache_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  /// Every name in `dir`, hidden ones included.
  static std::vector<std::string> names_in(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    return out;
  }
  static std::string contents_of(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  fs::path root_;
};

TEST(content_digest, sha256_hex_matches_the_fips_test_vectors) {
  EXPECT_EQ(sha256_hex("abc", 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_F(model_file_cache_test, sha256_of_file_hashes_a_file_and_a_missing_one_is_not_found) {
  const std::string path = (root_ / "abc.bin").string();
  std::ofstream(path, std::ios::binary) << "abc";
  auto d = sha256_of_file(path);
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  EXPECT_EQ(d->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(d->bytes, 3u);

  auto missing = sha256_of_file((root_ / "no-such-file.onnx").string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), error_code::not_found) << missing.error().to_string();
}

TEST_F(model_file_cache_test, open_creates_the_directory_and_its_parents) {
  const fs::path dir = root_ / "a" / "b" / "models";
  ASSERT_FALSE(fs::exists(dir));
  auto cache = model_file_cache::open(dir.string());
  ASSERT_TRUE(cache.has_value()) << cache.error().to_string();
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_EQ(cache->directory(), dir.string());
  // An existing directory opens too.
  EXPECT_TRUE(model_file_cache::open(dir.string()).has_value());
}

TEST_F(model_file_cache_test, store_keeps_the_bytes_under_their_hash_and_find_knows_them) {
  auto cache = model_file_cache::open((root_ / "cache").string());
  ASSERT_TRUE(cache.has_value()) << cache.error().to_string();
  std::string bytes(10000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 3);
  const std::string sha = sha256_hex(bytes.data(), bytes.size());
  EXPECT_EQ(cache->find(sha, bytes.size()), "");  // not there yet

  auto stored = cache->store(sha, bytes.data(), bytes.size());
  ASSERT_TRUE(stored.has_value()) << stored.error().to_string();
  EXPECT_EQ(fs::path(*stored).filename().string(), sha + ".onnx");
  EXPECT_EQ(fs::path(*stored).parent_path(), root_ / "cache");
  EXPECT_EQ(contents_of(*stored), bytes);
  EXPECT_EQ(names_in(root_ / "cache"), std::vector<std::string>{sha + ".onnx"});  // no temp left

  EXPECT_EQ(cache->find(sha, bytes.size()), *stored);
  EXPECT_EQ(cache->find(sha, bytes.size() - 1), "");  // the wrong size
  EXPECT_EQ(cache->find(sha, bytes.size() + 1), "");
  EXPECT_EQ(cache->find(std::string(64, 'a'), bytes.size()), "");  // an unknown hash

  // Another cache of the same directory (a restarted worker) finds it too.
  auto again = model_file_cache::open((root_ / "cache").string());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->find(sha, bytes.size()), *stored);
}

TEST_F(model_file_cache_test, a_second_store_of_the_same_hash_works) {
  auto cache = model_file_cache::open((root_ / "cache").string());
  ASSERT_TRUE(cache.has_value()) << cache.error().to_string();
  const std::string bytes = "an onnx model, or so it says";
  const std::string sha = sha256_hex(bytes.data(), bytes.size());
  auto first = cache->store(sha, bytes.data(), bytes.size());
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  auto second = cache->store(sha, bytes.data(), bytes.size());
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  EXPECT_EQ(*second, *first);
  EXPECT_EQ(contents_of(*second), bytes);
  EXPECT_EQ(cache->find(sha, bytes.size()), *first);
  EXPECT_EQ(names_in(root_ / "cache"), std::vector<std::string>{sha + ".onnx"});
}

TEST_F(model_file_cache_test, bytes_of_another_hash_are_refused_and_leave_nothing) {
  auto cache = model_file_cache::open((root_ / "cache").string());
  ASSERT_TRUE(cache.has_value()) << cache.error().to_string();
  const std::string asked = sha256_hex("abc", 3);
  const std::string corrupted = "abd";
  auto stored = cache->store(asked, corrupted.data(), corrupted.size());
  ASSERT_FALSE(stored.has_value()) << "kept at " << *stored;
  EXPECT_EQ(stored.error().code(), error_code::invalid_argument) << stored.error().to_string();
  EXPECT_TRUE(names_in(root_ / "cache").empty());  // neither the file nor a temporary
  EXPECT_EQ(cache->find(asked, corrupted.size()), "");

  // The right bytes afterwards are kept as usual.
  auto right = cache->store(asked, "abc", 3);
  ASSERT_TRUE(right.has_value()) << right.error().to_string();
  EXPECT_EQ(contents_of(*right), "abc");
}

// A model with external data: its folder under models/ holds model.onnx and each data file under
// its name (a subfolder too), the same bytes as the cached files; made once and reused; a data
// file missing from the cache, or a name that would leave the folder, is an error and leaves no
// folder behind.
TEST_F(model_file_cache_test, assemble_lays_out_a_model_beside_its_data_files) {
  auto cache = model_file_cache::open((root_ / "cache").string());
  ASSERT_TRUE(cache.has_value()) << cache.error().to_string();
  auto keep = [&](const std::string& bytes) {
    const std::string sha = sha256_hex(bytes.data(), bytes.size());
    auto stored = cache->store(sha, bytes.data(), bytes.size());
    EXPECT_TRUE(stored.has_value()) << stored.error().to_string();
    return sha;
  };
  const std::string model = "the graph", weights = "the weights", more = "more weights";
  const std::string model_sha = keep(model);
  const std::vector<actors::model_data_file> files{{"weights.bin", keep(weights), weights.size()},
                                                   {"data/part-1", keep(more), more.size()}};
  auto path = cache->assemble(model_sha, model.size(), files);
  ASSERT_TRUE(path.has_value()) << path.error().to_string();
  const fs::path folder = fs::path(*path).parent_path();
  EXPECT_EQ(fs::path(*path).filename(), "model.onnx");
  EXPECT_EQ(folder.parent_path(), root_ / "cache" / "models");
  EXPECT_EQ(contents_of(*path), model);
  EXPECT_EQ(contents_of((folder / "weights.bin").string()), weights);
  EXPECT_EQ(contents_of((folder / "data" / "part-1").string()), more);
  EXPECT_EQ(names_in(root_ / "cache" / "models"), std::vector<std::string>{folder.filename()});

  auto again = cache->assemble(model_sha, model.size(), files);
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(*again, *path);
  // Other data files: another folder.
  auto other = cache->assemble(model_sha, model.size(), {files[0]});
  ASSERT_TRUE(other.has_value()) << other.error().to_string();
  EXPECT_NE(*other, *path);

  auto missing =
      cache->assemble(model_sha, model.size(), {{"weights.bin", std::string(64, 'b'), 5}});
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), error_code::not_found) << missing.error().to_string();
  for (const char* bad : {"../escape", "/etc/passwd", "a/../../b", "model.onnx", "", "a//b"}) {
    auto refused =
        cache->assemble(model_sha, model.size(), {{bad, files[0].content_sha256, weights.size()}});
    ASSERT_FALSE(refused.has_value()) << bad;
    EXPECT_EQ(refused.error().code(), error_code::invalid_argument) << bad;
  }
  EXPECT_EQ(names_in(root_ / "cache" / "models").size(), 2u);  // no temporary folder left
}

}  // namespace
}  // namespace troupe::cluster
