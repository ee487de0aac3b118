#include "runtime/device.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "core/tensor.hpp"
#include "runtime/fault_hooks.hpp"

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/graph_capture.hpp"
#endif

namespace troupe::runtime {
namespace {

class cpu_device final : public device {
 public:
  kernels::backend kind() const override { return kernels::backend::cpu; }
  expected<void*> allocate(size_t bytes) override {
    if (take_allocation_failure(kernels::backend::cpu))
      return status(error_code::out_of_memory,
                    "fault injection: host allocation of " + std::to_string(bytes) + " bytes failed");
    void* p = nullptr;
    try {
      p = aligned_alloc_bytes(bytes);
    } catch (const std::bad_alloc&) {
      return status(error_code::out_of_memory, "host allocation of " + std::to_string(bytes) + " bytes failed");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[p] = bytes;
    reserved_ += bytes;
    peak_ = std::max(peak_, reserved_);
    return p;
  }
  void release(void* p) override {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        reserved_ -= it->second;
        sizes_.erase(it);
      }
    }
    aligned_free(p);
  }
  size_t reserved_bytes() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return reserved_;
  }
  status upload(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    return status::ok();
  }
  status download(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    return status::ok();
  }
  status synchronize() override { return status::ok(); }
  kernels::backend_context* context() override { return nullptr; }
  void* stream() override { return nullptr; }
  size_t alignment() const override { return 64; }
  status release_unused() override {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = reserved_;  // as on a GPU: the peak of runs, not of what plan building borrowed
    return status::ok();
  }
  device_memory_stats memory_stats() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    device_memory_stats s;
    s.reserved_bytes = reserved_;
    s.in_use_bytes = reserved_;  // host allocations are exact: nothing is held unused
    s.peak_bytes = peak_;
    return s;
  }
  expected<std::shared_ptr<const void>> share_constant(const tensor& host) override {
    // The host bytes themselves, kept alive by a copy of the tensor (which shares them).
    auto keep = std::make_shared<tensor>(host);
    return std::shared_ptr<const void>(keep, keep->raw());
  }
  expected<std::shared_ptr<device>> create_sibling() override {
    return std::shared_ptr<device>(std::make_shared<cpu_device>());
  }
  // Every CPU device reads constants where the host keeps them: nothing to share or duplicate.
  bool shares_constants_with(device& other) override {
    return other.kind() == kernels::backend::cpu;
  }

 private:
  mutable std::mutex mutex_;  // allocations happen while plans are built, never on the hot path
  std::unordered_map<void*, size_t> sizes_;
  size_t reserved_ = 0;
  size_t peak_ = 0;
};

#ifdef TROUPE_HAVE_CUDA
class cuda_device final : public device {
 public:
  explicit cuda_device(std::unique_ptr<kernels::backend_context> ctx) : ctx_(std::move(ctx)) {}
  kernels::backend kind() const override { return kernels::backend::cuda; }
  expected<void*> allocate(size_t bytes) override {
    if (take_allocation_failure(kernels::backend::cuda))
      return status(error_code::out_of_memory, "fault injection: device allocation of " +
                                                   std::to_string(bytes) + " bytes failed");
    return kernels::cuda::device_malloc(*ctx_, bytes);
  }
  void release(void* p) override { kernels::cuda::device_free(*ctx_, p); }
  status upload(void* dst, const void* src, size_t bytes) override {
    return kernels::cuda::copy_to_device(*ctx_, dst, src, bytes);
  }
  status download(void* dst, const void* src, size_t bytes) override {
    return kernels::cuda::copy_to_host(*ctx_, dst, src, bytes);
  }
  status synchronize() override { return kernels::cuda::synchronize(*ctx_); }
  kernels::backend_context* context() override { return ctx_.get(); }
  void* stream() override { return kernels::cuda::stream(*ctx_); }
  size_t alignment() const override { return 256; }
  size_t reserved_bytes() const override { return kernels::cuda::stats(*ctx_).reserved_bytes; }
  device_memory_stats memory_stats() const override {
    const kernels::cuda::pool_stats p = kernels::cuda::stats(*ctx_);
    const kernels::cuda::constant_stats c = kernels::cuda::constant_store_stats(*ctx_);
    device_memory_stats s;
    s.reserved_bytes = p.reserved_bytes;
    s.in_use_bytes = p.in_use_bytes;
    s.peak_bytes = p.peak_bytes;
    s.fragmentation_bytes = p.fragmentation_bytes;
    s.shared_constant_bytes = c.live_bytes;
    s.shared_constant_reserved_bytes = c.reserved_bytes;
    s.shared_constant_entries = c.entries;
    return s;
  }
  expected<std::shared_ptr<const void>> share_constant(const tensor& host) override {
    return kernels::cuda::share_constant(*ctx_, host);
  }
  expected<std::shared_ptr<device>> create_sibling() override {
    TROUPE_ASSIGN_OR_RETURN(auto ctx, kernels::cuda::create_sibling_context(*ctx_));
    return std::shared_ptr<device>(std::make_shared<cuda_device>(std::move(ctx)));
  }
  bool shares_constants_with(device& other) override {
    return other.kind() == kernels::backend::cuda && other.context() != nullptr &&
           kernels::cuda::shares_constants(*ctx_, *other.context());
  }
  status release_unused() override { return kernels::cuda::release_unused_memory(*ctx_); }
  bool supports_recording() const override { return kernels::cuda::graphs_enabled(); }
  expected<std::unique_ptr<recorded_work>> capture(
      const std::function<status(void* stream)>& record) override {
    TROUPE_ASSIGN_OR_RETURN(auto g, kernels::cuda::stream_graph::capture(*ctx_, record));
    return std::unique_ptr<recorded_work>(new cuda_graph(std::move(g), *ctx_));
  }

 private:
  class cuda_graph final : public recorded_work {
   public:
    cuda_graph(std::unique_ptr<kernels::cuda::stream_graph> g, kernels::backend_context& ctx)
        : graph_(std::move(g)), ctx_(ctx) {}
    status launch() override { return graph_->launch(ctx_); }
    size_t node_count() const override { return graph_->node_count(); }

   private:
    std::unique_ptr<kernels::cuda::stream_graph> graph_;
    kernels::backend_context& ctx_;  // the device's context; the plan holding this holds the device
  };

  std::unique_ptr<kernels::backend_context> ctx_;
};
#endif

}  // namespace

expected<std::shared_ptr<device>> make_device(kernels::backend where, int device_index) {
  if (where == kernels::backend::cpu) return std::shared_ptr<device>(std::make_shared<cpu_device>());
#ifdef TROUPE_HAVE_CUDA
  if (!kernels::cuda::device_available()) {
    return status(error_code::unavailable, "no CUDA device is available on this machine");
  }
  TROUPE_ASSIGN_OR_RETURN(auto ctx, kernels::cuda::create_context(device_index));
  return std::shared_ptr<device>(std::make_shared<cuda_device>(std::move(ctx)));
#else
  return status(error_code::unavailable, "this troupe was built without the CUDA backend (no nvcc at build time)");
#endif
}

}  // namespace troupe::runtime
