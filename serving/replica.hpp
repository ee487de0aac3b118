#pragma once
/// One model instance on one device: a runtime::session (CPU or CUDA backend), one compiled plan
/// per batch bucket, the staging memory each plan reads its inputs from, and a pool of output
/// blocks the plan writes into and replies are sent from.
/// Shape-dependent work happens at load (compile, warm up, allocate); `run` gathers the batch's
/// inputs from the transport frames into the bucket's staging memory (the one host copy), runs the
/// plan into a free output block and allocates nothing once every bucket has a free block.
///
/// Plans and the compiled-shape cache: a model whose non-batch dims are all fixed gets its plans
/// at load, one per batch bucket, and holds them for its life (leases: they are in use, never
/// evicted). A model with dynamic non-batch dims compiles a plan per new shape at its first
/// request; those plans live in the session's bounded cache (model_config::shape_cache), the
/// replica leasing one only while a batch runs on it. A bucket whose plan the cache has evicted
/// is dropped with its staging memory and output blocks (blocks still referenced by replies in
/// flight live on until released), and built again should its shape come back.
///
/// Staging and output blocks are runtime::host_buffer: pinned on the CUDA backend, so the plan's
/// upload and download are asynchronous DMAs straight from and into them; plain aligned memory on
/// the CPU (where the plan reads the staging memory in place).
///
/// Thread-safety: one run at a time (the owning worker's thread). Output blocks outlive the
/// replica while replies still reference them (output_block's reference count).

#include <atomic>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "runtime/host_staging.hpp"
#include "runtime/session.hpp"
#include "serving/batch_gather.hpp"
#include "serving/job.hpp"
#include "serving/model_config.hpp"
#include "serving/signature.hpp"

namespace troupe::runtime {
class plan;
}

namespace troupe::serving {

class serving_metrics;
struct version_metrics;

struct bucket_latency {
  int64_t rows = 0;
  double mean_us = 0;
};

/// Where one batch bucket's plan reads its inputs and writes its outputs, as a worker process
/// reports it to the node that stages its batches (actors/worker_proxy.hpp). Input i is one
/// contiguous tensor of `inputs[i]` (bucket rows included); output k lies at output_offsets[k] in
/// an output block of block_bytes (64-byte aligned offsets).
struct bucket_layout {
  int64_t rows = 0;
  std::vector<tensor_info> inputs;
  std::vector<tensor_info> outputs;
  std::vector<size_t> output_offsets;
  std::vector<size_t> output_row_bytes;  // one batch row (the whole output without batching)
  size_t block_bytes = 0;
};

/// What a replica holds, by kind of memory.
struct replica_memory {
  size_t device_pool_bytes = 0;  // the session's device pool: weights, plan arenas (device memory
                                 // on a GPU, host memory on the CPU)
  size_t shared_weights_bytes = 0;  // of which the weights' pool, shared with every replica made
                                    // from this one or its siblings (counted once per group)
  size_t staging_bytes = 0;         // input staging over every bucket
  size_t output_block_bytes = 0;    // output blocks over every bucket
  size_t output_blocks = 0;
  bool pinned = false;  // staging and blocks are page-locked
  /// What a worker's memory budget counts (serving/replica_residency.hpp): the device bytes this
  /// replica holds alone (its pool: plan arenas, kernel scratch), and the device bytes its
  /// weights take when resident, shared with the replicas it shares them with.
  size_t own_device_bytes = 0;
  size_t weights_footprint_bytes = 0;
  bool weights_resident = true;
  /// Of own_device_bytes, what the plan arenas (activations, workspace) hold now, and what they
  /// take when resident: a budget discards them with the weights (options::evictable_weights).
  size_t arena_reserved_bytes = 0;
  size_t arena_footprint_bytes = 0;
  bool arenas_resident = true;
};

class replica {
 public:
  struct options {
    std::string model_name;
    int64_t version = 1;
    std::string model_path;
    model_config config;
    uint32_t warmup_runs = 3;
    kernels::backend where = kernels::backend::cpu;
    int device_index = 0;  // the GPU (CUDA backend)
    runtime::precision compute_precision = runtime::precision::fp32;
    /// A live replica of the same model file on the same device at the same precision (see
    /// can_share_weights): the new replica's session is its session's create_instance(), so the
    /// model is neither loaded nor converted again and the device holds its weights once; the
    /// plans, staging and output blocks stay per replica. Null: load the file. Not owned; only
    /// read during create.
    const replica* weights_from = nullptr;
    /// The model file already read (runtime::load_onnx_file, off the worker's thread): the session
    /// is made from a copy of it (sharing its constants' bytes) instead of reading model_path.
    /// Null: read the file here (unless weights_from).
    std::shared_ptr<const runtime::graph> graph;
    /// Where shape-cache evictions are counted (troupe_shape_cache_evictions_total); may be null.
    /// Outlives the replica.
    serving_metrics* metrics = nullptr;
    /// Staging a large batch is memory-bound (the request frames lie scattered over the heap):
    /// batches of at least parallel_staging_bytes are copied by this many threads (OpenMP),
    /// each a share of the jobs. 0: a quarter of the hardware threads, 1 to 4.
    uint32_t staging_threads = 0;
    size_t parallel_staging_bytes = size_t{2} << 20;
    /// Read before each batch bucket is compiled and warmed up at create: once true, create stops
    /// there and fails `cancelled` (the worker building it is stopping). May be null.
    const std::atomic<bool>* cancel = nullptr;
    /// Staging and output memory come from outside at each run (run_staged: a worker process
    /// reads the inputs its node staged in shared memory and writes the outputs there): the
    /// replica keeps none of its own (the warm-up borrows some for its runs and gives it back).
    /// Only models whose non-batch dims are all fixed: their buckets are known at load.
    bool external_staging = false;
    /// > 0: a plan's arena may take at most this (the worker's memory budget, less what the rest
    /// of the worker holds for good and the weights): a bucket whose plan would need more runs
    /// as slices of the batch (model_config::batch_slice_rows). A fresh load's only; instances
    /// share their first replica's.
    size_t max_arena_bytes = 0;
    /// The weights can be evicted to host memory and paged back (evict_weights): a worker with
    /// a memory budget loads its replicas so (runtime::session_options::evictable_weights).
    /// A replica made with weights_from takes its sibling's setting.
    bool evictable_weights = false;
  };

