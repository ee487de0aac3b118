#pragma once
/// The kernel interface and the registry keyed by (op, dtype, backend). A kernel is created once
/// per node of a plan with the node's concrete input/output types and shapes (and the values of
/// constant inputs such as weights), then `compute` runs on the hot path with no allocation.

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/op_node.hpp"
#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::kernels {

enum class backend : uint8_t { cpu = 0, cuda = 1 };
std::string_view backend_name(backend b);

/// Backend-owned state a kernel may use (CUDA handles, streams); opaque to the runtime.
class backend_context {
 public:
  virtual ~backend_context() = default;
  virtual backend kind() const = 0;
};

struct kernel_create_context {
  const op_node& node;
  std::span<const tensor_info> inputs;          // absent optional inputs: dtype::undefined
  std::span<const tensor* const> input_values;  // constant inputs (weights), else nullptr
  std::span<const tensor_info> outputs;         // inferred output types/shapes
  backend_context* backend = nullptr;           // null for the CPU backend

  bool has_input(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const tensor* value(size_t i) const {
    return i < input_values.size() ? input_values[i] : nullptr;
  }
  status fail(error_code code, const std::string& what) const {
    return status(code, node.describe() + ": " + what);
  }
};

struct kernel_run_context {
  std::span<const tensor> inputs;  // absent optional inputs: undefined tensors
  std::span<tensor> outputs;       // storage assigned by the planner; shapes as inferred
  void* workspace = nullptr;       // workspace_bytes() bytes, valid only during compute
  void* stream = nullptr;          // backend stream (cudaStream_t) or null on the CPU
  /// True while a whole-plan CUDA graph records this compute (runtime/plan.cpp): the calls are
  /// recorded on `stream`, not run, and the graph is replayed later on the same pointers. compute
  /// must then not synchronise, read device results on the host, allocate, or begin a stream
  /// capture of its own (nested capture is an error).
  bool capturing = false;
};

class kernel {
 public:
  virtual ~kernel() = default;
  virtual status compute(kernel_run_context& ctx) = 0;
  /// Scratch bytes compute needs; the planner places them in the arena.
  virtual size_t workspace_bytes() const { return 0; }
  /// (output, input) pairs where the output may be written over the input's storage: the
  /// kernel reads each input element before writing the output element at the same offset.
  virtual std::vector<std::pair<int, int>> inplace_pairs() const { return {}; }
  /// True when output 0 is exactly input 0's bytes under another shape (Reshape, Flatten,
  /// Squeeze, Unsqueeze, Identity): the planner aliases the two and compute is never called.
  virtual bool is_view() const { return false; }
  /// False when compute never reads constant input `i` because the factory kept its own (packed,
  /// converted, uploaded) copy: the planner then gives that input no run-time storage on a device.
  virtual bool reads_constant_input(int i) const { return true; }
  /// False when compute cannot be recorded into a CUDA graph and replayed (it synchronises, reads
  /// device values on the host, or launches different work from run to run): a plan holding such
  /// a kernel runs its steps eagerly.
  virtual bool capturable() const { return true; }
};

using kernel_factory = std::function<expected<std::unique_ptr<kernel>>(const kernel_create_context&)>;
/// A finer check than the dtype key: attribute values, ranks... OK when the kernel can run.
using supports_fn = std::function<status(const kernel_create_context&)>;

struct kernel_def {
  std::string domain;  // "" = ai.onnx
  std::string op_type;
  backend where = backend::cpu;
  /// dtypes accepted for input `type_input` (empty: any); this is the registry's dtype key.
  std::vector<dtype> types;
  int type_input = 0;
  supports_fn supports;  // may be empty
  kernel_factory create;
};

class kernel_registry {
 public:
  /// The process-wide registry with every kernel of every backend built into this binary.
  static const kernel_registry& standard();

  void add(kernel_def def);
  /// OK when some kernel can run this node on this backend; else `unsupported` naming why.
  status supports(backend where, const kernel_create_context& ctx) const;
  expected<std::unique_ptr<kernel>> create(backend where, const kernel_create_context& ctx) const;
  /// Registered (domain, op) pairs for a backend, for docs and `troupe inspect`.
  std::vector<std::pair<std::string, std::string>> ops(backend where) const;
  bool has_op(backend where, std::string_view domain, std::string_view op_type) const;
  /// Some kernel of (domain, op) on this backend takes `type` as its typed input.
  bool has_op_for(backend where, std::string_view domain, std::string_view op_type, dtype type) const;

 private:
  const kernel_def* match(backend where, const kernel_create_context& ctx, status* why) const;
  std::vector<kernel_def> defs_;
};

/// One table per backend: kernels/cpu/cpu_registry.cpp, kernels/cuda/cuda_registry.cpp.
void register_cpu_kernels(kernel_registry& r);
#ifdef TROUPE_HAVE_CUDA
void register_cuda_kernels(kernel_registry& r);
#endif

/// The types most float kernels accept, and every integer/bool type, for kernel_def::types.
inline const std::vector<dtype>& float_types() {
  static const std::vector<dtype> t{dtype::f32};
  return t;
}
inline const std::vector<dtype>& numeric_types() {
  static const std::vector<dtype> t{dtype::f32, dtype::f64, dtype::i32, dtype::i64, dtype::i8,
                                    dtype::u8,  dtype::i16, dtype::u16, dtype::u32, dtype::u64};
  return t;
}

}  // namespace troupe::kernels
