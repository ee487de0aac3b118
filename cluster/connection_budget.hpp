#pragma once
/// How many requests each ZeroMQ connection has outstanding, so that a client that never reads its
/// replies cannot make the node hold them without bound (docs/protocol.md, Limits).
///
/// A request is outstanding from its arrival until its reply has left the node's queues: while it
/// runs, and then while its reply waits in ZeroMQ's queue for a client that does not read. Every
/// request counts, the refused ones too (each gets a reply), and a connection with
/// `max_outstanding` requests outstanding has its next ones refused (the frontend answers them
/// OVERLOADED) instead of run, until it reads. What the node holds for one connection is then at
/// most `max_outstanding` replies, plus the small refusals of a client that keeps sending.
///
/// Why a count at arrival and not ZeroMQ's send high-water mark: a full queue can only refuse a
/// reply that already exists (the frontend would have to keep it), and every request admitted
/// before the queue filled would still add its reply.
///
/// Threads: the frontend's thread owns the map (arrive, sweeping); a reply's count is given back
/// by `reply_left` on whichever thread releases the reply's envelope (ZeroMQ's I/O thread once the
/// envelope has left its queue, or the frontend's when the reply could not be sent).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

namespace troupe::cluster {

class connection_budget {
 public:
  /// One connection's count. Lives until its count is back to zero and a sweep removes it.
  class connection {
   public:
    /// One outstanding reply has left (any thread). The last touch of `this` by the caller.
    void reply_left() noexcept { outstanding_.fetch_sub(1, std::memory_order_release); }
    uint32_t outstanding() const noexcept { return outstanding_.load(std::memory_order_acquire); }

   private:
    friend class connection_budget;
    std::atomic<uint32_t> outstanding_{0};
  };

  struct arrival {
    connection* conn;  // give its count back with conn->reply_left() once the reply has left
    bool admitted;     // false: answer OVERLOADED instead of running the request
  };

  /// `max_outstanding` >= 1.
  explicit connection_budget(uint32_t max_outstanding);

  /// Counts a request that arrived on the connection with this routing id (the ROUTER's identity
  /// frame); it is admitted when fewer than max_outstanding were outstanding before it.
  arrival arrive(std::string_view routing_id);

  uint32_t max_outstanding() const { return max_outstanding_; }
  /// Connections tracked (those with replies outstanding, and idle ones not yet swept).
  size_t connections() const { return connections_.size(); }

 private:
  struct hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  /// Drops connections with nothing outstanding (clients come and go; their ids are not reused).
  void sweep();

  const uint32_t max_outstanding_;
  std::unordered_map<std::string, std::unique_ptr<connection>, hash, std::equal_to<>> connections_;
  size_t sweep_at_;  // sweep when this many connections are tracked
};

}  // namespace troupe::cluster
