// Copy plans shared by the CPU data-movement kernels.
#include "kernels/cpu/tensor_common.hpp"

#include <algorithm>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace troupe::kernels::cpu {

const std::vector<dtype>& all_types() {
  static const std::vector<dtype> t{dtype::f32, dtype::f16, dtype::bf16,   dtype::f64, dtype::i8,
                                    dtype::u8,  dtype::i16, dtype::u16,    dtype::i32, dtype::u32,
                                    dtype::i64, dtype::u64, dtype::boolean};
  return t;
}

std::vector<int64_t> row_major_strides(const shape_t& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

void copy_bytes(void* dst, const void* src, size_t n) {
  if (n == 0 || dst == src) return;
  constexpr size_t chunk = size_t{256} << 10;
  if (n < 2 * chunk) {
    std::memcpy(dst, src, n);
    return;
  }
  const int64_t chunks = static_cast<int64_t>((n + chunk - 1) / chunk);
  parallel_rows(chunks, chunk, [&](int64_t b, int64_t e) {
    const size_t begin = static_cast<size_t>(b) * chunk;
    const size_t end = std::min(n, static_cast<size_t>(e) * chunk);
    std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin,
                end - begin);
  });
}

void store_scalar(dtype type, double v, void* dst) {
  switch (type) {
    case dtype::f32:
      *static_cast<float*>(dst) = static_cast<float>(v);
      break;
    case dtype::f64:
      *static_cast<double*>(dst) = v;
      break;
    case dtype::f16:
      *static_cast<uint16_t*>(dst) = float_to_half(static_cast<float>(v));
      break;
    case dtype::bf16:
      *static_cast<uint16_t*>(dst) = float_to_bfloat16(static_cast<float>(v));
      break;
    case dtype::i8:
      *static_cast<int8_t*>(dst) = static_cast<int8_t>(v);
      break;
    case dtype::u8:
      *static_cast<uint8_t*>(dst) = static_cast<uint8_t>(v);
      break;
    case dtype::i16:
      *static_cast<int16_t*>(dst) = static_cast<int16_t>(v);
      break;
    case dtype::u16:
      *static_cast<uint16_t*>(dst) = static_cast<uint16_t>(v);
      break;
    case dtype::i32:
      *static_cast<int32_t*>(dst) = static_cast<int32_t>(v);
      break;
    case dtype::u32:
      *static_cast<uint32_t*>(dst) = static_cast<uint32_t>(v);
      break;
    case dtype::i64:
      *static_cast<int64_t*>(dst) = static_cast<int64_t>(v);
      break;
    case dtype::u64:
      *static_cast<uint64_t*>(dst) = static_cast<uint64_t>(v);
      break;
    case dtype::boolean:
      *static_cast<uint8_t*>(dst) = v != 0 ? 1 : 0;
      break;
    case dtype::undefined:
      break;
  }
}

void fill_elems(void* dst, const void* value, size_t elem, int64_t n) {
  switch (elem) {
    case 1:
      std::memset(dst, *static_cast<const uint8_t*>(value), static_cast<size_t>(n));
      return;
    case 2: {
      uint16_t v;
      std::memcpy(&v, value, 2);
      std::fill_n(static_cast<uint16_t*>(dst), n, v);
      return;
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, value, 4);
      std::fill_n(static_cast<uint32_t*>(dst), n, v);
      return;
    }
    case 8: {
      uint64_t v;
      std::memcpy(&v, value, 8);
      std::fill_n(static_cast<uint64_t*>(dst), n, v);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(static_cast<char*>(dst) + static_cast<size_t>(i) * elem, value, elem);
  }
}

// ---- strided_copy ----------------------------------------------------------------------------

