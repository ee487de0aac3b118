// JSON logs (cluster/logging.cpp): structured fields as keys of each line, escaping, protobuf's
// own log output routed through the same formatter, and the rate limiter that bounds it.
#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cluster/log_rate_limiter.hpp"
#include "cluster/logging.hpp"
#include "serving/log_fields.hpp"

namespace troupe::cluster {
namespace {

using namespace std::chrono_literals;
using serving::log_event;
using serving::log_level;

/// Logs into a string for the test's lifetime (then back to plain stderr for other tests).
class captured_log {
 public:
  captured_log() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    EXPECT_TRUE(setup_json_logging("info", sink).is_ok());
  }
  ~captured_log() { EXPECT_TRUE(setup_json_logging("info").is_ok()); }

  std::vector<nlohmann::json> lines() const {
    std::vector<nlohmann::json> out;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);) {
      EXPECT_TRUE(nlohmann::json::accept(line)) << line;
      if (nlohmann::json::accept(line)) out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }

 private:
  std::ostringstream out_;
};

TEST(JsonLogging, FieldsAreKeysOfTheLine) {
  captured_log log;
  log_event(log_level::info, "model loaded",
            {{"model", "mlp"}, {"version", int64_t{2}}, {"code", "ok"}, {"duration_ms", 12.5}});
  log_event(log_level::error, "model load failed",
            {{"model", std::string("resnet")},
             {"version", 1},
             {"code", "invalid_model"},
             {"duration_ms", 3.0},
             {"error", "bad \"graph\"\n"}});
  spdlog::info("plain {}", 1);
  const auto lines = log.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["level"], "info");
  EXPECT_EQ(lines[0]["logger"], "troupe");
  EXPECT_EQ(lines[0]["msg"], "model loaded");
  EXPECT_EQ(lines[0]["model"], "mlp");
  EXPECT_EQ(lines[0]["version"], 2);
  EXPECT_EQ(lines[0]["code"], "ok");
  EXPECT_EQ(lines[0]["duration_ms"], 12.5);
  EXPECT_TRUE(lines[0].contains("time"));
  EXPECT_EQ(lines[1]["level"], "error");
  EXPECT_EQ(lines[1]["model"], "resnet");
  EXPECT_EQ(lines[1]["code"], "invalid_model");
  EXPECT_EQ(lines[1]["error"], "bad \"graph\"\n");
  // Fields belong to their own line only.
  EXPECT_EQ(lines[2]["msg"], "plain 1");
  EXPECT_FALSE(lines[2].contains("model"));
}

TEST(JsonLogging, NonFiniteNumbersAreNull) {
  captured_log log;
  log_event(log_level::warn, "odd", {{"duration_ms", 1.0 / 0.0}});
  const auto lines = log.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(lines[0]["duration_ms"].is_null());
}

TEST(JsonLogging, BelowTheLevelNothingIsWritten) {
  captured_log log;
  log_event(log_level::debug, "hidden", {{"model", "mlp"}});
  EXPECT_TRUE(log.lines().empty());
}

TEST(JsonLogging, ProtobufLogsAreJsonAndRateLimited) {
  captured_log log;
  // More than a second's allowance at once, as a client sending malformed messages would cause.
  const int sent = 100;
  for (int i = 0; i < sent; ++i)
    GOOGLE_LOG(ERROR) << "String field contains invalid \"UTF-8\" " << i;
  const auto lines = log.lines();
  ASSERT_FALSE(lines.empty());
  EXPECT_LE(lines.size(), static_cast<size_t>(protobuf_log_lines_per_second) + 2);
  for (const auto& l : lines) {
    EXPECT_EQ(l["logger"], "protobuf");
    EXPECT_EQ(l["level"], "error");
    EXPECT_TRUE(l.contains("source_file"));
    EXPECT_TRUE(l["source_line"].is_number_integer());
  }
  EXPECT_EQ(lines[0]["msg"], "String field contains invalid \"UTF-8\" 0");
}

TEST(JsonLogging, LongProtobufMessagesAreCut) {
  captured_log log;
  GOOGLE_LOG(WARNING) << std::string(10000, 'x');
  const auto lines = log.lines();
  ASSERT_EQ(lines.size(), 1u);
  const std::string msg = lines[0]["msg"];
  EXPECT_LT(msg.size(), protobuf_log_max_bytes + 16);
  EXPECT_EQ(lines[0]["level"], "warning");
}

TEST(JsonLogging, UnknownLevelIsAnError) {
  EXPECT_EQ(setup_json_logging("loud").code(), error_code::invalid_argument);
}

TEST(LogRateLimiter, AdmitsABurstThenTheRateAndCountsTheRest) {
  log_rate_limiter limiter(10, 5);
  const auto t0 = log_rate_limiter::clock::time_point{} + 1h;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.admit(t0).admit) << i;
  for (int i = 0; i < 7; ++i) EXPECT_FALSE(limiter.admit(t0).admit) << i;
  // 100 ms later one token is back; the admitted line carries the count of refused ones.
  auto d = limiter.admit(t0 + 100ms);
  EXPECT_TRUE(d.admit);
  EXPECT_EQ(d.suppressed_before, 7u);
  EXPECT_FALSE(limiter.admit(t0 + 100ms).admit);
  d = limiter.admit(t0 + 200ms);
  EXPECT_TRUE(d.admit);
  EXPECT_EQ(d.suppressed_before, 1u);
  // Idle time refills up to the burst, not beyond.
  const auto t1 = t0 + 1h;
  int admitted = 0;
  for (int i = 0; i < 20; ++i) admitted += limiter.admit(t1).admit ? 1 : 0;
  EXPECT_EQ(admitted, 5);
}

TEST(LogRateLimiter, SustainedRateIsBounded) {
  log_rate_limiter limiter(10, 10);
  const auto t0 = log_rate_limiter::clock::time_point{} + 1h;
  int admitted = 0;
  // 1000 lines a second for 10 s: the burst plus 10 a second.
  for (int ms = 0; ms < 10000; ++ms)
    admitted += limiter.admit(t0 + std::chrono::milliseconds(ms)).admit ? 1 : 0;
  EXPECT_GE(admitted, 100);
  EXPECT_LE(admitted, 111);
}

}  // namespace
}  // namespace troupe::cluster
