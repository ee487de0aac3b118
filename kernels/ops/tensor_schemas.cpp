// Shape/type inference for data-movement and shape ops, and the resolvers of tensor_params.hpp.
// Shapes are concrete: value-dependent ops (Reshape, Slice, Pad, Resize...) read their shape inputs
// here and ask for them to be plan-time constants when they are not.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "kernels/ops/tensor_params.hpp"

namespace troupe::kernels {

// ---- op_view and shared checks ---------------------------------------------------------------

status op_view::bad(const std::string& what) const {
  return invalid_model(node.describe() + ": " + what);
}
status op_view::unsupported_case(const std::string& what) const {
  return unsupported(node.describe() + ": " + what);
}
status op_view::needs_constant(size_t i) const {
  return unsupported(node.describe() + ": input " + std::to_string(i) +
                     " must be known when the plan is built (a constant or computed from shapes)");
}

std::pair<int64_t, int64_t> shape_op_range(const op_node& node, int64_t rank) {
  int64_t start = node.attrs.get_int("start", 0);
  int64_t end = node.attrs.get_int("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  return {std::clamp<int64_t>(start, 0, rank), std::clamp<int64_t>(end, 0, rank)};
}

expected<int64_t> checked_element_count(const shape_t& shape) {
  constexpr int64_t limit = int64_t{1} << 62;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return invalid_model("negative dimension in shape " + shape_to_string(shape));
    if (d != 0 && n > limit / d) {
      return invalid_model("shape " + shape_to_string(shape) + " has too many elements");
    }
    n *= d;
  }
  return n;
}

namespace {

using infos = std::vector<tensor_info>;

status check_shape(const op_view& v, const shape_t& shape) {
  auto n = checked_element_count(shape);
  if (!n) return v.bad(n.error().message());
  return status::ok();
}

/// An integer list from a plan-time value (rank 0 or 1, integer dtype).
expected<std::vector<int64_t>> int_list_input(const op_view& v, size_t i, const char* what) {
  const tensor* t = v.value(i);
  if (!t) return v.needs_constant(i);
  if (!is_integer(t->type())) {
    return v.bad(std::string(what) + " (input " + std::to_string(i) +
                 ") must be an integer tensor, got " + t->info().to_string());
  }
  if (t->rank() > 1) return v.bad(std::string(what) + " must be 1-D, got " + t->info().to_string());
  return t->to_int64_vector();
}

/// Normalizes a list of axes against `rank`, rejecting repeats.
expected<std::vector<int64_t>> normalize_axes(const op_view& v, std::vector<int64_t> axes,
                                              int64_t rank) {
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (auto& a : axes) {
    if (a < -rank || a >= rank) {
      return v.bad("axis " + std::to_string(a) + " is out of range for rank " +
                   std::to_string(rank));
    }
    if (a < 0) a += rank;
    if (seen[static_cast<size_t>(a)]) return v.bad("axis " + std::to_string(a) + " is repeated");
    seen[static_cast<size_t>(a)] = true;
  }
  return axes;
}

expected<int64_t> axis_attr(const op_view& v, const char* name, int64_t fallback, int64_t rank) {
  const int64_t a = v.node.attrs.get_int(name, fallback);
  if (a < -rank || a >= std::max<int64_t>(rank, 1) || (rank == 0)) {
    return v.bad(std::string(name) + " " + std::to_string(a) + " is out of range for rank " +
                 std::to_string(rank));
  }
  return a < 0 ? a + rank : a;
}

status require_inputs(const op_view& v, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!v.has_input(i)) return v.bad("input " + std::to_string(i) + " is required");
  }
  return status::ok();
}

status require_index_type(const op_view& v, size_t i) {
  const dtype t = v.inputs[i].type;
  if (t != dtype::i64 && t != dtype::i32) {
    return v.bad("indices (input " + std::to_string(i) + ") must be int32 or int64, got " +
                 std::string(dtype_name(t)));
  }
  return status::ok();
}

// ---- views: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout -----------------------------

expected<infos> infer_reshape(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 2));
  TROUPE_ASSIGN_OR_RETURN(auto target, int_list_input(v, 1, "shape"));
  const tensor_info& in = c.inputs[0];
  const bool allow_zero = c.node.attrs.get_int("allowzero", 0) != 0;
  shape_t out(target.size());
  int64_t unknown = -1;
  int64_t known = 1;
  bool has_zero = false;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t d = target[i];
    if (d == -1) {
      if (unknown >= 0) return v.bad("shape has more than one -1");
      unknown = static_cast<int64_t>(i);
      continue;
    }
    if (d < -1) return v.bad("shape has a negative entry " + std::to_string(d));
    if (d == 0) {
      has_zero = true;
      if (!allow_zero) {
        if (i >= in.rank())
          return v.bad("shape copies dimension " + std::to_string(i) + " of a rank " +
                       std::to_string(in.rank()) + " input");
        d = in.shape[i];
      }
    }
    out[i] = d;
    if (d != 0 && known > (int64_t{1} << 62) / d) return v.bad("shape has too many elements");
    known *= d;
  }
  if (allow_zero && has_zero && unknown >= 0)
    return v.bad("allowzero=1 with both 0 and -1 in shape");
  const int64_t count = in.elements();
  if (unknown >= 0) {
    if (known == 0 || count % known != 0) {
      return v.bad("cannot reshape " + in.to_string() + " to " + shape_to_string(target));
    }
    out[static_cast<size_t>(unknown)] = count / known;
  } else if (known != count) {
    return v.bad("cannot reshape " + in.to_string() + " to " + shape_to_string(target));
  }
  return infos{{in.type, out}};
}

expected<infos> infer_flatten(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const tensor_info& in = c.inputs[0];
  const int64_t rank = static_cast<int64_t>(in.rank());
  int64_t axis = c.node.attrs.get_int("axis", 1);
  if (axis < -rank || axis > rank) return v.bad("axis " + std::to_string(axis) + " out of range");
  if (axis < 0) axis += rank;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? outer : inner) *= in.shape[static_cast<size_t>(i)];
  return infos{{in.type, {outer, inner}}};
}