expected<strided_copy> strided_copy::make(size_t elem_bytes, const shape_t& shape,
                                          const std::vector<int64_t>& src_strides,
                                          int64_t src_offset) {
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8) {
    return unsupported("element size " + std::to_string(elem_bytes));
  }
  strided_copy p;
  p.elem_ = elem_bytes;
  p.offset_ = src_offset;
  if (element_count(shape) == 0) {
    p.empty_ = true;
    return p;
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    // The outer axis continues the inner one: one longer axis with the inner stride.
    if (!p.dims_.empty() && p.strides_.back() == src_strides[i] * shape[i]) {
      p.dims_.back() *= shape[i];
      p.strides_.back() = src_strides[i];
    } else {
      p.dims_.push_back(shape[i]);
      p.strides_.push_back(src_strides[i]);
    }
  }
  if (p.dims_.empty()) {
    p.dims_ = {1};
    p.strides_ = {1};
  }
  if (p.dims_.size() > max_plan_rank) {
    return unsupported("a strided copy over " + std::to_string(p.dims_.size()) + " axes (limit " +
                       std::to_string(max_plan_rank) + ")");
  }
  p.rows_ = 1;
  for (size_t i = 0; i + 1 < p.dims_.size(); ++i) p.rows_ *= p.dims_[i];
  return p;
}

namespace {

template <class T>
void strided_rows(T* dst, const T* src, int64_t offset, const std::vector<int64_t>& dims,
                  const std::vector<int64_t>& strides, int64_t rows) {
  const int64_t r = static_cast<int64_t>(dims.size());
  const int64_t inner = dims.back();
  const int64_t inner_stride = strides.back();
  parallel_rows(rows, static_cast<size_t>(inner) * sizeof(T), [&](int64_t begin, int64_t end) {
    int64_t idx[max_plan_rank];
    int64_t off = offset;
    int64_t rem = begin;
    for (int64_t d = r - 2; d >= 0; --d) {
      idx[d] = rem % dims[d];
      rem /= dims[d];
      off += idx[d] * strides[d];
    }
    T* out = dst + begin * inner;
    for (int64_t row = begin; row < end; ++row, out += inner) {
      const T* in = src + off;
      if (inner_stride == 1) {
        std::memcpy(out, in, static_cast<size_t>(inner) * sizeof(T));
      } else if (inner_stride == 0) {
        std::fill_n(out, inner, *in);
      } else {
        for (int64_t i = 0; i < inner; ++i) out[i] = in[i * inner_stride];
      }
      for (int64_t d = r - 2; d >= 0; --d) {
        off += strides[d];
        if (++idx[d] < dims[d]) break;
        off -= strides[d] * dims[d];
        idx[d] = 0;
      }
    }
  });
}

}  // namespace

void strided_copy::run(void* dst, const void* src) const {
  if (empty_) return;
  switch (elem_) {
    case 1:
      return strided_rows(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), offset_,
                          dims_, strides_, rows_);
    case 2:
      return strided_rows(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), offset_,
                          dims_, strides_, rows_);
    case 4:
      return strided_rows(static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src), offset_,
                          dims_, strides_, rows_);
    case 8:
      return strided_rows(static_cast<uint64_t*>(dst), static_cast<const uint64_t*>(src), offset_,
                          dims_, strides_, rows_);
    default:
      return;  // make() refuses other sizes
  }
}

// ---- transpose_plan --------------------------------------------------------------------------

