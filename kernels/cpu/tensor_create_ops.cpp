// CPU kernels that create tensors rather than move them: Shape, Size, Constant, ConstantOfShape,
// Range, EyeLike. Most run only at plan time (the runtime folds them), but each has a plain
// kernel so a plan that cannot fold them still runs.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/tensor_common.hpp"
#include "kernels/ops/tensor_params.hpp"

namespace troupe::kernels::cpu {
namespace {

using factory_result = expected<std::unique_ptr<kernel>>;

/// A kernel that writes fixed bytes (computed at creation) to output 0.
factory_result fixed_bytes_kernel(tensor value) {
  return make_function_kernel([value = std::move(value)](kernel_run_context& rc) {
    if (rc.outputs[0].bytes() != value.bytes())
      return internal_error("constant output has the wrong size");
    if (value.bytes()) std::memcpy(rc.outputs[0].raw(), value.raw(), value.bytes());
    return status::ok();
  });
}

factory_result shape_factory(const kernel_create_context& ctx) {
  const shape_t& s = ctx.inputs[0].shape;
  const auto [start, end] = shape_op_range(ctx.node, static_cast<int64_t>(s.size()));
  std::vector<int64_t> dims;
  for (int64_t i = start; i < end; ++i) dims.push_back(s[static_cast<size_t>(i)]);
  const int64_t n = static_cast<int64_t>(dims.size());
  return fixed_bytes_kernel(tensor::from_vector(dims, {n}));
}

factory_result size_factory(const kernel_create_context& ctx) {
  return fixed_bytes_kernel(
      tensor::from_vector(std::vector<int64_t>{ctx.inputs[0].elements()}, {}));
}

factory_result constant_factory(const kernel_create_context& ctx) {
  const auto& a = ctx.node.attrs;
  if (const tensor* t = a.find_tensor("value")) return fixed_bytes_kernel(t->clone());
  if (a.has("value_float"))
    return fixed_bytes_kernel(
        tensor::from_vector(std::vector<float>{a.get_float("value_float", 0)}, {}));
  if (a.has("value_int"))
    return fixed_bytes_kernel(
        tensor::from_vector(std::vector<int64_t>{a.get_int("value_int", 0)}, {}));
  if (a.has("value_floats")) {
    auto v = a.get_floats("value_floats");
    const int64_t n = static_cast<int64_t>(v.size());
    return fixed_bytes_kernel(tensor::from_vector(v, {n}));
  }
  if (a.has("value_ints")) {
    auto v = a.get_ints("value_ints");
    const int64_t n = static_cast<int64_t>(v.size());
    return fixed_bytes_kernel(tensor::from_vector(v, {n}));
  }
  return ctx.fail(error_code::unsupported, "no supported value attribute");
}

factory_result constant_of_shape_factory(const kernel_create_context& ctx) {
  uint64_t value = 0;  // the default: float 0, whose bytes are all zero
  size_t elem = 4;
  if (const tensor* t = ctx.node.attrs.find_tensor("value")) {
    if (t->elements() != 1)
      return ctx.fail(error_code::invalid_model, "value must hold one element");
    elem = dtype_size(t->type());
    std::memcpy(&value, t->raw(), elem);
  }
  return make_function_kernel([value, elem](kernel_run_context& rc) {
    tensor& y = rc.outputs[0];
    if (value == 0) {
      std::memset(y.raw(), 0, y.bytes());
    } else {
      fill_elems(y.raw(), &value, elem, y.elements());
    }
    return status::ok();
  });
}

template <class T>
status range_fill(kernel_run_context& rc) {
  const T start = *rc.inputs[0].data<T>();
  const T delta = *rc.inputs[2].data<T>();
  T* y = rc.outputs[0].data<T>();
  const int64_t n = rc.outputs[0].elements();
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(start + static_cast<T>(i) * delta);
  return status::ok();
}

factory_result range_factory(const kernel_create_context& ctx) {
  switch (ctx.inputs[0].type) {
    case dtype::f32:
      return make_function_kernel(range_fill<float>);
    case dtype::f64:
      return make_function_kernel(range_fill<double>);
    case dtype::i16:
      return make_function_kernel(range_fill<int16_t>);
    case dtype::i32:
      return make_function_kernel(range_fill<int32_t>);
    case dtype::i64:
      return make_function_kernel(range_fill<int64_t>);
    default:
      return ctx.fail(error_code::unsupported, "Range on this dtype");
  }
}

factory_result eye_like_factory(const kernel_create_context& ctx) {
  const tensor_info& out = ctx.outputs[0];
  const int64_t rows = out.shape[0], cols = out.shape[1];
  const int64_t k = ctx.node.attrs.get_int("k", 0);
  const size_t elem = dtype_size(out.type);
  uint64_t one = 0;
  store_scalar(out.type, 1.0, &one);
  return make_function_kernel([=](kernel_run_context& rc) {
    char* y = static_cast<char*>(rc.outputs[0].raw());
    std::memset(y, 0, rc.outputs[0].bytes());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t j = i + k;
      if (j >= 0 && j < cols) std::memcpy(y + static_cast<size_t>(i * cols + j) * elem, &one, elem);
    }
    return status::ok();
  });
}

}  // namespace

void register_tensor_create(kernel_registry& r) {
  r.add({"", "Shape", backend::cpu, all_types(), 0, {}, shape_factory});
  r.add({"", "Size", backend::cpu, all_types(), 0, {}, size_factory});
  r.add({"", "Constant", backend::cpu, {}, 0, {}, constant_factory});
  r.add({"",
         "ConstantOfShape",
         backend::cpu,
         {dtype::i64, dtype::i32},
         0,
         {},
         constant_of_shape_factory});
  r.add({"",
         "Range",
         backend::cpu,
         {dtype::f32, dtype::f64, dtype::i16, dtype::i32, dtype::i64},
         0,
         {},
         range_factory});
  r.add({"", "EyeLike", backend::cpu, all_types(), 0, {}, eye_like_factory});
}

}  // namespace troupe::kernels::cpu
