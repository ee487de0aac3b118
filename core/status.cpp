#include "core/status.hpp"

namespace troupe {

std::string_view to_string(error_code code) {
  switch (code) {
    case error_code::ok: return "ok";
    case error_code::invalid_argument: return "invalid_argument";
    case error_code::not_found: return "not_found";
    case error_code::unsupported: return "unsupported";
    case error_code::invalid_model: return "invalid_model";
    case error_code::io_error: return "io_error";
    case error_code::out_of_memory: return "out_of_memory";
    case error_code::internal: return "internal";
    case error_code::unavailable: return "unavailable";
    case error_code::deadline_exceeded: return "deadline_exceeded";
    case error_code::overloaded: return "overloaded";
    case error_code::cancelled: return "cancelled";
    case error_code::device_error: return "device_error";
  }
  return "unknown";
}

status::status(error_code code, std::string message) {
  if (code != error_code::ok) state_ = std::make_shared<const state>(state{code, std::move(message)});
}

const std::string& status::message() const {
  static const std::string empty;
  return state_ ? state_->message : empty;
}

std::string status::to_string() const {
  if (is_ok()) return "ok";
  std::string out(troupe::to_string(state_->code));
  out += ": ";
  out += state_->message;
  return out;
}

status status::with_context(std::string_view context) const {
  if (is_ok()) return *this;
  std::string m(context);
  m += ": ";
  m += state_->message;
  return status(state_->code, std::move(m));
}

}  // namespace troupe
