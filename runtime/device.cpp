#include "runtime/device.hpp"

#include <sys/sysinfo.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <unordered_set>

#include "core/tensor.hpp"
#include "runtime/fault_hooks.hpp"

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/graph_capture.hpp"
#endif

namespace troupe::runtime {
namespace {

/// What CPU siblings share about their constants (which are the host bytes themselves): whether
/// they may be evicted and whether they are now.
struct cpu_constants {
  bool evictable = false;
  std::atomic<bool> resident{true};
};

class cpu_device final : public device {
 public:
  cpu_device(std::shared_ptr<cpu_constants> constants, bool evictable_arenas)
      : constants_(std::move(constants)), evictable_arenas_(evictable_arenas) {}
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
  expected<void*> allocate_arena(size_t bytes) override {
    if (!arenas_resident())
      return make_error(error_code::unavailable, "the model's activation arenas are evicted: page them in first");
    TROUPE_ASSIGN_OR_RETURN(void* p, allocate(bytes));
    if (evictable_arenas_ && p) {
      std::lock_guard<std::mutex> lock(mutex_);
      arenas_.insert(p);
      arena_bytes_ += bytes;
    }
    return p;
  }
  void release(void* p) override {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        reserved_ -= it->second;
        if (arenas_.erase(p) > 0) arena_bytes_ -= it->second;
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
    s.constants_resident = constants_resident();
    s.arena_reserved_bytes = arena_bytes_;  // host memory: discarding frees nothing
    s.arena_footprint_bytes = arena_bytes_;
    s.arenas_resident = arenas_resident();
    return s;
  }
  expected<std::shared_ptr<const void>> share_constant(const tensor& host) override {
    // The host bytes themselves, kept alive by a copy of the tensor (which shares them).
    auto keep = std::make_shared<tensor>(host);
    return std::shared_ptr<const void>(keep, keep->raw());
  }
  expected<std::shared_ptr<device>> create_sibling() override {
    return std::shared_ptr<device>(std::make_shared<cpu_device>(constants_, evictable_arenas_));
  }
  // Every CPU device reads constants where the host keeps them: nothing to share or duplicate.
  bool shares_constants_with(device& other) override {
    return other.kind() == kernels::backend::cpu;
  }
  const void* constants_identity() const override { return constants_.get(); }
  // The constants are host memory: nothing moves (device_options::evictable_constants says why
  // this exists at all).
  expected<size_t> evict_constants() override {
    if (!constants_->evictable) return unsupported("this device's constants are not evictable");
    constants_->resident.store(false, std::memory_order_release);
    return size_t{0};
  }
  expected<size_t> page_in_constants() override {
    if (!constants_->evictable) return unsupported("this device's constants are not evictable");
    constants_->resident.store(true, std::memory_order_release);
    return size_t{0};
  }
  bool constants_resident() const override {
    return constants_->resident.load(std::memory_order_acquire);
  }
  // Host memory too: only the state changes (device_options::evictable_arenas).
  expected<size_t> discard_arenas() override {
    if (!evictable_arenas_) return unsupported("this device's arenas are not evictable");
    arenas_resident_.store(false, std::memory_order_release);
    return size_t{0};
  }
  expected<size_t> restore_arenas() override {
    if (!evictable_arenas_) return unsupported("this device's arenas are not evictable");
    arenas_resident_.store(true, std::memory_order_release);
    return size_t{0};
  }
  bool arenas_resident() const override {
    return arenas_resident_.load(std::memory_order_acquire);
  }

