#pragma once
/// What a kernel or a shape function sees of a graph node: its op, its opset and its attributes.
/// Attribute accessors return typed errors for a missing required attribute or a wrong kind.

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe {

struct attribute {
  using value_type = std::variant<int64_t, float, std::string, std::vector<int64_t>,
                                  std::vector<float>, std::vector<std::string>, tensor>;
  value_type value;
};

class attribute_map {
 public:
  void set(const std::string& name, attribute::value_type v) { attrs_[name] = attribute{std::move(v)}; }
  bool has(const std::string& name) const { return attrs_.count(name) != 0; }
  void erase(const std::string& name) { attrs_.erase(name); }
  const std::map<std::string, attribute>& all() const { return attrs_; }

  int64_t get_int(const std::string& name, int64_t fallback) const;
  float get_float(const std::string& name, float fallback) const;
  std::string get_string(const std::string& name, const std::string& fallback) const;
  std::vector<int64_t> get_ints(const std::string& name, std::vector<int64_t> fallback = {}) const;
  std::vector<float> get_floats(const std::string& name, std::vector<float> fallback = {}) const;

  /// Required forms: an error names the attribute when it is missing or of the wrong kind.
  expected<int64_t> require_int(const std::string& name) const;
  expected<float> require_float(const std::string& name) const;
  expected<std::vector<int64_t>> require_ints(const std::string& name) const;
  expected<tensor> require_tensor(const std::string& name) const;
  const tensor* find_tensor(const std::string& name) const;

 private:
  std::map<std::string, attribute> attrs_;
};

struct op_node {
  std::string op_type;  // "Conv", or a troupe fused op such as "troupe.FusedConv"
  std::string domain;   // "" for the default ONNX domain
  std::string name;     // the node's name in the model (or a generated one), for errors
  int64_t opset = 0;    // the model's opset for this node's domain
  attribute_map attrs;

  /// "op 'Conv' (node 'conv1')": the prefix every kernel/shape error uses.
  std::string describe() const;
};

}  // namespace troupe
