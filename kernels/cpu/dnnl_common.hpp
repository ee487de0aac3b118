#pragma once
/// Internal to the CPU backend's oneDNN kernels (dnnl_conv.cpp, dnnl_matmul.cpp, dnnl_pool.cpp).
///
/// A oneDNN kernel is built once per node as a `dnnl_program`: a fixed list of primitives
/// (reorders, the convolution/matmul/pooling itself) over dnnl::memory objects created at factory
/// time. Each memory is bound to an input, an output, a region of the kernel's workspace or an
/// owned constant (pre-packed weights). `run` only re-points the memories whose buffers moved and
/// executes the primitives through the C API with pre-built argument arrays, so troupe's side of
/// the hot path allocates nothing (oneDNN 2.6 itself still builds a small argument map inside each
/// execute). Every primitive uses a user scratchpad, placed in the workspace.

#include <dnnl.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/ops/nn_geometry.hpp"

namespace troupe::kernels::cpu {

/// Conv, ConvTranspose, troupe.FusedConv (dnnl_conv.cpp).
void register_dnnl_conv(kernel_registry& r);
/// MatMul, Gemm, troupe.FusedMatMul, troupe.FusedGemm (dnnl_matmul.cpp).
void register_dnnl_matmul(kernel_registry& r);
/// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (dnnl_pool.cpp).
void register_dnnl_pool(kernel_registry& r);
/// BatchNormalization, InstanceNormalization, LpNormalization (nn_norm.cpp, direct loops).
void register_nn_norm(kernel_registry& r);

namespace dnnl_util {

/// The one CPU engine, shared by every kernel.
const dnnl::engine& cpu_engine();
/// A CPU stream per thread: oneDNN streams are not meant to be shared between threads that execute
/// concurrently, and sessions on different actor threads may run at the same time.
dnnl::stream& cpu_stream();

dnnl::memory::dims to_dims(const shape_t& shape);
/// Row-major f32 descriptor of `shape` (rank 0 is treated as rank 1 with one element).
dnnl::memory::desc plain_desc(const shape_t& shape);
/// f32 descriptor with explicit strides (elements).
dnnl::memory::desc strided_desc(const shape_t& shape, const shape_t& strides);

/// A dnnl::error from primitive creation as a status: unsupported where oneDNN has no
/// implementation or rejects the shapes, internal otherwise.
status from_dnnl_error(const dnnl::error& e, const op_node& node, const std::string& what);

/// Appends the fused activation as eltwise post-ops (HardSigmoid is linear + clip: oneDNN 2.6 has
/// no hardsigmoid kind).
void append_activation(dnnl::post_ops& ops, const activation_spec& act);

/// "TROUPE_DNNL_CONV_LAYOUT" = "plain" | "blocked": the convolutions' src/dst layout inside the
/// kernel (for comparisons; blocked is the default); empty when unset.
std::string conv_layout_override();

/// Where a memory's data handle points during a run.
enum class source : uint8_t { input, output, workspace, scratchpad };

class dnnl_program {
 public:
  dnnl_program();
  dnnl_program(dnnl_program&&) = default;
  dnnl_program& operator=(dnnl_program&&) = default;

  /// Memories re-pointed at input/output `index` on every run.
  dnnl::memory bind_input(int index, const dnnl::memory::desc& md);
  dnnl::memory bind_output(int index, const dnnl::memory::desc& md);
  /// A private workspace region of md's size, 64-byte aligned.
  dnnl::memory workspace_buffer(const dnnl::memory::desc& md);
  /// `value` reordered once, now, into layout `md` (pre-packed weights); owned by the program.
  expected<dnnl::memory> pack_constant(const tensor& value, const dnnl::memory::desc& value_md,
                                       const dnnl::memory::desc& md);

  /// Appends a primitive; `scratchpad` is the primitive's scratchpad desc (all steps share one
  /// workspace region sized for the largest). With `skip_if_aliased`, the step is a copy that is
  /// skipped when its DNNL_ARG_FROM and DNNL_ARG_TO point at the same bytes.
  void add_step(const dnnl::primitive& p, std::vector<std::pair<int, dnnl::memory>> args,
                const dnnl::memory::desc& scratchpad, bool skip_if_aliased = false);
  /// A reorder (layout change or plain copy) from one memory to another.
  void add_reorder(const dnnl::memory& from, const dnnl::memory& to, bool skip_if_aliased = false);

  /// True when some memory of the program is re-pointed at input `index` on every run.
  bool binds_input(int index) const;

  /// Bytes of workspace `run` needs (includes slack to align the base).
  size_t workspace_bytes() const;
  /// `where` prefixes error messages (the node's description).
  status run(const kernel_run_context& ctx, const std::string& where) const;

 private:
  struct binding {
    dnnl::memory mem;
    source from;
    int index;      // input/output index
    size_t offset;  // workspace offset (source::workspace)
    // The handle last set: oneDNN's set_data_handle zero-fills blocked padding and builds an
    // argument map each time, so it is called only when the pointer changes (in a plan, almost
    // never after the first run).
    mutable void* current = nullptr;
  };
  struct step {
    dnnl::primitive prim;
    std::vector<dnnl_exec_arg_t> args;  // memories kept alive by bindings_/constants_
    bool skip_if_aliased;
  };
  size_t reserve(size_t bytes);

  // Workspace: private buffers at [0, buffers_bytes_), then one scratchpad region of
  // scratchpad_bytes_ that every step's scratchpad memory points at (steps run one at a time).
  std::vector<binding> bindings_;
  std::vector<dnnl::memory> constants_;
  std::vector<step> steps_;
  size_t scratchpad_bytes_ = 0;
  size_t buffers_bytes_ = 0;
};

/// A kernel that is one dnnl_program, optionally preceded by a plain C++ step (Gemm's broadcast of
/// C into Y) that must not allocate either and reads input `pre_reads`.
class program_kernel final : public kernel {
 public:
  using pre_fn = std::function<void(kernel_run_context&)>;
  program_kernel(const op_node& node, dnnl_program program,
                 std::vector<std::pair<int, int>> inplace = {}, pre_fn pre = {}, int pre_reads = -1)
      : where_(node.describe()),
        program_(std::move(program)),
        inplace_(std::move(inplace)),
        pre_(std::move(pre)),
        pre_reads_(pre_reads) {}
  status compute(kernel_run_context& ctx) override {
    if (pre_) pre_(ctx);
    return program_.run(ctx, where_);
  }
  size_t workspace_bytes() const override { return program_.workspace_bytes(); }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return inplace_; }
  /// Pre-packed constants (weights, a scaled Gemm bias) are never read after create.
  bool reads_constant_input(int i) const override {
    return program_.binds_input(i) || i == pre_reads_;
  }

 private:
  std::string where_;
  dnnl_program program_;
  std::vector<std::pair<int, int>> inplace_;
  pre_fn pre_;
  int pre_reads_;
};

/// A kernel with nothing to compute (an output with zero elements).
inline expected<std::unique_ptr<kernel>> make_noop_kernel() {
  return make_function_kernel([](kernel_run_context&) { return status::ok(); });
}

/// 64-byte alignment of the workspace base pointer.
inline uint8_t* align_workspace(void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<uint8_t*>((v + 63) & ~uintptr_t{63});
}

}  // namespace dnnl_util
}  // namespace troupe::kernels::cpu
