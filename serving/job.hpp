#pragma once
/// The unit of work that travels through the actors, and the batch a worker runs.
///
/// Ownership: a job belongs to exactly one party at a time. The origin (the frontend) fills it and
/// submits it to the router; the router hands it to one batcher (or answers it at once); the
/// batcher owns it until it hands it back to `reply_to`, the origin's job_sink: a plain C++
/// interface, so that the doors see submit and complete, not actors. Jobs travel as intrusive lists
/// (`job_list`), so a message carries any number of jobs for one allocation (CAF's own) and the job
/// memory itself is pooled by the origin: no per-request heap allocation on the path.
///
/// Exactly one reply: the batcher answers a job once, in a job_sink::replied(list). Normally that
/// also hands the job back (the origin may reuse it). A job whose deadline passes while a worker
/// still reads its inputs is answered early (`early_reply`), and handed back later in a
/// job_sink::released(list) linked through `release_next`, so the two lists never share a link
/// field.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "runtime/host_staging.hpp"
#include "serving/signature.hpp"

namespace troupe::serving {

struct version_metrics;  // metrics.hpp
class job_sink;          // below

/// CAF's actor clock is a steady_clock; the test coordinator simulates one with the same types.
using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
inline constexpr time_point no_deadline = time_point::max();

/// Where an output block's memory goes back to when the block is freed, instead of the allocator:
/// a worker process's shared memory (serving/shared_arena.hpp), whose regions the node reuses.
/// give_back may run on any thread (the block's last release): thread-safe and cheap.
class block_home {
 public:
  virtual ~block_home() = default;
  virtual void give_back(std::byte* data, size_t bytes) noexcept = 0;
};

/// One batch's outputs in one buffer, shared by every reply that sends a slice of it.
/// Reference counted: the owning pool holds one reference for the block's whole life; each reply
/// slice holds one more. `release` may run on any thread (ZeroMQ calls it from its I/O thread when
/// a zero-copy frame has been sent), so it is one atomic decrement. Only when the pool dropped its
/// reference first (its replica was unloaded while replies were in flight) does the last release
/// free the memory there; for a GPU worker's pinned block that is a cudaFreeHost, once; for a
/// block in a worker process's shared memory, the region goes back to the arena (block_home).
class output_block {
 public:
  /// Plain 64-byte-aligned host memory.
  explicit output_block(size_t bytes);
  /// Adopts staging memory (pinned on a GPU worker: the device writes the outputs straight into
  /// it, and the replies are sent from it without another copy).
  explicit output_block(runtime::host_buffer memory);
  /// Borrows `bytes` at `data` from `home`, which gets them back when the block is freed (the
  /// block keeps `home` alive until then): an output block in a worker process's shared memory.
  output_block(std::byte* data, size_t bytes, std::shared_ptr<block_home> home);
  ~output_block();
  output_block(const output_block&) = delete;
  output_block& operator=(const output_block&) = delete;

  std::byte* data() const { return data_; }
  size_t capacity_bytes() const { return bytes_; }
  bool pinned() const { return memory_.pinned(); }

  void retain(int n = 1) noexcept { refs_.fetch_add(n, std::memory_order_relaxed); }
  /// The last reference frees the block.
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  /// Only the pool's reference is left: no reply reads the bytes any more, the pool may reuse them.
  bool idle() const noexcept { return refs_.load(std::memory_order_acquire) == 1; }