expected<infos> infer_squeeze(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const tensor_info& in = c.inputs[0];
  const int64_t rank = static_cast<int64_t>(in.rank());
  std::optional<std::vector<int64_t>> axes;
  if (c.node.opset < 13) {
    if (c.node.attrs.has("axes")) axes = c.node.attrs.get_ints("axes");
  } else if (v.has_input(1)) {
    TROUPE_ASSIGN_OR_RETURN(axes, int_list_input(v, 1, "axes"));
  }
  // An empty list squeezes every size-1 axis, as ONNX Runtime does (numpy would squeeze none).
  if (axes && axes->empty()) axes.reset();
  shape_t out;
  if (!axes) {
    for (int64_t d : in.shape) {
      if (d != 1) out.push_back(d);
    }
    return infos{{in.type, out}};
  }
  TROUPE_ASSIGN_OR_RETURN(auto norm, normalize_axes(v, *axes, rank));
  std::vector<bool> drop(in.rank(), false);
  for (int64_t a : norm) {
    if (in.shape[static_cast<size_t>(a)] != 1) {
      return v.bad("cannot squeeze axis " + std::to_string(a) + " of " + in.to_string());
    }
    drop[static_cast<size_t>(a)] = true;
  }
  for (size_t i = 0; i < in.rank(); ++i) {
    if (!drop[i]) out.push_back(in.shape[i]);
  }
  return infos{{in.type, out}};
}

expected<infos> infer_unsqueeze(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const tensor_info& in = c.inputs[0];
  std::vector<int64_t> axes;
  if (c.node.opset < 13) {
    TROUPE_ASSIGN_OR_RETURN(axes, c.node.attrs.require_ints("axes"));
  } else {
    if (!v.has_input(1)) return v.bad("input 1 (axes) is required from opset 13");
    TROUPE_ASSIGN_OR_RETURN(axes, int_list_input(v, 1, "axes"));
  }
  const int64_t out_rank = static_cast<int64_t>(in.rank() + axes.size());
  TROUPE_ASSIGN_OR_RETURN(auto norm, normalize_axes(v, axes, out_rank));
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : norm) inserted[static_cast<size_t>(a)] = true;
  shape_t out;
  size_t next = 0;
  for (int64_t i = 0; i < out_rank; ++i) {
    out.push_back(inserted[static_cast<size_t>(i)] ? 1 : in.shape[next++]);
  }
  return infos{{in.type, out}};
}

expected<infos> infer_identity(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  return infos{c.inputs[0]};
}

expected<infos> infer_dropout(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  // Inference only: output = input. Training mode is random unless the ratio is 0.
  if (c.node.opset >= 12 && v.has_input(2)) {
    const tensor* training = v.value(2);
    if (!training) return v.unsupported_case("training_mode is not known when the plan is built");
    if (training->elements() != 1) return v.bad("training_mode must be a scalar");
    if (training->value_as_int64(0) != 0) {
      const tensor* ratio = v.has_input(1) ? v.value(1) : nullptr;
      if (!ratio || ratio->elements() != 1 || ratio->value_as_double(0) != 0) {
        return v.unsupported_case("training_mode=true with a non-zero ratio (random dropout)");
      }
    }
  }
  infos out{c.inputs[0]};
  if (c.num_outputs > 1) {
    out.push_back({c.node.opset >= 10 ? dtype::boolean : c.inputs[0].type, c.inputs[0].shape});
  }
  return out;
}

// ---- Transpose, Concat, Split, Slice
// -------------------------------------------------------------

expected<infos> infer_transpose(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const tensor_info& in = c.inputs[0];
  const size_t rank = in.rank();
  std::vector<int64_t> perm = c.node.attrs.get_ints("perm");
  if (!c.node.attrs.has("perm")) {
    perm.resize(rank);
    for (size_t i = 0; i < rank; ++i) perm[i] = static_cast<int64_t>(rank - 1 - i);
  }
  if (perm.size() != rank)
    return v.bad("perm has " + std::to_string(perm.size()) + " entries for rank " +
                 std::to_string(rank));
  std::vector<bool> seen(rank, false);
  shape_t out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t p = perm[i];
    if (p < 0 || p >= static_cast<int64_t>(rank) || seen[static_cast<size_t>(p)]) {
      return v.bad("perm is not a permutation of 0.." + std::to_string(rank - 1));
    }
    seen[static_cast<size_t>(p)] = true;
    out[i] = in.shape[static_cast<size_t>(p)];
  }
  return infos{{in.type, out}};
}

expected<infos> infer_concat(const infer_context& c) {
  op_view v(c);
  if (c.inputs.empty()) return v.bad("needs at least one input");
  TROUPE_RETURN_IF_ERROR(require_inputs(v, c.inputs.size()));
  const tensor_info& first = c.inputs[0];
  const int64_t rank = static_cast<int64_t>(first.rank());
  if (!c.node.attrs.has("axis")) return v.bad("attribute 'axis' is required");
  TROUPE_ASSIGN_OR_RETURN(int64_t axis, axis_attr(v, "axis", 0, rank));
  shape_t out = first.shape;
  out[static_cast<size_t>(axis)] = 0;
  for (const auto& in : c.inputs) {
    if (in.type != first.type) return v.bad("inputs have different dtypes");
    if (static_cast<int64_t>(in.rank()) != rank) return v.bad("inputs have different ranks");
    for (int64_t d = 0; d < rank; ++d) {
      const size_t du = static_cast<size_t>(d);
      if (d != axis && in.shape[du] != first.shape[du]) {
        return v.bad("input shapes " + first.to_string() + " and " + in.to_string() +
                     " differ off the concat axis");
      }
    }
    out[static_cast<size_t>(axis)] += in.shape[static_cast<size_t>(axis)];
  }
  return infos{{first.type, out}};
}

