#pragma once
/// The runtime's front door: load a model once, then run it on named host tensors. A session
/// compiles one plan per distinct set of input shapes (batch bucket) and caches it; a plan run
/// allocates nothing. Thread-safety: a session serialises its runs (one arena per plan); create
/// several sessions (instances) for parallel runs.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

enum class precision : uint8_t { fp32 = 0, fp16 = 1, bf16 = 2, tf32 = 3 };
std::string_view precision_name(precision p);
expected<precision> parse_precision(std::string_view s);
expected<kernels::backend> parse_backend(std::string_view s);

struct session_options {
  kernels::backend where = kernels::backend::cpu;
  precision compute_precision = precision::fp32;
  int device_index = 0;       // GPU ordinal for the CUDA backend
  bool enable_fusion = true;  // Conv/Gemm/MatMul + bias/activation/residual, BN folding
};

/// A graph input or output as callers see it.
struct io_desc {
  std::string name;
  dtype type = dtype::undefined;
  symbolic_shape shape;  // declared dims; symbols for dynamic ones
};

/// Memory figures of one compiled plan.
struct plan_memory {
  size_t planned_arena_bytes = 0;    // one arena holding every intermediate and workspace
  size_t sum_of_tensor_bytes = 0;    // what one buffer per intermediate would take
  size_t constant_bytes = 0;         // weights and folded constants
  size_t workspace_bytes = 0;        // largest kernel scratch (included in the arena)
};

class plan;    // runtime/plan.hpp
class device;  // runtime/device.hpp

class session {
 public:
  /// Loads, checks and prepares the model; plans are compiled lazily per input shapes (or
  /// eagerly with `prepare`).
  static expected<std::unique_ptr<session>> create(const std::string& model_path,
                                                   session_options options = {});
  static expected<std::unique_ptr<session>> create_from_graph(graph g, session_options options);
  ~session();

  const std::vector<io_desc>& inputs() const { return inputs_; }
  const std::vector<io_desc>& outputs() const { return outputs_; }
  const graph& model_graph() const { return graph_; }
  const session_options& options() const { return options_; }

  /// Compiles (or finds) the plan for these input infos, in the order of inputs().
  expected<plan*> prepare(const std::vector<tensor_info>& input_infos);

  /// Runs on host tensors given by name; returns host outputs in the order of outputs().
  expected<std::vector<tensor>> run(const std::map<std::string, tensor>& named_inputs);
  /// Runs on host tensors in the order of inputs().
  expected<std::vector<tensor>> run(const std::vector<tensor>& ordered_inputs);

  /// Bytes the session's device pool holds (weights, arenas, kernel-owned copies).
  size_t device_reserved_bytes() const;

  /// Checks inputs (names, dtypes, ranks, fixed dims) and orders them as inputs().
  expected<std::vector<tensor>> order_inputs(const std::map<std::string, tensor>& named) const;

 private:
  session(graph g, session_options options);
  status init();

  graph graph_;
  session_options options_;
  std::shared_ptr<device> device_;  // shared by every plan of this session
  std::vector<io_desc> inputs_;
  std::vector<io_desc> outputs_;
  std::mutex mutex_;  // guards plans_ and serialises runs
  std::map<std::string, std::unique_ptr<plan>> plans_;  // key: input infos as text
};

}  // namespace troupe::runtime
