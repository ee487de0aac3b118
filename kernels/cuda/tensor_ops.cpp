// CUDA data-movement ops: the views (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout),
// Transpose, Gather, Concat, Slice, Expand and constant Pad. Value inputs (Slice's starts, Pad's
// pads...) are read at create time; the planner keeps them on the host and constant.
#include <algorithm>
#include <cstring>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/tensor.cuh"
#include "kernels/op_schema.hpp"

namespace troupe::kernels::cuda {
namespace {

std::vector<int64_t> row_major_strides(const shape_t& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t d = s.size(); d-- > 1;) st[d - 1] = st[d] * s[d];
  return st;
}

status copy_device(const tensor& from, tensor& to, size_t bytes, void* stream) {
  if (bytes == 0 || from.raw() == to.raw()) return status::ok();
  TROUPE_CUDA_CHECK(
      cudaMemcpyAsync(to.raw(), from.raw(), bytes, cudaMemcpyDeviceToDevice, to_stream(stream)));
  return status::ok();
}

/// Output 0 is input 0's bytes: the planner aliases them and compute runs only when it could not
/// (then it copies).
expected<std::unique_ptr<kernel>> create_view(const kernel_create_context& c) {
  const size_t bytes = c.outputs[0].bytes();
  if (c.node.op_type == "Dropout" && c.outputs.size() > 1 && c.outputs[1].present()) {
    // The mask output of inference-mode Dropout is all true; the data still passes unchanged.
    const size_t mask_bytes = c.outputs[1].bytes();
    return make_kernel(
        [bytes, mask_bytes](kernel_run_context& ctx) -> status {
          TROUPE_RETURN_IF_ERROR(copy_device(ctx.inputs[0], ctx.outputs[0], bytes, ctx.stream));
          TROUPE_CUDA_CHECK(
              cudaMemsetAsync(ctx.outputs[1].raw(), 1, mask_bytes, to_stream(ctx.stream)));
          return status::ok();
        },
        0, {{0, 0}}, false, inputs_from(1, c.inputs.size()));
  }
  return make_kernel(
      [bytes](kernel_run_context& ctx) {
        return copy_device(ctx.inputs[0], ctx.outputs[0], bytes, ctx.stream);
      },
      0, {}, true, inputs_from(1, c.inputs.size()));
}

/// A strided copy of input 0; the other inputs (Slice's starts..., Expand's shape, Pad's pads)
/// were read at create time.
expected<std::unique_ptr<kernel>> make_strided_copy(const kernel_create_context& c,
                                                    strided_copy_plan plan) {
  const size_t bytes = dtype_size(c.inputs[0].type);
  return make_kernel(
      [bytes, plan](kernel_run_context& ctx) {
        return launch_strided_copy(bytes, ctx.inputs[0].raw(), ctx.outputs[0].raw(), plan,
                                   ctx.stream);
      },
      0, {}, false, inputs_from(1, c.inputs.size()));
}

// ---- Transpose ---------------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_transpose(const kernel_create_context& c) {
  const shape_t& in = c.inputs[0].shape;
  const size_t rank = in.size();
  std::vector<int64_t> perm = c.node.attrs.get_ints("perm");
  if (perm.empty()) {
    for (size_t d = rank; d-- > 0;) perm.push_back(static_cast<int64_t>(d));
  }
  if (perm.size() != rank) return c.fail(error_code::invalid_model, "perm does not match the rank");
  std::vector<bool> seen(rank, false);
  for (auto& p : perm) {
    if (p < 0) p += static_cast<int64_t>(rank);
    if (p < 0 || p >= static_cast<int64_t>(rank) || seen[static_cast<size_t>(p)]) {
      return c.fail(error_code::invalid_model, "perm is not a permutation");
    }
    seen[static_cast<size_t>(p)] = true;
  }
  // Drop size-1 axes, then merge input axes that stay adjacent and in order in the output.
  // Input axes of size above 1, renumbered 0.. in input order, listed in output order.
  std::vector<int64_t> compact(rank, -1), compact_dims;
  for (size_t d = 0; d < rank; ++d) {
    if (in[d] != 1) {
      compact[d] = static_cast<int64_t>(compact_dims.size());
      compact_dims.push_back(in[d]);
    }
  }
  std::vector<int64_t> kept;
  for (int64_t p : perm) {
    if (compact[static_cast<size_t>(p)] >= 0) kept.push_back(compact[static_cast<size_t>(p)]);
  }
  std::vector<std::vector<int64_t>> groups;  // runs of consecutive input axes, output order
  for (int64_t p : kept) {
    if (!groups.empty() && groups.back().back() + 1 == p) {
      groups.back().push_back(p);
    } else {
      groups.push_back({p});
    }
  }
  // Renumber the groups by their position in the input.
  std::vector<size_t> order(groups.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return groups[a].front() < groups[b].front(); });
  const size_t g = groups.size();
  std::vector<int64_t> in_dims(g), group_perm(g);  // merged input dims; output axis -> input axis
  for (size_t pos = 0; pos < g; ++pos) {
    int64_t dim = 1;
    for (int64_t a : groups[order[pos]]) dim *= compact_dims[static_cast<size_t>(a)];
    in_dims[pos] = dim;
  }
  for (size_t i = 0; i < g; ++i) {
    group_perm[i] = static_cast<int64_t>(std::find(order.begin(), order.end(), i) - order.begin());
  }
  const size_t bytes = dtype_size(c.inputs[0].type);
  if (g <= 1) {
    const size_t total = c.outputs[0].bytes();
    return make_kernel([total](kernel_run_context& ctx) {
      return copy_device(ctx.inputs[0], ctx.outputs[0], total, ctx.stream);
    });
  }
  bool batched_2d = true;  // perm = (0, ..., g-3, g-1, g-2)
  for (size_t i = 0; i + 2 < g; ++i)
    batched_2d = batched_2d && group_perm[i] == static_cast<int64_t>(i);
  batched_2d = batched_2d && group_perm[g - 2] == static_cast<int64_t>(g - 1) &&
               group_perm[g - 1] == static_cast<int64_t>(g - 2);
  if (batched_2d && in_dims[g - 2] < 32 * 65535) {
    int64_t batch = 1;
    for (size_t i = 0; i + 2 < g; ++i) batch *= in_dims[i];
    const int64_t rows = in_dims[g - 2], cols = in_dims[g - 1];
    return make_kernel([bytes, batch, rows, cols](kernel_run_context& ctx) {
      return launch_transpose_2d(bytes, ctx.inputs[0].raw(), ctx.outputs[0].raw(), batch, rows,
                                 cols, ctx.stream);
    });
  }
  if (g > static_cast<size_t>(kMaxCopyRank)) {
    return c.fail(error_code::unsupported, "transpose of more than 8 non-mergeable axes");
  }
  const std::vector<int64_t> in_strides = row_major_strides(in_dims);
  strided_copy_plan plan;
  plan.rank = static_cast<int>(g);
  plan.out_elements = c.outputs[0].elements();
  for (size_t i = 0; i < g; ++i) {
    plan.out_dims[i] = in_dims[static_cast<size_t>(group_perm[i])];
    plan.in_strides[i] = in_strides[static_cast<size_t>(group_perm[i])];
  }
  return make_strided_copy(c, plan);
}