expected<infos> infer_split(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_split(v, c.num_outputs));
  infos out;
  for (int64_t s : p.sizes) {
    shape_t shape = c.inputs[0].shape;
    shape[static_cast<size_t>(p.axis)] = s;
    out.push_back({c.inputs[0].type, shape});
  }
  return out;
}

expected<infos> infer_slice(const infer_context& c) {
  op_view v(c);
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_slice(v));
  return infos{{c.inputs[0].type, p.out_shape}};
}

// ---- Gather, GatherElements, GatherND, ScatterND, ScatterElements
// ---------------------------------

expected<infos> infer_gather(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 2));
  TROUPE_RETURN_IF_ERROR(require_index_type(v, 1));
  const tensor_info& data = c.inputs[0];
  const int64_t rank = static_cast<int64_t>(data.rank());
  TROUPE_ASSIGN_OR_RETURN(int64_t axis, axis_attr(v, "axis", 0, rank));
  shape_t out(data.shape.begin(), data.shape.begin() + axis);
  out.insert(out.end(), c.inputs[1].shape.begin(), c.inputs[1].shape.end());
  out.insert(out.end(), data.shape.begin() + axis + 1, data.shape.end());
  TROUPE_RETURN_IF_ERROR(check_shape(v, out));
  return infos{{data.type, out}};
}

expected<infos> infer_gather_elements(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 2));
  TROUPE_RETURN_IF_ERROR(require_index_type(v, 1));
  const tensor_info& data = c.inputs[0];
  const tensor_info& idx = c.inputs[1];
  const int64_t rank = static_cast<int64_t>(data.rank());
  TROUPE_ASSIGN_OR_RETURN(int64_t axis, axis_attr(v, "axis", 0, rank));
  if (idx.rank() != data.rank()) return v.bad("indices and data ranks differ");
  for (int64_t d = 0; d < rank; ++d) {
    const size_t du = static_cast<size_t>(d);
    if (d != axis && idx.shape[du] > data.shape[du]) {
      return v.bad("indices " + idx.to_string() + " exceed data " + data.to_string() +
                   " off the axis");
    }
  }
  return infos{{data.type, idx.shape}};
}

expected<infos> infer_gather_nd(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 2));
  if (c.inputs[1].type != dtype::i64) return v.bad("indices must be int64");
  const tensor_info& data = c.inputs[0];
  const tensor_info& idx = c.inputs[1];
  const int64_t b = c.node.attrs.get_int("batch_dims", 0);
  const int64_t r = static_cast<int64_t>(data.rank()), q = static_cast<int64_t>(idx.rank());
  if (r < 1 || q < 1) return v.bad("data and indices must have rank >= 1");
  if (b < 0 || b >= std::min(r, q))
    return v.bad("batch_dims " + std::to_string(b) + " out of range");
  const int64_t k = idx.shape.back();
  if (k < 1 || k > r - b)
    return v.bad("last indices dimension " + std::to_string(k) + " out of range");
  for (int64_t i = 0; i < b; ++i) {
    if (data.shape[static_cast<size_t>(i)] != idx.shape[static_cast<size_t>(i)]) {
      return v.bad("batch dimensions of data and indices differ");
    }
  }
  shape_t out(idx.shape.begin(), idx.shape.end() - 1);
  out.insert(out.end(), data.shape.begin() + b + k, data.shape.end());
  return infos{{data.type, out}};
}

status check_reduction(const op_view& v) {
  const std::string red = v.node.attrs.get_string("reduction", "none");
  if (red != "none" && red != "add" && red != "mul" && red != "max" && red != "min") {
    return v.bad("unknown reduction '" + red + "'");
  }
  return status::ok();
}

expected<infos> infer_scatter_nd(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 3));
  TROUPE_RETURN_IF_ERROR(check_reduction(v));
  if (c.inputs[1].type != dtype::i64) return v.bad("indices must be int64");
  const tensor_info& data = c.inputs[0];
  const tensor_info& idx = c.inputs[1];
  const tensor_info& upd = c.inputs[2];
  if (upd.type != data.type) return v.bad("updates and data dtypes differ");
  if (idx.rank() < 1) return v.bad("indices must have rank >= 1");
  const int64_t k = idx.shape.back();
  if (k < 0 || k > static_cast<int64_t>(data.rank()))
    return v.bad("last indices dimension out of range");
  shape_t want(idx.shape.begin(), idx.shape.end() - 1);
  want.insert(want.end(), data.shape.begin() + k, data.shape.end());
  if (upd.shape != want) {
    return v.bad("updates shape " + shape_to_string(upd.shape) + " should be " +
                 shape_to_string(want));
  }
  return infos{data};
}

expected<infos> infer_scatter_elements(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 3));
  TROUPE_RETURN_IF_ERROR(check_reduction(v));
  TROUPE_RETURN_IF_ERROR(require_index_type(v, 1));
  const tensor_info& data = c.inputs[0];
  const tensor_info& idx = c.inputs[1];
  const tensor_info& upd = c.inputs[2];
  const int64_t rank = static_cast<int64_t>(data.rank());
  TROUPE_ASSIGN_OR_RETURN(int64_t axis, axis_attr(v, "axis", 0, rank));
  if (upd.type != data.type) return v.bad("updates and data dtypes differ");
  if (idx.shape != upd.shape) return v.bad("indices and updates shapes differ");
  if (idx.rank() != data.rank()) return v.bad("indices and data ranks differ");
  for (int64_t d = 0; d < rank; ++d) {
    const size_t du = static_cast<size_t>(d);
    if (d != axis && idx.shape[du] > data.shape[du]) {
      return v.bad("indices " + idx.to_string() + " exceed data " + data.to_string() +
                   " off the axis");
    }
  }
  return infos{data};
}

// ---- Expand, Tile, Pad
// ---------------------------------------------------------------------------

