// Evictable device memory for weights: one reserved address range, physical memory mapped per
// chunk, copies to and from pinned host memory (see evictable_heap.hpp).
#include "kernels/cuda/evictable_heap.hpp"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/host_staging.hpp"

namespace troupe::kernels::cuda {
namespace {

/// The driver's virtual memory management calls, looked up once through the runtime (the
/// runtime loads libcuda itself; linking it would make the binary unloadable without a driver).
struct vmm_api {
  PFN_cuMemGetAllocationGranularity_v10020 granularity = nullptr;
  PFN_cuMemAddressReserve_v10020 reserve = nullptr;
  PFN_cuMemAddressFree_v10020 address_free = nullptr;
  PFN_cuMemCreate_v10020 create = nullptr;
  PFN_cuMemRelease_v10020 release = nullptr;
  PFN_cuMemMap_v10020 map = nullptr;
  PFN_cuMemUnmap_v10020 unmap = nullptr;
  PFN_cuMemSetAccess_v10020 set_access = nullptr;
  PFN_cuGetErrorName_v6000 error_name = nullptr;
};

/// The CUDA version whose ABI of each symbol we ask for: every call above exists unchanged since
/// 10.2; 12.0 is the oldest driver this build's runtime runs on anyway.
constexpr unsigned int driver_abi_version = 12000;

template <class F>
status lookup(const char* symbol, F& out) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  TROUPE_CUDA_CHECK(
      cudaGetDriverEntryPointByVersion(symbol, &fn, driver_abi_version, cudaEnableDefault, &found));
  if (found != cudaDriverEntryPointSuccess || fn == nullptr)
    return make_error(error_code::device_error,
                      std::string("the CUDA driver does not provide ") + symbol +
                          " (virtual memory management, needed for evictable weights)");
  out = reinterpret_cast<F>(fn);
  return status::ok();
}

expected<const vmm_api*> vmm() {
  static const expected<vmm_api> api = []() -> expected<vmm_api> {
    vmm_api a;
    TROUPE_RETURN_IF_ERROR(lookup("cuMemGetAllocationGranularity", a.granularity));
    TROUPE_RETURN_IF_ERROR(lookup("cuMemAddressReserve", a.reserve));
    TROUPE_RETURN_IF_ERROR(lookup("cuMemAddressFree", a.address_free));
    TROUPE_RETURN_IF_ERROR(lookup("cuMemCreate", a.create));
    TROUPE_RETURN_IF_ERROR(lookup("cuMemRelease", a.release));
    TROUPE_RETURN_IF_ERROR(lookup("cuMemMap", a.map));
    TROUPE_RETURN_IF_ERROR(lookup("cuMemUnmap", a.unmap));
    TROUPE_RETURN_IF_ERROR(lookup("cuMemSetAccess", a.set_access));
    TROUPE_RETURN_IF_ERROR(lookup("cuGetErrorName", a.error_name));
    return a;
  }();
  if (!api) return api.error();
  return &*api;
}

/// A driver result as a status naming the call (out_of_memory for CUDA_ERROR_OUT_OF_MEMORY).
status cu_status(const vmm_api& api, CUresult r, const char* expr) {
  if (r == CUDA_SUCCESS) return status::ok();
  const char* name = nullptr;
  if (api.error_name == nullptr || api.error_name(r, &name) != CUDA_SUCCESS || name == nullptr)
    name = "unknown CUresult";
  const error_code code =
      r == CUDA_ERROR_OUT_OF_MEMORY ? error_code::out_of_memory : error_code::device_error;
  return status(code, std::string(expr) + " failed: " + name + " (" +
                          std::to_string(static_cast<int>(r)) + ")");
}

#define TROUPE_CU_CHECK(api, expr) TROUPE_RETURN_IF_ERROR(cu_status((api), (expr), #expr))

CUmemAllocationProp device_memory(int device) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  return prop;
}

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

}  // namespace

/// Pinned host memory holding the copies of some chunks; freed with the last chunk using it.
struct evictable_heap::host_block {
  void* data = nullptr;
  size_t bytes = 0;
  std::shared_ptr<size_t> counter;  // the heap's host_bytes_
  host_block(void* d, size_t b, std::shared_ptr<size_t> c)
      : data(d), bytes(b), counter(std::move(c)) {
    *counter += bytes;
  }
  ~host_block() {
    *counter -= bytes;
    pinned_host_free(data);
  }
  host_block(const host_block&) = delete;
  host_block& operator=(const host_block&) = delete;
};

