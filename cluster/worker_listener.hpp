#pragma once
/// A control node's door for the workers of worker nodes (docs/cluster.md): one ZeroMQ ROUTER
/// bound at `--workers-listen` (tcp://*:5600 by default) and one thread that owns it. Each worker
/// process of a worker node (`troupe worker --join`, cluster/worker_process.hpp) connects a
/// DEALER, says hello with its node's name, its device and a fresh incarnation number, and from
/// then on speaks the worker protocol as a local worker process does, with one difference: no
/// memory is shared, so tensors travel as ZeroMQ frames after the envelope.
///
/// To the actors a remote worker looks local. For each hello the listener calls `on_join`, and
/// the node spawns a worker proxy (actors/worker_proxy.hpp) whose channel factory is the one
/// `on_join` was given: it hands out this connection, a worker_channel like the ipc link's. The
/// proxy stages a batch in its own arena as it always does; the channel sends the regions a run
/// names as zero-copy frames, remembers the region the outputs go to, and copies the output
/// frame of the answer there before the proxy sees the answer. A load names the model file by
/// its SHA-256; a worker whose cache lacks it asks, and the listener sends the file.
///
/// Data lanes: a worker may open more connections (a hello with its lane number, naming the node,
/// device and incarnation of a worker that joined); a large run's envelope goes over the first
/// and its inputs in slices over all of them side by side (striping; the worker puts them
/// together, cluster/remote_run_staging.hpp), everything else over the first. A lane heartbeats;
/// one silent for the timeout ends its worker (a run sent on it may be lost), as a lane's hello for
/// a worker not known gets a bye.
///
/// Membership: heartbeats both ways every `heartbeat_interval`; a worker silent for
/// `heartbeat_timeout`, or one that says bye, is gone: its channel reports it closed (the proxy
/// exits, the batchers retry its batches, model_manager re-places its replicas). A proxy that
/// lets go of its channel (it failed, or the node stops) releases the worker with a bye, and the
/// worker process exits (its node starts a fresh one, which joins again with a new incarnation).
/// A message from a connection that has not said hello (a worker the listener forgot, or one of
/// an earlier life of this control node) is answered with a bye, so such a worker starts afresh.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "actors/worker_channel.hpp"
#include "cluster/curve_keys.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

/// What a joining worker said of itself.
struct remote_worker_info {
  std::string node;    // the worker node's name
  std::string device;  // "cpu", "cuda:0"
  actors::worker_kind kind = actors::worker_kind::cpu;
  int device_index = 0;
  uint64_t incarnation = 0;
  int64_t pid = 0;
  uint64_t memory_total_bytes = 0;
  uint64_t memory_free_bytes = 0;
};

struct worker_listener_options {
  std::string endpoint = "tcp://*:5600";
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{3000};
  /// The largest frame a worker may send (an output block, an envelope): a larger one drops its
  /// connection (ZeroMQ's maxmsgsize).
  int64_t max_frame_bytes = int64_t{4} << 30;
  /// ZeroMQ I/O threads: each connection's stream is one's (node_link_connections): a worker's
  /// data lanes (cluster/worker_lanes.hpp) are received side by side.
  uint32_t io_threads = 1;
  /// A run whose tensors come to at least this many bytes is striped over the worker's
  /// connections (its first and its data lanes): each input of more than min_slice_bytes is cut
  /// into a slice per connection, or one per min_slice_bytes begun where that is fewer. A smaller
  /// run goes over the first alone (no lane thread's wake-up in its way).
  size_t lane_min_run_bytes = size_t{256} << 10;
  size_t min_slice_bytes = size_t{64} << 10;
  /// After a message, the listener's thread polls without sleeping this long (as a worker link's
  /// does: a batch answered within it costs no wake-up); 0: never.
  uint32_t idle_spin_us = 0;
  /// CURVE (docs/cluster.md, Security): set, every connection is encrypted with this node's key
  /// pair, and only workers whose public key `authorized_workers` lists are let in (ZeroMQ's ZAP
  /// handshake, answered on the listener's thread); the others are refused before they can send
  /// anything, each refusal a warning.
  std::optional<curve_keypair> curve;
  std::set<std::string> authorized_workers;
  /// Called on the listener's thread for each hello: `accept` makes the worker's channel once
  /// (the proxy calls it as its channel factory; later calls fail). Must not block.
  std::function<void(const remote_worker_info&, actors::worker_channel_factory accept)> on_join;
  /// Called on the listener's thread when a joined worker's heartbeats report free memory that
  /// differs from what it reported last (its hello's at first) by 16 MiB or more. Must not block.
  std::function<void(const remote_worker_info&, uint64_t memory_free_bytes)> on_memory;
};

class worker_listener {
 public:
  /// Binds and starts the thread: io_error when the endpoint cannot be bound.
  static expected<std::unique_ptr<worker_listener>> create(worker_listener_options o);
  /// Says bye to every worker and stops the thread. Channels still held by proxies report
  /// closed no more and refuse sends.
  ~worker_listener();
  worker_listener(const worker_listener&) = delete;
  worker_listener& operator=(const worker_listener&) = delete;

  /// The bound endpoint, its port resolved (tcp://0.0.0.0:5600).
  const std::string& endpoint() const;

  struct shared;  // the socket's thread and what the channels post to it (worker_listener.cpp)

 private:
  explicit worker_listener(std::shared_ptr<shared> s) : shared_(std::move(s)) {}
  std::shared_ptr<shared> shared_;
};

}  // namespace troupe::cluster
