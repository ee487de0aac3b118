// CPU data-movement kernels: views (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout),
// Transpose, DepthToSpace, SpaceToDepth, Concat, Split, Slice, Expand, Tile, Pad. Every factory
// turns the node's fixed shapes into a copy plan; compute only runs the plan.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/tensor_common.hpp"
#include "kernels/op_schema.hpp"
#include "kernels/ops/tensor_params.hpp"

namespace troupe::kernels::cpu {
namespace {

using factory_result = expected<std::unique_ptr<kernel>>;

status fail_from(const kernel_create_context& ctx, const status& s) {
  return s.is_ok() ? s : ctx.fail(s.code(), s.message());
}

factory_result view_factory(const kernel_create_context&) {
  return make_view_kernel();
}

// Inference keeps output 0 equal to input 0; the mask (when asked for) says every element is kept.
factory_result dropout_factory(const kernel_create_context& ctx) {
  if (ctx.outputs.size() < 2) return make_view_kernel();
  const dtype mask_type = ctx.outputs[1].type;
  uint64_t one = 0;
  store_scalar(mask_type, 1.0, &one);
  const size_t mask_elem = dtype_size(mask_type);
  return make_function_kernel([one, mask_elem](kernel_run_context& rc) {
    copy_bytes(rc.outputs[0].raw(), rc.inputs[0].raw(), rc.inputs[0].bytes());
    if (rc.outputs.size() > 1 && rc.outputs[1].defined()) {
      fill_elems(rc.outputs[1].raw(), &one, mask_elem, rc.outputs[1].elements());
    }
    return status::ok();
  });
}

factory_result plan_kernel(transpose_plan plan) {
  return make_function_kernel([plan = std::move(plan)](kernel_run_context& rc) {
    plan.run(rc.outputs[0].raw(), rc.inputs[0].raw());
    return status::ok();
  });
}

factory_result copy_kernel(strided_copy plan) {
  return make_function_kernel([plan = std::move(plan)](kernel_run_context& rc) {
    plan.run(rc.outputs[0].raw(), rc.inputs[0].raw());
    return status::ok();
  });
}

factory_result transpose_factory(const kernel_create_context& ctx) {
  const tensor_info& in = ctx.inputs[0];
  std::vector<int64_t> perm = ctx.node.attrs.get_ints("perm");
  if (!ctx.node.attrs.has("perm")) {
    perm.resize(in.rank());
    for (size_t i = 0; i < in.rank(); ++i) perm[i] = static_cast<int64_t>(in.rank() - 1 - i);
  }
  if (perm.size() != in.rank())
    return ctx.fail(error_code::invalid_model, "perm does not match the rank");
  auto plan = transpose_plan::make(dtype_size(in.type), in.shape, perm);
  if (!plan) return fail_from(ctx, plan.error());
  return plan_kernel(std::move(*plan));
}

// DepthToSpace and SpaceToDepth are transposes of a 6-D view of the NCHW input.
factory_result depth_to_space_factory(const kernel_create_context& ctx) {
  const tensor_info& in = ctx.inputs[0];
  const int64_t b = ctx.node.attrs.get_int("blocksize", 1);
  const bool crd = ctx.node.attrs.get_string("mode", "DCR") == "CRD";
  const int64_t n = in.shape[0], c = in.shape[1] / (b * b), h = in.shape[2], w = in.shape[3];
  const shape_t view = crd ? shape_t{n, c, b, b, h, w} : shape_t{n, b, b, c, h, w};
  const std::vector<int64_t> perm =
      crd ? std::vector<int64_t>{0, 1, 4, 2, 5, 3} : std::vector<int64_t>{0, 3, 4, 1, 5, 2};
  auto plan = transpose_plan::make(dtype_size(in.type), view, perm);
  if (!plan) return fail_from(ctx, plan.error());
  return plan_kernel(std::move(*plan));
}

factory_result space_to_depth_factory(const kernel_create_context& ctx) {
  const tensor_info& in = ctx.inputs[0];
  const int64_t b = ctx.node.attrs.get_int("blocksize", 1);
  const shape_t view{in.shape[0], in.shape[1], in.shape[2] / b, b, in.shape[3] / b, b};
  auto plan = transpose_plan::make(dtype_size(in.type), view, {0, 3, 5, 1, 2, 4});
  if (!plan) return fail_from(ctx, plan.error());
  return plan_kernel(std::move(*plan));
}

// outer = product of the dims before `axis`, inner = product of those after it.
void outer_inner(const shape_t& shape, int64_t axis, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i) {
    if (i < axis) *outer *= shape[static_cast<size_t>(i)];
    if (i > axis) *inner *= shape[static_cast<size_t>(i)];
  }
}

factory_result concat_factory(const kernel_create_context& ctx) {
  const tensor_info& out = ctx.outputs[0];
  auto axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), static_cast<int64_t>(out.rank()));
  if (!axis) return fail_from(ctx, axis.error());
  int64_t outer, inner;
  outer_inner(out.shape, *axis, &outer, &inner);
  const size_t elem = dtype_size(out.type);
  std::vector<size_t> chunk_bytes;  // per input: bytes it adds to each outer row
  for (const auto& in : ctx.inputs) {
    chunk_bytes.push_back(static_cast<size_t>(in.shape[static_cast<size_t>(*axis)] * inner) * elem);
  }
  const size_t row_bytes =
      static_cast<size_t>(out.shape[static_cast<size_t>(*axis)] * inner) * elem;
  return make_function_kernel([chunk_bytes, row_bytes, outer](kernel_run_context& rc) {
    char* dst = static_cast<char*>(rc.outputs[0].raw());
    if (outer == 1) {
      for (size_t k = 0; k < chunk_bytes.size(); ++k) {
        copy_bytes(dst, rc.inputs[k].raw(), chunk_bytes[k]);
        dst += chunk_bytes[k];
      }
      return status::ok();
    }
    parallel_rows(outer, row_bytes, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        char* out_row = dst + static_cast<size_t>(o) * row_bytes;
        for (size_t k = 0; k < chunk_bytes.size(); ++k) {
          const size_t n = chunk_bytes[k];
          std::memcpy(out_row,
                      static_cast<const char*>(rc.inputs[k].raw()) + static_cast<size_t>(o) * n, n);
          out_row += n;
        }
      }
    });
    return status::ok();
  });
}

