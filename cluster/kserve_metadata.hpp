#pragma once
/// The KServe v2 HTTP door's JSON documents other than inference: server metadata, model
/// metadata, Triton's model configuration (what perf_analyzer reads), readiness, and the system
/// shared-memory status. Pure functions of the routing table and the registry's regions, so they
/// are tested without sockets.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"

namespace troupe::serving {
class model_table;
struct model_entry;
struct version_entry;
struct node_readiness;
}  // namespace troupe::serving

namespace troupe::cluster {
class shared_memory_region;
}

namespace troupe::cluster::kserve {

/// The protocol extensions the HTTP door serves (GET /v2 lists them). Only what is served:
/// binary_tensor_data, model_configuration, parameters, statistics, and system_shared_memory when
/// on.
std::vector<std::string_view> http_extensions(bool shared_memory);

/// GET /v2: {"name": "troupe", "version": ..., "extensions": [...]}.
std::string server_metadata_json(std::string_view version,
                                 std::span<const std::string_view> extensions);

/// The version a metadata, config or ready request names (0: the default version). not_found for
/// an unknown model or version, unavailable when the model has no version that loaded.
expected<const serving::version_entry*> find_version(const serving::model_table* table,
                                                     std::string_view model, int64_t version);

/// GET /v2/models/{m}[/versions/{v}]: {"name", "versions", "platform", "inputs", "outputs"}, the
/// shapes as the model declares them (-1: dynamic; with batching the first dim is the batch, -1).
std::string model_metadata_json(const serving::model_entry& m, const serving::version_entry& v);

/// GET /v2/models/{m}[/versions/{v}]/config: Triton's model configuration as JSON: name,
/// platform, max_batch_size, input/output with data_type "TYPE_FP32" and dims without the batch
/// dim, dynamic_batching, instance_group, version_policy.
std::string model_config_json(const serving::model_entry& m, const serving::version_entry& v);

/// GET /v2/models[/{m}[/versions/{v}]]/stats: Triton's statistics extension, read from the
/// versions' exact sums (serving::version_statistics; cumulative since the node started,
/// perf_analyzer takes differences): {"model_stats": [{"name", "version", "last_inference" (ms
/// since the epoch), "inference_count" (rows), "execution_count" (batches), "inference_stats":
/// {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
/// "cache_miss": {"count", "ns"}}, "batch_stats": []}]}. compute_input/output are inside
/// compute_infer (0 ns); no cache.
/// `model` empty: every model; `version` 0: every version of it. not_found for an unknown one.
expected<std::string> model_statistics_json(const serving::model_table& table,
                                            std::string_view model, int64_t version);

/// "TYPE_FP32" for FP32 and so on (Triton's DataType enum names).
std::string_view config_type_name(std::string_view datatype);

/// GET /v2/health/ready's body: {"live": true, "ready": bool, "reason": "..." (when not ready)}.
std::string readiness_json(const serving::node_readiness& r);

/// GET /v2/systemsharedmemory[/region/{name}]/status: [{"name","key","offset","byte_size"}...].
std::string shared_memory_status_json(
    std::span<const std::shared_ptr<const shared_memory_region>> regions);

}  // namespace troupe::cluster::kserve
