#pragma once
/// numpy broadcasting for up to three inputs, planned once per kernel: the output shape with its
/// size-1 dims dropped and neighbouring dims merged wherever every input treats them alike
/// (present in both, or broadcast in both). What is left is usually one or two dims:
/// [B,S,H] + [H] becomes [B*S, H] with input 1's outer stride 0; [N,C,H,W] * [C,1,1] becomes
/// [N, C, H*W]. The walker hands out maximal runs along the innermost dim, where each input's
/// stride is 0 (a scalar for the run) or 1 (contiguous): the loops over a run vectorise.

#include <array>
#include <cstdint>
#include <span>

#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::kernels::cpu {

struct broadcast_plan {
  static constexpr int max_inputs = 3;
  /// Dims left after merging; more is refused as unsupported (it takes a rank-33 pattern).
  static constexpr int max_dims = 16;

  int num_inputs = 0;
  int rank = 0;       // >= 1 whenever total > 0
  int64_t total = 0;  // output elements
  std::array<int64_t, max_dims> dims{};
  /// strides[j][d]: elements to step in input j for one step along merged dim d (0: broadcast).
  std::array<std::array<int64_t, max_dims>, max_inputs> strides{};

  int64_t inner() const { return dims[rank - 1]; }
  /// 0 or 1: whether input j is a scalar or contiguous along each run.
  int64_t inner_stride(int j) const { return strides[j][rank - 1]; }
  /// True when input j has the output's shape (up to size-1 dims): one run covers everything.
  bool is_full(int j) const { return rank == 1 && strides[j][0] == 1; }
  /// True when input j holds one element for the whole output.
  bool is_scalar(int j) const {
    for (int d = 0; d < rank; ++d) {
      if (strides[j][d] != 0) return false;
    }
    return true;
  }
};

/// Plans `inputs` (each broadcastable to `out`, which the schema computed) onto `out`.
expected<broadcast_plan> make_broadcast_plan(std::span<const shape_t* const> inputs,
                                             const shape_t& out);
expected<broadcast_plan> make_broadcast_plan(const shape_t& a, const shape_t& b,
                                             const shape_t& out);

/// Calls run(offsets, out_offset, len) for every maximal run of output elements in [begin, end)
/// that lies along the innermost dim; offsets[j] is input j's element offset at the run start.
template <int N, class Run>
inline void for_each_run(const broadcast_plan& p, int64_t begin, int64_t end, const Run& run) {
  const int r = p.rank;
  const int64_t inner = p.dims[r - 1];
  std::array<int64_t, broadcast_plan::max_dims> index{};
  std::array<int64_t, N> row_offset{};
  int64_t rest = begin / inner;
  int64_t col = begin % inner;
  for (int d = r - 2; d >= 0; --d) {
    index[d] = rest % p.dims[d];
    rest /= p.dims[d];
    for (int j = 0; j < N; ++j) row_offset[j] += index[d] * p.strides[j][d];
  }
  int64_t pos = begin;
  while (pos < end) {
    const int64_t len = std::min(inner - col, end - pos);
    std::array<int64_t, N> at;
    for (int j = 0; j < N; ++j) at[j] = row_offset[j] + col * p.strides[j][r - 1];
    run(at, pos, len);
    pos += len;
    col = 0;
    for (int d = r - 2; d >= 0; --d) {  // odometer over the outer dims
      for (int j = 0; j < N; ++j) row_offset[j] += p.strides[j][d];
      if (++index[d] < p.dims[d]) break;
      for (int j = 0; j < N; ++j) row_offset[j] -= p.strides[j][d] * p.dims[d];
      index[d] = 0;
    }
  }
}

}  // namespace troupe::kernels::cpu
