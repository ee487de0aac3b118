#include "serving/log_fields.hpp"

#include <spdlog/spdlog.h>

#include <atomic>

namespace troupe::serving {
namespace {

thread_local std::span<const log_field> current_fields;
std::atomic<bool> fields_formatted{false};

spdlog::level::level_enum to_spdlog(log_level level) {
  switch (level) {
    case log_level::debug:
      return spdlog::level::debug;
    case log_level::info:
      return spdlog::level::info;
    case log_level::warn:
      return spdlog::level::warn;
    case log_level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::string with_fields_appended(std::string_view message, std::span<const log_field> fields) {
  std::string text(message);
  for (const log_field& f : fields) {
    text += ' ';
    text += f.key;
    text += '=';
    std::visit([&](const auto& v) { text += fmt::format("{}", v); }, f.value);
  }
  return text;
}

}  // namespace

std::span<const log_field> current_log_fields() {
  return current_fields;
}

scoped_log_fields::scoped_log_fields(std::span<const log_field> fields)
    : previous_(current_fields) {
  current_fields = fields;
}

scoped_log_fields::~scoped_log_fields() {
  current_fields = previous_;
}

void set_log_fields_formatted(bool formatted) {
  fields_formatted.store(formatted, std::memory_order_release);
}

void log_event(log_level level, std::string_view message, std::initializer_list<log_field> fields) {
  spdlog::logger* logger = spdlog::default_logger_raw();
  const auto lvl = to_spdlog(level);
  if (!logger->should_log(lvl)) return;
  const std::span<const log_field> span(fields.begin(), fields.size());
  if (!fields_formatted.load(std::memory_order_acquire)) {
    logger->log(lvl, "{}", with_fields_appended(message, span));
    return;
  }
  scoped_log_fields scope(span);
  logger->log(lvl, "{}", message);
}

}  // namespace troupe::serving
