#pragma once
/// Internal to the CUDA backend (host side): the error macro every CUDA/cuDNN/cuBLASLt call goes
/// through, the context class behind backend_context, device buffers owned by kernels, and the
/// small kernel adaptor the op families use. Uses the CUDA libraries' C headers only, so it
/// compiles with g++ as well as nvcc; no __global__ code here.

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"

namespace troupe::kernels::cuda {

// ---- errors ------------------------------------------------------------------------------------

/// Turns a library result into a status: OK on success, else device_error (out_of_memory for an
/// allocation failure) naming the expression that failed, where, and the library's error string.
status to_status(cudaError_t e, const char* expr, const char* file, int line);
status to_status(cudnnStatus_t e, const char* expr, const char* file, int line);
status to_status(cublasStatus_t e, const char* expr, const char* file, int line);

}  // namespace troupe::kernels::cuda

/// The status of one CUDA/cuDNN/cuBLAS(Lt) call.
#define TROUPE_CUDA_STATUS(expr) \
  ::troupe::kernels::cuda::to_status((expr), #expr, __FILE__, __LINE__)
/// Returns the call's error status from the enclosing function.
#define TROUPE_CUDA_CHECK(expr) TROUPE_RETURN_IF_ERROR(TROUPE_CUDA_STATUS(expr))

namespace troupe::kernels::cuda {

// ---- context -----------------------------------------------------------------------------------

class constant_store;    // constant_store.hpp
class evictable_heap;    // evictable_heap.hpp
struct context_options;  // cuda_backend.hpp

/// What create_context builds. Owns its stream, handles and pool; kernels created with it keep a
/// plain pointer, so the context must outlive every kernel and buffer made from it.
class cuda_context final : public backend_context {
 public:
  ~cuda_context() override;
  backend kind() const override { return backend::cuda; }

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  cublasLtHandle_t cublas_lt() const { return lt_; }
  cudaMemPool_t pool() const { return pool_; }
  /// Makes this context's device current on the calling thread.
  status make_current() const;

  /// Binds the cuDNN handle to `s` (the run context's stream) when it is bound to another one.
  status bind_cudnn_stream(cudaStream_t s);

  /// Kernels report input faults they cannot fail on (a Gather index out of range) by OR-ing a
  /// kernel_fault bit into this word of mapped host memory; synchronize() turns it into a typed
  /// error after the stream has drained and clears it. A device pointer: pass it to kernels.
  uint32_t* fault_word() const { return fault_device_; }
  /// Reads and clears the word; call only after the stream's work is complete.
  uint32_t take_faults();

  /// Device copies of constants shared with every sibling context (create_sibling_context) and
  /// every plan built on them; see device_buffer::shared_as.
  constant_store& constants() const { return *constants_; }
  /// This context's plan arenas when they are evictable (context_options::evictable_arenas);
  /// null otherwise (arenas come from the pool).
  evictable_heap* arenas() const { return arenas_.get(); }

 private:
  friend expected<std::unique_ptr<backend_context>> create_context(int device_index,
                                                                   const context_options& options);
  friend expected<std::unique_ptr<backend_context>> create_sibling_context(
      backend_context& sibling);
  cuda_context() = default;

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cudaStream_t cudnn_stream_ = nullptr;  // the stream cudnn_ is bound to now
  cublasLtHandle_t lt_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  uint32_t* fault_host_ = nullptr;    // cudaHostAlloc'd, mapped
  uint32_t* fault_device_ = nullptr;  // the same word as the device sees it
  // Shared with sibling contexts; destroyed after this context's own resources (member order),
  // when the last context and the last entry holder are gone.
  std::shared_ptr<constant_store> constants_;
  // Its own; destroyed (explicitly, first) while the stream it synchronises still exists.
  std::unique_ptr<evictable_heap> arenas_;
};

/// Bits of cuda_context::fault_word.
enum kernel_fault : uint32_t {
  fault_gather_index = 1u << 0,  // Gather met an index outside [-axis_dim, axis_dim)
  // The same for the index ops of extra_ops.cpp (the element is skipped or written as 0).
  fault_gather_elements_index = 1u << 1,
  fault_gather_nd_index = 1u << 2,
  fault_scatter_elements_index = 1u << 3,
  fault_scatter_nd_index = 1u << 4,
};

/// The CUDA context a kernel factory was given, or an error naming the node.
expected<cuda_context*> context_of(const kernel_create_context& c);

/// What timings on device `device` depend on of the device, for the keys of recorded choices
/// (kernels/tuning_records.hpp): its name, compute capability and multiprocessor count ("NVIDIA
/// H100 80GB HBM3 sm_90 132 SMs"; a MIG slice differs in the last). Asked once per device.
expected<std::string> device_model(int device);

inline cudaStream_t to_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}

/// Device bytes from a context's pool, freed (stream-ordered) when the buffer goes away. For
/// weights and other per-kernel constants uploaded at create time.
class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept { *this = std::move(o); }
  device_buffer& operator=(device_buffer&& o) noexcept;
  ~device_buffer();

  static expected<device_buffer> allocate(cuda_context& ctx, size_t bytes);
  /// Allocates and copies `bytes` from the host on the context's stream.
  static expected<device_buffer> upload(cuda_context& ctx, const void* host, size_t bytes);
  /// A host tensor's bytes converted to `to` (between f32, f16 and bf16, or unchanged) and
  /// uploaded.
  static expected<device_buffer> upload_as(cuda_context& ctx, const tensor& host, dtype to);
  /// Constant `source` (a weight the kernel factory was given) converted to `to`, from the
  /// context's constant store: uploaded once per device for every kernel, plan (batch bucket)
  /// and sibling context (model instance) that asks for the same constant in the same dtype.
  /// The buffer shares the bytes and frees nothing itself; it must not be written.
  static expected<device_buffer> shared_as(cuda_context& ctx, const tensor& source, dtype to);
  /// The same for a form only the kernel knows (filters relaid out or padded): `variant` names
  /// everything the uploaded bytes depend on besides `source`'s bytes and `to` (layout,
  /// padding), and `prepare` makes them on the host when the store lacks them (in any float
  /// dtype: they are converted to `to`).
  static expected<device_buffer> shared(cuda_context& ctx, const tensor& source,
                                        const std::string& variant, dtype to,
                                        const std::function<expected<tensor>()>& prepare);

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  explicit operator bool() const { return ptr_ != nullptr; }
  /// True for a buffer from shared_as / shared (the store owns the bytes).
  bool is_shared() const { return shared_ != nullptr; }
  /// Another handle on a shared buffer's bytes (null for an owned buffer).
  std::shared_ptr<const void> share() const { return shared_; }

 private:
  cuda_context* ctx_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  // Set for a constant store entry: ptr_ points into it and is never freed here.
  std::shared_ptr<const void> shared_;
};

