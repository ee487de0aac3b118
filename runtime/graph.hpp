#pragma once
/// troupe's graph IR. Values are edges (a graph input, an initializer, a node output); nodes refer
/// to values by index. Before specialisation a value's shape may hold symbolic dimensions; after
/// it (runtime/specialize.hpp) every shape is concrete and values computable at plan time carry
/// their constant.

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/op_node.hpp"
#include "core/tensor.hpp"

namespace troupe::runtime {

/// One dimension as the model declares it: a size, a symbol ("batch"), or unknown (-1, "").
struct dim {
  int64_t size = -1;
  std::string symbol;
  bool is_static() const { return size >= 0; }
  std::string to_string() const;
};
using symbolic_shape = std::vector<dim>;
std::string symbolic_shape_to_string(const symbolic_shape& s);

struct value {
  std::string name;
  dtype type = dtype::undefined;
  std::optional<symbolic_shape> declared_shape;  // from the model (inputs, outputs, value_info)
  shape_t shape;                                 // concrete; valid after specialisation
  std::optional<tensor> constant;                // initializer or folded value, on the host
  int producer = -1;                             // node index, -1 for inputs and initializers
  bool is_graph_input = false;
  bool is_graph_output = false;

  tensor_info info() const { return {type, shape}; }
};

struct node {
  op_node op;
  std::vector<int> inputs;   // value indices; -1 for an absent optional input
  std::vector<int> outputs;  // value indices; -1 for an unused optional output
};

class graph {
 public:
  std::vector<value> values;
  std::vector<node> nodes;                // in topological order once loaded
  std::vector<int> inputs;                // runtime inputs (initializers excluded), in model order
  std::vector<int> outputs;               // in model order
  std::map<std::string, int64_t> opsets;  // domain ("" = ai.onnx) -> version
  std::string name;
  std::string producer;  // "pytorch 2.11", for inspect

  int add_value(value v);
  /// Adds a constant value holding `t` (name as given: callers make it unique where needed).
  int add_constant(const std::string& name, tensor t);
  /// Index of the value with this name, or -1.
  int find(const std::string& name) const;
  int64_t opset(const std::string& domain) const;

  /// Recomputes producers and reorders nodes topologically; error on a cycle or on a node input
  /// that nothing defines.
  status sort_topologically();
  /// Drops nodes no graph output depends on and values nothing refers to. Keeps indices of
  /// graph inputs/outputs valid (values are renumbered; inputs/outputs updated).
  void remove_dead();
  /// Number of nodes using each value (graph outputs count as one use).
  std::vector<int> use_counts() const;
  /// Per value, the indices of the nodes reading it (a node reading it twice is listed twice).
  std::vector<std::vector<int>> readers() const;
  /// Drops the nodes marked in `removed` (one flag per node), keeping the others' order.
  void remove_nodes(const std::vector<char>& removed);

 private:
  std::map<std::string, int> index_;
};

/// Whether `n` is the ONNX (default-domain) op `op_type`.
inline bool is_onnx_op(const node& n, const char* op_type) {
  return n.op.domain.empty() && n.op.op_type == op_type;
}

/// The value of a one-element floating constant, or nullopt (not constant, not one element, not
/// floating, or v < 0).
std::optional<double> scalar_constant(const graph& g, int v);

/// Clip's bounds when they are known at plan time (attributes before opset 11, else one-element
/// constant inputs; an absent bound is -inf / +inf), or nullopt when a bound is computed.
std::optional<std::pair<float, float>> constant_clip_bounds(const graph& g, const node& n);

}  // namespace troupe::runtime
