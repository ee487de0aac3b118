#include "runtime/device.hpp"

#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "core/tensor.hpp"

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#endif

namespace troupe::runtime {
namespace {

class cpu_device final : public device {
 public:
  kernels::backend kind() const override { return kernels::backend::cpu; }
  expected<void*> allocate(size_t bytes) override {
    void* p = nullptr;
    try {
      p = aligned_alloc_bytes(bytes);
    } catch (const std::bad_alloc&) {
      return status(error_code::out_of_memory, "host allocation of " + std::to_string(bytes) + " bytes failed");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[p] = bytes;
    reserved_ += bytes;
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

 private:
  mutable std::mutex mutex_;  // allocations happen while plans are built, never on the hot path
  std::unordered_map<void*, size_t> sizes_;
  size_t reserved_ = 0;
};

#ifdef TROUPE_HAVE_CUDA
class cuda_device final : public device {
 public:
  explicit cuda_device(std::unique_ptr<kernels::backend_context> ctx) : ctx_(std::move(ctx)) {}
  kernels::backend kind() const override { return kernels::backend::cuda; }
  expected<void*> allocate(size_t bytes) override { return kernels::cuda::device_malloc(*ctx_, bytes); }
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

 private:
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
