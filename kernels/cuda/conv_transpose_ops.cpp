// CUDA ConvTranspose through cuDNN's backward-data convolution: a transposed convolution of X
// (N, C, I...) with W (C, M/group, k...) is the gradient of the forward convolution that maps
// Y (N, M, O...) to X with the same W, strides, dilations and groups. cuDNN pads symmetrically, so
// the kernel runs it with one pad p per axis and, where ONNX's (pads_begin, pads_end -
// output_padding) is not that, computes a window of the full result into the workspace and copies
// out the part ONNX asks for. The bias is added afterwards (one elementwise pass). fp32 runs on
// FMA math where cuDNN has it for the shape (no TF32), fp16 on tensor cores with fp32
// accumulation. The algorithm is cuDNN's heuristic first choice (not timed, unlike Conv's).
#include <algorithm>
#include <memory>

#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/cudnn_descriptor.hpp"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/tensor.cuh"
#include "kernels/ops/nn_geometry.hpp"

namespace troupe::kernels::cuda {
namespace {

constexpr size_t kMaxWorkspaceBytes = size_t{512} << 20;
constexpr size_t kAlign = 256;

size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

/// Everything compute needs; owned by the kernel's closure.
struct conv_transpose_state {
  cuda_context* ctx = nullptr;
  dtype type = dtype::f32;
  tensor_desc x_desc, y_desc;  // x: cuDNN's dy (the ONNX input), y: cuDNN's dx (full window)
  filter_desc w_desc;
  conv_desc conv;
  cudnnConvolutionBwdDataAlgo_t algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  size_t cudnn_ws = 0;
  device_buffer weights;  // constant W in X's dtype; else W is read from input 1
  device_buffer bias;     // constant B; else input 2 (when present)
  bool has_bias = false;
  int64_t channels = 0;  // M
  int64_t spatial = 1;   // product of the output's spatial dims
  int64_t out_elements = 0;
  bool crop = false;  // cuDNN writes a larger window into the workspace; crop_plan copies out
  strided_copy_plan crop_plan;
  size_t window_bytes = 0;

