// MaxPool and AveragePool on oneDNN's pooling_v2 where its semantics match ONNX's, else on a
// direct loop; GlobalAveragePool and GlobalMaxPool as plain reductions over each (n, c) plane.
// The troupe-domain forms with channels_last = 1 (from the layout pass) take X and Y stored
// (N, D1..Dn, C): oneDNN pools them natively (nwc/nhwc/ndhwc), the direct loops read with a
// channel stride.
//
// oneDNN divides an include-padding average by the full kernel size, while ONNX counts only the
// part of the window inside the declared pads: the two differ when ceil_mode adds a window that
// runs past pads_end, so that case (and windows that lie wholly in padding, and MaxPool's Indices
// output) takes the direct loop.
#include <algorithm>
#include <array>
#include <limits>

#include "kernels/cpu/dnnl_common.hpp"

namespace troupe::kernels::cpu {
namespace {

using dnnl::memory;
using namespace dnnl_util;

// Pooling geometry padded to three spatial axes (leading axes of size 1) for the direct loop.
struct pool3 {
  int64_t planes = 0;  // N * C
  int64_t channels = 1;
  bool channels_last = false;  // X, Y stored (N, D..., C): a plane's elements are C apart
  std::array<int64_t, 3> in{1, 1, 1}, out{1, 1, 1}, k{1, 1, 1}, s{1, 1, 1}, d{1, 1, 1}, pb{0, 0, 0},
      pe{0, 0, 0};
  size_t rank = 0;  // real spatial axes
};

pool3 to_pool3(const pool_geometry& g, bool channels_last) {
  pool3 p;
  p.rank = g.kernel.size();
  p.planes = g.input_shape[0] * g.input_shape[1];
  p.channels = g.input_shape[1];
  p.channels_last = channels_last;
  const size_t off = 3 - p.rank;
  for (size_t i = 0; i < p.rank; ++i) {
    p.in[off + i] = g.input_shape[2 + i];
    p.out[off + i] = g.output_shape[2 + i];
    p.k[off + i] = g.kernel[i];
    p.s[off + i] = g.strides[i];
    p.d[off + i] = g.dilations[i];
    p.pb[off + i] = g.pads_begin[i];
    p.pe[off + i] = g.pads_end[i];
  }
  return p;
}

enum class pool_kind { max, avg_exclude_pad, avg_include_pad };

// Window positions along one axis for output index o: [first, last) taps j whose input index
// o*s - pb + j*d lies in [0, in); `declared` counts taps inside the declared padded extent.
struct taps {
  int64_t first, last, declared;
};
taps axis_taps(const pool3& p, int a, int64_t o) {
  const int64_t start = o * p.s[a] - p.pb[a];
  taps t{0, 0, 0};
  t.first = start >= 0 ? 0 : (-start + p.d[a] - 1) / p.d[a];
  const int64_t end_excl = p.in[a] - start;  // taps j with j*d < end_excl are inside the input
  t.last = end_excl <= 0 ? 0 : std::min(p.k[a], (end_excl + p.d[a] - 1) / p.d[a]);
  t.first = std::min(t.first, t.last);
  const int64_t declared_excl = p.in[a] + p.pe[a] - start;
  t.declared = declared_excl <= 0 ? 0 : std::min(p.k[a], (declared_excl + p.d[a] - 1) / p.d[a]);
  return t;
}

// The direct pooling loop (T: float, or int8/uint8 for MaxPool). `indices` (MaxPool's second
// output) may be null; column-major (storage_order 1) reverses the spatial axes of the flattened
// index.
template <class T>
void pool_direct(const pool3& p, pool_kind kind, const T* x, T* y, int64_t* indices,
                 bool column_major) {
  const int64_t in_plane = p.in[0] * p.in[1] * p.in[2];
  const int64_t out_plane = p.out[0] * p.out[1] * p.out[2];
  // Element (plane, i) of X lies at x_base(plane) + i * step; likewise for Y.
  const int64_t step = p.channels_last ? p.channels : 1;
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < p.planes; ++plane) {
    const int64_t n = plane / p.channels, c = plane % p.channels;
    const T* xp = p.channels_last ? x + n * in_plane * p.channels + c : x + plane * in_plane;
    T* yp = p.channels_last ? y + n * out_plane * p.channels + c : y + plane * out_plane;
    for (int64_t o0 = 0; o0 < p.out[0]; ++o0) {
      const taps t0 = axis_taps(p, 0, o0);
      for (int64_t o1 = 0; o1 < p.out[1]; ++o1) {
        const taps t1 = axis_taps(p, 1, o1);
        for (int64_t o2 = 0; o2 < p.out[2]; ++o2) {
          const taps t2 = axis_taps(p, 2, o2);
          const int64_t out_index = (o0 * p.out[1] + o1) * p.out[2] + o2;
          T best = std::numeric_limits<T>::lowest();
          int64_t best_at = -1;
          float sum = 0.0f;
          for (int64_t j0 = t0.first; j0 < t0.last; ++j0) {
            const int64_t i0 = o0 * p.s[0] - p.pb[0] + j0 * p.d[0];
            for (int64_t j1 = t1.first; j1 < t1.last; ++j1) {
              const int64_t i1 = o1 * p.s[1] - p.pb[1] + j1 * p.d[1];
              const T* row = xp + (i0 * p.in[1] + i1) * p.in[2] * step;
              for (int64_t j2 = t2.first; j2 < t2.last; ++j2) {
                const int64_t i2 = o2 * p.s[2] - p.pb[2] + j2 * p.d[2];
                const T v = row[i2 * step];
                if (kind == pool_kind::max) {
                  if (v > best || best_at < 0) {
                    best = v;
                    best_at = column_major ? (i2 * p.in[1] + i1) * p.in[0] + i0
                                           : (i0 * p.in[1] + i1) * p.in[2] + i2;
                  }
                } else {
                  sum += static_cast<float>(v);
                }
              }
            }
          }
          if (kind == pool_kind::max) {
            yp[out_index * step] = best;
            if (indices)
              indices[plane * out_plane + out_index] =
                  best_at < 0 ? -1 : plane * in_plane + best_at;
          } else {
            const int64_t count =
                kind == pool_kind::avg_include_pad
                    ? t0.declared * t1.declared * t2.declared
                    : (t0.last - t0.first) * (t1.last - t1.first) * (t2.last - t2.first);
            yp[out_index * step] =
                static_cast<T>(count > 0 ? sum / static_cast<float>(count) : 0.0f);
          }
        }
      }
    }
  }
}

// oneDNN descriptor of a logical (N, C, D...) f32 tensor as stored.
memory::desc pool_desc(const shape_t& logical, bool channels_last) {
  if (!channels_last) return plain_desc(logical);
  const memory::format_tag tag = logical.size() == 3   ? memory::format_tag::nwc
                                 : logical.size() == 4 ? memory::format_tag::nhwc
                                                       : memory::format_tag::ndhwc;
  return memory::desc(to_dims(logical), memory::data_type::f32, tag);
}

// The logical (N, C, D...) form of input 0 of a pooling node.
expected<tensor_info> logical_input(const kernel_create_context& ctx, bool channels_last) {
  tensor_info x = ctx.inputs[0];
  if (!channels_last) return x;
  if (x.rank() < 3 || x.rank() > 5) {
    return ctx.fail(error_code::invalid_model, "X must have rank 3 to 5, got " + x.to_string());
  }
  x.shape = channels_last_to_logical(x.shape);
  return x;
}

expected<std::unique_ptr<kernel>> create_pool(const kernel_create_context& ctx, bool is_max) {
  const op_node& node = ctx.node;
  const bool channels_last = is_channels_last(node);
  TROUPE_ASSIGN_OR_RETURN(tensor_info x, logical_input(ctx, channels_last));
  TROUPE_ASSIGN_OR_RETURN(auto g, resolve_pool(node, x));
  if (element_count(g.output_shape) == 0) return make_noop_kernel();
  const pool_kind kind = is_max ? pool_kind::max
                         : node.attrs.get_int("count_include_pad", 0) != 0
                             ? pool_kind::avg_include_pad
                             : pool_kind::avg_exclude_pad;
  const bool want_indices = is_max && ctx.outputs.size() > 1 && ctx.outputs[1].present();
  if (want_indices && channels_last) {
    return ctx.fail(error_code::invalid_model, "the channels-last MaxPool has no Indices output");
  }
  const bool column_major = node.attrs.get_int("storage_order", 0) == 1;
  if (element_count(g.input_shape) == 0) {
    return ctx.fail(error_code::unsupported, "empty input with a non-empty output");
  }

  const dtype type = ctx.inputs[0].type;
  // Can oneDNN compute exactly this?
  bool dnnl_ok = !want_indices && type == dtype::f32;
  memory::dims pads_end;
  for (size_t i = 0; i < g.kernel.size() && dnnl_ok; ++i) {
    const int64_t extent = (g.kernel[i] - 1) * g.dilations[i] + 1;
    const int64_t reach = g.reach_end(i);
    pads_end.push_back(reach);
    if (g.pads_begin[i] >= extent || reach >= extent) dnnl_ok = false;
    if (kind == pool_kind::avg_include_pad && reach != g.pads_end[i]) dnnl_ok = false;
  }
  if (dnnl_ok) {
    try {
      const memory::desc x_md = pool_desc(g.input_shape, channels_last),
                         y_md = pool_desc(g.output_shape, channels_last);
      memory::dims dil;
      for (int64_t d : g.dilations) dil.push_back(d - 1);
      const dnnl::algorithm alg = kind == pool_kind::max ? dnnl::algorithm::pooling_max
                                  : kind == pool_kind::avg_include_pad
                                      ? dnnl::algorithm::pooling_avg_include_padding
                                      : dnnl::algorithm::pooling_avg_exclude_padding;
      dnnl::pooling_v2_forward::desc d(dnnl::prop_kind::forward_inference, alg, x_md, y_md,
                                       to_dims(g.strides), to_dims(g.kernel), dil,
                                       to_dims(g.pads_begin), pads_end);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::pooling_v2_forward::primitive_desc pd(d, attr, cpu_engine());
      dnnl_program prog;
      prog.add_step(
          dnnl::pooling_v2_forward(pd),
          {{DNNL_ARG_SRC, prog.bind_input(0, x_md)}, {DNNL_ARG_DST, prog.bind_output(0, y_md)}},
          pd.scratchpad_desc());
      return std::unique_ptr<kernel>(new program_kernel(node, std::move(prog)));
    } catch (const dnnl::error&) {
      // Fall through to the direct loop, which handles every geometry resolve_pool accepts.
    }
  }
  const pool3 p = to_pool3(g, channels_last);
  auto direct = [&]<class T>(T) {
    return make_function_kernel([p, kind, want_indices, column_major](kernel_run_context& rc) {
      pool_direct<T>(p, kind, rc.inputs[0].data<T>(), rc.outputs[0].data<T>(),
                     want_indices ? rc.outputs[1].data<int64_t>() : nullptr, column_major);
      return status::ok();
    });
  };
  if (type == dtype::u8 && is_max) return direct(uint8_t{});
  if (type == dtype::i8 && is_max) return direct(int8_t{});
  if (type != dtype::f32)
    return ctx.fail(error_code::unsupported, "dtype " + std::string(dtype_name(type)));
  return direct(float{});
}

// Channels-last global pooling: Y (N, 1.., C) accumulates over X's (N, D..., C) rows in place (no
// scratch), then scales.
expected<std::unique_ptr<kernel>> create_global_pool_channels_last(const kernel_create_context& ctx,
                                                                   bool is_max) {
  const shape_t& xs = ctx.inputs[0].shape;
  if (xs.size() < 3) return ctx.fail(error_code::invalid_model, "X must have rank >= 3");
  const int64_t batch = xs[0], channels = xs.back();
  const int64_t plane = element_count(shape_t(xs.begin() + 1, xs.end() - 1));
  if (batch * channels == 0) return make_noop_kernel();
  if (plane == 0) return ctx.fail(error_code::unsupported, "global pooling over an empty plane");
  return make_function_kernel([batch, channels, plane, is_max](kernel_run_context& rc) {
    const float* x = rc.inputs[0].data<float>();
    float* y = rc.outputs[0].data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < batch; ++n) {
      const float* xn = x + n * plane * channels;
      float* yn = y + n * channels;
      for (int64_t c = 0; c < channels; ++c) yn[c] = xn[c];
      for (int64_t j = 1; j < plane; ++j) {
        const float* row = xn + j * channels;
        if (is_max) {
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) yn[c] = std::max(yn[c], row[c]);
        } else {
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) yn[c] += row[c];
        }
      }
      if (!is_max) {
        const float scale = 1.0f / static_cast<float>(plane);
        for (int64_t c = 0; c < channels; ++c) yn[c] *= scale;
      }
    }
    return status::ok();
  });
}

