#pragma once
/// Structured log lines: a message plus fields (model, version, code, duration_ms, ...) that the
/// node's JSON formatter (cluster/logging.cpp) writes as keys of the line's object, so that a log
/// collector filters on `model` or sums `duration_ms` without parsing message text.
///
///   log_event(log_level::info, "model loaded",
///             {{"model", name}, {"version", v}, {"code", "ok"}, {"duration_ms", ms}});
///
/// The fields reach the formatter through a thread-local span set for the duration of the call:
/// this holds because the node's loggers are synchronous (spdlog formats on the calling thread).
/// Field values are views: they must outlive the call, which they do for arguments.

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace troupe::serving {

enum class log_level { debug, info, warn, error };

/// One field of a log line: a key (keep it clear of time, level, logger, msg) and a string,
/// integer or floating-point value.
struct log_field {
  log_field(std::string_view k, std::string_view v) : key(k), value(v) {}
  log_field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  log_field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  template <std::integral T>
  log_field(std::string_view k, T v) : key(k), value(static_cast<int64_t>(v)) {}
  log_field(std::string_view k, double v) : key(k), value(v) {}

  std::string_view key;
  std::variant<std::string_view, int64_t, double> value;
};

/// Logs `message` at `level` on spdlog's default logger with `fields`.
void log_event(log_level level, std::string_view message, std::initializer_list<log_field> fields);

/// The fields of the log line being written on this thread; empty outside log_event and
/// scoped_log_fields.
std::span<const log_field> current_log_fields();

/// Makes `fields` the current ones for its lifetime (for loggers other than the default one).
class scoped_log_fields {
 public:
  explicit scoped_log_fields(std::span<const log_field> fields);
  ~scoped_log_fields();
  scoped_log_fields(const scoped_log_fields&) = delete;
  scoped_log_fields& operator=(const scoped_log_fields&) = delete;

 private:
  std::span<const log_field> previous_;
};

/// Set by the formatter that writes current_log_fields() itself (cluster's JSON logging). Until
/// then, log_event appends the fields to the message as ` key=value`, so that they are not lost
/// with spdlog's plain default pattern (tests, tools).
void set_log_fields_formatted(bool formatted);

}  // namespace troupe::serving
