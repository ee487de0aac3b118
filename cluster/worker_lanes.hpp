#pragma once
/// The data lanes of a worker process joined to a control node over tcp:// (docs/cluster.md,
/// "Tensors between nodes"). Besides its first connection, which carries everything, the process
/// opens `count` more to the same control node, and the control node stripes large runs over all
/// of them: the run's envelope over the first, its inputs in a slice per connection, side by
/// side. One TCP stream, with one ZeroMQ I/O thread at each end and one thread that copies what
/// arrives into pinned staging memory, carried a batch more slowly than one GPU ran it
/// (bench/results/cluster.md).
///
/// Each lane is a DEALER with a thread of its own that owns it:
/// - it says the process's hello with its lane number (the control node files the lane under the
///   worker of that node, device and incarnation; a lane of a worker it does not know gets a bye);
/// - it receives slices of runs (and whole runs), stages them (cluster/remote_run_staging.hpp:
///   the copy into pinned memory happens on this thread, so lanes copy side by side) and hands
///   each run that is complete to the process's main thread, which runs it and answers over the
///   first connection;
/// - it sends a heartbeat every interval: the control node ends a worker one of whose lanes falls
///   silent, and a lane whose connection ZeroMQ re-made (a run may have been lost with the old
///   one) is heard as a stranger and answered with a bye, which ends the process; its worker node
///   starts a fresh one, and the control node retries the lost runs elsewhere.
///
/// Anything but a run, a slice, a heartbeat or a bye on a lane breaks the protocol and ends the
/// process.
///
/// Thread-safety: every member on the process's main thread; the lanes' threads touch only their
/// sockets, the staging (locked) and the event queue.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "actors/worker_protocol.hpp"
#include "cluster/curve_keys.hpp"
#include "cluster/message_outbox.hpp"
#include "cluster/remote_run_staging.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

/// What a lane hands the main thread.
struct lane_event {
  /// A staged run for the serving loop, or the failed answer to a run that could not be staged.
  std::optional<actors::worker_message> message;
  /// Not ok: the lane ended (the control node let go, or it broke the protocol), and with it
  /// the process; internal: a protocol break.
  status ended = status::ok();
};

struct worker_lanes_options {
  zmq::context_t* context = nullptr;  // the process's; it outlives the lanes
  std::string endpoint;               // the control node's
  actors::worker_hello hello;         // the process's own; each lane's names its number
  uint32_t count = 0;                 // lanes besides the first connection
  std::chrono::milliseconds heartbeat_interval{1000};
  int64_t max_frame_bytes = int64_t{4} << 30;
  /// CURVE: the same keys as the first connection's.
  std::optional<curve_keypair> curve;
  std::string server_key;
};

class worker_lanes {
 public:
  worker_lanes(worker_lanes_options o, remote_run_staging& staging)
      : options_(std::move(o)), staging_(staging) {}
  /// Stops the lanes.
  ~worker_lanes();
  worker_lanes(const worker_lanes&) = delete;
  worker_lanes& operator=(const worker_lanes&) = delete;

  /// Starts the lanes' threads, once; internal_error when a thread cannot start (the lanes that
  /// did start run on: the control node uses the lanes that said hello).
  status start();
  bool started() const { return started_; }
  /// What the main thread polls (ZMQ_POLLIN: events are waiting); -1 when the eventfd failed.
  int fd() const { return events_.ok() ? events_.fd() : -1; }
  /// The events since the last call, in order.
  std::deque<lane_event> take() { return events_.take(); }
  /// Stops and joins the lanes' threads; their sockets are closed (the context can close next).
  void stop();

 private:
  void run(uint32_t lane);
  /// Receives what waits on `socket`; false when the lane ended.
  bool drain(zmq::socket_t& socket);

  worker_lanes_options options_;
  remote_run_staging& staging_;
  basic_outbox<lane_event> events_;
  outbox_signal stop_signal_;  // woken once at stop, never cleared: every lane's poll sees it
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
  bool started_ = false;
};

}  // namespace troupe::cluster
