#include "tests/kernels/kernel_test_util.hpp"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "kernels/op_schema.hpp"
#include "tests/test_seed.hpp"

namespace troupe::testing {

op_node make_node(std::string op_type, int64_t opset, std::string domain) {
  op_node n;
  n.op_type = std::move(op_type);
  n.domain = std::move(domain);
  n.name = "test_" + n.op_type;
  n.opset = opset;
  return n;
}

std::mt19937_64& test_rng() {
  static std::mt19937_64 rng(test_seed());
  return rng;
}

tensor random_tensor(dtype type, shape_t shape, double lo, double hi) {
  tensor t = tensor::allocate(type, std::move(shape));
  std::uniform_real_distribution<double> u(lo, hi);
  auto& rng = test_rng();
  for (int64_t i = 0; i < t.elements(); ++i) {
    const double v = u(rng);
    switch (type) {
      case dtype::f32:
        t.data<float>()[i] = static_cast<float>(v);
        break;
      case dtype::f64:
        t.data<double>()[i] = v;
        break;
      case dtype::f16:
        t.data<uint16_t>()[i] = float_to_half(static_cast<float>(v));
        break;
      case dtype::i64:
        t.data<int64_t>()[i] = static_cast<int64_t>(std::floor(v));
        break;
      case dtype::i32:
        t.data<int32_t>()[i] = static_cast<int32_t>(std::floor(v));
        break;
      case dtype::i8:
        t.data<int8_t>()[i] = static_cast<int8_t>(std::floor(v));
        break;
      case dtype::u8:
        t.data<uint8_t>()[i] = static_cast<uint8_t>(std::floor(std::fabs(v)));
        break;
      case dtype::boolean:
        t.data<uint8_t>()[i] = v > (lo + hi) / 2 ? 1 : 0;
        break;
      default:
        std::abort();
    }
  }
  return t;
}

double relative_l2(const tensor& a, const tensor& b) {
  if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.elements(); ++i) {
    const double x = a.value_as_double(i), y = b.value_as_double(i);
    if (std::isnan(x) != std::isnan(y)) return std::numeric_limits<double>::infinity();
    if (std::isnan(x)) continue;
    num += (x - y) * (x - y);
    den += y * y;
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

expected<std::vector<tensor>> run_op(const op_node& node, const std::vector<tensor>& inputs,
                                     size_t num_outputs, kernels::backend where,
                                     std::vector<bool> constant_inputs) {
  std::vector<tensor_info> infos;
  std::vector<const tensor*> values;
  for (size_t i = 0; i < inputs.size(); ++i) {
    infos.push_back(inputs[i].info());
    values.push_back(inputs[i].defined() ? &inputs[i] : nullptr);
  }
  const auto* schema = kernels::schema_registry::standard().find(node.domain, node.op_type);
  if (!schema) return unsupported("no schema for " + node.describe());
  kernels::infer_context ic{node, infos, values, num_outputs};
  TROUPE_ASSIGN_OR_RETURN(auto out_infos, schema->infer(ic));
  // Only inputs marked constant (or the schema's value inputs) are visible to the factory.
  std::vector<const tensor*> create_values(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool is_const = i < constant_inputs.size() && constant_inputs[i];
    for (int vi : schema->value_inputs) is_const |= static_cast<size_t>(vi) == i;
    if (is_const && inputs[i].defined()) create_values[i] = &inputs[i];
  }
  kernels::kernel_create_context cc{node, infos, create_values, out_infos, nullptr};
  TROUPE_ASSIGN_OR_RETURN(auto k, kernels::kernel_registry::standard().create(where, cc));
  std::vector<tensor> outputs;
  for (const auto& oi : out_infos) {
    outputs.push_back(k->is_view() ? inputs[0].reshaped(oi.shape)
                                   : tensor::allocate(oi.type, oi.shape));
  }
  if (k->is_view()) return outputs;
  std::vector<uint8_t> workspace(k->workspace_bytes() + 64);
  kernels::kernel_run_context rc{inputs, outputs, workspace.data(), nullptr};
  TROUPE_RETURN_IF_ERROR(k->compute(rc));
  return outputs;
}

}  // namespace troupe::testing
