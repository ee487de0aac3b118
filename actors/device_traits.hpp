#pragma once
/// What differs between the device kinds a worker serves on (CPU, one GPU): the backend, the
/// default precision, the per-thread setup. The in-process workers (actors/worker_core.hpp) and a
/// worker process's serving loop (actors/replica_host.hpp) build their replicas with the same
/// traits. CAF-free.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "runtime/session.hpp"
#include "serving/model_config.hpp"

namespace troupe::actors {

enum class worker_kind : uint8_t { cpu = 0, gpu = 1 };
std::string_view worker_kind_name(worker_kind k);

struct device_traits {
  kernels::backend backend = kernels::backend::cpu;
  /// Compute precision of replicas whose config names none.
  runtime::precision default_precision = runtime::precision::fp32;
  /// Whether model_config::gpu_precision applies (GPU workers) or is ignored (CPU: fp32 only).
  bool takes_gpu_precision = false;
  std::string device_label;  // "cpu", "cuda:0": the metrics label `device` and log text
  /// Runs once on each thread that loads or runs replicas, before its first: OpenMP threads, the
  /// current CUDA device. An error fails every load of the worker (the models then report it).
  std::function<status()> thread_setup;

  /// The compute precision of a replica with config `c`.
  expected<runtime::precision> precision_for(const serving::model_config& c) const {
    if (!takes_gpu_precision || c.gpu_precision.empty()) return default_precision;
    return runtime::parse_precision(c.gpu_precision);
  }
};

/// The CPU's: fp32, `compute_threads` OpenMP threads per thread that computes (0: OpenMP's
/// default). Defined in actors/cpu_worker.cpp.
device_traits cpu_device_traits(int compute_threads);
/// GPU `device_index`'s: fp16 unless the config says otherwise, the device made current on each
/// thread; without CUDA in the build, a setup that fails typed. Defined in actors/gpu_worker.cpp.
device_traits gpu_device_traits(int device_index);

}  // namespace troupe::actors
