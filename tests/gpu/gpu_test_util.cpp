#include "tests/gpu/gpu_test_util.hpp"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/ops/nn_geometry.hpp"
#include "kernels/cuda/cuda_common.hpp"
#include "kernels/cuda/tensor.cuh"
#include "kernels/op_schema.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {

kernels::backend_context& gpu_context() {
  static std::unique_ptr<kernels::backend_context> ctx = [] {
    auto c = kernels::cuda::create_context(0);
    if (!c) {
      ADD_FAILURE() << "create_context: " << c.error().to_string();
      std::abort();
    }
    return std::move(c).value();
  }();
  return *ctx;
}

namespace {

/// Device bytes freed when the holder goes away (after the test synchronised).
struct device_block {
  void* p = nullptr;
  ~device_block() {
    if (p) kernels::cuda::device_free(gpu_context(), p);
  }
};

expected<std::vector<tensor>> run_op_cuda_impl(const op_node& node,
                                               const std::vector<tensor>& inputs,
                                               size_t num_outputs,
                                               std::vector<bool> constant_inputs, int iterations,
                                               double* us_per_run);

}  // namespace

expected<std::vector<tensor>> run_op_cuda(const op_node& node, const std::vector<tensor>& inputs,
                                          size_t num_outputs, std::vector<bool> constant_inputs) {
  return run_op_cuda_impl(node, inputs, num_outputs, std::move(constant_inputs), 0, nullptr);
}

expected<double> time_op_cuda(const op_node& node, const std::vector<tensor>& inputs,
                              std::vector<bool> constant_inputs, int iterations) {
  double us = 0;
  TROUPE_RETURN_IF_ERROR(
      run_op_cuda_impl(node, inputs, 1, std::move(constant_inputs), iterations, &us).take_status());
  return us;
}

