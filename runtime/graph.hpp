#pragma once
/// troupe's graph IR. Values are edges (a graph input, an initializer, a node output); nodes refer
/// to values by index. Before specialisation a value's shape may hold symbolic dimensions; after
/// it (runtime/specialize.hpp) every shape is concrete and values computable at plan time carry
/// their constant.

#include <map>
#include <optional>
#include <string>
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
  std::vector<node> nodes;   // in topological order once loaded
  std::vector<int> inputs;   // runtime inputs (initializers excluded), in model order
  std::vector<int> outputs;  // in model order
  std::map<std::string, int64_t> opsets;  // domain ("" = ai.onnx) -> version
  std::string name;
  std::string producer;  // "pytorch 2.11", for inspect

  int add_value(value v);
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

 private:
  std::map<std::string, int> index_;
};

}  // namespace troupe::runtime
