#pragma once
/// Graph passes over a specialised graph (every shape concrete, plan-time values folded):
/// Identity/Dropout removal, BatchNormalization folded into the preceding Conv's weights, the erf
/// GELU pattern recognised as one Gelu node, and Conv/Gemm/MatMul fused with their bias,
/// activation and residual Add into troupe.Fused* ops where the target backend has those kernels,
/// then (after the layout pass) elementwise chains into troupe.FusedElementwise
/// (runtime/elementwise_fusion.hpp).

#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

/// Channels-last layout planning (runtime/layout.hpp), run after the fusions.
enum class layout_mode : uint8_t {
  automatic,      // on for the CUDA backend, off for the CPU; TROUPE_CHANNELS_LAST=1/0 overrides
  nchw,           // off
  channels_last,  // on
};

struct pass_options {
  kernels::backend where = kernels::backend::cpu;
  bool enable_fusion = true;  // false: only Identity/Dropout removal (no fusion, no layout)
  bool enable_attention = true;  // troupe.Attention and packed QKV (runtime/attention.hpp)
  layout_mode layout = layout_mode::automatic;
};

/// Whether run_graph_passes plans channels-last layouts for these options (reads the environment
/// for layout_mode::automatic).
bool channels_last_enabled(const pass_options& options);

status run_graph_passes(graph& g, const pass_options& options);

/// The passes one by one (run_graph_passes runs them in this order); each returns how many
/// rewrites it made.
int remove_identities(graph& g);
expected<int> fold_batchnorm_into_conv(graph& g);
int fuse_gelu(graph& g, kernels::backend where);
expected<int> fuse_conv(graph& g, kernels::backend where);
int fuse_matmul(graph& g, kernels::backend where);
int fuse_gemm(graph& g, kernels::backend where);

}  // namespace troupe::runtime
