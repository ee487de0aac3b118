#pragma once
/// Checks shared by nn_schemas.cpp and fused_schemas.cpp.

#include <initializer_list>
#include <string>

#include "kernels/op_schema.hpp"

namespace troupe::kernels {

/// Input 0 is required and floating; every other listed input that is present has its dtype.
inline status require_same_float(const infer_context& c, std::initializer_list<size_t> indices) {
  if (!c.has_input(0)) return c.bad("input 0 is required");
  const dtype t = c.inputs[0].type;
  if (!is_floating(t)) {
    return c.fail(error_code::unsupported,
                  "dtype " + std::string(dtype_name(t)) + " (float types only)");
  }
  for (size_t i : indices) {
    if (c.has_input(i) && c.inputs[i].type != t) {
      return c.bad("input " + std::to_string(i) + " is " + c.inputs[i].to_string() +
                   " but input 0 is " + c.inputs[0].to_string());
    }
  }
  return status::ok();
}

/// An optional per-channel input (bias, scale) is absent or 1-D of `length`.
inline status check_channel_vector(const infer_context& c, size_t i, int64_t length,
                                   const char* name) {
  if (!c.has_input(i)) return status::ok();
  if (c.inputs[i].shape != shape_t{length}) {
    return c.bad(std::string(name) + " " + c.inputs[i].to_string() + " must be 1-D of length " +
                 std::to_string(length));
  }
  return status::ok();
}

/// The residual input Z of a fused op is absent or has exactly the output's shape.
inline status check_residual(const infer_context& c, size_t i, const shape_t& output_shape) {
  if (!c.has_input(i)) return status::ok();
  if (c.inputs[i].shape != output_shape) {
    return c.bad("residual Z " + c.inputs[i].to_string() + " must have the output's shape " +
                 shape_to_string(output_shape));
  }
  return status::ok();
}

}  // namespace troupe::kernels
