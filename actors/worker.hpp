#pragma once
/// The workers of a node, one per device: cpu_worker (actors/cpu_worker.hpp) runs its replicas on
/// the CPU backend, gpu_worker (actors/gpu_worker.hpp) on one GPU with the CUDA backend. Both
/// speak worker_actor (caf_compat.hpp) and share one implementation (actors/worker_core.hpp); only
/// their device traits differ.
///
/// Messages:
///   (load, replica_spec) -> replica_info   load, compile, warm up one replica
///   (unload, id)                           drop a replica
///   (run, batch_ref)                       run a batch; answers (done, batch_ref) to the sender
///   (crash)                                fault injection: exit abnormally (supervisor tests)
/// A load reads the model file on a thread of its own (runtime/background_read.hpp; the thread
/// then waits for the worker's next read: runtime/read_threads.hpp) while the worker goes on
/// running batches; the compile and warm-up then run on the worker's thread. A read
/// that takes longer than the spec's load_timeout fails the load DEADLINE_EXCEEDED and is
/// abandoned (a hung mount cannot stall the worker, or its exit). Loads of one file that arrive
/// while it is read wait for that read and share its weights.
/// A batch whose result is device_error marks the worker failed: it answers the batch (the batcher
/// retries it elsewhere, or on the replacement) and exits abnormally, and the supervisor replaces
/// it. The worker decides to exit before it answers: once sent, the batch is the batcher's.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "actors/caf_compat.hpp"
#include "actors/device_traits.hpp"
#include "actors/worker_channel.hpp"
#include "runtime/graph.hpp"

namespace troupe::serving {
class fault_plan;
class serving_metrics;
}  // namespace troupe::serving

namespace troupe::actors {

/// How long the threads of the request path (a detached worker after a run, the frontend after
/// its last request or reply) poll for the next piece of work, yielding their core, before they
/// block: 500 us with 8 or more hardware threads, else 0. A blocked thread costs a wake-up per
/// hand-off (futex or eventfd, then the core leaving its idle state: tens of microseconds, several
/// of them per request); spinning saves them only where cores are to spare (on a 2-core machine
/// the spinning threads would take the CPU from the ones doing the work).
uint32_t default_idle_spin_us();

struct worker_options {
  worker_kind kind = worker_kind::cpu;
  uint32_t index = 0;            // position in the node; the metrics label `worker`
  int device_index = 0;          // the CUDA ordinal of a gpu_worker (unused by cpu_worker)
  int compute_threads = 0;       // OpenMP threads for CPU runs; 0: OpenMP's default
  bool fault_injection = false;  // honour the troupe.fault / troupe.sleep_ms request parameters
  /// Model files are read on a thread of their own, under the load timeout (see above). false:
  /// on the worker's thread, which the read then blocks, and with no timeout: for tests on CAF's
  /// test coordinator, whose actors no other thread may send to.
  bool background_model_reads = true;
  /// Reads a model file. Null: runtime::load_onnx_file. Tests give one that blocks, standing in
  /// for a hung mount (a FIFO cannot: the loader refuses it without waiting). Must be
  /// thread-safe and own what it captures: an abandoned read may outlive the worker.
  std::function<expected<runtime::graph>(const std::string&)> read_model_file;
  /// Runs on the worker's build thread before each replica build (compile, warm-up) of the model
  /// file `path`, with background model reads on. Null in a node; tests hold a build here to see
  /// that the worker serves its other replicas meanwhile. Must be thread-safe.
  std::function<void(const std::string& path)> before_build;
  /// A detached worker waits this long for its next batch by polling its mailbox (yielding the
  /// core) after each run before it blocks: see worker_core.cpp. Ignored on scheduler threads.
  uint32_t idle_spin_us = default_idle_spin_us();
  serving::serving_metrics* metrics = nullptr;
  /// The worker's memory budget (node.yaml worker_memory_budget_mb), in bytes: what its
  /// replicas hold on the device (their own memory and their resident weights) stays within it
  /// by evicting idle weights to host memory, least recently used first, and paging them back
  /// in for their next batch (serving/weight_residency.hpp); a load that cannot fit fails
  /// out_of_memory. 0 (the default): no budget, and replicas are loaded as always.
  size_t memory_budget_bytes = 0;
  /// Set: the worker runs in a process of its own, a child of the node, and the actor spawned is
  /// its proxy (actors/worker_proxy.hpp, docs/worker-processes.md). Null: in this process.
  std::shared_ptr<const worker_process_options> processes;
  /// The node's fault plan (fault_injection on; null otherwise): the worker (or its process, on
  /// the proxy's word) asks it before each batch for the faults of its site "worker:<index>", and
  /// a proxy asks it for faults on the worker_link hop (serving/fault_plan.hpp, docs/faults.md).
  std::shared_ptr<serving::fault_plan> faults;
};

/// Spawns the worker `o.kind` names (its proxy, with worker processes on): detached (its own
/// thread: a run blocks for the compute) in a node, on the scheduler in tests. The supervisor
/// respawns failed workers through this.
worker_actor spawn_worker(caf::actor_system& sys, const worker_options& o, bool detached);

}  // namespace troupe::actors
