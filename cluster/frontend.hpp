#pragma once
/// The client frontend: one ZeroMQ ROUTER socket, owned by one thread, speaking the protocol
/// of docs/protocol.md. The thread decodes and validates every envelope (unknown model or version,
/// wrong tensor count, name, dtype, shape or byte count, oversize message, undecodable protobuf,
/// missing frames: each a typed error reply), turns valid requests into pooled jobs whose input
/// bytes stay in the received frames (no copy here), and submits them to the router. Replies come
/// back through a bridge actor into a queue the thread drains (woken by an eventfd), and leave with
/// the output bytes as zero-copy frames referencing the batch's output block.
///
/// Binding comes before the repository loads: while loading, health answers live and not ready
/// ("loading"), and requests get UNAVAILABLE.
///
/// Bounded: at most `max_inflight` requests are held; beyond it a request is answered OVERLOADED
/// at once. Per connection, at most `max_outstanding_per_connection` requests are running or have
/// replies waiting for the client to read them; beyond it a request from that connection is
/// answered OVERLOADED (connection_budget.hpp). A frame larger than `max_message_bytes` is refused
/// by ZeroMQ (the connection is dropped), a message larger than it gets INVALID_ARGUMENT.
/// Draining (SIGTERM): requests keep being read and are answered UNAVAILABLE, in-flight ones
/// finish; `wait_idle` tells when none is left.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.hpp"
#include "serving/readiness.hpp"

namespace caf {
class actor_system;
}

namespace troupe::actors {
struct node_handles;
}  // namespace troupe::actors

namespace troupe::serving {
class table_holder;
class serving_metrics;
class fault_plan;
}  // namespace troupe::serving

namespace troupe::cluster {

struct frontend_options {
  std::string listen = "tcp://*:5555";
  uint32_t max_inflight = 4096;
  /// Requests of one connection that may be outstanding at once: running, or answered with the
  /// reply still queued because the client has not read it. Bounds what a client that never
  /// reads can make the node hold to about this many replies.
  uint32_t max_outstanding_per_connection = 256;
  uint64_t max_message_bytes = 256ull << 20;
  /// Messages read per wake-up before the collected jobs go to the router in one message.
  uint32_t max_read_batch = 256;
  /// ZeroMQ I/O threads: they move the bytes between the TCP connections and the socket (each
  /// connection is served by one of them; about 2 GB/s each on loopback). 0: a quarter of the
  /// hardware threads, 1 to 4: image-sized requests on many connections need more than one.
  /// The frontend's own thread (decoding, validation, replies) stays one.
  uint32_t io_threads = 0;
  /// After the last request or reply the thread polls (yielding its core) this long before it
  /// blocks in poll: at one request at a time a reply, and the client's next request, then arrive
  /// without a thread wake-up. 0: block at once. `troupe serve` sets
  /// actors::default_idle_spin_us() (actors/worker.hpp: why and when).
  uint32_t idle_spin_us = 0;
  /// How the health answer's `ready` is decided (serving/readiness.hpp; node.yaml `readiness`).
  serving::readiness_policy readiness = serving::readiness_policy::strict;
  /// The node's fault plan (fault_injection on; null otherwise): the frontend_router hop's
  /// faults (drop, delay, slow_link) apply to the job lists this door sends the router.
  std::shared_ptr<serving::fault_plan> faults;
};

class frontend {
 public:
  /// Binds the socket and starts the I/O thread; fails (io_error) when the endpoint cannot be
  /// bound.
  static expected<std::unique_ptr<frontend>> create(caf::actor_system& sys,
                                                    const actors::node_handles& node,
                                                    serving::table_holder& holder,
                                                    serving::serving_metrics* metrics,
                                                    frontend_options o);
  /// Stops the thread if still running. The node's actors must no longer hold jobs (drained, or
  /// stopped and awaited): the job memory lives here.
  ~frontend();

  /// The endpoint as bound ("tcp://0.0.0.0:41234" for "tcp://*:0").
  const std::string& endpoint() const;
  /// New requests are answered UNAVAILABLE from now on; in-flight ones complete.
  void begin_drain();
  /// Requests received and not yet answered and released.
  uint32_t inflight() const;
  /// Waits until no request is in flight; false on timeout.
  bool wait_idle(std::chrono::milliseconds timeout);
  /// Answers every request still in flight with CANCELLED (their jobs stay owned by the actors),
  /// flushes and closes the socket, joins the thread. Idempotent.
  void stop();

  class impl;

 private:
  explicit frontend(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