expected<infos> infer_expand(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 2));
  TROUPE_ASSIGN_OR_RETURN(auto target, int_list_input(v, 1, "shape"));
  for (int64_t d : target) {
    if (d < 0) return v.bad("shape has a negative entry " + std::to_string(d));
  }
  auto out = broadcast_shapes(c.inputs[0].shape, target);
  if (!out) return v.bad(out.error().message());
  TROUPE_RETURN_IF_ERROR(check_shape(v, *out));
  return infos{{c.inputs[0].type, *out}};
}

expected<infos> infer_tile(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 2));
  TROUPE_ASSIGN_OR_RETURN(auto repeats, int_list_input(v, 1, "repeats"));
  const tensor_info& in = c.inputs[0];
  if (repeats.size() != in.rank())
    return v.bad("repeats has " + std::to_string(repeats.size()) + " entries for rank " +
                 std::to_string(in.rank()));
  shape_t out(in.rank());
  for (size_t i = 0; i < in.rank(); ++i) {
    if (repeats[i] < 0) return v.bad("negative repeat");
    if (repeats[i] != 0 && in.shape[i] > (int64_t{1} << 62) / repeats[i])
      return v.bad("output too large");
    out[i] = in.shape[i] * repeats[i];
  }
  TROUPE_RETURN_IF_ERROR(check_shape(v, out));
  return infos{{in.type, out}};
}

expected<infos> infer_pad(const infer_context& c) {
  op_view v(c);
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_pad(v));
  if (c.node.opset >= 11 && v.has_input(2)) {
    if (c.inputs[2].type != c.inputs[0].type) return v.bad("constant_value and data dtypes differ");
    if (c.inputs[2].elements() != 1) return v.bad("constant_value must hold one element");
  }
  return infos{{c.inputs[0].type, p.out_shape}};
}

// ---- Shape, Size, constants, Range, EyeLike, OneHot, NonZero
// --------------------------------------

expected<infos> infer_shape(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const auto [start, end] = shape_op_range(c.node, static_cast<int64_t>(c.inputs[0].rank()));
  return infos{{dtype::i64, {std::max<int64_t>(end - start, 0)}}};
}

expected<infos> infer_size(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  return infos{{dtype::i64, {}}};
}

expected<infos> infer_constant_of_shape(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  TROUPE_ASSIGN_OR_RETURN(auto shape, int_list_input(v, 0, "shape"));
  TROUPE_RETURN_IF_ERROR(check_shape(v, shape));
  dtype type = dtype::f32;
  if (const tensor* value = c.node.attrs.find_tensor("value")) {
    if (value->elements() != 1) return v.bad("attribute 'value' must hold one element");
    type = value->type();
  }
  return infos{{type, shape}};
}

expected<infos> infer_constant(const infer_context& c) {
  op_view v(c);
  const auto& a = c.node.attrs;
  if (a.has("sparse_value")) return v.unsupported_case("sparse_value constants are not supported");
  if (a.has("value_string") || a.has("value_strings")) {
    return v.unsupported_case("string constants are not supported");
  }
  if (const tensor* t = a.find_tensor("value")) return infos{t->info()};
  if (a.has("value_float")) return infos{{dtype::f32, {}}};
  if (a.has("value_int")) return infos{{dtype::i64, {}}};
  if (a.has("value_floats")) {
    return infos{{dtype::f32, {static_cast<int64_t>(a.get_floats("value_floats").size())}}};
  }
  if (a.has("value_ints")) {
    return infos{{dtype::i64, {static_cast<int64_t>(a.get_ints("value_ints").size())}}};
  }
  return v.unsupported_case("no supported value attribute (value, value_float(s), value_int(s))");
}

expected<infos> infer_range(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 3));
  const dtype t = c.inputs[0].type;
  if (c.inputs[1].type != t || c.inputs[2].type != t)
    return v.bad("start, limit and delta dtypes differ");
  if (t != dtype::f32 && t != dtype::f64 && t != dtype::i16 && t != dtype::i32 && t != dtype::i64) {
    return v.unsupported_case("dtype " + std::string(dtype_name(t)));
  }
  for (size_t i = 0; i < 3; ++i) {
    if (!v.value(i)) return v.needs_constant(i);
    if (v.value(i)->elements() != 1)
      return v.bad("input " + std::to_string(i) + " must be a scalar");
  }
  int64_t count = 0;
  if (is_integer(t)) {
    const int64_t start = v.value(0)->value_as_int64(0), limit = v.value(1)->value_as_int64(0),
                  delta = v.value(2)->value_as_int64(0);
    if (delta == 0) return v.bad("delta is 0");
    // Values fit in int32 range or int64 ones whose difference we compute in 128 bits.
    const __int128 span = static_cast<__int128>(limit) - start;
    __int128 n = span / delta;
    if (n * delta != span && ((span > 0) == (delta > 0))) ++n;  // ceil for a positive quotient
    count = n > 0 ? static_cast<int64_t>(std::min<__int128>(n, int64_t{1} << 62)) : 0;
  } else {
    const double start = v.value(0)->value_as_double(0), limit = v.value(1)->value_as_double(0),
                 delta = v.value(2)->value_as_double(0);
    if (delta == 0 || !std::isfinite(start) || !std::isfinite(limit) || !std::isfinite(delta)) {
      return v.bad("start, limit and delta must be finite and delta non-zero");
    }
    const double n = std::ceil((limit - start) / delta);
    if (n > static_cast<double>(int64_t{1} << 62)) return v.bad("range too long");
    count = n > 0 ? static_cast<int64_t>(n) : 0;
  }
  return infos{{t, {count}}};
}

expected<infos> infer_eye_like(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  if (c.inputs[0].rank() != 2) return v.bad("input must be 2-D, got " + c.inputs[0].to_string());
  dtype t = c.inputs[0].type;
  if (c.node.attrs.has("dtype")) {
    auto d = dtype_from_onnx(static_cast<int32_t>(c.node.attrs.get_int("dtype", 0)));
    if (!d) return v.unsupported_case(d.error().message());
    t = *d;
  }
  return infos{{t, c.inputs[0].shape}};
}

