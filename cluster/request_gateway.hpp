#pragma once
/// Where the KServe v2 doors (HTTP and gRPC) hand their requests to the node: the same jobs, the
/// same router and batchers as the ZeroMQ frontend, so every door is one serving path. A door
/// decodes its wire format into serving::request_fields, takes a pooled request here, and gets
/// exactly one reply back through a callback.
///
/// Thread-safety: acquire, submit, begin_drain, inflight, wait_idle and stop may be called from any
/// thread (a door's I/O threads and completion threads call them concurrently).
///
/// One reply, after the actors let go: `on_reply` runs exactly once per submitted request, when the
/// request has been answered AND the actors no longer read its inputs. A request the batcher
/// answers early (its deadline passed while a worker still reads its inputs) is delivered when the
/// worker hands it back; that costs a late deadline error a batch's run time, and lets every door
/// free its request bytes in the callback (a gRPC request message, for one, dies when the call
/// finishes).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/status.hpp"
#include "serving/job.hpp"
#include "serving/request_binding.hpp"

namespace caf {
class actor_system;
}

namespace troupe::actors {
struct node_handles;
}  // namespace troupe::actors

namespace troupe::serving {
class table_holder;
class serving_metrics;
class model_table;
}  // namespace troupe::serving

namespace troupe::cluster {

/// A pooled request of a KServe door.
struct gateway_request : serving::infer_job {
  /// Keeps alive what the input views point into (the request body, a decoded buffer, a mapped
  /// shared-memory region). Dropped by the gateway after `on_reply` has run.
  std::shared_ptr<void> input_owner;
  /// Runs once with `result` set and, when OK, `outputs` holding one block reference per slice.
  /// Called on an actor thread, or on the submitting thread when the request is refused at once:
  /// it must not block. It may take a slice's reference (and set `block` to null) to send the
  /// bytes without a copy; the gateway releases the references left after it returns. The request
  /// itself is recycled after it returns: copy what outlives the call.
  std::function<void(gateway_request&)> on_reply;
};

struct gateway_options {
  /// Requests held at once by all KServe doors together; beyond it they are answered OVERLOADED.
  uint32_t max_inflight = 4096;
  /// Actors that carry replies back to the doors (each delivers one reply list at a time).
  uint32_t bridges = 2;
};

class request_gateway {
 public:
  static expected<std::unique_ptr<request_gateway>> create(caf::actor_system& sys,
                                                           const actors::node_handles& node,
                                                           serving::table_holder& holder,
                                                           serving::serving_metrics* metrics,
                                                           gateway_options o);
  /// Destroy only after the node's actors have stopped (they may hold requests until then).
  ~request_gateway();

  /// A cleared request, or null when max_inflight requests are held (answer OVERLOADED).
  gateway_request* acquire();
  /// Gives back a request that was acquired and never submitted.
  void discard(gateway_request* r);
  /// Binds `f` against the current table and hands the request to the router; a request that
  /// cannot be bound (unknown model, bad tensor...) or arrives while draining is answered at once,
  /// on this thread. `f`'s views must stay valid until `on_reply` (r->input_owner keeps them).
  void submit(gateway_request* r, const serving::request_fields& f);
  /// Answers a request that the door itself refuses before binding (undecodable body...), counted
  /// in the metrics like every other reply.
  void answer_now(gateway_request* r, status s);

  /// The current routing table (null before the first load): metadata and readiness read it.
  std::shared_ptr<const serving::model_table> table() const;
  serving::table_holder& holder() const;

  /// From now on new requests are answered UNAVAILABLE; in-flight ones complete.
  void begin_drain();
  bool draining() const;
  uint32_t inflight() const;
  bool wait_idle(std::chrono::milliseconds timeout);
  /// Stops the bridge actors, so that the actor system can finish. Call once the node's actors have
  /// been asked to stop: a reply list that reaches a bridge afterwards is dropped, and stop()
  /// answers its requests. Idempotent.
  void release_actors();
  /// Answers every request not answered yet with CANCELLED and stops the bridges. Safe for every
  /// door once the node's actors are done (no worker reads the inputs any more): call it after
  /// release_actors() and the actor system's await. Called earlier, a door must keep its request
  /// bytes alive itself until the actors are done (input_owner stays until the gateway dies; the
  /// callback is dropped once it has run). Idempotent.
  void stop();

  struct shared_state;

 private:
  explicit request_gateway(std::shared_ptr<shared_state> s);
  std::shared_ptr<shared_state> state_;
};

}  // namespace troupe::cluster
