#pragma once
/// The implementation cpu_worker and gpu_worker share (actors/worker.hpp has the protocol): the
/// replica table, loading, running one batch at a time, fault injection, failure on device errors
/// and the memory metrics. What differs between device kinds comes in as device_traits.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/replica.hpp"
#include "actors/worker.hpp"
#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "runtime/session.hpp"

namespace troupe::actors {

struct device_traits {
  kernels::backend backend = kernels::backend::cpu;
  /// Compute precision of replicas whose config names none.
  runtime::precision default_precision = runtime::precision::fp32;
  /// Whether model_config::gpu_precision applies (GPU workers) or is ignored (CPU: fp32 only).
  bool takes_gpu_precision = false;
  std::string device_label;  // "cpu", "cuda:0": the metrics label `device` and log text
  /// Runs once on the worker's thread before its first load or run: OpenMP threads, the current
  /// CUDA device. An error fails every load of the worker (the models then report it).
  std::function<status()> thread_setup;
};

/// A worker's live replicas by id (every entry non-null; an unload erases it). Shared: a build on
/// the worker's build thread holds the replica it takes its weights from until it is done, so
/// an unload meanwhile does not pull them from under it.
using replica_table = std::map<uint32_t, std::shared_ptr<replica>>;

/// The live replica that a new replica with options `o` takes its weights from (the first that
/// can_share_weights), or null: then it loads the model file. A worker's replicas of one model
/// version (instance_count > 1, or reloads) thus share one copy of the weights on its device.
std::shared_ptr<replica> weights_sibling(const replica_table& replicas, const replica::options& o);

worker_actor spawn_worker_with(caf::actor_system& sys, const worker_options& o,
                               device_traits traits, bool detached);

}  // namespace troupe::actors
