// CPU index kernels: Gather, GatherElements, GatherND, ScatterND, ScatterElements (and the
// deprecated Scatter), OneHot, NonZero. Indices come from model data: every one is checked before
// it is used, and a bad one is an invalid_argument error, never an out-of-bounds access.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <limits>

#include "kernels/cpu/tensor_common.hpp"
#include "kernels/op_schema.hpp"

namespace troupe::kernels::cpu {
namespace {

using factory_result = expected<std::unique_ptr<kernel>>;

/// Copies one run of `bytes` bytes; fixed sizes become single loads and stores.
inline void copy_run(char* dst, const char* src, size_t bytes) {
  switch (bytes) {
    case 4:
      std::memcpy(dst, src, 4);
      return;
    case 8:
      std::memcpy(dst, src, 8);
      return;
    case 2:
      std::memcpy(dst, src, 2);
      return;
    case 1:
      *dst = *src;
      return;
    default:
      std::memcpy(dst, src, bytes);
  }
}

template <class I>
status check_indices(const I* idx, int64_t n, int64_t dim, const kernel_run_context&,
                     const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(idx[i]);
    if (v < -dim || v >= dim) {
      return invalid_argument(std::string(what) + ": index " + std::to_string(v) +
                              " is out of range for an axis of size " + std::to_string(dim));
    }
  }
  return status::ok();
}

// ---- Gather -------------------------------------------------------------------------------------

template <class I>
status gather_run(kernel_run_context& rc, int64_t outer, int64_t axis_dim, int64_t n_idx,
                  size_t inner_bytes) {
  const I* idx = rc.inputs[1].data<I>();
  TROUPE_RETURN_IF_ERROR(check_indices(idx, n_idx, axis_dim, rc, "Gather"));
  const char* src = static_cast<const char*>(rc.inputs[0].raw());
  char* dst = static_cast<char*>(rc.outputs[0].raw());
  parallel_rows(outer * n_idx, inner_bytes, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t o = r / n_idx;
      int64_t v = static_cast<int64_t>(idx[r - o * n_idx]);
      if (v < 0) v += axis_dim;
      copy_run(dst + static_cast<size_t>(r) * inner_bytes,
               src + static_cast<size_t>(o * axis_dim + v) * inner_bytes, inner_bytes);
    }
  });
  return status::ok();
}

factory_result gather_factory(const kernel_create_context& ctx) {
  const tensor_info& data = ctx.inputs[0];
  auto axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), static_cast<int64_t>(data.rank()));
  if (!axis) return ctx.fail(error_code::invalid_model, axis.error().message());
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < data.rank(); ++d) {
    if (static_cast<int64_t>(d) < *axis) outer *= data.shape[d];
    if (static_cast<int64_t>(d) > *axis) inner *= data.shape[d];
  }
  const int64_t axis_dim = data.shape[static_cast<size_t>(*axis)];
  const int64_t n_idx = ctx.inputs[1].elements();
  const size_t inner_bytes = static_cast<size_t>(inner) * dtype_size(data.type);
  const bool i64 = ctx.inputs[1].type == dtype::i64;
  return make_function_kernel([=](kernel_run_context& rc) {
    if (outer * n_idx == 0 || inner_bytes == 0) {
      return i64 ? check_indices(rc.inputs[1].data<int64_t>(), n_idx, axis_dim, rc, "Gather")
                 : check_indices(rc.inputs[1].data<int32_t>(), n_idx, axis_dim, rc, "Gather");
    }
    return i64 ? gather_run<int64_t>(rc, outer, axis_dim, n_idx, inner_bytes)
               : gather_run<int32_t>(rc, outer, axis_dim, n_idx, inner_bytes);
  });
}

// ---- GatherElements / ScatterElements share the coordinate walk
// -----------------------------------

/// The walk over an indices tensor whose coordinates address `data` with `axis` replaced by the
/// index value: offset = sum_{d != axis} c_d * data_stride_d + v * data_stride_axis.
struct element_walk {
  shape_t idx_shape;
  std::vector<int64_t> data_strides;
  int64_t axis = 0;
  int64_t axis_dim = 0;

