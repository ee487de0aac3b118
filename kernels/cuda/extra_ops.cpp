// CUDA kernels for the ops the CPU backend runs and the other CUDA families do not: Resize and
// Upsample, ArgMax/ArgMin, Hardmax, TopK, Tile, DepthToSpace/SpaceToDepth, Sum/Mean, Mod, the
// trig unaries, IsInf/IsNaN, InstanceNormalization, LpNormalization, CumSum, GatherElements,
// GatherND, ScatterElements (and Scatter), ScatterND, OneHot, Range, ConstantOfShape, Shape and
// Size. Semantics follow the CPU kernels in kernels/cpu (ties, NaN order, index rules), so that
// the parity tests can demand exact index outputs. Every geometry is fixed at create time; index
// inputs are checked on the device, where an out-of-range index sets a fault bit of the context
// (cuda_context::fault_word) and fails the run at synchronize instead of touching memory outside
// a tensor. NonZero is not here: its output shape depends on the data.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/extra.cuh"
#include "kernels/cuda/tensor.cuh"
#include "kernels/op_schema.hpp"
#include "kernels/ops/reduction_params.hpp"
#include "kernels/ops/resize_taps.hpp"
#include "kernels/ops/tensor_params.hpp"

namespace troupe::kernels::cuda {
namespace {

using factory_result = expected<std::unique_ptr<kernel>>;

std::vector<int64_t> packed_strides(const shape_t& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t d = s.size(); d-- > 1;) st[d - 1] = st[d] * s[d];
  return st;
}

/// outer = product of the dims before `axis`, inner = of those after it.
void outer_inner(const shape_t& s, int64_t axis, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
    if (d < axis) *outer *= s[static_cast<size_t>(d)];
    if (d > axis) *inner *= s[static_cast<size_t>(d)];
  }
}

status copy_if_apart(const tensor& from, tensor& to, cudaStream_t s) {
  if (from.raw() == to.raw() || from.bytes() == 0) return status::ok();
  TROUPE_CUDA_CHECK(
      cudaMemcpyAsync(to.raw(), from.raw(), from.bytes(), cudaMemcpyDeviceToDevice, s));
  return status::ok();
}

const std::vector<dtype>& numeric_gpu_types() {
  static const std::vector<dtype> t{dtype::f32, dtype::f16, dtype::i32, dtype::i64};
  return t;
}

// ---- Resize / Upsample -------------------------------------------------------------------------
// The tap tables come from kernels/ops/resize_taps (the CPU kernel's too), so nearest picks the
// same input element on both backends.

/// Filters wider than this over all resized axes together (taps summed per output element) are
/// refused: antialiased cubic downscaling of a 3-D volume would make every thread loop for long.
constexpr int64_t kMaxResizeCombos = 4096;

struct resize_state {
  resize_device_plan plan;
  device_buffer offsets, weights, outside;  // the tables plan points into
  dtype type = dtype::f32;
};

