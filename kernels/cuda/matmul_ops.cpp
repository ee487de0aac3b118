// CUDA MatMul, Gemm, troupe.FusedMatMul and troupe.FusedGemm through cuBLASLt.
//
// Row-major Y (M x N) = A (M x K) @ B (K x N) is the column-major product Y^T = B^T A^T, and a
// row-major matrix is its own transpose read column-major: cuBLASLt gets B as its first operand,
// A as its second and writes an N x M column-major D, which is Y row-major. No copies.
//
// Epilogues: bias (a vector over N, the rows of D) and Relu run inside cuBLASLt (BIAS, RELU,
// RELU_BIAS); the residual Z of FusedMatMul is cuBLASLt's C with beta = 1, so D = act(AB + Z +
// bias). Gelu is erf-based in ONNX while cuBLASLt's GELU is the tanh approximation: in fp32 Gelu
// and the other activations of FusedGemm run as one elementwise pass afterwards; in fp16/bf16 Gelu
// runs as cuBLASLt's GELU epilogue unless TROUPE_GELU_TANH=0 (see gelu_as_tanh).
//
// Batches: 3-D/4-D operands run as one strided-batched call; an operand whose batch dims are all
// 1 gets batch stride 0. When B is a plain matrix, A's batch dims fold into M (one larger GEMM).
// Batch dims that broadcast partially (A [2,1,..] with B [1,3,..]) run one call per batch.
//
// fp32 computes in fp32 (CUBLAS_COMPUTE_32F, no TF32); fp16 and bf16 (CUDA_R_16F / CUDA_R_16BF
// operands, bias and output) run on tensor cores with fp32 accumulation and fp32 alpha/beta.
//
// Algorithm choice: for 16-byte aligned operands, up to 8 candidates of cuBLASLt's heuristic are
// timed once per distinct problem at kernel creation and the fastest kept (its first pick is
// often not the fastest for transformer shapes); TROUPE_GEMM_AUTOTUNE=0 keeps the first pick.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/tensor.cuh"
#include "kernels/ops/nn_geometry.hpp"

namespace troupe::kernels::cuda {
namespace {

constexpr size_t kMaxMatmulWorkspaceBytes = size_t{32} << 20;
constexpr uint32_t kFastAlignmentBytes = 16;

template <class T, cublasStatus_t (*Destroy)(T)>
class lt_handle {
 public:
  lt_handle() = default;
  lt_handle(const lt_handle&) = delete;
  lt_handle& operator=(const lt_handle&) = delete;
  ~lt_handle() {
    if (h_) (void)Destroy(h_);
  }
  T get() const { return h_; }
  T* out() { return &h_; }