  static expected<std::unique_ptr<replica>> create(const options& o);
  ~replica();

  /// Whether a replica made with `o` may take this one's weights (options::weights_from): the
  /// same model file, version, backend, device, precision and input normalisation.
  bool can_share_weights(const options& o) const;
  /// Whether this replica and `other` hold one copy of the weights: the same prepared graph
  /// constants (host bytes) and, on a GPU, the same device constant store.
  bool shares_weights_with(const replica& other) const;

  const std::shared_ptr<const model_signature>& signature() const { return signature_; }
  /// Batch sizes with a compiled plan, ascending (just {1} without batching).
  const std::vector<int64_t>& bucket_rows() const { return bucket_rows_; }
  /// Warm-up latency per bucket, measured at load (empty for models with dynamic non-batch dims).
  const std::vector<bucket_latency>& warmup_latency() const { return warmup_; }
  /// The session's compiled-shape cache: plans, arena bytes, evictions so far.
  runtime::shape_cache_stats shape_cache() const { return session_->shape_cache(); }
  /// Device pool + staging + output-block bytes held now.
  size_t pool_bytes() const;
  replica_memory memory() const;
  kernels::backend where() const { return where_; }

  /// Runs `b`: picks the smallest bucket that holds b.rows rows of the jobs' shape, copies every
  /// job's inputs into the bucket's staging tensors, runs the plan and fills b.block/b.outputs/
  /// b.bucket_rows. Returns the run's status (also stored in b.result).
  status run(batch& b);
  /// The buckets compiled at load (static shapes), ascending by rows: what run_staged runs.
  std::vector<bucket_layout> layouts() const;
  /// (bucket rows, rows per run) of the load-time buckets, ascending: a bucket whose rows per
  /// run are fewer runs its batches as slices (model_config::batch_slice_rows).
  std::vector<std::pair<int64_t, int64_t>> bucket_slices() const;
  /// Runs the load-time bucket of `bucket_rows` rows on inputs already staged: inputs[i] holds
  /// input i of that bucket's layout, and the outputs go to `output_block` (block_bytes, at the
  /// layout's offsets). For replicas made with external_staging. Thread-safety as `run`.
  status run_staged(int64_t bucket_rows, std::span<std::byte* const> inputs,
                    std::byte* output_block);
  /// Fault injection (model_config::fault_error_ratio; the worker asks only where the node has
  /// fault_injection on): whether this batch is to fail. Deterministic: error_ratio of the calls.
  bool inject_error();

  /// The model version this replica serves.
  const std::string& model_name() const { return signature_->model; }
  int64_t version() const { return version_; }

  /// Weights made evictable (options::evictable_weights), shared with every replica that
  /// shares them (one weights_identity): evict_weights moves them to host memory (pinned, on a
  /// GPU) and returns the device bytes released; page_in_weights brings them back to the same
  /// device addresses and returns the bytes mapped (0 on the CPU, where nothing moves:
  /// runtime/device.hpp). Plans, CUDA graphs and recorded kernel choices are kept. While
  /// evicted, runs fail `unavailable`. The caller makes sure no run of any replica sharing the
  /// weights is in flight, and none starts, while it evicts (serving/weight_residency.hpp).
  expected<size_t> evict_weights() { return session_->evict_weights(); }
  expected<size_t> page_in_weights() { return session_->page_in_weights(); }
  bool weights_resident() const { return session_->weights_resident(); }
  /// This replica's own plan arenas, made evictable with the weights (options::
  /// evictable_weights): discard_arenas gives their device memory back (nothing in them
  /// outlives a run), restore_arenas maps memory under them again at the same addresses. Same
  /// caller contract as evict_weights, for this replica alone.
  expected<size_t> discard_arenas() { return session_->discard_arenas(); }
  expected<size_t> restore_arenas() { return session_->restore_arenas(); }
  bool arenas_resident() const { return session_->arenas_resident(); }
  /// Equal for replicas that share one copy of the weights.
  const void* weights_identity() const { return session_->weights_identity(); }

