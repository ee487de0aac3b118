#pragma once
/// The KServe v2 / Open Inference Protocol door over HTTP/REST: routes the v2 endpoints (health,
/// server and model metadata, Triton's model configuration, inference with JSON or binary tensor
/// data, the system shared-memory extension) onto the request gateway, the node's one serving
/// path. The HTTP itself is http_server's; the bodies are kserve_json_codec's and
/// kserve_metadata's; this file only decides what each request means.
///
///   GET  /v2/health/live | /v2/health/ready
///   GET  /v2
///   GET  /v2/models/{m}[/versions/{v}]            metadata
///   GET  /v2/models/{m}[/versions/{v}]/ready
///   GET  /v2/models/{m}[/versions/{v}]/config     Triton's model configuration
///   POST /v2/models/{m}[/versions/{v}]/infer
///   GET  /v2/models[/{m}[/versions/{v}]]/stats     Triton's statistics (from the metrics)
///   POST /v2/systemsharedmemory/region/{r}/register      {"key","offset","byte_size"}
///   POST /v2/systemsharedmemory[/region/{r}]/unregister
///   GET  /v2/systemsharedmemory[/region/{r}]/status
///   /v2/cudasharedmemory/...                      400: not supported
///
/// Inference: the body is decompressed (Content-Encoding gzip/deflate) and decoded on the
/// connection's I/O thread; binary inputs stay where they were received and shared-memory inputs
/// are read in place (the job's input views point into the body or the mapping, which the
/// request's input_owner keeps alive). The reply comes back on an actor thread: a reply of binary
/// outputs is answered from there at once (its bytes leave from the workers' output blocks,
/// without a copy); JSON data, shared-memory outputs and compressed replies are built on an I/O
/// thread instead, so that an actor thread never encodes a large reply.

#include <chrono>
#include <memory>
#include <string>

#include "actors/model_control.hpp"
#include "cluster/http_server.hpp"
#include "core/status.hpp"
#include "serving/readiness.hpp"

namespace troupe::cluster {

class request_gateway;
class shared_memory_registry;

struct kserve_http_options {
  /// Address, port (8000 by default in node.yaml), I/O threads and limits; max_body_bytes is the
  /// node's max_message_bytes (it also bounds a decompressed body).
  http_server_options server;
  std::string server_version;  // GET /v2's "version"
  /// Readiness rule of GET /v2/health/ready.
  serving::readiness_policy readiness = serving::readiness_policy::strict;
  /// The repository extension (/v2/repository/...): null, it answers unsupported. Outlives the
  /// door.
  const actors::model_control* control = nullptr;
};

class kserve_http {
 public:
  /// Binds and starts serving. `gateway` and `shm` (null: the shared-memory extension is off) must
  /// outlive the door. io_error when the port cannot be bound.
  static expected<std::unique_ptr<kserve_http>> create(kserve_http_options o,
                                                       request_gateway& gateway,
                                                       shared_memory_registry* shm);
  ~kserve_http();

  int port() const;
  /// http_server::stop: stop accepting, write the responses of requests already answered, close.
  /// Stop the gateway first: it answers what the actors still hold.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

  class router;

 private:
  kserve_http(std::shared_ptr<router> r, std::unique_ptr<http_server> s);
  std::shared_ptr<router> router_;
  std::unique_ptr<http_server> server_;
};

}  // namespace troupe::cluster
