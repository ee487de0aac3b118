#pragma once
/// The messages of the worker protocol (proto/worker.proto; docs/worker-processes.md) as plain
/// C++: what the node's proxy of a worker process (actors/worker_proxy.hpp) and the process's
/// serving loop (actors/replica_host.hpp) exchange. cluster/worker_codec.hpp turns them into
/// protobuf envelopes and back, checking what a peer sent; the actors see only these structs.
///
/// Tensor bytes are never in a message: a data_ref names a region of the process's shared memory
/// (actors/shared_arena.hpp), or, for a worker on another host later, a frame after the envelope.

#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "actors/fault_sites.hpp"
#include "actors/job.hpp"
#include "actors/replica.hpp"
#include "actors/shared_arena.hpp"
#include "actors/signature.hpp"
#include "core/status.hpp"

namespace troupe::actors {

/// Peers that speak another version refuse each other with a typed error.
inline constexpr uint32_t worker_protocol_version = 1;

struct data_ref {
  enum class kind : uint8_t { shm = 0, frame = 1 };
  kind where = kind::shm;
  shm_region region;   // kind::shm
  uint32_t frame = 0;  // kind::frame: the frame's index after the envelope
};

struct worker_hello {
  uint32_t worker_index = 0;
  int64_t pid = 0;
  std::string device;
};

struct worker_load {
  uint64_t request = 0;
  std::string model;
  int64_t version = 0;
  std::string path;
  std::string config_text;  // config.yaml's text (or a load request's override); "" = defaults
  uint32_t warmup_runs = 3;
  uint64_t load_timeout_ms = 0;
  std::optional<injected_fault> injected;  // fault injection: before the load (fail_allocations)
};

struct worker_loaded {
  uint64_t request = 0;
  status result;  // not OK: the load failed, nothing below is set
  uint32_t replica = 0;
  std::vector<tensor_spec> inputs;
  std::vector<tensor_spec> outputs;
  int64_t max_batch_size = 0;
  std::vector<int64_t> bucket_rows;
  std::vector<bucket_latency> warmup;
  uint64_t pool_bytes = 0;
  std::vector<bucket_layout> buckets;
};

struct worker_unload {
  uint32_t replica = 0;
};

struct worker_run {
  uint64_t batch = 0;
  uint32_t replica = 0;
  int64_t rows = 0;
  int64_t bucket_rows = 0;
  std::vector<data_ref> inputs;
  data_ref outputs;
  std::string fault;  // fault injection: "crash", "device"; "" none
  uint32_t sleep_ms = 0;
  std::optional<injected_fault> injected;  // fault injection: carried out before the run
};

struct worker_done {
  uint64_t batch = 0;
  status result;
  uint64_t compute_us = 0;
  int64_t bucket_rows = 0;
  std::vector<batch::output_layout> outputs;
};

struct worker_heartbeat {
  uint64_t sequence = 0;
};

using worker_message = std::variant<worker_hello, worker_load, worker_loaded, worker_unload,
                                    worker_run, worker_done, worker_heartbeat>;

/// The message's name in logs and errors ("hello", "run", ...).
inline const char* worker_message_name(const worker_message& m) {
  static constexpr const char* names[] = {"hello", "load", "loaded",   "unload",
                                          "run",   "done", "heartbeat"};
  static_assert(std::size(names) == std::variant_size_v<worker_message>);
  return names[m.index()];
}

}  // namespace troupe::actors