factory_result split_factory(const kernel_create_context& ctx) {
  auto p = resolve_split(op_view(ctx), ctx.outputs.size());
  if (!p) return p.error();
  const tensor_info& in = ctx.inputs[0];
  int64_t outer, inner;
  outer_inner(in.shape, p->axis, &outer, &inner);
  const size_t elem = dtype_size(in.type);
  std::vector<size_t> chunk_bytes;
  for (int64_t s : p->sizes) chunk_bytes.push_back(static_cast<size_t>(s * inner) * elem);
  const size_t row_bytes =
      static_cast<size_t>(in.shape[static_cast<size_t>(p->axis)] * inner) * elem;
  return make_function_kernel([chunk_bytes, row_bytes, outer](kernel_run_context& rc) {
    const char* src = static_cast<const char*>(rc.inputs[0].raw());
    parallel_rows(outer, row_bytes, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const char* in_row = src + static_cast<size_t>(o) * row_bytes;
        for (size_t k = 0; k < chunk_bytes.size(); ++k) {
          const size_t n = chunk_bytes[k];
          if (k < rc.outputs.size() && rc.outputs[k].defined() && n) {
            std::memcpy(static_cast<char*>(rc.outputs[k].raw()) + static_cast<size_t>(o) * n,
                        in_row, n);
          }
          in_row += n;
        }
      }
    });
    return status::ok();
  });
}

factory_result slice_factory(const kernel_create_context& ctx) {
  auto p = resolve_slice(op_view(ctx));
  if (!p) return p.error();
  const tensor_info& in = ctx.inputs[0];
  const auto in_strides = row_major_strides(in.shape);
  std::vector<int64_t> strides(in.rank());
  int64_t offset = 0;
  for (size_t d = 0; d < in.rank(); ++d) {
    strides[d] = in_strides[d] * p->steps[d];
    offset += in_strides[d] * p->starts[d];
  }
  auto plan = strided_copy::make(dtype_size(in.type), p->out_shape, strides, offset);
  if (!plan) return fail_from(ctx, plan.error());
  return copy_kernel(std::move(*plan));
}

