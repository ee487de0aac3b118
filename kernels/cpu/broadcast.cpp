#include "kernels/cpu/broadcast.hpp"

#include <algorithm>
#include <string>

namespace troupe::kernels::cpu {

expected<broadcast_plan> make_broadcast_plan(std::span<const shape_t* const> inputs,
                                             const shape_t& out) {
  broadcast_plan p;
  const int n = static_cast<int>(inputs.size());
  if (n < 1 || n > broadcast_plan::max_inputs) return internal_error("broadcast of 1-3 inputs");
  p.num_inputs = n;
  p.total = element_count(out);
  const size_t out_rank = out.size();
  for (int j = 0; j < n; ++j) {
    if (inputs[j]->size() > out_rank) {
      return internal_error("input rank " + std::to_string(inputs[j]->size()) +
                            " exceeds output rank " + std::to_string(out_rank));
    }
  }
  // Input j's extent along output dim i (1 where it has no such dim).
  auto extent = [&](int j, size_t i) -> int64_t {
    const shape_t& s = *inputs[j];
    const size_t lead = out_rank - s.size();
    return i < lead ? 1 : s[i - lead];
  };

  // Merge from the innermost dim outwards; `broadcast` records which inputs skip a merged dim.
  struct merged_dim {
    int64_t size;
    std::array<bool, broadcast_plan::max_inputs> broadcast;
  };
  std::vector<merged_dim> merged;  // innermost first
  for (size_t k = out_rank; k-- > 0;) {
    const int64_t size = out[k];
    if (size == 1) continue;
    merged_dim m{size, {}};
    for (int j = 0; j < n; ++j) {
      const int64_t e = extent(j, k);
      if (e != size && e != 1) {
        return internal_error("input shape " + shape_to_string(*inputs[j]) +
                              " does not broadcast to " + shape_to_string(out));
      }
      m.broadcast[j] = e != size;
    }
    if (!merged.empty() && merged.back().broadcast == m.broadcast) {
      merged.back().size *= size;
    } else {
      merged.push_back(m);
    }
  }
  if (merged.empty()) merged.push_back({1, {}});  // one element (or a scalar output)
  if (merged.size() > static_cast<size_t>(broadcast_plan::max_dims)) {
    return unsupported("broadcast pattern of " + std::to_string(merged.size()) +
                       " alternating dims (at most " + std::to_string(broadcast_plan::max_dims) +
                       ")");
  }
  p.rank = static_cast<int>(merged.size());
  std::array<int64_t, broadcast_plan::max_inputs> running{};
  running.fill(1);
  for (int d = 0; d < p.rank; ++d) {  // d counts from the innermost merged dim
    const merged_dim& m = merged[static_cast<size_t>(d)];
    const int at = p.rank - 1 - d;
    p.dims[at] = m.size;
    for (int j = 0; j < n; ++j) {
      p.strides[j][at] = m.broadcast[j] ? 0 : running[j];
      if (!m.broadcast[j]) running[j] *= m.size;
    }
  }
  return p;
}

expected<broadcast_plan> make_broadcast_plan(const shape_t& a, const shape_t& b,
                                             const shape_t& out) {
  const shape_t* in[] = {&a, &b};
  return make_broadcast_plan(std::span<const shape_t* const>(in, 2), out);
}

}  // namespace troupe::kernels::cpu
