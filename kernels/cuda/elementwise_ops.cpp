// CUDA elementwise ops: unary functions and activations, Clip, broadcasting binary ops and
// comparisons, Where, Cast/CastLike. Launch parameters (broadcast plans) are fixed at create time.
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/ops/nn_geometry.hpp"

namespace troupe::kernels::cuda {
namespace {

using params_fn = status (*)(const op_node&, float* alpha, float* beta, unary_op* op);

status no_params(const op_node&, float*, float*, unary_op*) {
  return status::ok();
}

status leaky_relu_params(const op_node& n, float* alpha, float*, unary_op*) {
  *alpha = n.attrs.get_float("alpha", 0.01f);
  return status::ok();
}

status hard_sigmoid_params(const op_node& n, float* alpha, float* beta, unary_op*) {
  *alpha = n.attrs.get_float("alpha", 0.2f);
  *beta = n.attrs.get_float("beta", 0.5f);
  return status::ok();
}

status alpha_param(const op_node& n, float fallback, float* alpha) {
  *alpha = n.attrs.get_float("alpha", fallback);
  return status::ok();
}
status alpha_one(const op_node& n, float* alpha, float*, unary_op*) {
  return alpha_param(n, 1.0f, alpha);
}

status selu_params(const op_node& n, float* alpha, float* beta, unary_op*) {
  *alpha = n.attrs.get_float("alpha", 1.67326319217681884765625f);
  *beta = n.attrs.get_float("gamma", 1.05070102214813232421875f);
  return status::ok();
}

status gelu_params(const op_node& n, float*, float*, unary_op* op) {
  const std::string approximate = n.attrs.get_string("approximate", "none");
  if (approximate == "none") {
    *op = unary_op::gelu;
  } else if (approximate == "tanh") {
    *op = unary_op::gelu_tanh;
  } else {
    return invalid_model(n.describe() + ": Gelu approximate must be 'none' or 'tanh', not '" +
                         approximate + "'");
  }
  return status::ok();
}

void add_unary(kernel_registry& r, const char* op_type, unary_op op, std::vector<dtype> types,
               params_fn params = no_params) {
  r.add({"",
         op_type,
         backend::cuda,
         std::move(types),
         0,
         {},
         [op, params](const kernel_create_context& c) -> expected<std::unique_ptr<kernel>> {
           float alpha = 0.0f, beta = 0.0f;
           unary_op u = op;
           TROUPE_RETURN_IF_ERROR(params(c.node, &alpha, &beta, &u));
           const dtype t = c.inputs[0].type;
           if (!unary_supported(u, t)) {
             return c.fail(error_code::unsupported,
                           "dtype " + std::string(dtype_name(t)) + " on the cuda backend");
           }
           const int64_t n = c.outputs[0].elements();
           return make_kernel(
               [u, t, alpha, beta, n](kernel_run_context& ctx) {
                 return launch_unary(u, t, alpha, beta, ctx.inputs[0].raw(), ctx.outputs[0].raw(),
                                     n, ctx.stream);
               },
               0, {{0, 0}});
         }});
}

// ---- Clip --------------------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_clip(const kernel_create_context& c) {
  const dtype t = c.inputs[0].type;
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  // Inputs 1/2 known at create time become constants; otherwise the kernel reads the device
  // scalar at run time.
  bool lo_at_run = false, hi_at_run = false;
  if (c.node.opset < 11) {
    lo = c.node.attrs.get_float("min", -std::numeric_limits<float>::infinity());
    hi = c.node.attrs.get_float("max", std::numeric_limits<float>::infinity());
  } else {
    for (int k = 1; k <= 2; ++k) {
      if (!c.has_input(static_cast<size_t>(k))) continue;
      if (c.inputs[static_cast<size_t>(k)].type != t ||
          c.inputs[static_cast<size_t>(k)].elements() != 1) {
        return c.fail(error_code::invalid_model,
                      "Clip min/max must be scalars of the input's type");
      }
      if (const tensor* v = c.value(static_cast<size_t>(k))) {
        (k == 1 ? lo : hi) = v->value_as_double(0);
      } else {
        (k == 1 ? lo_at_run : hi_at_run) = true;
      }
    }
  }
  const int64_t n = c.outputs[0].elements();
  std::vector<int> unread;
  if (!lo_at_run) unread.push_back(1);
  if (!hi_at_run) unread.push_back(2);
  return make_kernel(
      [=](kernel_run_context& ctx) {
        const void* lo_ptr = nullptr;
        const void* hi_ptr = nullptr;
        double lo_v = lo, hi_v = hi;
        // A scalar the planner kept on the host is read here; a device one inside the kernel.
        if (lo_at_run) {
          const tensor& m = ctx.inputs[1];
          if (m.device() == device_kind::cpu)
            lo_v = m.value_as_double(0);
          else
            lo_ptr = m.raw();
        }
        if (hi_at_run) {
          const tensor& m = ctx.inputs[2];
          if (m.device() == device_kind::cpu)
            hi_v = m.value_as_double(0);
          else
            hi_ptr = m.raw();
        }
        return launch_clip(t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), n, lo_ptr, hi_ptr, lo_v,
                           hi_v, ctx.stream);
      },
      0, {{0, 0}}, false, std::move(unread));
}

