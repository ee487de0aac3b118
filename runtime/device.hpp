#pragma once
/// What a plan needs from the device it runs on: memory, copies to and from the host, a stream and
/// the backend context kernels use. The CPU device is plain host memory; the CUDA device wraps
/// kernels/cuda/cuda_backend.hpp (built only where nvcc is found).

#include <functional>
#include <memory>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"

namespace troupe::runtime {

/// Work recorded from a device's stream (a CUDA graph), replayed on that stream by launch().
class recorded_work {
 public:
  virtual ~recorded_work() = default;
  virtual status launch() = 0;
  /// Operations the recording holds (kernels, copies, memsets), for reports and tests.
  virtual size_t node_count() const = 0;
};

/// A device's memory figures.
struct device_memory_stats {
  size_t reserved_bytes = 0;       // this device's own pool (arenas, kernel-owned buffers)
  size_t in_use_bytes = 0;         // of which handed out now
  size_t peak_bytes = 0;           // highest in_use_bytes since the last plan build
  size_t fragmentation_bytes = 0;  // reserved - in use
  // Constants shared with sibling devices (create_sibling); zero on the CPU, where constants are
  // the host bytes themselves.
  size_t shared_constant_bytes = 0;           // live constants
  size_t shared_constant_reserved_bytes = 0;  // what their pool holds
  size_t shared_constant_entries = 0;
  // Evictable constants (device_options::evictable_constants): the device memory they take when
  // resident (evicted or not; the pool's reserved bytes otherwise), the pinned host memory
  // holding their evicted copies, and whether they are on the device now.
  size_t shared_constant_footprint_bytes = 0;
  size_t shared_constant_host_bytes = 0;
  bool constants_resident = true;
  // Evictable arenas (device_options::evictable_arenas): the part of reserved_bytes they hold now
  // (0 while discarded on a GPU; on the CPU nothing is freed, so always their size), what they
  // take when resident, and whether they are.
  size_t arena_reserved_bytes = 0;
  size_t arena_footprint_bytes = 0;
  bool arenas_resident = true;
};

struct device_options {
  /// The device's constants (shared with its siblings) can be evicted to host memory and paged
  /// back (evict_constants, page_in_constants). On a GPU they then live in an evictable heap
  /// (kernels/cuda/evictable_heap.hpp) at addresses that survive eviction, so plans and their
  /// CUDA graphs stay valid. On the CPU the constants are host memory already: eviction only
  /// marks them unusable until paged in (plans refuse to run meanwhile) and frees nothing; it
  /// exists so that the serving path that evicts runs, and is tested, the same on both.
  bool evictable_constants = false;
  /// The plans' arenas (allocate_arena) can be discarded between runs and restored
  /// (discard_arenas, restore_arenas): on a GPU they live in an evictable heap whose memory is
  /// unmapped and mapped again at the same addresses (arenas hold nothing from one run to the
  /// next, so nothing is copied). On the CPU, as for the constants, only the state changes.
  bool evictable_arenas = false;
};

class device {
 public:
  virtual ~device() = default;
  virtual kernels::backend kind() const = 0;
  /// Bytes aligned for every kernel of the backend; freed with release.
  virtual expected<void*> allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  /// A plan's arena: evictable on a device made with evictable_arenas, else as allocate. Freed
  /// with release.
  virtual expected<void*> allocate_arena(size_t bytes) { return allocate(bytes); }
  virtual status upload(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual status download(void* host_dst, const void* device_src, size_t bytes) = 0;
  virtual status synchronize() = 0;
  /// Null on the CPU.
  virtual kernels::backend_context* context() = 0;
  virtual void* stream() = 0;
  /// Alignment of planned offsets inside an arena.
  virtual size_t alignment() const = 0;
  /// Bytes this device's own memory pool holds right now (arenas, kernel-owned buffers; on a GPU
  /// not the shared constants, see memory_stats).
  virtual size_t reserved_bytes() const = 0;
  virtual device_memory_stats memory_stats() const = 0;
  /// Waits for the device and returns pooled memory no allocation holds (what kernel factories
  /// used while timing their candidates). Called once per plan build, never on the hot path.
  virtual status release_unused() { return status::ok(); }

  /// The device copy of host constant `host`, shared by every plan on this device and on its
  /// siblings: uploaded once, freed when the last handle goes. On the CPU the host bytes
  /// themselves (no copy). Handles may be dropped only when no run that reads them is in flight.
  virtual expected<std::shared_ptr<const void>> share_constant(const tensor& host) = 0;
  /// Another device on the same hardware with its own stream, backend context and pool, sharing
  /// this one's constants: a second instance of a model, runnable in parallel on another thread.
  virtual expected<std::shared_ptr<device>> create_sibling() = 0;
  /// True when this device shares its constants with `other` (one is the other's sibling).
  virtual bool shares_constants_with(device& other) = 0;
  /// Equal for devices that share one set of constants (a device and its siblings); what a
  /// worker groups replicas by when it evicts their weights.
  virtual const void* constants_identity() const = 0;

  /// Evictable devices (device_options::evictable_constants): moves the constants shared with
  /// the siblings to host memory (pinned, on a GPU) and gives their device memory back; returns
  /// the device bytes released (0: already evicted, or the CPU). No run on this device or a
  /// sibling may be in flight, and until page_in_constants none may start (plan::run refuses)
  /// and no plan may be built. unsupported for a device made without evictable_constants.
  virtual expected<size_t> evict_constants() {
    return unsupported("this device's constants are not evictable");
  }
  /// Puts evicted constants back on the device at the addresses they had; returns the bytes
  /// mapped (0: resident already, or the CPU). out_of_memory when the device cannot hold them:
  /// they stay evicted. Complete when this returns.
  virtual expected<size_t> page_in_constants() {
    return unsupported("this device's constants are not evictable");
  }
  /// False while the constants are evicted. Cheap (an atomic load): plans ask before each run.
  virtual bool constants_resident() const { return true; }

  /// Evictable arenas (device_options::evictable_arenas): gives this device's arenas' memory
  /// back (their bytes are lost; nothing of a run outlives it) and returns the bytes released
  /// (0: already discarded, or the CPU). No run on this device may be in flight, and until
  /// restore_arenas none may start (plan::run refuses) and no plan may be built. unsupported
  /// for a device made without evictable_arenas.
  virtual expected<size_t> discard_arenas() {
    return unsupported("this device's arenas are not evictable");
  }
  /// Maps memory under the arenas again at their addresses; returns the bytes mapped.
  /// out_of_memory (still discarded) when the device cannot hold them.
  virtual expected<size_t> restore_arenas() {
    return unsupported("this device's arenas are not evictable");
  }
  /// False while the arenas are discarded. Cheap: plans ask before each run.
  virtual bool arenas_resident() const { return true; }

  /// Whether capture() can record work here (a CUDA device with TROUPE_CUDA_GRAPHS not 0).
  virtual bool supports_recording() const { return false; }
  /// Records what `record(stream)` enqueues on this device's stream without running it. When
  /// recording fails (something was enqueued that a recording cannot hold), the stream is left
  /// usable and the error says why; the caller runs eagerly instead.
  virtual expected<std::unique_ptr<recorded_work>> capture(
      const std::function<status(void* stream)>& record) {
    (void)record;
    return unsupported("this device records no work");
  }
};

expected<std::shared_ptr<device>> make_device(kernels::backend where, int device_index,
                                              const device_options& options = {});

/// A device's memory as a whole now (not one context's pool): the GPU's free and total bytes
/// (CUDA), or the host's available and total memory (CPU). What a worker that joins a control
/// node advertises (docs/cluster.md).
struct device_memory_snapshot {
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
};
expected<device_memory_snapshot> device_memory(kernels::backend where, int device_index);

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
