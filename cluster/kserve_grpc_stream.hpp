#pragma once
/// ModelStreamInfer: a bidirectional stream of ModelInferRequests, each answered with one
/// ModelStreamInferResponse in order of completion (an error in error_message, the stream goes
/// on). Every request goes through the request_gateway like a unary ModelInfer.
///
/// Lifetime: gRPC owns the reactor from ModelStreamInfer until OnDone, which deletes it. The
/// reactor finishes the call only when the client has stopped sending (or the call was
/// cancelled), every submitted request has had its reply from the gateway and the last write is
/// done, so no gateway callback can reach a deleted reactor. A cancelled or broken stream still
/// waits for its requests' replies (they are dropped); the gateway answers every request
/// eventually, at the latest with CANCELLED when it stops.

#include <grpcpp/support/server_callback.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "proto/kserve/grpc_service.grpc.pb.h"

namespace troupe::cluster {

class request_gateway;
class shared_memory_registry;
struct gateway_request;

class kserve_grpc_stream final
    : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                     inference::ModelStreamInferResponse> {
 public:
  kserve_grpc_stream(request_gateway& gateway, const shared_memory_registry* shm);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  struct pending;  // one request read from the stream, until its reply is queued

 private:
  ~kserve_grpc_stream() override;
  /// Queues a reply (null when there is nothing to write: the stream is broken) and starts the
  /// write or finishes the call as the state allows. Called once per submitted request.
  void on_reply(std::unique_ptr<inference::ModelStreamInferResponse> reply);
  /// Under mutex_: whether the call may finish now (and marks it finished).
  bool take_finish_locked();

  request_gateway& gateway_;
  const shared_memory_registry* shm_;
  std::unique_ptr<pending> next_;  // the read in progress writes here

  std::mutex mutex_;                                                         // guards what follows
  std::deque<std::unique_ptr<inference::ModelStreamInferResponse>> writes_;  // front: in flight
  bool writing_ = false;
  bool reads_done_ = false;
  bool broken_ = false;  // a write failed or the call was cancelled: replies are dropped
  bool finished_ = false;
  uint64_t outstanding_ = 0;  // submitted, reply not yet queued
};

}  // namespace troupe::cluster
