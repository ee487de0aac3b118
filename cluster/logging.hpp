#pragma once
/// JSON logs: one object per line on stderr ({"time","level","logger","msg"}), through spdlog, so
/// that log collectors parse them without a grok pattern. The message text is JSON-escaped.

#include <string>

#include "core/status.hpp"

namespace troupe::cluster {

/// Installs the JSON formatter on spdlog's default logger (stderr) and sets the level
/// (trace, debug, info, warn, error, critical, off).
status setup_json_logging(const std::string& level);

}  // namespace troupe::cluster
