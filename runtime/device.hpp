#pragma once
/// What a plan needs from the device it runs on: memory, copies to and from the host, a stream and
/// the backend context kernels use. The CPU device is plain host memory; the CUDA device wraps
/// kernels/cuda/cuda_backend.hpp (built only where nvcc is found).

#include <memory>

#include "core/status.hpp"
#include "kernels/kernel.hpp"

namespace troupe::runtime {

class device {
 public:
  virtual ~device() = default;
  virtual kernels::backend kind() const = 0;
  /// Bytes aligned for every kernel of the backend; freed with release.
  virtual expected<void*> allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual status upload(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual status download(void* host_dst, const void* device_src, size_t bytes) = 0;
  virtual status synchronize() = 0;
  /// Null on the CPU.
  virtual kernels::backend_context* context() = 0;
  virtual void* stream() = 0;
  /// Alignment of planned offsets inside an arena.
  virtual size_t alignment() const = 0;
  /// Bytes this device's memory pool holds right now (weights, arenas, kernel copies).
  virtual size_t reserved_bytes() const = 0;
};

expected<std::shared_ptr<device>> make_device(kernels::backend where, int device_index);

/// Host memory released through `device::release` when the last owner goes.
class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(std::shared_ptr<device> dev, void* p) : dev_(std::move(dev)), p_(p) {}
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept : dev_(std::move(o.dev_)), p_(o.p_) { o.p_ = nullptr; }
  device_buffer& operator=(device_buffer&& o) noexcept {
    reset();
    dev_ = std::move(o.dev_);
    p_ = o.p_;
    o.p_ = nullptr;
    return *this;
  }
  ~device_buffer() { reset(); }
  void* get() const { return p_; }
  void reset() {
    if (p_ && dev_) dev_->release(p_);
    p_ = nullptr;
  }

 private:
  std::shared_ptr<device> dev_;
  void* p_ = nullptr;
};

}  // namespace troupe::runtime
