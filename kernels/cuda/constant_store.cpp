// Device copies of constants shared by plans and sibling contexts (see constant_store.hpp).
#include "kernels/cuda/constant_store.hpp"

#include <cstring>
#include <iterator>
#include <vector>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/evictable_heap.hpp"

namespace troupe::kernels::cuda {

/// One uploaded constant. Keeps the store (its pool and stream) and the source's host bytes alive.
struct constant_store::entry {
  std::shared_ptr<constant_store> store;
  key k;
  content_key ck;
  tensor source;  // pins the host bytes the key names; compared with content-key candidates
  void* device_ptr = nullptr;
  size_t bytes = 0;
  ~entry() {
    if (store) store->release(*this);
  }
};

namespace {

/// 64-bit hash of a constant's bytes, 8 at a time (a multiply-xorshift mix per word): fast enough
/// for the weights of a plan at build time; equal hashes are confirmed by a full comparison.
uint64_t content_hash(const tensor& t) {
  const auto* p = static_cast<const unsigned char*>(t.raw());
  const size_t n = t.bytes();
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  auto mix = [&h](uint64_t w) {
    h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    mix(w);
  }
  uint64_t tail = 0;
  if (i < n) std::memcpy(&tail, p + i, n - i);
  mix(tail);
  return h ^ static_cast<uint64_t>(t.type());
}

bool same_constant(const tensor& a, const tensor& b) {
  return a.info() == b.info() && (a.bytes() == 0 || std::memcmp(a.raw(), b.raw(), a.bytes()) == 0);
}

}  // namespace

expected<std::shared_ptr<constant_store>> constant_store::create(int device, bool evictable) {
  std::shared_ptr<constant_store> s(new constant_store());
  s->device_ = device;
  TROUPE_CUDA_CHECK(cudaSetDevice(device));
  TROUPE_CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream_, cudaStreamNonBlocking));
  if (evictable) {
    TROUPE_ASSIGN_OR_RETURN(s->heap_, evictable_heap::create(device, s->stream_));
    return s;
  }
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  TROUPE_CUDA_CHECK(cudaMemPoolCreate(&s->pool_, &props));
  // Weights are freed when a model goes; keep the pages until then rather than remapping on every
  // synchronisation (the same policy as the contexts' pools).
  uint64_t keep_all = UINT64_MAX;
  TROUPE_CUDA_CHECK(cudaMemPoolSetAttribute(s->pool_, cudaMemPoolAttrReleaseThreshold, &keep_all));
  return s;
}

constant_store::~constant_store() {
  // Every entry holds the store, so none is left here. Errors are ignored: a store is also torn
  // down after a sticky device error.
  heap_.reset();  // before the stream it copies on
  if (cudaSetDevice(device_) != cudaSuccess) return;
  if (stream_) (void)cudaStreamSynchronize(stream_);
  if (pool_) (void)cudaMemPoolDestroy(pool_);
  if (stream_) (void)cudaStreamDestroy(stream_);
  (void)cudaGetLastError();
}

