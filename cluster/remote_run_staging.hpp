#pragma once
/// The worker side of tensors as frames (docs/cluster.md): a worker process that joined a
/// control node over tcp:// shares no memory with it, so its link copies each run's input frames
/// into regions of the process's own arena (pinned for a GPU worker: the uploads stay DMAs) and
/// gives the run an output block there, and the serving loop (actors/replica_host.hpp) sees the
/// run as it would over ipc. When the run is done, its answer takes the output block along as a
/// frame, sent without a copy: the block goes back to the arena once ZeroMQ has sent it.
///
/// Thread-safety: `stage` on the link's thread, `answer` on the run thread (replica_host's send):
/// the table of staged runs is locked.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "actors/worker_protocol.hpp"
#include "core/status.hpp"
#include "serving/shared_arena.hpp"

namespace troupe::cluster {

/// An encoded envelope and the frame that follows it, if any.
struct outgoing_message {
  std::string envelope;
  std::optional<zmq::message_t> frame;
};

class remote_run_staging {
 public:
  explicit remote_run_staging(std::shared_ptr<serving::shared_arena> arena)
      : arena_(std::move(arena)) {}
  ~remote_run_staging();

  /// The run with its frames copied into the arena and an output block of `output_bytes`;
  /// out_of_memory when the arena is full, invalid_argument when the run names frames it
  /// did not bring.
  expected<actors::worker_run> stage(actors::worker_run r, const std::vector<zmq::message_t>& frames);
  /// The answer to a run staged here, ready to send: its inputs' regions go back, its output
  /// block travels as the frame (a failed run's goes back too).
  outgoing_message answer(actors::worker_done d);

 private:
  struct staged {
    std::vector<serving::shm_region> inputs;
    serving::shm_region outputs;
  };
  void release(const staged& s, bool outputs_too);

  std::shared_ptr<serving::shared_arena> arena_;
  std::mutex mutex_;  // guards runs_
  std::map<uint64_t, staged> runs_;  // by run number
};

}  // namespace troupe::cluster
