// CUDA Conv and troupe.FusedConv through cuDNN, MaxPool/AveragePool (own kernel) and
// BatchNormalization in inference (folded to a per-channel affine map at create time).
//
// Conv: descriptors, weights and bias (uploaded), the algorithm and the workspace size are fixed
// at create time. Two ways to run the epilogue (bias, residual Z, activation): inside
// cudnnConvolutionBiasActivationForward (Relu with any algorithm, identity with the
// implicit-precomp-GEMM one) or as cudnnConvolutionForward followed by one elementwise pass (every
// activation). Which is faster depends on the shape, so create times the candidates (cuDNN's
// heuristic ranking, in each mode that applies) on the GPU alone and keeps the fastest;
// TROUPE_CUDNN_SEARCH=heuristic takes cuDNN's first choice instead. fp32 convolutions use FMA
// math (no TF32: results match the CPU to 1e-5); fp16 ones use tensor cores with fp32
// accumulation. Repeated computes on the same pointers replay a per-kernel CUDA graph (see
// conv_kernel::graphs_).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/pool.cuh"
#include "kernels/cuda/tensor.cuh"
#include "kernels/ops/nn_geometry.hpp"

namespace troupe::kernels::cuda {
namespace {

constexpr size_t kMaxConvWorkspaceBytes = size_t{512} << 20;
constexpr size_t kMaxCandidateAlgos = 6;  // of cuDNN's ranked list, timed at create
constexpr size_t kWorkspaceAlign = 256;

size_t align_up(size_t n) {
  return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

template <class T, cudnnStatus_t (*Destroy)(T)>
class cudnn_descriptor {
 public:
  cudnn_descriptor() = default;
  cudnn_descriptor(const cudnn_descriptor&) = delete;
  cudnn_descriptor& operator=(const cudnn_descriptor&) = delete;
  ~cudnn_descriptor() {
    if (d_) (void)Destroy(d_);
  }
  T get() const { return d_; }
  T* out() { return &d_; }

 private:
  T d_ = nullptr;
};
using tensor_desc = cudnn_descriptor<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor>;
using filter_desc = cudnn_descriptor<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor>;
using conv_desc = cudnn_descriptor<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>;
using act_desc = cudnn_descriptor<cudnnActivationDescriptor_t, cudnnDestroyActivationDescriptor>;

status set_tensor_desc(tensor_desc& d, cudnnDataType_t t, const std::vector<int>& dims) {
  TROUPE_CUDA_CHECK(cudnnCreateTensorDescriptor(d.out()));
  std::vector<int> strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  TROUPE_CUDA_CHECK(cudnnSetTensorNdDescriptor(d.get(), t, static_cast<int>(dims.size()),
                                               dims.data(), strides.data()));
  return status::ok();
}

// ---- Conv --------------------------------------------------------------------------------------

class conv_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& c);
  ~conv_kernel() override;
  status compute(kernel_run_context& ctx) override;
  size_t workspace_bytes() const override { return workspace_bytes_; }
  bool reads_constant_input(int i) const override {
    if (i == 1) return !weights_;
    if (i == 2) return bias_is_input_;
    return true;
  }

 private:
  explicit conv_kernel(cuda_context* ctx) : ctx_(ctx) {}

  /// The pointers one compute works on.
  struct operands {
    const void* x = nullptr;
    const void* w = nullptr;
    const void* bias = nullptr;
    const void* z = nullptr;
    void* y = nullptr;
    void* ws = nullptr;
    bool operator==(const operands&) const = default;
  };
  /// The convolution and its epilogue with the current algorithm and mode, on padded input.
  status run(const void* x, const void* w, const void* bias, const void* z, void* y, void* ws,
             cudaStream_t s);
  /// The input padding (if any), the convolution and its epilogue.
  status run_all(const operands& o, cudaStream_t s);
  /// Picks algorithm and mode (fused call or conv + epilogue) by timing the candidates once.
  status choose_algorithm(const kernel_create_context& c, const std::vector<int64_t>& x_shape);
  bool needs_epilogue() const { return has_bias_ || has_z_ || act_.op != unary_op::identity; }

