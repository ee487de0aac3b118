#pragma once
/// `troupe worker`: the main of a worker process (docs/worker-processes.md), started by its node
/// (cluster/worker_link.hpp), never by hand. It maps the shared memory it inherited (pinning it
/// for its GPU), connects a ZeroMQ DEALER to the node's endpoint, says hello, and serves: the
/// node's loads, unloads and runs go to the serving loop (actors/replica_host.hpp), its answers
/// go back; heartbeats both ways. It exits when the node stops answering heartbeats (and dies
/// with the node anyway: its parent-death signal), or when the node sends what is not the
/// worker protocol.

#include <chrono>
#include <cstdint>
#include <string>

#include "actors/device_traits.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

struct worker_main_options {
  std::string endpoint;  // the node's ipc:// endpoint
  int shm_fd = -1;       // the inherited shared memory
  size_t shm_bytes = 0;
  actors::worker_kind kind = actors::worker_kind::cpu;
  uint32_t index = 0;
  int device_index = 0;
  int compute_threads = 0;
  bool fault_injection = false;
  std::string tuning_records_file;  // "": none (runtime/tuning_records_file.hpp)
  size_t memory_budget_bytes = 0;  // the node's worker_memory_budget_mb, in bytes (0: none)
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10000};
  std::string log_level = "info";
  uint32_t idle_spin_us = 0;  // worker_process_spec::idle_spin_us
};

/// Serves until the node goes; returns why (an error when it could not start or the node broke
/// the protocol).
status run_worker_process(const worker_main_options& o);

}  // namespace troupe::cluster
