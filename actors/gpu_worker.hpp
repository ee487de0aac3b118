#pragma once
/// gpu_worker: the worker of one GPU, `device_index` (actors/worker.hpp has the protocol and the
/// failure rules, shared with cpu_worker).
///
/// - Device: at its first message the worker makes its GPU current on its own thread (a node
///   spawns workers detached); every CUDA call of the backend makes the device current again, so
///   a worker on shared scheduler threads (detached_workers: false) stays correct.
/// - Replicas: runtime sessions on the CUDA backend at the model config's `precision` (default
///   fp16; requests and replies keep the model's own types: the casts are inside the plan). Each
///   replica's session owns its CUDA context (stream, cuDNN and cuBLASLt handles, memory pool),
///   created on this worker's thread; the worker owns the replicas, so a replaced worker starts
///   with fresh contexts.
/// - Staging: per replica and batch bucket, one pinned host buffer per input and a pool of pinned
///   output blocks, allocated at load and reused. A run gathers the requests' frames straight into
///   the pinned inputs (the one host copy), the plan uploads them asynchronously, runs, and
///   downloads its outputs into a pinned output block; replies are sent from that block as
///   zero-copy ZeroMQ frames. There is no second copy because a block is reference counted and
///   returns to the pool when ZeroMQ has sent the last frame pointing into it; the pool grows only
///   to the number of batches whose replies are in flight at once.
/// - Failure: a device_error from a run answers the batch with worker_failed (the batcher retries
///   it on another replica, or on the replacement) and the worker exits abnormally; the
///   supervisor spawns a fresh gpu_worker on the same GPU after its restart backoff and
///   model_manager reloads the replicas there. A sticky CUDA error poisons every context of the
///   process: the fresh worker's loads then fail too (each replacement tries them again, the
///   backoff growing to its cap) and the models report not ready until the process is restarted.

#include <optional>
#include <vector>

#include "actors/worker.hpp"
#include "core/status.hpp"

namespace troupe::actors {

worker_actor spawn_gpu_worker(caf::actor_system& sys, const worker_options& o, bool detached);

/// The GPUs a node serves on: `configured` (node.yaml `gpus`) checked against the visible devices,
/// or every visible GPU when nullopt. Empty in builds without CUDA or without a GPU; an explicit
/// device that does not exist (or any explicit one without CUDA) is invalid_argument.
expected<std::vector<int>> resolve_gpus(const std::optional<std::vector<int>>& configured);

}  // namespace troupe::actors