// ---- Gather ------------------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_gather(const kernel_create_context& c) {
  const shape_t& s = c.inputs[0].shape;
  const dtype it = c.inputs[1].type;
  if (it != dtype::i64 && it != dtype::i32) {
    return c.fail(error_code::invalid_model, "indices must be int32 or int64");
  }
  auto axis = normalize_axis(c.node.attrs.get_int("axis", 0), static_cast<int64_t>(s.size()));
  if (!axis || s.empty()) return c.fail(error_code::invalid_model, "axis out of range");
  const size_t a = static_cast<size_t>(*axis);
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < a; ++d) outer *= s[d];
  for (size_t d = a + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t axis_dim = s[a];
  const int64_t count = c.inputs[1].elements();
  const int64_t inner_bytes = inner * static_cast<int64_t>(dtype_size(c.inputs[0].type));
  const bool is64 = it == dtype::i64;
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  uint32_t* const fault_word = cctx->fault_word();
  return make_kernel([=](kernel_run_context& ctx) {
    return launch_gather(ctx.inputs[0].raw(), ctx.inputs[1].raw(), is64, ctx.outputs[0].raw(),
                         outer, axis_dim, count, inner_bytes, fault_word, ctx.stream);
  });
}

// ---- Concat ------------------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_concat(const kernel_create_context& c) {
  const shape_t& out = c.outputs[0].shape;
  auto axis = normalize_axis(c.node.attrs.get_int("axis", 0), static_cast<int64_t>(out.size()));
  if (!axis) return c.fail(error_code::invalid_model, axis.error().message());
  const size_t a = static_cast<size_t>(*axis);
  const size_t esize = dtype_size(c.outputs[0].type);
  size_t outer = 1;
  for (size_t d = 0; d < a; ++d) outer *= static_cast<size_t>(out[d]);
  const size_t out_row =
      static_cast<size_t>(element_count(shape_t(out.begin() + a, out.end()))) * esize;
  // Each input is `outer` rows of in_row bytes landing at column offset `offset` of the output.
  struct piece {
    size_t input;
    size_t offset;
    size_t in_row;
  };
  std::vector<piece> pieces;
  size_t offset = 0;
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    if (!c.has_input(k)) continue;
    const shape_t& s = c.inputs[k].shape;
    if (s.size() != out.size()) return c.fail(error_code::invalid_model, "input ranks differ");
    const size_t in_row =
        static_cast<size_t>(element_count(shape_t(s.begin() + a, s.end()))) * esize;
    if (in_row > 0 && outer > 0) pieces.push_back({k, offset, in_row});
    offset += in_row;
  }
  if (offset != out_row) return c.fail(error_code::internal, "concat sizes do not add up");
  return make_kernel([pieces, outer, out_row](kernel_run_context& ctx) -> status {
    auto* dst = static_cast<uint8_t*>(ctx.outputs[0].raw());
    for (const piece& p : pieces) {
      TROUPE_CUDA_CHECK(cudaMemcpy2DAsync(dst + p.offset, out_row, ctx.inputs[p.input].raw(),
                                          p.in_row, p.in_row, outer, cudaMemcpyDeviceToDevice,
                                          to_stream(ctx.stream)));
    }
    return status::ok();
  });
}