expected<std::unique_ptr<kernel>> create_global_pool(const kernel_create_context& ctx,
                                                     bool is_max) {
  if (is_channels_last(ctx.node)) return create_global_pool_channels_last(ctx, is_max);
  const shape_t& xs = ctx.inputs[0].shape;
  if (xs.size() < 3) return ctx.fail(error_code::invalid_model, "X must have rank >= 3");
  const int64_t planes = xs[0] * xs[1];
  const int64_t plane = element_count(shape_t(xs.begin() + 2, xs.end()));
  if (planes == 0) return make_noop_kernel();
  if (plane == 0) return ctx.fail(error_code::unsupported, "global pooling over an empty plane");
  return make_function_kernel([planes, plane, is_max](kernel_run_context& rc) {
    const float* x = rc.inputs[0].data<float>();
    float* y = rc.outputs[0].data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < planes; ++i) {
      const float* xp = x + i * plane;
      if (is_max) {
        float m = xp[0];
        for (int64_t j = 1; j < plane; ++j) m = std::max(m, xp[j]);
        y[i] = m;
      } else {
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < plane; ++j) sum += xp[j];
        y[i] = sum / static_cast<float>(plane);
      }
    }
    return status::ok();
  });
}

}  // namespace

void register_dnnl_pool(kernel_registry& r) {
  r.add({"",
         "MaxPool",
         backend::cpu,
         {dtype::f32, dtype::u8, dtype::i8},
         0,
         {},
         [](const kernel_create_context& ctx) { return create_pool(ctx, true); }});
  r.add(
      {"", "AveragePool", backend::cpu, float_types(), 0, {}, [](const kernel_create_context& ctx) {
         return create_pool(ctx, false);
       }});
  r.add({"",
         "GlobalAveragePool",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_global_pool(ctx, false); }});
  r.add({"",
         "GlobalMaxPool",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_global_pool(ctx, true); }});
  // The layout pass's channels-last forms (the same factories read `channels_last`).
  r.add({"troupe",
         "MaxPool",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_pool(ctx, true); }});
  r.add({"troupe",
         "AveragePool",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_pool(ctx, false); }});
  r.add({"troupe",
         "GlobalAveragePool",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_global_pool(ctx, false); }});
  r.add({"troupe",
         "GlobalMaxPool",
         backend::cpu,
         float_types(),
         0,
         {},
         [](const kernel_create_context& ctx) { return create_global_pool(ctx, true); }});
}

}  // namespace troupe::kernels::cpu
