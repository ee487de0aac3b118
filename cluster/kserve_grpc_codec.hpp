#pragma once
/// KServe v2 over gRPC: the translation between the protocol's messages (proto/kserve, package
/// `inference`) and troupe's request, reply, metadata and configuration types. Pure functions: no
/// sockets and no gRPC (only the generated protobuf messages); the server
/// (cluster/kserve_grpc_server) calls them, tests/cluster/test_kserve_grpc_codec.cpp tests them.

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cluster/shared_memory_registry.hpp"
#include "core/status.hpp"
#include "serving/job.hpp"
#include "serving/request_binding.hpp"

namespace inference {
class ModelInferRequest;
class ModelInferResponse;
class ModelMetadataResponse;
class ModelConfigResponse;
class ModelStatisticsResponse;
class ServerMetadataResponse;
class SystemSharedMemoryStatusResponse;
}  // namespace inference

namespace troupe::serving {
class model_table;
}

namespace troupe::cluster::kserve {

/// The per-tensor parameters of the system shared-memory extension.
inline constexpr std::string_view shm_region_parameter = "shared_memory_region";
inline constexpr std::string_view shm_offset_parameter = "shared_memory_offset";
inline constexpr std::string_view shm_byte_size_parameter = "shared_memory_byte_size";

/// One output the request asked for, and where its bytes go.
struct requested_output {
  std::string_view name;
  /// Set when the output goes to a shared-memory range (held alive here); else the bytes go into
  /// the response's raw_output_contents.
  shared_memory_span shm;
};

/// A decoded ModelInferRequest. `fields` views the message (names, shapes, raw_input_contents,
/// string parameters, all without a copy), the registered shared-memory regions (inputs read in
/// place) and the buffers owned here (typed contents whose element size differs from the
/// datatype's, parameters converted to text). Keep the message and this object alive, unmoved,
/// until the request's reply has been built: the views point into both.
struct decoded_infer_request {
  serving::request_fields fields;
  std::string_view id;
  /// As the request lists them; empty when it names none (every output, in the response).
  std::vector<requested_output> outputs;

  // ---- what `fields` views; capacity kept across clear() ----
  std::vector<serving::request_tensor> tensors;
  std::vector<std::string_view> output_names;
  std::vector<std::pair<std::string_view, std::string_view>> parameters;
  std::deque<std::string> owned_text;  // a deque: elements never move
  std::vector<std::unique_ptr<std::byte[]>> owned_bytes;
  std::vector<shared_memory_span> input_regions;  // keeps the inputs' mappings alive

  void clear();
};

/// Decodes `m` into `out` (cleared first). Each input's bytes come from exactly one place: its
/// shared-memory parameters, its typed `contents`, or the next entry of raw_input_contents (those
/// entries belong, in order, to the inputs with neither; typed contents and raw_input_contents do
/// not mix). Request parameters: `priority` and `timeout` (microseconds; integers) as Triton reads
/// them, `routing_key` (a string) for the traffic policy, every other one reaches the job as text
/// (bools as "true"/"false", numbers in decimal). `shm` null: the shared-memory extension is off.
/// Errors: invalid_argument (datatype, shape, byte counts, parameters, contents), unsupported
/// (BYTES tensors, the classification extension), not_found (an unregistered region).
status decode_infer_request(const inference::ModelInferRequest& m,
                            const shared_memory_registry* shm, decoded_infer_request& out);

/// Fills `out` for a request the actors answered with OK: model name and version, id, one output
/// tensor per job output. Outputs bound for shared memory are copied there and listed after the
/// others (so raw_output_contents[i] stays the i-th listed output, as tritonclient reads it), with
/// their region parameters echoed. invalid_argument when an output does not fit its range.
status encode_infer_response(const serving::infer_job& job, const decoded_infer_request& d,
                             inference::ModelInferResponse& out);

/// ModelMetadata of `name` at `version` ("" : the version requests would get, else the newest).
/// not_found for an unknown model or version; invalid_argument for a malformed version;
/// unavailable for a version that failed to load (it has no signature).
status encode_model_metadata(const serving::model_table* table, std::string_view name,
                             std::string_view version, inference::ModelMetadataResponse& out);

/// Triton's ModelConfig subset for the same version: name, platform, backend, max_batch_size,
/// inputs and outputs (TYPE_* and dims without the batch dim), dynamic batching, the instance group
/// and the version policy, from the configuration the version was loaded with.
status encode_model_config(const serving::model_table* table, std::string_view name,
                           std::string_view version, inference::ModelConfigResponse& out);

/// Whether `name` at `version` is ready; false for an unknown model or version, invalid_argument
/// for a malformed version.
expected<bool> model_is_ready(const serving::model_table* table, std::string_view name,
                              std::string_view version);

/// Triton's statistics extension from the versions' exact sums (serving::version_statistics,
/// cumulative since the node started): every version of every model when `name` is empty, every
/// version of `name` when `version` is empty. not_found for an unknown model or version.
status encode_model_statistics(const serving::model_table* table, std::string_view name,
                               std::string_view version, inference::ModelStatisticsResponse& out);

/// The server's name, version and the protocol extensions this door serves.
void encode_server_metadata(bool shared_memory, inference::ServerMetadataResponse& out);

/// The regions as SystemSharedMemoryStatus lists them.
void encode_shared_memory_status(
    const std::vector<std::shared_ptr<const shared_memory_region>>& regions,
    inference::SystemSharedMemoryStatusResponse& out);

/// The platform string ModelMetadata and ModelConfig report: troupe's own runtime, ONNX models.
inline constexpr std::string_view platform_name = "troupe_onnx";

}  // namespace troupe::cluster::kserve