  cuda_context* ctx_;
  dtype type_ = dtype::f32;
  tensor_desc x_desc_, y_desc_, bias_desc_;
  filter_desc w_desc_;
  conv_desc conv_desc_;
  act_desc act_desc_;
  act_desc identity_desc_;
  cudnnConvolutionFwdAlgo_t algo_ = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  cudnnMathType_t math_ = CUDNN_FMA_MATH;
  size_t conv_workspace_bytes_ = 0;
  size_t workspace_bytes_ = 0;
  device_buffer weights_;  // uploaded constant W (else W is read from the run's input 1)
  device_buffer bias_;     // uploaded constant B, or zeros for the fused call without B
  bool bias_is_input_ = false;
  bool has_bias_ = false;
  bool has_z_ = false;
  // cudnnConvolutionBiasActivationForward does bias, Z and the activation (Relu, or identity
  // with the implicit-precomp-GEMM algorithm); else cudnnConvolutionForward and an epilogue pass.
  bool fused_ = false;
  activation act_;
  int64_t channels_ = 0;     // M
  int64_t out_spatial_ = 1;  // product of the output's spatial dims
  int64_t out_elements_ = 0;
  // Asymmetric pads: X is first copied, zero-padded, into the workspace (after the conv's part).
  bool prepad_ = false;
  strided_copy_plan prepad_plan_;
  size_t prepad_offset_ = 0;

