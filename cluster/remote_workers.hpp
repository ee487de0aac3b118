#pragma once
/// A control node's workers on worker nodes (docs/cluster.md): the worker listener
/// (cluster/worker_listener.hpp) and, for each worker that joins, its place among the node's
/// workers and its proxy (actors::join_remote_worker). A worker's place is kept by its node's name
/// and its device: one that joins again after it was lost (its process restarted, its node came
/// back) takes the same place, so model_manager gives it back what the lost one held; any other
/// takes the next free place after the local workers.
///
/// Thread-safety: joins arrive on the listener's thread; `stop` from the node's main thread.

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "actors/node.hpp"
#include "cluster/worker_listener.hpp"

namespace troupe::cluster {

class remote_workers {
 public:
  /// Binds `listen` and admits workers into `node` (spawned with `spawn`, which outlives this).
  static expected<std::unique_ptr<remote_workers>> start(
      caf::actor_system& sys, const actors::node_handles& node,
      const actors::node_spawn_options& spawn, const std::string& listen);
  ~remote_workers();

  const std::string& endpoint() const { return listener_->endpoint(); }
  /// Before the node's actors stop: no further joins; the workers are released (a bye each)
  /// and their proxies stopped.
  void stop();

 private:
  remote_workers(caf::actor_system& sys, const actors::node_handles& node,
                 const actors::node_spawn_options& spawn)
      : sys_(sys), node_(node), spawn_(spawn) {}
  void join(const remote_worker_info& info, actors::worker_channel_factory accept);
  /// A joined worker's heartbeats report other free memory: model_manager hears it.
  void memory(const remote_worker_info& info, uint64_t free_bytes);

  caf::actor_system& sys_;
  const actors::node_handles& node_;
  const actors::node_spawn_options& spawn_;
  std::unique_ptr<worker_listener> listener_;
  std::mutex mutex_;  // guards the three below
  bool stopped_ = false;
  std::map<std::string, uint32_t> places_;  // "node|device" -> worker index
  /// By place: the proxy of the worker joined there last (an earlier one there is gone or going:
  /// its connection was superseded or lost).
  std::map<uint32_t, actors::worker_actor> proxies_;
};

}  // namespace troupe::cluster
