// kernels::tuning_records, the store of recorded convolution choices: the text round trip, the
// header's checks (format version, cuDNN / CUDA versions), defensive parsing of garbage,
// truncated and out-of-range input (an error, the store untouched), the bounds, and record/find
// from several threads at once. No GPU: records are plain integers here.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/tuning_records.hpp"
#include "tests/test_seed.hpp"

namespace troupe::kernels {
namespace {

const tuning_environment kEnv{90100, 13000};
const std::string kHeader = "troupe-tuning-records 1 cudnn 90100 cudart 13000\n";

const std::string kKeyA =
    "NVIDIA H100 80GB HBM3 sm_90 132 SMs f16 cl g1 x[8,3,224,224] w[64,3,7,7]";
const std::string kKeyB = "NVIDIA H100 80GB HBM3 sm_90 132 SMs f32 cf g1 x[1,8,20,20] w[8,8,3,3]";
const std::string kFormA =
    "NVIDIA H100 80GB HBM3 sm_90 132 SMs f16 cl g1 x[0,3,224,224] w[64,3,7,7]";

void add_two_records(tuning_records& r) {
  (void)r.record(kKeyA, kFormA, {1, 4, 6, 1, true});
  (void)r.record(kKeyB, kKeyB + " form", {0, 1, 1, 3, false});
}

std::string two_records_text() {
  tuning_records r;
  add_two_records(r);
  return r.to_text(kEnv);
}

TEST(TuningRecords, TextRoundTrip) {
  const std::string text = two_records_text();
  EXPECT_EQ(text.rfind(kHeader, 0), 0u) << text;
  EXPECT_NE(text.find("\nend 2 2\n"), std::string::npos) << text;

  tuning_records b;
  const auto added = b.from_text(text, kEnv);
  ASSERT_TRUE(added.has_value()) << added.error().to_string();
  EXPECT_EQ(*added, 2u);
  EXPECT_EQ(b.size(), 2u);
  EXPECT_EQ(b.form_count(), 2u);
  EXPECT_EQ(b.find(kKeyA), (tuning_record{1, 4, 6, 1, true}));
  EXPECT_EQ(b.find(kKeyB), (tuning_record{0, 1, 1, 3, false}));
  EXPECT_EQ(b.find_form(kFormA), 1);
  EXPECT_EQ(b.to_text(kEnv), text) << "the text is canonical (sorted by key)";
}

TEST(TuningRecords, EmptyStoreRoundTrips) {
  tuning_records empty;
  const std::string text = empty.to_text(kEnv);
  EXPECT_EQ(text, kHeader + "end 0 0\n");
  tuning_records b;
  const auto added = b.from_text(text, kEnv);
  ASSERT_TRUE(added.has_value()) << added.error().to_string();
  EXPECT_EQ(*added, 0u);
}

TEST(TuningRecords, RecordsMadeInTheProcessStandOverImportedOnes) {
  tuning_records r;
  (void)r.record(kKeyA, kFormA, {0, 8, 1, 1, false});
  const auto added = r.from_text(two_records_text(), kEnv);
  ASSERT_TRUE(added.has_value()) << added.error().to_string();
  EXPECT_EQ(*added, 1u);  // kKeyB only
  EXPECT_EQ(r.find(kKeyA), (tuning_record{0, 8, 1, 1, false}));
  EXPECT_EQ(r.find_form(kFormA), 0);
}

TEST(TuningRecords, FirstRecordStandsAndForgetRemovesOnlyTheSameRecord) {
  tuning_records r;
  EXPECT_EQ(r.record(kKeyA, kFormA, {0, 8, 1, 1, false}), (tuning_record{0, 8, 1, 1, false}));
  EXPECT_EQ(r.record(kKeyA, kFormA, {2, 8, 0, 1, false}), (tuning_record{0, 8, 1, 1, false}))
      << "the first record for a key stands";
  r.forget(kKeyA, {2, 8, 0, 1, false});
  EXPECT_TRUE(r.find(kKeyA).has_value()) << "another record than the one named stays";
  r.forget(kKeyA, {0, 8, 1, 1, false});
  EXPECT_FALSE(r.find(kKeyA).has_value());
  r.forget_form(kFormA, 2);
  EXPECT_EQ(r.find_form(kFormA), 0);
  r.forget_form(kFormA, 0);
  EXPECT_FALSE(r.find_form(kFormA).has_value());
}

TEST(TuningRecords, GenerationChangesWhenSomethingIsAdded) {
  tuning_records r;
  const uint64_t g0 = r.generation();
  (void)r.record(kKeyA, kFormA, {0, 8, 1, 1, false});
  const uint64_t g1 = r.generation();
  EXPECT_NE(g1, g0);
  (void)r.record(kKeyA, kFormA, {0, 8, 1, 1, false});
  EXPECT_EQ(r.generation(), g1) << "nothing new";
  ASSERT_TRUE(r.from_text(kHeader + "end 0 0\n", kEnv).has_value());
  EXPECT_EQ(r.generation(), g1) << "an import that adds nothing";
  r.clear();
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.form_count(), 0u);
  EXPECT_NE(r.generation(), g1);
}

TEST(TuningRecords, OtherLibrariesOrFormatVersionAreUnsupported) {
  const std::string body = two_records_text().substr(kHeader.size());
  struct header_case {
    const char* name;
    std::string header;
  };
  const header_case cases[] = {
      {"another cuDNN", "troupe-tuning-records 1 cudnn 90000 cudart 13000\n"},
      {"another CUDA runtime", "troupe-tuning-records 1 cudnn 90100 cudart 12080\n"},
      {"a later format", "troupe-tuning-records 2 cudnn 90100 cudart 13000 more\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    tuning_records r;
    const auto added = r.from_text(c.header + body, kEnv);
    ASSERT_FALSE(added.has_value());
    EXPECT_EQ(added.error().code(), error_code::unsupported) << added.error().to_string();
    EXPECT_EQ(r.size(), 0u);
    EXPECT_EQ(r.form_count(), 0u);
  }
  // The versions are named, so that the warning says why.
  tuning_records r;
  const auto added = r.from_text(cases[0].header + body, kEnv);
  ASSERT_FALSE(added.has_value());
  EXPECT_NE(added.error().message().find("90000"), std::string::npos);
  EXPECT_NE(added.error().message().find("90100"), std::string::npos);
}

/// Every text here must be refused with invalid_argument and leave the store as it was.
void expect_malformed(const std::string& text, const std::string& why) {
  SCOPED_TRACE(why);
  tuning_records r;
  (void)r.record(kKeyA, kFormA, {0, 8, 1, 1, false});
  const uint64_t generation = r.generation();
  const auto added = r.from_text(text, kEnv);
  ASSERT_FALSE(added.has_value()) << "accepted: " << text.substr(0, 200);
  EXPECT_EQ(added.error().code(), error_code::invalid_argument) << added.error().to_string();
  EXPECT_EQ(r.size(), 1u);
  EXPECT_EQ(r.form_count(), 1u);
  EXPECT_EQ(r.find(kKeyA), (tuning_record{0, 8, 1, 1, false}));
  EXPECT_EQ(r.generation(), generation);
}

TEST(TuningRecords, GarbageIsRefused) {
  expect_malformed("", "empty");
  expect_malformed("\n", "an empty line");
  expect_malformed("hello world\n", "no header");
  expect_malformed(std::string("\x7f"
                               "ELF\x02\x01\x01\0\0\0",
                               10),
                   "binary");
  expect_malformed("troupe-tuning-records\n", "a header without a version");
  expect_malformed("troupe-tuning-records 1\nend 0 0\n", "a header without the libraries");
  expect_malformed("troupe-tuning-records 1 cudnn x cudart 13000\nend 0 0\n", "a bad number");
  expect_malformed("troupe-tuning-records 1 cudnn 90100 cudart 13000 extra\nend 0 0\n",
                   "more in a version 1 header");
  expect_malformed(kHeader + "x 1 2 3\nend 0 0\n", "an unknown line kind");
  expect_malformed(kHeader + "r 1 4 6 1 1\nend 1 0\n", "a record without a key");
  expect_malformed(kHeader + "r 1 4 6 1\nend 1 0\n", "a record with too few numbers");
  expect_malformed(kHeader + "r 1  4 6 1 1 " + kKeyB + "\nend 1 0\n", "two spaces");
  expect_malformed(kHeader + "f " + kKeyB + "\nend 0 1\n", "a form without its number");
  expect_malformed(kHeader + "end 0 0\nr 0 1 1 1 0 " + kKeyB + "\n", "a line after the end");
  expect_malformed(kHeader + "end 0 0\n\n", "an empty line after the end");
  expect_malformed(kHeader + "end 0\n", "an end line without the form count");
  expect_malformed(kHeader + "r 0 1 1 1 0 " + kKeyB + "\nend 2 0\n", "an end line that miscounts");
  expect_malformed(kHeader + "r 0 1 1 1 0 " + kKeyB + "\nr 0 2 1 1 0 " + kKeyB + "\nend 2 0\n",
                   "a key twice");
  expect_malformed(kHeader + "r 0 1 1 1 0 key\twith a tab\nend 1 0\n", "a control character");
  expect_malformed(kHeader + "r 0 1 1 1 0 " + kKeyB + "\r\nend 1 0\n", "a CR line end");
}

TEST(TuningRecords, OutOfRangeNumbersAreRefused) {
  const char* bad[] = {
      "r -1 1 1 1 0",                    // a negative variant
      "r 0 0 1 1 0",                     // no images per slice (conv_ops would divide by it)
      "r 0 -8 1 1 0",                    // negative images
      "r 0 1 -1 1 0",                    // a negative algorithm
      "r 0 1 1 -1 0",                    // a negative math mode
      "r 0 1 1 1 2",                     // fused neither 0 nor 1
      "r 65537 1 1 1 0",                 // beyond any enum
      "r 0 1 99999999999999999999 1 0",  // beyond int64
      "r 0 1 1 1 0x1",                   // not decimal
      "r 0 1 1.5 1 0",                   // not an integer
      "r 0 1 +1 1 0",                    // a sign from_chars does not take
  };
  for (const char* line : bad) expect_malformed(kHeader + line + " " + kKeyB + "\nend 1 0\n", line);
  expect_malformed(kHeader + "f -1 " + kFormA + "\nend 0 1\n", "a negative form");
  expect_malformed(kHeader + "f 70000 " + kFormA + "\nend 0 1\n", "a form beyond any enum");
}

TEST(TuningRecords, EveryTruncationIsRefused) {
  const std::string text = two_records_text();
  // Every proper prefix but the one without only the final newline (a complete text) is refused:
  // the end line, and its counts, are what a cut cannot leave.
  for (size_t n = 0; n + 1 < text.size(); ++n) {
    tuning_records r;
    const auto added = r.from_text(std::string_view(text).substr(0, n), kEnv);
    ASSERT_FALSE(added.has_value()) << "a prefix of " << n << " bytes was accepted";
    EXPECT_EQ(r.size(), 0u);
  }
  tuning_records r;
  EXPECT_TRUE(r.from_text(std::string_view(text).substr(0, text.size() - 1), kEnv).has_value());
}

TEST(TuningRecords, RandomBytesNeverCrash) {
  // Random bytes, and random byte flips in a valid text: refused or accepted, never a crash.
  std::mt19937_64 rng(testing::test_seed());
  auto uniform = [&rng](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const std::string valid = two_records_text();
  for (int i = 0; i < 2000; ++i) {
    std::string text;
    if (i % 2 == 0) {
      text.resize(static_cast<size_t>(uniform(0, 300)));
      for (char& c : text) c = static_cast<char>(uniform(0, 255));
    } else {
      text = valid;
      for (int f = 0; f < 3; ++f) {
        text[static_cast<size_t>(uniform(0, static_cast<int64_t>(text.size()) - 1))] =
            static_cast<char>(uniform(0, 255));
      }
    }
    tuning_records r;
    const auto added = r.from_text(text, kEnv);
    if (!added) {
      EXPECT_EQ(r.size(), 0u);
    }
  }
}

TEST(TuningRecords, BoundsAreEnforced) {
  // A line over the bound.
  expect_malformed(
      kHeader + "r 0 1 1 1 0 " + std::string(tuning_records::kMaxLineBytes, 'k') + "\nend 1 0\n",
      "a long line");
  // A text over the bound, refused before it is read line by line.
  expect_malformed(std::string(tuning_records::kMaxTextBytes + 1, 'x'), "a long text");
  // More records than the bound.
  std::string text = kHeader;
  const size_t n = tuning_records::kMaxRecords + 1;
  for (size_t i = 0; i < n; ++i) text += "r 0 1 1 1 0 k" + std::to_string(i) + "\n";
  text += "end " + std::to_string(n) + " 0\n";
  expect_malformed(text, "too many records");
}

TEST(TuningRecords, KeysThatCannotBeWrittenStayInMemoryOnly) {
  tuning_records r;
  (void)r.record("a key\nwith a newline", "form\n", {0, 1, 1, 1, false});
  (void)r.record(kKeyB, kKeyB + " form", {0, 1, 1, 1, false});
  EXPECT_EQ(r.size(), 2u);
  const std::string text = r.to_text(kEnv);
  EXPECT_NE(text.find("\nend 1 1\n"), std::string::npos) << text;
  tuning_records b;
  const auto added = b.from_text(text, kEnv);
  ASSERT_TRUE(added.has_value()) << added.error().to_string();
  EXPECT_EQ(*added, 1u);
}

TEST(TuningRecords, ConcurrentRecordAndFindAgreeOnOneRecordPerKey) {
  // Several threads record different choices for the same keys while others read and export:
  // every key ends with exactly one record, the one every recorder was told stands.
  tuning_records r;
  constexpr int kThreads = 8;
  constexpr int kKeys = 200;
  std::vector<std::vector<tuning_record>> standing(kThreads, std::vector<tuning_record>(kKeys));
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int k = 0; k < kKeys; ++k) {
        const std::string key = "key " + std::to_string(k);
        if (t % 2 == 0) {
          standing[t][k] =
              r.record(key, "form " + std::to_string(k % 10), {t % 3, 1 + t, k, 1, false});
        } else {
          if (auto found = r.find(key)) standing[t][k] = *found;
          if (k % 50 == 0) (void)r.to_text(kEnv);
          standing[t][k] =
              r.record(key, "form " + std::to_string(k % 10), {t % 3, 1 + t, k, 1, true});
        }
      }
    });
  }
  go.store(true);
  for (auto& th : threads) th.join();
  EXPECT_EQ(r.size(), static_cast<size_t>(kKeys));
  EXPECT_EQ(r.form_count(), 10u);
  for (int k = 0; k < kKeys; ++k) {
    const auto found = r.find("key " + std::to_string(k));
    ASSERT_TRUE(found.has_value());
    for (int t = 0; t < kThreads; ++t) EXPECT_EQ(standing[t][k], *found) << "thread " << t;
  }
  // And the text of it round-trips.
  tuning_records b;
  const auto added = b.from_text(r.to_text(kEnv), kEnv);
  ASSERT_TRUE(added.has_value()) << added.error().to_string();
  EXPECT_EQ(*added, static_cast<size_t>(kKeys));
}

TEST(TuningRecords, CountsAreProcessWide) {
  const tuning_counts before = tuning_stats();
  tuning_records::process().count_searched();
  tuning_records::process().count_adopted();
  tuning_records::process().count_adopted();
  const tuning_counts after = tuning_stats();
  EXPECT_EQ(after.searched - before.searched, 1u);
  EXPECT_EQ(after.adopted - before.adopted, 2u);
}

}  // namespace
}  // namespace troupe::kernels
