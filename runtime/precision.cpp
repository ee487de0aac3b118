#include "runtime/precision.hpp"

#include <cmath>
#include <set>

#include "kernels/op_schema.hpp"

namespace troupe::runtime {
namespace {

tensor convert_tensor(const tensor& t, dtype to) {
  tensor out = tensor::allocate(to, t.shape());
  const float* src = t.data<float>();
  uint16_t* dst = out.data<uint16_t>();
  const float limit = to == dtype::f16 ? 65504.0f : 3.3895313892515355e38f;
  for (int64_t i = 0; i < t.elements(); ++i) {
    float v = src[i];
    if (!std::isnan(v)) v = std::fmax(-limit, std::fmin(limit, v));  // saturate, keep NaN
    dst[i] = to == dtype::f16 ? float_to_half(v) : float_to_bfloat16(v);
  }
  return out;
}

}  // namespace

expected<int> convert_float_precision(graph& g, dtype to) {
  if (to != dtype::f16 && to != dtype::bf16) return invalid_argument("precision conversion targets float16 or bfloat16");
  const int32_t to_onnx = dtype_to_onnx(to);
  const auto& schemas = kernels::schema_registry::standard();

  // Constants read as values by shape functions keep their type.
  std::set<int> keep;
  for (const node& n : g.nodes) {
    const auto* s = schemas.find(n.op.domain, n.op.op_type);
    if (!s) continue;
    for (int vi : s->value_inputs) {
      if (static_cast<size_t>(vi) < n.inputs.size() && n.inputs[vi] >= 0) keep.insert(n.inputs[vi]);
    }
  }
  int converted = 0;
  for (size_t v = 0; v < g.values.size(); ++v) {
    value& x = g.values[v];
    if (!x.constant || x.type != dtype::f32 || keep.count(static_cast<int>(v))) continue;
    x.constant = convert_tensor(*x.constant, to);
    x.type = to;
    ++converted;
  }
  for (node& n : g.nodes) {
    if (!n.op.domain.empty()) continue;
    if (n.op.op_type == "Cast" && n.op.attrs.get_int("to", 0) == 1) n.op.attrs.set("to", int64_t{to_onnx});
    if (n.op.op_type == "ConstantOfShape" || n.op.op_type == "Constant") {
      if (const tensor* t = n.op.attrs.find_tensor("value"); t && t->type() == dtype::f32) {
        n.op.attrs.set("value", convert_tensor(*t, to));
      }
    }
    if (n.op.op_type == "Constant" && n.op.attrs.has("value_float")) {
      tensor t = tensor::allocate(dtype::f32, {});
      t.data<float>()[0] = n.op.attrs.get_float("value_float", 0);
      n.op.attrs.erase("value_float");
      n.op.attrs.set("value", convert_tensor(t, to));
    }
    if (n.op.op_type == "Constant" && n.op.attrs.has("value_floats")) {
      auto fl = n.op.attrs.get_floats("value_floats");
      tensor t = tensor::allocate(dtype::f32, {static_cast<int64_t>(fl.size())});
      for (size_t i = 0; i < fl.size(); ++i) t.data<float>()[i] = fl[i];
      n.op.attrs.erase("value_floats");
      n.op.attrs.set("value", convert_tensor(t, to));
    }
  }
  // Boundary casts: float32 graph inputs feed a Cast to `to`; float32 outputs come from a Cast back.
  const int64_t opset = g.opset("");
  std::vector<node> prologue;
  for (int in : g.inputs) {
    if (g.values[in].type != dtype::f32) continue;
    value inner;
    inner.name = g.values[in].name + ".as_" + std::string(dtype_name(to));
    inner.type = to;
    const int inner_id = g.add_value(std::move(inner));
    for (node& n : g.nodes) {
      for (int& x : n.inputs) if (x == in) x = inner_id;
    }
    node cast;
    cast.op.op_type = "Cast";
    cast.op.name = g.values[inner_id].name;
    cast.op.opset = opset;
    cast.op.attrs.set("to", int64_t{to_onnx});
    cast.inputs = {in};
    cast.outputs = {inner_id};
    prologue.push_back(std::move(cast));
  }
  for (int& out : g.outputs) {
    value& ov = g.values[out];
    const bool was_float = ov.type == dtype::f32 || (ov.type == dtype::undefined && ov.declared_shape);
    if (!was_float || ov.is_graph_input) continue;
    // The producer now writes `inner`; a Cast writes the original name in float32.
    value inner;
    inner.name = ov.name + ".as_" + std::string(dtype_name(to));
    const int inner_id = g.add_value(std::move(inner));
    for (node& n : g.nodes) {
      for (int& x : n.outputs) if (x == out) x = inner_id;
      for (int& x : n.inputs) if (x == out) x = inner_id;
    }
    node cast;
    cast.op.op_type = "Cast";
    cast.op.name = ov.name + ".to_float32";
    cast.op.opset = opset;
    cast.op.attrs.set("to", int64_t{1});
    cast.inputs = {inner_id};
    cast.outputs = {out};
    g.nodes.push_back(std::move(cast));
  }
  g.nodes.insert(g.nodes.begin(), std::make_move_iterator(prologue.begin()), std::make_move_iterator(prologue.end()));
  TROUPE_RETURN_IF_ERROR(g.sort_topologically());
  return converted;
}

}  // namespace troupe::runtime
