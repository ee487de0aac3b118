// The CUDA context, its memory pool and copies; the error conversion every call goes through.
#include "kernels/cuda/cuda_backend.hpp"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "kernels/cuda/constant_store.hpp"
#include "kernels/cuda/evictable_heap.hpp"
#include "kernels/cuda/cuda_common.hpp"

namespace troupe::kernels::cuda {

// ---- errors ------------------------------------------------------------------------------------

namespace {

std::string where(const char* expr, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return std::string(expr) + " at " + (base ? base + 1 : file) + ":" + std::to_string(line);
}

}  // namespace

status to_status(cudaError_t e, const char* expr, const char* file, int line) {
  if (e == cudaSuccess) return status::ok();
  // A failed call is also the thread's "last error"; clear it so that the next launch check does
  // not report it again (sticky errors stay: they come back from every later call anyway).
  (void)cudaGetLastError();
  const error_code code =
      e == cudaErrorMemoryAllocation ? error_code::out_of_memory : error_code::device_error;
  return status(code, where(expr, file, line) + " failed: " + cudaGetErrorName(e) + " (" +
                          cudaGetErrorString(e) + ")");
}

status to_status(cudnnStatus_t e, const char* expr, const char* file, int line) {
  if (e == CUDNN_STATUS_SUCCESS) return status::ok();
  const error_code code =
      e == CUDNN_STATUS_ALLOC_FAILED ? error_code::out_of_memory : error_code::device_error;
  return status(code, where(expr, file, line) + " failed: " + cudnnGetErrorString(e));
}

status to_status(cublasStatus_t e, const char* expr, const char* file, int line) {
  if (e == CUBLAS_STATUS_SUCCESS) return status::ok();
  const error_code code =
      e == CUBLAS_STATUS_ALLOC_FAILED ? error_code::out_of_memory : error_code::device_error;
  return status(code, where(expr, file, line) + " failed: " + cublasLtGetStatusName(e) + " (" +
                          cublasLtGetStatusString(e) + ")");
}

// ---- context -----------------------------------------------------------------------------------

cuda_context::~cuda_context() {
  // Errors are ignored here: a context is torn down also after a sticky device error, and there
  // is no one left to report to.
  if (cudaSetDevice(device_) != cudaSuccess) return;
  if (stream_) (void)cudaStreamSynchronize(stream_);
  arenas_.reset();  // unmaps under a stream that still exists
  if (lt_) (void)cublasLtDestroy(lt_);
  if (cudnn_) (void)cudnnDestroy(cudnn_);
  // A pool with live allocations is released once they are freed (cudaMemPoolDestroy's contract).
  if (pool_) (void)cudaMemPoolDestroy(pool_);
  if (stream_) (void)cudaStreamDestroy(stream_);
  if (fault_host_) (void)cudaFreeHost(fault_host_);
  (void)cudaGetLastError();
}

uint32_t cuda_context::take_faults() {
  // Volatile: the device wrote this word behind the compiler's back.
  volatile uint32_t* word = fault_host_;
  if (word == nullptr || *word == 0) return 0;
  const uint32_t bits = *word;
  *word = 0;
  return bits;
}

status cuda_context::make_current() const {
  TROUPE_CUDA_CHECK(cudaSetDevice(device_));
  return status::ok();
}

status cuda_context::bind_cudnn_stream(cudaStream_t s) {
  if (s == cudnn_stream_) return status::ok();
  TROUPE_CUDA_CHECK(cudnnSetStream(cudnn_, s));
  cudnn_stream_ = s;
  return status::ok();
}

expected<std::string> device_model(int device) {
  static std::mutex mutex;
  static std::map<int, std::string> models;  // by device ordinal
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = models.find(device); it != models.end()) return it->second;
  cudaDeviceProp p{};
  TROUPE_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  std::string name(p.name, strnlen(p.name, sizeof(p.name)));
  for (char& ch : name) {
    if (ch < 0x20 || ch > 0x7e) ch = '?';  // keys are printable ASCII (tuning_records.hpp)
  }
  std::string model = name + " sm_" + std::to_string(p.major) + std::to_string(p.minor) + " " +
                      std::to_string(p.multiProcessorCount) + " SMs";
  return models.emplace(device, std::move(model)).first->second;
}

tuning_environment library_versions() {
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  (void)cudaGetLastError();
  return {static_cast<int64_t>(cudnnGetVersion()), runtime};
}

