#include "actors/cpu_worker.hpp"

#include <omp.h>

#include "actors/worker_core.hpp"

namespace troupe::actors {

device_traits cpu_device_traits(int compute_threads) {
  device_traits t;
  t.backend = kernels::backend::cpu;
  t.default_precision = runtime::precision::fp32;
  t.takes_gpu_precision = false;
  t.device_label = "cpu";
  // OpenMP's thread count is per calling thread: set it on the worker's own thread.
  t.thread_setup = [threads = compute_threads]() {
    if (threads > 0) omp_set_num_threads(threads);
    return status::ok();
  };
  return t;
}

worker_actor spawn_cpu_worker(caf::actor_system& sys, const worker_options& o, bool detached) {
  worker_options co = o;
  co.kind = worker_kind::cpu;
  return spawn_worker_with(sys, co, cpu_device_traits(o.compute_threads), detached);
}

}  // namespace troupe::actors
