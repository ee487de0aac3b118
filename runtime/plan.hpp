#pragma once
/// An executable plan: a specialised graph for one set of input shapes, one kernel per node, and
/// one arena laid out by the memory planner. `run` binds the caller's inputs, runs every step in
/// order and copies the outputs out; it allocates nothing. A plan is not reentrant: one run at a
/// time.
///
/// On a device that records work (CUDA), the steps are captured into one CUDA graph after the
/// first run (kernels may initialise lazily on their first compute) and every later run replays
/// it: input copies, the replay and output copies go in that order on the device's stream. A
/// plan holding a kernel that is not capturable, or whose capture fails, stays eager; so does
/// every plan with TROUPE_CUDA_GRAPHS=0.
///
/// Device memory: the arena comes from the device's own pool; constants the steps read come
/// from the device's shared constant store (one copy per device for every plan and sibling).
/// Invariant: a plan is destroyed only while no run of it is in flight (run and execute wait for
/// the device before they return), so its arena and constants may go back at once.
/// Evictable constants (device_options::evictable_constants): while the device's constants are
/// evicted, run, execute and profile fail `unavailable` before touching the device; paged back
/// in, they are at the addresses the steps and the captured graph hold, so nothing is rebuilt.

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "kernels/kernel.hpp"
#include "runtime/device.hpp"
#include "runtime/graph.hpp"
#include "runtime/memory_plan.hpp"
#include "runtime/session.hpp"

namespace troupe::runtime {

class plan {
 public:
  /// `g` must be specialised (runtime/specialize.hpp) and passed through the graph passes.
  /// `max_arena_bytes` > 0: a plan whose arena would be larger fails out_of_memory before
  /// allocating it (a replica's share of a memory budget; the caller may then slice batches).
  static expected<std::unique_ptr<plan>> build(graph g, std::shared_ptr<device> dev,
                                               size_t max_arena_bytes = 0);
  ~plan();

  /// Inputs are host tensors in the order of the graph's inputs, with the infos the plan was built
  /// for; outputs are host tensors the caller allocated with output_infos().
  status run(std::span<const tensor> inputs, std::span<tensor> outputs);
  /// Puts `inputs` where the steps read them (uploads into the arena on a device) and waits:
  /// what run() does before its steps. The arena reuses an input's bytes once its last reader
  /// has run, so after a run or an execute the inputs are gone: bind them again before the next
  /// execute or profile.
  status bind_inputs(std::span<const tensor> inputs);
  /// Runs the steps on the inputs bound last (no copies) and waits for the device: what the
  /// executor alone costs, for benchmarks.
  status execute();

  /// One step's share of a run, from `profile`.
  struct step_time {
    std::string op;        // domain::op_type
    std::string output;    // the step's first output value
    std::string shape;     // that output's shape
    double total_ms = 0;   // summed over the profiled runs
  };
  /// Runs the steps `runs` times on `inputs` (bound before each run), waiting for the device after each
  /// step so that each step's wall time is its own (adds a synchronisation per step: for finding
  /// where time goes, not for latency figures).
  expected<std::vector<step_time>> profile(int runs, std::span<const tensor> inputs);

  /// How run() and execute() launch the steps.
  enum class launch_mode : uint8_t {
    eager,          // one compute per step on every run
    graph_pending,  // eager for the first run, then captured
    graph,          // the captured graph is replayed
  };
  launch_mode mode() const { return mode_; }
  /// Why a plan on a device that records work runs eagerly (empty otherwise).
  const std::string& eager_reason() const { return eager_reason_; }
  /// Operations in the captured graph (0 before capture or when eager).
  size_t graph_node_count() const;

  const std::vector<tensor_info>& input_infos() const { return input_infos_; }
  const std::vector<tensor_info>& output_infos() const { return output_infos_; }
  const plan_memory& memory() const { return memory_; }
  /// Where every value and workspace lives in the arena (for tests and `troupe inspect`).
  const memory_assignment& layout() const { return layout_; }
  const graph& specialized_graph() const { return graph_; }
  size_t step_count() const { return steps_.size(); }
  device& target() { return *device_; }

 private:
  struct step {
    std::unique_ptr<kernels::kernel> k;
    std::vector<tensor> inputs;
    std::vector<tensor> outputs;
    void* workspace = nullptr;
    size_t node_index = 0;  // in graph_
  };
  /// A tensor whose bytes are a graph input, re-pointed at each run.
  struct input_binding {
    tensor* target;
    int input_index;
  };
  struct output_source {
    value_storage storage;
    const void* base = nullptr;  // resolved for arena and constants; graph inputs at run time
  };

  plan() = default;
  void* storage_pointer(const value_storage& s) const;
  status run_steps();
  status check_inputs(std::span<const tensor> inputs) const;
  /// Re-points host inputs and enqueues the uploads of device ones (no wait).
  status place_inputs(std::span<const tensor> inputs);
  status run_steps_eagerly(bool capturing);

  graph graph_;
  std::shared_ptr<device> device_;
  device_buffer arena_;
  // Device copies of the constants the steps read, from the device's shared store (one copy per
  // device for every plan and sibling); on the host, the constants' own bytes.
  std::vector<std::shared_ptr<const void>> constant_handles_;
  std::vector<const void*> constant_pointers_;       // per value index (null if not a constant)
  std::vector<step> steps_;
  std::vector<input_binding> input_bindings_;
  std::vector<std::pair<size_t, int>> input_uploads_;  // (arena offset, input index) on devices
  std::vector<output_source> outputs_;
  std::vector<tensor_info> input_infos_;
  std::vector<tensor_info> output_infos_;
  memory_assignment layout_;
  plan_memory memory_;
  launch_mode mode_ = launch_mode::eager;
  bool first_run_done_ = false;  // graph_pending: the eager run before the capture happened
  std::string eager_reason_;
  std::unique_ptr<recorded_work> recorded_;  // the captured CUDA graph, in launch_mode::graph
};

}  // namespace troupe::runtime