evictable_heap::evictable_heap(int device, cudaStream_t stream, uintptr_t base, size_t reserved,
                               size_t chunk_bytes, contents what)
    : device_(device),
      stream_(stream),
      what_(what),
      base_(base),
      reserved_(reserved),
      chunk_bytes_(chunk_bytes),
      arena_(reserved, chunk_bytes, 256) {}

expected<std::unique_ptr<evictable_heap>> evictable_heap::create(int device, cudaStream_t stream,
                                                                contents what) {
  TROUPE_ASSIGN_OR_RETURN(const vmm_api* api, vmm());
  TROUPE_CUDA_CHECK(cudaSetDevice(device));
  const CUmemAllocationProp prop = device_memory(device);
  size_t granularity = 0;
  TROUPE_CU_CHECK(*api, api->granularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
  const size_t chunk = round_up(size_t{2} << 20, std::max<size_t>(granularity, 1));
  // Address space for as much as the device has memory: a model's weights (or a context's
  // arenas) cannot need more, and reserving addresses costs no memory.
  size_t free_bytes = 0, total_bytes = 0;
  TROUPE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const size_t reserved = round_up(std::max(total_bytes, chunk), chunk);
  CUdeviceptr base = 0;
  TROUPE_CU_CHECK(*api, api->reserve(&base, reserved, chunk, 0, 0));
  return std::unique_ptr<evictable_heap>(
      new evictable_heap(device, stream, static_cast<uintptr_t>(base), reserved, chunk, what));
}

evictable_heap::~evictable_heap() {
  // Errors are ignored: a heap is also torn down after a sticky device error.
  auto api = vmm();
  if (!api || cudaSetDevice(device_) != cudaSuccess) return;
  (void)cudaStreamSynchronize(stream_);
  for (size_t c = 0; c < chunks_.size(); ++c)
    if (chunks_[c].mapped) unmap_chunk(c);
  (void)(*api)->address_free(static_cast<CUdeviceptr>(base_), reserved_);
  (void)cudaGetLastError();
}

status evictable_heap::map_chunk(size_t c) {
  TROUPE_ASSIGN_OR_RETURN(const vmm_api* api, vmm());
  const CUmemAllocationProp prop = device_memory(device_);
  CUmemGenericAllocationHandle handle = 0;
  TROUPE_CU_CHECK(*api, api->create(&handle, chunk_bytes_, &prop, 0));
  const auto at = static_cast<CUdeviceptr>(address_of(c));
  status mapped = cu_status(*api, api->map(at, chunk_bytes_, 0, handle, 0), "cuMemMap");
  if (!mapped.is_ok()) {
    (void)api->release(handle);
    return mapped;
  }
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device_;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  status accessible =
      cu_status(*api, api->set_access(at, chunk_bytes_, &access, 1), "cuMemSetAccess");
  if (!accessible.is_ok()) {
    (void)api->unmap(at, chunk_bytes_);
    (void)api->release(handle);
    return accessible;
  }
  chunks_[c].handle = handle;
  chunks_[c].mapped = true;
  ++mapped_chunks_;
  return status::ok();
}

void evictable_heap::unmap_chunk(size_t c) {
  auto api = vmm();
  chunk_state& s = chunks_[c];
  if (!s.mapped || !api) return;
  // Unmapping drops the mapping's reference, releasing the handle its own: the physical memory
  // goes back to the device once both are gone.
  (void)(*api)->unmap(static_cast<CUdeviceptr>(address_of(c)), chunk_bytes_);
  (void)(*api)->release(static_cast<CUmemGenericAllocationHandle>(s.handle));
  s.handle = 0;
  s.mapped = false;
  --mapped_chunks_;
}

expected<void*> evictable_heap::allocate(size_t bytes) {
  if (!resident_)
    return make_error(error_code::unavailable,
                      std::string("the model's ") + what_name() + " are evicted: page them in first");
  TROUPE_CUDA_CHECK(cudaSetDevice(device_));
  TROUPE_ASSIGN_OR_RETURN(chunked_arena::grant g, arena_.allocate(bytes));
  // First fit keeps allocations low in the range: the states grow to the highest chunk used,
  // not to the whole reservation (tens of thousands of chunks).
  if (chunks_.size() <= g.last_chunk) chunks_.resize(g.last_chunk + 1);
  for (size_t c = g.first_chunk; c <= g.last_chunk; ++c) {
    // The allocation's bytes are not in any host copy of the chunk yet.
    chunks_[c].host_valid = false;
    if (chunks_[c].mapped) continue;
    if (status s = map_chunk(c); !s.is_ok()) {
      for (size_t e : arena_.free(g.offset)) chunks_[e].host.reset();
      return s.with_context("mapping " + std::to_string(chunk_bytes_) +
                            " bytes of device memory for " + what_name());
    }
  }
  return reinterpret_cast<void*>(base_ + g.offset);
}

void evictable_heap::free(const void* p) {
  if (!owns(p)) return;
  const auto at = reinterpret_cast<uintptr_t>(p);
  for (size_t c : arena_.free(at - base_)) {
    chunks_[c].host.reset();
    chunks_[c].host_valid = false;
  }
}

void evictable_heap::trim() {
  if (!resident_ || cudaSetDevice(device_) != cudaSuccess) return;
  for (size_t c = 0; c < chunks_.size(); ++c)
    if (chunks_[c].mapped && arena_.chunk_users(c) == 0) unmap_chunk(c);
  (void)cudaGetLastError();
}

expected<size_t> evictable_heap::evict() {
  if (!resident_) return size_t{0};
  TROUPE_CUDA_CHECK(cudaSetDevice(device_));
  // The store's uploads (or the arenas' last run) complete before anything is unmapped.
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<size_t> stale;
  if (what_ == contents::keep)
    for (size_t c : arena_.live_chunks())
      if (!chunks_[c].host_valid || !chunks_[c].host) stale.push_back(c);
  if (!stale.empty()) {
    const size_t bytes = stale.size() * chunk_bytes_;
    TROUPE_ASSIGN_OR_RETURN(void* p, pinned_host_alloc(device_, bytes));
    auto block = std::make_shared<host_block>(p, bytes, host_bytes_);
    for (size_t i = 0; i < stale.size(); ++i)
      TROUPE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(p) + i * chunk_bytes_,
                                        reinterpret_cast<const void*>(address_of(stale[i])),
                                        chunk_bytes_, cudaMemcpyDeviceToHost, stream_));
    // Complete before the memory is unmapped; on failure nothing is unmapped and the copies
    // stay invalid (the block is dropped with `block`).
    TROUPE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < stale.size(); ++i) {
      chunk_state& s = chunks_[stale[i]];
      s.host = block;
      s.host_offset = i * chunk_bytes_;
      s.host_valid = true;
    }
  }
  const size_t released = mapped_bytes();
  for (size_t c = 0; c < chunks_.size(); ++c)
    if (chunks_[c].mapped) unmap_chunk(c);
  resident_ = false;
  return released;
}

