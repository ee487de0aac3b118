#pragma once
/// Launchers of the reduction kernels (reduction.cu): reductions over a contiguous block of axes,
/// Softmax/LogSoftmax and LayerNormalization. Plain C++; pointers are device pointers, `stream`
/// a cudaStream_t; f32/f16/bf16 data, fp32 accumulation.
///
/// Every kernel sees its tensor as [outer, extent, inner] (row-major): the reduced / normalised
/// block of axes flattened to `extent`, what precedes it to `outer`, what follows to `inner`.
/// inner == 1 (the trailing axes, the common case) takes the row kernels: a warp per row up to
/// 1024 elements, a block per row beyond.

#include <cstdint>

#include "core/dtype.hpp"
#include "core/status.hpp"

namespace troupe::kernels::cuda {

enum class reduce_op : int32_t {
  sum,
  mean,
  max,
  min,
  prod,
  sum_square,
  l1,
  l2,
  log_sum,
  log_sum_exp
};

/// y[o, i] = reduce over e of x[o, e, i]. An empty extent gives the op's identity (0 for sum,
/// -inf for max...).
status launch_reduce(reduce_op op, dtype t, const void* x, void* y, int64_t outer, int64_t extent,
                     int64_t inner, void* stream);

/// Softmax (or LogSoftmax) over the extent axis.
status launch_softmax(dtype t, bool log, const void* x, void* y, int64_t outer, int64_t extent,
                      int64_t inner, void* stream);

/// LayerNormalization over rows of `cols` elements: y = (x - mean) * invstd * scale + bias.
/// scale has `cols` elements; bias (optional, null) too. mean/inv_std_dev (optional, null) are
/// f32 outputs with one element per row.
status launch_layer_norm(dtype t, const void* x, const void* scale, const void* bias, void* y,
                         float* mean, float* inv_std_dev, int64_t rows, int64_t cols, float epsilon,
                         void* stream);

}  // namespace troupe::kernels::cuda
