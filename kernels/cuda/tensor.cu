// Data movement: the general strided copy, the tiled 2-D transpose and Gather.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/tensor.cuh"

namespace troupe::kernels::cuda {
namespace {

template <class T, bool Bounded>
__global__ void strided_copy_kernel(const T* in, T* out, strided_copy_plan p,
                                    const T* fill_device) {
  const T fill = fill_device ? *fill_device : static_cast<T>(p.fill);
  TROUPE_GRID_LOOP(i, p.out_elements) {
    int64_t rest = i;
    int64_t off = p.in_offset;
    bool inside = true;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t coord = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      if constexpr (Bounded) {
        const int64_t c = coord + p.in_start[d];
        inside = inside && c >= 0 && c < p.in_dims[d];
        off += c * p.in_strides[d];
      } else {
        off += coord * p.in_strides[d];
      }
    }
    if constexpr (Bounded) {
      out[i] = inside ? in[off] : fill;
    } else {
      out[i] = in[off];
    }
  }
}

template <class T>
status run_strided_copy(const void* in, void* out, const strided_copy_plan& p, cudaStream_t s,
                        const void* fill_device) {
  const unsigned grid = grid_for(p.out_elements);
  const T* fill = static_cast<const T*>(fill_device);
  if (p.bounded) {
    strided_copy_kernel<T, true>
        <<<grid, kBlockThreads, 0, s>>>(static_cast<const T*>(in), static_cast<T*>(out), p, fill);
  } else {
    strided_copy_kernel<T, false>
        <<<grid, kBlockThreads, 0, s>>>(static_cast<const T*>(in), static_cast<T*>(out), p, fill);
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

constexpr int kTile = 32;
constexpr int kTileRows = 8;

/// One 32x32 tile per block; the +1 column keeps the transposed reads free of bank conflicts.
template <class T>
__global__ void transpose_2d_kernel(const T* in, T* out, int64_t batch, int64_t rows,
                                    int64_t cols) {
  __shared__ T tile[kTile][kTile + 1];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const T* src = in + b * rows * cols;
    T* dst = out + b * rows * cols;
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t r = r0 + j;
      const int64_t c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[j][threadIdx.x] = src[r * cols + c];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t c = c0 + j;  // output row
      const int64_t r = r0 + threadIdx.x;
      if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][j];
    }
    __syncthreads();
  }
}

/// One output element per thread, for a side of at most kNarrowSide elements (an image's 3
/// channels moving last): a 32x32 tile would leave most of its threads idle there, and with one
/// side this short both the reads and the writes of a warp stay within a few cache lines.
constexpr int64_t kNarrowSide = 8;

template <class T>
__global__ void transpose_2d_narrow_kernel(const T* in, T* out, int64_t batch, int64_t rows,
                                           int64_t cols) {
  const int64_t plane = rows * cols;
  TROUPE_GRID_LOOP(o, batch * plane) {
    const int64_t b = o / plane;
    const int64_t rem = o - b * plane;
    const int64_t c = rem / rows;  // output row = input column
    const int64_t r = rem - c * rows;
    out[o] = in[b * plane + r * cols + c];
  }
}

template <class T>
status run_transpose_2d(const void* in, void* out, int64_t batch, int64_t rows, int64_t cols,
                        cudaStream_t s) {
  if (rows <= kNarrowSide || cols <= kNarrowSide) {
    transpose_2d_narrow_kernel<T><<<grid_for(batch * rows * cols), kBlockThreads, 0, s>>>(
        static_cast<const T*>(in), static_cast<T*>(out), batch, rows, cols);
    TROUPE_CUDA_LAUNCH_CHECK();
    return status::ok();
  }
  const dim3 block(kTile, kTileRows);
  const dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile),
                  static_cast<unsigned>((rows + kTile - 1) / kTile),
                  static_cast<unsigned>(std::min<int64_t>(batch, 65535)));
  if (grid.y > 65535) return unsupported("transpose with more than 2M rows");
  transpose_2d_kernel<T>
      <<<grid, block, 0, s>>>(static_cast<const T*>(in), static_cast<T*>(out), batch, rows, cols);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

template <class W, class I>
__global__ void gather_kernel(const W* data, const I* indices, W* out, int64_t outer,
                              int64_t axis_dim, int64_t index_count, int64_t inner_words,
                              uint32_t* fault_word) {
  const int64_t n = outer * index_count * inner_words;
  TROUPE_GRID_LOOP(i, n) {
    const int64_t w = i % inner_words;
    const int64_t rest = i / inner_words;
    const int64_t k = rest % index_count;
    const int64_t o = rest / index_count;
    int64_t idx = static_cast<int64_t>(indices[k]);
    if (idx < 0) idx += axis_dim;
    if (idx < 0 || idx >= axis_dim) {
      out[i] = W{};
      if (w == 0) atomicOr(fault_word, static_cast<uint32_t>(fault_gather_index));
    } else {
      out[i] = data[(o * axis_dim + idx) * inner_words + w];
    }
  }
}