expected<constant_store::handle> constant_store::get(const tensor& source,
                                                     const std::string& variant,
                                                     const prepare_fn& prepare) {
  if (source.device() != device_kind::cpu) {
    return invalid_argument("constant_store: the source constant must be in host memory");
  }
  key k{source.raw(), source.bytes(), variant};
  // Entries locked below are let go only after the mutex: one whose last other holder went
  // meanwhile is destroyed then, and its destructor takes the mutex (release).
  std::vector<std::shared_ptr<entry>> looked_at;
  std::lock_guard<std::mutex> lock(mutex_);
  if (!resident())
    return make_error(error_code::unavailable,
                      "the model's weights are evicted to host memory: page them in before "
                      "building a plan");
  auto it = entries_.find(k);
  if (it != entries_.end()) {
    if (std::shared_ptr<entry> e = it->second.lock()) {
      ++hits_;
      return handle{std::shared_ptr<const void>(e, e->device_ptr), e->bytes};
    }
  }
  // Equal bytes elsewhere (a constant a pass rebuilt for this plan).
  const content_key ck{content_hash(source), source.bytes(), variant};
  for (auto [c, end] = by_content_.equal_range(ck); c != end; ++c) {
    std::shared_ptr<entry> e = c->second.lock();
    if (e) looked_at.push_back(e);
    if (e && same_constant(e->source, source)) {
      ++hits_;
      ++content_hits_;
      return handle{std::shared_ptr<const void>(e, e->device_ptr), e->bytes};
    }
  }
  TROUPE_ASSIGN_OR_RETURN(tensor host, prepare());
  if (host.device() != device_kind::cpu) {
    return internal_error("constant_store: prepare gave a tensor outside host memory");
  }
  auto e = std::make_shared<entry>();
  e->k = k;
  e->ck = ck;
  e->source = source;
  e->bytes = host.bytes();
  if (e->bytes > 0) {
    TROUPE_CUDA_CHECK(cudaSetDevice(device_));
    if (heap_) {
      TROUPE_ASSIGN_OR_RETURN(e->device_ptr, heap_->allocate(e->bytes));
    } else {
      TROUPE_CUDA_CHECK(cudaMallocFromPoolAsync(&e->device_ptr, e->bytes, pool_, stream_));
    }
    const status copied = TROUPE_CUDA_STATUS(
        cudaMemcpyAsync(e->device_ptr, host.raw(), e->bytes, cudaMemcpyHostToDevice, stream_));
    // Complete before anyone reads it from another stream, and before `host` goes away.
    const status done = TROUPE_CUDA_STATUS(cudaStreamSynchronize(stream_));
    if (!copied.is_ok() || !done.is_ok()) {
      if (heap_)
        heap_->free(e->device_ptr);
      else
        (void)cudaFreeAsync(e->device_ptr, stream_);
      return copied.is_ok() ? done : copied;
    }
  }
  // Set last: an entry that failed above is destroyed without a store and releases nothing.
  e->store = shared_from_this();
  live_bytes_ += e->bytes;
  ++uploads_;
  entries_[k] = e;
  by_content_.emplace(ck, e);
  return handle{std::shared_ptr<const void>(e, e->device_ptr), e->bytes};
}

void constant_store::release(const entry& e) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(e.k);
  // A newer entry under the same key (made after this one expired) stays.
  if (it != entries_.end() && it->second.expired()) entries_.erase(it);
  for (auto [c, end] = by_content_.equal_range(e.ck); c != end;) {
    c = c->second.expired() ? by_content_.erase(c) : std::next(c);
  }
  live_bytes_ -= e.bytes;
  if (heap_) {
    // Nothing to enqueue: no work reading the bytes is in flight (the release invariant), and
    // the chunks left empty stay mapped until trim (or are not mapped at all while evicted).
    heap_->free(e.device_ptr);
  } else if (e.device_ptr != nullptr && cudaSetDevice(device_) == cudaSuccess) {
    // No work reading the bytes is in flight (the release invariant in the header), so a
    // stream-ordered free on the store's own stream is enough.
    (void)cudaFreeAsync(e.device_ptr, stream_);
  }
  (void)cudaGetLastError();
}

status constant_store::trim() {
  std::lock_guard<std::mutex> lock(mutex_);
  TROUPE_CUDA_CHECK(cudaSetDevice(device_));
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // frees enqueued by released entries
  if (heap_) {
    heap_->trim();
    return status::ok();
  }
  TROUPE_CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0));
  return status::ok();
}

expected<size_t> constant_store::evict() {
  if (!heap_) return unsupported("this model's weights were not loaded evictable");
  std::lock_guard<std::mutex> lock(mutex_);
  TROUPE_ASSIGN_OR_RETURN(size_t released, heap_->evict());
  resident_.store(heap_->resident(), std::memory_order_release);
  return released;
}

expected<size_t> constant_store::page_in() {
  if (!heap_) return unsupported("this model's weights were not loaded evictable");
  std::lock_guard<std::mutex> lock(mutex_);
  TROUPE_ASSIGN_OR_RETURN(size_t mapped, heap_->page_in());
  resident_.store(heap_->resident(), std::memory_order_release);
  return mapped;
}

constant_store::stats constant_store::statistics() const {
  stats s;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s.live_bytes = live_bytes_;
    s.uploads = uploads_;
    s.hits = hits_;
    s.content_hits = content_hits_;
    for (const auto& [k, w] : entries_) s.entries += w.expired() ? 0 : 1;
  }
  s.evictable = heap_ != nullptr;
  s.resident = resident();
  if (heap_) {
    std::lock_guard<std::mutex> lock(mutex_);
    s.reserved_bytes = heap_->mapped_bytes();
    s.footprint_bytes = heap_->footprint_bytes();
    s.host_bytes = heap_->host_bytes();
    return s;
  }
  uint64_t v = 0;
  if (cudaSetDevice(device_) == cudaSuccess &&
      cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &v) == cudaSuccess) {
    s.reserved_bytes = v;
  }
  (void)cudaGetLastError();
  s.footprint_bytes = s.reserved_bytes;
  return s;
}

}  // namespace troupe::kernels::cuda