factory_result expand_factory(const kernel_create_context& ctx) {
  const tensor_info& in = ctx.inputs[0];
  const tensor_info& out = ctx.outputs[0];
  if (out.rank() < in.rank())
    return ctx.fail(error_code::internal, "Expand output rank below input rank");
  const auto in_strides = row_major_strides(in.shape);
  const size_t lead = out.rank() - in.rank();
  std::vector<int64_t> strides(out.rank(), 0);
  for (size_t d = lead; d < out.rank(); ++d) {
    const size_t i = d - lead;
    if (in.shape[i] != out.shape[d] && in.shape[i] != 1) {
      return ctx.fail(error_code::internal, "Expand shapes do not broadcast");
    }
    strides[d] = in.shape[i] == 1 ? 0 : in_strides[i];
  }
  auto plan = strided_copy::make(dtype_size(in.type), out.shape, strides);
  if (!plan) return fail_from(ctx, plan.error());
  return copy_kernel(std::move(*plan));
}

// Tile reads the output as [r0, d0, r1, d1, ...]: the repeat axes have stride 0.
factory_result tile_factory(const kernel_create_context& ctx) {
  const tensor_info& in = ctx.inputs[0];
  const tensor_info& out = ctx.outputs[0];
  if (out.rank() != in.rank()) return ctx.fail(error_code::internal, "Tile ranks differ");
  const auto in_strides = row_major_strides(in.shape);
  shape_t view;
  std::vector<int64_t> strides;
  for (size_t d = 0; d < in.rank(); ++d) {
    view.push_back(in.shape[d] == 0 ? 0 : out.shape[d] / in.shape[d]);
    strides.push_back(0);
    view.push_back(in.shape[d]);
    strides.push_back(in_strides[d]);
  }
  auto plan = strided_copy::make(dtype_size(in.type), view, strides);
  if (!plan) return fail_from(ctx, plan.error());
  return copy_kernel(std::move(*plan));
}

// ---- Pad --------------------------------------------------------------------------------------

/// Per output axis, the input coordinate each output coordinate reads (-1: the constant).
struct pad_plan {
  size_t elem = 0;
  shape_t out_shape;
  std::vector<int64_t> in_strides;
  std::vector<int64_t> map;                             // all axes' tables, concatenated
  std::vector<int64_t> map_offsets;                     // start of each axis' table in map
  int64_t inner_lo = 0, inner_hi = 0, inner_begin = 0;  // [lo, hi) copies input from lo - begin
  uint64_t attr_constant = 0;                           // the constant's bytes before opset 11
  bool constant_from_input = false;                     // opset >= 11 with input 2 present
};

int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  int64_t m = i % period;
  if (m < 0) m += period;
  return m >= n ? period - m : m;
}

template <class T>
void pad_rows(const pad_plan& p, T* dst, const T* src, T constant) {
  const int64_t rank = static_cast<int64_t>(p.out_shape.size());
  const int64_t inner = p.out_shape.back();
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < rank; ++d) rows *= p.out_shape[static_cast<size_t>(d)];
  const int64_t* inner_map = p.map.data() + p.map_offsets.back();
  parallel_rows(rows, static_cast<size_t>(inner) * sizeof(T), [&](int64_t begin, int64_t end) {
    int64_t idx[max_plan_rank + 1] = {};
    int64_t rem = begin;
    for (int64_t d = rank - 2; d >= 0; --d) {
      idx[d] = rem % p.out_shape[static_cast<size_t>(d)];
      rem /= p.out_shape[static_cast<size_t>(d)];
    }
    for (int64_t row = begin; row < end; ++row) {
      T* out = dst + row * inner;
      int64_t off = 0;
      bool outside = false;
      for (int64_t d = 0; d + 1 < rank; ++d) {
        const int64_t i =
            p.map[static_cast<size_t>(p.map_offsets[static_cast<size_t>(d)] + idx[d])];
        if (i < 0) {
          outside = true;
          break;
        }
        off += i * p.in_strides[static_cast<size_t>(d)];
      }
      if (outside) {
        std::fill_n(out, inner, constant);
      } else {
        const T* in = src + off;
        for (int64_t j = 0; j < p.inner_lo; ++j)
          out[j] = inner_map[j] < 0 ? constant : in[inner_map[j]];
        if (p.inner_hi > p.inner_lo) {
          std::memcpy(out + p.inner_lo, in + (p.inner_lo - p.inner_begin),
                      static_cast<size_t>(p.inner_hi - p.inner_lo) * sizeof(T));
        }
        for (int64_t j = std::max(p.inner_hi, p.inner_lo); j < inner; ++j) {
          out[j] = inner_map[j] < 0 ? constant : in[inner_map[j]];
        }
      }
      for (int64_t d = rank - 2; d >= 0; --d) {
        if (++idx[d] < p.out_shape[static_cast<size_t>(d)]) break;
        idx[d] = 0;
      }
    }
  });
}