factory_result create_resize(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(resize_params rp, resolve_resize(op_view(c)));
  const tensor_info& in = c.inputs[0];
  const bool interpolate = rp.mode != resize_mode::nearest;
  if (interpolate && !is_gpu_float(in.type)) {
    return c.fail(error_code::unsupported,
                  "linear/cubic resize of dtype " + std::string(dtype_name(in.type)));
  }
  const size_t elem = dtype_size(in.type);
  if (elem != 1 && elem != 2 && elem != 4 && elem != 8) {
    return c.fail(error_code::unsupported, "dtype " + std::string(dtype_name(in.type)));
  }
  const size_t rank = in.rank();
  const int64_t out_count = element_count(rp.out_shape);
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  if (rank == 0 || out_count == 0 || in.elements() == 0) {
    const size_t bytes = rank == 0 ? elem : 0;
    return make_kernel(
        [bytes](kernel_run_context& ctx) -> status {
          if (bytes == 0) return status::ok();
          TROUPE_CUDA_CHECK(cudaMemcpyAsync(ctx.outputs[0].raw(), ctx.inputs[0].raw(), bytes,
                                            cudaMemcpyDeviceToDevice, to_stream(ctx.stream)));
          return status::ok();
        },
        0, {}, false, inputs_from(1, c.inputs.size()));
  }
  const auto strides = packed_strides(in.shape);
  std::vector<axis_taps> taps;
  for (size_t d = 0; d < rank; ++d) {
    taps.push_back(make_resize_axis(rp, d, in.shape[d], rp.out_shape[d], strides[d]));
  }
  // Leading axes that map every coordinate to itself fold into the batch.
  size_t lead = 0;
  while (lead + 1 < rank &&
         resize_axis_is_identity(taps[lead], in.shape[lead], rp.out_shape[lead], strides[lead])) {
    ++lead;
  }
  if (rank - lead > static_cast<size_t>(kMaxExtraRank)) {
    return c.fail(error_code::unsupported, "resize over more than 8 axes");
  }
  auto state = std::make_shared<resize_state>();
  state->type = in.type;
  resize_device_plan& p = state->plan;
  p.rank = static_cast<int>(rank - lead);
  p.interpolate = interpolate;
  p.extrapolation = rp.extrapolation_value;
  if (in.type == dtype::f16) {
    p.extrapolation_bytes = half_bits(rp.extrapolation_value);
  } else if (in.type == dtype::f32) {
    std::memcpy(&p.extrapolation_bytes, &rp.extrapolation_value, 4);
  }  // other dtypes: nearest only, tf_crop_and_resize's extrapolation then reads as 0 bits
  int64_t combos = 1;
  std::vector<int64_t> offsets;
  std::vector<float> weights;
  std::vector<uint8_t> outside;
  p.batch = 1;
  for (size_t d = 0; d < lead; ++d) p.batch *= in.shape[d];
  p.in_plane = 1;
  p.out_plane = 1;
  for (size_t d = lead; d < rank; ++d) {
    const size_t i = d - lead;
    const axis_taps& a = taps[d];
    p.in_plane *= in.shape[d];
    p.out_plane *= rp.out_shape[d];
    p.out_dims[i] = rp.out_shape[d];
    p.k[i] = a.k;
    p.table[i] = static_cast<int64_t>(offsets.size());
    p.outside_at[i] = static_cast<int64_t>(outside.size());
    offsets.insert(offsets.end(), a.offset.begin(), a.offset.end());
    weights.insert(weights.end(), a.weight.begin(), a.weight.end());
    outside.insert(outside.end(), a.outside.begin(), a.outside.end());
    p.any_outside |= a.any_outside;
    combos *= a.k;
    if (combos > kMaxResizeCombos) {
      return c.fail(error_code::unsupported, "an interpolation filter this wide over these axes");
    }
  }
  // The tables' offsets use the input's row-major strides; on the resized (inner) axes these are
  // the strides within one batch plane.
  TROUPE_ASSIGN_OR_RETURN(state->offsets, device_buffer::upload(*cctx, offsets.data(),
                                                                offsets.size() * sizeof(int64_t)));
  TROUPE_ASSIGN_OR_RETURN(
      state->weights, device_buffer::upload(*cctx, weights.data(), weights.size() * sizeof(float)));
  TROUPE_ASSIGN_OR_RETURN(state->outside,
                          device_buffer::upload(*cctx, outside.data(), outside.size()));
  p.offsets = static_cast<const int64_t*>(state->offsets.get());
  p.weights = static_cast<const float*>(state->weights.get());
  p.outside = static_cast<const uint8_t*>(state->outside.get());
  return make_kernel(
      [state](kernel_run_context& ctx) {
        return launch_resize(state->type, ctx.inputs[0].raw(), ctx.outputs[0].raw(), state->plan,
                             ctx.stream);
      },
      0, {}, false, inputs_from(1, c.inputs.size()));
}

// ---- ArgMax / ArgMin / Hardmax / TopK ----------------------------------------------------------

template <bool IsMax>
factory_result create_arg_reduce(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(arg_reduce_params p, resolve_arg_reduce(reduction_view(c)));
  int64_t outer = 1, inner = 1;
  outer_inner(c.inputs[0].shape, p.axis, &outer, &inner);
  const int64_t n = c.inputs[0].shape[static_cast<size_t>(p.axis)];
  if (n == 0 && outer * inner > 0) {
    return c.fail(error_code::invalid_model, "arg reduction over an empty axis");
  }
  const dtype t = c.inputs[0].type;
  const bool last = p.select_last_index;
  return make_kernel([=](kernel_run_context& ctx) {
    return launch_arg_reduce(t, IsMax, last, ctx.inputs[0].raw(), ctx.outputs[0].data<int64_t>(),
                             outer, n, inner, ctx.stream);
  });
}

factory_result create_hardmax(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(softmax_params p, resolve_softmax(reduction_view(c)));
  const dtype t = c.inputs[0].type;
  const int64_t outer = p.outer, n = p.axis_size, inner = p.inner;
  const size_t ws = static_cast<size_t>(outer * inner) * sizeof(int64_t);
  return make_kernel(
      [=](kernel_run_context& ctx) -> status {
        if (outer * n * inner == 0) return status::ok();
        auto* index = static_cast<int64_t*>(ctx.workspace);
        TROUPE_RETURN_IF_ERROR(launch_arg_reduce(t, true, false, ctx.inputs[0].raw(), index, outer,
                                                 n, inner, ctx.stream));
        return launch_one_hot_rows(t, index, ctx.outputs[0].raw(), outer, n, inner, ctx.stream);
      },
      ws);
}

factory_result create_topk(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(topk_params tp, resolve_topk(reduction_view(c)));
  if (c.outputs.size() < 2 || c.outputs[1].type != dtype::i64) {
    return c.fail(error_code::invalid_model, "TopK has two outputs, the second int64");
  }
  if (tp.k > kMaxTopK) {
    return c.fail(error_code::unsupported, "k = " + std::to_string(tp.k) + " above 1024");
  }
  topk_plan p;
  outer_inner(c.inputs[0].shape, tp.axis, &p.outer, &p.inner);
  p.n = c.inputs[0].shape[static_cast<size_t>(tp.axis)];
  p.k = tp.k;
  p.largest = tp.largest;
  const dtype t = c.inputs[0].type;
  return make_kernel(
      [=](kernel_run_context& ctx) {
        return launch_topk(t, p, ctx.inputs[0].raw(), ctx.outputs[0].raw(),
                           ctx.outputs[1].data<int64_t>(), ctx.workspace, ctx.stream);
      },
      topk_workspace_bytes(t, p), {}, false, {1});
}

