#include "serving/signature.hpp"

#include <limits>

namespace troupe::serving {

int model_signature::find_input(std::string_view name) const {
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].name == name) return static_cast<int>(i);
  return -1;
}

int model_signature::find_output(std::string_view name) const {
  for (size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i].name == name) return static_cast<int>(i);
  return -1;
}

namespace {

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ",";
    s += dims[i] < 0 ? std::string("?") : std::to_string(dims[i]);
  }
  return s + "]";
}

}  // namespace

expected<int64_t> model_signature::validate(std::span<const input_view> tensors) const {
  if (tensors.size() != inputs.size())
    return invalid_argument("model '" + model + "' takes " + std::to_string(inputs.size()) +
                            " inputs, got " + std::to_string(tensors.size()));
  const bool batched = max_batch_size > 0;
  int64_t rows = 1;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const tensor_spec& spec = inputs[i];
    const tensor_info& got = tensors[i].info;
    const std::string what = "input '" + spec.name + "'";
    if (got.type != spec.type)
      return invalid_argument(what + " is " + std::string(dtype_name(spec.type)) + ", got " +
                              std::string(dtype_name(got.type)));
    if (got.shape.size() != spec.shape.size())
      return invalid_argument(what + " has rank " + std::to_string(spec.shape.size()) + " " +
                              dims_text(spec.shape) + ", got shape " + shape_to_string(got.shape));
    // Element count with an overflow check: shapes come from the network.
    uint64_t elements = 1;
    for (size_t d = 0; d < got.shape.size(); ++d) {
      const int64_t v = got.shape[d];
      if (v < 0)
        return invalid_argument(what + " has a negative dim in " + shape_to_string(got.shape));
      if (spec.shape[d] >= 0 && v != spec.shape[d] && !(batched && d == 0))
        return invalid_argument(what + " must have shape " + dims_text(spec.shape) + ", got " +
                                shape_to_string(got.shape));
      if (v != 0 && elements > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(v))
        return invalid_argument(what + " shape " + shape_to_string(got.shape) + " is too large");
      elements *= static_cast<uint64_t>(v);
    }
    if (batched) {
      const int64_t b = got.shape[0];
      if (b < 1 || b > max_batch_size)
        return invalid_argument(what + " batch dim " + std::to_string(b) + " is outside [1, " +
                                std::to_string(max_batch_size) + "]");
      if (i == 0)
        rows = b;
      else if (b != rows)
        return invalid_argument(what + " batch dim " + std::to_string(b) +
                                " differs from the first input's " + std::to_string(rows));
    }
    const uint64_t size = dtype_size(got.type);
    if (elements > std::numeric_limits<uint64_t>::max() / size)
      return invalid_argument(what + " shape " + shape_to_string(got.shape) + " is too large");
    if (elements * size != tensors[i].bytes)
      return invalid_argument(what + " of shape " + shape_to_string(got.shape) + " and type " +
                              std::string(dtype_name(got.type)) + " needs " +
                              std::to_string(elements * size) + " bytes, its frame has " +
                              std::to_string(tensors[i].bytes));
  }
  return rows;
}

expected<uint32_t> model_signature::priority_level(uint32_t requested) const {
  if (requested == 0) return config.effective_default_priority();
  if (requested > config.priority_levels)
    return invalid_argument("priority " + std::to_string(requested) +
                            " exceeds the model's priority_levels " +
                            std::to_string(config.priority_levels));
  return requested;
}

std::chrono::microseconds model_signature::effective_timeout(
    std::chrono::microseconds requested) const {
  if (requested.count() > 0 && config.queue.allow_timeout_override) return requested;
  return config.queue.default_timeout;
}

bool model_signature::same_batch_shape(std::span<const input_view> a, std::span<const input_view> b,
                                       bool batched) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const shape_t& x = a[i].info.shape;
    const shape_t& y = b[i].info.shape;
    if (x.size() != y.size()) return false;
    for (size_t d = batched ? 1 : 0; d < x.size(); ++d)
      if (x[d] != y[d]) return false;
  }
  return true;
}

}  // namespace troupe::serving
