#pragma once
/// Memory planning: tensor lifetimes -> offsets in one arena per plan. Views (Reshape...) share
/// their input's buffer; an output a kernel declares in place over an input (inplace_pairs:
/// elementwise ops, a fused convolution's residual) reuses that input's buffer when the input dies
/// at this step; every other buffer gets an offset by lifetime packing: two buffers whose
/// [first step, last step] intervals intersect never overlap in memory, buffers whose intervals
/// do not may share bytes. Several placement orders (by size, by first use, by the live bytes of
/// the busiest steps) with first fit and best fit are tried and the smallest arena kept. Pure
/// functions: no device, no kernels.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace troupe::runtime {

enum class storage_kind : uint8_t {
  constant,     // a constant value (weights, folded): owned by the plan
  graph_input,  // the caller's input bytes (bound per run)
  arena,        // a buffer in the plan's arena
  none,         // an unused optional output, or a value no step touches
};

struct value_storage {
  storage_kind kind = storage_kind::none;
  int id = -1;  // constant: value index; graph_input: input position; arena: buffer index
};

struct step_desc {
  std::vector<int> inputs;   // value indices; -1 absent
  std::vector<int> outputs;  // value indices; -1 absent
  bool is_view = false;      // output 0 aliases input 0
  std::vector<std::pair<int, int>> inplace;  // (output, input) that may share storage
  size_t workspace_bytes = 0;
};

struct value_desc {
  size_t bytes = 0;
  bool is_constant = false;
  int graph_input = -1;  // position among graph inputs, or -1
  bool is_graph_output = false;
};

struct buffer {
  size_t bytes = 0;
  int first_step = 0;  // the step that writes it first (-1: before the first step)
  int last_step = 0;   // the last step that reads it (steps.size(): alive past the end)
  size_t offset = 0;   // filled by pack_buffers
};

struct memory_assignment {
  std::vector<value_storage> values;   // per value
  std::vector<buffer> buffers;
  std::vector<int> workspace_buffer;   // per step: buffer index or -1
  size_t arena_bytes = 0;
  size_t sum_of_tensor_bytes = 0;      // one buffer per computed value, for comparison
  size_t peak_live_bytes = 0;          // the lower bound no packing beats (peak_live_bytes below)
};

/// `inputs_in_arena`: graph inputs are copied into the arena (a device backend) rather than used
/// where the caller keeps them (the CPU).
memory_assignment plan_memory_layout(const std::vector<step_desc>& steps, const std::vector<value_desc>& values,
                                     bool inputs_in_arena, size_t alignment);

/// Places buffers: sets each offset and returns the arena size. Buffers whose step ranges
/// intersect never overlap in memory; the arena is the smallest of the orders tried, so never
/// larger than pack_buffers_greedy_by_size's.
size_t pack_buffers(std::vector<buffer>& buffers, size_t alignment);
/// The former planner, largest first at the lowest free offset: kept as the baseline the tests
/// and `troupe inspect` compare with.
size_t pack_buffers_greedy_by_size(std::vector<buffer>& buffers, size_t alignment);
/// The largest sum of (aligned) buffer sizes alive at one step: no placement of these buffers
/// fits in a smaller arena.
size_t peak_live_bytes(const std::vector<buffer>& buffers, size_t alignment);

}  // namespace troupe::runtime