 private:
  std::atomic<int> refs_{1};
  runtime::host_buffer memory_;       // owns data_ when adopted; empty for the plain constructor
  std::shared_ptr<block_home> home_;  // where data_ goes back to, when borrowed
  std::byte* data_ = nullptr;
  size_t bytes_ = 0;
};

/// One output of one job: a slice of a batch's output block. Holds one block reference, which the
/// origin drops once the bytes have left (or the reply was abandoned).
struct output_slice {
  int output_index = 0;  // into the served signature's outputs
  tensor_info info;      // the job's own shape: its rows of the batch output
  output_block* block = nullptr;
  size_t offset = 0;  // bytes into block->data()
};

struct infer_job {
  // ---- set by the origin before submission; read-only afterwards ----
  std::string model;
  int64_t version = 0;  // requested; 0 = the traffic policy chooses
  uint32_t priority = 0;
  std::chrono::microseconds timeout{0};  // requested; 0 = the model's default
  std::string routing_key;
  /// Request parameters as (name, value) views into the origin's envelope, valid until release.
  std::vector<std::pair<std::string_view, std::string_view>> parameters;
  /// In the model's input order (the origin orders them). Kept across reuse: the origin resizes
  /// it and assigns shapes in place, so a pooled job stops allocating once it has served a model.
  std::vector<input_view> inputs;
  std::vector<int> requested_outputs;  // signature output indices; empty = all
  int64_t rows = 1;  // the batch dim (validated by the origin); 1 without batching
  time_point arrival{};
  /// Gets this job back (replied, or released after an early reply). Shared by the origin's
  /// jobs: it lives as long as any of them is out.
  std::shared_ptr<job_sink> reply_to;
  uint64_t sequence = 0;  // the origin's request number, for logs

  // ---- set by the origin to what it validated against; replaced by the router's choice ----
  std::shared_ptr<const model_signature> signature;
  /// The chosen version's metrics. model_manager keeps every version_metrics alive for the
  /// node's life, so a raw pointer is safe on any thread.
  const version_metrics* metrics = nullptr;

  // ---- set by the router ----
  time_point deadline = no_deadline;
  uint32_t level = 1;  // priority level, 1 = highest

  // ---- set by the batcher before the reply ----
  status result;  // OK or why the request failed
  /// Valid only when `result` is OK, in reply order. Kept across reuse like `inputs` (the batcher
  /// resizes it): stale entries of an earlier request are never read after an error.
  std::vector<output_slice> outputs;
  uint32_t batch_rows = 0;
  std::chrono::microseconds queue_time{0};
  std::chrono::microseconds compute_time{0};
  int attempts = 0;          // runs started; a job is retried once after a worker failure
  bool early_reply = false;  // answered before its batch returned; a release follows

  infer_job* next = nullptr;          // link in a (submit_atom / reply_atom) job_list
  infer_job* release_next = nullptr;  // link in a (release_atom) job_list

  /// Clears everything a previous request left, keeping vector/string capacity.
  void reset_for_reuse() {
    version = 0;
    priority = 0;
    timeout = std::chrono::microseconds{0};
    routing_key.clear();
    parameters.clear();
    requested_outputs.clear();
    rows = 1;
    signature.reset();
    metrics = nullptr;
    deadline = no_deadline;
    level = 1;
    result = status::ok();
    batch_rows = 0;
    queue_time = compute_time = std::chrono::microseconds{0};
    attempts = 0;
    early_reply = false;
    next = release_next = nullptr;
  }
};

/// An intrusive FIFO of jobs linked through infer_job::next (or release_next, see `release`).
/// Copying the list copies the pointers: exactly one receiver may walk and consume it.
struct job_list {
  infer_job* head = nullptr;
  infer_job* tail = nullptr;
  uint32_t size = 0;
  bool release = false;  // linked through release_next