  status run(kernel_run_context& rc) {
    TROUPE_RETURN_IF_ERROR(ctx->bind_cudnn_stream(to_stream(rc.stream)));
    const void* w = weights ? weights.get() : rc.inputs[1].raw();
    const void* b = bias ? bias.get() : (has_bias ? rc.inputs[2].raw() : nullptr);
    auto* ws = static_cast<uint8_t*>(rc.workspace);
    void* window = crop ? ws + align_up(cudnn_ws) : rc.outputs[0].raw();
    const float one = 1.0f, zero = 0.0f;
    TROUPE_CUDA_CHECK(cudnnConvolutionBackwardData(
        ctx->cudnn(), &one, w_desc.get(), w, x_desc.get(), rc.inputs[0].raw(), conv.get(), algo, ws,
        cudnn_ws, &zero, y_desc.get(), window));
    const size_t es = dtype_size(type);
    if (crop) {
      TROUPE_RETURN_IF_ERROR(
          launch_strided_copy(es, window, rc.outputs[0].raw(), crop_plan, rc.stream));
    }
    if (!b) return status::ok();
    epilogue_params p;
    p.type = type;
    p.y = rc.outputs[0].raw();
    p.n = out_elements;
    p.bias = b;
    p.bias_len = channels;
    p.bias_inner = spatial;
    return launch_epilogue(p, rc.stream);
  }
};

expected<std::vector<int>> int_dims(const kernel_create_context& c, const shape_t& s) {
  std::vector<int> v;
  for (int64_t d : s) {
    if (d < 0 || d > INT32_MAX) return c.fail(error_code::unsupported, "a dimension above 2^31");
    v.push_back(static_cast<int>(d));
  }
  return v;
}

expected<std::unique_ptr<kernel>> create_conv_transpose(const kernel_create_context& c) {
  TROUPE_ASSIGN_OR_RETURN(conv_transpose_geometry g,
                          resolve_conv_transpose(c.node, c.inputs[0], c.inputs[1]));
  const dtype t = c.inputs[0].type;
  if (!is_gpu_float(t) || c.inputs[1].type != t) {
    return c.fail(error_code::unsupported, "ConvTranspose needs X and W of one float dtype");
  }
  const shape_t& xs = c.inputs[0].shape;
  const shape_t& ws = c.inputs[1].shape;
  const size_t n = xs.size() - 2;
  if (n < 1 || n > 3) return c.fail(error_code::unsupported, "only 1-D to 3-D ConvTranspose");
  if (c.outputs[0].shape != g.output_shape) {
    return c.fail(error_code::internal, "output shape differs from the geometry");
  }
  TROUPE_ASSIGN_OR_RETURN(cuda_context * cctx, context_of(c));
  auto st = std::make_shared<conv_transpose_state>();
  st->ctx = cctx;
  st->type = t;
  st->channels = g.output_shape[1];
  st->out_elements = element_count(g.output_shape);
  for (size_t i = 0; i < n; ++i) st->spatial *= g.output_shape[2 + i];
  st->has_bias = c.has_input(2);
  if (st->has_bias && (c.inputs[2].type != t || c.inputs[2].elements() != st->channels)) {
    return c.fail(error_code::invalid_model, "B must have one value of X's dtype per channel");
  }
  if (st->out_elements == 0 || element_count(xs) == 0) {
    return c.fail(error_code::unsupported, "an empty ConvTranspose");
  }

  // Per axis: cuDNN's symmetric pad p and window length L; ONNX's output starts at offset
  // pads_begin - p of the window. The window must be what the forward convolution maps back to
  // the input's length: floor((L + 2p - extent) / stride) + 1 == I.
  shape_t x4 = xs, y_window = g.output_shape, w4 = ws;
  std::vector<int> pad(n), stride(n), dil(n);
  shape_t offset(n, 0), window_len(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = xs[2 + i], s = g.strides[i], d = g.dilations[i];
    const int64_t extent = (g.kernel[i] - 1) * d + 1;
    const int64_t pb = g.pads_begin[i], pe = g.pads_end[i] - g.output_padding[i];
    const int64_t out = g.output_shape[2 + i];
    if (pb < 0) return c.fail(error_code::unsupported, "a negative begin pad");
    const int64_t p = std::clamp<int64_t>(std::min(pb, pe), 0, pb);
    const int64_t natural = s * (in - 1) + extent - 2 * p;  // window cuDNN fills from X
    if (natural < 1) return c.fail(error_code::unsupported, "pads larger than the output");
    const int64_t need = pb - p + out;  // the window must reach ONNX's last element
    const int64_t len = std::max(need, natural);
    if (len > natural + s - 1) {
      return c.fail(error_code::unsupported, "these pads and output_padding on cuDNN");
    }
    pad[i] = static_cast<int>(p);
    stride[i] = static_cast<int>(s);
    dil[i] = static_cast<int>(d);
    offset[i] = pb - p;
    y_window[2 + i] = len;
    window_len[i] = len;
    if (len != out || offset[i] != 0) st->crop = true;
  }
  // cuDNN wants at least 2 spatial axes: a 1-D transposed convolution runs as 2-D with height 1.
  std::vector<int> pad_c = pad, stride_c = stride, dil_c = dil;
  if (n == 1) {
    x4.insert(x4.begin() + 2, 1);
    y_window.insert(y_window.begin() + 2, 1);
    w4.insert(w4.begin() + 2, 1);
    pad_c.insert(pad_c.begin(), 0);
    stride_c.insert(stride_c.begin(), 1);
    dil_c.insert(dil_c.begin(), 1);
  }
  TROUPE_ASSIGN_OR_RETURN(cudnnDataType_t dt, cudnn_type(t));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> xd, int_dims(c, x4));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> yd, int_dims(c, y_window));
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> wd, int_dims(c, w4));
  TROUPE_RETURN_IF_ERROR(set_packed_tensor_desc(st->x_desc, dt, xd));
  TROUPE_RETURN_IF_ERROR(set_packed_tensor_desc(st->y_desc, dt, yd));
  TROUPE_CUDA_CHECK(cudnnCreateFilterDescriptor(st->w_desc.out()));
  TROUPE_CUDA_CHECK(cudnnSetFilterNdDescriptor(st->w_desc.get(), dt, CUDNN_TENSOR_NCHW,
                                               static_cast<int>(wd.size()), wd.data()));
  TROUPE_CUDA_CHECK(cudnnCreateConvolutionDescriptor(st->conv.out()));
  TROUPE_CUDA_CHECK(cudnnSetConvolutionNdDescriptor(st->conv.get(), static_cast<int>(pad_c.size()),
                                                    pad_c.data(), stride_c.data(), dil_c.data(),
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  TROUPE_CUDA_CHECK(cudnnSetConvolutionGroupCount(st->conv.get(), static_cast<int>(g.group)));
  const cudnnMathType_t math = t == dtype::f32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  TROUPE_CUDA_CHECK(cudnnSetConvolutionMathType(st->conv.get(), math));
  // The forward convolution of the window must give back X's shape, or cuDNN refuses the call.
  std::vector<int> check(xd.size());
  TROUPE_CUDA_CHECK(
      cudnnGetConvolutionNdForwardOutputDim(st->conv.get(), st->y_desc.get(), st->w_desc.get(),
                                            static_cast<int>(check.size()), check.data()));
  if (check != xd) return c.fail(error_code::internal, "cuDNN's window does not map back to X");

  // cuDNN's heuristic ranking; the first algorithm that runs with a bounded workspace. fp32 takes
  // FMA math where cuDNN offers it (TF32 would miss the CPU by ~1e-3), else its default math.
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int returned = 0;
  TROUPE_CUDA_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      cctx->cudnn(), st->w_desc.get(), st->x_desc.get(), st->conv.get(), st->y_desc.get(),
      CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf));
  bool found = false;
  for (int pass = 0; pass < 2 && !found; ++pass) {
    for (int i = 0; i < returned && !found; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
      if (t == dtype::f32) {
        if (perf[i].mathType == CUDNN_TENSOR_OP_MATH) continue;
        if (pass == 0 && perf[i].mathType != CUDNN_FMA_MATH) continue;
      }
      if (!TROUPE_CUDA_STATUS(cudnnSetConvolutionMathType(st->conv.get(), perf[i].mathType))
               .is_ok()) {
        continue;
      }
      size_t bytes = 0;
      if (!TROUPE_CUDA_STATUS(cudnnGetConvolutionBackwardDataWorkspaceSize(
                                  cctx->cudnn(), st->w_desc.get(), st->x_desc.get(), st->conv.get(),
                                  st->y_desc.get(), perf[i].algo, &bytes))
               .is_ok() ||
          bytes > kMaxWorkspaceBytes) {
        continue;
      }
      st->algo = perf[i].algo;
      st->cudnn_ws = bytes;
      found = true;
    }
  }
  if (!found) return c.fail(error_code::unsupported, "cuDNN has no algorithm for this shape");

  if (st->crop) {
    // Y is the window (N, M, L...) read from `offset` on each spatial axis.
    const shape_t& out = g.output_shape;
    shape_t window_dims = out;
    for (size_t i = 0; i < n; ++i) window_dims[2 + i] = window_len[i];
    shape_t strides(window_dims.size(), 1);
    for (size_t d = window_dims.size(); d-- > 1;) strides[d - 1] = strides[d] * window_dims[d];
    strided_copy_plan& p = st->crop_plan;
    p.rank = static_cast<int>(out.size());
    p.out_elements = element_count(out);
    for (size_t d = 0; d < out.size(); ++d) {
      p.out_dims[d] = out[d];
      p.in_strides[d] = strides[d];
      if (d >= 2) p.in_offset += offset[d - 2] * strides[d];
    }
    st->window_bytes = static_cast<size_t>(element_count(window_dims)) * dtype_size(t);
  }
  if (const tensor* w = c.value(1)) {
    TROUPE_ASSIGN_OR_RETURN(st->weights, device_buffer::shared_as(*cctx, *w, t));
  }
  if (st->has_bias) {
    if (const tensor* b = c.value(2)) {
      TROUPE_ASSIGN_OR_RETURN(st->bias, device_buffer::shared_as(*cctx, *b, t));
    }
  }
  std::vector<int> unread;
  if (st->weights) unread.push_back(1);
  if (st->bias) unread.push_back(2);
  const size_t workspace = align_up(st->cudnn_ws) + (st->crop ? align_up(st->window_bytes) : 0);
  return make_kernel([st](kernel_run_context& rc) { return st->run(rc); }, workspace, {}, false,
                     unread);
}

}  // namespace

void register_conv_transpose(kernel_registry& r) {
  r.add({"", "ConvTranspose", backend::cuda, gpu_float_types(), 0, {}, create_conv_transpose});
}

}  // namespace troupe::kernels::cuda