// ---- Split -------------------------------------------------------------------------------------

/// The outputs' sizes come from the schema (split input/attribute or num_outputs): output k is the
/// column range [offset_k, offset_k + row_k) of every one of the `outer` input rows.
expected<std::unique_ptr<kernel>> create_split(const kernel_create_context& c) {
  const shape_t& in = c.inputs[0].shape;
  auto axis = normalize_axis(c.node.attrs.get_int("axis", 0), static_cast<int64_t>(in.size()));
  if (!axis || in.empty()) return c.fail(error_code::invalid_model, "axis out of range");
  const size_t a = static_cast<size_t>(*axis);
  const size_t esize = dtype_size(c.inputs[0].type);
  size_t outer = 1;
  for (size_t d = 0; d < a; ++d) outer *= static_cast<size_t>(in[d]);
  const size_t in_row =
      static_cast<size_t>(element_count(shape_t(in.begin() + a, in.end()))) * esize;
  struct piece {
    size_t output;
    size_t offset;
    size_t out_row;
  };
  std::vector<piece> pieces;
  size_t offset = 0;
  for (size_t k = 0; k < c.outputs.size(); ++k) {
    const shape_t& s = c.outputs[k].shape;
    if (!c.outputs[k].present()) continue;
    if (s.size() != in.size()) return c.fail(error_code::internal, "split output rank differs");
    const size_t out_row =
        static_cast<size_t>(element_count(shape_t(s.begin() + a, s.end()))) * esize;
    if (out_row > 0 && outer > 0) pieces.push_back({k, offset, out_row});
    offset += out_row;
  }
  if (offset > in_row) return c.fail(error_code::internal, "split sizes exceed the input");
  return make_kernel(
      [pieces, outer, in_row](kernel_run_context& ctx) -> status {
        const auto* src = static_cast<const uint8_t*>(ctx.inputs[0].raw());
        for (const piece& p : pieces) {
          TROUPE_CUDA_CHECK(cudaMemcpy2DAsync(ctx.outputs[p.output].raw(), p.out_row,
                                              src + p.offset, in_row, p.out_row, outer,
                                              cudaMemcpyDeviceToDevice, to_stream(ctx.stream)));
        }
        return status::ok();
      },
      0, {}, false, {1});
}

// ---- Slice -------------------------------------------------------------------------------------

expected<std::vector<int64_t>> int_input(const kernel_create_context& c, size_t i) {
  const tensor* v = c.value(i);
  if (!v)
    return c.fail(error_code::unsupported, "input " + std::to_string(i) + " must be a constant");
  return v->to_int64_vector();
}

