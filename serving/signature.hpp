#pragma once
/// What a served model version accepts and returns, and the batching rules derived from its config:
/// everything the frontend needs to validate a request before it enters the actors, and what the
/// metadata request reports. Immutable once built; shared by the replicas, the batcher, the
/// router's table and the frontend.

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "serving/model_config.hpp"

namespace troupe::serving {

struct tensor_spec {
  std::string name;
  dtype type = dtype::undefined;
  std::vector<int64_t> shape;  // -1: dynamic. With batching, shape[0] is the batch dim (-1).
};

/// A request tensor as received: its info and its bytes (owned by the transport until the job is
/// released).
struct input_view {
  tensor_info info;
  const std::byte* data = nullptr;
  size_t bytes = 0;  // the frame's byte count, checked against info
};

struct model_signature {
  std::string model;
  int64_t version = 0;
  std::vector<tensor_spec> inputs;   // in the order workers bind them
  std::vector<tensor_spec> outputs;  // in the order replies list them
  int64_t max_batch_size = 0;        // resolved: never -1 here
  model_config config;               // the config the version was loaded with (resolved)

  int find_input(std::string_view name) const;
  int find_output(std::string_view name) const;

  /// Checks request tensors already ordered as `inputs`: dtypes, ranks, fixed dims, the batch dim
  /// (1..max_batch_size and equal across inputs) and byte counts. Returns the request's rows (its
  /// batch dim; 1 without batching) or invalid_argument naming the tensor and what is wrong.
  expected<int64_t> validate(std::span<const input_view> tensors) const;

  /// The level (1 = highest) a request priority maps to, or invalid_argument.
  expected<uint32_t> priority_level(uint32_t requested) const;
  /// The request's timeout after the queue policy: `requested` (0 = none) or the default.
  std::chrono::microseconds effective_timeout(std::chrono::microseconds requested) const;
  /// Whether requests of these input shapes (excluding the batch dim) may share a batch.
  static bool same_batch_shape(std::span<const input_view> a, std::span<const input_view> b,
                               bool batched);
};

}  // namespace troupe::serving