expected<infos> infer_one_hot(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 3));
  const tensor_info& idx = c.inputs[0];
  const int64_t out_rank = static_cast<int64_t>(idx.rank()) + 1;
  int64_t axis = c.node.attrs.get_int("axis", -1);
  if (axis < -out_rank || axis >= out_rank)
    return v.bad("axis " + std::to_string(axis) + " out of range");
  if (axis < 0) axis += out_rank;
  const tensor* depth_t = v.value(1);
  if (!depth_t) return v.needs_constant(1);
  if (depth_t->elements() != 1) return v.bad("depth must hold one element");
  const double depth_d = depth_t->value_as_double(0);
  if (!(depth_d >= 1) || depth_d > static_cast<double>(int64_t{1} << 40)) {
    return v.bad("depth must be positive, got " + std::to_string(depth_d));
  }
  if (c.inputs[2].elements() != 2) return v.bad("values must hold two elements [off, on]");
  if (!is_integer(idx.type) && !is_floating(idx.type)) return v.bad("indices must be numeric");
  shape_t out = idx.shape;
  out.insert(out.begin() + axis, static_cast<int64_t>(depth_d));
  TROUPE_RETURN_IF_ERROR(check_shape(v, out));
  return infos{{c.inputs[2].type, out}};
}

expected<infos> infer_non_zero(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const tensor* x = v.value(0);
  if (!x) {
    return v.unsupported_case(
        "NonZero's output shape depends on its input's values, which are not "
        "known when the plan is built");
  }
  int64_t count = 0;
  for (int64_t i = 0; i < x->elements(); ++i) count += x->value_as_double(i) != 0 ? 1 : 0;
  return infos{{dtype::i64, {std::max<int64_t>(static_cast<int64_t>(x->rank()), 1), count}}};
}

// ---- Resize, Upsample, DepthToSpace, SpaceToDepth
// --------------------------------------------------

expected<infos> infer_resize(const infer_context& c) {
  op_view v(c);
  TROUPE_ASSIGN_OR_RETURN(auto p, resolve_resize(v));
  return infos{{c.inputs[0].type, p.out_shape}};
}

expected<infos> infer_depth_to_space(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const tensor_info& in = c.inputs[0];
  if (in.rank() != 4) return v.bad("input must be 4-D, got " + in.to_string());
  TROUPE_ASSIGN_OR_RETURN(int64_t b, c.node.attrs.require_int("blocksize"));
  if (b <= 0) return v.bad("blocksize must be positive");
  const std::string mode = c.node.attrs.get_string("mode", "DCR");
  if (mode != "DCR" && mode != "CRD") return v.bad("mode must be DCR or CRD, got '" + mode + "'");
  if (b > (int64_t{1} << 20) || in.shape[1] % (b * b) != 0) {
    return v.bad("channels " + std::to_string(in.shape[1]) + " not divisible by blocksize^2");
  }
  shape_t out{in.shape[0], in.shape[1] / (b * b), in.shape[2] * b, in.shape[3] * b};
  TROUPE_RETURN_IF_ERROR(check_shape(v, out));
  return infos{{in.type, out}};
}

expected<infos> infer_space_to_depth(const infer_context& c) {
  op_view v(c);
  TROUPE_RETURN_IF_ERROR(require_inputs(v, 1));
  const tensor_info& in = c.inputs[0];
  if (in.rank() != 4) return v.bad("input must be 4-D, got " + in.to_string());
  TROUPE_ASSIGN_OR_RETURN(int64_t b, c.node.attrs.require_int("blocksize"));
  if (b <= 0 || b > (int64_t{1} << 20)) return v.bad("blocksize must be positive");
  if (in.shape[2] % b != 0 || in.shape[3] % b != 0) {
    return v.bad("spatial size " + in.to_string() + " not divisible by blocksize");
  }
  shape_t out{in.shape[0], in.shape[1] * b * b, in.shape[2] / b, in.shape[3] / b};
  TROUPE_RETURN_IF_ERROR(check_shape(v, out));
  return infos{{in.type, out}};
}

}  // namespace

// ---- resolvers
// -----------------------------------------------------------------------------------

expected<split_params> resolve_split(const op_view& v, size_t num_outputs) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const tensor_info& in = v.inputs[0];
  const int64_t rank = static_cast<int64_t>(in.rank());
  split_params p;
  TROUPE_ASSIGN_OR_RETURN(p.axis, axis_attr(v, "axis", 0, rank));
  const int64_t dim = in.shape[static_cast<size_t>(p.axis)];
  std::optional<std::vector<int64_t>> split;
  if (v.opset() < 13) {
    if (v.node.attrs.has("split")) split = v.node.attrs.get_ints("split");
  } else if (v.has_input(1)) {
    TROUPE_ASSIGN_OR_RETURN(split, int_list_input(v, 1, "split"));
  }
  if (split && split->empty()) split.reset();
  const int64_t n = static_cast<int64_t>(num_outputs);
  if (n < 1) return v.bad("needs at least one output");
  if (split) {
    if (static_cast<int64_t>(split->size()) != n) {
      return v.bad("split has " + std::to_string(split->size()) + " entries for " +
                   std::to_string(n) + " outputs");
    }
    int64_t sum = 0;
    for (int64_t s : *split) {
      if (s < 0) return v.bad("negative split size");
      sum += s;
    }
    if (sum != dim)
      return v.bad("split sizes sum to " + std::to_string(sum) + ", the axis has " +
                   std::to_string(dim));
    p.sizes = *split;
    return p;
  }
  if (v.node.attrs.has("num_outputs") && v.node.attrs.get_int("num_outputs", 0) != n) {
    return v.bad("num_outputs does not match the node's outputs");
  }
  // Uneven splits take ceil(dim / n) per output and the remainder last (opset 18's rule; the
  // reference implementation applies it at every opset).
  const int64_t chunk = dim % n == 0 ? dim / n : dim / n + 1;
  const int64_t last = dim - chunk * (n - 1);
  if (last < 0)
    return v.bad("cannot split " + std::to_string(dim) + " into " + std::to_string(n) + " parts");
  p.sizes.assign(static_cast<size_t>(n), chunk);
  p.sizes.back() = last;
  return p;
}