template <class W>
status run_gather(const void* data, const void* indices, bool index_is_64, void* out, int64_t outer,
                  int64_t axis_dim, int64_t index_count, int64_t inner_words, uint32_t* fault_word,
                  cudaStream_t s) {
  const unsigned grid = grid_for(outer * index_count * inner_words);
  if (index_is_64) {
    gather_kernel<W, int64_t><<<grid, kBlockThreads, 0, s>>>(
        static_cast<const W*>(data), static_cast<const int64_t*>(indices), static_cast<W*>(out),
        outer, axis_dim, index_count, inner_words, fault_word);
  } else {
    gather_kernel<W, int32_t><<<grid, kBlockThreads, 0, s>>>(
        static_cast<const W*>(data), static_cast<const int32_t*>(indices), static_cast<W*>(out),
        outer, axis_dim, index_count, inner_words, fault_word);
  }
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

__global__ void delay_kernel(uint64_t nanoseconds) {
  uint64_t start;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  for (;;) {
    uint64_t now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    if (now - start >= nanoseconds) break;
    __nanosleep(10000);
  }
}

bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace

status launch_delay(uint64_t nanoseconds, void* stream) {
  delay_kernel<<<1, 1, 0, to_stream(stream)>>>(nanoseconds);
  TROUPE_CUDA_LAUNCH_CHECK();
  return status::ok();
}

status launch_strided_copy(size_t element_bytes, const void* in, void* out,
                           const strided_copy_plan& plan, void* stream, const void* fill_device) {
  if (plan.out_elements == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  switch (element_bytes) {
    case 1:
      return run_strided_copy<uint8_t>(in, out, plan, s, fill_device);
    case 2:
      return run_strided_copy<uint16_t>(in, out, plan, s, fill_device);
    case 4:
      return run_strided_copy<uint32_t>(in, out, plan, s, fill_device);
    case 8:
      return run_strided_copy<uint64_t>(in, out, plan, s, fill_device);
    default:
      return unsupported("copy of " + std::to_string(element_bytes) + "-byte elements");
  }
}

status launch_transpose_2d(size_t element_bytes, const void* in, void* out, int64_t batch,
                           int64_t rows, int64_t cols, void* stream) {
  if (batch * rows * cols == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  switch (element_bytes) {
    case 1:
      return run_transpose_2d<uint8_t>(in, out, batch, rows, cols, s);
    case 2:
      return run_transpose_2d<uint16_t>(in, out, batch, rows, cols, s);
    case 4:
      return run_transpose_2d<uint32_t>(in, out, batch, rows, cols, s);
    case 8:
      return run_transpose_2d<uint64_t>(in, out, batch, rows, cols, s);
    default:
      return unsupported("transpose of " + std::to_string(element_bytes) + "-byte elements");
  }
}

status launch_gather(const void* data, const void* indices, bool index_is_64, void* out,
                     int64_t outer, int64_t axis_dim, int64_t index_count, int64_t inner_bytes,
                     uint32_t* fault_word, void* stream) {
  if (outer * index_count * inner_bytes == 0) return status::ok();
  const cudaStream_t s = to_stream(stream);
  // The widest word that divides a row and both base addresses: an embedding row of 768 floats
  // moves as 192 16-byte words.
  for (size_t w : {16, 8, 4, 2}) {
    if (inner_bytes % static_cast<int64_t>(w) == 0 && aligned(data, w) && aligned(out, w)) {
      const int64_t words = inner_bytes / static_cast<int64_t>(w);
      switch (w) {
        case 16:
          return run_gather<uint4>(data, indices, index_is_64, out, outer, axis_dim, index_count,
                                   words, fault_word, s);
        case 8:
          return run_gather<uint64_t>(data, indices, index_is_64, out, outer, axis_dim, index_count,
                                      words, fault_word, s);
        case 4:
          return run_gather<uint32_t>(data, indices, index_is_64, out, outer, axis_dim, index_count,
                                      words, fault_word, s);
        default:
          return run_gather<uint16_t>(data, indices, index_is_64, out, outer, axis_dim, index_count,
                                      words, fault_word, s);
      }
    }
  }
  return run_gather<uint8_t>(data, indices, index_is_64, out, outer, axis_dim, index_count,
                             inner_bytes, fault_word, s);
}

}  // namespace troupe::kernels::cuda
