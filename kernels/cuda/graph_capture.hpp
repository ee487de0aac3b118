#pragma once
/// Whole-plan CUDA graphs: the work a plan enqueues on a context's stream, recorded once into a
/// CUDA graph, instantiated once and replayed per run. A replay costs one launch of host time
/// instead of one or more library calls per step (cuDNN's legacy calls take 25-200 us of host
/// time each). Plain C++: the runtime reaches it through runtime/device.hpp.
///
/// What a replay assumes: every pointer the recorded work touches (arena, constants, workspace,
/// kernel-owned buffers) stays where it was at capture, and the recorded work does not depend on
/// host values that change between runs. runtime/plan.cpp keeps both true: inputs are copied into
/// the arena before the launch and outputs out of it after, outside the graph, on the same stream.

#include <functional>
#include <memory>

#include "core/status.hpp"
#include "kernels/kernel.hpp"

namespace troupe::kernels::cuda {

/// False when TROUPE_CUDA_GRAPHS=0 (read at each call: plans read it once, when they are built).
bool graphs_enabled();

/// A captured and instantiated graph of one context's stream work. Owns the cudaGraphExec_t;
/// destroying it never touches the context (graphs belong to the CUDA context of the device).
class stream_graph {
 public:
  /// Puts `ctx`'s stream in capture mode (cudaStreamCaptureModeThreadLocal: other threads may
  /// keep allocating and synchronising meanwhile; this thread may not), calls `record(stream)`
  /// and instantiates what it enqueued. Nothing runs. When `record` fails or enqueues something a
  /// graph cannot hold (a synchronisation, a legacy-stream call), the capture is abandoned, the
  /// stream is left as it was before, and the error says why: the caller then runs eagerly.
  static expected<std::unique_ptr<stream_graph>> capture(
      backend_context& ctx, const std::function<status(void* stream)>& record);
  ~stream_graph();
  stream_graph(const stream_graph&) = delete;
  stream_graph& operator=(const stream_graph&) = delete;

  /// Enqueues one replay on `ctx`'s stream (the context it was captured on).
  status launch(backend_context& ctx);
  /// Kernel, memset and memcpy nodes of the graph, for reports and tests.
  size_t node_count() const { return nodes_; }

 private:
  stream_graph() = default;
  void* exec_ = nullptr;  // cudaGraphExec_t
  size_t nodes_ = 0;
};

}  // namespace troupe::kernels::cuda
