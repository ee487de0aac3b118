#pragma once
/// A C++ client of the KServe v2 gRPC protocol (`inference.GRPCInferenceService`), shaped like
/// cluster::client (the ZeroMQ one) so that `troupe bench` and `troupe infer` drive either door
/// with the same loop: many requests in flight on one channel, replies matched by id in any order.
/// Speaks to any KServe v2 server (troupe's door, Triton); tensors travel as raw contents.
///
/// Not thread-safe: one thread owns a client (its completion queue belongs to it). Each client has
/// its own TCP connection (a local subchannel pool), so N clients are N connections.
/// Built only with gRPC (TROUPE_HAVE_GRPC).

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "cluster/client.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

class kserve_grpc_client {
 public:
  /// `target`: "host:port". Waits up to `timeout` for the connection: unavailable when the server
  /// cannot be reached. `max_message_bytes` bounds what the client sends and accepts.
  static expected<std::unique_ptr<kserve_grpc_client>> connect(
      const std::string& target, std::chrono::milliseconds timeout,
      uint64_t max_message_bytes = 256ull << 20);
  ~kserve_grpc_client();

  /// A request encoded once and sent many times: the id is set per send.
  class prepared;
  expected<std::shared_ptr<prepared>> prepare(const infer_request& r);
  /// Starts one ModelInfer call with this id (serialized now: `p` may change after).
  status send(prepared& p, const std::string& id);
  /// Waits up to `timeout` for one reply; nullopt when none arrived in time. A reply's `result`
  /// holds the server's error (troupe's code when the server is troupe, else mapped from the gRPC
  /// status code). Server-side timings are not part of the protocol: they stay 0.
  expected<std::optional<infer_reply>> receive(std::chrono::milliseconds timeout,
                                               bool decode_outputs = true);
  /// Calls in flight (sent, not yet received).
  size_t in_flight() const;

  /// Blocking helpers (use on an idle client).
  expected<infer_reply> infer(const infer_request& r, std::chrono::milliseconds timeout);
  expected<model_metadata> metadata(const std::string& model, int64_t version,
                                    std::chrono::milliseconds timeout);

  class impl;

 private:
  explicit kserve_grpc_client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