expected<size_t> evictable_heap::page_in() {
  if (resident_) return size_t{0};
  TROUPE_CUDA_CHECK(cudaSetDevice(device_));
  const std::vector<size_t> live = arena_.live_chunks();
  const bool copy = what_ == contents::keep;
  if (copy)
    for (size_t c : live)
      if (!chunks_[c].host || !chunks_[c].host_valid)
        return internal_error("evicted weights: chunk " + std::to_string(c) +
                              " has no host copy to page in from");
  std::vector<size_t> mapped_here;
  auto undo = [&] {
    for (size_t c : mapped_here) unmap_chunk(c);
  };
  for (size_t c : live) {
    if (status s = map_chunk(c); !s.is_ok()) {
      undo();
      return s.with_context("paging in " + std::to_string(live.size() * chunk_bytes_) +
                            " bytes of " + what_name());
    }
    mapped_here.push_back(c);
  }
  if (!copy) {
    resident_ = true;
    return live.size() * chunk_bytes_;
  }
  status copied = status::ok();
  for (size_t c : live) {
    const chunk_state& s = chunks_[c];
    copied =
        TROUPE_CUDA_STATUS(cudaMemcpyAsync(reinterpret_cast<void*>(address_of(c)),
                                           static_cast<const char*>(s.host->data) + s.host_offset,
                                           chunk_bytes_, cudaMemcpyHostToDevice, stream_));
    if (!copied.is_ok()) break;
  }
  // Complete before any stream reads the weights (runs go on other streams).
  const status done = TROUPE_CUDA_STATUS(cudaStreamSynchronize(stream_));
  if (!copied.is_ok() || !done.is_ok()) {
    undo();
    return copied.is_ok() ? done : copied;
  }
  resident_ = true;
  return live.size() * chunk_bytes_;
}

}  // namespace troupe::kernels::cuda
