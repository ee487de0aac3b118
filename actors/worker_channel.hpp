#pragma once
/// How a worker process's proxy (actors/worker_proxy.hpp) reaches its process: an abstract
/// channel, so that the actors know nothing of sockets or of how the process is started.
/// cluster/worker_link.hpp implements it over ZeroMQ (ipc://, shared memory for the tensors) and
/// starts `troupe worker` as a child of the node; the node injects its factory through
/// worker_options::processes. CAF-free.
///
/// A channel belongs to one process. It starts the process, carries messages both ways,
/// exchanges heartbeats with it and reports, once, that the process is gone: it exited (seen by
/// the node's wait for its children), stopped answering heartbeats within the timeout, or broke
/// the protocol. Destroying the channel ends the process (SIGKILL) and reaps it.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "actors/device_traits.hpp"
#include "actors/worker_protocol.hpp"
#include "core/status.hpp"
#include "serving/shared_arena.hpp"

namespace troupe::actors {

/// What a worker process is started with.
struct worker_process_spec {
  worker_kind kind = worker_kind::cpu;
  uint32_t index = 0;    // the worker's position in the node
  int device_index = 0;  // the CUDA ordinal of a GPU worker
  int compute_threads = 0;
  bool fault_injection = false;
  /// Recorded convolution choices (runtime/tuning_records_file.hpp) the process adopts at start
  /// and adds to after its loads, so that a restarted process does not time them again; "": none.
  std::string tuning_records_file;
  /// The shared memory (serving/shared_arena.hpp): the process inherits this descriptor.
  int shm_fd = -1;
  size_t shm_bytes = 0;
  /// The same memory, mapped in the node: a channel to a worker on another host (tcp://,
  /// cluster/worker_listener.hpp) shares none, and sends the bytes of the regions a run names as
  /// frames instead, writing the outputs that come back into the region the run named.
  std::shared_ptr<serving::shared_arena> arena;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10000};
  size_t memory_budget_bytes = 0;  // worker_options::memory_budget_bytes (0: none)
  /// worker_options::idle_spin_us: after a message, the link's thread on each side polls
  /// without blocking for this long before it sleeps (a batch that comes back within it costs
  /// no thread wake-up); 0: never.
  uint32_t idle_spin_us = 0;
};

/// Called on the channel's own thread: they must be thread-safe and must not block (the proxy's
/// posts a message to its actor).
struct worker_channel_events {
  /// Every message the process sent but heartbeats (hello first), decoded and checked.
  std::function<void(worker_message)> on_message;
  /// Once, last: why the process is gone.
  std::function<void(status)> on_closed;
};

class worker_channel {
 public:
  virtual ~worker_channel() = default;
  /// Queues `m` for the process (in order; never blocks). unavailable once the channel closed.
  /// Called by the proxy only.
  virtual status send(worker_message m) = 0;
  /// The process's id.
  virtual int64_t pid() const = 0;
};

/// Starts a worker process and its channel; fails typed when the process cannot be started.
using worker_channel_factory = std::function<expected<std::unique_ptr<worker_channel>>(
    const worker_process_spec&, worker_channel_events)>;

/// The node's worker-process settings (node.yaml worker_processes and worker_*; docs/
/// worker-processes.md), shared by every worker's spawn and respawn.
struct worker_process_options {
  worker_channel_factory channels;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10000};
  size_t shared_memory_bytes = size_t{1} << 30;  // per process
  /// worker_process_spec::tuning_records_file of every process: the node's tuning_records_file,
  /// or a file of the node's own while it runs (the choices of a process outlive it).
  std::string tuning_records_file;
};

}  // namespace troupe::actors