 private:
  T h_ = nullptr;
};
using matmul_desc = lt_handle<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using layout_desc = lt_handle<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using pref_desc = lt_handle<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

bool aligned(const void* p, uint32_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

/// Candidates cuBLASLt's heuristic offers for the aligned case, timed at creation: its first pick
/// is often not the fastest for transformer shapes (N = 3072 with an epilogue, M = 16384...).
constexpr int kAutotuneCandidates = 8;
constexpr int kAutotuneRuns = 3;

/// Whether an erf Gelu after an fp16/bf16 product runs as cuBLASLt's GELU epilogue, which is the
/// tanh approximation: |difference| <= 4.7e-4, below half an fp16 ulp (4.9e-4) for outputs of
/// magnitude 1 and more and below bf16's everywhere it matters, but a few percent of the value in
/// the far negative tail (x near -2.7, where GELU is -0.0094). Whole models do not move: BERT-base
/// fp16 against ONNX Runtime fp32 stays at the same relative L2 (bench/results/gpu-correctness.md).
/// It saves an elementwise pass over the product (BERT-base's FFN1 at batch 128 on an H100: about
/// 0.08 ms per layer, 1 ms of 7.3). TROUPE_GELU_TANH=0 keeps the exact erf pass; fp32 always
/// keeps it. TensorRT's Gelu and ONNX Runtime's FastGelu make the same trade.
bool gelu_as_tanh() {
  static const bool on = [] {
    const char* env = std::getenv("TROUPE_GELU_TANH");
    return !(env && std::string(env) == "0");
  }();
  return on;
}

/// TROUPE_GEMM_AUTOTUNE=0 keeps cuBLASLt's first pick (no timing at plan build).
bool autotune_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("TROUPE_GEMM_AUTOTUNE");
    return !(env && std::string(env) == "0");
  }();
  return on;
}

/// Device memory for timing only, stream-ordered from the device's default pool (not the
/// context's: its reservation would outlive the timing) and released when the holder goes. No
/// cudaMalloc/cudaFree: their device-wide synchronisation must not meet another thread's capture.
struct scratch_block {
  void* p = nullptr;
  cudaStream_t stream = nullptr;
  ~scratch_block() {
    if (p) (void)cudaFreeAsync(p, stream);
  }
};

class matmul_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& c);
  status compute(kernel_run_context& ctx) override;
  size_t workspace_bytes() const override { return workspace_bytes_; }
  bool reads_constant_input(int i) const override {
    if (i == 0) return !a_const_;
    if (i == 1) return !b_const_;
    if (i == 2) return bias_input_ == 2 || (c_input_ == 2 && !c_const_);
    return true;
  }

 private:
  explicit matmul_kernel(cuda_context* ctx) : ctx_(ctx) {}

  /// Describes the problem to cuBLASLt and picks an algorithm (fast: 16-byte aligned pointers;
  /// safe: any element-aligned pointers).
  status plan(const kernel_create_context& c, bool trans_a, bool trans_b, int64_t m, int64_t n,
              int64_t k, int64_t batch, int64_t a_stride, int64_t b_stride);
  /// Index of the candidate that runs this product fastest on the device (timed once on scratch
  /// operands; the choice is remembered per problem for the life of the process).
  expected<size_t> fastest(const std::vector<cublasLtMatmulHeuristicResult_t>& candidates,
                           int64_t m, int64_t n, int64_t k, int64_t batch, int64_t a_stride,
                           int64_t b_stride, bool trans_a, bool trans_b);

  cuda_context* ctx_;
  dtype type_ = dtype::f32;
  matmul_desc desc_;
  layout_desc a_layout_, b_layout_, c_layout_, d_layout_;  // cuBLASLt's A = our B, its B = our A
  cublasLtMatmulAlgo_t fast_algo_{}, safe_algo_{};
  bool has_fast_ = false;
  size_t workspace_bytes_ = 0;
  float alpha_ = 1.0f;
  float beta_ = 0.0f;

  // Operands: uploaded constants, else the run's inputs.
  device_buffer a_const_, b_const_, bias_const_, c_const_;
  int bias_input_ = -1;  // input index of a non-constant bias vector
  int c_input_ = -1;     // input index of C (Gemm) or Z (FusedMatMul) read through cuBLASLt's C
  bool c_is_output_ = false;  // Gemm's broadcast C is first expanded into Y, then C = D = Y
  strided_copy_plan c_expand_;
  bool has_c_ = false;

  // One call per batch when batch dims broadcast partially: element offsets of A and B.
  std::vector<int64_t> a_offsets_, b_offsets_;
  int64_t d_batch_elements_ = 0;

  activation post_;  // applied after cuBLASLt when its epilogues cannot express it
  int64_t out_elements_ = 0;
};

/// The uploaded constant when there is one, else the run's input `i`.
const void* const_or_input(const device_buffer& b, const kernel_run_context& ctx, size_t i) {
  return b ? b.get() : ctx.inputs[i].raw();
}

