#include "core/op_node.hpp"

namespace troupe {
namespace {

template <class T>
const T* find_as(const std::map<std::string, attribute>& attrs, const std::string& name) {
  auto it = attrs.find(name);
  if (it == attrs.end()) return nullptr;
  return std::get_if<T>(&it->second.value);
}

status missing_or_mistyped(const std::map<std::string, attribute>& attrs, const std::string& name,
                           const char* want) {
  if (attrs.count(name) == 0) return invalid_model("required attribute '" + name + "' is missing");
  return invalid_model("attribute '" + name + "' must be " + want);
}

}  // namespace

int64_t attribute_map::get_int(const std::string& name, int64_t fallback) const {
  const auto* v = find_as<int64_t>(attrs_, name);
  return v ? *v : fallback;
}

float attribute_map::get_float(const std::string& name, float fallback) const {
  if (const auto* v = find_as<float>(attrs_, name)) return *v;
  if (const auto* i = find_as<int64_t>(attrs_, name)) return static_cast<float>(*i);
  return fallback;
}

std::string attribute_map::get_string(const std::string& name, const std::string& fallback) const {
  const auto* v = find_as<std::string>(attrs_, name);
  return v ? *v : fallback;
}

std::vector<int64_t> attribute_map::get_ints(const std::string& name,
                                             std::vector<int64_t> fallback) const {
  const auto* v = find_as<std::vector<int64_t>>(attrs_, name);
  return v ? *v : fallback;
}

std::vector<float> attribute_map::get_floats(const std::string& name,
                                             std::vector<float> fallback) const {
  const auto* v = find_as<std::vector<float>>(attrs_, name);
  return v ? *v : fallback;
}

expected<int64_t> attribute_map::require_int(const std::string& name) const {
  if (const auto* v = find_as<int64_t>(attrs_, name)) return *v;
  return missing_or_mistyped(attrs_, name, "an int");
}

expected<float> attribute_map::require_float(const std::string& name) const {
  if (const auto* v = find_as<float>(attrs_, name)) return *v;
  return missing_or_mistyped(attrs_, name, "a float");
}

expected<std::vector<int64_t>> attribute_map::require_ints(const std::string& name) const {
  if (const auto* v = find_as<std::vector<int64_t>>(attrs_, name)) return *v;
  return missing_or_mistyped(attrs_, name, "a list of ints");
}

expected<tensor> attribute_map::require_tensor(const std::string& name) const {
  if (const auto* v = find_as<tensor>(attrs_, name)) return *v;
  return missing_or_mistyped(attrs_, name, "a tensor");
}

const tensor* attribute_map::find_tensor(const std::string& name) const {
  return find_as<tensor>(attrs_, name);
}

std::string op_node::describe() const {
  std::string s = "op '";
  if (!domain.empty()) s += domain + ".";
  s += op_type + "'";
  if (!name.empty()) s += " (node '" + name + "')";
  return s;
}

}  // namespace troupe