expected<slice_params> resolve_slice(const op_view& v) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const tensor_info& in = v.inputs[0];
  const int64_t rank = static_cast<int64_t>(in.rank());
  std::vector<int64_t> starts, ends, axes, steps;
  bool has_axes = false, has_steps = false;
  if (v.opset() < 10) {
    TROUPE_ASSIGN_OR_RETURN(starts, v.node.attrs.require_ints("starts"));
    TROUPE_ASSIGN_OR_RETURN(ends, v.node.attrs.require_ints("ends"));
    if (v.node.attrs.has("axes")) {
      axes = v.node.attrs.get_ints("axes");
      has_axes = true;
    }
  } else {
    if (!v.has_input(1) || !v.has_input(2)) return v.bad("inputs starts and ends are required");
    TROUPE_ASSIGN_OR_RETURN(starts, int_list_input(v, 1, "starts"));
    TROUPE_ASSIGN_OR_RETURN(ends, int_list_input(v, 2, "ends"));
    if (v.has_input(3)) {
      TROUPE_ASSIGN_OR_RETURN(axes, int_list_input(v, 3, "axes"));
      has_axes = true;
    }
    if (v.has_input(4)) {
      TROUPE_ASSIGN_OR_RETURN(steps, int_list_input(v, 4, "steps"));
      has_steps = true;
    }
  }
  const size_t n = starts.size();
  if (ends.size() != n) return v.bad("starts and ends have different lengths");
  if (!has_axes) {
    if (static_cast<int64_t>(n) > rank) return v.bad("more starts than input axes");
    axes.resize(n);
    for (size_t i = 0; i < n; ++i) axes[i] = static_cast<int64_t>(i);
  }
  if (!has_steps) steps.assign(n, 1);
  if (axes.size() != n || steps.size() != n)
    return v.bad("starts, ends, axes and steps lengths differ");
  TROUPE_ASSIGN_OR_RETURN(axes, normalize_axes(v, axes, rank));

  slice_params p;
  p.out_shape = in.shape;
  p.starts.assign(static_cast<size_t>(rank), 0);
  p.steps.assign(static_cast<size_t>(rank), 1);
  for (size_t i = 0; i < n; ++i) {
    const size_t a = static_cast<size_t>(axes[i]);
    const int64_t dim = in.shape[a];
    const int64_t step = steps[i];
    if (step == 0) return v.bad("step is 0");
    int64_t s = starts[i], e = ends[i];
    // dim is at most 2^62, so adding it to a negative int64 cannot overflow.
    if (s < 0) s += dim;
    if (e < 0) e += dim;
    int64_t len = 0;
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      if (e > s)
        len = static_cast<int64_t>(
            (static_cast<uint64_t>(e - s) - 1) / static_cast<uint64_t>(step) + 1);
    } else {
      s = std::clamp<int64_t>(s, 0, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      const uint64_t ustep = 0 - static_cast<uint64_t>(step);
      if (s > e) len = static_cast<int64_t>((static_cast<uint64_t>(s - e) - 1) / ustep + 1);
    }
    p.out_shape[a] = len;
    p.starts[a] = len > 0 ? s : 0;
    // A step longer than the axis only reads index s; keep it small so offsets cannot overflow.
    p.steps[a] = len > 1 ? step : 1;
  }
  return p;
}

expected<pad_params> resolve_pad(const op_view& v) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const tensor_info& in = v.inputs[0];
  const int64_t rank = static_cast<int64_t>(in.rank());
  pad_params p;
  const std::string mode = v.node.attrs.get_string("mode", "constant");
  if (mode == "constant") {
    p.mode = pad_mode::constant;
  } else if (mode == "reflect") {
    p.mode = pad_mode::reflect;
  } else if (mode == "edge") {
    p.mode = pad_mode::edge;
  } else if (mode == "wrap") {
    return v.unsupported_case("mode 'wrap'");
  } else {
    return v.bad("unknown mode '" + mode + "'");
  }
  std::vector<int64_t> pads;
  std::vector<int64_t> axes;
  if (v.opset() < 11) {
    // Pad-1 called the attribute 'paddings'.
    const char* name = v.node.attrs.has("pads") ? "pads" : "paddings";
    TROUPE_ASSIGN_OR_RETURN(pads, v.node.attrs.require_ints(name));
    p.attr_value = v.node.attrs.get_float("value", 0.0f);
  } else {
    if (!v.has_input(1)) return v.bad("input 1 (pads) is required");
    TROUPE_ASSIGN_OR_RETURN(pads, int_list_input(v, 1, "pads"));
    if (v.opset() >= 18 && v.has_input(3)) {
      TROUPE_ASSIGN_OR_RETURN(axes, int_list_input(v, 3, "axes"));
      TROUPE_ASSIGN_OR_RETURN(axes, normalize_axes(v, axes, rank));
    }
  }
  if (axes.empty() && !(v.opset() >= 18 && v.has_input(3))) {
    axes.resize(static_cast<size_t>(rank));
    for (int64_t i = 0; i < rank; ++i) axes[static_cast<size_t>(i)] = i;
  }
  const size_t n = axes.size();
  if (pads.size() != 2 * n) {
    return v.bad("pads has " + std::to_string(pads.size()) + " entries for " + std::to_string(n) +
                 " axes");
  }
  p.begin.assign(static_cast<size_t>(rank), 0);
  p.end.assign(static_cast<size_t>(rank), 0);
  p.out_shape = in.shape;
  constexpr int64_t limit = int64_t{1} << 40;
  for (size_t i = 0; i < n; ++i) {
    const size_t a = static_cast<size_t>(axes[i]);
    const int64_t b = pads[i], e = pads[n + i];
    if (b > limit || e > limit || b < -limit || e < -limit) return v.bad("pads out of range");
    const int64_t out = in.shape[a] + b + e;
    if (out < 0) return v.bad("pads crop axis " + std::to_string(a) + " below zero");
    if (p.mode != pad_mode::constant && in.shape[a] == 0 && out > 0) {
      return v.bad("cannot pad an empty axis in mode '" + mode + "'");
    }
    p.begin[a] = b;
    p.end[a] = e;
    p.out_shape[a] = out;
  }
  auto count = checked_element_count(p.out_shape);
  if (!count) return v.bad(count.error().message());
  return p;
}

