#include "actors/gpu_worker.hpp"

#include <string>

#include "actors/worker_core.hpp"

#ifdef TROUPE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#endif

namespace troupe::actors {

device_traits gpu_device_traits(int device_index) {
  device_traits t;
  t.backend = kernels::backend::cuda;
  t.default_precision = runtime::precision::fp16;
  t.takes_gpu_precision = true;
  t.device_label = "cuda:" + std::to_string(device_index);
  t.thread_setup = [device = device_index]() -> status {
#ifdef TROUPE_HAVE_CUDA
    return kernels::cuda::set_current_device(device);
#else
    (void)device;
    return status(error_code::unavailable,
                  "this troupe was built without the CUDA backend: no gpu_worker");
#endif
  };
  return t;
}

worker_actor spawn_gpu_worker(caf::actor_system& sys, const worker_options& o, bool detached) {
  worker_options go = o;
  go.kind = worker_kind::gpu;
  return spawn_worker_with(sys, go, gpu_device_traits(o.device_index), detached);
}

expected<std::vector<int>> resolve_gpus(const std::optional<std::vector<int>>& configured) {
#ifdef TROUPE_HAVE_CUDA
  const int count = kernels::cuda::device_count();
  if (!configured) {
    std::vector<int> all;
    for (int d = 0; d < count; ++d) all.push_back(d);
    return all;
  }
  for (int d : *configured)
    if (d < 0 || d >= count)
      return invalid_argument("gpus: CUDA device " + std::to_string(d) + " does not exist (" +
                              std::to_string(count) + " visible)");
  return *configured;
#else
  if (configured && !configured->empty())
    return invalid_argument("gpus: this troupe was built without the CUDA backend");
  return std::vector<int>();
#endif
}

}  // namespace troupe::actors
