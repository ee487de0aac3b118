#include "cluster/logging.hpp"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <iterator>
#include <memory>
#include <mutex>
#include <string_view>
#include <variant>

#include "cluster/log_rate_limiter.hpp"
#include "serving/log_fields.hpp"

namespace troupe::cluster {
namespace {

void append_json_escaped(std::string_view text, spdlog::memory_buf_t& dest) {
  static constexpr char hex[] = "0123456789abcdef";
  for (char c : text) {
    switch (c) {
      case '"':
        dest.append(std::string_view("\\\""));
        break;
      case '\\':
        dest.append(std::string_view("\\\\"));
        break;
      case '\n':
        dest.append(std::string_view("\\n"));
        break;
      case '\r':
        dest.append(std::string_view("\\r"));
        break;
      case '\t':
        dest.append(std::string_view("\\t"));
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          const char esc[] = {'\\', 'u', '0', '0', hex[(c >> 4) & 0xf], hex[c & 0xf]};
          dest.append(esc, esc + sizeof(esc));
        } else {
          dest.push_back(c);
        }
    }
  }
}

/// %* : the message, escaped for a JSON string.
class json_message final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    append_json_escaped(std::string_view(msg.payload.data(), msg.payload.size()), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_message>();
  }
};

/// %~ : the line's structured fields (serving::current_log_fields()) as `,"key":value` pairs.
class json_fields final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (const serving::log_field& f : serving::current_log_fields()) {
      dest.append(std::string_view(",\""));
      append_json_escaped(f.key, dest);
      dest.append(std::string_view("\":"));
      if (const auto* s = std::get_if<std::string_view>(&f.value)) {
        dest.push_back('"');
        append_json_escaped(*s, dest);
        dest.push_back('"');
      } else if (const auto* i = std::get_if<int64_t>(&f.value)) {
        fmt::format_to(std::back_inserter(dest), "{}", *i);
      } else {
        const double d = std::get<double>(f.value);
        if (std::isfinite(d))
          fmt::format_to(std::back_inserter(dest), "{}", d);
        else
          dest.append(std::string_view("null"));  // JSON has no NaN or infinity
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_fields>();
  }
};

std::unique_ptr<spdlog::formatter> make_json_formatter() {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<json_message>('*').add_flag<json_fields>('~').set_pattern(
      R"({"time":"%Y-%m-%dT%H:%M:%S.%f%z","level":"%l","logger":"%n","msg":"%*"%~})");
  return formatter;
}

/// What protobuf's log handler writes through: set by setup_json_logging (protobuf calls the
/// handler from any thread, so both are read under the mutex; a new setup starts a new allowance).
struct protobuf_log_state {
  std::mutex mutex;
  std::shared_ptr<spdlog::logger> logger;     // guarded by mutex
  std::unique_ptr<log_rate_limiter> limiter;  // guarded by mutex; set with logger
};

protobuf_log_state& protobuf_state() {
  static protobuf_log_state state;
  return state;
}

spdlog::level::level_enum to_spdlog(google::protobuf::LogLevel level) {
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO:
      return spdlog::level::info;
    case google::protobuf::LOGLEVEL_WARNING:
      return spdlog::level::warn;
    case google::protobuf::LOGLEVEL_ERROR:
      return spdlog::level::err;
    case google::protobuf::LOGLEVEL_FATAL:
      return spdlog::level::critical;
  }
  return spdlog::level::err;
}

void protobuf_log_handler(google::protobuf::LogLevel level, const char* filename, int line,
                          const std::string& message) {
  auto& state = protobuf_state();
  std::shared_ptr<spdlog::logger> logger;
  log_rate_limiter::decision d;
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    logger = state.logger;
    // A fatal message is always written: protobuf aborts right after it.
    if (state.limiter) d = state.limiter->admit(log_rate_limiter::clock::now());
    if (level == google::protobuf::LOGLEVEL_FATAL) d.admit = true;
  }
  if (!logger || !d.admit) return;
  std::string_view text(message);
  const bool cut = text.size() > protobuf_log_max_bytes;
  if (cut) text = text.substr(0, protobuf_log_max_bytes);
  const serving::log_field fields[] = {
      {"source_file", filename ? filename : ""},
      {"source_line", line},
      {"suppressed", d.suppressed_before},
  };
  // "suppressed" only when lines were dropped.
  serving::scoped_log_fields scope(
      std::span<const serving::log_field>(fields, d.suppressed_before > 0 ? 3 : 2));
  logger->log(to_spdlog(level), "{}{}", text, cut ? " [cut]" : "");
}

}  // namespace

status setup_json_logging(const std::string& level, std::shared_ptr<spdlog::sinks::sink> sink) {
  const auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    return invalid_argument("unknown log level '" + level +
                            "' (trace, debug, info, warn, error, critical, off)");
  if (!sink) sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto make_logger = [&](const std::string& name) {
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_formatter(make_json_formatter());
    logger->set_level(lvl);
    logger->flush_on(spdlog::level::warn);
    return logger;
  };
  spdlog::set_default_logger(make_logger("troupe"));
  serving::set_log_fields_formatted(true);
  {
    auto& state = protobuf_state();
    std::lock_guard<std::mutex> lock(state.mutex);
    state.logger = make_logger("protobuf");
    state.limiter = std::make_unique<log_rate_limiter>(protobuf_log_lines_per_second,
                                                       protobuf_log_lines_per_second);
  }
  google::protobuf::SetLogHandler(&protobuf_log_handler);
  return status::ok();
}

}  // namespace troupe::cluster