factory_result pad_factory(const kernel_create_context& ctx) {
  auto params = resolve_pad(op_view(ctx));
  if (!params) return params.error();
  const tensor_info& in = ctx.inputs[0];
  auto p = std::make_shared<pad_plan>();
  p->elem = dtype_size(in.type);
  if (p->elem != 1 && p->elem != 2 && p->elem != 4 && p->elem != 8) {
    return ctx.fail(error_code::unsupported, "dtype " + std::string(dtype_name(in.type)));
  }
  if (in.rank() > max_plan_rank)
    return ctx.fail(error_code::unsupported, "rank above " + std::to_string(max_plan_rank));
  p->out_shape = params->out_shape;
  p->in_strides = row_major_strides(in.shape);
  for (size_t d = 0; d < in.rank(); ++d) {
    p->map_offsets.push_back(static_cast<int64_t>(p->map.size()));
    const int64_t n = in.shape[d];
    for (int64_t o = 0; o < p->out_shape[d]; ++o) {
      const int64_t i = o - params->begin[d];
      int64_t m = i;
      if (i < 0 || i >= n) {
        switch (params->mode) {
          case pad_mode::constant:
            m = -1;
            break;
          case pad_mode::edge:
            m = std::clamp<int64_t>(i, 0, n - 1);
            break;
          case pad_mode::reflect:
            m = reflect_index(i, n);
            break;
        }
      }
      p->map.push_back(m);
    }
  }
  if (in.rank() > 0) {
    const int64_t n = in.shape.back(), b = params->begin.back();
    p->inner_begin = b;
    p->inner_lo = std::clamp<int64_t>(b, 0, p->out_shape.back());
    p->inner_hi = std::clamp<int64_t>(b + n, 0, p->out_shape.back());
  }
  store_scalar(in.type, params->attr_value, &p->attr_constant);
  p->constant_from_input = ctx.node.opset >= 11 && ctx.has_input(2);
  return make_function_kernel([p](kernel_run_context& rc) {
    const tensor& x = rc.inputs[0];
    tensor& y = rc.outputs[0];
    if (y.elements() == 0) return status::ok();
    uint64_t constant = p->attr_constant;
    if (p->constant_from_input) {
      const tensor& c = rc.inputs[2];
      if (c.defined() && c.elements() >= 1) std::memcpy(&constant, c.raw(), p->elem);
    }
    if (p->out_shape.empty()) {
      std::memcpy(y.raw(), x.raw(), p->elem);
      return status::ok();
    }
    switch (p->elem) {
      case 1:
        pad_rows(*p, y.data<uint8_t>(), x.data<uint8_t>(), static_cast<uint8_t>(constant));
        break;
      case 2:
        pad_rows(*p, y.data<uint16_t>(), x.data<uint16_t>(), static_cast<uint16_t>(constant));
        break;
      case 4:
        pad_rows(*p, y.data<uint32_t>(), x.data<uint32_t>(), static_cast<uint32_t>(constant));
        break;
      default:
        pad_rows(*p, y.data<uint64_t>(), x.data<uint64_t>(), constant);
        break;
    }
    return status::ok();
  });
}

}  // namespace

void register_tensor(kernel_registry& r) {
  for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}) {
    r.add({"", op, backend::cpu, all_types(), 0, {}, view_factory});
  }
  r.add({"", "Dropout", backend::cpu, all_types(), 0, {}, dropout_factory});
  r.add({"", "Transpose", backend::cpu, all_types(), 0, {}, transpose_factory});
  r.add({"", "DepthToSpace", backend::cpu, all_types(), 0, {}, depth_to_space_factory});
  r.add({"", "SpaceToDepth", backend::cpu, all_types(), 0, {}, space_to_depth_factory});
  r.add({"", "Concat", backend::cpu, all_types(), 0, {}, concat_factory});
  r.add({"", "Split", backend::cpu, all_types(), 0, {}, split_factory});
  r.add({"", "Slice", backend::cpu, all_types(), 0, {}, slice_factory});
  r.add({"", "Expand", backend::cpu, all_types(), 0, {}, expand_factory});
  r.add({"", "Tile", backend::cpu, all_types(), 0, {}, tile_factory});
  r.add({"", "Pad", backend::cpu, all_types(), 0, {}, pad_factory});
  register_tensor_index(r);
  register_tensor_create(r);
  register_tensor_resize(r);
}

}  // namespace troupe::kernels::cpu
