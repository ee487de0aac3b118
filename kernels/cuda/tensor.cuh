#pragma once
/// Launchers of the data-movement kernels (tensor.cu). Plain C++; pointers are device pointers,
/// `stream` a cudaStream_t. Kernels move elements of 1, 2, 4 or 8 bytes whatever their dtype.

#include <cstddef>
#include <cstdint>

#include "core/status.hpp"

namespace troupe::kernels::cuda {

constexpr int kMaxCopyRank = 8;

/// out[index] = in[offset + sum_d coord_d * in_strides[d]] for each output coordinate; where
/// `bounded` is set, a coordinate mapping outside [0, in_dims[d]) of the input (a pad) writes
/// `fill` instead. Covers Transpose, Slice (negative steps too), Expand, Tile-free broadcasting
/// copies and constant padding. Strides are in elements and may be 0 or negative.
struct strided_copy_plan {
  int rank = 0;
  int64_t out_elements = 0;
  int64_t out_dims[kMaxCopyRank] = {};
  int64_t in_strides[kMaxCopyRank] = {};
  int64_t in_offset = 0;
  // Only with `bounded`: coordinate_in_input_d = out_coord_d + in_start[d] must lie in
  // [0, in_dims[d]); in_offset is then the offset of input coordinate (0, ..., 0).
  bool bounded = false;
  int64_t in_start[kMaxCopyRank] = {};
  int64_t in_dims[kMaxCopyRank] = {};
  uint64_t fill = 0;  // the fill element's bytes (low element_bytes bytes used)
};
/// `fill_device`, when set, is a device scalar of the element type read instead of plan.fill (Pad's
/// constant_value computed at run time).
status launch_strided_copy(size_t element_bytes, const void* in, void* out,
                           const strided_copy_plan& plan, void* stream,
                           const void* fill_device = nullptr);

/// A batch of row-major rows x cols matrices transposed to cols x rows, through shared-memory
/// tiles (both reads and writes coalesced).
status launch_transpose_2d(size_t element_bytes, const void* in, void* out, int64_t batch,
                           int64_t rows, int64_t cols, void* stream);

/// Gather along an axis: data viewed as [outer, axis_dim, inner_bytes], output as
/// [outer, index_count, inner_bytes]. Negative indices count from the end; an index outside
/// [-axis_dim, axis_dim) writes zeros and sets fault_gather_index in `fault_word` (the context's,
/// cuda_context::fault_word), which fails the run at the next synchronize with a typed error.
/// `index_is_64` selects int64 or int32 indices.
status launch_gather(const void* data, const void* indices, bool index_is_64, void* out,
                     int64_t outer, int64_t axis_dim, int64_t index_count, int64_t inner_bytes,
                     uint32_t* fault_word, void* stream);

/// Occupies the stream for about `nanoseconds` (one thread sleeping on the global timer). Work
/// enqueued behind it then runs back to back, so events around it time the GPU alone, not the
/// host's enqueueing: how create-time benchmarks measure what a CUDA graph replay will see.
status launch_delay(uint64_t nanoseconds, void* stream);

}  // namespace troupe::kernels::cuda