// ---- Tile / DepthToSpace / SpaceToDepth --------------------------------------------------------

factory_result create_tile(const kernel_create_context& c) {
  const tensor_info& in = c.inputs[0];
  const tensor_info& out = c.outputs[0];
  if (out.rank() != in.rank()) return c.fail(error_code::internal, "Tile ranks differ");
  // Axes of size 1 that are not repeated drop out; the kernel's loop is per axis.
  tile_plan p;
  const auto strides = packed_strides(in.shape);
  for (size_t d = 0; d < in.rank(); ++d) {
    if (in.shape[d] == 1 && out.shape[d] == 1) continue;
    if (p.rank == kMaxExtraRank) return c.fail(error_code::unsupported, "Tile of rank above 8");
    p.out_dims[p.rank] = out.shape[d];
    p.in_dims[p.rank] = in.shape[d];
    p.in_strides[p.rank] = strides[d];
    ++p.rank;
  }
  p.out_elements = out.elements();
  if (in.elements() == 0) p.out_elements = 0;
  if (p.rank == 0) {  // one element
    p.rank = 1;
    p.out_dims[0] = p.in_dims[0] = 1;
    p.in_strides[0] = 1;
  }
  const size_t bytes = dtype_size(in.type);
  return make_kernel(
      [bytes, p](kernel_run_context& ctx) {
        return launch_tile(bytes, ctx.inputs[0].raw(), ctx.outputs[0].raw(), p, ctx.stream);
      },
      0, {}, false, {1});
}

/// A transpose of `view` (the input's bytes under another shape) by `perm`.
factory_result view_transpose(const kernel_create_context& c, const shape_t& view,
                              const std::vector<int64_t>& perm) {
  if (element_count(view) != c.inputs[0].elements() ||
      c.outputs[0].elements() != element_count(view)) {
    return c.fail(error_code::invalid_model, "blocksize does not divide the input");
  }
  const auto strides = packed_strides(view);
  strided_copy_plan plan;
  plan.rank = static_cast<int>(view.size());
  plan.out_elements = c.outputs[0].elements();
  for (size_t i = 0; i < view.size(); ++i) {
    plan.out_dims[i] = view[static_cast<size_t>(perm[i])];
    plan.in_strides[i] = strides[static_cast<size_t>(perm[i])];
  }
  const size_t bytes = dtype_size(c.inputs[0].type);
  return make_kernel([bytes, plan](kernel_run_context& ctx) {
    return launch_strided_copy(bytes, ctx.inputs[0].raw(), ctx.outputs[0].raw(), plan, ctx.stream);
  });
}

expected<int64_t> blocksize_of(const kernel_create_context& c) {
  const int64_t b = c.node.attrs.get_int("blocksize", 0);
  if (b < 1) return c.fail(error_code::invalid_model, "blocksize must be positive");
  if (c.inputs[0].rank() != 4) return c.fail(error_code::invalid_model, "input must be 4-D");
  return b;
}

factory_result create_depth_to_space(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(int64_t b, blocksize_of(c));
  const shape_t& s = c.inputs[0].shape;
  const bool crd = c.node.attrs.get_string("mode", "DCR") == "CRD";
  const int64_t n = s[0], ch = s[1] / (b * b), h = s[2], w = s[3];
  const shape_t view = crd ? shape_t{n, ch, b, b, h, w} : shape_t{n, b, b, ch, h, w};
  const std::vector<int64_t> perm =
      crd ? std::vector<int64_t>{0, 1, 4, 2, 5, 3} : std::vector<int64_t>{0, 3, 4, 1, 5, 2};
  return view_transpose(c, view, perm);
}

factory_result create_space_to_depth(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(int64_t b, blocksize_of(c));
  const shape_t& s = c.inputs[0].shape;
  return view_transpose(c, {s[0], s[1], s[2] / b, b, s[3] / b, b}, {0, 3, 5, 1, 2, 4});
}

// ---- Sum / Mean / Mod --------------------------------------------------------------------------

/// Plans of inputs [first, first + count) broadcast to the output (right-aligned numpy rules).
expected<nary_plan> make_nary(const kernel_create_context& c, size_t first, size_t count) {
  const shape_t& out = c.outputs[0].shape;
  if (out.size() > static_cast<size_t>(kMaxExtraRank)) {
    return c.fail(error_code::unsupported, "broadcast of rank above 8");
  }
  nary_plan p;
  p.rank = static_cast<int>(out.size());
  p.inputs = static_cast<int>(count);
  p.out_elements = c.outputs[0].elements();
  for (size_t d = 0; d < out.size(); ++d) p.out_dims[d] = out[d];
  for (size_t k = 0; k < count; ++k) {
    const shape_t& s = c.inputs[first + k].shape;
    if (s.size() > out.size()) return c.fail(error_code::invalid_model, "an input outranks Y");
    const auto st = packed_strides(s);
    const size_t lead = out.size() - s.size();
    for (size_t d = lead; d < out.size(); ++d) {
      const int64_t dim = s[d - lead];
      if (dim != 1 && dim != out[d]) {
        return c.fail(error_code::invalid_model, "shapes do not broadcast");
      }
      p.strides[k][d] = dim == 1 ? 0 : st[d - lead];
    }
  }
  if (p.rank == 0) {
    p.rank = 1;
    p.out_dims[0] = 1;
  }
  return p;
}

