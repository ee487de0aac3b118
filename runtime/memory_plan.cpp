#include "runtime/memory_plan.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>

namespace troupe::runtime {
namespace {

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

bool lifetimes_overlap(const buffer& a, const buffer& b) {
  return a.first_step <= b.last_step && b.first_step <= a.last_step;
}

size_t padded_size(const buffer& b, size_t alignment) {
  return align_up(std::max<size_t>(b.bytes, 1), alignment);
}

/// One packing: buffers placed in `order`, each at an offset where it overlaps no placed buffer
/// whose lifetime intersects its own. First fit takes the lowest such offset; best fit the
/// smallest gap between live buffers that holds it (the open end above them when none does).
size_t pack_in_order(std::vector<buffer>& buffers, const std::vector<size_t>& order,
                     size_t alignment, bool best_fit) {
  std::vector<size_t> placed;
  placed.reserve(order.size());
  std::vector<std::pair<size_t, size_t>> busy;
  size_t arena = 0;
  for (size_t idx : order) {
    buffer& b = buffers[idx];
    const size_t size = padded_size(b, alignment);
    busy.clear();
    for (size_t p : placed) {
      if (lifetimes_overlap(b, buffers[p])) {
        busy.emplace_back(buffers[p].offset,
                          buffers[p].offset + padded_size(buffers[p], alignment));
      }
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;       // first fit: the lowest gap that holds the buffer
    size_t best = SIZE_MAX;  // best fit: the smallest such gap
    size_t best_offset = 0;
    size_t cursor = 0;  // end of the busy intervals seen so far
    bool first_found = false;
    for (const auto& [lo, hi] : busy) {
      if (lo > cursor && lo - cursor >= size) {
        if (!first_found) {
          offset = cursor;
          first_found = true;
        }
        if (lo - cursor < best) {
          best = lo - cursor;
          best_offset = cursor;
        }
      }
      cursor = std::max(cursor, hi);
    }
    if (!first_found) offset = cursor;
    b.offset = best_fit ? (best != SIZE_MAX ? best_offset : cursor) : offset;
    arena = std::max(arena, b.offset + size);
    placed.push_back(idx);
  }
  return arena;
}

}  // namespace

size_t peak_live_bytes(const std::vector<buffer>& buffers, size_t alignment) {
  // Lifetimes span steps -1 .. steps.size(); sweep the boundaries.
  std::vector<std::pair<int, long long>> events;
  events.reserve(buffers.size() * 2);
  for (const auto& b : buffers) {
    const long long size = static_cast<long long>(padded_size(b, alignment));
    events.emplace_back(b.first_step, size);
    events.emplace_back(b.last_step + 1, -size);
  }
  // At equal steps, frees (negative) before allocations: a buffer dead after step s and one born
  // at s + 1 are never alive together.
  std::sort(events.begin(), events.end());
  long long live = 0, peak = 0;
  for (const auto& [step, delta] : events) {
    live += delta;
    peak = std::max(peak, live);
  }
  return static_cast<size_t>(peak);
}

size_t pack_buffers(std::vector<buffer>& buffers, size_t alignment) {
  if (buffers.empty()) return 0;
  const size_t n = buffers.size();
  auto lifetime = [&](size_t i) { return buffers[i].last_step - buffers[i].first_step; };
  std::vector<std::vector<size_t>> orders;

  // Greedy by size: largest first (ties: longer-lived first).
  std::vector<size_t> by_size(n);
  std::iota(by_size.begin(), by_size.end(), 0);
  std::stable_sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) {
    if (buffers[a].bytes != buffers[b].bytes) return buffers[a].bytes > buffers[b].bytes;
    return lifetime(a) > lifetime(b);
  });
  orders.push_back(by_size);

  // In order of first use (ties: larger first): follows the program, so buffers born together
  // sit together and die together.
  std::vector<size_t> by_start(n);
  std::iota(by_start.begin(), by_start.end(), 0);
  std::stable_sort(by_start.begin(), by_start.end(), [&](size_t a, size_t b) {
    if (buffers[a].first_step != buffers[b].first_step)
      return buffers[a].first_step < buffers[b].first_step;
    return buffers[a].bytes > buffers[b].bytes;
  });
  orders.push_back(by_start);

  // Greedy by breadth: steps with the most live bytes first; at each, its unplaced buffers
  // largest first. The peak steps, which bound the arena from below, are packed tightest.
  {
    int lo = 0, hi = 0;
    for (const auto& b : buffers) {
      lo = std::min(lo, b.first_step);
      hi = std::max(hi, b.last_step);
    }
    std::vector<size_t> breadth(static_cast<size_t>(hi - lo + 1), 0);
    std::vector<std::vector<size_t>> alive(breadth.size());
    for (size_t i = 0; i < n; ++i) {
      for (int st = buffers[i].first_step; st <= buffers[i].last_step; ++st) {
        breadth[static_cast<size_t>(st - lo)] += buffers[i].bytes;
        alive[static_cast<size_t>(st - lo)].push_back(i);
      }
    }
    std::vector<size_t> steps(breadth.size());
    std::iota(steps.begin(), steps.end(), 0);
    std::stable_sort(steps.begin(), steps.end(),
                     [&](size_t a, size_t b) { return breadth[a] > breadth[b]; });
    std::vector<char> taken(n, 0);
    std::vector<size_t> by_breadth;
    by_breadth.reserve(n);
    for (size_t st : steps) {
      std::vector<size_t>& here = alive[st];
      std::stable_sort(here.begin(), here.end(),
                       [&](size_t a, size_t b) { return buffers[a].bytes > buffers[b].bytes; });
      for (size_t i : here) {
        if (!taken[i]) {
          taken[i] = 1;
          by_breadth.push_back(i);
        }
      }
    }
    orders.push_back(std::move(by_breadth));
  }

  // Every order with first fit and best fit; keep the smallest arena (ties: the first tried, so
  // the result is deterministic).
  std::vector<buffer> best_layout;
  size_t best_arena = SIZE_MAX;
  for (const auto& order : orders) {
    for (bool best_fit : {false, true}) {
      std::vector<buffer> trial = buffers;
      const size_t arena = pack_in_order(trial, order, alignment, best_fit);
      if (arena < best_arena) {
        best_arena = arena;
        best_layout = std::move(trial);
      }
    }
  }
  buffers = std::move(best_layout);
  return best_arena;
}

size_t pack_buffers_greedy_by_size(std::vector<buffer>& buffers, size_t alignment) {
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (buffers[a].bytes != buffers[b].bytes) return buffers[a].bytes > buffers[b].bytes;
    return buffers[a].last_step - buffers[a].first_step >
           buffers[b].last_step - buffers[b].first_step;
  });
  return pack_in_order(buffers, order, alignment, false);
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
  m.peak_live_bytes = peak_live_bytes(m.buffers, alignment);
  m.arena_bytes = pack_buffers(m.buffers, alignment);
  return m;
}

}  // namespace troupe::runtime
