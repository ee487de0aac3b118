#pragma once
/// Launchers of the kernels behind extra_ops.cpp (extra.cu): resizing, selection (ArgMax/ArgMin,
/// Hardmax, TopK), Tile, variadic/binary arithmetic the elementwise family lacks (Sum, Mean, Mod),
/// more unaries (the trig family, IsInf, IsNaN), normalisations (InstanceNormalization,
/// LpNormalization), CumSum, the index ops (GatherElements, GatherND, ScatterElements, ScatterND,
/// OneHot) and fills (Range, ConstantOfShape). Plain C++: pointers are device pointers, `stream`
/// a cudaStream_t, float element types (f32, f16) compute in fp32.

#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"
#include "core/status.hpp"

namespace troupe::kernels::cuda {

constexpr int kMaxExtraRank = 8;

// ---- Resize ------------------------------------------------------------------------------------

/// Resize over `rank` tail axes (the leading axes that map every coordinate to itself fold into
/// `batch`). Per axis d and output coordinate x: k[d] taps, tap t reading input offset
/// offsets[table[d] + x * k[d] + t] (already multiplied by the axis' stride within the plane)
/// with weight weights[table[d] + x * k[d] + t]; outside[outside_at[d] + x] marks coordinates
/// that read the extrapolation value (tf_crop_and_resize). Tables live in one device buffer the
/// kernel owns; `offsets`, `weights`, `outside` point into it.
struct resize_device_plan {
  int rank = 0;
  bool interpolate = false;  // weights summed (linear, cubic) vs one tap copied (nearest)
  bool any_outside = false;
  int64_t batch = 1;
  int64_t in_plane = 0, out_plane = 0;
  int64_t out_dims[kMaxExtraRank] = {};
  int64_t k[kMaxExtraRank] = {};
  int64_t table[kMaxExtraRank] = {};
  int64_t outside_at[kMaxExtraRank] = {};
  const int64_t* offsets = nullptr;
  const float* weights = nullptr;
  const uint8_t* outside = nullptr;
  float extrapolation = 0.0f;
  uint64_t extrapolation_bytes = 0;  // the value in the element type, for nearest copies
};
/// Nearest: any element size of 1, 2, 4 or 8 bytes. Linear/cubic: f32 or f16.
status launch_resize(dtype t, const void* x, void* y, const resize_device_plan& p, void* stream);

// ---- selection ---------------------------------------------------------------------------------

/// ArgMax (is_max) / ArgMin over [outer, n, inner] into int64 [outer, inner], with the CPU
/// kernel's scan order: the first best (the last with `select_last`); a NaN at position 0 wins,
/// elsewhere NaNs never replace the best. dtypes f32 f16 i32 i64.
status launch_arg_reduce(dtype t, bool is_max, bool select_last, const void* x, int64_t* y,
                         int64_t outer, int64_t n, int64_t inner, void* stream);

/// Hardmax: y[o, a, i] = (a == index[o, i]) in y's dtype (f32 or f16), `index` from
/// launch_arg_reduce (first maximum).
status launch_one_hot_rows(dtype t, const int64_t* index, void* y, int64_t outer, int64_t n,
                           int64_t inner, void* stream);

/// TopK along an axis of [outer, n, inner], k <= kMaxTopK: slices split into chunks sorted in
/// shared memory; each round keeps the best k of every chunk until one chunk per slice remains.
/// Order: by value (largest or smallest first; NaN above every number), ties by the lower index.
constexpr int64_t kMaxTopK = 1024;
struct topk_plan {
  int64_t outer = 1, n = 0, inner = 1, k = 0;
  bool largest = true;
};
/// Scratch bytes for a plan (two candidate buffers for the intermediate rounds; 0 for one round).
size_t topk_workspace_bytes(dtype t, const topk_plan& p);
status launch_topk(dtype t, const topk_plan& p, const void* x, void* values, int64_t* indices,
                   void* workspace, void* stream);

// ---- Tile and the n-ary broadcasting arithmetic -------------------------------------------------

/// y[c] = x[c mod in_dims] per axis (Tile), any element size 1, 2, 4 or 8.
struct tile_plan {
  int rank = 0;
  int64_t out_elements = 0;
  int64_t out_dims[kMaxExtraRank] = {};
  int64_t in_dims[kMaxExtraRank] = {};
  int64_t in_strides[kMaxExtraRank] = {};
};
status launch_tile(size_t element_bytes, const void* x, void* y, const tile_plan& p, void* stream);

constexpr int kMaxNaryInputs = 8;
/// Up to kMaxNaryInputs operands broadcast to one output; strides in elements, 0 on broadcast axes.
struct nary_plan {
  int rank = 0;
  int inputs = 0;
  int64_t out_elements = 0;
  int64_t out_dims[kMaxExtraRank] = {};
  int64_t strides[kMaxNaryInputs][kMaxExtraRank] = {};
};
/// Sum over the plan's inputs (fp32 for floats), plus y's current value when `accumulate` (for
/// more inputs than one launch takes), times `scale` when `scale` != 1 (Mean). f32 f16 i32 i64.
status launch_sum(dtype t, const void* const* x, void* y, const nary_plan& p, bool accumulate,
                  float scale, void* stream);
/// Mod of a 2-input plan: `c_style` (fmod = 1) truncates, else the result takes the divisor's
/// sign; integer division by 0 (and by -1) gives 0. f32 f16 i32 i64.
status launch_mod(dtype t, bool c_style, const void* a, const void* b, void* y, const nary_plan& p,
                  void* stream);

// ---- unaries -----------------------------------------------------------------------------------

enum class extra_unary : int32_t { acos, acosh, asin, asinh, atan, atanh, cosh, sinh, tan };
/// f32 / f16 in, the same type out.
status launch_extra_unary(extra_unary op, dtype t, const void* x, void* y, int64_t n, void* stream);
/// IsInf (detect flags) / IsNaN (is_nan): f32 / f16 in, bool out.
status launch_float_class(dtype t, bool is_nan, bool detect_positive, bool detect_negative,
                          const void* x, uint8_t* y, int64_t n, void* stream);

// ---- normalisations and scans ------------------------------------------------------------------

/// InstanceNormalization: x viewed as [planes, inner], channel = plane % channels; scale and bias
/// have x's dtype (f32 or f16). Mean and variance in two passes over the plane (y may be x).
status launch_instance_norm(dtype t, const void* x, const void* scale, const void* bias, void* y,
                            int64_t planes, int64_t channels, int64_t inner, float epsilon,
                            void* stream);
/// LpNormalization (p 1 or 2) along the middle axis of [outer, len, inner]; a zero vector divides
/// by zero (NaN), as the CPU kernel and ONNX's reference do.
status launch_lp_norm(dtype t, const void* x, void* y, int64_t outer, int64_t len, int64_t inner,
                      int p, void* stream);
/// CumSum along the middle axis of [outer, n, inner] (y may be x). f32 f16 i32 i64.
status launch_cumsum(dtype t, const void* x, void* y, int64_t outer, int64_t n, int64_t inner,
                     bool exclusive, bool reverse, void* stream);

// ---- index ops ---------------------------------------------------------------------------------

/// GatherElements / ScatterElements: indices of shape idx_dims address data with `axis` replaced
/// by the index value. An index outside [-axis_dim, axis_dim) sets `fault` in fault_word; Gather
/// writes 0 there, Scatter skips it.
struct element_index_plan {
  int rank = 0;
  int axis = 0;
  int64_t count = 0;  // index elements
  int64_t idx_dims[kMaxExtraRank] = {};
  int64_t data_strides[kMaxExtraRank] = {};
  int64_t axis_dim = 0;
};
status launch_gather_elements(size_t element_bytes, const void* data, const void* indices,
                              bool index_is_64, void* y, const element_index_plan& p,
                              uint32_t* fault_word, uint32_t fault, void* stream);

enum class scatter_reduction : int32_t { none, add, mul, max, min };
/// With reduction none, repeated targets keep the last update in index order (as the CPU's
/// sequential loop): `winner` (one int64 per data element / slice, workspace) records the last
/// position per target first. Reductions: f32 i32 i64; none: any element size 1, 2, 4, 8.
status launch_scatter_elements(dtype t, const void* indices, bool index_is_64, const void* updates,
                               void* y, const element_index_plan& p, scatter_reduction red,
                               int64_t* winner, int64_t data_elements, uint32_t* fault_word,
                               uint32_t fault, void* stream);

/// GatherND / ScatterND: `tuples` index tuples of `k` int64 components; tuple t addresses
/// slice (t / per_batch) * batch_stride + sum_j v_j * dim_strides[j] of `slice` elements.
struct nd_index_plan {
  int k = 0;
  int64_t tuples = 0;
  int64_t per_batch = 1;
  int64_t batch_stride = 0;
  int64_t slice = 1;
  int64_t dims[kMaxExtraRank] = {};
  int64_t dim_strides[kMaxExtraRank] = {};
};
status launch_gather_nd(size_t element_bytes, const void* data, const int64_t* indices, void* y,
                        const nd_index_plan& p, uint32_t* fault_word, uint32_t fault, void* stream);
/// ScatterND over y (already holding the data); `winner` as for ScatterElements, one int64 per
/// slice of y (data_slices of them).
status launch_scatter_nd(dtype t, const int64_t* indices, const void* updates, void* y,
                         const nd_index_plan& p, scatter_reduction red, int64_t* winner,
                         int64_t data_slices, uint32_t* fault_word, uint32_t fault, void* stream);

/// OneHot: y[o, d, i] = values[index[o, i] == d (negative indices from the end) ? 1 : 0]; an
/// index outside [-depth, depth) (or a non-finite float one) gives an all-off row. Indices i64
/// i32 f32 f16; values of any element size 1, 2, 4, 8, read on the device.
status launch_one_hot(dtype index_type, const void* indices, const void* values,
                      size_t element_bytes, void* y, int64_t outer, int64_t depth, int64_t inner,
                      void* stream);

// ---- fills -------------------------------------------------------------------------------------

/// y[i] = start + i * delta in y's type (f32 with no fused multiply-add, i32, i64); start and
/// delta are the values' bytes in that type.
status launch_range(dtype t, uint64_t start_bits, uint64_t delta_bits, void* y, int64_t n,
                    void* stream);
/// Every element of y set to the low `element_bytes` bytes of `bits`.
status launch_fill(size_t element_bytes, uint64_t bits, void* y, int64_t n, void* stream);

}  // namespace troupe::kernels::cuda
