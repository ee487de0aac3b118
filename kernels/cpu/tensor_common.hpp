#pragma once
/// Internal to the CPU data-movement kernels (tensor_*.cpp): copy plans built when a kernel is
/// created (all shape work and allocation happen there) and run on the hot path without
/// allocating, plus the registration functions of the family's files.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <omp.h>

#include "core/dtype.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

namespace troupe::kernels::cpu {

// tensor_index_ops.cpp: Gather, GatherElements, GatherND, ScatterND, ScatterElements, OneHot,
// NonZero
void register_tensor_index(kernel_registry& r);
// tensor_create_ops.cpp: Shape, Size, Constant, ConstantOfShape, Range, EyeLike
void register_tensor_create(kernel_registry& r);
// tensor_resize.cpp: Resize, Upsample
void register_tensor_resize(kernel_registry& r);

/// Every dtype troupe knows: data movement does not look at values.
const std::vector<dtype>& all_types();

/// Rank limit of a copy plan after merging contiguous axes (its odometer lives on the stack).
inline constexpr size_t max_plan_rank = 32;
/// Copies smaller than this stay on one thread: waking the pool costs more than they do.
inline constexpr size_t parallel_min_bytes = size_t{64} << 10;

std::vector<int64_t> row_major_strides(const shape_t& shape);

/// Runs f(begin, end) over [0, rows) split evenly over the OpenMP threads when the work is
/// worth it (rows * bytes_per_row >= parallel_min_bytes), else once on the calling thread.
/// A template, not std::function: compute must not allocate.
template <class F>
void parallel_rows(int64_t rows, size_t bytes_per_row, F&& f) {
  if (rows <= 0) return;
  if (rows == 1 || static_cast<size_t>(rows) * bytes_per_row < parallel_min_bytes ||
      omp_get_max_threads() == 1) {
    f(int64_t{0}, rows);
    return;
  }
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    const int64_t begin = rows * t / threads, end = rows * (t + 1) / threads;
    if (begin < end) f(begin, end);
  }
}

/// Copies n bytes: a plain memcpy, spread over threads when large.
void copy_bytes(void* dst, const void* src, size_t n);

/// Writes `value` converted to `type` at dst (for fill values, EyeLike's one, Pad's constant).
void store_scalar(dtype type, double value, void* dst);

/// Writes n copies of the `elem`-byte value at `value`.
void fill_elems(void* dst, const void* value, size_t elem, int64_t n);

/// A strided gather into a contiguous destination: for every coordinate c of `shape` in
/// row-major order, dst[i] = src[offset + sum_d c_d * strides_d] (strides in elements; 0 for
/// broadcast axes, negative for reversed ones). make() merges axes that stay contiguous and drops
/// size-1 axes, so Slice/Expand/Tile/Transpose copies run as few long rows as possible.
class strided_copy {
 public:
  static expected<strided_copy> make(size_t elem_bytes, const shape_t& shape,
                                     const std::vector<int64_t>& src_strides,
                                     int64_t src_offset = 0);
  /// dst must hold element_count(shape) elements; reads stay inside what the strides reach.
  void run(void* dst, const void* src) const;

 private:
  size_t elem_ = 0;
  bool empty_ = false;
  int64_t offset_ = 0;
  std::vector<int64_t> dims_;     // after merging; the last one is the row
  std::vector<int64_t> strides_;  // source strides in elements, one per dim
  int64_t rows_ = 0;
};

/// Transpose of a row-major tensor by `perm` (output axis i is input axis perm[i]). Axes that
/// stay adjacent are merged; when the innermost input axis stays innermost the copy runs as
/// contiguous rows (BERT's (0,2,1,3)), otherwise as 32x32 tiles of a batched 2-D transpose.
class transpose_plan {
 public:
  static expected<transpose_plan> make(size_t elem_bytes, const shape_t& in_shape,
                                       const std::vector<int64_t>& perm);
  void run(void* dst, const void* src) const;

 private:
  enum class kind : uint8_t { empty, copy, rows, tiled };
  kind kind_ = kind::empty;
  size_t elem_ = 0;
  size_t bytes_ = 0;
  strided_copy rows_;
  // tiled: dst[o + i * dst_row_stride_ + j] = src[s + j * src_col_stride_ + i], i < m_, j < n_,
  // over every (o, s) that the outer axes produce.
  int64_t m_ = 0, n_ = 0;
  int64_t dst_row_stride_ = 0, src_col_stride_ = 0;
  std::vector<int64_t> outer_dims_, outer_src_strides_, outer_dst_strides_;
};

/// A view kernel (Reshape, Flatten, ...): the planner aliases output 0 to input 0; compute copies
/// for the cases where it cannot (a graph input bound by the caller, plan-time folding).
expected<std::unique_ptr<kernel>> make_view_kernel();

}  // namespace troupe::kernels::cpu
