#pragma once
/// The KServe v2 HTTP/REST inference body, both ways, as pure functions (no sockets, no actors):
/// a request body (JSON, optionally followed by the binary tensor data extension's bytes) decodes
/// into a `decoded_infer_request`; a reply's outputs encode into JSON (`"data"` arrays) or into a
/// JSON header followed by the outputs' raw bytes. Every malformed body is an invalid_argument
/// (HTTP 400) naming what is wrong, never an exception.
///
/// Request (https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and
/// Triton's binary_tensor_data / system shared-memory extensions):
///   {"id": "...", "parameters": {...},
///    "inputs": [{"name", "datatype", "shape", "data": [...]  (flat or nested)
///                | "parameters": {"binary_data_size": N}
///                | "parameters": {"shared_memory_region", "shared_memory_byte_size",
///                                 "shared_memory_offset"}}],
///    "outputs": [{"name", "parameters": {"binary_data": bool | shared_memory_*}}]}
/// `header_length` (the Inference-Header-Content-Length header) splits the body: the JSON is its
/// first `header_length` bytes, the binary inputs follow in input order.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "core/status.hpp"

namespace troupe::cluster::kserve {

/// A range of a registered system shared-memory region (the request names it; the door resolves
/// it against the registry).
struct shared_memory_ref {
  std::string region;
  uint64_t offset = 0;
  uint64_t byte_size = 0;
};

struct decoded_input {
  std::string name;
  dtype type = dtype::undefined;
  std::vector<int64_t> shape;
  /// The tensor's bytes: a view into the request body (binary data), into `owned` (JSON data,
  /// converted to the datatype's little-endian layout), or null until the door resolves
  /// `shared_memory`.
  const std::byte* data = nullptr;
  size_t bytes = 0;
  std::vector<std::byte> owned;
  std::optional<shared_memory_ref> shared_memory;
};

struct requested_output {
  std::string name;
  std::optional<bool> binary;  // the output's own binary_data parameter, when given
  std::optional<shared_memory_ref> shared_memory;
};

struct decoded_infer_request {
  std::string id;
  std::vector<decoded_input> inputs;
  std::vector<requested_output> outputs;  // empty: every output of the model
  bool binary_data_output = false;        // the request parameter: the default for outputs
  uint32_t priority = 0;
  uint64_t timeout_us = 0;  // Triton's "timeout" parameter (microseconds); 0: the model's default
  /// Every other request parameter as text (strings as they are, numbers in decimal, booleans as
  /// "true"/"false"): traffic rules and the fault-injection parameters read them.
  std::vector<std::pair<std::string, std::string>> parameters;

  /// Whether output `name` goes back as binary data (its own parameter, else the request's).
  bool output_binary(std::string_view name) const;
  const requested_output* find_output(std::string_view name) const;
};

/// Limits that apply while decoding.
struct decode_limits {
  size_t max_nesting = 64;  // JSON nesting depth (a nested "data" array of rank 60 still fits)
  size_t max_rank = 32;
};

/// Decodes `body`. `header_length` is the Inference-Header-Content-Length value (nullopt: the
/// whole body is JSON). Inputs with binary data point into `body`, which must outlive the result.
expected<decoded_infer_request> decode_infer_request(std::string_view body,
                                                     std::optional<size_t> header_length,
                                                     const decode_limits& limits = {});

/// Parses the Inference-Header-Content-Length header's value.
expected<size_t> parse_header_length(std::string_view text, size_t body_bytes);

/// One output of a reply, as the door hands it to the encoder.
struct reply_tensor {
  std::string_view name;
  dtype type = dtype::undefined;
  std::span<const int64_t> shape;
  const std::byte* data = nullptr;  // `bytes` bytes, little-endian elements (unaligned is fine)
  size_t bytes = 0;
  bool binary = false;  // send the bytes after the JSON header instead of a "data" array
  /// Written into shared memory by the door: the JSON carries the region, no data.
  const shared_memory_ref* shared_memory = nullptr;
};

struct encoded_reply {
  std::string json;
  /// The outputs whose bytes follow the JSON, in order (indices into the encoder's `outputs`).
  std::vector<size_t> binary_outputs;
  /// Inference-Header-Content-Length: set when any output is binary.
  bool has_binary() const { return !binary_outputs.empty(); }
};

/// {"model_name", "model_version", "id" (when not empty), "outputs": [...]}.
encoded_reply encode_infer_reply(std::string_view model, int64_t version, std::string_view id,
                                 std::span<const reply_tensor> outputs);

/// {"error": "<message>"}: the protocol's error body.
std::string error_body(std::string_view message);

/// `text` as a JSON string literal (quotes included, control characters escaped, invalid UTF-8
/// replaced so that the document stays valid).
void append_json_string(std::string& out, std::string_view text);

}  // namespace troupe::cluster::kserve