expected<transpose_plan> transpose_plan::make(size_t elem_bytes, const shape_t& in_shape,
                                              const std::vector<int64_t>& perm) {
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8) {
    return unsupported("element size " + std::to_string(elem_bytes));
  }
  transpose_plan p;
  p.elem_ = elem_bytes;
  const int64_t count = element_count(in_shape);
  p.bytes_ = static_cast<size_t>(count) * elem_bytes;
  if (count == 0) return p;

  // Drop size-1 axes, then merge input axes a, a+1 that stay adjacent in the output.
  std::vector<int64_t> new_index(in_shape.size(), -1);
  shape_t dims;
  for (size_t i = 0; i < in_shape.size(); ++i) {
    if (in_shape[i] != 1) {
      new_index[i] = static_cast<int64_t>(dims.size());
      dims.push_back(in_shape[i]);
    }
  }
  std::vector<int64_t> pm;
  for (int64_t a : perm) {
    if (new_index[static_cast<size_t>(a)] >= 0) pm.push_back(new_index[static_cast<size_t>(a)]);
  }
  for (bool merged = true; merged;) {
    merged = false;
    for (size_t j = 0; j + 1 < pm.size(); ++j) {
      if (pm[j + 1] != pm[j] + 1) continue;
      const int64_t a = pm[j];
      dims[static_cast<size_t>(a)] *= dims[static_cast<size_t>(a + 1)];
      dims.erase(dims.begin() + a + 1);
      pm.erase(pm.begin() + static_cast<int64_t>(j) + 1);
      for (auto& x : pm) {
        if (x > a + 1) --x;
      }
      merged = true;
      break;
    }
  }
  const size_t n = dims.size();
  bool identity = true;
  for (size_t j = 0; j < n; ++j) identity &= pm[j] == static_cast<int64_t>(j);
  if (identity) {
    p.kind_ = kind::copy;
    return p;
  }
  const std::vector<int64_t> in_strides = row_major_strides(dims);
  shape_t out_dims(n);
  for (size_t j = 0; j < n; ++j) out_dims[j] = dims[static_cast<size_t>(pm[j])];
  if (pm.back() == static_cast<int64_t>(n - 1)) {
    std::vector<int64_t> src_strides(n);
    for (size_t j = 0; j < n; ++j) src_strides[j] = in_strides[static_cast<size_t>(pm[j])];
    TROUPE_ASSIGN_OR_RETURN(p.rows_, strided_copy::make(elem_bytes, out_dims, src_strides));
    p.kind_ = kind::rows;
    return p;
  }
  const std::vector<int64_t> out_strides = row_major_strides(out_dims);
  const size_t a = static_cast<size_t>(pm.back());  // input axis innermost in the output
  size_t q = 0;                                     // output position of the innermost input axis
  while (pm[q] != static_cast<int64_t>(n - 1)) ++q;
  p.m_ = dims[n - 1];
  p.n_ = dims[a];
  p.dst_row_stride_ = out_strides[q];
  p.src_col_stride_ = in_strides[a];
  for (size_t j = 0; j + 1 < n; ++j) {
    if (j == q) continue;
    p.outer_dims_.push_back(out_dims[j]);
    p.outer_src_strides_.push_back(in_strides[static_cast<size_t>(pm[j])]);
    p.outer_dst_strides_.push_back(out_strides[j]);
  }
  p.kind_ = kind::tiled;
  return p;
}

