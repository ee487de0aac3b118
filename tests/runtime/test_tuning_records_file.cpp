// runtime::tuning_records_file: the records kept in a file. A missing file is no error; one that
// cannot be used is an error that leaves the records as they were and is replaced by the next
// save with something new; saves write only what changed, atomically (no temporary file is left
// behind, a failed save leaves the old file), and in the background on request.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/tuning_records.hpp"
#include "runtime/tuning_records_file.hpp"

namespace troupe::runtime {
namespace {

namespace fs = std::filesystem;

const std::string kKey = "NVIDIA H100 80GB HBM3 sm_90 132 SMs f16 cl g1 x[8,8,20,20]";
const std::string kForm = "NVIDIA H100 80GB HBM3 sm_90 132 SMs f16 cl g1 x[0,8,20,20]";

class TuningRecordsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("troupe_tuning_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name = "records.txt") const { return (dir_ / name).string(); }
  static std::string read(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  static void write(const std::string& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  }
  /// Files in the directory: no temporary file may stay behind.
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    return names;
  }

  fs::path dir_;
};

TEST_F(TuningRecordsFile, MissingFileIsNothingRecordedYet) {
  kernels::tuning_records records;
  tuning_records_file file(path(), nullptr, records);
  const auto loaded = file.load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
  EXPECT_EQ(*loaded, 0u);
  // Nothing to write either: the file is not created empty.
  const auto saved = file.save();
  ASSERT_TRUE(saved.has_value()) << saved.error().to_string();
  EXPECT_FALSE(*saved);
  EXPECT_FALSE(fs::exists(path()));
}

TEST_F(TuningRecordsFile, SaveThenLoadInAFreshProcess) {
  kernels::tuning_records first;
  tuning_records_file a(path(), nullptr, first);
  ASSERT_TRUE(a.load().has_value());
  (void)first.record(kKey, kForm, {1, 4, 6, 1, true});
  const auto saved = a.save();
  ASSERT_TRUE(saved.has_value()) << saved.error().to_string();
  EXPECT_TRUE(*saved);
  EXPECT_EQ(read(path()), first.to_text());
  EXPECT_EQ(files(), std::vector<std::string>{"records.txt"}) << "a temporary file stayed";

  // Nothing new: nothing written.
  const auto again = a.save();
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(*again);

  kernels::tuning_records fresh;  // a restarted process
  tuning_records_file b(path(), nullptr, fresh);
  const auto loaded = b.load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
  EXPECT_EQ(*loaded, 1u);
  EXPECT_EQ(fresh.find(kKey), (kernels::tuning_record{1, 4, 6, 1, true}));
  EXPECT_EQ(fresh.find_form(kForm), 1);
  // Loading is not a change to write back.
  const auto after_load = b.save();
  ASSERT_TRUE(after_load.has_value());
  EXPECT_FALSE(*after_load);
}

TEST_F(TuningRecordsFile, GarbageIsAnErrorAndReplacedByTheNextSave) {
  write(path(), "this is not a tuning records file\n");
  kernels::tuning_records records;
  tuning_records_file file(path(), nullptr, records);
  const auto loaded = file.load();
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().code(), error_code::invalid_argument);
  EXPECT_NE(loaded.error().message().find(path()), std::string::npos) << "names the file";
  EXPECT_EQ(records.size(), 0u);

  // Left alone until there is something to write, then replaced.
  const auto idle = file.save();
  ASSERT_TRUE(idle.has_value());
  EXPECT_FALSE(*idle);
  EXPECT_EQ(read(path()), "this is not a tuning records file\n");
  (void)records.record(kKey, kForm, {0, 8, 1, 1, false});
  const auto saved = file.save();
  ASSERT_TRUE(saved.has_value()) << saved.error().to_string();
  EXPECT_TRUE(*saved);
  EXPECT_EQ(read(path()), records.to_text());
}

TEST_F(TuningRecordsFile, TruncatedAndForeignFilesAreErrors) {
  kernels::tuning_records source;
  (void)source.record(kKey, kForm, {0, 8, 1, 1, false});
  const std::string text = source.to_text();
  {
    write(path(), text.substr(0, text.size() / 2));
    kernels::tuning_records records;
    const auto loaded = tuning_records_file(path(), nullptr, records).load();
    ASSERT_FALSE(loaded.has_value());
    EXPECT_EQ(loaded.error().code(), error_code::invalid_argument);
    EXPECT_EQ(records.size(), 0u);
  }
  {
    kernels::tuning_environment other = kernels::current_tuning_environment();
    other.cudnn_version += 1;
    write(path(), source.to_text(other));
    kernels::tuning_records records;
    const auto loaded = tuning_records_file(path(), nullptr, records).load();
    ASSERT_FALSE(loaded.has_value());
    EXPECT_EQ(loaded.error().code(), error_code::unsupported) << loaded.error().to_string();
    EXPECT_EQ(records.size(), 0u);
  }
}

TEST_F(TuningRecordsFile, NotARegularFileIsAnIoError) {
  fs::create_directories(path());
  kernels::tuning_records records;
  const auto loaded = tuning_records_file(path(), nullptr, records).load();
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().code(), error_code::io_error) << loaded.error().to_string();
}