namespace {

expected<std::vector<tensor>> run_op_cuda_impl(const op_node& node,
                                               const std::vector<tensor>& inputs,
                                               size_t num_outputs,
                                               std::vector<bool> constant_inputs, int iterations,
                                               double* us_per_run) {
  namespace cuda = kernels::cuda;
  auto& ctx = gpu_context();
  std::vector<tensor_info> infos;
  std::vector<const tensor*> values;
  for (const auto& in : inputs) {
    infos.push_back(in.info());
    values.push_back(in.defined() ? &in : nullptr);
  }
  const auto* schema = kernels::schema_registry::standard().find(node.domain, node.op_type);
  if (!schema) return unsupported("no schema for " + node.describe());
  kernels::infer_context ic{node, infos, values, num_outputs};
  TROUPE_ASSIGN_OR_RETURN(auto out_infos, schema->infer(ic));
  std::vector<const tensor*> create_values(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool is_const = i < constant_inputs.size() && constant_inputs[i];
    for (int vi : schema->value_inputs) is_const |= static_cast<size_t>(vi) == i;
    if (is_const && inputs[i].defined()) create_values[i] = &inputs[i];
  }
  kernels::kernel_create_context cc{node, infos, create_values, out_infos, &ctx};
  TROUPE_ASSIGN_OR_RETURN(auto k,
                          kernels::kernel_registry::standard().create(kernels::backend::cuda, cc));

  std::vector<std::unique_ptr<device_block>> blocks;
  auto alloc = [&](size_t bytes) -> expected<void*> {
    auto b = std::make_unique<device_block>();
    TROUPE_ASSIGN_OR_RETURN(b->p, cuda::device_malloc(ctx, bytes + 16));
    void* p = b->p;
    blocks.push_back(std::move(b));
    return p;
  };
  std::vector<tensor> dev_inputs;
  for (const auto& in : inputs) {
    if (!in.defined()) {
      dev_inputs.emplace_back();
      continue;
    }
    TROUPE_ASSIGN_OR_RETURN(void* p, alloc(in.bytes()));
    TROUPE_RETURN_IF_ERROR(cuda::copy_to_device(ctx, p, in.raw(), in.bytes()));
    dev_inputs.push_back(tensor::borrow(in.type(), in.shape(), p, device_kind::cuda));
  }
  std::vector<tensor> dev_outputs;
  for (size_t o = 0; o < out_infos.size(); ++o) {
    const auto& oi = out_infos[o];
    if (!oi.present()) {
      dev_outputs.emplace_back();
    } else {
      TROUPE_ASSIGN_OR_RETURN(void* p, alloc(oi.bytes()));
      dev_outputs.push_back(tensor::borrow(oi.type, oi.shape, p, device_kind::cuda));
    }
  }
  void* workspace = nullptr;
  if (k->workspace_bytes() > 0) {
    TROUPE_ASSIGN_OR_RETURN(workspace, alloc(k->workspace_bytes()));
  }
  // Views get outputs of their own here: their compute (the copy the planner falls back to when
  // it cannot alias) is what runs.
  kernels::kernel_run_context rc{dev_inputs, dev_outputs, workspace, cuda::stream(ctx)};
  // Three computes with the outputs poisoned (0xff bytes: NaN) before each: kernels that cache
  // per-pointer state (the Conv kernel captures a CUDA graph on the second call and replays it on
  // the third) must produce the result every time.
  for (int round = 0; round < 3; ++round) {
    for (auto& d : dev_outputs) {
      if (d.defined()) {
        TROUPE_CUDA_CHECK(cudaMemsetAsync(d.raw(), 0xff, d.bytes(),
                                          static_cast<cudaStream_t>(cuda::stream(ctx))));
      }
    }
    TROUPE_RETURN_IF_ERROR(k->compute(rc));
  }
  if (us_per_run) {
    TROUPE_RETURN_IF_ERROR(cuda::synchronize(ctx));
    // Wall time per call (what a plain stream sees, host overhead included)...
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) TROUPE_RETURN_IF_ERROR(k->compute(rc));
    TROUPE_RETURN_IF_ERROR(cuda::synchronize(ctx));
    const std::chrono::duration<double, std::micro> wall = std::chrono::steady_clock::now() - start;
    // ...and GPU time per call (what a CUDA graph replay sees): the calls queue up behind a delay
    // kernel and run back to back between two events.
    cudaEvent_t begin = nullptr, end = nullptr;
    TROUPE_CUDA_CHECK(cudaEventCreate(&begin));
    TROUPE_CUDA_CHECK(cudaEventCreate(&end));
    const auto s = static_cast<cudaStream_t>(cuda::stream(ctx));
    TROUPE_RETURN_IF_ERROR(
        kernels::cuda::launch_delay(static_cast<uint64_t>(wall.count() * 1500), s));
    TROUPE_CUDA_CHECK(cudaEventRecord(begin, s));
    for (int i = 0; i < iterations; ++i) TROUPE_RETURN_IF_ERROR(k->compute(rc));
    TROUPE_CUDA_CHECK(cudaEventRecord(end, s));
    TROUPE_CUDA_CHECK(cudaEventSynchronize(end));
    float gpu_ms = 0;
    TROUPE_CUDA_CHECK(cudaEventElapsedTime(&gpu_ms, begin, end));
    (void)cudaEventDestroy(begin);
    (void)cudaEventDestroy(end);
    *us_per_run = gpu_ms * 1000.0 / std::max(iterations, 1);
    std::fprintf(stderr, "[troupe bench] wall %.1f us per call (host overhead included)\n",
                 wall.count() / std::max(iterations, 1));
  }
  std::vector<tensor> outputs;
  for (const auto& d : dev_outputs) {
    if (!d.defined()) {
      outputs.emplace_back();
      continue;
    }
    tensor h = tensor::allocate(d.type(), d.shape());
    TROUPE_RETURN_IF_ERROR(cuda::copy_to_host(ctx, h.raw(), d.raw(), d.bytes()));
    outputs.push_back(std::move(h));
  }
  TROUPE_RETURN_IF_ERROR(cuda::synchronize(ctx));
  k.reset();  // frees the kernel's device buffers (stream-ordered) before the blocks go
  return outputs;
}

}  // namespace

tensor to_f16(const tensor& t) {
  if (t.type() != dtype::f32) return t;
  // CUDA's host conversion: round to nearest even, subnormals included.
  tensor h = tensor::allocate(dtype::f16, t.shape());
  for (int64_t i = 0; i < t.elements(); ++i) {
    h.data<uint16_t>()[i] = __half_raw(__float2half_rn(t.data<float>()[i])).x;
  }
  return h;
}

tensor to_bf16(const tensor& t) {
  if (t.type() != dtype::f32) return t;
  // Round to nearest even, as __float2bfloat16_rn and the precision pass convert.
  tensor h = tensor::allocate(dtype::bf16, t.shape());
  for (int64_t i = 0; i < t.elements(); ++i) {
    h.data<uint16_t>()[i] = float_to_bfloat16(t.data<float>()[i]);
  }
  return h;
}

