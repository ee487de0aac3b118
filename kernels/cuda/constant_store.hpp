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
/// Thread-safety: every member may be called from any thread (instances are built on their own
/// workers). Uploads happen at plan build time, never on the hot path.

#include <cuda_runtime_api.h>

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

class constant_store : public std::enable_shared_from_this<constant_store> {
 public:
  /// A store on device `device` (current on the calling thread): its own pool and upload stream.
  static expected<std::shared_ptr<constant_store>> create(int device);
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
  };
  stats statistics() const;
  /// Gives the device back what the pool holds beyond the live entries (entries freed with a
  /// plan leave their pages reserved until then).
  status trim();

 private:
  struct entry;
  using key = std::tuple<const void*, size_t, std::string>;       // address, bytes, variant
  using content_key = std::tuple<uint64_t, size_t, std::string>;  // hash, bytes, variant

  constant_store() = default;
  void release(const entry& e);

  int device_ = 0;
  cudaStream_t stream_ = nullptr;  // uploads and frees
  cudaMemPool_t pool_ = nullptr;
  mutable std::mutex mutex_;  // guards everything below
  std::map<key, std::weak_ptr<entry>> entries_;
  std::multimap<content_key, std::weak_ptr<entry>> by_content_;  // hash collisions compared in full
  size_t live_bytes_ = 0;
  uint64_t uploads_ = 0;
  uint64_t hits_ = 0;
  uint64_t content_hits_ = 0;
};

}  // namespace troupe::kernels::cuda