factory_result create_sum(const kernel_create_context& c, bool mean) {
  const size_t n = c.inputs.size();
  if (n == 0) return c.fail(error_code::invalid_model, "no inputs");
  for (size_t i = 0; i < n; ++i) {
    if (!c.has_input(i) || c.inputs[i].type != c.inputs[0].type) {
      return c.fail(error_code::invalid_model, "inputs must be present and of one dtype");
    }
  }
  struct chunk {
    size_t first;
    nary_plan plan;
  };
  std::vector<chunk> chunks;
  for (size_t first = 0; first < n; first += kMaxNaryInputs) {
    const size_t count = std::min<size_t>(kMaxNaryInputs, n - first);
    TROUPE_ASSIGN_OR_RETURN(nary_plan p, make_nary(c, first, count));
    chunks.push_back({first, p});
  }
  const dtype t = c.inputs[0].type;
  const float scale = mean ? 1.0f / static_cast<float>(n) : 1.0f;
  return make_kernel([chunks, t, scale](kernel_run_context& ctx) -> status {
    for (size_t i = 0; i < chunks.size(); ++i) {
      const void* ptrs[kMaxNaryInputs] = {};
      for (int k = 0; k < chunks[i].plan.inputs; ++k)
        ptrs[k] = ctx.inputs[chunks[i].first + static_cast<size_t>(k)].raw();
      const bool last = i + 1 == chunks.size();
      TROUPE_RETURN_IF_ERROR(launch_sum(t, ptrs, ctx.outputs[0].raw(), chunks[i].plan, i > 0,
                                        last ? scale : 1.0f, ctx.stream));
    }
    return status::ok();
  });
}

factory_result create_mod(const kernel_create_context& c) {
  if (c.inputs.size() != 2 || c.inputs[1].type != c.inputs[0].type) {
    return c.fail(error_code::invalid_model, "Mod takes two inputs of one dtype");
  }
  TROUPE_ASSIGN_OR_RETURN(nary_plan p, make_nary(c, 0, 2));
  const bool c_style = c.node.attrs.get_int("fmod", 0) != 0;
  const dtype t = c.inputs[0].type;
  return make_kernel([=](kernel_run_context& ctx) {
    return launch_mod(t, c_style, ctx.inputs[0].raw(), ctx.inputs[1].raw(), ctx.outputs[0].raw(), p,
                      ctx.stream);
  });
}

// ---- unaries -----------------------------------------------------------------------------------

kernel_factory unary_factory(extra_unary op) {
  return [op](const kernel_create_context& c) -> factory_result {
    const dtype t = c.inputs[0].type;
    const int64_t n = c.inputs[0].elements();
    return make_kernel(
        [=](kernel_run_context& ctx) {
          return launch_extra_unary(op, t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), n,
                                    ctx.stream);
        },
        0, {{0, 0}});
  };
}

factory_result create_float_class(const kernel_create_context& c) {
  const bool is_nan = c.node.op_type == "IsNaN";
  const bool pos = c.node.attrs.get_int("detect_positive", 1) != 0;
  const bool neg = c.node.attrs.get_int("detect_negative", 1) != 0;
  const dtype t = c.inputs[0].type;
  const int64_t n = c.inputs[0].elements();
  return make_kernel([=](kernel_run_context& ctx) {
    return launch_float_class(t, is_nan, pos, neg, ctx.inputs[0].raw(),
                              static_cast<uint8_t*>(ctx.outputs[0].raw()), n, ctx.stream);
  });
}

// ---- InstanceNormalization / LpNormalization / CumSum ------------------------------------------

factory_result create_instance_norm(const kernel_create_context& c) {
  const shape_t& xs = c.inputs[0].shape;
  if (xs.size() < 2) return c.fail(error_code::invalid_model, "X must have rank >= 2");
  const dtype t = c.inputs[0].type;
  const int64_t channels = xs[1];
  for (size_t i = 1; i <= 2; ++i) {
    if (!c.has_input(i) || c.inputs[i].type != t || c.inputs[i].elements() != channels) {
      return c.fail(error_code::invalid_model,
                    "scale and B must be X's dtype with one value per channel");
    }
  }
  const int64_t planes = xs[0] * channels;
  const int64_t inner = element_count(shape_t(xs.begin() + 2, xs.end()));
  const float epsilon = c.node.attrs.get_float("epsilon", 1e-5f);
  return make_kernel(
      [=](kernel_run_context& ctx) {
        return launch_instance_norm(t, ctx.inputs[0].raw(), ctx.inputs[1].raw(),
                                    ctx.inputs[2].raw(), ctx.outputs[0].raw(), planes, channels,
                                    inner, epsilon, ctx.stream);
      },
      0, {{0, 0}});
}