  // cuDNN's legacy calls cost 25-200 us of host time each, several times the GPU time of a
  // typical fp16 convolution. Once the same pointers come twice, the calls are captured into a
  // CUDA graph and replayed (a few us of host time). Capture happens at compute, outside any
  // capture of the caller's; TROUPE_CUDNN_GRAPHS=0 turns it off.
  struct graph_entry {
    operands key;
    cudaGraphExec_t exec;
  };
  static constexpr size_t kMaxGraphs = 4;
  std::vector<graph_entry> graphs_;
  operands last_uncaptured_;
  bool graphs_off_ = false;
};

expected<std::vector<int>> to_int_dims(const kernel_create_context& c, const shape_t& s) {
  std::vector<int> d;
  for (int64_t v : s) {
    if (v > INT32_MAX) return c.fail(error_code::unsupported, "a dimension above 2^31 for cuDNN");
    d.push_back(static_cast<int>(v));
  }
  return d;
}

expected<std::unique_ptr<kernel>> conv_kernel::create(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(cuda_context * ctx, context_of(c));
  TROUPE_RETURN_IF_ERROR(ctx->make_current());
  std::unique_ptr<conv_kernel> k(new conv_kernel(ctx));
  const bool fused = c.node.domain == "troupe";
  if (!c.has_input(1)) return c.fail(error_code::invalid_model, "W is required");
  const tensor_info& x = c.inputs[0];
  const tensor_info& w = c.inputs[1];
  const tensor_info& y = c.outputs[0];
  k->type_ = x.type;
  if (x.rank() < 3 || x.rank() > 5 || w.rank() != x.rank()) {
    return c.fail(error_code::unsupported, "the cuda backend runs 1-D, 2-D and 3-D convolutions");
  }
  if (w.type != x.type && !c.value(1)) {
    return c.fail(error_code::unsupported, "W of another dtype than X must be a constant");
  }
  TROUPE_ASSIGN_OR_RETURN(conv_geometry g, resolve_conv(c.node, x, w));
  if (g.output_shape != y.shape) {
    return c.fail(error_code::internal, "output shape " + y.to_string() + " differs from Conv's " +
                                            shape_to_string(g.output_shape));
  }
  k->has_bias_ = c.has_input(2);
  k->has_z_ = fused && c.has_input(3);
  if (k->has_bias_ && c.inputs[2].elements() != w.shape[0]) {
    return c.fail(error_code::invalid_model, "B must have M elements");
  }
  if (k->has_z_ && (c.inputs[3].shape != y.shape || c.inputs[3].type != y.type)) {
    return c.fail(error_code::unsupported, "Z must have the output's shape and dtype");
  }
  if (fused) {
    TROUPE_ASSIGN_OR_RETURN(k->act_, fused_activation(c.node));
  }
  k->channels_ = w.shape[0];
  k->out_elements_ = y.elements();
  for (size_t i = 2; i < y.rank(); ++i) k->out_spatial_ *= y.shape[i];

  // cuDNN wants 4-D or 5-D: a 1-D convolution runs as 2-D with a height of 1.
  shape_t xs = x.shape, ws = w.shape, ys = y.shape;
  std::vector<int64_t> stride = g.strides, dilation = g.dilations, pb = g.pads_begin,
                       pe = g.pads_end;
  if (x.rank() == 3) {
    xs.insert(xs.begin() + 2, 1);
    ws.insert(ws.begin() + 2, 1);
    ys.insert(ys.begin() + 2, 1);
    stride.insert(stride.begin(), 1);
    dilation.insert(dilation.begin(), 1);
    pb.insert(pb.begin(), 0);
    pe.insert(pe.begin(), 0);
  }
  const size_t sp = xs.size() - 2;
  const bool symmetric = pb == pe;
  shape_t conv_in = xs;  // what cuDNN sees as X
  if (!symmetric) {
    // cuDNN pads symmetrically only: pad X explicitly into the workspace, then convolve unpadded.
    k->prepad_ = true;
    strided_copy_plan& p = k->prepad_plan_;
    p.rank = static_cast<int>(xs.size());
    p.bounded = true;
    int64_t stride_el = 1;
    for (size_t d = xs.size(); d-- > 0;) {
      const int64_t before = d >= 2 ? pb[d - 2] : 0;
      const int64_t after = d >= 2 ? pe[d - 2] : 0;
      conv_in[d] = xs[d] + before + after;
      p.out_dims[d] = conv_in[d];
      p.in_strides[d] = stride_el;
      p.in_start[d] = -before;
      p.in_dims[d] = xs[d];
      stride_el *= xs[d];
    }
    p.out_elements = element_count(conv_in);
    std::fill(pb.begin(), pb.end(), 0);
  }
  TROUPE_ASSIGN_OR_RETURN(cudnnDataType_t dt, cudnn_type(x.type));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> xd, to_int_dims(c, conv_in));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> wd, to_int_dims(c, ws));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> yd, to_int_dims(c, ys));
  TROUPE_RETURN_IF_ERROR(set_tensor_desc(k->x_desc_, dt, xd));
  TROUPE_RETURN_IF_ERROR(set_tensor_desc(k->y_desc_, dt, yd));
  TROUPE_CUDA_CHECK(cudnnCreateFilterDescriptor(k->w_desc_.out()));
  TROUPE_CUDA_CHECK(cudnnSetFilterNdDescriptor(k->w_desc_.get(), dt, CUDNN_TENSOR_NCHW,
                                               static_cast<int>(wd.size()), wd.data()));
  std::vector<int> pad_i(sp), stride_i(sp), dil_i(sp);
  for (size_t i = 0; i < sp; ++i) {
    pad_i[i] = static_cast<int>(pb[i]);
    stride_i[i] = static_cast<int>(stride[i]);
    dil_i[i] = static_cast<int>(dilation[i]);
  }
  TROUPE_CUDA_CHECK(cudnnCreateConvolutionDescriptor(k->conv_desc_.out()));
  TROUPE_CUDA_CHECK(cudnnSetConvolutionNdDescriptor(k->conv_desc_.get(), static_cast<int>(sp),
                                                    pad_i.data(), stride_i.data(), dil_i.data(),
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  TROUPE_CUDA_CHECK(cudnnSetConvolutionGroupCount(k->conv_desc_.get(), static_cast<int>(g.group)));
  const cudnnMathType_t math = x.type == dtype::f16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  TROUPE_CUDA_CHECK(cudnnSetConvolutionMathType(k->conv_desc_.get(), math));

  std::vector<int> check(xd.size());
  TROUPE_CUDA_CHECK(
      cudnnGetConvolutionNdForwardOutputDim(k->conv_desc_.get(), k->x_desc_.get(), k->w_desc_.get(),
                                            static_cast<int>(check.size()), check.data()));
  if (check != yd) {
    return c.fail(error_code::internal,
                  "cuDNN's output shape differs from the inferred " + shape_to_string(y.shape));
  }

  // Constants first: the algorithm is timed on the real weights. W and B are converted to X's
  // dtype where they differ; without B the fused call gets zeros.
  if (const tensor* wv = c.value(1)) {
    TROUPE_ASSIGN_OR_RETURN(k->weights_, device_buffer::upload_as(*ctx, *wv, x.type));
  }
  if (k->has_bias_) {
    if (const tensor* bv = c.value(2)) {
      TROUPE_ASSIGN_OR_RETURN(k->bias_, device_buffer::upload_as(*ctx, *bv, x.type));
    } else if (c.inputs[2].type != x.type) {
      return c.fail(error_code::unsupported, "B of another dtype than X must be a constant");
    } else {
      k->bias_is_input_ = true;
    }
  } else {
    TROUPE_ASSIGN_OR_RETURN(
        k->bias_,
        device_buffer::allocate(*ctx, static_cast<size_t>(k->channels_) * dtype_size(x.type)));
    TROUPE_CUDA_CHECK(cudaMemsetAsync(k->bias_.get(), 0, k->bias_.bytes(), ctx->stream()));
  }
  std::vector<int> bd(xd.size(), 1);
  bd[1] = static_cast<int>(k->channels_);
  TROUPE_RETURN_IF_ERROR(set_tensor_desc(k->bias_desc_, dt, bd));
  TROUPE_CUDA_CHECK(cudnnCreateActivationDescriptor(k->act_desc_.out()));
  TROUPE_CUDA_CHECK(cudnnSetActivationDescriptor(k->act_desc_.get(), CUDNN_ACTIVATION_RELU,
                                                 CUDNN_PROPAGATE_NAN, 0.0));
  TROUPE_CUDA_CHECK(cudnnCreateActivationDescriptor(k->identity_desc_.out()));
  TROUPE_CUDA_CHECK(cudnnSetActivationDescriptor(k->identity_desc_.get(), CUDNN_ACTIVATION_IDENTITY,
                                                 CUDNN_PROPAGATE_NAN, 0.0));

  TROUPE_RETURN_IF_ERROR(k->choose_algorithm(c, conv_in));
  const char* graphs = std::getenv("TROUPE_CUDNN_GRAPHS");
  k->graphs_off_ = graphs && std::string(graphs) == "0";
  k->workspace_bytes_ = align_up(k->conv_workspace_bytes_);
  if (k->prepad_) {
    k->prepad_offset_ = k->workspace_bytes_;
    k->workspace_bytes_ +=
        align_up(static_cast<size_t>(k->prepad_plan_.out_elements) * dtype_size(x.type));
  }
  // Uploads were enqueued on the context's stream; runs may use another stream.
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(ctx->stream()));
  return std::unique_ptr<kernel>(std::move(k));
}

