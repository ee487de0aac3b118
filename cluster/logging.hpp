#pragma once
/// JSON logs: one object per line on stderr, through spdlog, so that log collectors parse them
/// without a grok pattern:
///   {"time":"...","level":"info","logger":"troupe","msg":"model loaded","model":"mlp",
///    "version":1,"code":"ok","duration_ms":812.4}
/// The message is JSON-escaped; structured fields come from serving::log_event
/// (serving/log_fields.hpp). protobuf's own log output goes through the same formatter (logger
/// "protobuf", with source_file and source_line), rate-limited, so that no client can fill the log
/// with plain text by sending malformed messages.

#include <memory>
#include <string>

#include "core/status.hpp"

namespace spdlog::sinks {
class sink;
}  // namespace spdlog::sinks

namespace troupe::cluster {

/// protobuf log lines admitted per second (and in one burst); the rest are counted and the count
/// is written with the next admitted line ("suppressed").
inline constexpr double protobuf_log_lines_per_second = 10;
/// protobuf messages longer than this are cut (they may quote client bytes).
inline constexpr size_t protobuf_log_max_bytes = 1024;

/// Installs the JSON formatter on spdlog's default logger and on protobuf's log handler, writing
/// to `sink` (stderr when null), and sets the level (trace, debug, info, warn, error, critical,
/// off).
status setup_json_logging(const std::string& level,
                          std::shared_ptr<spdlog::sinks::sink> sink = nullptr);

}  // namespace troupe::cluster