 private:
  mutable std::mutex mutex_;  // allocations happen while plans are built, never on the hot path
  std::unordered_map<void*, size_t> sizes_;
  size_t reserved_ = 0;
  size_t peak_ = 0;
  std::shared_ptr<cpu_constants> constants_;  // shared with the siblings
  const bool evictable_arenas_;
  std::atomic<bool> arenas_resident_{true};
  std::unordered_set<void*> arenas_;  // allocate_arena's, of sizes_ (under mutex_)
  size_t arena_bytes_ = 0;
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
  expected<void*> allocate_arena(size_t bytes) override {
    if (take_allocation_failure(kernels::backend::cuda))
      return status(error_code::out_of_memory, "fault injection: device allocation of " +
                                                   std::to_string(bytes) + " bytes failed");
    return kernels::cuda::arena_malloc(*ctx_, bytes);
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
  // The pool's, plus the arena heap's mapped memory (evictable arenas live outside the pool).
  size_t reserved_bytes() const override {
    return kernels::cuda::stats(*ctx_).reserved_bytes +
           kernels::cuda::arena_heap_stats(*ctx_).mapped_bytes;
  }
  device_memory_stats memory_stats() const override {
    const kernels::cuda::pool_stats p = kernels::cuda::stats(*ctx_);
    const kernels::cuda::constant_stats c = kernels::cuda::constant_store_stats(*ctx_);
    const kernels::cuda::arena_stats a = kernels::cuda::arena_heap_stats(*ctx_);
    device_memory_stats s;
    s.reserved_bytes = p.reserved_bytes + a.mapped_bytes;
    s.in_use_bytes = p.in_use_bytes + a.footprint_bytes * a.resident;
    s.arena_reserved_bytes = a.mapped_bytes;
    s.arena_footprint_bytes = a.footprint_bytes;
    s.arenas_resident = a.resident;
    s.peak_bytes = p.peak_bytes;
    s.fragmentation_bytes = p.fragmentation_bytes;
    s.shared_constant_bytes = c.live_bytes;
    s.shared_constant_reserved_bytes = c.reserved_bytes;
    s.shared_constant_entries = c.entries;
    s.shared_constant_footprint_bytes = c.footprint_bytes;
    s.shared_constant_host_bytes = c.host_bytes;
    s.constants_resident = c.resident;
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
  const void* constants_identity() const override {
    return kernels::cuda::constants_identity(*ctx_);
  }
  expected<size_t> evict_constants() override { return kernels::cuda::evict_constants(*ctx_); }
  expected<size_t> page_in_constants() override { return kernels::cuda::page_in_constants(*ctx_); }
  bool constants_resident() const override { return kernels::cuda::constants_resident(*ctx_); }
  expected<size_t> discard_arenas() override { return kernels::cuda::discard_arenas(*ctx_); }
  expected<size_t> restore_arenas() override { return kernels::cuda::restore_arenas(*ctx_); }
  bool arenas_resident() const override { return kernels::cuda::arenas_resident(*ctx_); }
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

expected<std::shared_ptr<device>> make_device(kernels::backend where, int device_index,
                                              const device_options& options) {
  if (where == kernels::backend::cpu) {
    auto constants = std::make_shared<cpu_constants>();
    constants->evictable = options.evictable_constants;
    return std::shared_ptr<device>(
        std::make_shared<cpu_device>(std::move(constants), options.evictable_arenas));
  }
#ifdef TROUPE_HAVE_CUDA
  if (!kernels::cuda::device_available()) {
    return status(error_code::unavailable, "no CUDA device is available on this machine");
  }
  kernels::cuda::context_options co;
  co.evictable_constants = options.evictable_constants;
  co.evictable_arenas = options.evictable_arenas;
  TROUPE_ASSIGN_OR_RETURN(auto ctx, kernels::cuda::create_context(device_index, co));
  return std::shared_ptr<device>(std::make_shared<cuda_device>(std::move(ctx)));
#else
  return status(error_code::unavailable, "this troupe was built without the CUDA backend (no nvcc at build time)");
#endif
}

expected<device_memory_snapshot> device_memory(kernels::backend where, int device_index) {
  if (where == kernels::backend::cpu) {
    struct sysinfo si {};
    if (sysinfo(&si) != 0) return io_error("sysinfo failed");
    const uint64_t unit = si.mem_unit ? si.mem_unit : 1;
    // freeram leaves out the page cache the kernel gives back on demand: the lower bound.
    return device_memory_snapshot{(uint64_t{si.freeram} + si.bufferram) * unit,
                                  uint64_t{si.totalram} * unit};
  }
#ifdef TROUPE_HAVE_CUDA
  TROUPE_ASSIGN_OR_RETURN(kernels::cuda::device_memory_info m,
                          kernels::cuda::device_memory(device_index));
  return device_memory_snapshot{m.free_bytes, m.total_bytes};
#else
  (void)device_index;
  return status(error_code::unavailable, "this troupe was built without the CUDA backend");
#endif
}

}  // namespace troupe::runtime