status conv_kernel::choose_algorithm(const kernel_create_context& c,
                                     const std::vector<int64_t>& x_shape) {
  cudnnHandle_t h = ctx_->cudnn();
  const cudaStream_t s = ctx_->stream();
  TROUPE_RETURN_IF_ERROR(ctx_->bind_cudnn_stream(s));
  // Candidate algorithms: cuDNN's heuristics, most promising first (cudnnFind... would time them
  // too, but with host overhead included and each on a fresh allocation: the timing below is ours).
  constexpr int kAlgos = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  struct candidate {
    cudnnConvolutionFwdAlgo_t algo;
    cudnnMathType_t math;
    size_t workspace;
    bool fused;
  };
  std::vector<candidate> algos;
  auto consider = [&](const cudnnConvolutionFwdAlgoPerf_t& p) {
    if (p.status != CUDNN_STATUS_SUCCESS) return;
    // fp32 stays off tensor cores (TF32 would lose the CPU backend's precision).
    if (type_ == dtype::f32 && p.mathType == CUDNN_TENSOR_OP_MATH) return;
    for (const auto& a : algos) {
      if (a.algo == p.algo && a.math == p.mathType) return;
    }
    if (!TROUPE_CUDA_STATUS(cudnnSetConvolutionMathType(conv_desc_.get(), p.mathType)).is_ok())
      return;
    size_t bytes = 0;
    if (!TROUPE_CUDA_STATUS(cudnnGetConvolutionForwardWorkspaceSize(h, x_desc_.get(), w_desc_.get(),
                                                                    conv_desc_.get(), y_desc_.get(),
                                                                    p.algo, &bytes))
             .is_ok() ||
        bytes > kMaxConvWorkspaceBytes) {
      return;
    }
    algos.push_back({p.algo, p.mathType, bytes, false});
  };
  const char* search = std::getenv("TROUPE_CUDNN_SEARCH");
  const bool benchmark = !(search && std::string(search) == "heuristic");
  cudnnConvolutionFwdAlgoPerf_t perf[kAlgos];
  int returned = 0;
  TROUPE_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
      h, x_desc_.get(), w_desc_.get(), conv_desc_.get(), y_desc_.get(), kAlgos, &returned, perf));
  for (int i = 0; i < returned && algos.size() < kMaxCandidateAlgos; ++i) consider(perf[i]);
  if (algos.empty())
    return c.fail(error_code::unsupported, "cuDNN has no algorithm for this convolution");

  // Modes: the fused call takes Relu with any algorithm, identity with implicit-precomp GEMM only;
  // conv + epilogue takes everything.
  std::vector<candidate> candidates;
  const bool relu = act_.op == unary_op::relu;
  const bool identity = act_.op == unary_op::identity;
  for (const auto& a : algos) {
    if (relu || (identity && needs_epilogue() &&
                 a.algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)) {
      candidates.push_back({a.algo, a.math, a.workspace, true});
    }
    candidates.push_back(a);
  }
  auto select = [&](const candidate& k) -> status {
    algo_ = k.algo;
    math_ = k.math;
    conv_workspace_bytes_ = k.workspace;
    fused_ = k.fused;
    TROUPE_CUDA_CHECK(cudnnSetConvolutionMathType(conv_desc_.get(), k.math));
    return status::ok();
  };
  if (!benchmark || candidates.size() == 1) return select(candidates.front());

  // Time each candidate on scratch buffers (zeros: no denormal or NaN slow paths): one warm-up
  // call, then the best of three. The first failing candidate is skipped, not fatal.
  const size_t es = dtype_size(type_);
  size_t max_ws = 0;
  for (const auto& k : candidates) max_ws = std::max(max_ws, k.workspace);
  TROUPE_ASSIGN_OR_RETURN(device_buffer x,
                          device_buffer::allocate(*ctx_, element_count(x_shape) * es));
  TROUPE_ASSIGN_OR_RETURN(device_buffer y, device_buffer::allocate(*ctx_, out_elements_ * es));
  TROUPE_ASSIGN_OR_RETURN(device_buffer ws,
                          device_buffer::allocate(*ctx_, std::max<size_t>(max_ws, 1)));
  device_buffer w_scratch, z, b_scratch;
  if (!weights_) {
    TROUPE_ASSIGN_OR_RETURN(w_scratch, device_buffer::allocate(*ctx_, c.inputs[1].elements() * es));
    TROUPE_CUDA_CHECK(cudaMemsetAsync(w_scratch.get(), 0, w_scratch.bytes(), s));
  }
  if (has_z_) {
    TROUPE_ASSIGN_OR_RETURN(z, device_buffer::allocate(*ctx_, out_elements_ * es));
    TROUPE_CUDA_CHECK(cudaMemsetAsync(z.get(), 0, z.bytes(), s));
  }
  if (bias_is_input_) {
    TROUPE_ASSIGN_OR_RETURN(b_scratch, device_buffer::allocate(*ctx_, channels_ * es));
    TROUPE_CUDA_CHECK(cudaMemsetAsync(b_scratch.get(), 0, b_scratch.bytes(), s));
  }
  {
    // Random-looking input (a hash of the index, in [-1, 1)): timings on zeros can flatter
    // algorithms whose speed depends on the data.
    std::vector<uint8_t> host(x.bytes());
    uint32_t state = 12345;
    for (size_t i = 0; i + es <= host.size(); i += es) {
      state = state * 1664525u + 1013904223u;
      const float v = static_cast<float>(state >> 8) / 8388608.0f - 1.0f;
      if (type_ == dtype::f16) {
        const uint16_t hv = half_bits(v);
        std::memcpy(&host[i], &hv, 2);
      } else {
        std::memcpy(&host[i], &v, 4);
      }
    }
    TROUPE_CUDA_CHECK(cudaMemcpy(x.get(), host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  const void* wp = weights_ ? weights_.get() : w_scratch.get();
  const void* bp = bias_is_input_ ? b_scratch.get() : bias_.get();
  cudaEvent_t start = nullptr, stop = nullptr;
  TROUPE_CUDA_CHECK(cudaEventCreate(&start));
  TROUPE_CUDA_CHECK(cudaEventCreate(&stop));
  const bool debug = std::getenv("TROUPE_CUDNN_DEBUG") != nullptr;
  float best_ms = 0;
  int best = -1;
  constexpr int kRuns = 3;
  for (size_t i = 0; i < candidates.size(); ++i) {
    TROUPE_RETURN_IF_ERROR(select(candidates[i]));
    const auto warm_start = std::chrono::steady_clock::now();
    if (!run(x.get(), wp, bp, z.get(), y.get(), ws.get(), s).is_ok()) continue;
    const auto host_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - warm_start)
                             .count();
    float ms = -1;
    // cuDNN's legacy calls cost tens of microseconds of host time each: hold the stream for
    // longer than enqueueing the timed calls takes, so that they queue up and the events measure
    // GPU time only (what the per-kernel CUDA graph replays).
    const int64_t delay_ns = std::clamp<int64_t>(2 * kRuns * host_ns, 50'000, 20'000'000);
    TROUPE_RETURN_IF_ERROR(launch_delay(static_cast<uint64_t>(delay_ns), s));
    (void)cudaEventRecord(start, s);
    bool ok = true;
    for (int rep = 0; rep < kRuns && ok; ++rep) {
      ok = run(x.get(), wp, bp, z.get(), y.get(), ws.get(), s).is_ok();
    }
    (void)cudaEventRecord(stop, s);
    if (ok && TROUPE_CUDA_STATUS(cudaEventSynchronize(stop)).is_ok() &&
        TROUPE_CUDA_STATUS(cudaEventElapsedTime(&ms, start, stop)).is_ok()) {
      ms /= kRuns;
    } else {
      ms = -1;
    }
    if (debug) {
      std::fprintf(stderr, "[troupe cudnn] %s algo %d math %d %s ws %zu: %.1f us\n",
                   c.node.describe().c_str(), static_cast<int>(candidates[i].algo),
                   static_cast<int>(candidates[i].math), candidates[i].fused ? "fused" : "plain",
                   candidates[i].workspace, ms * 1000.0f);
    }
    if (ms >= 0 && (best < 0 || ms < best_ms)) {
      best = static_cast<int>(i);
      best_ms = ms;
    }
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  (void)cudaGetLastError();
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(s));
  if (best < 0)
    return c.fail(error_code::unsupported, "no cuDNN algorithm ran for this convolution");
  if (debug) {
    std::fprintf(stderr, "[troupe cudnn] chosen: algo %d math %d %s, %.1f us\n",
                 static_cast<int>(candidates[static_cast<size_t>(best)].algo),
                 static_cast<int>(candidates[static_cast<size_t>(best)].math),
                 candidates[static_cast<size_t>(best)].fused ? "fused" : "plain",
                 best_ms * 1000.0f);
  }
  return select(candidates[static_cast<size_t>(best)]);
}

status conv_kernel::run(const void* x, const void* w, const void* bias, const void* z, void* y,
                        void* ws, cudaStream_t s) {
  const float one = 1.0f, zero = 0.0f;
  if (fused_) {
    // Without Z, y stands in for it with alpha2 = 0 (as ONNX Runtime's fused Conv does).
    const float alpha2 = z ? 1.0f : 0.0f;
    TROUPE_CUDA_CHECK(cudnnConvolutionBiasActivationForward(
        ctx_->cudnn(), &one, x_desc_.get(), x, w_desc_.get(), w, conv_desc_.get(), algo_, ws,
        conv_workspace_bytes_, &alpha2, y_desc_.get(), z ? z : y, bias_desc_.get(), bias,
        act_.op == unary_op::relu ? act_desc_.get() : identity_desc_.get(), y_desc_.get(), y));
    return status::ok();
  }
  TROUPE_CUDA_CHECK(cudnnConvolutionForward(ctx_->cudnn(), &one, x_desc_.get(), x, w_desc_.get(), w,
                                            conv_desc_.get(), algo_, ws, conv_workspace_bytes_,
                                            &zero, y_desc_.get(), y));
  if (!needs_epilogue()) return status::ok();
  epilogue_params p;
  p.type = type_;
  p.y = y;
  p.n = out_elements_;
  p.bias = has_bias_ ? bias : nullptr;
  p.bias_len = channels_;
  p.bias_inner = out_spatial_;
  p.z = z;
  p.act = act_;
  return launch_epilogue(p, s);
}

status conv_kernel::run_all(const operands& o, cudaStream_t s) {
  const void* x = o.x;
  if (prepad_) {
    void* padded = static_cast<uint8_t*>(o.ws) + prepad_offset_;
    TROUPE_RETURN_IF_ERROR(launch_strided_copy(dtype_size(type_), x, padded, prepad_plan_, s));
    x = padded;
  }
  return run(x, o.w, o.bias, o.z, o.y, o.ws, s);
}

status conv_kernel::compute(kernel_run_context& ctx) {
  const cudaStream_t s = to_stream(ctx.stream);
  TROUPE_RETURN_IF_ERROR(ctx_->bind_cudnn_stream(s));
  operands o;
  o.x = ctx.inputs[0].raw();
  o.w = weights_ ? weights_.get() : ctx.inputs[1].raw();
  o.bias = bias_is_input_ ? ctx.inputs[2].raw() : bias_.get();
  o.z = has_z_ ? ctx.inputs[3].raw() : nullptr;
  o.y = ctx.outputs[0].raw();
  o.ws = ctx.workspace;
  if (graphs_off_) return run_all(o, s);
  // Inside someone else's capture (a whole-plan CUDA graph) the calls are simply recorded.
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  TROUPE_CUDA_CHECK(cudaStreamIsCapturing(s, &capturing));
  if (capturing != cudaStreamCaptureStatusNone) return run_all(o, s);
  for (const auto& g : graphs_) {
    if (g.key == o) {
      TROUPE_CUDA_CHECK(cudaGraphLaunch(g.exec, s));
      return status::ok();
    }
  }
  // First sight of these pointers: run directly (and warm up cuDNN); on the second, capture.
  if (!(last_uncaptured_ == o)) {
    last_uncaptured_ = o;
    return run_all(o, s);
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool captured = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  const status ran = captured ? run_all(o, s) : status::ok();
  if (captured) captured = cudaStreamEndCapture(s, &graph) == cudaSuccess && ran.is_ok();
  if (captured) captured = cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  if (graph) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();
  if (!captured) {
    // cuDNN refused capture for this configuration: stay with direct calls.
    if (exec) (void)cudaGraphExecDestroy(exec);
    graphs_off_ = true;
    return run_all(o, s);
  }
  if (graphs_.size() == kMaxGraphs) {
    (void)cudaGraphExecDestroy(graphs_.front().exec);
    graphs_.erase(graphs_.begin());
  }
  graphs_.push_back({o, exec});
  TROUPE_CUDA_CHECK(cudaGraphLaunch(exec, s));
  return status::ok();
}

conv_kernel::~conv_kernel() {
  for (const auto& g : graphs_) (void)cudaGraphExecDestroy(g.exec);
}

// ---- pooling -----------------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_pool(const kernel_create_context& c) {
  const bool is_max = c.node.op_type == "MaxPool";
  const shape_t& in = c.inputs[0].shape;
  const shape_t& out = c.outputs[0].shape;
  if (in.size() < 3 || in.size() > 5) {
    return c.fail(error_code::unsupported, "the cuda backend pools over 1 to 3 spatial axes");
  }
  if (is_max && c.outputs.size() > 1 && c.outputs[1].present()) {
    return c.fail(error_code::unsupported, "MaxPool's Indices output on the cuda backend");
  }
  if (is_max && c.node.attrs.get_int("storage_order", 0) != 0) {
    return c.fail(error_code::unsupported, "MaxPool storage_order=1");
  }
  TROUPE_ASSIGN_OR_RETURN(pool_geometry g, resolve_pool(c.node, c.inputs[0]));
  if (g.output_shape != out) {
    return c.fail(error_code::internal, "output shape differs from the pooling geometry's");
  }
  pool_plan p;
  p.is_max = is_max;
  p.count_include_pad = c.node.attrs.get_int("count_include_pad", 0) != 0;
  p.planes = in[0] * in[1];
  const size_t sp = in.size() - 2;
  const size_t shift = 3 - sp;  // spatial axes fill the last entries of the 3-axis arrays
  for (size_t i = 0; i < sp; ++i) {
    p.in[shift + i] = in[i + 2];
    p.out[shift + i] = out[i + 2];
    p.kernel[shift + i] = g.kernel[i];
    p.stride[shift + i] = g.strides[i];
    p.dilation[shift + i] = g.dilations[i];
    p.pad_begin[shift + i] = g.pads_begin[i];
    p.pad_end[shift + i] = g.pads_end[i];
  }
  const dtype t = c.inputs[0].type;
  return make_kernel([t, p](kernel_run_context& ctx) {
    return launch_pool(t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), p, ctx.stream);
  });
}

// ---- BatchNormalization ------------------------------------------------------------------------

expected<std::unique_ptr<kernel>> create_batch_norm(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(cuda_context * ctx, context_of(c));
  TROUPE_RETURN_IF_ERROR(ctx->make_current());
  if (c.node.attrs.get_int("training_mode", 0) != 0) {
    return c.fail(error_code::unsupported, "BatchNormalization training_mode=1");
  }
  for (size_t k = 1; k < c.outputs.size(); ++k) {
    if (c.outputs[k].present()) {
      return c.fail(error_code::unsupported, "BatchNormalization outputs beyond Y");
    }
  }
  const shape_t& s = c.inputs[0].shape;
  if (s.size() < 2) return c.fail(error_code::invalid_model, "X must be N x C x ...");
  const int64_t channels = s[1];
  int64_t inner = 1;
  for (size_t d = 2; d < s.size(); ++d) inner *= s[d];
  const tensor* params[4];
  for (size_t k = 0; k < 4; ++k) {
    params[k] = c.value(k + 1);
    if (!params[k]) {
      return c.fail(error_code::unsupported,
                    "scale, B, mean and var must be constants on the cuda backend");
    }
    if (params[k]->elements() != channels) {
      return c.fail(error_code::invalid_model, "scale/B/mean/var must have C elements");
    }
  }
  const double epsilon = c.node.attrs.get_float("epsilon", 1e-5f);
  // y = (x - mean) / sqrt(var + eps) * scale + b = x * a + (b - mean * a)
  std::vector<float> affine(static_cast<size_t>(2 * channels));
  for (int64_t ch = 0; ch < channels; ++ch) {
    const double a =
        params[0]->value_as_double(ch) / std::sqrt(params[3]->value_as_double(ch) + epsilon);
    affine[static_cast<size_t>(ch)] = static_cast<float>(a);
    affine[static_cast<size_t>(channels + ch)] =
        static_cast<float>(params[1]->value_as_double(ch) - params[2]->value_as_double(ch) * a);
  }
  TROUPE_ASSIGN_OR_RETURN(
      device_buffer buf, device_buffer::upload(*ctx, affine.data(), affine.size() * sizeof(float)));
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(ctx->stream()));
  auto shared = std::make_shared<device_buffer>(std::move(buf));
  const dtype t = c.inputs[0].type;
  const int64_t n = c.outputs[0].elements();
  return make_kernel(
      [shared, t, n, channels, inner](kernel_run_context& ctx) {
        const float* scale = static_cast<const float*>(shared->get());
        return launch_channel_affine(t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), n, channels,
                                     inner, scale, scale + channels, ctx.stream);
      },
      0, {{0, 0}}, false, {1, 2, 3, 4});
}

}  // namespace

void register_conv(kernel_registry& r) {
  r.add({"", "Conv", backend::cuda, gpu_float_types(), 0, {}, conv_kernel::create});
  r.add({"troupe", "FusedConv", backend::cuda, gpu_float_types(), 0, {}, conv_kernel::create});
  r.add({"", "MaxPool", backend::cuda, gpu_float_types(), 0, {}, create_pool});
  r.add({"", "AveragePool", backend::cuda, gpu_float_types(), 0, {}, create_pool});
  r.add({"", "BatchNormalization", backend::cuda, gpu_float_types(), 0, {}, create_batch_norm});
}

}  // namespace troupe::kernels::cuda