  /// Calls f(position in indices, data offset without the axis term) for each element, in order.
  template <class F>
  void for_each(F&& f) const {
    const int64_t rank = static_cast<int64_t>(idx_shape.size());
    const int64_t n = element_count(idx_shape);
    if (n == 0) return;
    int64_t c[max_plan_rank] = {};
    int64_t base = 0;
    for (int64_t p = 0; p < n; ++p) {
      f(p, base);
      for (int64_t d = rank - 1; d >= 0; --d) {
        const int64_t step = d == axis ? 0 : data_strides[static_cast<size_t>(d)];
        base += step;
        if (++c[d] < idx_shape[static_cast<size_t>(d)]) break;
        base -= step * idx_shape[static_cast<size_t>(d)];
        c[d] = 0;
      }
    }
  }
};

expected<element_walk> make_walk(const kernel_create_context& ctx) {
  const tensor_info& data = ctx.inputs[0];
  element_walk w;
  auto axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), static_cast<int64_t>(data.rank()));
  if (!axis) return ctx.fail(error_code::invalid_model, axis.error().message());
  if (data.rank() > max_plan_rank)
    return ctx.fail(error_code::unsupported, "rank above " + std::to_string(max_plan_rank));
  w.axis = *axis;
  w.idx_shape = ctx.inputs[1].shape;
  w.data_strides = row_major_strides(data.shape);
  w.axis_dim = data.shape[static_cast<size_t>(w.axis)];
  return w;
}

template <class T, class I>
status gather_elements_run(kernel_run_context& rc, const element_walk& w) {
  const I* idx = rc.inputs[1].data<I>();
  TROUPE_RETURN_IF_ERROR(
      check_indices(idx, rc.inputs[1].elements(), w.axis_dim, rc, "GatherElements"));
  const T* src = rc.inputs[0].data<T>();
  T* dst = rc.outputs[0].data<T>();
  const int64_t axis_stride = w.data_strides[static_cast<size_t>(w.axis)];
  w.for_each([&](int64_t p, int64_t base) {
    int64_t v = static_cast<int64_t>(idx[p]);
    if (v < 0) v += w.axis_dim;
    dst[p] = src[base + v * axis_stride];
  });
  return status::ok();
}

template <class I>
status gather_elements_dispatch(kernel_run_context& rc, const element_walk& w, size_t elem) {
  switch (elem) {
    case 1:
      return gather_elements_run<uint8_t, I>(rc, w);
    case 2:
      return gather_elements_run<uint16_t, I>(rc, w);
    case 4:
      return gather_elements_run<uint32_t, I>(rc, w);
    default:
      return gather_elements_run<uint64_t, I>(rc, w);
  }
}

factory_result gather_elements_factory(const kernel_create_context& ctx) {
  TROUPE_ASSIGN_OR_RETURN(auto w, make_walk(ctx));
  const size_t elem = dtype_size(ctx.inputs[0].type);
  const bool i64 = ctx.inputs[1].type == dtype::i64;
  return make_function_kernel([w, elem, i64](kernel_run_context& rc) {
    return i64 ? gather_elements_dispatch<int64_t>(rc, w, elem)
               : gather_elements_dispatch<int32_t>(rc, w, elem);
  });
}

// ---- GatherND
// ------------------------------------------------------------------------------------

factory_result gather_nd_factory(const kernel_create_context& ctx) {
  const tensor_info& data = ctx.inputs[0];
  const tensor_info& idx = ctx.inputs[1];
  const int64_t b = ctx.node.attrs.get_int("batch_dims", 0);
  const int64_t k = idx.shape.back();
  int64_t batches = 1, slice = 1;
  for (int64_t d = 0; d < b; ++d) batches *= data.shape[static_cast<size_t>(d)];
  for (size_t d = static_cast<size_t>(b + k); d < data.rank(); ++d) slice *= data.shape[d];
  const int64_t tuples = idx.elements() / std::max<int64_t>(k, 1);
  const int64_t per_batch = batches == 0 ? 0 : tuples / batches;
  const auto strides = row_major_strides(data.shape);
  const int64_t batch_stride = b == 0 ? 0 : strides[static_cast<size_t>(b - 1)];
  std::vector<int64_t> dims(static_cast<size_t>(k)), dim_strides(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    dims[static_cast<size_t>(j)] = data.shape[static_cast<size_t>(b + j)];
    dim_strides[static_cast<size_t>(j)] = strides[static_cast<size_t>(b + j)];
  }
  const size_t elem = dtype_size(data.type);
  const size_t slice_bytes = static_cast<size_t>(slice) * elem;
  return make_function_kernel([=](kernel_run_context& rc) {
    const int64_t* ix = rc.inputs[1].data<int64_t>();
    for (int64_t t = 0; t < tuples; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t v = ix[t * k + j], dim = dims[static_cast<size_t>(j)];
        if (v < -dim || v >= dim) {
          return invalid_argument("GatherND: index " + std::to_string(v) +
                                  " is out of range for an axis of size " + std::to_string(dim));
        }
      }
    }
    const char* src = static_cast<const char*>(rc.inputs[0].raw());
    char* dst = static_cast<char*>(rc.outputs[0].raw());
    if (slice_bytes == 0) return status::ok();
    parallel_rows(tuples, slice_bytes, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        int64_t off = (t / per_batch) * batch_stride;
        for (int64_t j = 0; j < k; ++j) {
          int64_t v = ix[t * k + j];
          if (v < 0) v += dims[static_cast<size_t>(j)];
          off += v * dim_strides[static_cast<size_t>(j)];
        }
        copy_run(dst + static_cast<size_t>(t) * slice_bytes, src + static_cast<size_t>(off) * elem,
                 slice_bytes);
      }
    });
    return status::ok();
  });
}