tensor to_f32(const tensor& t) {
  if (t.type() != dtype::f16 && t.type() != dtype::bf16) return t;
  const bool bf = t.type() == dtype::bf16;
  tensor f = tensor::allocate(dtype::f32, t.shape());
  for (int64_t i = 0; i < t.elements(); ++i) {
    const uint16_t bits = t.data<uint16_t>()[i];
    f.data<float>()[i] = bf ? bfloat16_to_float(bits) : half_to_float(bits);
  }
  return f;
}

void expect_parity(const op_node& node, const std::vector<tensor>& inputs,
                   const parity_options& options) {
  std::vector<tensor> gpu_inputs = inputs, cpu_inputs = inputs;
  const bool reduced = options.half || options.bf16;  // the GPU runs a 16-bit float type
  if (reduced) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i].defined() || inputs[i].type() != dtype::f32) continue;
      gpu_inputs[i] = options.bf16 ? to_bf16(inputs[i]) : to_f16(inputs[i]);
      cpu_inputs[i] = to_f32(gpu_inputs[i]);  // the same rounded values, in f32
    }
  }
  // Deep copies: an op that writes into its inputs (on either backend) is a failure of its own.
  std::vector<tensor> gpu_before, cpu_before;
  for (const auto& t : gpu_inputs) gpu_before.push_back(t.defined() ? t.clone() : t);
  for (const auto& t : cpu_inputs) cpu_before.push_back(t.defined() ? t.clone() : t);
  auto gpu = run_op_cuda(node, gpu_inputs, options.num_outputs, options.constant_inputs);
  ASSERT_TRUE(gpu.has_value()) << node.describe() << " on cuda: " << gpu.error().to_string();
  auto cpu =
      run_op(node, cpu_inputs, options.num_outputs, kernels::backend::cpu, options.constant_inputs);
  ASSERT_TRUE(cpu.has_value()) << node.describe() << " on cpu: " << cpu.error().to_string();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    EXPECT_EQ(std::memcmp(gpu_before[i].raw(), gpu_inputs[i].raw(), gpu_inputs[i].bytes()), 0)
        << node.describe() << ": input " << i << " changed while running on cuda";
    EXPECT_EQ(std::memcmp(cpu_before[i].raw(), cpu_inputs[i].raw(), cpu_inputs[i].bytes()), 0)
        << node.describe() << ": input " << i << " changed while running on cpu";
  }
  ASSERT_EQ(cpu->size(), gpu->size());
  const double tol = options.tolerance > 0 ? options.tolerance
                     : options.bf16        ? 2e-2
                     : options.half        ? 1e-2
                                           : 1e-4;
  const char* variant = options.bf16 ? " (bf16)" : options.half ? " (f16)" : "";
  for (size_t o = 0; o < cpu->size(); ++o) {
    const tensor& want = (*cpu)[o];
    if (!reduced && want.defined() && (*gpu)[o].defined()) {
      EXPECT_EQ((*gpu)[o].type(), want.type()) << node.describe() << " output " << o;
    }
    const tensor got = to_f32((*gpu)[o]);
    if (!want.defined()) {
      EXPECT_FALSE(got.defined());
      continue;
    }
    ASSERT_EQ(got.shape(), want.shape()) << node.describe() << " output " << o;
    if (is_floating(want.type())) {
      const double err = relative_l2(got, want);
      if (err <= tol) continue;
      // Where they differ most (NaN/inf mismatches first), to tell a kernel bug from rounding.
      int64_t worst = 0, non_finite = 0;
      double worst_diff = -1;
      for (int64_t i = 0; i < want.elements(); ++i) {
        const double g = got.value_as_double(i), w = want.value_as_double(i);
        if (!std::isfinite(g) || !std::isfinite(w)) ++non_finite;
        // A finite/non-finite mismatch counts as infinitely far; NaN against NaN as equal.
        double d = std::isfinite(g) != std::isfinite(w) ? INFINITY : std::fabs(g - w);
        if (std::isnan(d)) d = g == w || (std::isnan(g) && std::isnan(w)) ? 0 : INFINITY;
        if (d > worst_diff) {
          worst_diff = d;
          worst = i;
        }
      }
      ADD_FAILURE() << node.describe() << " output " << o << " " << want.info().to_string()
                    << variant << ": relative L2 " << err << " > " << tol << "; worst element "
                    << worst << ": cuda " << got.value_as_double(worst) << ", cpu "
                    << want.value_as_double(worst) << "; " << non_finite << " non-finite elements";
    } else {
      ASSERT_EQ(got.type(), want.type()) << node.describe() << " output " << o;
      int64_t mismatches = 0, first = -1;
      for (int64_t i = 0; i < want.elements(); ++i) {
        if (got.value_as_int64(i) != want.value_as_int64(i)) {
          if (first < 0) first = i;
          ++mismatches;
        }
      }
      EXPECT_EQ(mismatches, 0) << node.describe() << " output " << o << ": first mismatch at "
                               << first;
    }
  }
}

