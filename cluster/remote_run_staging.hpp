#pragma once
/// The worker side of tensors as frames (docs/cluster.md): a worker process that joined a
/// control node over tcp:// shares no memory with it, so its link copies each run's input frames
/// into regions of the process's own arena (pinned for a GPU worker: the uploads stay DMAs) and
/// gives the run an output block there, and the serving loop (actors/replica_host.hpp) sees the
/// run as it would over ipc. When the run is done, its answer takes the output block along as a
/// frame, sent without a copy: the block goes back to the arena once ZeroMQ has sent it.
///
/// Striping (docs/cluster.md): the control node may cut a large run's inputs into slices, sent
/// over the worker's connections side by side (cluster/worker_lanes.hpp) with the run's envelope:
/// whichever of them comes first allocates the input's region, each slice is copied into its
/// place by the thread that received it, and the run is handed on once its envelope and every
/// slice are in.
///
/// Thread-safety: `stage` and `add_part` on the link's threads (the first connection's and the
/// lanes'), `answer` on the run thread (replica_host's send): the tables are locked, and the
/// copies run outside the lock.

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
#include "serving/run_number_window.hpp"
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

  /// What staging a run's envelope or a slice of it came to: the run, staged, once it has all
  /// its bytes; nullopt while slices are still to come; an error once the run is complete and
  /// failed (everything it held is back in the arena; the caller answers it with the error):
  /// out_of_memory when the arena is full, invalid_argument when the run names frames it did not
  /// bring, a second copy of a run, slices that do not agree with their run.
  using step = expected<std::optional<actors::worker_run>>;

  /// The run's envelope: its frames copied into the arena, an output block of `output_bytes`,
  /// and, for inputs that come in slices (data_ref::kind::parts), their regions.
  step stage(actors::worker_run r, const std::vector<zmq::message_t>& frames);
  /// A slice of a run's input (its envelope may come before or after it): its bytes copied into
  /// the input's region, which the first of the run's messages to come allocates.
  step add_part(const actors::worker_run_part& p, const std::vector<zmq::message_t>& frames);
  /// A run's envelope or slice as it came (a worker_run or worker_run_part; `stage` or
  /// `add_part`), as what comes of it: the run, staged, for the serving loop; the failed run's
  /// answer (a worker_done) to send; nothing yet.
  std::optional<actors::worker_message> receive(actors::worker_message m,
                                                const std::vector<zmq::message_t>& frames);
  /// The answer to a run staged here, ready to send: its inputs' regions go back, its output
  /// block travels as the frame (a failed run's goes back too).
  outgoing_message answer(actors::worker_done d);

  /// Runs whose envelope or slices came and that are not complete yet (tests).
  size_t assembling() const;

 private:
  struct staged {
    std::vector<serving::shm_region> inputs;
    serving::shm_region outputs;
  };
  /// A run whose envelope or slices are still coming (stage and add_part on several threads).
  struct assembly {
    std::optional<actors::worker_run> run;    // its envelope, once it came
    bool envelope_in = false;  // its envelope's frames copied in (after `run` is set)
    std::vector<serving::shm_region> inputs;  // by input index; bytes 0: not allocated yet
    std::vector<uint64_t> received;           // bytes of each input's slices copied in
    serving::shm_region outputs;
    uint32_t parts = 0;     // slices the run comes in (the first message's word)
    uint32_t parts_in = 0;  // slices counted in (copied, or dropped once the run failed)
    status failed = status::ok();
  };
  void release(const staged& s, bool outputs_too);
  void release(const assembly& a);
  /// The input `index`'s region in `a`, allocated on first use; a failure is recorded in `a`.
  std::byte* input_region(assembly& a, uint32_t index, uint64_t bytes);
  /// Under mutex_: the run complete (its envelope and every slice in): staged, or its failure.
  step finish(uint64_t batch, assembly& a);

  std::shared_ptr<serving::shared_arena> arena_;
  mutable std::mutex mutex_;                 // guards everything below
  std::map<uint64_t, staged> runs_;          // staged and not answered, by run number
  std::map<uint64_t, assembly> assembling_;  // by run number
  /// The runs completed (staged or failed): a late slice or copy of one is dropped, not taken for
  /// a new run.
  serving::run_number_window completed_;
};

}  // namespace troupe::cluster
