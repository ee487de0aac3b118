#pragma once
/// An executable plan: a specialised graph for one set of input shapes, one kernel per node, and one
/// arena laid out by the memory planner. `run` binds the caller's inputs, runs every step in order
/// and copies the outputs out; it allocates nothing. A plan is not reentrant: one run at a time.

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
  static expected<std::unique_ptr<plan>> build(graph g, std::shared_ptr<device> dev);
  ~plan();

  /// Inputs are host tensors in the order of the graph's inputs, with the infos the plan was built
  /// for; outputs are host tensors the caller allocated with output_infos().
  status run(std::span<const tensor> inputs, std::span<tensor> outputs);
  /// Runs the steps again on the inputs of the last `run` (already on the device, no copies) and
  /// waits for the device: what the executor alone costs, for benchmarks.
  status execute();

  /// One step's share of a run, from `profile`.
  struct step_time {
    std::string op;        // domain::op_type
    std::string output;    // the step's first output value
    std::string shape;     // that output's shape
    double total_ms = 0;   // summed over the profiled runs
  };
  /// Runs the steps `runs` times on the inputs of the last `run`, waiting for the device after each
  /// step so that each step's wall time is its own (adds a synchronisation per step: for finding
  /// where time goes, not for latency figures).
  expected<std::vector<step_time>> profile(int runs);

  const std::vector<tensor_info>& input_infos() const { return input_infos_; }
  const std::vector<tensor_info>& output_infos() const { return output_infos_; }
  const plan_memory& memory() const { return memory_; }
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

  graph graph_;
  std::shared_ptr<device> device_;
  device_buffer arena_;
  std::vector<device_buffer> device_constants_;      // constants copied to a non-host device
  std::vector<const void*> constant_pointers_;       // per value index (null if not a constant)
  std::vector<step> steps_;
  std::vector<input_binding> input_bindings_;
  std::vector<std::pair<size_t, int>> input_uploads_;  // (arena offset, input index) on devices
  std::vector<output_source> outputs_;
  std::vector<tensor_info> input_infos_;
  std::vector<tensor_info> output_infos_;
  memory_assignment layout_;
  plan_memory memory_;
};

}  // namespace troupe::runtime
