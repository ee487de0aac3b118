// CUDA Conv and troupe.FusedConv through cuDNN, MaxPool/AveragePool and their channels-last troupe
// forms (own kernels), and BatchNormalization in inference (folded to a per-channel affine map at
// create time).
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
//
// Channels-last FusedConv (channels_last = 1, from the layout pass): X, Z and Y are stored
// (N, D..., C) and described to cuDNN as NHWC / NDHWC; W is re-laid out once, at create, to
// (K, k..., C/group) ("KRSC"), the filter layout cuDNN's NHWC kernels read. The timing also
// weighs two other configurations (conv_variant): cuDNN's fp16 NHWC tensor-core kernels want
// C % 8 == 0, so for an fp16 convolution with another C (an image model's first layer, C = 3)
// and one group, C padded to a multiple of 8 (zero weights at create, X copied with zero channels
// into the workspace per run); and an NCHW convolution between two copies, for shapes cuDNN runs
// poorly (or not at all) in NHWC. TROUPE_CUDNN_PAD_CHANNELS=0 / =1 and TROUPE_CUDNN_LAYOUT=nhwc /
// =nchw force a configuration for measurements; TROUPE_CUDNN_DEBUG=1 prints every timing.
//
// Batch slicing: every configuration whose algorithms want a large workspace is also offered as
// k calls on slices of the batch (descriptors for N/k images, a tail configuration for a smaller
// last slice, X/Y/Z offset per call, one slice's workspace reused); among the candidates within
// the time slack the one needing the least workspace wins (conv_kernel::choose).
// TROUPE_CUDNN_FORCE_SLICES=k forces k slices for tests.
//
// Recorded choices: what the timing chose is recorded for the convolution's problem (the GPU
// model, shapes, dtype, layout, epilogue, the settings above) in the process's
// kernels::tuning_records, and a later convolution with the same problem adopts it without
// timing: a layer shape repeated through a model is timed once, and
// every instance of a model (create_sibling_context) and every session of it in the process runs
// the same configuration, so the instances hold each weight in one form, shared through the
// constant store, and give the same results. Timing alone could pick differently each time where
// two candidates are close (under compute-sanitizer it did, and the second instance uploaded its
// weights again in the other layout). For the same reason the configuration (which fixes the
// weights' form: KRSC, KRSC with padded channels, or KCRS) is recorded per problem without its
// batch size: another batch bucket times algorithms and slicing in that configuration only.
// session::warm_up builds the largest bucket first, so the configuration is the one the
// throughput-bound batch size prefers. The key names the GPU by model (device_model: name,
// compute capability, multiprocessor count), not by ordinal, so that the records can outlive the
// process: the node and `troupe run` keep them in a file (runtime/tuning_records_file.hpp) that a
// fresh process reads, and it times nothing it finds there. A record is plain integers and may
// come from that file: conv_record_of takes it only where every value is one this build's search
// could have chosen for the problem; an unusable one is forgotten and searched for again, and a
// usable one cuDNN rejects (adopt fails) is searched for too.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/cudnn_descriptor.hpp"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/pool.cuh"
#include "kernels/cuda/tensor.cuh"
#include "kernels/ops/nn_geometry.hpp"
#include "kernels/tuning_records.hpp"