status matmul_kernel::plan(const kernel_create_context& c, bool trans_a, bool trans_b, int64_t m,
                           int64_t n, int64_t k, int64_t batch, int64_t a_stride,
                           int64_t b_stride) {
  TROUPE_ASSIGN_OR_RETURN(cudaDataType_t dt, cuda_type(type_));
  TROUPE_CUDA_CHECK(cublasLtMatmulDescCreate(desc_.out(), CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // cuBLASLt's first operand is our B: transposed when transB.
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  TROUPE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_TRANSA,
                                                   &op_first, sizeof(op_first)));
  TROUPE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_TRANSB,
                                                   &op_second, sizeof(op_second)));
  // Column-major shapes of the stored matrices.
  const uint64_t first_rows = static_cast<uint64_t>(trans_b ? k : n);
  const uint64_t first_cols = static_cast<uint64_t>(trans_b ? n : k);
  const uint64_t second_rows = static_cast<uint64_t>(trans_a ? m : k);
  const uint64_t second_cols = static_cast<uint64_t>(trans_a ? k : m);
  TROUPE_CUDA_CHECK(cublasLtMatrixLayoutCreate(a_layout_.out(), dt, first_rows, first_cols,
                                               static_cast<int64_t>(first_rows)));
  TROUPE_CUDA_CHECK(cublasLtMatrixLayoutCreate(b_layout_.out(), dt, second_rows, second_cols,
                                               static_cast<int64_t>(second_rows)));
  TROUPE_CUDA_CHECK(cublasLtMatrixLayoutCreate(c_layout_.out(), dt, static_cast<uint64_t>(n),
                                               static_cast<uint64_t>(m), n));
  TROUPE_CUDA_CHECK(cublasLtMatrixLayoutCreate(d_layout_.out(), dt, static_cast<uint64_t>(n),
                                               static_cast<uint64_t>(m), n));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    const int64_t d_stride = m * n;
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {{a_layout_.get(), b_stride},
                                                                  {b_layout_.get(), a_stride},
                                                                  {c_layout_.get(), d_stride},
                                                                  {d_layout_.get(), d_stride}};
    for (const auto& [layout, stride] : layouts) {
      TROUPE_CUDA_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                         &count, sizeof(count)));
      TROUPE_CUDA_CHECK(cublasLtMatrixLayoutSetAttribute(
          layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
  }

  // Epilogue inside cuBLASLt: bias and/or Relu, or GELU in its tanh form (exactly cuBLASLt's).
  const bool bias = bias_const_ || bias_input_ >= 0;
  const bool relu = post_.op == unary_op::relu;
  const bool gelu = post_.op == unary_op::gelu_tanh ||
                    (post_.op == unary_op::gelu && type_ != dtype::f32 && gelu_as_tanh());
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  if (bias && relu) {
    epilogue = CUBLASLT_EPILOGUE_RELU_BIAS;
  } else if (bias && gelu) {
    epilogue = CUBLASLT_EPILOGUE_GELU_BIAS;
  } else if (bias) {
    epilogue = CUBLASLT_EPILOGUE_BIAS;
  } else if (relu) {
    epilogue = CUBLASLT_EPILOGUE_RELU;
  } else if (gelu) {
    epilogue = CUBLASLT_EPILOGUE_GELU;
  }
  if (relu || gelu) post_.op = unary_op::identity;
  TROUPE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                   &epilogue, sizeof(epilogue)));
  if (bias) {
    // The bias pointer is set per run; heuristics need a non-null placeholder of the right kind.
    const void* placeholder = bias_const_ ? bias_const_.get() : reinterpret_cast<const void*>(256);
    TROUPE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &placeholder, sizeof(placeholder)));
  }
  // Two algorithms: one for 16-byte aligned operands (the usual case: pool and arena offsets
  // are aligned), one that accepts any element-aligned pointers; compute picks per call.
  pref_desc pref;
  TROUPE_CUDA_CHECK(cublasLtMatmulPreferenceCreate(pref.out()));
  const size_t max_ws = kMaxMatmulWorkspaceBytes;
  TROUPE_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof(max_ws)));
  auto heuristics = [&](uint32_t alignment,
                        int count) -> expected<std::vector<cublasLtMatmulHeuristicResult_t>> {
    for (auto attr :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      TROUPE_CUDA_CHECK(
          cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &alignment, sizeof(alignment)));
    }
    std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(count));
    int returned = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
        ctx_->cublas_lt(), desc_.get(), a_layout_.get(), b_layout_.get(), c_layout_.get(),
        d_layout_.get(), pref.get(), count, results.data(), &returned);
    // NOT_SUPPORTED: no algorithm under these constraints.
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && returned == 0)) {
      return std::vector<cublasLtMatmulHeuristicResult_t>{};
    }
    TROUPE_CUDA_CHECK(st);
    results.resize(static_cast<size_t>(returned));
    std::erase_if(results, [](const auto& r) { return r.state != CUBLAS_STATUS_SUCCESS; });
    return results;
  };
  TROUPE_ASSIGN_OR_RETURN(
      auto fast, heuristics(kFastAlignmentBytes, autotune_enabled() ? kAutotuneCandidates : 1));
  has_fast_ = !fast.empty();
  if (has_fast_) {
    size_t chosen = 0;
    if (fast.size() > 1) {
      TROUPE_ASSIGN_OR_RETURN(chosen,
                              fastest(fast, m, n, k, batch, a_stride, b_stride, trans_a, trans_b));
    }
    fast_algo_ = fast[chosen].algo;
    workspace_bytes_ = std::max(workspace_bytes_, fast[chosen].workspaceSize);
  }
  TROUPE_ASSIGN_OR_RETURN(auto safe, heuristics(static_cast<uint32_t>(dtype_size(type_)), 1));
  const bool has_safe = !safe.empty();
  if (has_safe) {
    safe_algo_ = safe[0].algo;
    workspace_bytes_ = std::max(workspace_bytes_, safe[0].workspaceSize);
  }
  if (!has_safe)
    return c.fail(error_code::unsupported, "cuBLASLt has no algorithm for this product");
  return status::ok();
}