// ---- ScatterND / ScatterElements ---------------------------------------------------------------

enum class reduction : uint8_t { none, add, mul, max, min };

reduction parse_reduction(const op_node& node) {
  const std::string r = node.attrs.get_string("reduction", "none");
  if (r == "add") return reduction::add;
  if (r == "mul") return reduction::mul;
  if (r == "max") return reduction::max;
  if (r == "min") return reduction::min;
  return reduction::none;
}

template <class T>
inline void apply(T* dst, const T* src, int64_t n, reduction red) {
  switch (red) {
    case reduction::none:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
      return;
    case reduction::add:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(dst[i] + src[i]);
      return;
    case reduction::mul:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(dst[i] * src[i]);
      return;
    case reduction::max:
      for (int64_t i = 0; i < n; ++i) dst[i] = std::max(dst[i], src[i]);
      return;
    case reduction::min:
      for (int64_t i = 0; i < n; ++i) dst[i] = std::min(dst[i], src[i]);
      return;
  }
}

/// Calls f.template operator()<T>() with T the C++ type of `t` (numeric types only).
template <class F>
status with_numeric_type(dtype t, F&& f) {
  switch (t) {
    case dtype::f32:
      return f(float{});
    case dtype::f64:
      return f(double{});
    case dtype::i8:
      return f(int8_t{});
    case dtype::u8:
      return f(uint8_t{});
    case dtype::i16:
      return f(int16_t{});
    case dtype::u16:
      return f(uint16_t{});
    case dtype::i32:
      return f(int32_t{});
    case dtype::u32:
      return f(uint32_t{});
    case dtype::i64:
      return f(int64_t{});
    case dtype::u64:
      return f(uint64_t{});
    default:
      return unsupported("dtype " + std::string(dtype_name(t)));
  }
}

/// Reductions other than none need arithmetic on the element type; none copies bytes.
status check_reduction_type(const kernel_create_context& ctx, reduction red) {
  if (red == reduction::none) return status::ok();
  const dtype t = ctx.inputs[0].type;
  if (t == dtype::f16 || t == dtype::bf16 || t == dtype::boolean) {
    return ctx.fail(error_code::unsupported, "reduction on dtype " + std::string(dtype_name(t)));
  }
  return status::ok();
}

void copy_input_to_output(kernel_run_context& rc) {
  copy_bytes(rc.outputs[0].raw(), rc.inputs[0].raw(), rc.inputs[0].bytes());
}

