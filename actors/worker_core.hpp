#pragma once
/// The implementation cpu_worker and gpu_worker share (actors/worker.hpp has the protocol): the
/// replica table, loading, running one batch at a time, fault injection, failure on device errors
/// and the memory metrics. What differs between device kinds comes in as device_traits.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/device_traits.hpp"
#include "actors/worker.hpp"
#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "runtime/session.hpp"
#include "serving/replica.hpp"

namespace troupe::actors {

/// A worker's live replicas by id (every entry non-null; an unload erases it). Shared: a build on
/// the worker's build thread holds the replica it takes its weights from until it is done, so
/// an unload meanwhile does not pull them from under it.
using replica_table = std::map<uint32_t, std::shared_ptr<serving::replica>>;

/// The live replica that a new replica with options `o` takes its weights from (the first that
/// can_share_weights), or null: then it loads the model file. A worker's replicas of one model
/// version (instance_count > 1, or reloads) thus share one copy of the weights on its device.
std::shared_ptr<serving::replica> weights_sibling(const replica_table& replicas,
                                                  const serving::replica::options& o);

worker_actor spawn_worker_with(caf::actor_system& sys, const worker_options& o,
                               device_traits traits, bool detached);

}  // namespace troupe::actors
