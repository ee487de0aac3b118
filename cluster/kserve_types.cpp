#include "cluster/kserve_types.hpp"

#include <array>
#include <charconv>
#include <utility>

namespace troupe::cluster::kserve {
namespace {

constexpr std::array<std::pair<std::string_view, dtype>, 13> kTypes{{
    {"BOOL", dtype::boolean},
    {"UINT8", dtype::u8},
    {"UINT16", dtype::u16},
    {"UINT32", dtype::u32},
    {"UINT64", dtype::u64},
    {"INT8", dtype::i8},
    {"INT16", dtype::i16},
    {"INT32", dtype::i32},
    {"INT64", dtype::i64},
    {"FP16", dtype::f16},
    {"FP32", dtype::f32},
    {"FP64", dtype::f64},
    {"BF16", dtype::bf16},
}};

}  // namespace

expected<dtype> dtype_from_name(std::string_view name) {
  for (const auto& [n, t] : kTypes)
    if (n == name) return t;
  if (name == "BYTES")
    return unsupported("datatype BYTES (strings) is not served: troupe serves numeric tensors");
  return invalid_argument(
      "unknown datatype '" + std::string(name) +
      "' (expected BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BF16)");
}

std::string_view dtype_to_name(dtype t) {
  for (const auto& [n, type] : kTypes)
    if (type == t) return n;
  return {};
}

expected<int64_t> parse_version(std::string_view text) {
  if (text.empty()) return int64_t{0};
  int64_t v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v <= 0)
    return invalid_argument("model version must be a positive number, got '" + std::string(text) +
                            "'");
  return v;
}

int http_status(error_code code) {
  switch (code) {
    case error_code::ok:
      return 200;
    case error_code::invalid_argument:
    case error_code::not_found:
    case error_code::unsupported:
      return 400;
    case error_code::overloaded:
      return 429;
    case error_code::unavailable:
    case error_code::cancelled:
      return 503;
    case error_code::deadline_exceeded:
      return 504;
    case error_code::invalid_model:
    case error_code::io_error:
    case error_code::out_of_memory:
    case error_code::internal:
    case error_code::device_error:
      return 500;
  }
  return 500;
}

grpc_code grpc_status(error_code code) {
  switch (code) {
    case error_code::ok:
      return grpc_code::ok;
    case error_code::invalid_argument:
    case error_code::not_found:  // as over HTTP: a request naming an unknown model is a bad request
      return grpc_code::invalid_argument;
    case error_code::unsupported:
      return grpc_code::unimplemented;
    case error_code::overloaded:
    case error_code::out_of_memory:
      return grpc_code::resource_exhausted;
    case error_code::unavailable:
      return grpc_code::unavailable;
    case error_code::cancelled:
      return grpc_code::cancelled;
    case error_code::deadline_exceeded:
      return grpc_code::deadline_exceeded;
    case error_code::invalid_model:
    case error_code::io_error:
    case error_code::internal:
    case error_code::device_error:
      return grpc_code::internal;
  }
  return grpc_code::internal;
}

std::string error_message(const status& s) {
  return s.to_string();
}

status status_from_grpc(int code, const std::string& message) {
  if (code == static_cast<int>(grpc_code::ok)) return status::ok();
  // troupe's "<code name>: <message>", when the name is one of troupe's codes.
  if (const size_t colon = message.find(": "); colon != std::string::npos) {
    const std::string_view name(message.data(), colon);
    for (int c = 1; c <= static_cast<int>(error_code::device_error); ++c) {
      const auto e = static_cast<error_code>(c);
      if (to_string(e) == name) return make_error(e, message.substr(colon + 2));
    }
  }
  switch (static_cast<grpc_code>(code)) {
    case grpc_code::invalid_argument:
      return make_error(error_code::invalid_argument, message);
    case grpc_code::not_found:
      return make_error(error_code::not_found, message);
    case grpc_code::unimplemented:
      return make_error(error_code::unsupported, message);
    case grpc_code::resource_exhausted:
      return make_error(error_code::overloaded, message);
    case grpc_code::unavailable:
      return make_error(error_code::unavailable, message);
    case grpc_code::cancelled:
      return make_error(error_code::cancelled, message);
    case grpc_code::deadline_exceeded:
      return make_error(error_code::deadline_exceeded, message);
    default:
      return make_error(error_code::internal,
                        "gRPC status " + std::to_string(code) + ": " + message);
  }
}

}  // namespace troupe::cluster::kserve