expected<cuda_context*> context_of(const kernel_create_context& c) {
  if (c.backend == nullptr || c.backend->kind() != backend::cuda) {
    return c.fail(error_code::internal, "a CUDA kernel was created without a CUDA context");
  }
  return static_cast<cuda_context*>(c.backend);
}

bool device_available() {
  static const bool available = [] {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    (void)cudaGetLastError();  // clears cudaErrorNoDevice / InsufficientDriver
    return e == cudaSuccess && count > 0;
  }();
  return available;
}

int device_count() {
  if (!device_available()) return 0;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  (void)cudaGetLastError();
  return count;
}

expected<device_memory_info> device_memory(int device_index) {
  TROUPE_RETURN_IF_ERROR(set_current_device(device_index));
  device_memory_info m;
  const cudaError_t e = cudaMemGetInfo(&m.free_bytes, &m.total_bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return status(error_code::device_error,
                  std::string("cudaMemGetInfo: ") + cudaGetErrorString(e));
  }
  return m;
}

status set_current_device(int device_index) {
  const int count = device_count();
  if (device_index < 0 || device_index >= count) {
    return invalid_argument("CUDA device " + std::to_string(device_index) + " does not exist (" +
                            std::to_string(count) + " devices)");
  }
  TROUPE_CUDA_CHECK(cudaSetDevice(device_index));
  return status::ok();
}

expected<std::unique_ptr<backend_context>> create_context(int device_index,
                                                          const context_options& options) {
  if (!device_available()) return make_error(error_code::device_error, "no CUDA device available");
  int count = 0;
  TROUPE_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device_index < 0 || device_index >= count) {
    return invalid_argument("CUDA device " + std::to_string(device_index) + " does not exist (" +
                            std::to_string(count) + " devices)");
  }
  std::unique_ptr<cuda_context> ctx(new cuda_context());
  ctx->device_ = device_index;
  TROUPE_CUDA_CHECK(cudaSetDevice(device_index));
  int pools_supported = 0;
  TROUPE_CUDA_CHECK(
      cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, device_index));
  if (!pools_supported) {
    return make_error(error_code::device_error,
                      "CUDA device " + std::to_string(device_index) +
                          " does not support stream-ordered memory pools");
  }
  TROUPE_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream_, cudaStreamNonBlocking));
  TROUPE_CUDA_CHECK(cudnnCreate(&ctx->cudnn_));
  TROUPE_CUDA_CHECK(cudnnSetStream(ctx->cudnn_, ctx->stream_));
  ctx->cudnn_stream_ = ctx->stream_;
  TROUPE_CUDA_CHECK(cublasLtCreate(&ctx->lt_));
  TROUPE_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&ctx->fault_host_), sizeof(uint32_t), cudaHostAllocMapped));
  *ctx->fault_host_ = 0;
  TROUPE_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&ctx->fault_device_), ctx->fault_host_, 0));

  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device_index;
  TROUPE_CUDA_CHECK(cudaMemPoolCreate(&ctx->pool_, &props));
  // Keep what the pool has reserved: a plan's arena is freed and re-allocated around runs, and
  // giving memory back to the driver at every synchronisation would cost a remap each time.
  uint64_t keep_all = UINT64_MAX;
  TROUPE_CUDA_CHECK(
      cudaMemPoolSetAttribute(ctx->pool_, cudaMemPoolAttrReleaseThreshold, &keep_all));
  TROUPE_ASSIGN_OR_RETURN(ctx->constants_,
                          constant_store::create(device_index, options.evictable_constants));
  if (options.evictable_arenas) {
    TROUPE_ASSIGN_OR_RETURN(ctx->arenas_,
                            evictable_heap::create(device_index, ctx->stream_,
                                                   evictable_heap::contents::discard));
  }
  return std::unique_ptr<backend_context>(std::move(ctx));
}

expected<std::unique_ptr<backend_context>> create_sibling_context(backend_context& sibling) {
  if (sibling.kind() != backend::cuda)
    return internal_error("create_sibling_context: not a CUDA context");
  const auto& first = static_cast<const cuda_context&>(sibling);
  context_options o;
  o.evictable_arenas = first.arenas() != nullptr;  // each sibling its own arenas, alike
  TROUPE_ASSIGN_OR_RETURN(auto base, create_context(first.device(), o));
  auto& ctx = static_cast<cuda_context&>(*base);
  ctx.constants_ = first.constants_;  // the fresh store is dropped unused
  return base;
}