namespace {

/// Reads a float list from a plan-time value.
expected<std::vector<double>> float_list_input(const op_view& v, size_t i) {
  const tensor* t = v.value(i);
  if (!t) return v.needs_constant(i);
  if (t->rank() > 1) return v.bad("input " + std::to_string(i) + " must be 1-D");
  std::vector<double> out(static_cast<size_t>(t->elements()));
  for (int64_t k = 0; k < t->elements(); ++k) out[static_cast<size_t>(k)] = t->value_as_double(k);
  return out;
}

expected<resize_coord> parse_coord(const op_view& v, const std::string& s) {
  if (s == "half_pixel") return resize_coord::half_pixel;
  if (s == "half_pixel_symmetric") return resize_coord::half_pixel_symmetric;
  if (s == "pytorch_half_pixel") return resize_coord::pytorch_half_pixel;
  if (s == "align_corners") return resize_coord::align_corners;
  if (s == "asymmetric") return resize_coord::asymmetric;
  if (s == "tf_half_pixel_for_nn") return resize_coord::tf_half_pixel_for_nn;
  if (s == "tf_crop_and_resize") return resize_coord::tf_crop_and_resize;
  return v.bad("unknown coordinate_transformation_mode '" + s + "'");
}

expected<nearest_rounding> parse_rounding(const op_view& v, const std::string& s) {
  if (s == "round_prefer_floor") return nearest_rounding::round_prefer_floor;
  if (s == "round_prefer_ceil") return nearest_rounding::round_prefer_ceil;
  if (s == "floor") return nearest_rounding::floor;
  if (s == "ceil") return nearest_rounding::ceil;
  return v.bad("unknown nearest_mode '" + s + "'");
}

}  // namespace