factory_result create_lp_norm(const kernel_create_context& c) {
  const shape_t& xs = c.inputs[0].shape;
  if (xs.empty()) return c.fail(error_code::invalid_model, "X must have rank >= 1");
  TROUPE_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(c.node.attrs.get_int("axis", -1),
                                                       static_cast<int64_t>(xs.size())));
  const int64_t p = c.node.attrs.get_int("p", 2);
  if (p != 1 && p != 2) return c.fail(error_code::invalid_model, "p must be 1 or 2");
  int64_t outer = 1, inner = 1;
  outer_inner(xs, axis, &outer, &inner);
  const int64_t len = xs[static_cast<size_t>(axis)];
  const dtype t = c.inputs[0].type;
  return make_kernel(
      [=](kernel_run_context& ctx) {
        return launch_lp_norm(t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), outer, len, inner,
                              static_cast<int>(p), ctx.stream);
      },
      0, {{0, 0}});
}

factory_result create_cumsum(const kernel_create_context& c) {
  const shape_t& s = c.inputs[0].shape;
  if (!c.has_input(1) || c.inputs[1].elements() != 1) {
    return c.fail(error_code::invalid_model, "axis must be a one-element tensor");
  }
  const tensor* a = c.value(1);
  if (!a) {
    // Reading a device scalar would need a synchronisation inside compute.
    return c.fail(error_code::unsupported, "CumSum with an axis computed at run time");
  }
  const int64_t rank = static_cast<int64_t>(s.size());
  int64_t axis = a->value_as_int64(0);
  if (rank == 0 && (axis == 0 || axis == -1)) {
    axis = 0;
  } else {
    auto ax = normalize_axis(axis, rank);
    if (!ax) return c.fail(error_code::invalid_model, ax.error().message());
    axis = *ax;
  }
  int64_t outer = 1, inner = 1;
  outer_inner(s, axis, &outer, &inner);
  const int64_t n = rank == 0 ? 1 : s[static_cast<size_t>(axis)];
  const bool exclusive = c.node.attrs.get_int("exclusive", 0) != 0;
  const bool reverse = c.node.attrs.get_int("reverse", 0) != 0;
  const dtype t = c.inputs[0].type;
  return make_kernel(
      [=](kernel_run_context& ctx) {
        return launch_cumsum(t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), outer, n, inner,
                             exclusive, reverse, ctx.stream);
      },
      0, {{0, 0}}, false, {1});
}

// ---- GatherElements / ScatterElements / GatherND / ScatterND -----------------------------------

expected<element_index_plan> element_plan(const kernel_create_context& c) {
  const tensor_info& data = c.inputs[0];
  const tensor_info& idx = c.inputs[1];
  if (idx.type != dtype::i64 && idx.type != dtype::i32) {
    return c.fail(error_code::invalid_model, "indices must be int32 or int64");
  }
  if (idx.rank() != data.rank()) {
    return c.fail(error_code::invalid_model, "indices and data ranks differ");
  }
  if (data.rank() > static_cast<size_t>(kMaxExtraRank) || data.rank() == 0) {
    return c.fail(error_code::unsupported, "rank 0 or above 8");
  }
  auto axis = normalize_axis(c.node.attrs.get_int("axis", 0), static_cast<int64_t>(data.rank()));
  if (!axis) return c.fail(error_code::invalid_model, axis.error().message());
  element_index_plan p;
  p.rank = static_cast<int>(data.rank());
  p.axis = static_cast<int>(*axis);
  p.count = idx.elements();
  const auto strides = packed_strides(data.shape);
  for (size_t d = 0; d < data.rank(); ++d) {
    p.idx_dims[d] = idx.shape[d];
    p.data_strides[d] = strides[d];
    // Coordinates on the other axes address data directly: they must lie inside it.
    if (static_cast<int>(d) != p.axis && idx.shape[d] > data.shape[d]) {
      return c.fail(error_code::invalid_model, "indices exceed data on a non-indexed axis");
    }
  }
  p.axis_dim = data.shape[static_cast<size_t>(p.axis)];
  return p;
}

factory_result create_gather_elements(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(element_index_plan p, element_plan(c));
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  uint32_t* fault_word = cctx->fault_word();
  const size_t bytes = dtype_size(c.inputs[0].type);
  const bool is64 = c.inputs[1].type == dtype::i64;
  return make_kernel([=](kernel_run_context& ctx) {
    return launch_gather_elements(bytes, ctx.inputs[0].raw(), ctx.inputs[1].raw(), is64,
                                  ctx.outputs[0].raw(), p, fault_word, fault_gather_elements_index,
                                  ctx.stream);
  });
}