namespace {

template <class T>
void transpose_tiled(T* dst, const T* src, int64_t m, int64_t n, int64_t dst_row_stride,
                     int64_t src_col_stride, const std::vector<int64_t>& outer_dims,
                     const std::vector<int64_t>& outer_src, const std::vector<int64_t>& outer_dst,
                     bool parallel) {
  constexpr int64_t tile = 32;
  const int64_t tiles_i = (m + tile - 1) / tile, tiles_j = (n + tile - 1) / tile;
  int64_t outer = 1;
  for (int64_t d : outer_dims) outer *= d;
  const int64_t tiles = outer * tiles_i * tiles_j;
  const int64_t outer_rank = static_cast<int64_t>(outer_dims.size());
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t bj = t % tiles_j;
    const int64_t bi = (t / tiles_j) % tiles_i;
    int64_t o = t / (tiles_j * tiles_i);
    int64_t so = 0, dof = 0;
    for (int64_t d = outer_rank - 1; d >= 0; --d) {
      const int64_t c = o % outer_dims[static_cast<size_t>(d)];
      o /= outer_dims[static_cast<size_t>(d)];
      so += c * outer_src[static_cast<size_t>(d)];
      dof += c * outer_dst[static_cast<size_t>(d)];
    }
    const int64_t i0 = bi * tile, i1 = std::min(i0 + tile, m);
    const int64_t j0 = bj * tile, j1 = std::min(j0 + tile, n);
#if defined(__SSE2__)
    if constexpr (sizeof(T) == 4) {
      // 4x4 register transposes over the tile's full 4x4 blocks; the ragged edges go below.
      const int64_t i4 = i0 + (i1 - i0) / 4 * 4, j4 = j0 + (j1 - j0) / 4 * 4;
      for (int64_t i = i0; i < i4; i += 4) {
        for (int64_t j = j0; j < j4; j += 4) {
          const float* in = reinterpret_cast<const float*>(src + so + j * src_col_stride + i);
          __m128 r0 = _mm_loadu_ps(in), r1 = _mm_loadu_ps(in + src_col_stride);
          __m128 r2 = _mm_loadu_ps(in + 2 * src_col_stride),
                 r3 = _mm_loadu_ps(in + 3 * src_col_stride);
          _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
          float* out = reinterpret_cast<float*>(dst + dof + i * dst_row_stride + j);
          _mm_storeu_ps(out, r0);
          _mm_storeu_ps(out + dst_row_stride, r1);
          _mm_storeu_ps(out + 2 * dst_row_stride, r2);
          _mm_storeu_ps(out + 3 * dst_row_stride, r3);
        }
        for (int64_t r = 0; r < 4; ++r) {
          T* out = dst + dof + (i + r) * dst_row_stride;
          const T* in = src + so + i + r;
          for (int64_t j = j4; j < j1; ++j) out[j] = in[j * src_col_stride];
        }
      }
      for (int64_t i = i4; i < i1; ++i) {
        T* out = dst + dof + i * dst_row_stride;
        const T* in = src + so + i;
        for (int64_t j = j0; j < j1; ++j) out[j] = in[j * src_col_stride];
      }
      continue;
    }
#endif
    for (int64_t i = i0; i < i1; ++i) {
      T* out = dst + dof + i * dst_row_stride;
      const T* in = src + so + i;
      for (int64_t j = j0; j < j1; ++j) out[j] = in[j * src_col_stride];
    }
  }
}

}  // namespace

void transpose_plan::run(void* dst, const void* src) const {
  switch (kind_) {
    case kind::empty:
      return;
    case kind::copy:
      return copy_bytes(dst, src, bytes_);
    case kind::rows:
      return rows_.run(dst, src);
    case kind::tiled:
      break;
  }
  const bool par = bytes_ >= parallel_min_bytes;
#define TROUPE_TILED(T)                                                                      \
  transpose_tiled(static_cast<T*>(dst), static_cast<const T*>(src), m_, n_, dst_row_stride_, \
                  src_col_stride_, outer_dims_, outer_src_strides_, outer_dst_strides_, par)
  switch (elem_) {
    case 1:
      TROUPE_TILED(uint8_t);
      return;
    case 2:
      TROUPE_TILED(uint16_t);
      return;
    case 4:
      TROUPE_TILED(uint32_t);
      return;
    case 8:
      TROUPE_TILED(uint64_t);
      return;
    default:
      return;  // make() is only called with dtype sizes, all of which are above
  }
#undef TROUPE_TILED
}

expected<std::unique_ptr<kernel>> make_view_kernel() {
  return make_function_kernel(
      [](kernel_run_context& ctx) {
        const tensor& in = ctx.inputs[0];
        tensor& out = ctx.outputs[0];
        if (out.bytes() != in.bytes())
          return internal_error("view kernel: output and input sizes differ");
        copy_bytes(out.raw(), in.raw(), in.bytes());
        return status::ok();
      },
      {}, true);
}

}  // namespace troupe::kernels::cpu
