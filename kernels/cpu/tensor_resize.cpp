// CPU Resize (opsets 10-18) and Upsample (7-9). The factory turns every axis into a tap table:
// for each output coordinate, K input coordinates (pre-multiplied by the input stride) and
// weights (K = 1 nearest, 2 linear, 4 cubic, more with antialias when downscaling). Leading axes
// that are not resized fold into a batch; compute walks output rows and sums over taps.
// Coordinates are computed in double, as ONNX's reference implementation does, so ties in
// nearest rounding land the same way.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/tensor_common.hpp"
#include "kernels/ops/resize_taps.hpp"
#include "kernels/ops/tensor_params.hpp"

namespace troupe::kernels::cpu {
namespace {

/// Everything compute needs, shared by the kernel's copies of its closure.
struct resize_plan {
  size_t elem = 0;
  bool interpolate = false;  // linear/cubic (float math) vs nearest (byte copies)
  float extrapolation = 0;
  uint64_t extrapolation_bytes = 0;  // the same value in the input's dtype, for nearest
  int64_t batch = 1;                 // product of the leading axes that are not resized
  int64_t in_plane = 0, out_plane = 0;
  std::vector<int64_t> out_dims;  // the resized tail's output dims
  std::vector<axis_taps> axes;    // one per tail axis
  int64_t rows = 0;               // batch * product of out_dims but the last
  bool bilinear = false;          // two linear tail axes, no extrapolation: bilinear_rows
};

template <class T>
void nearest_rows(const resize_plan& p, const T* src, T* dst) {
  const int64_t r = static_cast<int64_t>(p.out_dims.size());
  const int64_t inner = p.out_dims.back();
  const axis_taps& last = p.axes.back();
  const int64_t rows_per_batch = p.rows / p.batch;
  T extrap;
  std::memcpy(&extrap, &p.extrapolation_bytes, sizeof(T));
  parallel_rows(p.rows, static_cast<size_t>(inner) * sizeof(T), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / rows_per_batch;
      int64_t rem = row - b * rows_per_batch;
      int64_t off = b * p.in_plane;
      bool outside = false;
      for (int64_t d = r - 2; d >= 0; --d) {
        const int64_t n = p.out_dims[static_cast<size_t>(d)];
        const int64_t c = rem % n;
        rem /= n;
        const axis_taps& a = p.axes[static_cast<size_t>(d)];
        off += a.offset[static_cast<size_t>(c)];
        outside |= a.outside[static_cast<size_t>(c)] != 0;
      }
      T* out = dst + row * inner;
      if (outside) {
        std::fill_n(out, inner, extrap);
        continue;
      }
      const T* in = src + off;
      const int64_t* lo = last.offset.data();
      for (int64_t j = 0; j < inner; ++j) out[j] = in[lo[j]];
      if (last.any_outside) {
        for (int64_t j = 0; j < inner; ++j) {
          if (last.outside[static_cast<size_t>(j)]) out[j] = extrap;
        }
      }
    }
  });
}

/// Tap combinations of the outer axes per output row (e.g. 2 for bilinear, 16 for 3-D cubic);
/// the factory refuses filters needing more, so compute keeps them on the stack.
constexpr int64_t max_resize_combos = 256;

