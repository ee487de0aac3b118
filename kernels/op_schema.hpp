#pragma once
/// Backend-independent op definitions: output types and shapes from input types and shapes (and
/// from input values where they are known, e.g. Reshape's shape). Shapes here are concrete:
/// troupe specialises a plan for each set of input shapes, so Shape→Gather→Concat→Reshape chains
/// fold to constants before a kernel is chosen. Backends register kernels separately (kernel.hpp).

#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/op_node.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::kernels {

struct infer_context {
  const op_node& node;
  std::span<const tensor_info> inputs;          // absent optional inputs have dtype::undefined
  std::span<const tensor* const> input_values;  // known values (constants), else nullptr
  size_t num_outputs = 1;                       // outputs the node declares

  bool has_input(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  /// The input's value when known at plan time, else nullptr.
  const tensor* value(size_t i) const {
    return i < input_values.size() ? input_values[i] : nullptr;
  }
  /// An error prefixed with the node's description: "op 'Conv' (node 'c1'): <what>".
  status fail(error_code code, const std::string& what) const {
    return status(code, node.describe() + ": " + what);
  }
  status bad(const std::string& what) const { return fail(error_code::invalid_model, what); }
  /// A value-dependent input (Reshape's shape...) that is not a plan-time constant.
  status needs_constant(size_t i) const;
};

using infer_fn = expected<std::vector<tensor_info>> (*)(const infer_context&);

struct op_schema {
  std::string domain;  // "" = ai.onnx
  std::string op_type;
  int64_t min_opset = 1;   // opsets whose semantics this schema implements
  int64_t max_opset = 18;
  infer_fn infer = nullptr;
  /// False for ops that must not run at plan time even with constant inputs.
  bool foldable = true;
  /// Inputs whose *values* (not only shapes) the shape function reads; the planner keeps them on
  /// the host and requires them to be constant.
  std::vector<int> value_inputs;
};

class schema_registry {
 public:
  /// The process-wide registry, filled with every standard schema on first use.
  static const schema_registry& standard();

  void add(op_schema schema);
  const op_schema* find(std::string_view domain, std::string_view op_type) const;
  std::vector<const op_schema*> all() const;

 private:
  std::unordered_map<std::string, op_schema> by_key_;  // key: domain + ':' + op_type
};

/// One registration function per family of ops (kernels/ops/*.cpp); registry.cpp calls them all.
void register_elementwise_schemas(schema_registry& r);
void register_nn_schemas(schema_registry& r);
void register_tensor_schemas(schema_registry& r);
void register_reduction_schemas(schema_registry& r);
void register_fused_schemas(schema_registry& r);
void register_attention_schemas(schema_registry& r);  // ops/attention_schemas.cpp

/// Helpers shared by schemas and kernels.
expected<shape_t> broadcast_shapes(const shape_t& a, const shape_t& b);
expected<shape_t> broadcast_all(std::span<const tensor_info> inputs);
/// Maps a possibly negative axis into [0, rank); error when out of range.
expected<int64_t> normalize_axis(int64_t axis, int64_t rank);

}  // namespace troupe::kernels
