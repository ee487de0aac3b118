#pragma once
/// Memory planning: tensor lifetimes -> offsets in one arena per plan. Views (Reshape...) share
/// their input's buffer; an elementwise output reuses its input's buffer when that input dies at
/// this step (in place); everything else is packed greedily by size into the smallest arena in which
/// no two buffers that are alive at the same step overlap. Pure functions: no device, no kernels.

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
};

/// `inputs_in_arena`: graph inputs are copied into the arena (a device backend) rather than used
/// where the caller keeps them (the CPU).
memory_assignment plan_memory_layout(const std::vector<step_desc>& steps, const std::vector<value_desc>& values,
                                     bool inputs_in_arena, size_t alignment);

/// Places buffers: sets each offset and returns the arena size. Buffers whose step ranges
/// intersect never overlap in memory.
size_t pack_buffers(std::vector<buffer>& buffers, size_t alignment);

}  // namespace troupe::runtime