void interpolate_rows(const resize_plan& p, const float* src, float* dst) {
  const int64_t r = static_cast<int64_t>(p.out_dims.size());
  const int64_t inner = p.out_dims.back();
  const axis_taps& last = p.axes.back();
  const int64_t kl = last.k;
  const int64_t rows_per_batch = p.rows / p.batch;
  parallel_rows(
      p.rows, static_cast<size_t>(inner * kl) * sizeof(float), [&](int64_t begin, int64_t end) {
        int64_t coord[max_plan_rank];
        int64_t tap[max_plan_rank];
        float combo_weight[max_resize_combos];
        const float* combo_src[max_resize_combos];
        for (int64_t row = begin; row < end; ++row) {
          const int64_t b = row / rows_per_batch;
          int64_t rem = row - b * rows_per_batch;
          bool outside = false;
          for (int64_t d = r - 2; d >= 0; --d) {
            const int64_t n = p.out_dims[static_cast<size_t>(d)];
            coord[d] = rem % n;
            rem /= n;
            outside |= p.axes[static_cast<size_t>(d)].outside[static_cast<size_t>(coord[d])] != 0;
            tap[d] = 0;
          }
          float* out = dst + row * inner;
          if (outside) {
            std::fill_n(out, inner, p.extrapolation);
            continue;
          }
          const float* plane = src + b * p.in_plane;
          // The outer axes' tap combinations for this row: a weight and a source offset each.
          int64_t combos = 0;
          while (true) {
            float w = 1.0f;
            int64_t off = 0;
            for (int64_t d = 0; d + 1 < r; ++d) {
              const axis_taps& a = p.axes[static_cast<size_t>(d)];
              const size_t t = static_cast<size_t>(coord[d] * a.k + tap[d]);
              w *= a.weight[t];
              off += a.offset[t];
            }
            if (w != 0.0f) {
              combo_weight[combos] = w;
              combo_src[combos] = plane + off;
              ++combos;
            }
            int64_t d = r - 2;
            for (; d >= 0; --d) {
              if (++tap[d] < p.axes[static_cast<size_t>(d)].k) break;
              tap[d] = 0;
            }
            if (d < 0) break;
          }
          const int64_t* __restrict lo = last.offset.data();
          const float* __restrict lw = last.weight.data();
          if (kl == 2) {
            for (int64_t j = 0; j < inner; ++j) {
              const int64_t o0 = lo[2 * j], o1 = lo[2 * j + 1];
              const float w0 = lw[2 * j], w1 = lw[2 * j + 1];
              float acc = 0;
              for (int64_t c = 0; c < combos; ++c) {
                const float* __restrict in = combo_src[c];
                acc += combo_weight[c] * (w0 * in[o0] + w1 * in[o1]);
              }
              out[j] = acc;
            }
          } else {
            for (int64_t j = 0; j < inner; ++j) {
              float acc = 0;
              for (int64_t c = 0; c < combos; ++c) {
                const float* __restrict in = combo_src[c];
                float row = 0;
                for (int64_t t = 0; t < kl; ++t) row += lw[j * kl + t] * in[lo[j * kl + t]];
                acc += combo_weight[c] * row;
              }
              out[j] = acc;
            }
          }
          if (last.any_outside) {
            for (int64_t j = 0; j < inner; ++j) {
              if (last.outside[static_cast<size_t>(j)]) out[j] = p.extrapolation;
            }
          }
        }
      });
}

/// Columns up to which the 2-D linear path caches horizontally interpolated source rows on the
/// stack (two rows of floats per thread).
constexpr int64_t max_cached_columns = 4096;

/// 2-D linear resize over the last two axes: each source row is interpolated horizontally once
/// per thread and reused by every output row that blends it (2x upsampling reads each twice),
/// then output rows are a vectorizable blend of two cached rows.
void bilinear_rows(const resize_plan& p, const float* src, float* dst) {
  const int64_t inner = p.out_dims.back();
  const int64_t out_h = p.out_dims[0];
  const axis_taps& ya = p.axes[0];
  const axis_taps& xa = p.axes[1];
  parallel_rows(p.rows, static_cast<size_t>(inner) * 2 * sizeof(float),
                [&](int64_t begin, int64_t end) {
                  float cache[2][max_cached_columns];
                  const float* cached_src[2] = {nullptr, nullptr};  // source row each slot holds
                  const int64_t* __restrict lo = xa.offset.data();
                  const float* __restrict lw = xa.weight.data();
                  for (int64_t row = begin; row < end; ++row) {
                    const int64_t b = row / out_h, y = row - b * out_h;
                    float* __restrict out = dst + row * inner;
                    const float* plane = src + b * p.in_plane;
                    const float* want[2] = {plane + ya.offset[static_cast<size_t>(2 * y)],
                                            plane + ya.offset[static_cast<size_t>(2 * y + 1)]};
                    const float wy[2] = {ya.weight[static_cast<size_t>(2 * y)],
                                         ya.weight[static_cast<size_t>(2 * y + 1)]};
                    int slot_of[2] = {0, 0};
                    for (int t = 0; t < 2; ++t) {
                      int s = cached_src[0] == want[t] ? 0 : cached_src[1] == want[t] ? 1 : -1;
                      if (s < 0) {
                        // Fill a slot this row does not still need: for tap 0, not the one holding
                        // tap 1's row; for tap 1, not the one tap 0 took.
                        s = t == 0 ? (cached_src[0] == want[1] ? 1 : 0) : 1 - slot_of[0];
                        const float* __restrict in = want[t];
                        float* __restrict c = cache[s];
                        for (int64_t j = 0; j < inner; ++j)
                          c[j] = lw[2 * j] * in[lo[2 * j]] + lw[2 * j + 1] * in[lo[2 * j + 1]];
                        cached_src[s] = want[t];
                      }
                      slot_of[t] = s;
                    }
                    const float* __restrict c0 = cache[slot_of[0]];
                    const float* __restrict c1 = cache[slot_of[1]];
                    const float w0 = wy[0], w1 = wy[1];
                    for (int64_t j = 0; j < inner; ++j) out[j] = w0 * c0[j] + w1 * c1[j];
                  }
                });
}