// ---- binary ------------------------------------------------------------------------------------

expected<broadcast_plan> plan_for(const kernel_create_context& c, int operands) {
  const int64_t* shapes[3] = {};
  int ranks[3] = {};
  for (int k = 0; k < operands; ++k) {
    shapes[k] = c.inputs[static_cast<size_t>(k)].shape.data();
    ranks[k] = static_cast<int>(c.inputs[static_cast<size_t>(k)].rank());
  }
  const shape_t& out = c.outputs[0].shape;
  auto p = make_broadcast_plan(shapes, ranks, operands, out.data(), static_cast<int>(out.size()));
  if (!p) return c.fail(p.error().code(), p.error().message());
  return p;
}

/// Outputs that may overwrite input k: same shape and dtype as the output.
std::vector<std::pair<int, int>> same_shape_inputs(const kernel_create_context& c, int operands) {
  std::vector<std::pair<int, int>> v;
  for (int k = 0; k < operands; ++k) {
    if (c.inputs[static_cast<size_t>(k)] == c.outputs[0]) v.emplace_back(0, k);
  }
  return v;
}

void add_binary(kernel_registry& r, const char* op_type, binary_op op, std::vector<dtype> types) {
  r.add({"", op_type, backend::cuda, std::move(types), 0,
         [op](const kernel_create_context& c) -> status {
           if (c.inputs.size() != 2 || !c.has_input(0) || !c.has_input(1)) {
             return c.fail(error_code::unsupported, "the cuda kernel takes exactly two inputs");
           }
           if (!binary_supported(op, c.inputs[0].type, c.inputs[1].type)) {
             return c.fail(error_code::unsupported,
                           "dtypes " + std::string(dtype_name(c.inputs[0].type)) + ", " +
                               std::string(dtype_name(c.inputs[1].type)) + " on the cuda backend");
           }
           return status::ok();
         },
         [op](const kernel_create_context& c) -> expected<std::unique_ptr<kernel>> {
           TROUPE_ASSIGN_OR_RETURN(broadcast_plan plan, plan_for(c, 2));
           const dtype a = c.inputs[0].type, b = c.inputs[1].type;
           return make_kernel(
               [op, a, b, plan](kernel_run_context& ctx) {
                 return launch_binary(op, a, b, ctx.inputs[0].raw(), ctx.inputs[1].raw(),
                                      ctx.outputs[0].raw(), plan, ctx.stream);
               },
               0, same_shape_inputs(c, 2));
         }});
}

expected<std::unique_ptr<kernel>> create_where(const kernel_create_context& c) {
  if (!c.has_input(0) || !c.has_input(1) || !c.has_input(2) || c.inputs[0].type != dtype::boolean) {
    return c.fail(error_code::invalid_model, "Where takes a bool condition and two values");
  }
  TROUPE_ASSIGN_OR_RETURN(broadcast_plan plan, plan_for(c, 3));
  const size_t bytes = dtype_size(c.outputs[0].type);
  std::vector<std::pair<int, int>> inplace;
  for (int k = 1; k <= 2; ++k) {
    if (c.inputs[static_cast<size_t>(k)] == c.outputs[0]) inplace.emplace_back(0, k);
  }
  return make_kernel(
      [bytes, plan](kernel_run_context& ctx) {
        return launch_where(bytes, ctx.inputs[0].raw(), ctx.inputs[1].raw(), ctx.inputs[2].raw(),
                            ctx.outputs[0].raw(), plan, ctx.stream);
      },
      0, std::move(inplace));
}

// ---- Cast --------------------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_cast(const kernel_create_context& c) {
  const dtype from = c.inputs[0].type;
  const dtype to = c.outputs[0].type;
  if (!cast_supported(from, to)) {
    return c.fail(error_code::unsupported, "Cast " + std::string(dtype_name(from)) + " -> " +
                                               std::string(dtype_name(to)) +
                                               " on the cuda backend");
  }
  const int64_t n = c.outputs[0].elements();
  if (from == to) {
    const size_t bytes = c.outputs[0].bytes();
    return make_kernel(
        [bytes](kernel_run_context& ctx) -> status {
          if (ctx.outputs[0].raw() == ctx.inputs[0].raw()) return status::ok();
          TROUPE_CUDA_CHECK(cudaMemcpyAsync(ctx.outputs[0].raw(), ctx.inputs[0].raw(), bytes,
                                            cudaMemcpyDeviceToDevice, to_stream(ctx.stream)));
          return status::ok();
        },
        0, {{0, 0}});
  }
  std::vector<std::pair<int, int>> inplace;
  if (dtype_size(from) == dtype_size(to)) inplace.emplace_back(0, 0);
  return make_kernel(
      [from, to, n](kernel_run_context& ctx) {
        return launch_cast(from, to, ctx.inputs[0].raw(), ctx.outputs[0].raw(), n, ctx.stream);
      },
      0, std::move(inplace));
}

}  // namespace