factory_result scatter_nd_factory(const kernel_create_context& ctx) {
  const reduction red = parse_reduction(ctx.node);
  TROUPE_RETURN_IF_ERROR(check_reduction_type(ctx, red));
  const tensor_info& data = ctx.inputs[0];
  const tensor_info& idx = ctx.inputs[1];
  const int64_t k = idx.shape.back();
  int64_t slice = 1;
  for (size_t d = static_cast<size_t>(k); d < data.rank(); ++d) slice *= data.shape[d];
  const int64_t updates =
      k == 0 ? element_count(shape_t(idx.shape.begin(), idx.shape.end() - 1)) : idx.elements() / k;
  const auto strides = row_major_strides(data.shape);
  std::vector<int64_t> dims(data.shape.begin(), data.shape.begin() + k);
  std::vector<int64_t> dim_strides(strides.begin(), strides.begin() + k);
  const dtype type = data.type;
  const size_t elem = dtype_size(type);
  return make_function_kernel(
      [=](kernel_run_context& rc) {
        const int64_t* ix = rc.inputs[1].data<int64_t>();
        for (int64_t u = 0; u < updates; ++u) {
          for (int64_t j = 0; j < k; ++j) {
            const int64_t v = ix[u * k + j], dim = dims[static_cast<size_t>(j)];
            if (v < -dim || v >= dim) {
              return invalid_argument("ScatterND: index " + std::to_string(v) +
                                      " is out of range for an axis of size " +
                                      std::to_string(dim));
            }
          }
        }
        copy_input_to_output(rc);
        if (slice == 0) return status::ok();
        auto offset_of = [&](int64_t u) {
          int64_t off = 0;
          for (int64_t j = 0; j < k; ++j) {
            int64_t v = ix[u * k + j];
            if (v < 0) v += dims[static_cast<size_t>(j)];
            off += v * dim_strides[static_cast<size_t>(j)];
          }
          return off;
        };
        // In order: with repeated indices the last update wins (or all of them reduce).
        if (red == reduction::none) {
          char* dst = static_cast<char*>(rc.outputs[0].raw());
          const char* upd = static_cast<const char*>(rc.inputs[2].raw());
          const size_t bytes = static_cast<size_t>(slice) * elem;
          for (int64_t u = 0; u < updates; ++u) {
            copy_run(dst + static_cast<size_t>(offset_of(u)) * elem,
                     upd + static_cast<size_t>(u) * bytes, bytes);
          }
          return status::ok();
        }
        return with_numeric_type(type, [&](auto zero) {
          using T = decltype(zero);
          T* dst = rc.outputs[0].data<T>();
          const T* upd = rc.inputs[2].data<T>();
          for (int64_t u = 0; u < updates; ++u)
            apply(dst + offset_of(u), upd + u * slice, slice, red);
          return status::ok();
        });
      },
      {{0, 0}});
}

template <class I>
status scatter_elements_run(kernel_run_context& rc, const element_walk& w, dtype type,
                            reduction red) {
  const I* idx = rc.inputs[1].data<I>();
  TROUPE_RETURN_IF_ERROR(
      check_indices(idx, rc.inputs[1].elements(), w.axis_dim, rc, "ScatterElements"));
  copy_input_to_output(rc);
  const int64_t axis_stride = w.data_strides[static_cast<size_t>(w.axis)];
  auto run = [&](auto zero) {
    using T = decltype(zero);
    T* dst = rc.outputs[0].data<T>();
    const T* upd = rc.inputs[2].data<T>();
    w.for_each([&](int64_t p, int64_t base) {
      int64_t v = static_cast<int64_t>(idx[p]);
      if (v < 0) v += w.axis_dim;
      apply(dst + base + v * axis_stride, upd + p, 1, red);
    });
    return status::ok();
  };
  if (red == reduction::none) {
    switch (dtype_size(type)) {
      case 1:
        return run(uint8_t{});
      case 2:
        return run(uint16_t{});
      case 4:
        return run(uint32_t{});
      default:
        return run(uint64_t{});
    }
  }
  return with_numeric_type(type, run);
}

factory_result scatter_elements_factory(const kernel_create_context& ctx) {
  const reduction red = parse_reduction(ctx.node);
  TROUPE_RETURN_IF_ERROR(check_reduction_type(ctx, red));
  TROUPE_ASSIGN_OR_RETURN(auto w, make_walk(ctx));
  const dtype type = ctx.inputs[0].type;
  const bool i64 = ctx.inputs[1].type == dtype::i64;
  return make_function_kernel(
      [w, type, red, i64](kernel_run_context& rc) {
        return i64 ? scatter_elements_run<int64_t>(rc, w, type, red)
                   : scatter_elements_run<int32_t>(rc, w, type, red);
      },
      {{0, 0}});
}

// ---- OneHot
// --------------------------------------------------------------------------------------

