#pragma once
/// The KServe v2 / Open Inference Protocol's vocabulary, shared by the HTTP and the gRPC door:
/// datatype names, version strings, and how troupe's error codes map onto HTTP and gRPC status
/// codes. Pure functions.

#include <cstdint>
#include <string>
#include <string_view>

#include "core/dtype.hpp"
#include "core/status.hpp"

namespace troupe::cluster::kserve {

/// "FP32" <-> dtype::f32 and so on. BYTES (strings) is a protocol type troupe does not serve:
/// unsupported with a message saying so; any other unknown name is invalid_argument.
expected<dtype> dtype_from_name(std::string_view name);
/// The protocol's name of `t` ("FP32"); "" for dtype::undefined.
std::string_view dtype_to_name(dtype t);

/// A model version as the protocol carries it (a string; "" = let the node choose): 0 for "", the
/// number for a positive decimal, invalid_argument otherwise.
expected<int64_t> parse_version(std::string_view text);

/// The HTTP status a reply with this code carries. Triton's choices where it has one: a request
/// naming an unknown model or version is a client error (400), as are bad tensors.
int http_status(error_code code);

/// gRPC status codes by number (grpc::StatusCode), so that this header needs no gRPC.
enum class grpc_code : int {
  ok = 0,
  cancelled = 1,
  invalid_argument = 3,
  deadline_exceeded = 4,
  not_found = 5,
  resource_exhausted = 8,
  unimplemented = 12,
  internal = 13,
  unavailable = 14,
};
grpc_code grpc_status(error_code code);

/// The other way, for clients: troupe's own servers send "<code name>: <message>"
/// (error_message) and get their code and message back; any other server's status maps by gRPC
/// code (INVALID_ARGUMENT -> invalid_argument, RESOURCE_EXHAUSTED -> overloaded, UNIMPLEMENTED ->
/// unsupported, UNKNOWN and the rest -> internal). `code` is grpc::StatusCode's number; OK -> ok.
status status_from_grpc(int code, const std::string& message);

/// The message of an error reply: "<code name>: <message>", e.g. "invalid_argument: input 'x'...".
std::string error_message(const status& s);

}  // namespace troupe::cluster::kserve
