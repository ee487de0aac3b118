#pragma once
/// troupe's status as the gRPC door answers it: kserve::grpc_status's code and
/// kserve::error_message's text. Shared by the unary calls and the stream reactor.

#include <grpcpp/support/status.h>

#include "cluster/kserve_types.hpp"
#include "core/status.hpp"

namespace troupe::cluster::kserve {

inline grpc::Status to_grpc(const status& s) {
  if (s.is_ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(grpc_status(s.code())), error_message(s));
}

/// The answer when the gateway holds max_inflight requests (acquire returned null).
inline status gateway_overloaded() {
  return make_error(error_code::overloaded,
                    "the node holds its max_inflight KServe requests; retry later");
}

}  // namespace troupe::cluster::kserve