expected<scatter_reduction> reduction_of(const kernel_create_context& c) {
  const std::string r = c.node.attrs.get_string("reduction", "none");
  scatter_reduction red = scatter_reduction::none;
  if (r == "add") {
    red = scatter_reduction::add;
  } else if (r == "mul") {
    red = scatter_reduction::mul;
  } else if (r == "max") {
    red = scatter_reduction::max;
  } else if (r == "min") {
    red = scatter_reduction::min;
  } else if (r != "none") {
    return c.fail(error_code::invalid_model, "unknown reduction '" + r + "'");
  }
  const dtype t = c.inputs[0].type;
  if (red != scatter_reduction::none && t != dtype::f32 && t != dtype::i32 && t != dtype::i64) {
    return c.fail(error_code::unsupported,
                  "reduction '" + r + "' on dtype " + std::string(dtype_name(t)));
  }
  const size_t elem = dtype_size(t);
  if (elem != 1 && elem != 2 && elem != 4 && elem != 8) {
    return c.fail(error_code::unsupported, "dtype " + std::string(dtype_name(t)));
  }
  if (c.inputs.size() < 3 || c.inputs[2].type != t) {
    return c.fail(error_code::invalid_model, "updates must have data's dtype");
  }
  return red;
}

factory_result create_scatter_elements(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(scatter_reduction red, reduction_of(c));
  TROUPE_ASSIGN_OR_RETURN(element_index_plan p, element_plan(c));
  if (c.inputs[2].shape != c.inputs[1].shape) {
    return c.fail(error_code::invalid_model, "updates and indices shapes differ");
  }
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  uint32_t* fault_word = cctx->fault_word();
  const dtype t = c.inputs[0].type;
  const bool is64 = c.inputs[1].type == dtype::i64;
  const int64_t data_elements = c.inputs[0].elements();
  const size_t ws =
      red == scatter_reduction::none ? static_cast<size_t>(data_elements) * sizeof(int64_t) : 0;
  return make_kernel(
      [=](kernel_run_context& ctx) -> status {
        TROUPE_RETURN_IF_ERROR(copy_if_apart(ctx.inputs[0], ctx.outputs[0], to_stream(ctx.stream)));
        return launch_scatter_elements(t, ctx.inputs[1].raw(), is64, ctx.inputs[2].raw(),
                                       ctx.outputs[0].raw(), p, red,
                                       static_cast<int64_t*>(ctx.workspace), data_elements,
                                       fault_word, fault_scatter_elements_index, ctx.stream);
      },
      ws, {{0, 0}});
}

factory_result create_gather_nd(const kernel_create_context& c) {
  const tensor_info& data = c.inputs[0];
  const tensor_info& idx = c.inputs[1];
  if (idx.type != dtype::i64) return c.fail(error_code::invalid_model, "indices must be int64");
  if (idx.rank() < 1) return c.fail(error_code::invalid_model, "indices must have rank >= 1");
  const int64_t b = c.node.attrs.get_int("batch_dims", 0);
  const int64_t k = idx.shape.back();
  const int64_t rank = static_cast<int64_t>(data.rank());
  if (b < 0 || k < 0 || b + k > rank || k > kMaxExtraRank) {
    return c.fail(error_code::invalid_model, "batch_dims + index length exceed data's rank");
  }
  nd_index_plan p;
  p.k = static_cast<int>(k);
  int64_t batches = 1;
  for (int64_t d = 0; d < b; ++d) batches *= data.shape[static_cast<size_t>(d)];
  for (int64_t d = b + k; d < rank; ++d) p.slice *= data.shape[static_cast<size_t>(d)];
  p.tuples =
      k == 0 ? element_count(shape_t(idx.shape.begin(), idx.shape.end() - 1)) : idx.elements() / k;
  p.per_batch = batches == 0 ? 1 : std::max<int64_t>(1, p.tuples / batches);
  const auto strides = packed_strides(data.shape);
  p.batch_stride = b == 0 ? 0 : strides[static_cast<size_t>(b - 1)];
  for (int64_t j = 0; j < k; ++j) {
    p.dims[j] = data.shape[static_cast<size_t>(b + j)];
    p.dim_strides[j] = strides[static_cast<size_t>(b + j)];
  }
  if (p.tuples * p.slice != c.outputs[0].elements()) {
    return c.fail(error_code::internal, "GatherND output size does not match its plan");
  }
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  uint32_t* fault_word = cctx->fault_word();
  const size_t bytes = dtype_size(data.type);
  return make_kernel([=](kernel_run_context& ctx) {
    return launch_gather_nd(bytes, ctx.inputs[0].raw(), ctx.inputs[1].data<int64_t>(),
                            ctx.outputs[0].raw(), p, fault_word, fault_gather_nd_index, ctx.stream);
  });
}

