#pragma once
/// Runs one op on the CUDA backend from host tensors (upload, create, compute, download) and
/// checks it against the CPU backend: the parity harness of tests/gpu. Needs a device; every test
/// starts with TROUPE_REQUIRE_GPU().

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/op_node.hpp"
#include "core/tensor.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/kernel.hpp"

#define TROUPE_REQUIRE_GPU() \
  if (!::troupe::kernels::cuda::device_available()) GTEST_SKIP() << "no CUDA device"

namespace troupe::testing {

/// The process's CUDA context on device 0 (created on first use).
kernels::backend_context& gpu_context();

/// run_op's CUDA twin: infers outputs with the standard schema, uploads every input, creates the
/// kernel with the CUDA context (inputs marked in `constant_inputs`, and the schema's value
/// inputs, are visible to the factory as host values), runs it on the context's stream and
/// downloads the outputs.
expected<std::vector<tensor>> run_op_cuda(const op_node& node, const std::vector<tensor>& inputs,
                                          size_t num_outputs = 1,
                                          std::vector<bool> constant_inputs = {});

/// GPU microseconds per compute of `node` on the CUDA backend (kernel created once, `iterations`
/// computes queued behind a delay kernel and timed with events: host overhead excluded, as in a
/// CUDA graph replay; the wall time per call goes to stderr). For the DISABLED_ benchmarks.
expected<double> time_op_cuda(const op_node& node, const std::vector<tensor>& inputs,
                              std::vector<bool> constant_inputs = {}, int iterations = 50);

/// A host f16 / bf16 copy of an f32 tensor (other types unchanged), and an f32 copy of an f16 /
/// bf16 one.
tensor to_f16(const tensor& t);
tensor to_bf16(const tensor& t);
tensor to_f32(const tensor& t);
/// Host copy of a logical (N, C, D...) tensor in the stored channels-last order (N, D..., C), or
/// back (to_channels_last false): what channels-last kernels read and write.
tensor permute_channels_last(const tensor& t, bool to_channels_last);

struct parity_options {
  size_t num_outputs = 1;
  std::vector<bool> constant_inputs;
  /// Run the CUDA kernel on f16 copies of the float inputs (the CPU reference runs in f32 on the
  /// same rounded values) and compare with the f16 bound.
  bool half = false;
  /// The same with bf16 copies, compared with the bf16 bound.
  bool bf16 = false;
  double tolerance = -1;  // default: 1e-4 for f32, 1e-2 for f16, 2e-2 for bf16
};

/// Runs `node` on both backends and expects every output to agree: float outputs within the
/// relative L2 bound, integer/bool outputs exactly. Failures name the op and output.
void expect_parity(const op_node& node, const std::vector<tensor>& inputs,
                   const parity_options& options = {});

/// Every float unary op of the elementwise kernels (Neg ... ThresholdedRelu, Gelu at opset 20)
/// against the CPU on inputs inside its domain, 3 x 5 x 67 elements (the vector path and its
/// tail), with `options` (f16, bf16...).
void expect_unary_float_parity(const parity_options& options);

/// A convolution's geometry for the cuDNN tests. Empty dilations, pads or auto_pad leave the
/// attribute unset (its ONNX default).
struct conv_case {
  const char* name;
  shape_t x, w;  // logical (N, C, D...), (K, C/group, k...)
  int64_t group;
  std::vector<int64_t> strides, dilations, pads;
  std::string auto_pad;
};
/// Conv (opset 11), or troupe.FusedConv when `fused`, with `c`'s geometry; channels_last = 1 on
/// the FusedConv when asked.
op_node conv_case_node(const conv_case& c, bool fused, bool channels_last = false);

/// Sets an environment variable for one scope and restores the previous state after (kernels
/// and plans read their TROUPE_* switches when they are built).
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    setenv(name, value, 1);
  }
  ~scoped_env() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  std::string name_;
  bool had_ = false;
  std::string old_;
};

}  // namespace troupe::testing