// ---- dtypes ------------------------------------------------------------------------------------

/// cuDNN / CUDA library element types for the float dtypes troupe runs on the GPU (f32, f16,
/// bf16).
expected<cudnnDataType_t> cudnn_type(dtype t);
expected<cudaDataType_t> cuda_type(dtype t);
inline bool is_gpu_float(dtype t) {
  return is_compute_float(t);
}
/// f32 -> IEEE half bits on the host, round to nearest even (CUDA's own conversion).
uint16_t half_bits(float v);
/// f32 -> the bits of 16-bit float type `t` (f16 or bf16) on the host, round to nearest even.
uint16_t float16_bits(dtype t, float v);

// ---- kernels -----------------------------------------------------------------------------------

/// A kernel whose compute is a function of the run context, with its state captured by value
/// (shared_ptr for state that owns device memory, so that std::function stays copyable).
/// `unread` lists inputs compute never touches (read at create time: axes, pads, shapes, folded
/// parameters), so that the planner need not place them on the device.
class function_kernel final : public kernel {
 public:
  using fn = std::function<status(kernel_run_context&)>;
  function_kernel(fn f, size_t workspace_bytes, std::vector<std::pair<int, int>> inplace, bool view,
                  std::vector<int> unread)
      : f_(std::move(f)),
        workspace_bytes_(workspace_bytes),
        inplace_(std::move(inplace)),
        view_(view),
        unread_(std::move(unread)) {}
  status compute(kernel_run_context& ctx) override { return f_(ctx); }
  size_t workspace_bytes() const override { return workspace_bytes_; }
  std::vector<std::pair<int, int>> inplace_pairs() const override { return inplace_; }
  bool is_view() const override { return view_; }
  bool reads_constant_input(int i) const override {
    for (int u : unread_) {
      if (u == i) return false;
    }
    return true;
  }

 private:
  fn f_;
  size_t workspace_bytes_;
  std::vector<std::pair<int, int>> inplace_;
  bool view_;
  std::vector<int> unread_;
};

inline expected<std::unique_ptr<kernel>> make_kernel(function_kernel::fn f,
                                                     size_t workspace_bytes = 0,
                                                     std::vector<std::pair<int, int>> inplace = {},
                                                     bool view = false,
                                                     std::vector<int> unread = {}) {
  return std::unique_ptr<kernel>(new function_kernel(std::move(f), workspace_bytes,
                                                     std::move(inplace), view, std::move(unread)));
}

/// Inputs [from, count) as a list, for make_kernel's `unread`.
inline std::vector<int> inputs_from(int from, size_t count) {
  std::vector<int> v;
  for (int i = from; i < static_cast<int>(count); ++i) v.push_back(i);
  return v;
}

/// One registration function per op family; cuda_registry.cpp calls them all.
void register_elementwise(kernel_registry& r);  // elementwise_ops.cpp
void register_reduction(kernel_registry& r);    // reduction_ops.cpp: Reduce*, Softmax, LayerNorm
void register_tensor(kernel_registry& r);       // tensor_ops.cpp: Transpose, Gather, Concat...
void register_conv(kernel_registry& r);         // conv_ops.cpp: Conv, FusedConv, pooling, BN
void register_matmul(kernel_registry& r);       // matmul_ops.cpp: MatMul, Gemm and fused forms
void register_attention(kernel_registry& r);    // attention_ops.cpp: troupe.Attention
void register_extra(kernel_registry& r);  // extra_ops.cpp: Resize, TopK, index ops, Tile...
void register_conv_transpose(kernel_registry& r);  // conv_transpose_ops.cpp: ConvTranspose
void register_fused_elementwise(kernel_registry& r);  // fused_elementwise_ops.cpp

/// Element types of a kernel_def for float ops / for ops that move bytes of any type.
const std::vector<dtype>& gpu_float_types();
const std::vector<dtype>& gpu_any_types();

}  // namespace troupe::kernels::cuda
