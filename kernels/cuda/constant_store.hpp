#pragma once
/// Internal to the CUDA backend: device copies of constant tensors (weights), uploaded once per
/// device and shared by every plan (batch bucket) of a session and by every sibling context
/// (model instance) on that device. The runtime reaches it through cuda_backend.hpp
/// (share_constant, constant_store_stats); kernels through device_buffer::shared_as / shared
/// (cuda_common.hpp).
///
/// Identity of an entry: (the source's host bytes, a variant naming the form the bytes take on
/// the device: dtype, relayout, padding; `prepare` must depend on nothing else). Found first by
/// the bytes' address and size: an entry keeps a copy of its source tensor, which shares the
/// host bytes, so while the entry lives those bytes cannot be freed and their address cannot be
/// reused by another constant. Failing that, by content (a hash of the bytes, then a full
/// comparison): graph passes that rebuild a constant per plan (a layout change, packed Q/K/V
/// weights) produce equal bytes at a new address, and those still map to one device copy. An
/// entry lives while someone holds it (a kernel, a plan) and is freed with the last holder.
///
/// Memory: the store has its own stream-ordered pool, separate from the contexts' pools (which
/// hold the arenas and per-kernel scratch), so that its reserved bytes are the weights' share of
/// device memory and a context's pool is one instance's own share.
///
/// Evictable stores (create's `evictable`): the entries live in an evictable_heap instead of the
/// pool (evictable_heap.hpp), so that `evict` can move every weight of the store to pinned host
/// memory, giving its device memory back, and `page_in` can restore it at the same addresses:
/// the plans and their CUDA graphs read the same pointers as before. While evicted, `get` fails
/// `unavailable` (a plan build must not read weights that are not there), and no run of a plan
/// holding the store's entries may be in flight or start (plan::run checks `resident`).
///
/// Thread-safety: every member may be called from any thread (instances are built on their own
/// workers). Uploads happen at plan build time, never on the hot path.

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::kernels::cuda {

class evictable_heap;  // evictable_heap.hpp

class constant_store : public std::enable_shared_from_this<constant_store> {
 public:
  /// A store on device `device` (current on the calling thread): its own pool (or, `evictable`,
  /// its own evictable heap) and upload stream.
  static expected<std::shared_ptr<constant_store>> create(int device, bool evictable = false);
  ~constant_store();
  constant_store(const constant_store&) = delete;
  constant_store& operator=(const constant_store&) = delete;

  int device() const { return device_; }

  /// The host bytes to upload for an entry, in their final device form (dtype included).
  using prepare_fn = std::function<expected<tensor>()>;
  /// The device copy of `source` in form `variant`: found, or made by `prepare` and uploaded
  /// (the copy is complete when this returns, so any stream may read it). The pointer stays valid
  /// while the returned handle or another holder of the same entry lives.
  ///
  /// Release invariant: a holder drops its handle only when no work that reads the bytes is in
  /// flight (plans are destroyed idle: plan::run and plan::execute wait for the device).
  struct handle {
    std::shared_ptr<const void> data;  // the device bytes; holding it keeps the entry alive
    size_t bytes = 0;
  };
  expected<handle> get(const tensor& source, const std::string& variant, const prepare_fn& prepare);

  struct stats {
    size_t live_bytes = 0;      // bytes of the live entries
    size_t entries = 0;         // live entries
    size_t reserved_bytes = 0;  // device memory the store's pool holds
    uint64_t uploads = 0;       // entries made since creation
    uint64_t hits = 0;          // requests answered by a live entry (by address or content)
    uint64_t content_hits = 0;  // of which found by content at another address
    bool evictable = false;
    bool resident = true;        // false while evicted
    size_t footprint_bytes = 0;  // device memory the entries take when resident (pool: reserved)
    size_t host_bytes = 0;       // pinned host memory holding evicted copies
  };
  stats statistics() const;
  /// Gives the device back what the pool holds beyond the live entries (entries freed with a
  /// plan leave their pages reserved until then).
  status trim();

  /// Evictable stores: copies every entry to pinned host memory and gives the device memory
  /// back; returns the device bytes released (0 when already evicted). Release invariant: no
  /// work that reads an entry is in flight. unsupported for a store made without `evictable`.
  expected<size_t> evict();
  /// Maps the entries again at their addresses and copies them back: returns the device bytes
  /// mapped (0 when resident). Complete (readable from any stream) when this returns. On
  /// failure (out_of_memory) the store stays evicted.
  expected<size_t> page_in();
  /// False while evicted. Cheap: read on every plan run.
  bool resident() const { return resident_.load(std::memory_order_acquire); }
  bool evictable() const { return heap_ != nullptr; }

 private:
  struct entry;
  using key = std::tuple<const void*, size_t, std::string>;       // address, bytes, variant
  using content_key = std::tuple<uint64_t, size_t, std::string>;  // hash, bytes, variant

  constant_store() = default;
  void release(const entry& e);

  int device_ = 0;
  cudaStream_t stream_ = nullptr;         // uploads and frees
  cudaMemPool_t pool_ = nullptr;          // null for an evictable store
  std::unique_ptr<evictable_heap> heap_;  // evictable stores' entries (set at create)
  std::atomic<bool> resident_{true};      // mirrors heap_->resident(), written under mutex_
  mutable std::mutex mutex_;              // guards everything below (and heap_'s state)
  std::map<key, std::weak_ptr<entry>> entries_;
  std::multimap<content_key, std::weak_ptr<entry>> by_content_;  // hash collisions compared in full
  size_t live_bytes_ = 0;
  uint64_t uploads_ = 0;
  uint64_t hits_ = 0;
  uint64_t content_hits_ = 0;
};

}  // namespace troupe::kernels::cuda