factory_result create_scatter_nd(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(scatter_reduction red, reduction_of(c));
  const tensor_info& data = c.inputs[0];
  const tensor_info& idx = c.inputs[1];
  if (idx.type != dtype::i64) return c.fail(error_code::invalid_model, "indices must be int64");
  if (idx.rank() < 1) return c.fail(error_code::invalid_model, "indices must have rank >= 1");
  const int64_t k = idx.shape.back();
  const int64_t rank = static_cast<int64_t>(data.rank());
  if (k < 0 || k > rank || k > kMaxExtraRank) {
    return c.fail(error_code::invalid_model, "index length exceeds data's rank");
  }
  nd_index_plan p;
  p.k = static_cast<int>(k);
  for (int64_t d = k; d < rank; ++d) p.slice *= data.shape[static_cast<size_t>(d)];
  p.tuples =
      k == 0 ? element_count(shape_t(idx.shape.begin(), idx.shape.end() - 1)) : idx.elements() / k;
  p.per_batch = std::max<int64_t>(1, p.tuples);
  const auto strides = packed_strides(data.shape);
  for (int64_t j = 0; j < k; ++j) {
    p.dims[j] = data.shape[static_cast<size_t>(j)];
    p.dim_strides[j] = strides[static_cast<size_t>(j)];
  }
  if (c.inputs[2].elements() != p.tuples * p.slice) {
    return c.fail(error_code::invalid_model, "updates do not match indices and data");
  }
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  uint32_t* fault_word = cctx->fault_word();
  const dtype t = data.type;
  const int64_t data_slices = p.slice == 0 ? 0 : data.elements() / p.slice;
  const size_t ws =
      red == scatter_reduction::none ? static_cast<size_t>(data_slices) * sizeof(int64_t) : 0;
  return make_kernel(
      [=](kernel_run_context& ctx) -> status {
        TROUPE_RETURN_IF_ERROR(copy_if_apart(ctx.inputs[0], ctx.outputs[0], to_stream(ctx.stream)));
        return launch_scatter_nd(t, ctx.inputs[1].data<int64_t>(), ctx.inputs[2].raw(),
                                 ctx.outputs[0].raw(), p, red, static_cast<int64_t*>(ctx.workspace),
                                 data_slices, fault_word, fault_scatter_nd_index, ctx.stream);
      },
      ws, {{0, 0}});
}

// ---- OneHot ------------------------------------------------------------------------------------

factory_result create_one_hot(const kernel_create_context& c) {
  const tensor_info& out = c.outputs[0];
  const tensor_info& idx = c.inputs[0];
  const int64_t out_rank = static_cast<int64_t>(out.rank());
  int64_t axis = c.node.attrs.get_int("axis", -1);
  if (axis < 0) axis += out_rank;
  if (axis < 0 || axis >= out_rank) return c.fail(error_code::invalid_model, "axis out of range");
  if (c.inputs.size() < 3 || c.inputs[2].elements() != 2 || c.inputs[2].type != out.type) {
    return c.fail(error_code::invalid_model, "values must hold two elements of the output dtype");
  }
  const int64_t depth = out.shape[static_cast<size_t>(axis)];
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis); d < idx.rank(); ++d) inner *= idx.shape[d];
  const int64_t outer = inner == 0 ? 0 : idx.elements() / inner;
  const dtype it = idx.type;
  const size_t elem = dtype_size(out.type);
  return make_kernel(
      [=](kernel_run_context& ctx) {
        return launch_one_hot(it, ctx.inputs[0].raw(), ctx.inputs[2].raw(), elem,
                              ctx.outputs[0].raw(), outer, depth, inner, ctx.stream);
      },
      0, {}, false, {1});
}

// ---- Range / ConstantOfShape / Shape / Size ----------------------------------------------------

factory_result create_range(const kernel_create_context& c) {
  const tensor* start = c.value(0);
  const tensor* delta = c.value(2);
  if (!start || !delta) {
    return c.fail(error_code::unsupported, "Range with start or delta computed at run time");
  }
  const dtype t = c.outputs[0].type;
  if (start->type() != t || delta->type() != t || start->elements() != 1 ||
      delta->elements() != 1) {
    return c.fail(error_code::invalid_model, "start and delta must be scalars of one dtype");
  }
  uint64_t start_bits = 0, delta_bits = 0;
  std::memcpy(&start_bits, start->raw(), dtype_size(t));
  std::memcpy(&delta_bits, delta->raw(), dtype_size(t));
  const int64_t n = c.outputs[0].elements();
  return make_kernel(
      [=](kernel_run_context& ctx) {
        return launch_range(t, start_bits, delta_bits, ctx.outputs[0].raw(), n, ctx.stream);
      },
      0, {}, false, {0, 1, 2});
}

factory_result create_constant_of_shape(const kernel_create_context& c) {
  uint64_t bits = 0;  // the default: float 0
  size_t elem = 4;
  if (const tensor* t = c.node.attrs.find_tensor("value")) {
    if (t->elements() != 1) return c.fail(error_code::invalid_model, "value must hold one element");
    elem = dtype_size(t->type());
    if (elem > 8) return c.fail(error_code::unsupported, "value of a wide dtype");
    std::memcpy(&bits, t->raw(), elem);
  }
  if (dtype_size(c.outputs[0].type) != elem) {
    return c.fail(error_code::internal, "ConstantOfShape output dtype does not match value");
  }
  const int64_t n = c.outputs[0].elements();
  return make_kernel(
      [=](kernel_run_context& ctx) {
        return launch_fill(elem, bits, ctx.outputs[0].raw(), n, ctx.stream);
      },
      0, {}, false, {0});
}