 private:
  struct block_slot {
    output_block* block = nullptr;  // the pool's reference
    std::vector<tensor> outputs;    // borrowing views into block
  };
  struct bucket {
    int64_t rows = 0;
    /// Rows of one run of the plan: `rows`, or fewer when the bucket runs as slices (rows is
    /// then a multiple of it). The plan, plan_key and slice_*_infos are the slice's.
    int64_t slice_rows = 0;
    std::vector<tensor_info> slice_input_infos;
    std::vector<tensor_info> slice_output_infos;
    std::vector<shape_t> input_shapes;     // full shapes (rows included)
    std::vector<tensor_info> input_infos;  // the same with the inputs' types
    std::string plan_key;                  // the plan in the session's cache (session::plan_key)
    /// Plans compiled at load (static shapes): leased for the replica's life. Null for plans of
    /// dynamic shapes, which are leased from the cache per run.
    std::shared_ptr<runtime::plan> pinned;
    std::vector<runtime::host_buffer> staging_memory;  // one per input, allocated once
    std::vector<tensor> staging;                       // the plan's inputs: views of staging_memory
    std::vector<size_t> input_row_bytes;
    std::vector<tensor_info> output_infos;
    std::vector<size_t> output_offsets;  // within a block, 64-byte aligned
    std::vector<size_t> output_row_bytes;
    size_t block_bytes = 0;
    std::vector<block_slot> blocks;
  };

  /// A bucket and a lease of its plan for one run.
  struct bucket_lease {
    bucket* b = nullptr;
    std::shared_ptr<runtime::plan> plan;
  };

  replica() = default;
  status init(const options& o);
  expected<bucket_lease> find_or_build_bucket(int64_t rows,
                                              const std::vector<input_view>& first_inputs);
  /// Builds the bucket of `rows` rows (`input_shapes` carry them), sliced as batch_slice_rows
  /// says; without it, a plan that does not fit (out_of_memory) is built for half the rows,
  /// down to one, and the bucket runs as slices of that.
  expected<bucket_lease> build_bucket(std::vector<shape_t> input_shapes, int64_t rows);
  expected<bucket_lease> build_bucket_at(const std::vector<shape_t>& input_shapes, int64_t rows,
                                         int64_t slice_rows);
  /// Runs `p` on a bucket's full inputs and outputs: once, or once per slice covering the first
  /// `used_rows` rows (the rows past them are padding nobody reads).
  status run_bucket(const bucket& b, runtime::plan& p, std::span<const tensor> inputs,
                    std::span<tensor> outputs, int64_t used_rows);
  /// Drops the dynamic-shape buckets whose plan the session's cache no longer holds.
  void drop_evicted_buckets();
  /// Adds the session's evictions since the last call to the model version's counter.
  void count_evictions();
  static void release_blocks(bucket& b);
  expected<block_slot*> free_block(bucket& b);

  std::unique_ptr<runtime::session> session_;
  std::shared_ptr<const model_signature> signature_;
  std::vector<int64_t> bucket_rows_;
  std::vector<std::unique_ptr<bucket>> buckets_;
  std::vector<bucket_latency> warmup_;
  serving_metrics* metrics_ = nullptr;
  std::shared_ptr<version_metrics> version_metrics_;  // from metrics_, at the first eviction
  uint64_t evictions_counted_ = 0;
  batch_gather gather_;
  /// Destinations and capacities of one gather; reused batch after batch.
  std::vector<std::byte*> gather_dst_;
  std::vector<size_t> gather_capacity_;
  bool external_staging_ = false;
  /// run_staged's borrowed views of the caller's memory; reused batch after batch.
  std::vector<tensor> staged_inputs_;
  std::vector<tensor> staged_outputs_;
  /// run_bucket's views of one slice; reused batch after batch.
  std::vector<tensor> slice_inputs_;
  std::vector<tensor> slice_outputs_;
  int64_t slice_rows_ = 0;  // model_config::batch_slice_rows
  kernels::backend where_ = kernels::backend::cpu;
  int device_index_ = 0;
  // What can_share_weights compares.
  std::string model_path_;
  int64_t version_ = 0;
  runtime::precision precision_ = runtime::precision::fp32;
  double fault_error_ratio_ = 0;
  uint64_t fault_calls_ = 0;
};

/// The batch sizes a model gets plans for: config.batch_buckets when given, else powers of two
/// below max_batch_size, the preferred sizes and max_batch_size itself. {1} without batching.
std::vector<int64_t> default_bucket_rows(int64_t max_batch_size, const model_config& c);

}  // namespace troupe::serving