/// Index `i` of a numeric tensor as int64; non-finite or huge floats map to a value no depth
/// accepts, so they produce an all-off row as the spec asks for out-of-range indices.
int64_t index_at(const tensor& t, int64_t i) {
  switch (t.type()) {
    case dtype::i64:
      return t.data<int64_t>()[i];
    case dtype::i32:
      return t.data<int32_t>()[i];
    case dtype::f32:
    case dtype::f64:
    case dtype::f16:
    case dtype::bf16: {
      const double v = t.value_as_double(i);
      if (!(std::fabs(v) < 9.0e15)) return std::numeric_limits<int64_t>::min();
      return static_cast<int64_t>(v);
    }
    default:
      return t.value_as_int64(i);
  }
}

factory_result one_hot_factory(const kernel_create_context& ctx) {
  const tensor_info& out = ctx.outputs[0];
  const tensor_info& idx = ctx.inputs[0];
  const int64_t out_rank = static_cast<int64_t>(out.rank());
  int64_t axis = ctx.node.attrs.get_int("axis", -1);
  if (axis < 0) axis += out_rank;
  if (axis < 0 || axis >= out_rank) return ctx.fail(error_code::invalid_model, "axis out of range");
  const int64_t depth = out.shape[static_cast<size_t>(axis)];
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis); d < idx.rank(); ++d) inner *= idx.shape[d];
  const int64_t n = idx.elements();
  const size_t elem = dtype_size(out.type);
  return make_function_kernel([=](kernel_run_context& rc) {
    const tensor& values = rc.inputs[2];
    if (values.elements() != 2) return invalid_argument("OneHot: values must hold two elements");
    const char* off_on = static_cast<const char*>(values.raw());
    char* dst = static_cast<char*>(rc.outputs[0].raw());
    fill_elems(dst, off_on, elem, rc.outputs[0].elements());
    const tensor& ind = rc.inputs[0];
    for (int64_t p = 0; p < n; ++p) {
      int64_t v = index_at(ind, p);
      if (v < -depth || v >= depth) continue;
      if (v < 0) v += depth;
      const int64_t o = p / inner, i = p - o * inner;
      std::memcpy(dst + static_cast<size_t>((o * depth + v) * inner + i) * elem, off_on + elem,
                  elem);
    }
    return status::ok();
  });
}

// ---- NonZero (plan-time only: its shape comes from the folded value)
// ------------------------------

factory_result non_zero_factory(const kernel_create_context& ctx) {
  return make_function_kernel([](kernel_run_context& rc) {
    const tensor& x = rc.inputs[0];
    tensor& y = rc.outputs[0];
    const int64_t n = x.elements();
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += x.value_as_double(i) != 0 ? 1 : 0;
    const int64_t rank = static_cast<int64_t>(x.rank());
    if (y.rank() != 2 || y.dim(1) != count || y.dim(0) != std::max<int64_t>(rank, 1)) {
      return invalid_argument("NonZero: input values differ from those the plan was built with");
    }
    int64_t* out = y.data<int64_t>();
    int64_t k = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (x.value_as_double(i) == 0) continue;
      int64_t rem = i;
      for (int64_t d = rank - 1; d >= 0; --d) {
        out[d * count + k] = rem % x.dim(static_cast<size_t>(d));
        rem /= x.dim(static_cast<size_t>(d));
      }
      if (rank == 0) out[k] = 0;
      ++k;
    }
    return status::ok();
  });
}

const std::vector<dtype>& index_input_types() {
  static const std::vector<dtype> t{dtype::i64, dtype::i32, dtype::f32, dtype::f64,
                                    dtype::i8,  dtype::u8,  dtype::i16, dtype::u16,
                                    dtype::u32, dtype::u64, dtype::f16};
  return t;
}

}  // namespace

void register_tensor_index(kernel_registry& r) {
  r.add({"", "Gather", backend::cpu, all_types(), 0, {}, gather_factory});
  r.add({"", "GatherElements", backend::cpu, all_types(), 0, {}, gather_elements_factory});
  r.add({"", "GatherND", backend::cpu, all_types(), 0, {}, gather_nd_factory});
  r.add({"", "ScatterND", backend::cpu, all_types(), 0, {}, scatter_nd_factory});
  r.add({"", "ScatterElements", backend::cpu, all_types(), 0, {}, scatter_elements_factory});
  r.add({"", "Scatter", backend::cpu, all_types(), 0, {}, scatter_elements_factory});
  r.add({"", "OneHot", backend::cpu, index_input_types(), 0, {}, one_hot_factory});
  r.add({"", "NonZero", backend::cpu, all_types(), 0, {}, non_zero_factory});
}

}  // namespace troupe::kernels::cpu