expected<std::unique_ptr<kernel>> resize_factory(const kernel_create_context& ctx) {
  auto params = resolve_resize(op_view(ctx));
  if (!params) return params.error();
  const resize_params& rp = *params;
  const tensor_info& in = ctx.inputs[0];
  auto p = std::make_shared<resize_plan>();
  p->elem = dtype_size(in.type);
  p->interpolate = rp.mode != resize_mode::nearest;
  p->extrapolation = rp.extrapolation_value;
  store_scalar(in.type, rp.extrapolation_value, &p->extrapolation_bytes);
  if (p->interpolate && in.type != dtype::f32) {
    return ctx.fail(error_code::unsupported,
                    "linear/cubic resize of dtype " + std::string(dtype_name(in.type)));
  }
  if (p->elem != 1 && p->elem != 2 && p->elem != 4 && p->elem != 8) {
    return ctx.fail(error_code::unsupported, "dtype " + std::string(dtype_name(in.type)));
  }
  const size_t rank = in.rank();
  const auto strides = row_major_strides(in.shape);
  std::vector<axis_taps> taps;
  for (size_t d = 0; d < rank; ++d) {
    taps.push_back(make_resize_axis(rp, d, in.shape[d], rp.out_shape[d], strides[d]));
  }
  // Leading axes that map every output coordinate to the same input one form the batch.
  size_t lead = 0;
  while (lead < rank &&
         resize_axis_is_identity(taps[lead], in.shape[lead], rp.out_shape[lead], strides[lead])) {
    ++lead;
  }
  if (lead == rank && rank > 0) --lead;  // keep one axis so rows have an inner dimension
  if (rank - lead > max_plan_rank)
    return ctx.fail(error_code::unsupported, "rank above " + std::to_string(max_plan_rank));
  if (p->interpolate) {
    int64_t combos = 1;
    for (size_t d = lead; d + 1 < rank; ++d) {
      combos *= taps[d].k;
      if (combos > max_resize_combos) {
        return ctx.fail(error_code::unsupported,
                        "an interpolation filter this wide over this many axes");
      }
    }
  }
  p->batch = 1;
  for (size_t d = 0; d < lead; ++d) p->batch *= in.shape[d];
  p->in_plane = 1;
  p->out_plane = 1;
  for (size_t d = lead; d < rank; ++d) {
    p->in_plane *= in.shape[d];
    p->out_plane *= rp.out_shape[d];
    p->out_dims.push_back(rp.out_shape[d]);
    p->axes.push_back(std::move(taps[d]));
  }
  p->bilinear = p->interpolate && p->axes.size() == 2 && p->axes[0].k == 2 && p->axes[1].k == 2 &&
                !p->axes[0].any_outside && !p->axes[1].any_outside &&
                p->out_dims[1] <= max_cached_columns;
  const int64_t out_count = element_count(rp.out_shape);
  p->rows = rank == 0 || p->out_dims.back() == 0 ? 0 : out_count / p->out_dims.back();
  if (rank == 0) {
    return make_function_kernel([p](kernel_run_context& rc) {
      std::memcpy(rc.outputs[0].raw(), rc.inputs[0].raw(), p->elem);
      return status::ok();
    });
  }
  return make_function_kernel([p](kernel_run_context& rc) {
    if (p->rows == 0 || rc.inputs[0].elements() == 0) return status::ok();
    const void* x = rc.inputs[0].raw();
    void* y = rc.outputs[0].raw();
    if (p->interpolate) {
      if (p->bilinear) {
        bilinear_rows(*p, static_cast<const float*>(x), static_cast<float*>(y));
      } else {
        interpolate_rows(*p, static_cast<const float*>(x), static_cast<float*>(y));
      }
      return status::ok();
    }
    switch (p->elem) {
      case 1:
        nearest_rows(*p, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y));
        break;
      case 2:
        nearest_rows(*p, static_cast<const uint16_t*>(x), static_cast<uint16_t*>(y));
        break;
      case 4:
        nearest_rows(*p, static_cast<const uint32_t*>(x), static_cast<uint32_t*>(y));
        break;
      default:
        nearest_rows(*p, static_cast<const uint64_t*>(x), static_cast<uint64_t*>(y));
        break;
    }
    return status::ok();
  });
}

}  // namespace

void register_tensor_resize(kernel_registry& r) {
  r.add({"", "Resize", backend::cpu, all_types(), 0, {}, resize_factory});
  r.add({"", "Upsample", backend::cpu, all_types(), 0, {}, resize_factory});
}

}  // namespace troupe::kernels::cpu