tensor permute_channels_last(const tensor& t, bool to_channels_last) {
  const size_t rank = t.rank();
  const shape_t& in = t.shape();
  const shape_t out = to_channels_last ? kernels::logical_to_channels_last(in)
                                       : kernels::channels_last_to_logical(in);
  // Output axis k reads input axis from[k].
  std::vector<size_t> from;
  if (to_channels_last) {
    from.push_back(0);
    for (size_t d = 2; d < rank; ++d) from.push_back(d);
    from.push_back(1);
  } else {
    from = {0, rank - 1};
    for (size_t d = 1; d + 1 < rank; ++d) from.push_back(d);
  }
  std::vector<int64_t> in_stride(rank, 1);
  for (size_t d = rank - 1; d-- > 0;) in_stride[d] = in_stride[d + 1] * in[d + 1];
  tensor r = tensor::allocate(t.type(), out);
  const size_t es = dtype_size(t.type());
  std::vector<int64_t> index(rank, 0);
  for (int64_t o = 0; o < r.elements(); ++o) {
    int64_t at = 0;
    for (size_t k = 0; k < rank; ++k) at += index[k] * in_stride[from[k]];
    std::memcpy(static_cast<uint8_t*>(r.raw()) + o * es,
                static_cast<const uint8_t*>(t.raw()) + at * es, es);
    for (size_t k = rank; k-- > 0;) {
      if (++index[k] < out[k]) break;
      index[k] = 0;
    }
  }
  return r;
}

void expect_unary_float_parity(const parity_options& options) {
  struct unary_case {
    const char* op;
    double lo, hi;  // the input range
  };
  const unary_case cases[] = {
      {"Neg", -3, 3},
      {"Abs", -3, 3},
      {"Relu", -3, 3},
      {"Sqrt", 0.01, 4},
      {"Exp", -3, 3},
      {"Log", 0.01, 5},
      {"Erf", -3, 3},
      {"Tanh", -3, 3},
      {"Sigmoid", -6, 6},
      {"Reciprocal", 0.5, 3},
      {"Floor", -5, 5},
      {"Ceil", -5, 5},
      {"HardSwish", -5, 5},
      {"Gelu", -4, 4},
      {"Sin", -4, 4},
      {"Cos", -4, 4},
      {"Round", -5, 5},
      {"Sign", -2, 2},
      {"Softplus", -30, 30},
      {"Softsign", -5, 5},
      {"Elu", -3, 3},
      {"Selu", -3, 3},
      {"Celu", -3, 3},
      {"Mish", -30, 30},
      {"ThresholdedRelu", -3, 3},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.op);
    const op_node n = make_node(c.op, c.op == std::string("Gelu") ? 20 : 17);
    expect_parity(n, {random_tensor(dtype::f32, {3, 5, 67}, c.lo, c.hi)}, options);
  }
}

op_node conv_case_node(const conv_case& c, bool fused, bool channels_last) {
  op_node n = fused || channels_last ? make_node("FusedConv", 1, "troupe") : make_node("Conv", 11);
  n.attrs.set("group", c.group);
  n.attrs.set("strides", c.strides);
  if (!c.dilations.empty()) n.attrs.set("dilations", c.dilations);
  if (!c.pads.empty()) n.attrs.set("pads", c.pads);
  if (!c.auto_pad.empty()) n.attrs.set("auto_pad", c.auto_pad);
  if (channels_last) n.attrs.set("channels_last", int64_t{1});
  return n;
}

}  // namespace troupe::testing
