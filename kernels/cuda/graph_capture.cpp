// Stream capture of a plan's steps into one CUDA graph (see graph_capture.hpp).
#include "kernels/cuda/graph_capture.hpp"

#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_common.hpp"

namespace troupe::kernels::cuda {

bool graphs_enabled() {
  const char* v = std::getenv("TROUPE_CUDA_GRAPHS");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

expected<std::unique_ptr<stream_graph>> stream_graph::capture(
    backend_context& base, const std::function<status(void* stream)>& record) {
  if (base.kind() != backend::cuda)
    return internal_error("stream_graph::capture on a non-CUDA context");
  cuda_context& ctx = static_cast<cuda_context&>(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  const cudaStream_t s = ctx.stream();
  cudaStreamCaptureStatus already = cudaStreamCaptureStatusNone;
  TROUPE_CUDA_CHECK(cudaStreamIsCapturing(s, &already));
  if (already != cudaStreamCaptureStatusNone) {
    return internal_error("the context's stream is already being captured");
  }
  TROUPE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  const status recorded = record(s);
  // End the capture whatever happened: the stream must leave capture mode before any error return.
  cudaGraph_t graph = nullptr;
  const status ended = TROUPE_CUDA_STATUS(cudaStreamEndCapture(s, &graph));
  auto destroy_graph = [&] {
    if (graph) (void)cudaGraphDestroy(graph);
  };
  if (!recorded.is_ok()) {
    destroy_graph();
    (void)cudaGetLastError();
    return recorded.with_context("capturing the plan into a CUDA graph");
  }
  if (!ended.is_ok()) {
    destroy_graph();
    return ended.with_context(
        "capturing the plan into a CUDA graph (a step enqueued work a graph cannot hold)");
  }
  size_t nodes = 0;
  const status counted = TROUPE_CUDA_STATUS(cudaGraphGetNodes(graph, nullptr, &nodes));
  if (!counted.is_ok()) {
    destroy_graph();
    return counted;
  }
  cudaGraphExec_t exec = nullptr;
  const status instantiated = TROUPE_CUDA_STATUS(cudaGraphInstantiate(&exec, graph, 0));
  destroy_graph();  // the executable graph keeps its own copy
  if (!instantiated.is_ok()) return instantiated;
  std::unique_ptr<stream_graph> g(new stream_graph());
  g->exec_ = exec;
  g->nodes_ = nodes;
  return g;
}

stream_graph::~stream_graph() {
  if (exec_) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
}

status stream_graph::launch(backend_context& base) {
  cuda_context& ctx = static_cast<cuda_context&>(base);
  TROUPE_RETURN_IF_ERROR(ctx.make_current());
  TROUPE_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), ctx.stream()));
  return status::ok();
}

}  // namespace troupe::kernels::cuda