expected<size_t> matmul_kernel::fastest(
    const std::vector<cublasLtMatmulHeuristicResult_t>& candidates, int64_t m, int64_t n, int64_t k,
    int64_t batch, int64_t a_stride, int64_t b_stride, bool trans_a, bool trans_b) {
  // Identical problems (the same layer shape repeated through a model) are timed once.
  static std::mutex mutex;
  static std::map<std::string, size_t> chosen;
  int32_t epilogue = 0;
  size_t size_written = 0;
  TROUPE_CUDA_CHECK(cublasLtMatmulDescGetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                   &epilogue, sizeof(epilogue), &size_written));
  const std::string key = std::to_string(ctx_->device()) + ":" + std::string(dtype_name(type_)) +
                          ":" + std::to_string(trans_a) + std::to_string(trans_b) + ":" +
                          std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                          ":" + std::to_string(batch) + ":" + std::to_string(a_stride) + ":" +
                          std::to_string(b_stride) + ":" + std::to_string(epilogue) + ":" +
                          std::to_string(has_c_) + ":" + std::to_string(candidates.size());
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = chosen.find(key); it != chosen.end() && it->second < candidates.size()) {
      return it->second;
    }
  }
  // Scratch operands of the problem's extent (batch strides included); any finite values.
  const size_t esize = dtype_size(type_);
  const int64_t calls = std::max<int64_t>(batch, 1);
  const size_t first = static_cast<size_t>(k * n + (calls - 1) * b_stride);
  const size_t second = static_cast<size_t>(m * k + (calls - 1) * a_stride);
  const size_t out = static_cast<size_t>(m * n * calls);
  size_t workspace = 0;
  for (const auto& r : candidates) workspace = std::max(workspace, r.workspaceSize);
  scratch_block a_buf, b_buf, d_buf, bias_buf, ws_buf;
  for (auto [block, bytes] :
       {std::pair{&a_buf, first * esize}, std::pair{&b_buf, second * esize},
        std::pair{&d_buf, out * esize}, std::pair{&bias_buf, static_cast<size_t>(n) * esize},
        std::pair{&ws_buf, workspace}}) {
    if (bytes == 0) continue;
    block->stream = ctx_->stream();
    if (cudaMallocAsync(&block->p, bytes, ctx_->stream()) != cudaSuccess) {
      block->p = nullptr;
      (void)cudaGetLastError();
      return size_t{0};  // no room to time: keep the heuristic's first pick
    }
    TROUPE_CUDA_CHECK(cudaMemsetAsync(block->p, 0x3c, bytes, ctx_->stream()));
  }
  const bool bias = bias_const_ || bias_input_ >= 0;
  if (bias && bias_input_ >= 0) {
    TROUPE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &bias_buf.p, sizeof(bias_buf.p)));
  }
  cudaEvent_t begin = nullptr, end = nullptr;
  TROUPE_CUDA_CHECK(cudaEventCreate(&begin));
  TROUPE_CUDA_CHECK(cudaEventCreate(&end));
  const float beta = has_c_ ? beta_ : 0.0f;
  size_t best = 0;
  float best_ms = 0.0f;
  bool any = false;
  for (size_t i = 0; i < candidates.size(); ++i) {
    auto call = [&] {
      return cublasLtMatmul(ctx_->cublas_lt(), desc_.get(), &alpha_, a_buf.p, a_layout_.get(),
                            b_buf.p, b_layout_.get(), &beta, d_buf.p, c_layout_.get(), d_buf.p,
                            d_layout_.get(), &candidates[i].algo, ws_buf.p,
                            candidates[i].workspaceSize, ctx_->stream());
    };
    if (call() != CUBLAS_STATUS_SUCCESS) continue;  // warm-up; a candidate that fails is skipped
    (void)cudaEventRecord(begin, ctx_->stream());
    bool ok = true;
    for (int r = 0; r < kAutotuneRuns && ok; ++r) ok = call() == CUBLAS_STATUS_SUCCESS;
    (void)cudaEventRecord(end, ctx_->stream());
    if (cudaEventSynchronize(end) != cudaSuccess || !ok) continue;
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, begin, end) != cudaSuccess) continue;
    if (!any || ms < best_ms) {
      best = i;
      best_ms = ms;
      any = true;
    }
  }
  (void)cudaEventDestroy(begin);
  (void)cudaEventDestroy(end);
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream()));
  TROUPE_CUDA_CHECK(cudaGetLastError());
  if (bias && bias_input_ >= 0) {
    const void* placeholder = reinterpret_cast<const void*>(256);
    TROUPE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &placeholder, sizeof(placeholder)));
  }
  std::lock_guard<std::mutex> lock(mutex);
  chosen[key] = best;
  return best;
}

