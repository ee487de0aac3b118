#pragma once
/// Turns a request as a front door decoded it (ZeroMQ envelope, KServe JSON or protobuf) into a job
/// for the router: the model looked up in the current table, the inputs put in the signature's
/// order and validated, the requested outputs resolved. One place, so that every door refuses the
/// same requests with the same typed errors. CAF-free and socket-free.

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "serving/job.hpp"

namespace troupe::serving {

class model_table;

/// One input tensor as the door received it. The views point into memory the door keeps alive
/// until the job is handed back.
struct request_tensor {
  std::string_view name;
  dtype type = dtype::undefined;
  std::span<const int64_t> shape;
  const std::byte* data = nullptr;  // may be null when `bytes` is 0
  size_t bytes = 0;
};

struct request_fields {
  std::string_view model;
  int64_t version = 0;  // 0: the traffic policy chooses
  std::span<const request_tensor> inputs;
  std::span<const std::string_view> outputs;  // requested output names; empty: all, in order
  uint32_t priority = 0;                      // 0: the model's default level
  std::chrono::microseconds timeout{0};       // 0: the model's default
  std::string_view routing_key;
  std::span<const std::pair<std::string_view, std::string_view>> parameters;
};

/// Fills `job` from `f` against `table` (null while the node has not loaded its models:
/// UNAVAILABLE). Sets model, version, inputs (signature order), rows, requested_outputs, priority,
/// timeout, routing_key, parameters, signature and metrics; leaves arrival, reply_to and sequence
/// to the door. Errors: NOT_FOUND (model, version), UNAVAILABLE (no loaded version, failed
/// version), INVALID_ARGUMENT (tensor count, names, dtypes, shapes, byte counts, outputs,
/// priority). On error `job.metrics` is set when the version was found, so the door can count the
/// refusal against it.
status bind_request(const model_table* table, const request_fields& f, infer_job& job);

}  // namespace troupe::serving