expected<std::unique_ptr<kernel>> create_slice(const kernel_create_context& c) {
  const shape_t& in = c.inputs[0].shape;
  const int64_t rank = static_cast<int64_t>(in.size());
  std::vector<int64_t> starts, ends, axes, steps;
  if (c.node.opset < 10) {
    TROUPE_ASSIGN_OR_RETURN(starts, c.node.attrs.require_ints("starts"));
    TROUPE_ASSIGN_OR_RETURN(ends, c.node.attrs.require_ints("ends"));
    axes = c.node.attrs.get_ints("axes");
  } else {
    TROUPE_ASSIGN_OR_RETURN(starts, int_input(c, 1));
    TROUPE_ASSIGN_OR_RETURN(ends, int_input(c, 2));
    if (c.has_input(3)) {
      TROUPE_ASSIGN_OR_RETURN(axes, int_input(c, 3));
    }
    if (c.has_input(4)) {
      TROUPE_ASSIGN_OR_RETURN(steps, int_input(c, 4));
    }
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (starts.size() != ends.size() || starts.size() != axes.size() || steps.size() != axes.size()) {
    return c.fail(error_code::invalid_model, "starts/ends/axes/steps lengths differ");
  }
  std::vector<int64_t> start(in.size(), 0), step(in.size(), 1);
  for (size_t i = 0; i < axes.size(); ++i) {
    auto ax = normalize_axis(axes[i], rank);
    if (!ax) return c.fail(error_code::invalid_model, ax.error().message());
    const size_t d = static_cast<size_t>(*ax);
    const int64_t dim = in[d];
    if (steps[i] == 0) return c.fail(error_code::invalid_model, "a step is 0");
    int64_t s = starts[i];
    if (s < 0) s += dim;
    s = steps[i] > 0 ? std::clamp<int64_t>(s, 0, dim)
                     : std::clamp<int64_t>(s, 0, std::max<int64_t>(dim - 1, 0));
    start[d] = s;
    step[d] = steps[i];
  }
  const shape_t& out = c.outputs[0].shape;
  if (out.size() != in.size()) return c.fail(error_code::internal, "slice output rank differs");
  if (in.size() > static_cast<size_t>(kMaxCopyRank)) {
    return c.fail(error_code::unsupported, "slice of rank above 8");
  }
  const std::vector<int64_t> strides = row_major_strides(in);
  strided_copy_plan plan;
  plan.rank = static_cast<int>(in.size());
  plan.out_elements = c.outputs[0].elements();
  for (size_t d = 0; d < in.size(); ++d) {
    plan.out_dims[d] = out[d];
    plan.in_strides[d] = step[d] * strides[d];
    if (out[d] > 0) plan.in_offset += start[d] * strides[d];
  }
  return make_strided_copy(c, plan);
}

// ---- Expand ------------------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_expand(const kernel_create_context& c) {
  const shape_t& in = c.inputs[0].shape;
  const shape_t& out = c.outputs[0].shape;
  if (in.size() > out.size() || out.size() > static_cast<size_t>(kMaxCopyRank)) {
    return c.fail(error_code::unsupported, "Expand of rank above 8");
  }
  const std::vector<int64_t> strides = row_major_strides(in);
  strided_copy_plan plan;
  plan.rank = static_cast<int>(out.size());
  plan.out_elements = c.outputs[0].elements();
  const size_t lead = out.size() - in.size();
  for (size_t d = 0; d < out.size(); ++d) {
    plan.out_dims[d] = out[d];
    if (d >= lead) {
      const int64_t dim = in[d - lead];
      if (dim != 1 && dim != out[d])
        return c.fail(error_code::invalid_model, "shapes do not broadcast");
      plan.in_strides[d] = dim == 1 ? 0 : strides[d - lead];
    }
  }
  return make_strided_copy(c, plan);
}

// ---- Pad ---------------------------------------------------------------------------------------