expected<resize_params> resolve_resize(const op_view& v) {
  if (!v.has_input(0)) return v.bad("input 0 is required");
  const tensor_info& in = v.inputs[0];
  const size_t rank = in.rank();
  const auto& attrs = v.node.attrs;
  const bool upsample = v.node.op_type == "Upsample";
  resize_params p;
  const std::string mode = attrs.get_string("mode", "nearest");
  if (mode == "nearest") {
    p.mode = resize_mode::nearest;
  } else if (mode == "linear" || (upsample && mode == "bilinear")) {
    p.mode = resize_mode::linear;
  } else if (mode == "cubic" && !upsample && v.opset() >= 11) {
    p.mode = resize_mode::cubic;
  } else {
    return v.bad("unknown mode '" + mode + "'");
  }
  p.scales.assign(rank, 1.0);
  p.roi_start.assign(rank, 0.0);
  p.roi_end.assign(rank, 1.0);
  p.out_shape = in.shape;

  const bool old_form = upsample || v.opset() < 11;
  if (old_form) {
    // Upsample-7 (scales attribute), Upsample-9 and Resize-10 (scales input 1).
    p.coord = resize_coord::asymmetric;
    p.rounding = nearest_rounding::simple;
    std::vector<double> scales;
    if (upsample && v.opset() < 9) {
      for (float f : attrs.get_floats("scales")) scales.push_back(f);
      if (!attrs.has("scales")) return v.bad("attribute 'scales' is required");
    } else {
      if (!v.has_input(1)) return v.bad("input 1 (scales) is required");
      TROUPE_ASSIGN_OR_RETURN(scales, float_list_input(v, 1));
    }
    if (scales.size() != rank)
      return v.bad("scales has " + std::to_string(scales.size()) + " entries for rank " +
                   std::to_string(rank));
    p.scales = scales;
  } else {
    TROUPE_ASSIGN_OR_RETURN(
        p.coord, parse_coord(v, attrs.get_string("coordinate_transformation_mode", "half_pixel")));
    TROUPE_ASSIGN_OR_RETURN(
        p.rounding, parse_rounding(v, attrs.get_string("nearest_mode", "round_prefer_floor")));
    p.cubic_coeff_a = attrs.get_float("cubic_coeff_a", -0.75f);
    p.exclude_outside = attrs.get_int("exclude_outside", 0) != 0;
    p.extrapolation_value = attrs.get_float("extrapolation_value", 0.0f);
    p.antialias = attrs.get_int("antialias", 0) != 0 && p.mode != resize_mode::nearest;
    const std::string policy = attrs.get_string("keep_aspect_ratio_policy", "stretch");
    if (policy != "stretch" && policy != "not_larger" && policy != "not_smaller") {
      return v.bad("unknown keep_aspect_ratio_policy '" + policy + "'");
    }
    std::vector<int64_t> axes;
    if (attrs.has("axes")) {
      TROUPE_ASSIGN_OR_RETURN(
          axes, normalize_axes(v, attrs.get_ints("axes"), static_cast<int64_t>(rank)));
    } else {
      for (size_t i = 0; i < rank; ++i) axes.push_back(static_cast<int64_t>(i));
    }
    const size_t n = axes.size();
    std::vector<double> scales, sizes_d;
    if (v.has_input(2)) {
      TROUPE_ASSIGN_OR_RETURN(scales, float_list_input(v, 2));
    }
    std::vector<int64_t> sizes;
    if (v.has_input(3)) {
      TROUPE_ASSIGN_OR_RETURN(sizes, int_list_input(v, 3, "sizes"));
    }
    if (!scales.empty() && !sizes.empty())
      return v.bad("only one of scales and sizes may be given");
    if (scales.empty() && sizes.empty()) return v.bad("one of scales and sizes must be given");
    if (p.coord == resize_coord::tf_crop_and_resize) {
      if (!v.has_input(1)) return v.bad("tf_crop_and_resize needs input 1 (roi)");
      TROUPE_ASSIGN_OR_RETURN(auto roi, float_list_input(v, 1));
      if (roi.size() != 2 * n) return v.bad("roi must hold 2 * " + std::to_string(n) + " values");
      for (size_t i = 0; i < n; ++i) {
        p.roi_start[static_cast<size_t>(axes[i])] = roi[i];
        p.roi_end[static_cast<size_t>(axes[i])] = roi[n + i];
      }
    }
    if (!scales.empty()) {
      if (scales.size() != n)
        return v.bad("scales has " + std::to_string(scales.size()) + " entries for " +
                     std::to_string(n) + " axes");
      for (size_t i = 0; i < n; ++i) p.scales[static_cast<size_t>(axes[i])] = scales[i];
    } else {
      if (sizes.size() != n)
        return v.bad("sizes has " + std::to_string(sizes.size()) + " entries for " +
                     std::to_string(n) + " axes");
      for (size_t i = 0; i < n; ++i) {
        const size_t a = static_cast<size_t>(axes[i]);
        if (sizes[i] < 0) return v.bad("negative size");
        if (in.shape[a] == 0 && sizes[i] != 0) return v.bad("cannot resize an empty axis");
        p.scales[a] = in.shape[a] == 0
                          ? 1.0
                          : static_cast<double>(sizes[i]) / static_cast<double>(in.shape[a]);
        p.out_shape[a] = sizes[i];
      }
      if (policy != "stretch") {
        double s = p.scales[static_cast<size_t>(axes[0])];
        for (int64_t a : axes) {
          const double sa = p.scales[static_cast<size_t>(a)];
          s = policy == "not_larger" ? std::min(s, sa) : std::max(s, sa);
        }
        for (int64_t a : axes) {
          const size_t au = static_cast<size_t>(a);
          p.scales[au] = s;
          p.out_shape[au] = static_cast<int64_t>(s * static_cast<double>(in.shape[au]) + 0.5);
        }
      }
      p.out_width.resize(rank);
      for (size_t a = 0; a < rank; ++a) p.out_width[a] = static_cast<double>(p.out_shape[a]);
    }
  }
  const bool sized = !p.out_width.empty();
  if (!sized) p.out_width.resize(rank);
  for (size_t a = 0; a < rank; ++a) {
    const double s = p.scales[a];
    if (!(s > 0) || !std::isfinite(s))
      return v.bad("scales must be positive, got " + std::to_string(s));
    if (!sized) {
      const double out = s * static_cast<double>(in.shape[a]);
      if (out > static_cast<double>(int64_t{1} << 40)) return v.bad("output too large");
      p.out_shape[a] = static_cast<int64_t>(std::floor(out));
      p.out_width[a] = out;
    }
  }
  auto count = checked_element_count(p.out_shape);
  if (!count) return v.bad(count.error().message());
  return p;
}

namespace {

void add(schema_registry& r, const char* op, int64_t min_opset, int64_t max_opset, infer_fn infer,
         std::vector<int> value_inputs = {}) {
  r.add({"", op, min_opset, max_opset, infer, true, std::move(value_inputs)});
}

}  // namespace

void register_tensor_schemas(schema_registry& r) {
  add(r, "Reshape", 5, 18, infer_reshape, {1});
  add(r, "Flatten", 1, 18, infer_flatten);
  add(r, "Squeeze", 1, 18, infer_squeeze, {1});
  add(r, "Unsqueeze", 1, 18, infer_unsqueeze, {1});
  add(r, "Identity", 1, 18, infer_identity);
  add(r, "Dropout", 1, 18, infer_dropout);
  add(r, "Transpose", 1, 18, infer_transpose);
  add(r, "Concat", 1, 18, infer_concat);
  add(r, "Split", 1, 18, infer_split, {1});
  add(r, "Slice", 1, 18, infer_slice, {1, 2, 3, 4});
  add(r, "Gather", 1, 18, infer_gather);
  add(r, "GatherElements", 11, 18, infer_gather_elements);
  add(r, "GatherND", 11, 18, infer_gather_nd);
  add(r, "ScatterND", 11, 18, infer_scatter_nd);
  add(r, "ScatterElements", 11, 18, infer_scatter_elements);
  add(r, "Scatter", 9, 10, infer_scatter_elements);
  add(r, "Expand", 8, 18, infer_expand, {1});
  add(r, "Tile", 6, 18, infer_tile, {1});
  add(r, "Pad", 1, 18, infer_pad, {1, 3});
  add(r, "Shape", 1, 18, infer_shape);
  add(r, "Size", 1, 18, infer_size);
  add(r, "ConstantOfShape", 9, 18, infer_constant_of_shape, {0});
  add(r, "Constant", 1, 18, infer_constant);
  add(r, "Range", 11, 18, infer_range, {0, 1, 2});
  add(r, "EyeLike", 9, 18, infer_eye_like);
  add(r, "OneHot", 9, 18, infer_one_hot, {1});
  add(r, "NonZero", 9, 18, infer_non_zero, {0});
  add(r, "Resize", 10, 18, infer_resize, {1, 2, 3});
  add(r, "Upsample", 7, 18, infer_resize, {1});
  add(r, "DepthToSpace", 1, 18, infer_depth_to_space);
  add(r, "SpaceToDepth", 1, 18, infer_space_to_depth);
}

}  // namespace troupe::kernels