bool shares_constants(backend_context& a, backend_context& b) {
  if (a.kind() != backend::cuda || b.kind() != backend::cuda) return false;
  return &static_cast<cuda_context&>(a).constants() == &static_cast<cuda_context&>(b).constants();
}

namespace {

cuda_context& as_cuda(backend_context& ctx) {
  return static_cast<cuda_context&>(ctx);
}

}  // namespace

expected<void*> device_malloc(backend_context& base, size_t bytes) {
  if (bytes == 0) return static_cast<void*>(nullptr);
  cuda_context& ctx = as_cuda(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  void* p = nullptr;
  TROUPE_CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, ctx.pool(), ctx.stream()));
  return p;
}

void device_free(backend_context& base, void* p) {
  if (p == nullptr) return;
  cuda_context& ctx = as_cuda(base);
  if (!ctx.make_current().is_ok()) return;
  if (evictable_heap* arenas = ctx.arenas(); arenas && arenas->owns(p)) {
    // The heap reuses the range at once: the runs enqueued before this free end first (plans
    // are dropped rarely, never on the hot path).
    (void)cudaStreamSynchronize(ctx.stream());
    arenas->free(p);
    (void)cudaGetLastError();
    return;
  }
  // A failure here means the device is already in an error state; the next checked call says so.
  (void)cudaFreeAsync(p, ctx.stream());
}

expected<void*> arena_malloc(backend_context& base, size_t bytes) {
  cuda_context& ctx = as_cuda(base);
  evictable_heap* arenas = ctx.arenas();
  if (arenas == nullptr || bytes == 0) return device_malloc(base, bytes);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  return arenas->allocate(bytes);
}

arena_stats arena_heap_stats(backend_context& base) {
  arena_stats s;
  const evictable_heap* arenas = as_cuda(base).arenas();
  if (arenas == nullptr) return s;
  s.evictable = true;
  s.resident = arenas->resident();
  s.footprint_bytes = arenas->footprint_bytes();
  s.mapped_bytes = arenas->mapped_bytes();
  return s;
}

expected<size_t> discard_arenas(backend_context& base) {
  cuda_context& ctx = as_cuda(base);
  if (ctx.arenas() == nullptr) return unsupported("this context's arenas are not evictable");
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  return ctx.arenas()->evict();
}

expected<size_t> restore_arenas(backend_context& base) {
  cuda_context& ctx = as_cuda(base);
  if (ctx.arenas() == nullptr) return unsupported("this context's arenas are not evictable");
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  return ctx.arenas()->page_in();
}

bool arenas_resident(backend_context& base) {
  const evictable_heap* arenas = as_cuda(base).arenas();
  return arenas == nullptr || arenas->resident();
}

status copy_to_device(backend_context& base, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return status::ok();
  cuda_context& ctx = as_cuda(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  TROUPE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.stream()));
  return status::ok();
}

status copy_to_host(backend_context& base, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return status::ok();
  cuda_context& ctx = as_cuda(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  TROUPE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx.stream()));
  return status::ok();
}