namespace troupe::kernels::cuda {
namespace {

constexpr size_t kMaxConvWorkspaceBytes = size_t{512} << 20;
constexpr size_t kMaxCandidateAlgos = 6;  // of cuDNN's ranked list, timed at create

// How much slower than the fastest algorithm (a fraction) one with a smaller workspace may be and
// still be chosen: TROUPE_CUDNN_WORKSPACE_SLACK, default 0.05 (0 picks the fastest regardless).
float workspace_time_slack() {
  static const float slack = [] {
    const char* v = std::getenv("TROUPE_CUDNN_WORKSPACE_SLACK");
    if (!v) return 0.05f;
    char* end = nullptr;
    const float f = std::strtof(v, &end);
    return (end != v && f >= 0.0f && f <= 1.0f) ? f : 0.05f;
  }();
  return slack;
}
// What a MiB of workspace saved is worth in GPU time (microseconds) when choosing among
// algorithms: TROUPE_CUDNN_WORKSPACE_US_PER_MIB, default 0.5 (0 leaves only the relative slack).
float workspace_us_per_mib() {
  static const float rate = [] {
    const char* v = std::getenv("TROUPE_CUDNN_WORKSPACE_US_PER_MIB");
    if (!v) return 0.5f;
    char* end = nullptr;
    const float f = std::strtof(v, &end);
    return (end != v && f >= 0.0f && f <= 1000.0f) ? f : 0.5f;
  }();
  return rate;
}
constexpr size_t kWorkspaceAlign = 256;

// Batch slicing (conv_kernel::choose): offered for algorithms wanting at least this much
// workspace (below it the saving is not worth the extra calls), on at most kMaxSlices slices.
constexpr size_t kSliceWorkspaceBytes = size_t{16} << 20;
constexpr int64_t kMaxSlices = 32;
// Slices start at multiples of this many bytes into X, Y and Z (a slicing that would not is not
// offered): cuDNN's tensor-core kernels move 16-byte vectors and want their pointers aligned.
constexpr size_t kSliceAlign = 16;

/// TROUPE_CUDNN_FORCE_SLICES=k (k >= 2): run every convolution with N >= 2 as ceil(N / ceil(N / k))
/// batch slices where it can (tests, measurements); 0 when unset or not such a number. Read at
/// each create, so a test can set it between kernels.
int64_t forced_slices() {
  const char* v = std::getenv("TROUPE_CUDNN_FORCE_SLICES");
  if (!v) return 0;
  char* end = nullptr;
  const long k = std::strtol(v, &end, 10);
  return (end != v && *end == '\0' && k >= 2 && k <= 1024) ? static_cast<int64_t>(k) : 0;
}
constexpr int64_t kTensorCoreChannels = 8;  // fp16 NHWC tensor-core kernels want C % 8 == 0

size_t align_up(size_t n) {
  return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

/// `dims` are logical (N, C, spatial...); the bytes are NCHW-packed or, with channels_last,
/// NHWC / NDHWC-packed.
status set_activation_desc(tensor_desc& d, cudnnDataType_t t, const std::vector<int>& dims,
                           bool channels_last) {
  if (!channels_last) return set_packed_tensor_desc(d, t, dims);
  TROUPE_CUDA_CHECK(cudnnCreateTensorDescriptor(d.out()));
  TROUPE_CUDA_CHECK(cudnnSetTensorNdDescriptorEx(d.get(), CUDNN_TENSOR_NHWC, t,
                                                 static_cast<int>(dims.size()), dims.data()));
  return status::ok();
}

/// Row-major strides of `dims`, in elements.
shape_t packed_strides(const shape_t& dims) {
  shape_t s(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) s[i - 1] = s[i] * dims[i];
  return s;
}

/// A bounded strided copy from row-major `in` (dims `in_dims`) to row-major `out_dims`: output
/// axis d reads input axis `from[d]` at coordinate out - before[d]; coordinates outside the input
/// write zeros. Covers prepadding (identity `from`) and W's re-layout with padded channels.
strided_copy_plan bounded_copy(const shape_t& in_dims, const shape_t& out_dims,
                               const std::vector<size_t>& from, const shape_t& before) {
  strided_copy_plan p;
  p.rank = static_cast<int>(out_dims.size());
  p.bounded = true;
  const shape_t in_strides = packed_strides(in_dims);
  for (size_t d = 0; d < out_dims.size(); ++d) {
    p.out_dims[d] = out_dims[d];
    p.in_strides[d] = in_strides[from[d]];
    p.in_start[d] = -before[d];
    p.in_dims[d] = in_dims[from[d]];
  }
  p.out_elements = element_count(out_dims);
  return p;
}

/// The same copy with every unpadded, contiguous inner axis merged into the axis outside it (the
/// kernel's index arithmetic is per axis): an NHWC channel padding becomes a (pixels, C) copy.
strided_copy_plan merge_axes(const strided_copy_plan& p) {
  strided_copy_plan m = p;
  m.rank = 0;
  for (int d = 0; d < p.rank; ++d) {
    const bool full = p.in_start[d] == 0 && p.in_dims[d] == p.out_dims[d];
    if (m.rank > 0 && full && m.in_strides[m.rank - 1] == p.in_strides[d] * p.in_dims[d]) {
      // Axis d (full) folds into the current outer axis o: coordinate o * n + c.
      const int o = m.rank - 1;
      m.out_dims[o] *= p.out_dims[d];
      m.in_start[o] *= p.in_dims[d];
      m.in_dims[o] *= p.in_dims[d];
      m.in_strides[o] = p.in_strides[d];
      continue;
    }
    m.out_dims[m.rank] = p.out_dims[d];
    m.in_strides[m.rank] = p.in_strides[d];
    m.in_start[m.rank] = p.in_start[d];
    m.in_dims[m.rank] = p.in_dims[d];
    ++m.rank;
  }
  return m;
}

// ---- Conv --------------------------------------------------------------------------------------

/// How a configuration puts a (channels-last or not) convolution to cuDNN.
enum class conv_variant : uint8_t {
  as_stored,        // descriptors in the layout the tensors have
  padded_channels,  // channels-last with C padded to a multiple of 8 (fp16 tensor cores)
  nchw_inside,      // channels-last tensors, an NCHW convolution between two copies
};

/// One way to put the convolution to cuDNN: the descriptors, the constant weights in the filter
/// layout they name, and the copies around the call where cuDNN cannot read or write the tensors
/// as stored. A kernel builds up to three at create (and batch-sliced forms of those whose
/// workspace is large) and keeps the fastest.
/// Workspace: [cuDNN's | X copy | W copy | Y staging], each part aligned.
struct conv_config {
  conv_variant variant = conv_variant::as_stored;
  std::string label;  // for TROUPE_CUDNN_DEBUG
  tensor_desc x_desc, y_desc, bias_desc;
  filter_desc w_desc;
  conv_desc conv;
  device_buffer weights;  // constant W as w_desc lays it out, in X's dtype; else W is an input
  // X copied into the workspace first: asymmetric pads (cuDNN pads symmetrically only), zero
  // channels up to padded_channels, or the transposition to NCHW.
  bool prepad = false;
  strided_copy_plan prepad_plan;
  // A run-time W copied into the workspace as KRSC (channels-last) with padded channels.
  bool relayout_w = false;
  strided_copy_plan w_plan;
  // nchw_inside: cuDNN writes Y NCHW into the workspace, copied to the output channels-last;
  // the epilogue then runs on the output (never the fused call).
  bool stage_y = false;
  strided_copy_plan y_plan;

  size_t prepad_bytes(size_t es) const {
    return prepad ? align_up(static_cast<size_t>(prepad_plan.out_elements) * es) : 0;
  }
  size_t w_bytes(size_t es) const {
    return relayout_w ? align_up(static_cast<size_t>(w_plan.out_elements) * es) : 0;
  }
  size_t y_bytes(size_t es) const {
    return stage_y ? align_up(static_cast<size_t>(y_plan.out_elements) * es) : 0;
  }
  /// Bytes after cuDNN's part of the workspace.
  size_t copies_bytes(size_t es) const { return prepad_bytes(es) + w_bytes(es) + y_bytes(es); }

  // Batch slicing: the descriptors and copy plans above are for `slice_images` images (the whole
  // batch when not sliced), and a run makes one cuDNN call per slice with X, Z and Y offset by
  // the slice's first image, reusing one slice's workspace (an algorithm's workspace grows with
  // the batch). `tail` describes a smaller last slice (batch % slice_images images): its
  // descriptors and plans only; the workspace layout and W are this configuration's.
  int64_t slice_images = 0;
  int64_t slices = 1;
  std::unique_ptr<conv_config> tail;
  bool sliced() const { return slices > 1; }
};

/// A timed choice: configuration, algorithm, math and epilogue mode.
struct conv_choice {
  size_t config = 0;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;  // cuDNN's part of the workspace (the larger of a slice's and the tail's)
  bool fused = false;    // cudnnConvolutionBiasActivationForward
};

/// What the factory resolved from the node, shared by every configuration.
struct conv_shape {
  bool channels_last = false;
  int64_t group = 1;
  // 4-D or 5-D views (a 1-D convolution runs as 2-D with a height of 1), logical order.
  shape_t x, w, y;  // (N, C, D...), (K, C/group, k...), (N, K, O...)
  std::vector<int64_t> stride, dilation, pads_begin, pads_end;
};

/// A choice as recorded for later convolutions of the same problem (see the header comment; the
/// store holds it as a kernels::tuning_record):
/// which configuration, how many images per slice, algorithm, math and epilogue mode.
struct conv_record {
  conv_variant variant = conv_variant::as_stored;
  int64_t slice_images = 0;  // the whole batch when not sliced
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  bool fused = false;
  bool operator==(const conv_record&) const = default;
};

/// The math modes a search may choose for `type`: fp32 stays off tensor cores (TF32, or a
/// conversion to fp16, would lose the CPU backend's precision).
bool math_allowed(dtype type, cudnnMathType_t math) {
  switch (math) {
    case CUDNN_DEFAULT_MATH:
    case CUDNN_FMA_MATH:
      return true;
    case CUDNN_TENSOR_OP_MATH:
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
      return type != dtype::f32;
  }
  return false;
}

kernels::tuning_record to_tuning_record(const conv_record& r) {
  return {static_cast<int32_t>(r.variant), r.slice_images, static_cast<int32_t>(r.algo),
          static_cast<int32_t>(r.math), r.fused};
}

/// `t` in this build's cuDNN types where every value is one the search could have chosen for a
/// convolution of `type` on `batch` images weighing `variants`: a variant among them, an algorithm
/// cuDNN numbers, a math mode math_allowed, 1 to `batch` images per slice. nullopt otherwise (a
/// record read from a file may hold anything; nothing is cast unchecked). Whether the fused call
/// suits the algorithm is adopt's check.
std::optional<conv_record> conv_record_of(const kernels::tuning_record& t,
                                          const std::vector<conv_variant>& variants, dtype type,
                                          int64_t batch) {
  const auto variant = std::find_if(variants.begin(), variants.end(), [&](conv_variant v) {
    return static_cast<int32_t>(v) == t.variant;
  });
  if (variant == variants.end()) return std::nullopt;
  if (t.algo < 0 || t.algo >= CUDNN_CONVOLUTION_FWD_ALGO_COUNT) return std::nullopt;
  if (t.slice_images < 1 || t.slice_images > batch) return std::nullopt;
  cudnnMathType_t math;
  switch (t.math) {
    case CUDNN_DEFAULT_MATH:
      math = CUDNN_DEFAULT_MATH;
      break;
    case CUDNN_TENSOR_OP_MATH:
      math = CUDNN_TENSOR_OP_MATH;
      break;
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
      math = CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
      break;
    case CUDNN_FMA_MATH:
      math = CUDNN_FMA_MATH;
      break;
    default:
      return std::nullopt;
  }
  if (!math_allowed(type, math)) return std::nullopt;
  return conv_record{*variant, t.slice_images, static_cast<cudnnConvolutionFwdAlgo_t>(t.algo), math,
                     t.fused};
}

expected<std::vector<int>> to_int_dims(const kernel_create_context& c, const shape_t& s) {
  std::vector<int> d;
  for (int64_t v : s) {
    if (v > INT32_MAX) return c.fail(error_code::unsupported, "a dimension above 2^31 for cuDNN");
    d.push_back(static_cast<int>(v));
  }
  return d;
}

class conv_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& c);
  ~conv_kernel() override;
  status compute(kernel_run_context& ctx) override;
  size_t workspace_bytes() const override { return workspace_bytes_; }
  /// The residual Z is overwritten by Y only on the fused cuDNN path, where
  /// cudnnConvolutionBiasActivationForward reads z while it writes y element by element (as
  /// cudnnConvolutionForward does with beta); conv + epilogue writes Y before reading Z.
  std::vector<std::pair<int, int>> inplace_pairs() const override {
    if (has_z_ && choice_.fused) return {{0, 3}};
    return {};
  }
  bool reads_constant_input(int i) const override {
    if (i == 1) return !config_->weights;
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
  /// Builds a configuration; unsupported where cuDNN rejects its descriptors.
  expected<std::unique_ptr<conv_config>> make_config(const kernel_create_context& c,
                                                     const conv_shape& s, conv_variant variant);
  /// `base` (a whole-batch configuration) again for slices of `slice_images` images, with a
  /// tail configuration for a smaller last slice; unsupported where cuDNN rejects one or a
  /// slice's offset would break the 16-byte alignment of X, Y or Z.
  expected<std::unique_ptr<conv_config>> make_sliced_config(const kernel_create_context& c,
                                                            const conv_shape& s,
                                                            const conv_config& base,
                                                            int64_t slice_images);
  /// The copies (if any), the convolution (one call per batch slice) and its epilogue with one
  /// choice. Capturable into a CUDA graph: enqueues only, allocates nothing, never syncs.
  status run(const conv_config& cf, const conv_choice& ch, const operands& o, cudaStream_t s);
  /// One slice's copies and cuDNN call: `part` gives the descriptors and plans (cf or its tail),
  /// `cf` the workspace layout.
  status run_slice(const conv_config& cf, const conv_config& part, const conv_choice& ch,
                   const operands& o, bool relayout_w, cudaStream_t s);
  /// Picks configuration, batch slicing, algorithm and mode (fused call or conv + epilogue) by
  /// timing the candidates once; keeps the chosen configuration in config_.
  status choose(const kernel_create_context& c, const conv_shape& s,
                std::vector<std::unique_ptr<conv_config>> configs);
  /// Builds the configuration `r` names and keeps it with its choice, untimed; unsupported when
  /// cuDNN rejects it (the caller then searches).
  status adopt(const kernel_create_context& c, const conv_shape& s, const conv_record& r);
  /// cuDNN's part of the workspace for (algo, math) in `cf`: the larger of a slice's and the
  /// tail's; none where cuDNN gives no size or wants more than kMaxConvWorkspaceBytes. Leaves
  /// `math` set on the descriptors.
  std::optional<size_t> cudnn_workspace(conv_config& cf, cudnnConvolutionFwdAlgo_t algo,
                                        cudnnMathType_t math) const;
  /// The record of what choose() kept, for later convolutions of the same problem.
  /// After the choice: the workspace size and the CUDA-graph setting; waits for the uploads.
  status finish_create();
  conv_record record_of_choice() const {
    return {config_->variant, config_->slice_images, choice_.algo, choice_.math, choice_.fused};
  }
  bool needs_epilogue() const { return has_bias_ || has_z_ || act_.op != unary_op::identity; }
  /// Whether the fused call (cudnnConvolutionBiasActivationForward) runs `algo` in `cf`: Relu
  /// with any algorithm, identity (with an epilogue to fuse) with implicit-precomp GEMM only, and
  /// never where Y is staged.
  bool fused_allowed(const conv_config& cf, cudnnConvolutionFwdAlgo_t algo) const {
    if (cf.stage_y) return false;
    return act_.op == unary_op::relu || (act_.op == unary_op::identity && needs_epilogue() &&
                                         algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM);
  }

  cuda_context* ctx_;
  dtype type_ = dtype::f32;
  std::unique_ptr<conv_config> config_;  // the chosen configuration
  conv_choice choice_;
  act_desc act_desc_;
  act_desc identity_desc_;
  size_t workspace_bytes_ = 0;
  device_buffer bias_;  // uploaded constant B, or zeros for the fused call without B
  bool bias_is_input_ = false;
  bool has_bias_ = false;
  bool has_z_ = false;
  activation act_;
  int64_t channels_ = 0;    // K
  int64_t bias_inner_ = 1;  // output elements between two channels (1 when channels-last)
  int64_t out_elements_ = 0;
  int64_t x_elements_ = 0;  // X as stored
  int64_t batch_ = 0;       // N
  int64_t w_elements_ = 0;  // W as given (K * C/group * k...)

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

expected<std::unique_ptr<conv_config>> conv_kernel::make_config(const kernel_create_context& c,
                                                                const conv_shape& s,
                                                                conv_variant variant) {
  auto cf = std::make_unique<conv_config>();
  cf->variant = variant;
  cf->slice_images = s.x[0];
  const size_t rank = s.x.size();
  const size_t sp = rank - 2;
  const int64_t channels = s.x[1];
  const int64_t padded_channels =
      variant == conv_variant::padded_channels
          ? (channels + kTensorCoreChannels - 1) / kTensorCoreChannels * kTensorCoreChannels
          : channels;
  // The layout of the descriptors; the tensors themselves are channels-last when s says so.
  const bool nhwc = s.channels_last && variant != conv_variant::nchw_inside;
  const bool transpose = s.channels_last && !nhwc;
  cf->label = std::string(!s.channels_last ? "nchw" : nhwc ? "nhwc" : "nhwc via nchw copies");
  if (padded_channels != channels) {
    cf->label += " C " + std::to_string(channels) + "->" + std::to_string(padded_channels);
  }
  // Output axis d of the stored -> logical transposition reads stored axis to_logical[d]; the
  // logical -> stored one reads to_stored[d].
  std::vector<size_t> identity(rank), to_logical{0, rank - 1}, to_stored{0};
  for (size_t d = 0; d < rank; ++d) identity[d] = d;
  for (size_t d = 1; d + 1 < rank; ++d) to_logical.push_back(d);
  for (size_t d = 2; d < rank; ++d) to_stored.push_back(d);
  to_stored.push_back(1);

  // X as cuDNN sees it: spatial pads moved into the copy when asymmetric, channels padded.
  std::vector<int64_t> pb = s.pads_begin;
  shape_t conv_in = s.x;  // logical
  conv_in[1] = padded_channels;
  const bool asymmetric = s.pads_begin != s.pads_end;
  if (asymmetric) {
    for (size_t i = 0; i < sp; ++i) conv_in[2 + i] += s.pads_begin[i] + s.pads_end[i];
    std::fill(pb.begin(), pb.end(), 0);
  }
  if (asymmetric || padded_channels != channels || transpose) {
    cf->prepad = true;
    // On stored dims: logical (N, C, D...) or channels-last (N, D..., C).
    shape_t before(rank, 0);
    if (asymmetric) {
      for (size_t i = 0; i < sp; ++i) before[2 + i] = s.pads_begin[i];
    }
    const shape_t in_dims = s.channels_last ? logical_to_channels_last(s.x) : s.x;
    if (nhwc) {
      cf->prepad_plan = merge_axes(bounded_copy(in_dims, logical_to_channels_last(conv_in),
                                                identity, logical_to_channels_last(before)));
    } else {
      cf->prepad_plan =
          merge_axes(bounded_copy(in_dims, conv_in, transpose ? to_logical : identity, before));
    }
  }
  if (transpose) {
    cf->stage_y = true;
    cf->y_plan =
        merge_axes(bounded_copy(s.y, logical_to_channels_last(s.y), to_stored, shape_t(rank, 0)));
  }

  TROUPE_ASSIGN_OR_RETURN(cudnnDataType_t dt, cudnn_type(type_));
  shape_t wd_logical = s.w;  // (K, C/group, k...)
  wd_logical[1] = padded_channels / s.group;
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> xd, to_int_dims(c, conv_in));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> wd, to_int_dims(c, wd_logical));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> yd, to_int_dims(c, s.y));
  TROUPE_RETURN_IF_ERROR(set_activation_desc(cf->x_desc, dt, xd, nhwc));
  TROUPE_RETURN_IF_ERROR(set_activation_desc(cf->y_desc, dt, yd, nhwc));
  TROUPE_CUDA_CHECK(cudnnCreateFilterDescriptor(cf->w_desc.out()));
  TROUPE_CUDA_CHECK(cudnnSetFilterNdDescriptor(cf->w_desc.get(), dt,
                                               nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                               static_cast<int>(wd.size()), wd.data()));
  std::vector<int> pad_i(sp), stride_i(sp), dil_i(sp);
  for (size_t i = 0; i < sp; ++i) {
    pad_i[i] = static_cast<int>(pb[i]);
    stride_i[i] = static_cast<int>(s.stride[i]);
    dil_i[i] = static_cast<int>(s.dilation[i]);
  }
  TROUPE_CUDA_CHECK(cudnnCreateConvolutionDescriptor(cf->conv.out()));
  TROUPE_CUDA_CHECK(cudnnSetConvolutionNdDescriptor(cf->conv.get(), static_cast<int>(sp),
                                                    pad_i.data(), stride_i.data(), dil_i.data(),
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  TROUPE_CUDA_CHECK(cudnnSetConvolutionGroupCount(cf->conv.get(), static_cast<int>(s.group)));
  const cudnnMathType_t math = type_ != dtype::f32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  TROUPE_CUDA_CHECK(cudnnSetConvolutionMathType(cf->conv.get(), math));
  std::vector<int> check(xd.size());
  TROUPE_CUDA_CHECK(
      cudnnGetConvolutionNdForwardOutputDim(cf->conv.get(), cf->x_desc.get(), cf->w_desc.get(),
                                            static_cast<int>(check.size()), check.data()));
  if (check != yd) {
    return c.fail(error_code::internal, "cuDNN's output shape differs from the inferred " +
                                            shape_to_string(c.outputs[0].shape));
  }
  std::vector<int> bd(xd.size(), 1);
  bd[1] = static_cast<int>(channels_);
  TROUPE_RETURN_IF_ERROR(set_packed_tensor_desc(cf->bias_desc, dt, bd));

  // W: (K, C/g, k...) as given. NHWC descriptors want (K, k..., Cp/g); padded channels are zeros.
  const bool relayout = nhwc;
  const shape_t w_out = nhwc ? logical_to_channels_last(wd_logical) : wd_logical;
  const std::vector<size_t>& w_from = nhwc ? to_stored : identity;
  if (const tensor* wv = c.value(1)) {
    // Made only when the constant store lacks this form (batch-sliced configurations ask again).
    auto prepare = [&]() -> expected<tensor> {
      if (!relayout) return *wv;
      // The device copy's arithmetic (bounded_copy), on the host, once.
      const strided_copy_plan p = bounded_copy(s.w, w_out, w_from, shape_t(rank, 0));
      tensor host = tensor::zeros(wv->type(), w_out);
      const size_t es = dtype_size(wv->type());
      std::vector<int64_t> index(rank, 0);
      for (int64_t o = 0; o < p.out_elements; ++o) {
        bool inside = true;
        int64_t at = 0;
        for (size_t d = 0; d < rank; ++d) {
          inside = inside && index[d] < p.in_dims[d];
          at += index[d] * p.in_strides[d];
        }
        if (inside) {
          std::memcpy(static_cast<uint8_t*>(host.raw()) + static_cast<size_t>(o) * es,
                      static_cast<const uint8_t*>(wv->raw()) + static_cast<size_t>(at) * es, es);
        }
        for (size_t d = rank; d-- > 0;) {
          if (++index[d] < w_out[d]) break;
          index[d] = 0;
        }
      }
      return host;
    };
    // One device copy per (weights, layout) for every plan and instance on this device.
    const std::string form = std::string(nhwc ? "KRSC " : "KCRS ") + shape_to_string(w_out);
    TROUPE_ASSIGN_OR_RETURN(cf->weights, device_buffer::shared(*ctx_, *wv, form, type_, prepare));
  } else if (relayout) {
    cf->relayout_w = true;
    cf->w_plan = merge_axes(bounded_copy(s.w, w_out, w_from, shape_t(rank, 0)));
  }
  return cf;
}

expected<std::unique_ptr<conv_config>> conv_kernel::make_sliced_config(
    const kernel_create_context& c, const conv_shape& s, const conv_config& base,
    int64_t slice_images) {
  const size_t es = dtype_size(type_);
  const int64_t slices = (batch_ + slice_images - 1) / slice_images;
  const int64_t tail_images = batch_ - (slices - 1) * slice_images;
  const size_t x_slice = static_cast<size_t>(x_elements_ / batch_ * slice_images) * es;
  const size_t y_slice = static_cast<size_t>(out_elements_ / batch_ * slice_images) * es;
  if (slices < 2 || x_slice % kSliceAlign != 0 || y_slice % kSliceAlign != 0) {
    return c.fail(error_code::unsupported,
                  "no aligned batch slicing of " + std::to_string(slice_images) + " images");
  }
  conv_shape part = s;
  part.x[0] = part.y[0] = slice_images;
  TROUPE_ASSIGN_OR_RETURN(std::unique_ptr<conv_config> cf, make_config(c, part, base.variant));
  cf->slices = slices;
  cf->label += " slices " + std::to_string(slices) + " x " + std::to_string(slice_images);
  if (tail_images != slice_images) {
    part.x[0] = part.y[0] = tail_images;
    TROUPE_ASSIGN_OR_RETURN(cf->tail, make_config(c, part, base.variant));
    cf->label += " (last " + std::to_string(tail_images) + ")";
  }
  return cf;
}

expected<std::unique_ptr<kernel>> conv_kernel::create(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(cuda_context * ctx, context_of(c));
  TROUPE_RETURN_IF_ERROR(ctx->make_current());
  std::unique_ptr<conv_kernel> k(new conv_kernel(ctx));
  const bool fused = c.node.domain == "troupe";
  if (!c.has_input(1)) return c.fail(error_code::invalid_model, "W is required");
  conv_shape s;
  s.channels_last = fused && is_channels_last(c.node);
  tensor_info x = c.inputs[0];
  const tensor_info& w = c.inputs[1];
  tensor_info y = c.outputs[0];
  k->type_ = x.type;
  if (x.rank() < 3 || x.rank() > 5 || w.rank() != x.rank()) {
    return c.fail(error_code::unsupported, "the cuda backend runs 1-D, 2-D and 3-D convolutions");
  }
  if (w.type != x.type && !c.value(1)) {
    return c.fail(error_code::unsupported, "W of another dtype than X must be a constant");
  }
  if (s.channels_last) {
    x.shape = channels_last_to_logical(x.shape);
    y.shape = channels_last_to_logical(y.shape);
  }
  TROUPE_ASSIGN_OR_RETURN(conv_geometry g, resolve_conv(c.node, x, w));
  if (g.output_shape != y.shape) {
    return c.fail(error_code::internal, "output shape " + c.outputs[0].to_string() +
                                            " differs from the convolution's " +
                                            shape_to_string(g.output_shape));
  }
  k->has_bias_ = c.has_input(2);
  k->has_z_ = fused && c.has_input(3);
  if (k->has_bias_ && c.inputs[2].elements() != w.shape[0]) {
    return c.fail(error_code::invalid_model, "B must have M elements");
  }
  if (k->has_z_ && (c.inputs[3].shape != c.outputs[0].shape || c.inputs[3].type != y.type)) {
    return c.fail(error_code::unsupported, "Z must have the output's shape and dtype");
  }
  if (fused) {
    TROUPE_ASSIGN_OR_RETURN(k->act_, fused_activation(c.node));
  }
  k->channels_ = w.shape[0];
  k->out_elements_ = y.elements();
  k->x_elements_ = x.elements();
  k->batch_ = x.shape[0];
  k->w_elements_ = w.elements();
  if (!s.channels_last) {
    for (size_t i = 2; i < y.rank(); ++i) k->bias_inner_ *= y.shape[i];
  }

  // cuDNN wants 4-D or 5-D: a 1-D convolution runs as 2-D with a height of 1.
  s.group = g.group;
  s.x = x.shape;
  s.w = w.shape;
  s.y = y.shape;
  s.stride = g.strides;
  s.dilation = g.dilations;
  s.pads_begin = g.pads_begin;
  s.pads_end = g.pads_end;
  if (x.rank() == 3) {
    s.x.insert(s.x.begin() + 2, 1);
    s.w.insert(s.w.begin() + 2, 1);
    s.y.insert(s.y.begin() + 2, 1);
    s.stride.insert(s.stride.begin(), 1);
    s.dilation.insert(s.dilation.begin(), 1);
    s.pads_begin.insert(s.pads_begin.begin(), 0);
    s.pads_end.insert(s.pads_end.begin(), 0);
  }

  // Constant B (converted to X's dtype); without B the fused call gets zeros.
  if (k->has_bias_) {
    if (const tensor* bv = c.value(2)) {
      TROUPE_ASSIGN_OR_RETURN(k->bias_, device_buffer::shared_as(*ctx, *bv, x.type));
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
  TROUPE_CUDA_CHECK(cudnnCreateActivationDescriptor(k->act_desc_.out()));
  TROUPE_CUDA_CHECK(cudnnSetActivationDescriptor(k->act_desc_.get(), CUDNN_ACTIVATION_RELU,
                                                 CUDNN_PROPAGATE_NAN, 0.0));
  TROUPE_CUDA_CHECK(cudnnCreateActivationDescriptor(k->identity_desc_.out()));
  TROUPE_CUDA_CHECK(cudnnSetActivationDescriptor(k->identity_desc_.get(), CUDNN_ACTIVATION_IDENTITY,
                                                 CUDNN_PROPAGATE_NAN, 0.0));

  // Configurations: as stored; channels-last also as an NCHW convolution between two copies
  // (whatever cuDNN's NHWC kernels lack or run slowly), and for fp16 with C % 8 != 0 and one
  // group with C padded. TROUPE_CUDNN_LAYOUT=nhwc / =nchw keeps only the NHWC ones / only the
  // copying one; TROUPE_CUDNN_PAD_CHANNELS=0 / =1 only the unpadded / padded NHWC one.
  const int64_t channels = s.x[1];
  const bool may_pad = s.channels_last && x.type != dtype::f32 && g.group == 1 &&
                       channels % kTensorCoreChannels != 0;
  const char* pad_env = std::getenv("TROUPE_CUDNN_PAD_CHANNELS");
  const char* layout_env = std::getenv("TROUPE_CUDNN_LAYOUT");
  const std::string pad_mode = pad_env ? pad_env : "", layout_mode = layout_env ? layout_env : "";
  std::vector<conv_variant> variants;
  if (!s.channels_last) {
    variants = {conv_variant::as_stored};
  } else {
    if (layout_mode != "nchw") {
      if (!(may_pad && pad_mode == "1")) variants.push_back(conv_variant::as_stored);
      if (may_pad && pad_mode != "0") variants.push_back(conv_variant::padded_channels);
    }
    if (layout_mode != "nhwc") variants.push_back(conv_variant::nchw_inside);
  }
  const std::vector<conv_variant> searchable = variants;  // what a record may name

  // The problem as the recorded choices know it: everything the candidates and their timing
  // depend on (the GPU model, not the device's ordinal; not the node's name, not the weights'
  // values); without the batch, the key of the weights' form.
  TROUPE_ASSIGN_OR_RETURN(const std::string model, device_model(ctx->device()));
  auto problem_key = [&](bool with_batch) {
    shape_t x_dims = s.x, y_dims = s.y;
    if (!with_batch) x_dims[0] = y_dims[0] = 0;
    // Appended piece by piece: g++ 12 warns (-Wrestrict, falsely) on "literal" + std::string.
    std::string key = model;
    auto add = [&key](const char* prefix, const std::string& value) {
      key += ' ';
      key += prefix;
      key += value;
    };
    add("", std::string(dtype_name(x.type)));
    add("", s.channels_last ? "cl" : "cf");
    add("g", std::to_string(s.group));
    add("x", shape_to_string(x_dims));
    add("w", shape_to_string(s.w));
    add("y", shape_to_string(y_dims));
    for (const auto* v : {&s.stride, &s.dilation, &s.pads_begin, &s.pads_end}) {
      add("", shape_to_string(*v));
    }
    const char* search_env = std::getenv("TROUPE_CUDNN_SEARCH");
    key += " act";
    key += std::to_string(static_cast<int>(k->act_.op)) + " b" + std::to_string(k->has_bias_) +
           std::to_string(k->bias_is_input_) + " z" + std::to_string(k->has_z_) + " w" +
           std::to_string(c.value(1) != nullptr) + " env " + pad_mode + "/" + layout_mode + "/" +
           (search_env ? search_env : "") + "/" + std::to_string(forced_slices()) + "/" +
           std::to_string(workspace_time_slack()) + "/" + std::to_string(workspace_us_per_mib());
    return key;
  };
  const std::string key = problem_key(true), form_key = problem_key(false);
  kernels::tuning_records& records = kernels::tuning_records::process();
  if (const std::optional<kernels::tuning_record> found = records.find(key)) {
    const std::optional<conv_record> recorded =
        conv_record_of(*found, searchable, x.type, k->batch_);
    if (!recorded) {
      // Not a choice this build's search could make here: searched for again below, and this
      // kernel's choice takes its place.
      records.forget(key, *found);
    } else if (k->adopt(c, s, *recorded).is_ok()) {
      records.count_adopted();
      TROUPE_RETURN_IF_ERROR(k->finish_create());
      return std::unique_ptr<kernel>(std::move(k));
    }
  }
  // Another batch size of this convolution chose its configuration already: the same one here
  // (the algorithm, slicing and mode are still timed for this batch), so that the device holds
  // the weights in one form for every batch bucket.
  if (const std::optional<int32_t> form = records.find_form(form_key)) {
    const auto it = std::find_if(variants.begin(), variants.end(),
                                 [&](conv_variant v) { return static_cast<int32_t>(v) == *form; });
    if (it != variants.end()) {
      variants = {*it};
    } else {
      records.forget_form(form_key, *form);  // not one of this search's: this choice replaces it
    }
  }
  // A configuration cuDNN rejects is left out; create fails only when none is left.
  std::vector<std::unique_ptr<conv_config>> configs;
  status first_error;
  for (conv_variant v : variants) {
    auto cf = k->make_config(c, s, v);
    if (cf.has_value()) {
      configs.push_back(std::move(*cf));
    } else if (first_error.is_ok()) {
      first_error = cf.error();
    }
  }
  if (configs.empty()) return first_error;
  TROUPE_RETURN_IF_ERROR(k->choose(c, s, std::move(configs)));
  records.count_searched();
  const conv_record mine = k->record_of_choice();
  const std::optional<conv_record> standing = conv_record_of(
      records.record(key, form_key, to_tuning_record(mine)), searchable, x.type, k->batch_);
  // Another instance recorded its choice for this problem while this one timed: run that one,
  // so that the instances agree (this kernel's own choice stays where that one fails here).
  if (standing && !(*standing == mine)) {
    std::unique_ptr<conv_config> own_config = std::move(k->config_);
    const conv_choice own_choice = k->choice_;
    if (!k->adopt(c, s, *standing).is_ok()) {
      k->config_ = std::move(own_config);
      k->choice_ = own_choice;
      TROUPE_CUDA_CHECK(cudnnSetConvolutionMathType(k->config_->conv.get(), own_choice.math));
      if (k->config_->tail) {
        TROUPE_CUDA_CHECK(
            cudnnSetConvolutionMathType(k->config_->tail->conv.get(), own_choice.math));
      }
    }
  }
  TROUPE_RETURN_IF_ERROR(k->finish_create());
  return std::unique_ptr<kernel>(std::move(k));
}

status conv_kernel::finish_create() {
  const char* graphs = std::getenv("TROUPE_CUDNN_GRAPHS");
  graphs_off_ = graphs && std::string(graphs) == "0";
  workspace_bytes_ = align_up(choice_.workspace) + config_->copies_bytes(dtype_size(type_));
  // Uploads were enqueued on the context's stream; runs may use another stream.
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream()));
  return status::ok();
}

std::optional<size_t> conv_kernel::cudnn_workspace(conv_config& cf,
                                                   cudnnConvolutionFwdAlgo_t algo,
                                                   cudnnMathType_t math) const {
  cudnnHandle_t h = ctx_->cudnn();
  size_t most = 0;
  for (conv_config* part : {&cf, cf.tail.get()}) {
    if (!part) continue;
    size_t bytes = 0;
    if (!TROUPE_CUDA_STATUS(cudnnSetConvolutionMathType(part->conv.get(), math)).is_ok() ||
        !TROUPE_CUDA_STATUS(cudnnGetConvolutionForwardWorkspaceSize(
                                h, part->x_desc.get(), part->w_desc.get(), part->conv.get(),
                                part->y_desc.get(), algo, &bytes))
             .is_ok() ||
        bytes > kMaxConvWorkspaceBytes) {
      return std::nullopt;
    }
    most = std::max(most, bytes);
  }
  return most;
}

status conv_kernel::adopt(const kernel_create_context& c, const conv_shape& s,
                          const conv_record& r) {
  TROUPE_ASSIGN_OR_RETURN(std::unique_ptr<conv_config> cf, make_config(c, s, r.variant));
  if (r.slice_images != s.x[0]) {
    TROUPE_ASSIGN_OR_RETURN(cf, make_sliced_config(c, s, *cf, r.slice_images));
  }
  if (r.fused && !fused_allowed(*cf, r.algo)) {
    return c.fail(error_code::unsupported, "recorded choice mismatch");
  }
  const std::optional<size_t> ws = cudnn_workspace(*cf, r.algo, r.math);
  if (!ws) return c.fail(error_code::unsupported, "recorded algorithm rejected");
  if (std::getenv("TROUPE_CUDNN_DEBUG")) {
    std::fprintf(stderr, "[troupe cudnn] chosen: %s %s algo %d math %d %s ws %zu, recorded\n",
                 c.node.describe().c_str(), cf->label.c_str(), static_cast<int>(r.algo),
                 static_cast<int>(r.math), r.fused ? "fused" : "plain", *ws);
  }
  choice_ = {0, r.algo, r.math, *ws, r.fused};
  config_ = std::move(cf);
  return status::ok();
}

status conv_kernel::choose(const kernel_create_context& c, const conv_shape& shape,
                           std::vector<std::unique_ptr<conv_config>> configs) {
  cudnnHandle_t h = ctx_->cudnn();
  const cudaStream_t s = ctx_->stream();
  TROUPE_RETURN_IF_ERROR(ctx_->bind_cudnn_stream(s));
  // Candidate algorithms per configuration: cuDNN's heuristics, most promising first
  // (cudnnFind... would time them too, but with host overhead included and each on a fresh
  // allocation: the timing below is ours).
  constexpr int kAlgos = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  auto workspace_of = [&](conv_config& cf, cudnnConvolutionFwdAlgo_t algo,
                          cudnnMathType_t math) { return cudnn_workspace(cf, algo, math); };
  // The (algorithm, math) pairs cuDNN ranks first for configuration ci.
  auto algos_of = [&](size_t ci) {
    conv_config& cf = *configs[ci];
    std::vector<conv_choice> algos;
    cudnnConvolutionFwdAlgoPerf_t perf[kAlgos];
    int returned = 0;
    const status heuristics = TROUPE_CUDA_STATUS(
        cudnnGetConvolutionForwardAlgorithm_v7(h, cf.x_desc.get(), cf.w_desc.get(), cf.conv.get(),
                                               cf.y_desc.get(), kAlgos, &returned, perf));
    if (!heuristics.is_ok()) return algos;  // another configuration may still do
    for (int i = 0; i < returned && algos.size() < kMaxCandidateAlgos; ++i) {
      const cudnnConvolutionFwdAlgoPerf_t& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      if (!math_allowed(type_, p.mathType)) continue;
      const bool seen = std::any_of(algos.begin(), algos.end(), [&](const conv_choice& a) {
        return a.algo == p.algo && a.math == p.mathType;
      });
      if (seen) continue;
      if (const auto bytes = workspace_of(cf, p.algo, p.mathType)) {
        algos.push_back({ci, p.algo, p.mathType, *bytes, false});
      }
    }
    return algos;
  };
  std::vector<conv_choice> candidates;
  // Modes: the fused call where fused_allowed; conv + epilogue takes everything.
  auto add_modes = [&](const std::vector<conv_choice>& algos) {
    for (const auto& a : algos) {
      if (fused_allowed(*configs[a.config], a.algo)) {
        conv_choice f = a;
        f.fused = true;
        candidates.push_back(f);
      }
      candidates.push_back(a);
    }
  };
  const size_t whole_configs = configs.size();
  std::vector<std::vector<conv_choice>> whole_algos(whole_configs);
  for (size_t ci = 0; ci < whole_configs; ++ci) {
    whole_algos[ci] = algos_of(ci);
    add_modes(whole_algos[ci]);
  }

  // Batch slicing: an algorithm whose workspace grows with the batch (ResNet-50's fp16 7x7 stem
  // at batch 128: 245 MiB for the fastest, about 2 MiB per image) can run as k calls on N/k
  // images each with a k-th of it, at nearly the same GPU time. For every configuration with an
  // algorithm wanting at least kSliceWorkspaceBytes that could still be chosen (`qualifies`:
  // after the whole-batch timing, slicing never makes an algorithm faster), that algorithm is
  // offered again on 2, 4, 8, ... slices while a slice still wants that much; the rule below
  // then takes the least workspace within the time slack. TROUPE_CUDNN_FORCE_SLICES=k (tests,
  // measurements) offers every algorithm on k slices only, before any timing, and drops the
  // whole-batch candidates where one exists.
  const int64_t forced = forced_slices();
  const size_t es = dtype_size(type_);
  // The whole workspace of a candidate: cuDNN's part and the copies (which grow with the batch
  // as well: a padded or transposed X, a staged Y).
  auto total_bytes = [&](const conv_choice& a) {
    return align_up(a.workspace) + configs[a.config]->copies_bytes(es);
  };
  auto add_sliced_candidates = [&](const auto& qualifies) {
    for (size_t ci = 0; ci < whole_configs && batch_ > 1; ++ci) {
      size_t hungriest = 0;
      for (const auto& a : whole_algos[ci]) {
        if (qualifies(a)) hungriest = std::max(hungriest, total_bytes(a));
      }
      if (forced == 0 && hungriest < kSliceWorkspaceBytes) continue;
      std::vector<int64_t> counts;
      if (forced > 0) {
        counts.push_back(forced);
      } else {
        for (int64_t k = 2; k <= kMaxSlices; k *= 2) counts.push_back(k);
      }
      int64_t last_images = batch_;
      for (int64_t k : counts) {
        const int64_t images = (batch_ + k - 1) / k;
        if (images >= last_images) continue;  // the same slicing as the last count
        last_images = images;
        auto sliced = make_sliced_config(c, shape, *configs[ci], images);
        if (!sliced.has_value()) continue;  // rejected or misaligned: maybe a finer one does
        configs.push_back(std::move(*sliced));
        std::vector<conv_choice> algos = algos_of(configs.size() - 1);
        if (forced == 0) {
          // Only the hungry algorithms, and only where slicing saves workspace.
          std::erase_if(algos, [&](const conv_choice& a) {
            for (const auto& w : whole_algos[ci]) {
              if (w.algo == a.algo && w.math == a.math) {
                return !qualifies(w) || total_bytes(w) < kSliceWorkspaceBytes ||
                       total_bytes(a) >= total_bytes(w);
              }
            }
            return true;
          });
        }
        add_modes(algos);
        const bool still_hungry = std::any_of(
            algos.begin(), algos.end(),
            [&](const conv_choice& a) { return total_bytes(a) >= kSliceWorkspaceBytes; });
        if (forced == 0 && !still_hungry) break;
      }
    }
  };
  if (forced > 0) {
    add_sliced_candidates([](const conv_choice&) { return true; });
    const bool any_sliced =
        std::any_of(candidates.begin(), candidates.end(),
                    [&](const conv_choice& k) { return k.config >= whole_configs; });
    if (any_sliced) {
      std::erase_if(candidates, [&](const conv_choice& k) { return k.config < whole_configs; });
    }
  }
  if (candidates.empty())
    return c.fail(error_code::unsupported, "cuDNN has no algorithm for this convolution");
  auto select = [&](const conv_choice& k) -> status {
    choice_ = k;
    TROUPE_CUDA_CHECK(cudnnSetConvolutionMathType(configs[k.config]->conv.get(), k.math));
    if (const auto& tail = configs[k.config]->tail) {
      TROUPE_CUDA_CHECK(cudnnSetConvolutionMathType(tail->conv.get(), k.math));
    }
    return status::ok();
  };
  auto keep = [&](const conv_choice& k) -> status {
    TROUPE_RETURN_IF_ERROR(select(k));
    config_ = std::move(configs[k.config]);
    choice_.config = 0;
    return status::ok();
  };
  const char* search = std::getenv("TROUPE_CUDNN_SEARCH");
  const bool benchmark = !(search && std::string(search) == "heuristic");
  // One candidate needs no timing, unless it is hungry enough that sliced forms come next.
  if (!benchmark || (candidates.size() == 1 &&
                     (forced > 0 || total_bytes(candidates.front()) < kSliceWorkspaceBytes))) {
    const conv_choice& first = candidates.front();
    if (std::getenv("TROUPE_CUDNN_DEBUG")) {
      std::fprintf(stderr, "[troupe cudnn] chosen: %s %s algo %d math %d %s ws %zu, untimed\n",
                   c.node.describe().c_str(), configs[first.config]->label.c_str(),
                   static_cast<int>(first.algo), static_cast<int>(first.math),
                   first.fused ? "fused" : "plain", first.workspace);
    }
    return keep(first);
  }

  // Time each candidate on scratch buffers, copies included (they differ between
  // configurations): one warm-up call, then the best of three. A failing candidate is skipped,
  // not fatal.
  size_t max_ws = 0;
  for (const auto& k : candidates) {
    const conv_config& cf = *configs[k.config];
    max_ws = std::max(max_ws, align_up(k.workspace) + cf.copies_bytes(es));
  }
  TROUPE_ASSIGN_OR_RETURN(device_buffer x,
                          device_buffer::allocate(*ctx_, static_cast<size_t>(x_elements_) * es));
  TROUPE_ASSIGN_OR_RETURN(device_buffer y,
                          device_buffer::allocate(*ctx_, static_cast<size_t>(out_elements_) * es));
  TROUPE_ASSIGN_OR_RETURN(device_buffer ws,
                          device_buffer::allocate(*ctx_, std::max<size_t>(max_ws, 1)));
  device_buffer w_scratch, z, b_scratch;
  if (!configs.front()->weights) {
    TROUPE_ASSIGN_OR_RETURN(w_scratch,
                            device_buffer::allocate(*ctx_, static_cast<size_t>(w_elements_) * es));
    TROUPE_CUDA_CHECK(cudaMemsetAsync(w_scratch.get(), 0, w_scratch.bytes(), s));
  }
  if (has_z_) {
    TROUPE_ASSIGN_OR_RETURN(
        z, device_buffer::allocate(*ctx_, static_cast<size_t>(out_elements_) * es));
    TROUPE_CUDA_CHECK(cudaMemsetAsync(z.get(), 0, z.bytes(), s));
  }
  if (bias_is_input_) {
    TROUPE_ASSIGN_OR_RETURN(b_scratch,
                            device_buffer::allocate(*ctx_, static_cast<size_t>(channels_) * es));
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
      if (type_ != dtype::f32) {
        const uint16_t hv = float16_bits(type_, v);
        std::memcpy(&host[i], &hv, 2);
      } else {
        std::memcpy(&host[i], &v, 4);
      }
    }
    TROUPE_CUDA_CHECK(cudaMemcpy(x.get(), host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  TROUPE_CUDA_CHECK(cudaEventCreate(&start));
  TROUPE_CUDA_CHECK(cudaEventCreate(&stop));
  const bool debug = std::getenv("TROUPE_CUDNN_DEBUG") != nullptr;
  float best_ms = 0;
  int best = -1;
  constexpr int kRuns = 3;
  std::vector<float> times_ms;
  auto time_candidate = [&](size_t i) -> status {
    times_ms.resize(candidates.size(), -1.0f);
    const conv_config& cf = *configs[candidates[i].config];
    if (align_up(candidates[i].workspace) + cf.copies_bytes(es) > ws.bytes()) return status::ok();
    operands o;
    o.x = x.get();
    o.w = cf.weights ? cf.weights.get() : w_scratch.get();
    o.bias = bias_is_input_ ? b_scratch.get() : bias_.get();
    o.z = z.get();
    o.y = y.get();
    o.ws = ws.get();
    TROUPE_RETURN_IF_ERROR(select(candidates[i]));
    const auto warm_start = std::chrono::steady_clock::now();
    if (!run(cf, candidates[i], o, s).is_ok()) return status::ok();
    const auto host_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - warm_start)
                             .count();
    float ms = -1;
    // cuDNN's legacy calls cost tens of microseconds of host time each: hold the stream for
    // longer than enqueueing the timed calls takes, so that they queue up and the events measure
    // GPU time only (what a CUDA graph replays).
    const int64_t delay_ns = std::clamp<int64_t>(2 * kRuns * host_ns, 50'000, 20'000'000);
    TROUPE_RETURN_IF_ERROR(launch_delay(static_cast<uint64_t>(delay_ns), s));
    (void)cudaEventRecord(start, s);
    bool ok = true;
    for (int rep = 0; rep < kRuns && ok; ++rep) ok = run(cf, candidates[i], o, s).is_ok();
    (void)cudaEventRecord(stop, s);
    if (ok && TROUPE_CUDA_STATUS(cudaEventSynchronize(stop)).is_ok() &&
        TROUPE_CUDA_STATUS(cudaEventElapsedTime(&ms, start, stop)).is_ok()) {
      ms /= kRuns;
    } else {
      ms = -1;
    }
    if (debug) {
      std::fprintf(stderr, "[troupe cudnn] %s %s algo %d math %d %s ws %zu: %.1f us\n",
                   c.node.describe().c_str(), cf.label.c_str(),
                   static_cast<int>(candidates[i].algo), static_cast<int>(candidates[i].math),
                   candidates[i].fused ? "fused" : "plain", candidates[i].workspace, ms * 1000.0f);
    }
    times_ms[i] = ms;
    if (ms >= 0 && (best < 0 || ms < best_ms)) {
      best = static_cast<int>(i);
      best_ms = ms;
    }
    return status::ok();
  };
  for (size_t i = 0; i < candidates.size(); ++i) TROUPE_RETURN_IF_ERROR(time_candidate(i));
  const float slack = workspace_time_slack();
  const float us_per_mib = workspace_us_per_mib();
  auto bytes_of = [&](size_t i) {
    return align_up(candidates[i].workspace) + configs[candidates[i].config]->copies_bytes(es);
  };
  if (forced == 0 && best >= 0) {
    // Sliced forms only of the algorithms the rule below could still accept: timed whole, an
    // algorithm within the slack of the fastest, or slower by no more than the fastest's whole
    // workspace is worth (slicing only adds time, and saves at most that much).
    const size_t timed = candidates.size();
    const float fastest_mib =
        static_cast<float>(bytes_of(static_cast<size_t>(best))) / static_cast<float>(1 << 20);
    auto qualifies = [&](const conv_choice& w) {
      float t = -1.0f;
      for (size_t i = 0; i < timed; ++i) {
        const conv_choice& k = candidates[i];
        if (k.config == w.config && k.algo == w.algo && k.math == w.math && times_ms[i] >= 0 &&
            (t < 0 || times_ms[i] < t)) {
          t = times_ms[i];
        }
      }
      return t >= 0 &&
             (t <= best_ms * (1.0f + slack) || (t - best_ms) * 1000.0f <= us_per_mib * fastest_mib);
    };
    add_sliced_candidates(qualifies);
    for (size_t i = timed; i < candidates.size(); ++i) TROUPE_RETURN_IF_ERROR(time_candidate(i));
  }
  // The workspace is one block per plan, sized by its hungriest step, and at large batches the
  // fastest algorithms want hundreds of MiB (ResNet-50 fp16 at batch 128: 245 MiB for the 7x7
  // stem alone, half the arena). A candidate needing less is acceptable when it is within the
  // relative slack of the fastest, or when the time it adds is worth the bytes it saves at the
  // exchange rate (the stem run as 4 slices of 32 images: +60 us of 4.1 ms for 184 MiB less);
  // among the acceptable ones, the smallest.
  if (best >= 0) {
    const size_t fastest = static_cast<size_t>(best);
    auto acceptable = [&](size_t i) {
      if (times_ms[i] < 0 || bytes_of(i) >= bytes_of(fastest)) return false;
      const float extra_us = (times_ms[i] - best_ms) * 1000.0f;
      const float saved_mib =
          static_cast<float>(bytes_of(fastest) - bytes_of(i)) / static_cast<float>(1 << 20);
      return times_ms[i] <= best_ms * (1.0f + slack) || extra_us <= us_per_mib * saved_mib;
    };
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (!acceptable(i)) continue;
      const size_t cur = static_cast<size_t>(best);
      if (bytes_of(i) < bytes_of(cur) ||
          (bytes_of(i) == bytes_of(cur) && times_ms[i] < times_ms[cur]))
        best = static_cast<int>(i);
    }
    best_ms = times_ms[static_cast<size_t>(best)];
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  (void)cudaGetLastError();
  TROUPE_CUDA_CHECK(cudaStreamSynchronize(s));
  if (best < 0)
    return c.fail(error_code::unsupported, "no cuDNN algorithm ran for this convolution");
  const conv_choice& chosen = candidates[static_cast<size_t>(best)];
  if (debug) {
    std::fprintf(stderr,
                 "[troupe cudnn] chosen: %s %s algo %d math %d %s ws %zu copies %zu, %.1f us\n",
                 c.node.describe().c_str(), configs[chosen.config]->label.c_str(),
                 static_cast<int>(chosen.algo), static_cast<int>(chosen.math),
                 chosen.fused ? "fused" : "plain", chosen.workspace,
                 configs[chosen.config]->copies_bytes(es), best_ms * 1000.0f);
  }
  return keep(chosen);
}

status conv_kernel::run(const conv_config& cf, const conv_choice& ch, const operands& o,
                        cudaStream_t s) {
  if (!cf.sliced()) {
    TROUPE_RETURN_IF_ERROR(run_slice(cf, cf, ch, o, true, s));
  } else {
    // One call per slice, in order on one stream: each reuses the same workspace.
    const size_t es = dtype_size(type_);
    const size_t x_image = static_cast<size_t>(x_elements_ / batch_) * es;
    const size_t y_image = static_cast<size_t>(out_elements_ / batch_) * es;
    for (int64_t i = 0; i < cf.slices; ++i) {
      const size_t first = static_cast<size_t>(i * cf.slice_images);
      const conv_config& part = i + 1 == cf.slices && cf.tail ? *cf.tail : cf;
      operands so = o;
      so.x = static_cast<const uint8_t*>(o.x) + first * x_image;
      so.y = static_cast<uint8_t*>(o.y) + first * y_image;
      if (o.z) so.z = static_cast<const uint8_t*>(o.z) + first * y_image;
      // A run-time W is re-laid out once: the copy stays in the workspace for every slice.
      TROUPE_RETURN_IF_ERROR(run_slice(cf, part, ch, so, i == 0, s));
    }
  }
  if (ch.fused || !needs_epilogue()) return status::ok();
  epilogue_params p;
  p.type = type_;
  p.y = o.y;
  p.n = out_elements_;
  p.bias = has_bias_ ? o.bias : nullptr;
  p.bias_len = channels_;
  p.bias_inner = bias_inner_;
  p.z = o.z;
  p.act = act_;
  return launch_epilogue(p, s);
}

status conv_kernel::run_slice(const conv_config& cf, const conv_config& part, const conv_choice& ch,
                              const operands& o, bool relayout_w, cudaStream_t s) {
  const size_t es = dtype_size(type_);
  uint8_t* const ws = static_cast<uint8_t*>(o.ws);
  uint8_t* const copies = ws + align_up(ch.workspace);
  const void* x = o.x;
  const void* w = o.w;
  if (part.prepad) {
    TROUPE_RETURN_IF_ERROR(launch_strided_copy(es, x, copies, part.prepad_plan, s));
    x = copies;
  }
  if (cf.relayout_w) {
    void* relaid = copies + cf.prepad_bytes(es);
    if (relayout_w) TROUPE_RETURN_IF_ERROR(launch_strided_copy(es, w, relaid, cf.w_plan, s));
    w = relaid;
  }
  void* const y = part.stage_y ? copies + cf.prepad_bytes(es) + cf.w_bytes(es) : o.y;
  const float one = 1.0f, zero = 0.0f;
  if (ch.fused) {
    // Without Z, y stands in for it with alpha2 = 0 (as ONNX Runtime's fused Conv does).
    const float alpha2 = o.z ? 1.0f : 0.0f;
    TROUPE_CUDA_CHECK(cudnnConvolutionBiasActivationForward(
        ctx_->cudnn(), &one, part.x_desc.get(), x, part.w_desc.get(), w, part.conv.get(), ch.algo,
        ws, ch.workspace, &alpha2, part.y_desc.get(), o.z ? o.z : y, part.bias_desc.get(), o.bias,
        act_.op == unary_op::relu ? act_desc_.get() : identity_desc_.get(), part.y_desc.get(), y));
    return status::ok();
  }
  TROUPE_CUDA_CHECK(cudnnConvolutionForward(ctx_->cudnn(), &one, part.x_desc.get(), x,
                                            part.w_desc.get(), w, part.conv.get(), ch.algo, ws,
                                            ch.workspace, &zero, part.y_desc.get(), y));
  if (part.stage_y) TROUPE_RETURN_IF_ERROR(launch_strided_copy(es, y, o.y, part.y_plan, s));
  return status::ok();
}

status conv_kernel::compute(kernel_run_context& ctx) {
  const cudaStream_t s = to_stream(ctx.stream);
  TROUPE_RETURN_IF_ERROR(ctx_->bind_cudnn_stream(s));
  operands o;
  o.x = ctx.inputs[0].raw();
  o.w = config_->weights ? config_->weights.get() : ctx.inputs[1].raw();
  o.bias = bias_is_input_ ? ctx.inputs[2].raw() : bias_.get();
  o.z = has_z_ ? ctx.inputs[3].raw() : nullptr;
  o.y = ctx.outputs[0].raw();
  o.ws = ctx.workspace;
  if (graphs_off_) return run(*config_, choice_, o, s);
  // Inside someone else's capture (a whole-plan CUDA graph) the calls are simply recorded.
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  TROUPE_CUDA_CHECK(cudaStreamIsCapturing(s, &capturing));
  if (capturing != cudaStreamCaptureStatusNone) return run(*config_, choice_, o, s);
  for (const auto& g : graphs_) {
    if (g.key == o) {
      TROUPE_CUDA_CHECK(cudaGraphLaunch(g.exec, s));
      return status::ok();
    }
  }
  // First sight of these pointers: run directly (and warm up cuDNN); on the second, capture.
  if (!(last_uncaptured_ == o)) {
    last_uncaptured_ = o;
    return run(*config_, choice_, o, s);
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool captured = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  const status ran = captured ? run(*config_, choice_, o, s) : status::ok();
  if (captured) captured = cudaStreamEndCapture(s, &graph) == cudaSuccess && ran.is_ok();
  if (captured) captured = cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  if (graph) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();
  if (!captured) {
    // cuDNN refused capture for this configuration: stay with direct calls.
    if (exec) (void)cudaGraphExecDestroy(exec);
    graphs_off_ = true;
    return run(*config_, choice_, o, s);
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

// MaxPool / AveragePool, and their troupe forms with channels_last = 1 (X, Y stored (N, D..., C)).
expected<std::unique_ptr<kernel>> create_pool(const kernel_create_context& c) {
  const bool is_max = c.node.op_type == "MaxPool";
  const bool channels_last = is_channels_last(c.node);
  tensor_info x = c.inputs[0];
  shape_t out = c.outputs[0].shape;
  if (channels_last) {
    x.shape = channels_last_to_logical(x.shape);
    out = channels_last_to_logical(out);
  }
  const shape_t& in = x.shape;
  if (in.size() < 3 || in.size() > 5) {
    return c.fail(error_code::unsupported, "the cuda backend pools over 1 to 3 spatial axes");
  }
  if (is_max && c.outputs.size() > 1 && c.outputs[1].present()) {
    return c.fail(error_code::unsupported, "MaxPool's Indices output on the cuda backend");
  }
  if (is_max && c.node.attrs.get_int("storage_order", 0) != 0) {
    return c.fail(error_code::unsupported, "MaxPool storage_order=1");
  }
  TROUPE_ASSIGN_OR_RETURN(pool_geometry g, resolve_pool(c.node, x));
  if (g.output_shape != out) {
    return c.fail(error_code::internal, "output shape differs from the pooling geometry's");
  }
  pool_plan p;
  p.is_max = is_max;
  p.count_include_pad = c.node.attrs.get_int("count_include_pad", 0) != 0;
  p.channels_last = channels_last;
  p.planes = channels_last ? in[0] : in[0] * in[1];
  p.channels = in[1];
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

// troupe.GlobalAveragePool / GlobalMaxPool with channels_last = 1 (the ONNX forms, NCHW, are
// reductions: reduction_ops.cpp).
expected<std::unique_ptr<kernel>> create_global_pool(const kernel_create_context& c) {
  if (!is_channels_last(c.node)) {
    return c.fail(error_code::unsupported, "the troupe form runs channels-last only");
  }
  const shape_t& in = c.inputs[0].shape;
  if (in.size() < 3) return c.fail(error_code::invalid_model, "X must have rank >= 3");
  const bool is_max = c.node.op_type == "GlobalMaxPool";
  const int64_t batch = in[0], channels = in.back();
  const int64_t plane = element_count(shape_t(in.begin() + 1, in.end() - 1));
  if (plane == 0 && batch * channels != 0) {
    return c.fail(error_code::unsupported, "global pooling over an empty plane");
  }
  const dtype t = c.inputs[0].type;
  return make_kernel([t, batch, plane, channels, is_max](kernel_run_context& ctx) {
    return launch_global_pool_channels_last(t, ctx.inputs[0].raw(), ctx.outputs[0].raw(), batch,
                                            plane, channels, is_max, ctx.stream);
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
  r.add({"troupe", "MaxPool", backend::cuda, gpu_float_types(), 0, {}, create_pool});
  r.add({"troupe", "AveragePool", backend::cuda, gpu_float_types(), 0, {}, create_pool});
  r.add(
      {"troupe", "GlobalAveragePool", backend::cuda, gpu_float_types(), 0, {}, create_global_pool});
  r.add({"troupe", "GlobalMaxPool", backend::cuda, gpu_float_types(), 0, {}, create_global_pool});
  r.add({"", "BatchNormalization", backend::cuda, gpu_float_types(), 0, {}, create_batch_norm});
}

}  // namespace troupe::kernels::cuda