/// The fill value's bytes in the tensor's dtype.
expected<uint64_t> fill_bytes(dtype t, double v) {
  uint64_t bits = 0;
  switch (t) {
    case dtype::f32: {
      const float f = static_cast<float>(v);
      std::memcpy(&bits, &f, 4);
      break;
    }
    case dtype::f64:
      std::memcpy(&bits, &v, 8);
      break;
    case dtype::f16:
      bits = half_bits(static_cast<float>(v));
      break;
    case dtype::bf16:
      bits = float_to_bfloat16(static_cast<float>(v));
      break;
    case dtype::boolean:
      bits = v != 0 ? 1 : 0;
      break;
    default:
      if (!is_integer(t)) return unsupported("Pad of " + std::string(dtype_name(t)));
      {
        const int64_t i = static_cast<int64_t>(v);
        std::memcpy(&bits, &i, 8);  // little-endian: the low bytes are the narrower integer
      }
  }
  return bits;
}

expected<std::unique_ptr<kernel>> create_pad(const kernel_create_context& c) {
  const shape_t& in = c.inputs[0].shape;
  const int64_t rank = static_cast<int64_t>(in.size());
  const std::string mode = c.node.attrs.get_string("mode", "constant");
  if (mode != "constant") {
    return c.fail(error_code::unsupported, "Pad mode '" + mode + "' on the cuda backend");
  }
  std::vector<int64_t> pads, axes;
  double value = 0.0;
  bool fill_at_run = false;  // constant_value is read on the device at run time
  if (c.node.opset < 11) {
    pads = c.node.attrs.get_ints("pads");
    value = c.node.attrs.get_float("value", 0.0f);
  } else {
    TROUPE_ASSIGN_OR_RETURN(pads, int_input(c, 1));
    if (c.has_input(2)) {
      if (c.inputs[2].type != c.inputs[0].type || c.inputs[2].elements() != 1) {
        return c.fail(error_code::invalid_model,
                      "constant_value must be one element of the data's type");
      }
      if (const tensor* v = c.value(2)) {
        value = v->value_as_double(0);
      } else {
        fill_at_run = true;
      }
    }
    if (c.has_input(3)) {
      TROUPE_ASSIGN_OR_RETURN(axes, int_input(c, 3));
    }
  }
  if (axes.empty()) {
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  if (pads.size() != 2 * axes.size())
    return c.fail(error_code::invalid_model, "pads has the wrong length");
  std::vector<int64_t> begin(in.size(), 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    auto ax = normalize_axis(axes[i], rank);
    if (!ax) return c.fail(error_code::invalid_model, ax.error().message());
    begin[static_cast<size_t>(*ax)] = pads[i];
  }
  if (in.size() > static_cast<size_t>(kMaxCopyRank)) {
    return c.fail(error_code::unsupported, "Pad of rank above 8");
  }
  TROUPE_ASSIGN_OR_RETURN(uint64_t fill, fill_bytes(c.inputs[0].type, value));
  const shape_t& out = c.outputs[0].shape;
  const std::vector<int64_t> strides = row_major_strides(in);
  strided_copy_plan plan;
  plan.rank = static_cast<int>(in.size());
  plan.out_elements = c.outputs[0].elements();
  plan.bounded = true;
  plan.fill = fill;
  for (size_t d = 0; d < in.size(); ++d) {
    plan.out_dims[d] = out[d];
    plan.in_strides[d] = strides[d];
    plan.in_start[d] = -begin[d];  // negative pads crop: the start moves into the input
    plan.in_dims[d] = in[d];
  }
  if (!fill_at_run) return make_strided_copy(c, plan);
  const size_t bytes = dtype_size(c.inputs[0].type);
  return make_kernel(
      [bytes, plan](kernel_run_context& ctx) {
        return launch_strided_copy(bytes, ctx.inputs[0].raw(), ctx.outputs[0].raw(), plan,
                                   ctx.stream, ctx.inputs[2].raw());
      },
      0, {}, false, {1, 3});
}

}  // namespace

void register_tensor(kernel_registry& r) {
  for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}) {
    r.add({"", op, backend::cuda, {}, 0, {}, create_view});
  }
  const std::vector<dtype>& any = gpu_any_types();
  r.add({"", "Transpose", backend::cuda, any, 0, {}, create_transpose});
  r.add({"", "Gather", backend::cuda, any, 0, {}, create_gather});
  r.add({"", "Concat", backend::cuda, any, 0, {}, create_concat});
  r.add({"", "Split", backend::cuda, any, 0, {}, create_split});
  r.add({"", "Slice", backend::cuda, any, 0, {}, create_slice});
  r.add({"", "Expand", backend::cuda, any, 0, {}, create_expand});
  r.add({"", "Pad", backend::cuda, any, 0, {}, create_pad});
}

}  // namespace troupe::kernels::cuda