/// Shape and Size: values known from shapes at create time, uploaded once and copied per run.
factory_result fixed_int64_kernel(const kernel_create_context& c, const std::vector<int64_t>& v) {
  if (static_cast<int64_t>(v.size()) != c.outputs[0].elements() ||
      c.outputs[0].type != dtype::i64) {
    return c.fail(error_code::internal, "output does not match the values");
  }
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  if (v.empty()) return make_kernel([](kernel_run_context&) { return status::ok(); });
  auto buf = std::make_shared<device_buffer>();
  TROUPE_ASSIGN_OR_RETURN(*buf, device_buffer::upload(*cctx, v.data(), v.size() * sizeof(int64_t)));
  const size_t bytes = v.size() * sizeof(int64_t);
  return make_kernel(
      [buf, bytes](kernel_run_context& ctx) -> status {
        TROUPE_CUDA_CHECK(cudaMemcpyAsync(ctx.outputs[0].raw(), buf->get(), bytes,
                                          cudaMemcpyDeviceToDevice, to_stream(ctx.stream)));
        return status::ok();
      },
      0, {}, false, {0});
}

factory_result create_shape(const kernel_create_context& c) {
  const shape_t& s = c.inputs[0].shape;
  const auto [start, end] = shape_op_range(c.node, static_cast<int64_t>(s.size()));
  std::vector<int64_t> dims;
  for (int64_t i = start; i < end; ++i) dims.push_back(s[static_cast<size_t>(i)]);
  return fixed_int64_kernel(c, dims);
}

factory_result create_size(const kernel_create_context& c) {
  return fixed_int64_kernel(c, {c.inputs[0].elements()});
}

}  // namespace

void register_extra(kernel_registry& r) {
  const std::vector<dtype>& any = gpu_any_types();
  const std::vector<dtype>& floats = gpu_float_types();
  const std::vector<dtype>& numeric = numeric_gpu_types();
  r.add({"", "Resize", backend::cuda, any, 0, {}, create_resize});
  r.add({"", "Upsample", backend::cuda, any, 0, {}, create_resize});
  r.add({"", "ArgMax", backend::cuda, numeric, 0, {}, create_arg_reduce<true>});
  r.add({"", "ArgMin", backend::cuda, numeric, 0, {}, create_arg_reduce<false>});
  r.add({"", "Hardmax", backend::cuda, floats, 0, {}, create_hardmax});
  r.add({"", "TopK", backend::cuda, numeric, 0, {}, create_topk});
  r.add({"", "Tile", backend::cuda, any, 0, {}, create_tile});
  r.add({"", "DepthToSpace", backend::cuda, any, 0, {}, create_depth_to_space});
  r.add({"", "SpaceToDepth", backend::cuda, any, 0, {}, create_space_to_depth});
  r.add({"", "Sum", backend::cuda, numeric, 0, {}, [](const kernel_create_context& c) {
           return create_sum(c, false);
         }});
  r.add({"", "Mean", backend::cuda, floats, 0, {}, [](const kernel_create_context& c) {
           return create_sum(c, true);
         }});
  r.add({"", "Mod", backend::cuda, numeric, 0, {}, create_mod});
  const std::pair<const char*, extra_unary> unaries[] = {
      {"Acos", extra_unary::acos},   {"Acosh", extra_unary::acosh}, {"Asin", extra_unary::asin},
      {"Asinh", extra_unary::asinh}, {"Atan", extra_unary::atan},   {"Atanh", extra_unary::atanh},
      {"Cosh", extra_unary::cosh},   {"Sinh", extra_unary::sinh},   {"Tan", extra_unary::tan},
  };
  for (const auto& [name, op] : unaries) {
    r.add({"", name, backend::cuda, floats, 0, {}, unary_factory(op)});
  }
  r.add({"", "IsInf", backend::cuda, floats, 0, {}, create_float_class});
  r.add({"", "IsNaN", backend::cuda, floats, 0, {}, create_float_class});
  r.add({"", "InstanceNormalization", backend::cuda, floats, 0, {}, create_instance_norm});
  r.add({"", "LpNormalization", backend::cuda, floats, 0, {}, create_lp_norm});
  r.add({"", "CumSum", backend::cuda, numeric, 0, {}, create_cumsum});
  r.add({"", "GatherElements", backend::cuda, any, 0, {}, create_gather_elements});
  r.add({"", "GatherND", backend::cuda, any, 0, {}, create_gather_nd});
  r.add({"", "ScatterElements", backend::cuda, any, 0, {}, create_scatter_elements});
  r.add({"", "Scatter", backend::cuda, any, 0, {}, create_scatter_elements});
  r.add({"", "ScatterND", backend::cuda, any, 0, {}, create_scatter_nd});
  r.add({"",
         "OneHot",
         backend::cuda,
         {dtype::i64, dtype::i32, dtype::f32, dtype::f16},
         0,
         {},
         create_one_hot});
  r.add({"", "Range", backend::cuda, {dtype::f32, dtype::i32, dtype::i64}, 0, {}, create_range});
  r.add({"",
         "ConstantOfShape",
         backend::cuda,
         {dtype::i64, dtype::i32},
         0,
         {},
         create_constant_of_shape});
  r.add({"", "Shape", backend::cuda, {}, 0, {}, create_shape});
  r.add({"", "Size", backend::cuda, {}, 0, {}, create_size});
}

}  // namespace troupe::kernels::cuda