expected<activation> fused_activation(const op_node& node) {
  TROUPE_ASSIGN_OR_RETURN(activation_spec spec, resolve_activation(node));
  activation a;
  a.alpha = spec.alpha;
  a.beta = spec.beta;
  switch (spec.kind) {
    case activation_kind::none:
      a.op = unary_op::identity;
      break;
    case activation_kind::relu:
      a.op = unary_op::relu;
      break;
    case activation_kind::clip:
      a.op = unary_op::clip;
      break;
    case activation_kind::leaky_relu:
      a.op = unary_op::leaky_relu;
      break;
    case activation_kind::sigmoid:
      a.op = unary_op::sigmoid;
      break;
    case activation_kind::hard_sigmoid:
      a.op = unary_op::hard_sigmoid;
      break;
    case activation_kind::hard_swish:
      a.op = unary_op::hard_swish;
      break;
    case activation_kind::tanh:
      a.op = unary_op::tanh;
      break;
    case activation_kind::gelu:
      a.op = unary_op::gelu;
      break;
  }
  return a;
}

void register_elementwise(kernel_registry& r) {
  const std::vector<dtype> floats = gpu_float_types();
  const std::vector<dtype> signed_numbers{dtype::f32, dtype::f16, dtype::bf16, dtype::i32,
                                          dtype::i64};
  add_unary(r, "Neg", unary_op::neg, signed_numbers);
  add_unary(r, "Abs", unary_op::abs, signed_numbers);
  add_unary(r, "Relu", unary_op::relu, signed_numbers);
  add_unary(r, "Sqrt", unary_op::sqrt, floats);
  add_unary(r, "Exp", unary_op::exp, floats);
  add_unary(r, "Log", unary_op::log, floats);
  add_unary(r, "Erf", unary_op::erf, floats);
  add_unary(r, "Tanh", unary_op::tanh, floats);
  add_unary(r, "Sigmoid", unary_op::sigmoid, floats);
  add_unary(r, "Reciprocal", unary_op::reciprocal, floats);
  add_unary(r, "Floor", unary_op::floor, floats);
  add_unary(r, "Ceil", unary_op::ceil, floats);
  add_unary(r, "LeakyRelu", unary_op::leaky_relu, floats, leaky_relu_params);
  add_unary(r, "HardSigmoid", unary_op::hard_sigmoid, floats, hard_sigmoid_params);
  add_unary(r, "HardSwish", unary_op::hard_swish, floats);
  add_unary(r, "Gelu", unary_op::gelu, floats, gelu_params);
  add_unary(r, "Not", unary_op::logical_not, {dtype::boolean});
  add_unary(r, "Sin", unary_op::sin, floats);
  add_unary(r, "Cos", unary_op::cos, floats);
  add_unary(r, "Round", unary_op::round, floats);
  add_unary(r, "Sign", unary_op::sign, floats);
  add_unary(r, "Softplus", unary_op::softplus, floats);
  add_unary(r, "Softsign", unary_op::softsign, floats);
  add_unary(r, "Elu", unary_op::elu, floats, alpha_one);
  add_unary(r, "Selu", unary_op::selu, floats, selu_params);
  add_unary(r, "Celu", unary_op::celu, floats, alpha_one);
  add_unary(r, "Mish", unary_op::mish, floats);
  add_unary(r, "ThresholdedRelu", unary_op::thresholded_relu, floats, alpha_one);
  r.add({"", "Clip", backend::cuda, signed_numbers, 0, {}, create_clip});

  add_binary(r, "Add", binary_op::add, signed_numbers);
  add_binary(r, "Sub", binary_op::sub, signed_numbers);
  add_binary(r, "Mul", binary_op::mul, signed_numbers);
  add_binary(r, "Div", binary_op::div, signed_numbers);
  add_binary(r, "Pow", binary_op::pow, floats);
  add_binary(r, "Min", binary_op::min, signed_numbers);
  add_binary(r, "Max", binary_op::max, signed_numbers);
  std::vector<dtype> comparable = signed_numbers;
  comparable.push_back(dtype::boolean);
  add_binary(r, "Equal", binary_op::equal, comparable);
  add_binary(r, "Less", binary_op::less, signed_numbers);
  add_binary(r, "LessOrEqual", binary_op::less_equal, signed_numbers);
  add_binary(r, "Greater", binary_op::greater, signed_numbers);
  add_binary(r, "GreaterOrEqual", binary_op::greater_equal, signed_numbers);
  add_binary(r, "And", binary_op::logical_and, {dtype::boolean});
  add_binary(r, "Or", binary_op::logical_or, {dtype::boolean});
  add_binary(r, "Xor", binary_op::logical_xor, {dtype::boolean});
  add_binary(r, "PRelu", binary_op::prelu, floats);

  r.add({"", "Where", backend::cuda, {dtype::boolean}, 0, {}, create_where});
  r.add({"", "Cast", backend::cuda, {}, 0, {}, create_cast});
  r.add({"", "CastLike", backend::cuda, {}, 0, {}, create_cast});
}

}  // namespace troupe::kernels::cuda
