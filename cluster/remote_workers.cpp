#include "cluster/remote_workers.hpp"

#include "cluster/curve_keys.hpp"
#include "serving/log_fields.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using namespace troupe::serving;

expected<std::unique_ptr<remote_workers>> remote_workers::start(caf::actor_system& sys,
                                                                const node_handles& node,
                                                                const node_spawn_options& spawn,
                                                                const std::string& listen) {
  std::unique_ptr<remote_workers> r(new remote_workers(sys, node, spawn));
  worker_listener_options lo;
  lo.endpoint = listen;
  lo.heartbeat_interval = spawn.config.node_heartbeat_interval;
  lo.heartbeat_timeout = spawn.config.node_heartbeat_timeout;
  lo.idle_spin_us = spawn.worker_idle_spin_us;
  lo.io_threads = spawn.config.node_link_connections;
  const node_config& cfg = spawn.config;
  if (!cfg.curve_secret_key_file.empty()) {
    if (cfg.curve_authorized_keys_file.empty())
      return invalid_argument(
          "curve_secret_key_file without curve_authorized_keys_file: a control node with CURVE "
          "lets in only the workers whose public keys that file lists");
    TROUPE_ASSIGN_OR_RETURN(lo.curve, read_curve_secret_key(cfg.curve_secret_key_file));
    TROUPE_ASSIGN_OR_RETURN(lo.authorized_workers,
                            read_curve_authorized_keys(cfg.curve_authorized_keys_file));
  } else if (!cfg.curve_authorized_keys_file.empty()) {
    return invalid_argument("curve_authorized_keys_file needs curve_secret_key_file (this node's key)");
  }
  lo.on_join = [raw = r.get()](const remote_worker_info& info, worker_channel_factory accept) {
    raw->join(info, std::move(accept));
  };
  lo.on_memory = [raw = r.get()](const remote_worker_info& info, uint64_t free_bytes) {
    raw->memory(info, free_bytes);
  };
  TROUPE_ASSIGN_OR_RETURN(r->listener_, worker_listener::create(std::move(lo)));
  return r;
}

remote_workers::~remote_workers() {
  stop();
}

void remote_workers::join(const remote_worker_info& info, worker_channel_factory accept) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopped_) return;
  const std::string key = info.node + "|" + info.device;
  auto [it, fresh] = places_.emplace(
      key, static_cast<uint32_t>(node_.workers.size() + places_.size()));
  remote_worker_spec w;
  w.kind = info.kind;
  w.device_index = info.device_index;
  w.index = it->second;
  w.channel = std::move(accept);
  w.staging_bytes = size_t{spawn_.config.worker_shared_memory_mb} << 20;
  w.where.node = info.node;
  w.where.device = info.device;
  w.where.memory_total_bytes = info.memory_total_bytes;
  w.where.memory_free_bytes = info.memory_free_bytes;
  log_event(log_level::info, fresh ? "remote worker placed" : "remote worker placed again",
            {{"node", info.node}, {"device", info.device}, {"worker", w.index}});
  proxies_[w.index] = join_remote_worker(sys_, node_, spawn_, w);
}

void remote_workers::memory(const remote_worker_info& info, uint64_t free_bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopped_) return;
  auto it = places_.find(info.node + "|" + info.device);
  if (it == places_.end()) return;
  caf::anon_send(node_.manager, memory_atom::value, it->second, free_bytes);
}

void remote_workers::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
  }
  // The listener's thread ends first (no join after this), saying bye to every worker.
  listener_.reset();
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [index, p] : proxies_) caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
  proxies_.clear();
}

}  // namespace troupe::cluster