expected<std::unique_ptr<kernel>> matmul_kernel::create(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(cuda_context * ctx, context_of(c));
  TROUPE_RETURN_IF_ERROR(ctx->make_current());
  std::unique_ptr<matmul_kernel> k(new matmul_kernel(ctx));
  const bool is_gemm = c.node.op_type == "Gemm" || c.node.op_type == "FusedGemm";
  const bool fused = c.node.domain == "troupe";
  if (!c.has_input(0) || !c.has_input(1))
    return c.fail(error_code::invalid_model, "A and B are required");
  const tensor_info& a = c.inputs[0];
  const tensor_info& b = c.inputs[1];
  k->type_ = a.type;
  k->out_elements_ = c.outputs[0].elements();
  if (fused) {
    TROUPE_ASSIGN_OR_RETURN(k->post_, fused_activation(c.node));
  }
  if (b.type != a.type && !c.value(1)) {
    return c.fail(error_code::unsupported, "B of another dtype than A must be a constant");
  }
  // Constant operands are uploaded now, converted to A's dtype.
  if (const tensor* v = c.value(0)) {
    TROUPE_ASSIGN_OR_RETURN(k->a_const_, device_buffer::shared_as(*ctx, *v, a.type));
  }
  if (const tensor* v = c.value(1)) {
    TROUPE_ASSIGN_OR_RETURN(k->b_const_, device_buffer::shared_as(*ctx, *v, a.type));
  }

  if (is_gemm) {
    const tensor_info none;
    const tensor_info& ci = c.has_input(2) ? c.inputs[2] : none;
    TROUPE_ASSIGN_OR_RETURN(gemm_geometry g, resolve_gemm(c.node, a, b, ci));
    k->alpha_ = g.alpha;
    if (ci.present() && g.beta != 0.0f) {
      const tensor* cv = c.value(2);
      const bool row_vector = (ci.rank() == 1 && ci.shape[0] == g.n) ||
                              (ci.rank() == 2 && ci.shape[0] == 1 && ci.shape[1] == g.n);
      if (row_vector && (g.beta == 1.0f || cv)) {
        // A bias over N: cuBLASLt's BIAS epilogue, beta folded into a constant bias.
        if (cv) {
          tensor scaled = tensor::allocate(dtype::f32, {g.n});
          for (int64_t i = 0; i < g.n; ++i) {
            scaled.data<float>()[i] = static_cast<float>(cv->value_as_double(i) * g.beta);
          }
          TROUPE_ASSIGN_OR_RETURN(k->bias_const_, device_buffer::upload_as(*ctx, scaled, a.type));
        } else {
          if (ci.type != a.type)
            return c.fail(error_code::unsupported, "C of another dtype than A");
          k->bias_input_ = 2;
        }
      } else {
        // Any other broadcast of C: expand it into Y first, then Y = alpha AB + beta Y.
        if (ci.type != a.type && !cv)
          return c.fail(error_code::unsupported, "C of another dtype than A");
        if (cv) {
          TROUPE_ASSIGN_OR_RETURN(k->c_const_, device_buffer::shared_as(*ctx, *cv, a.type));
        }
        k->c_input_ = 2;
        k->c_is_output_ = true;
        k->has_c_ = true;
        k->beta_ = g.beta;
        strided_copy_plan& p = k->c_expand_;
        p.rank = 2;
        p.out_elements = g.m * g.n;
        p.out_dims[0] = g.m;
        p.out_dims[1] = g.n;
        const int64_t cm = ci.rank() == 2 ? ci.shape[0] : 1;
        const int64_t cn = ci.rank() >= 1 ? ci.shape.back() : 1;
        p.in_strides[0] = cm == 1 ? 0 : cn;
        p.in_strides[1] = cn == 1 ? 0 : 1;
      }
    }
    TROUPE_RETURN_IF_ERROR(k->plan(c, g.trans_a, g.trans_b, g.m, g.n, g.k, 1, 0, 0));
  } else {
    TROUPE_ASSIGN_OR_RETURN(matmul_geometry g, resolve_matmul(c.node, a, b));
    if (fused && c.has_input(2)) {
      if (c.inputs[2].elements() != g.n)
        return c.fail(error_code::invalid_model, "bias must have N elements");
      if (const tensor* v = c.value(2)) {
        TROUPE_ASSIGN_OR_RETURN(k->bias_const_, device_buffer::shared_as(*ctx, *v, a.type));
      } else {
        k->bias_input_ = 2;
      }
    }
    if (fused && c.has_input(3)) {
      if (c.inputs[3].shape != c.outputs[0].shape || c.inputs[3].type != a.type) {
        return c.fail(error_code::unsupported, "Z must have the output's shape and dtype");
      }
      k->c_input_ = 3;
      k->has_c_ = true;
      k->beta_ = 1.0f;
    }
    const int64_t batch = element_count(g.batch);
    const bool a_full = g.a_batch == g.batch, b_full = g.b_batch == g.batch;
    const bool a_one = element_count(g.a_batch) == 1, b_one = element_count(g.b_batch) == 1;
    int64_t m = g.m, calls_batch = batch, a_stride = g.m * g.k, b_stride = g.k * g.n;
    if (b_one && a_full) {
      m = g.m * batch;  // A's batch dims fold into M: [batch * M, K] @ [K, N]
      calls_batch = 1;
    } else if ((a_full || a_one) && (b_full || b_one)) {
      if (a_one) a_stride = 0;
      if (b_one) b_stride = 0;
    } else {
      // Partial broadcast: one call per output batch, offsets walked like an odometer.
      calls_batch = 1;
      const size_t r = g.batch.size();
      std::vector<int64_t> idx(r, 0);
      for (int64_t i = 0; i < batch; ++i) {
        int64_t ao = 0, bo = 0, as = 1, bs = 1;
        for (size_t d = r; d-- > 0;) {
          ao += (g.a_batch[d] == 1 ? 0 : idx[d]) * as;
          bo += (g.b_batch[d] == 1 ? 0 : idx[d]) * bs;
          as *= g.a_batch[d];
          bs *= g.b_batch[d];
        }
        k->a_offsets_.push_back(ao * g.m * g.k);
        k->b_offsets_.push_back(bo * g.k * g.n);
        for (size_t d = r; d-- > 0;) {
          if (++idx[d] < g.batch[d]) break;
          idx[d] = 0;
        }
      }
      k->d_batch_elements_ = g.m * g.n;
    }
    TROUPE_RETURN_IF_ERROR(k->plan(c, false, false, m, g.n, g.k, calls_batch, a_stride, b_stride));
  }
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(ctx->stream()));
  return std::unique_ptr<kernel>(std::move(k));
}