status synchronize(backend_context& base) {
  cuda_context& ctx = as_cuda(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  if (const uint32_t faults = ctx.take_faults()) {
    if (faults & fault_gather_index) {
      return invalid_argument("Gather: an index is outside the indexed axis (e.g. a token id beyond the vocabulary)");
    }
    if (faults & fault_gather_elements_index) {
      return invalid_argument("GatherElements: an index is outside the indexed axis");
    }
    if (faults & fault_gather_nd_index) {
      return invalid_argument("GatherND: an index is outside the indexed axis");
    }
    if (faults & fault_scatter_elements_index) {
      return invalid_argument("ScatterElements: an index is outside the indexed axis");
    }
    if (faults & fault_scatter_nd_index) {
      return invalid_argument("ScatterND: an index is outside the indexed axis");
    }
    return internal_error("a kernel reported fault bits " + std::to_string(faults));
  }
  return status::ok();
}

void* stream(backend_context& base) {
  return as_cuda(base).stream();
}

pool_stats stats(backend_context& base) {
  cuda_context& ctx = as_cuda(base);
  pool_stats s;
  if (!ctx.make_current().is_ok()) return s;
  uint64_t v = 0;
  if (cudaMemPoolGetAttribute(ctx.pool(), cudaMemPoolAttrReservedMemCurrent, &v) == cudaSuccess) {
    s.reserved_bytes = v;
  }
  if (cudaMemPoolGetAttribute(ctx.pool(), cudaMemPoolAttrUsedMemCurrent, &v) == cudaSuccess) {
    s.in_use_bytes = v;
  }
  if (cudaMemPoolGetAttribute(ctx.pool(), cudaMemPoolAttrUsedMemHigh, &v) == cudaSuccess) {
    s.peak_bytes = v;
  }
  // A watermark just reset reads 0 until the next allocation: the peak is at least the use now.
  s.peak_bytes = std::max(s.peak_bytes, s.in_use_bytes);
  s.fragmentation_bytes = s.reserved_bytes > s.in_use_bytes ? s.reserved_bytes - s.in_use_bytes : 0;
  (void)cudaGetLastError();
  return s;
}

status release_unused_memory(backend_context& base) {
  cuda_context& ctx = as_cuda(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  TROUPE_CUDA_CHECK(cudaMemPoolTrimTo(ctx.pool(), 0));
  uint64_t zero = 0;  // the only value the high watermark accepts: resets it to the current use
  TROUPE_CUDA_CHECK(cudaMemPoolSetAttribute(ctx.pool(), cudaMemPoolAttrUsedMemHigh, &zero));
  if (ctx.arenas()) ctx.arenas()->trim();
  return ctx.constants().trim();
}

expected<std::shared_ptr<const void>> share_constant(backend_context& base, const tensor& host) {
  // The same entry (variant) as a kernel's device_buffer::shared_as(host, host.type()).
  TROUPE_ASSIGN_OR_RETURN(device_buffer b,
                          device_buffer::shared_as(as_cuda(base), host, host.type()));
  return b.share();
}

constant_stats constant_store_stats(backend_context& base) {
  const constant_store::stats st = as_cuda(base).constants().statistics();
  constant_stats s;
  s.live_bytes = st.live_bytes;
  s.entries = st.entries;
  s.reserved_bytes = st.reserved_bytes;
  s.uploads = st.uploads;
  s.hits = st.hits;
  s.content_hits = st.content_hits;
  s.evictable = st.evictable;
  s.resident = st.resident;
  s.footprint_bytes = st.footprint_bytes;
  s.host_bytes = st.host_bytes;
  return s;
}

expected<size_t> evict_constants(backend_context& base) {
  cuda_context& ctx = as_cuda(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  return ctx.constants().evict();
}

expected<size_t> page_in_constants(backend_context& base) {
  cuda_context& ctx = as_cuda(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  return ctx.constants().page_in();
}

bool constants_resident(backend_context& base) {
  return as_cuda(base).constants().resident();
}

const void* constants_identity(backend_context& base) {
  return &as_cuda(base).constants();
}

// ---- device buffers ----------------------------------------------------------------------------

device_buffer& device_buffer::operator=(device_buffer&& o) noexcept {
  if (this != &o) {
    if (ptr_ && ctx_ && !shared_) device_free(*ctx_, ptr_);
    ctx_ = std::exchange(o.ctx_, nullptr);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    shared_ = std::move(o.shared_);
    o.shared_.reset();
  }
  return *this;
}

device_buffer::~device_buffer() {
  if (ptr_ && ctx_ && !shared_) device_free(*ctx_, ptr_);
}

expected<device_buffer> device_buffer::allocate(cuda_context& ctx, size_t bytes) {
  TROUPE_ASSIGN_OR_RETURN(void* p, device_malloc(ctx, bytes));
  device_buffer b;
  b.ctx_ = &ctx;
  b.ptr_ = p;
  b.bytes_ = bytes;
  return b;
}

expected<device_buffer> device_buffer::upload(cuda_context& ctx, const void* host, size_t bytes) {
  TROUPE_ASSIGN_OR_RETURN(device_buffer b, allocate(ctx, bytes));
  TROUPE_RETURN_IF_ERROR(copy_to_device(ctx, b.get(), host, bytes));
  return b;
}

expected<device_buffer> device_buffer::upload_as(cuda_context& ctx, const tensor& host, dtype to) {
  if (host.type() == to) return upload(ctx, host.raw(), host.bytes());
  if (!is_floating(host.type()) || !is_gpu_float(to)) {
    return unsupported("cannot convert a " + std::string(dtype_name(host.type())) +
                       " constant to " + std::string(dtype_name(to)));
  }
  const int64_t n = host.elements();
  std::vector<uint8_t> staged(static_cast<size_t>(n) * dtype_size(to));
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(host.value_as_double(i));
    if (to == dtype::f32) {
      reinterpret_cast<float*>(staged.data())[i] = v;
    } else {
      reinterpret_cast<uint16_t*>(staged.data())[i] = float16_bits(to, v);
    }
  }
  return upload(ctx, staged.data(), staged.size());
}

namespace {

/// `host` converted to `to` on the host (between f32, f16 and bf16), or `host` itself when it
/// already is.
expected<tensor> converted(const tensor& host, dtype to) {
  if (host.type() == to) return host;
  if (!is_floating(host.type()) || !is_gpu_float(to)) {
    return unsupported("cannot convert a " + std::string(dtype_name(host.type())) +
                       " constant to " + std::string(dtype_name(to)));
  }
  tensor out = tensor::allocate(to, host.shape());
  const int64_t n = host.elements();
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(host.value_as_double(i));
    if (to == dtype::f32) {
      out.data<float>()[i] = v;
    } else {
      out.data<uint16_t>()[i] = float16_bits(to, v);
    }
  }
  return out;
}

}  // namespace

expected<device_buffer> device_buffer::shared(cuda_context& ctx, const tensor& source,
                                              const std::string& variant, dtype to,
                                              const std::function<expected<tensor>()>& prepare) {
  const std::string key = variant + " as " + std::string(dtype_name(to));
  TROUPE_ASSIGN_OR_RETURN(constant_store::handle h,
                          ctx.constants().get(source, key, [&]() -> expected<tensor> {
                            TROUPE_ASSIGN_OR_RETURN(tensor host, prepare());
                            return converted(host, to);
                          }));
  device_buffer b;
  b.ctx_ = &ctx;
  b.ptr_ = const_cast<void*>(h.data.get());
  b.bytes_ = h.bytes;
  b.shared_ = std::move(h.data);
  return b;
}

expected<device_buffer> device_buffer::shared_as(cuda_context& ctx, const tensor& source,
                                                 dtype to) {
  return shared(ctx, source, "", to, [&source]() -> expected<tensor> { return source; });
}

// ---- dtypes ------------------------------------------------------------------------------------

uint16_t half_bits(float v) {
  return __half_raw(__float2half_rn(v)).x;
}

uint16_t float16_bits(dtype t, float v) {
  // core's bfloat16 rounding: nearest even, NaN kept quiet (as __float2bfloat16_rn).
  return t == dtype::bf16 ? float_to_bfloat16(v) : half_bits(v);
}

expected<cudnnDataType_t> cudnn_type(dtype t) {
  switch (t) {
    case dtype::f32:
      return CUDNN_DATA_FLOAT;
    case dtype::f16:
      return CUDNN_DATA_HALF;
    case dtype::bf16:
      return CUDNN_DATA_BFLOAT16;
    default:
      return unsupported("dtype " + std::string(dtype_name(t)) + " has no cuDNN path");
  }
}

expected<cudaDataType_t> cuda_type(dtype t) {
  switch (t) {
    case dtype::f32:
      return CUDA_R_32F;
    case dtype::f16:
      return CUDA_R_16F;
    case dtype::bf16:
      return CUDA_R_16BF;
    default:
      return unsupported("dtype " + std::string(dtype_name(t)) + " has no cuBLAS path");
  }
}

const std::vector<dtype>& gpu_float_types() {
  // Every float kernel computes in fp32 whatever its storage type (bf16 included: cuBLASLt and
  // cuDNN with fp32 compute, own kernels through device_common.cuh's load/store).
  static const std::vector<dtype> t{dtype::f32, dtype::f16, dtype::bf16};
  return t;
}

const std::vector<dtype>& gpu_any_types() {
  static const std::vector<dtype> t{dtype::f32, dtype::f16, dtype::bf16,   dtype::f64, dtype::i8,
                                    dtype::u8,  dtype::i16, dtype::u16,    dtype::i32, dtype::u32,
                                    dtype::i64, dtype::u64, dtype::boolean};
  return t;
}

}  // namespace troupe::kernels::cuda