TEST_F(TuningRecordsFile, FailedSaveLeavesNothingBehind) {
  kernels::tuning_records records;
  (void)records.record(kKey, kForm, {0, 8, 1, 1, false});
  {
    // A directory that does not exist.
    tuning_records_file file((dir_ / "missing" / "records.txt").string(), nullptr, records);
    const auto saved = file.save();
    ASSERT_FALSE(saved.has_value());
    EXPECT_EQ(saved.error().code(), error_code::io_error);
  }
  {
    // The path is a directory: the rename fails, the temporary file goes.
    fs::create_directories(path("taken"));
    fs::create_directories(dir_ / "taken" / "inside");  // a non-empty directory is not replaced
    tuning_records_file file(path("taken"), nullptr, records);
    const auto saved = file.save();
    ASSERT_FALSE(saved.has_value());
    EXPECT_EQ(saved.error().code(), error_code::io_error) << saved.error().to_string();
    EXPECT_EQ(files(), std::vector<std::string>{"taken"}) << "a temporary file stayed";
  }
}

TEST_F(TuningRecordsFile, BackgroundSavesReportAndCoalesce) {
  kernels::tuning_records records;
  std::mutex mutex;
  std::vector<bool> outcomes;
  {
    tuning_records_file file(
        path(),
        [&](const expected<bool>& r) {
          std::lock_guard<std::mutex> lock(mutex);
          ASSERT_TRUE(r.has_value()) << r.error().to_string();
          outcomes.push_back(*r);
        },
        records);
    ASSERT_TRUE(file.load().has_value());
    (void)records.record(kKey, kForm, {0, 8, 1, 1, false});
    file.save_in_background();
    file.save_in_background();
    file.wait_for_background_saves();
    EXPECT_EQ(read(path()), records.to_text());
    {
      std::lock_guard<std::mutex> lock(mutex);
      ASSERT_FALSE(outcomes.empty());
      EXPECT_TRUE(outcomes.front()) << "the first save wrote";
      for (size_t i = 1; i < outcomes.size(); ++i) EXPECT_FALSE(outcomes[i]) << "nothing new";
    }
    // A save asked for just before the file object goes is still made.
    (void)records.record(kKey + " b", kForm + " b", {0, 8, 1, 1, false});
    file.save_in_background();
  }
  EXPECT_EQ(read(path()), records.to_text());
  kernels::tuning_records fresh;
  const auto loaded = tuning_records_file(path(), nullptr, fresh).load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
  EXPECT_EQ(*loaded, 2u);
}

TEST_F(TuningRecordsFile, ProcessesSharingAFileKeepEachOthersRecords) {
  // A node's worker processes share one file: each save merges what the others wrote.
  kernels::tuning_records one, two;
  tuning_records_file a(path(), nullptr, one), b(path(), nullptr, two);
  ASSERT_TRUE(a.load().has_value());
  ASSERT_TRUE(b.load().has_value());
  (void)one.record(kKey, kForm, {1, 4, 6, 1, true});
  ASSERT_TRUE(a.save().has_value());
  (void)two.record(kKey + " b", kForm + " b", {0, 8, 1, 1, false});
  ASSERT_TRUE(b.save().has_value());
  kernels::tuning_records fresh;
  tuning_records_file c(path(), nullptr, fresh);
  const auto loaded = c.load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
  EXPECT_EQ(*loaded, 2u) << "the second save kept the first one's record";
  EXPECT_EQ(files(), std::vector<std::string>{"records.txt"});
}

}  // namespace
}  // namespace troupe::runtime
