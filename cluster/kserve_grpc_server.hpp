#pragma once
/// The KServe v2 / Open Inference Protocol door over gRPC: inference.GRPCInferenceService
/// (proto/kserve/grpc_service.proto) on gRPC's callback API. Requests go through the node's
/// request_gateway, the same jobs and router as every other door; a ModelInfer call finishes from
/// the gateway's reply callback, so no thread waits per call.
///
/// Serves ServerLive/Ready, ModelReady, ServerMetadata, ModelMetadata, ModelConfig, ModelInfer,
/// ModelStreamInfer and the SystemSharedMemory RPCs; CudaSharedMemory*, ModelStatistics and the
/// repository RPCs answer UNIMPLEMENTED with a message saying so.
///
/// Ownership: the server holds references to the gateway, the table holder and the shared-memory
/// registry; all three must outlive it. Shut it down after the gateway has stopped (every call then
/// has its reply), then destroy it before the gateway.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/model_control.hpp"
#include "core/status.hpp"
#include "serving/readiness.hpp"

namespace troupe::cluster {

class request_gateway;
class shared_memory_registry;

struct grpc_server_options {
  std::string address = "0.0.0.0";
  int port = 8001;  // 0: a port the system picks (tests); the node's flag uses 0 for "off"
  /// Largest request or response message (gRPC's own default, 4 MiB, is too small for image
  /// batches): the node's max_message_bytes.
  /// Also sets what gRPC may hold in memory for all its connections: grpc_memory_quota_bytes.
  uint64_t max_message_bytes = 256ull << 20;
  serving::readiness_policy readiness = serving::readiness_policy::strict;
  /// The repository extension (RepositoryIndex, RepositoryModelLoad/Unload): null, UNIMPLEMENTED.
  /// Outlives the server.
  const actors::model_control* control = nullptr;
};

/// The gRPC resource quota of the door: what gRPC may hold for all its connections (read buffers,
/// calls, the request messages it is receiving or that are running). gRPC 1.51 checks the message
/// size limit only once a whole message has arrived: without a quota one client could make the
/// node buffer a message of any size. Past the quota gRPC resets streams (ENHANCE_YOUR_CALM; the
/// client sees RESOURCE_EXHAUSTED). Four messages of the largest size, at least 64 MiB (gRPC's own
/// buffers and hundreds of small calls need some).
uint64_t grpc_memory_quota_bytes(uint64_t max_message_bytes);

class kserve_grpc_server {
 public:
  /// Binds and starts serving. `shm` null: the system shared-memory extension is off (its RPCs and
  /// tensor parameters are refused). io_error when the address cannot be bound.
  static expected<std::unique_ptr<kserve_grpc_server>> create(grpc_server_options o,
                                                              request_gateway& gateway,
                                                              shared_memory_registry* shm);
  ~kserve_grpc_server();
  kserve_grpc_server(const kserve_grpc_server&) = delete;
  kserve_grpc_server& operator=(const kserve_grpc_server&) = delete;

  /// The bound port.
  int port() const;
  /// Stops taking calls and waits for the calls in progress up to `deadline`, then cancels the
  /// rest (streams a client keeps open, for one). Idempotent; also run by the destructor.
  void shutdown(std::chrono::milliseconds deadline);

  class impl;

 private:
  explicit kserve_grpc_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