status matmul_kernel::compute(kernel_run_context& ctx) {
  const cudaStream_t s = to_stream(ctx.stream);
  const void* a = const_or_input(a_const_, ctx, 0);
  const void* b = const_or_input(b_const_, ctx, 1);
  void* d = ctx.outputs[0].raw();
  const void* c = d;
  if (has_c_) {
    const void* source =
        c_const_ ? c_const_.get() : ctx.inputs[static_cast<size_t>(c_input_)].raw();
    if (c_is_output_) {
      TROUPE_RETURN_IF_ERROR(launch_strided_copy(dtype_size(type_), source, d, c_expand_, s));
    } else {
      c = source;
    }
  }
  if (bias_input_ >= 0) {
    const void* bias = ctx.inputs[static_cast<size_t>(bias_input_)].raw();
    TROUPE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(desc_.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &bias, sizeof(bias)));
  }
  const float beta = has_c_ ? beta_ : 0.0f;
  const size_t esize = dtype_size(type_);
  auto run = [&](const void* first, const void* second, const void* cc, void* dd) -> status {
    const bool fast = has_fast_ && aligned(first, kFastAlignmentBytes) &&
                      aligned(second, kFastAlignmentBytes) && aligned(cc, kFastAlignmentBytes) &&
                      aligned(dd, kFastAlignmentBytes);
    TROUPE_CUDA_CHECK(
        cublasLtMatmul(ctx_->cublas_lt(), desc_.get(), &alpha_, first, a_layout_.get(), second,
                       b_layout_.get(), &beta, cc, c_layout_.get(), dd, d_layout_.get(),
                       fast ? &fast_algo_ : &safe_algo_, ctx.workspace, workspace_bytes_, s));
    return status::ok();
  };
  if (a_offsets_.empty()) {
    TROUPE_RETURN_IF_ERROR(run(b, a, c, d));
  } else {
    const auto* a8 = static_cast<const uint8_t*>(a);
    const auto* b8 = static_cast<const uint8_t*>(b);
    const auto* c8 = static_cast<const uint8_t*>(c);
    auto* d8 = static_cast<uint8_t*>(d);
    for (size_t i = 0; i < a_offsets_.size(); ++i) {
      const size_t d_off = i * static_cast<size_t>(d_batch_elements_) * esize;
      TROUPE_RETURN_IF_ERROR(run(b8 + static_cast<size_t>(b_offsets_[i]) * esize,
                                 a8 + static_cast<size_t>(a_offsets_[i]) * esize, c8 + d_off,
                                 d8 + d_off));
    }
  }
  if (post_.op == unary_op::identity) return status::ok();
  epilogue_params p;
  p.type = type_;
  p.y = d;
  p.n = out_elements_;
  p.act = post_;
  return launch_epilogue(p, s);
}

}  // namespace

void register_matmul(kernel_registry& r) {
  for (const char* op : {"MatMul", "Gemm"}) {
    r.add({"", op, backend::cuda, gpu_float_types(), 0, {}, matmul_kernel::create});
  }
  for (const char* op : {"FusedMatMul", "FusedGemm"}) {
    r.add({"troupe", op, backend::cuda, gpu_float_types(), 0, {}, matmul_kernel::create});
  }
}

}  // namespace troupe::kernels::cuda