  bool empty() const { return head == nullptr; }
  void push_back(infer_job* j) {
    link(j) = nullptr;
    if (tail)
      link(tail) = j;
    else
      head = j;
    tail = j;
    ++size;
  }
  infer_job* pop_front() {
    infer_job* j = head;
    if (!j) return nullptr;
    head = link(j);
    if (!head) tail = nullptr;
    --size;
    return j;
  }
  infer_job*& link(infer_job* j) const { return release ? j->release_next : j->next; }
};

/// Where jobs go back to their origin (a door: cluster/frontend.cpp, cluster/request_gateway.cpp;
/// a test's probe). Called on the answering actor's thread (router, batcher), one list at a time
/// of jobs that share this sink: thread-safe, and quick (it hands the list to the origin's own
/// thread). actors/actor_job_sink.hpp makes one that forwards to an actor.
class job_sink {
 public:
  virtual ~job_sink() = default;
  /// Answered jobs, each with its result and outputs set; the origin replies and may reuse them
  /// (those with early_reply set only once released too).
  virtual void replied(job_list jobs) = 0;
  /// Jobs answered early whose batch no longer reads their inputs (`jobs.release` is set: they
  /// are linked through release_next): the origin may reuse them now.
  virtual void released(job_list jobs) = 0;
};

/// Where an origin submits its jobs: the node's router, behind a plain C++ interface (the doors
/// know no actors). actors/actor_job_sink.hpp makes the router's. Thread-safe; returns at once.
class job_target {
 public:
  virtual ~job_target() = default;
  virtual void submit(job_list jobs) = 0;
  /// The same, `delay` later (fault injection: a slow hop between the door and the router).
  virtual void submit_after(std::chrono::milliseconds delay, job_list jobs) = 0;
};

/// A batch as the batcher lends it to a worker for one run. The batcher owns it (a pool of them);
/// the worker fills the results and sends it back with (done_atom). A batch is never shared:
/// between the two messages only the worker touches it.
struct batch : std::enable_shared_from_this<batch> {
  uint32_t replica_id = 0;       // the worker's replica that runs it
  std::vector<infer_job*> jobs;  // in row order
  int64_t rows = 0;              // sum of the jobs' rows
  uint64_t sequence = 0;         // the batcher's batch number

  // ---- filled by the worker ----
  struct output_layout {
    tensor_info info;      // the batch output as the plan produced it (bucket rows)
    size_t offset = 0;     // bytes into block->data()
    size_t row_bytes = 0;  // bytes of one batch row (the whole output without batching)
  };
  status result;
  output_block* block = nullptr;  // one reference, handed to the batcher with the results
  std::vector<output_layout> outputs;
  int64_t bucket_rows = 0;  // rows of the plan that ran (>= rows: the rest is padding)
  std::chrono::microseconds compute_time{0};
  bool worker_failed = false;  // the worker's device failed: retry elsewhere, the worker restarts

  /// The sequence of the dispatch not yet claimed by a worker (0: none). The batcher sets it
  /// before it sends the run; the worker that receives the run claims it, once. A second copy of
  /// the run (a duplicate on the batcher_worker hop, fault injection) or a stale one that names a
  /// batch recycled since claims nothing and is dropped: a batch never runs twice, and a worker
  /// never writes into a batch the batcher has taken back.
  std::atomic<uint64_t> dispatched{0};

  /// The receiving worker's side (see `dispatched`). A ref with sequence 0 (tests that hand a
  /// batch to a worker directly) always claims.
  bool claim(uint64_t sequence) {
    uint64_t expected = sequence;
    return dispatched.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
  }

  batch() = default;
  batch(const batch&) = delete;
  batch& operator=(const batch&) = delete;
  /// A batch dropped with its block still attached (its worker finished after the batcher had
  /// stopped) gives the block's reference back.
  ~batch() {
    if (block) block->release();
  }

  void reset() {
    jobs.clear();
    rows = 0;
    result = status::ok();
    block = nullptr;
    bucket_rows = 0;  // outputs keep their capacity: the worker resizes them
    compute_time = std::chrono::microseconds{0};
    worker_failed = false;
  }
};

/// What travels in a message: a shared handle on the batch. The batcher keeps every batch it lent
/// in its in-flight table; the handle keeps the batch alive for a worker still running it when the
/// batcher is stopped first (node shutdown).
struct batch_ref {
  std::shared_ptr<batch> ptr;
  uint64_t sequence = 0;  // the dispatch it carries: see batch::claim
};

}  // namespace troupe::serving
