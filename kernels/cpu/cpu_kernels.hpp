#pragma once
/// Internal to the CPU backend: one registration function per family file, and a small adaptor
/// that turns a lambda into a kernel. cpu_registry.cpp calls every register_cpu_* function.

#include <functional>
#include <memory>
#include <utility>

#include "kernels/kernel.hpp"

namespace troupe::kernels::cpu {

void register_elementwise(kernel_registry& r);  // elementwise.cpp: unary, binary, logic, Cast, Where
void register_reduction(kernel_registry& r);    // reduction.cpp: Reduce*, Softmax, LayerNorm, ArgMax, TopK
void register_tensor(kernel_registry& r);       // tensor_ops.cpp: Reshape, Transpose, Concat, Slice...
void register_dnnl(kernel_registry& r);         // dnnl_ops.cpp: Conv, MatMul, Gemm, pooling, BN
void register_attention(kernel_registry& r);    // attention.cpp: troupe.Attention
void register_fused_elementwise(kernel_registry& r);  // fused_elementwise.cpp: troupe.FusedElementwise

/// A kernel whose compute is a plain function of the run context, with state captured by value.
class function_kernel final : public kernel {
 public:
  using fn = std::function<status(kernel_run_context&)>;
  explicit function_kernel(fn f, std::vector<std::pair<int, int>> inplace = {}, bool view = false)
      : f_(std::move(f)), inplace_(std::move(inplace)), view_(view) {}
  status compute(kernel_run_context& ctx) override { return f_(ctx); }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return inplace_; }
  bool is_view() const override { return view_; }

 private:
  fn f_;
  std::vector<std::pair<int, int>> inplace_;
  bool view_;
};

inline expected<std::unique_ptr<kernel>> make_function_kernel(
    function_kernel::fn f, std::vector<std::pair<int, int>> inplace = {}, bool view = false) {
  return std::unique_ptr<kernel>(new function_kernel(std::move(f), std::move(inplace), view));
}

}  // namespace troupe::kernels::cpu
