#pragma once
/// The messages of the worker protocol (proto/worker.proto; docs/worker-processes.md) as plain
/// C++: what the node's proxy of a worker process (actors/worker_proxy.hpp) and the process's
/// serving loop (actors/replica_host.hpp) exchange. cluster/worker_codec.hpp turns them into
/// protobuf envelopes and back, checking what a peer sent; the actors see only these structs.
///
/// Tensor bytes are never in a message: a data_ref names a region of the process's shared memory
/// (serving/shared_arena.hpp), or, for a worker on another host (docs/cluster.md), a frame after
/// the envelope. Over tcp the links on both sides translate: the proxy still names regions of its
/// own arena, the control node's link sends their bytes as frames, and the remote process's link
/// copies them into regions of its arena before its serving loop sees the run.

#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "actors/fault_sites.hpp"
#include "core/status.hpp"
#include "serving/job.hpp"
#include "serving/replica.hpp"
#include "serving/shared_arena.hpp"
#include "serving/signature.hpp"

namespace troupe::actors {

/// Peers that speak another version refuse each other with a typed error.
inline constexpr uint32_t worker_protocol_version = 1;

struct data_ref {
  /// none: no data named (a run's outputs over tcp: the worker allocates them; a done without a
  /// block). parts: a run's input over tcp whose bytes come in worker_run_part messages
  /// (region.bytes: its size).
  enum class kind : uint8_t { shm = 0, frame = 1, none = 2, parts = 3 };
  kind where = kind::shm;
  serving::shm_region region;  // kind::shm
  uint32_t frame = 0;  // kind::frame: the frame's index after the envelope
};

struct worker_hello {
  uint32_t worker_index = 0;
  int64_t pid = 0;
  std::string device;
  // A worker on another host (docs/cluster.md); empty / 0 over ipc.
  std::string node;
  uint64_t incarnation = 0;
  uint64_t memory_total_bytes = 0;
  uint64_t memory_free_bytes = 0;
  /// Over tcp: 0, the worker's first connection; 1.., one of its data lanes (docs/cluster.md).
  uint32_t lane = 0;
};

/// A file a model reads beside its model.onnx (ONNX external data), sent to a remote worker with
/// the model file: its path relative to the model's folder, its SHA-256 and its size.
struct model_data_file {
  std::string name;
  std::string content_sha256;
  uint64_t bytes = 0;
};

/// A data file's name as a worker lays it out under a directory of its cache: relative, no "."
/// or ".." component, no empty one, and not model.onnx itself (the model file is the load's).
inline bool data_file_name_ok(std::string_view name) {
  if (name.empty() || name.size() > 4096 || name.front() == '/' || name == "model.onnx")
    return false;
  if (name.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    const std::string_view part(name.data() + start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

struct worker_load {
  uint64_t request = 0;
  std::string model;
  int64_t version = 0;
  std::string path;
  std::string config_text;  // config.yaml's text (or a load request's override); "" = defaults
  uint32_t warmup_runs = 3;
  uint64_t load_timeout_ms = 0;
  std::optional<injected_fault> injected;  // fault injection: before the load (fail_allocations)
  /// A worker on another host: the file's SHA-256 (64 hex digits) and size, by which its cache
  /// keeps it; "" over ipc (the process reads `path`).
  std::string content_sha256;
  uint64_t file_bytes = 0;
  /// A worker on another host: the other files of the model's version folder (external data),
  /// which the worker's cache must hold too before the load.
  std::vector<model_data_file> data_files;
};

/// A remote worker's cache lacks a load's model file.
struct worker_file_wanted {
  uint64_t request = 0;
  std::string content_sha256;
};

/// The file's bytes (a frame), or why the control node cannot send them.
struct worker_file_data {
  std::string content_sha256;
  data_ref data{data_ref::kind::none, {}, 0};
  status result;
};

struct worker_loaded {
  uint64_t request = 0;
  status result;  // not OK: the load failed, nothing below is set
  uint32_t replica = 0;
  std::vector<serving::tensor_spec> inputs;
  std::vector<serving::tensor_spec> outputs;
  int64_t max_batch_size = 0;
  std::vector<int64_t> bucket_rows;
  std::vector<serving::bucket_latency> warmup;
  uint64_t pool_bytes = 0;
  std::vector<serving::bucket_layout> buckets;
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
  /// Over tcp (outputs.where == none): the size of the output block the worker allocates.
  uint64_t output_bytes = 0;
  /// Over tcp: the worker_run_part messages its `parts` inputs come in (0: none).
  uint32_t parts = 0;
};

struct worker_done {
  uint64_t batch = 0;
  status result;
  uint64_t compute_us = 0;
  int64_t bucket_rows = 0;
  std::vector<serving::batch::output_layout> outputs;
  /// Over tcp: the output block's frame (none over ipc, and on failure).
  data_ref block{data_ref::kind::none, {}, 0};
};

struct worker_heartbeat {
  uint64_t sequence = 0;
  /// A worker on another host: its device's free memory now (with a memory budget, no more than
  /// the budget), as in its hello; 0 = not reported.
  uint64_t memory_free_bytes = 0;
};

/// A peer lets go on purpose (docs/cluster.md).
/// The most slices a striped run may come in (a peer's larger count is refused).
inline constexpr uint32_t max_run_parts = 4096;

/// Over tcp, a slice of a run's input (proto/worker.proto RunPart; docs/cluster.md, striping):
/// bytes [offset, offset + the frame's size) of input `input` (of `input_bytes`) of run `batch`,
/// which comes in `parts` slices.
struct worker_run_part {
  uint64_t batch = 0;
  uint32_t input = 0;
  uint64_t input_bytes = 0;
  uint64_t offset = 0;
  uint32_t parts = 0;
  data_ref data{data_ref::kind::frame, {}, 0};
};

struct worker_bye {
  std::string reason;
};

using worker_message = std::variant<worker_hello, worker_load, worker_loaded, worker_unload,
                                    worker_run, worker_done, worker_heartbeat, worker_file_wanted,
                                    worker_file_data, worker_bye, worker_run_part>;

/// The message's name in logs and errors ("hello", "run", ...).
inline const char* worker_message_name(const worker_message& m) {
  static constexpr const char* names[] = {"hello",     "load", "loaded",    "unload",
                                          "run",       "done", "heartbeat", "file_wanted",
                                          "file_data", "bye",  "run_part"};
  static_assert(std::size(names) == std::variant_size_v<worker_message>);
  return names[m.index()];
}

}  // namespace troupe::actors
