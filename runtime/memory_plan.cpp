#include "runtime/memory_plan.hpp"

#include <algorithm>
#include <numeric>

namespace troupe::runtime {
namespace {

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

bool lifetimes_overlap(const buffer& a, const buffer& b) {
  return a.first_step <= b.last_step && b.first_step <= a.last_step;
}

}  // namespace

size_t pack_buffers(std::vector<buffer>& buffers, size_t alignment) {
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  // Largest first (ties: longer-lived first) packs tightest in practice (greedy by size).
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (buffers[a].bytes != buffers[b].bytes) return buffers[a].bytes > buffers[b].bytes;
    return buffers[a].last_step - buffers[a].first_step > buffers[b].last_step - buffers[b].first_step;
  });
  std::vector<size_t> placed;
  size_t arena = 0;
  for (size_t idx : order) {
    buffer& b = buffers[idx];
    const size_t size = align_up(std::max<size_t>(b.bytes, 1), alignment);
    // Occupied intervals of buffers alive at the same time, sorted by offset; take the first gap.
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t p : placed) {
      if (lifetimes_overlap(b, buffers[p])) {
        busy.emplace_back(buffers[p].offset, buffers[p].offset + align_up(std::max<size_t>(buffers[p].bytes, 1), alignment));
      }
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [lo, hi] : busy) {
      if (offset + size <= lo) break;
      offset = std::max(offset, hi);
    }
    b.offset = offset;
    arena = std::max(arena, offset + size);
    placed.push_back(idx);
  }
  return arena;
}

memory_assignment plan_memory_layout(const std::vector<step_desc>& steps, const std::vector<value_desc>& values,
                                     bool inputs_in_arena, size_t alignment) {
  memory_assignment m;
  m.values.resize(values.size());
  m.workspace_buffer.assign(steps.size(), -1);
  const int end_step = static_cast<int>(steps.size());

  // Last step at which each value is read (graph outputs: past the end).
  std::vector<int> last_use(values.size(), -1);
  for (int s = 0; s < end_step; ++s) {
    for (int in : steps[s].inputs) {
      if (in >= 0) last_use[in] = std::max(last_use[in], s);
    }
  }
  for (size_t v = 0; v < values.size(); ++v) {
    if (values[v].is_graph_output) last_use[v] = end_step;
  }

  // Values sharing each buffer, to know when a buffer dies and whether it holds a graph output.
  std::vector<std::vector<int>> buffer_values;
  auto new_buffer = [&](size_t bytes, int first) {
    m.buffers.push_back(buffer{bytes, first, first, 0});
    buffer_values.emplace_back();
    return static_cast<int>(m.buffers.size() - 1);
  };
  auto attach = [&](int v, int b) {
    m.values[v] = {storage_kind::arena, b};
    buffer_values[b].push_back(v);
    m.buffers[b].last_step = std::max(m.buffers[b].last_step, last_use[v]);
  };

  for (size_t v = 0; v < values.size(); ++v) {
    if (values[v].is_constant) {
      m.values[v] = {storage_kind::constant, static_cast<int>(v)};
    } else if (values[v].graph_input >= 0) {
      if (inputs_in_arena) {
        attach(static_cast<int>(v), new_buffer(values[v].bytes, -1));
      } else {
        m.values[v] = {storage_kind::graph_input, values[v].graph_input};
      }
    }
  }

  for (int s = 0; s < end_step; ++s) {
    const step_desc& st = steps[s];
    for (size_t o = 0; o < st.outputs.size(); ++o) {
      const int out = st.outputs[o];
      if (out < 0) continue;
      m.sum_of_tensor_bytes += values[out].bytes;
      if (st.is_view && o == 0 && !st.inputs.empty() && st.inputs[0] >= 0) {
        const value_storage src = m.values[st.inputs[0]];
        if (src.kind == storage_kind::arena) {
          attach(out, src.id);
        } else {
          m.values[out] = src;  // a view of a constant or of the caller's input
        }
        continue;
      }
      int reuse = -1;
      for (const auto& [po, pi] : st.inplace) {
        if (po != static_cast<int>(o) || pi < 0 || static_cast<size_t>(pi) >= st.inputs.size()) continue;
        const int in = st.inputs[pi];
        if (in < 0 || m.values[in].kind != storage_kind::arena) continue;
        const int b = m.values[in].id;
        if (m.buffers[b].bytes != values[out].bytes) continue;
        // The buffer must die here: no other reader later, and no graph output lives in it.
        bool dies_here = true;
        for (int shared : buffer_values[b]) dies_here &= last_use[shared] <= s;
        // Another input of this step in the same buffer would be overwritten while still read.
        for (size_t k = 0; k < st.inputs.size() && dies_here; ++k) {
          if (static_cast<int>(k) != pi && st.inputs[k] >= 0 && m.values[st.inputs[k]].kind == storage_kind::arena &&
              m.values[st.inputs[k]].id == b) {
            dies_here = false;
          }
        }
        if (dies_here) {
          reuse = b;
          break;
        }
      }
      attach(out, reuse >= 0 ? reuse : new_buffer(values[out].bytes, s));
    }
    if (st.workspace_bytes > 0) m.workspace_buffer[s] = new_buffer(st.workspace_bytes, s);
  }
  // A value computed but never read (an unused output) still needs its bytes during its step.
  m.arena_bytes = pack_buffers(m.buffers, alignment);
  return m;
}

}  // namespace troupe::runtime
