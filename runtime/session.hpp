#pragma once
/// The runtime's front door: load a model once, then run it on named host tensors. A session
/// compiles one plan per distinct set of input shapes (batch bucket) and caches it, within the
/// bounds of session_options::shape_cache (runtime/plan_cache.hpp: least recently used plans not
/// in use are evicted, and compiled again if their shapes come back); a plan run allocates
/// nothing. Thread-safety: a session serialises its runs (one arena per plan); for parallel runs
/// make more instances with create_instance (each its own device context and stream, the
/// weights shared).
///
/// Device memory of one session (one model instance): the weights live once per device in the
/// device's constant store, shared by every plan and every instance made by create_instance; the
/// arenas (one per plan) and kernel-owned scratch live in the instance's own pool.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"
#include "runtime/graph.hpp"
#include "runtime/input_normalization.hpp"
#include "runtime/plan_cache.hpp"

namespace troupe::runtime {

enum class precision : uint8_t { fp32 = 0, fp16 = 1, bf16 = 2, tf32 = 3 };
std::string_view precision_name(precision p);
expected<precision> parse_precision(std::string_view s);
expected<kernels::backend> parse_backend(std::string_view s);

struct session_options {
  kernels::backend where = kernels::backend::cpu;
  precision compute_precision = precision::fp32;
  int device_index = 0;       // GPU ordinal for the CUDA backend
  bool enable_fusion = true;  // Conv/Gemm/MatMul + bias/activation/residual, BN folding
  /// Batch buckets for run(): a batch of n rows runs padded with zero rows to the smallest bucket
  /// >= n, and run() returns the first n rows of each output, so that one plan (and one CUDA
  /// graph) serves every n up to its bucket. Any order, each > 0; empty (the default): every
  /// batch size gets a plan of its own. Only for models whose inputs and outputs all lead with
  /// the same symbolic dimension (create fails otherwise). Batches above the largest bucket run
  /// unpadded.
  std::vector<int64_t> batch_buckets;
  /// Inputs clients send as integer pixels, normalised inside the graph (runtime/
  /// input_normalization.hpp), applied at create before everything else: inputs() then reports
  /// the client type (uint8...) for them.
  std::vector<input_normalization> input_normalizations;
  /// Bounds of the compiled-shape cache (plans by count and by arena bytes), each instance made
  /// by create_instance its own cache with the same bounds.
  shape_cache_limits shape_cache;
  /// The weights can be evicted to host memory and paged back (evict_weights, page_in_weights;
  /// runtime/device.hpp's device_options::evictable_constants). Instances made by
  /// create_instance share them, and their state.
  bool evictable_weights = false;
  /// This instance's plan arenas can be discarded between runs and restored (discard_arenas,
  /// restore_arenas; device_options::evictable_arenas). Each instance its own.
  bool evictable_arenas = false;
  /// > 0: plans whose arena would be larger are refused out_of_memory (plan::build), before
  /// they allocate it. Instances share the bound.
  size_t max_arena_bytes = 0;
};

/// A graph input or output as callers see it.
struct io_desc {
  std::string name;
  dtype type = dtype::undefined;
  symbolic_shape shape;  // declared dims; symbols for dynamic ones
};

/// Memory figures of one compiled plan.
struct plan_memory {
  size_t planned_arena_bytes = 0;    // one arena holding every intermediate and workspace
  size_t sum_of_tensor_bytes = 0;    // what one buffer per intermediate would take
  size_t peak_live_bytes = 0;        // most bytes alive at one step: no arena can be smaller
  size_t constant_bytes = 0;         // constants the steps read from the plan's table (kernels
                                     // that keep their own weight copies are not counted here)
  size_t workspace_bytes = 0;        // largest kernel scratch (included in the arena)
};

/// Memory of one session (one model instance), for `troupe run --latency-json` and the serving
/// metrics.
struct instance_memory {
  size_t weights_bytes = 0;           // constants on the device, shared with sibling instances
                                      // (one copy for all of them); on the CPU the host bytes of
                                      // the model's constants
  size_t weights_reserved_bytes = 0;  // device memory the shared constants' pool holds (0: CPU)
  size_t arena_bytes = 0;             // planned arenas of this instance's plans
  size_t workspace_bytes = 0;         // largest kernel workspace of those plans (in an arena)
  size_t kernel_owned_bytes = 0;      // own pool in use beyond the arenas: kernels' own copies
                                      // and scratch
  size_t own_reserved_bytes = 0;      // this instance's own pool
  size_t own_in_use_bytes = 0;
  size_t own_peak_bytes = 0;
  size_t fragmentation_bytes = 0;    // own_reserved - own_in_use
  size_t device_reserved_bytes = 0;  // own_reserved + weights_reserved: this instance alone
  size_t plans = 0;
  size_t graph_plans = 0;  // of which replay a CUDA graph
  /// Device memory the weights take when on the device, whether they are now or not: the
  /// evictable heap's live chunks on a GPU (the constant pool's reserved bytes without
  /// eviction), the constants' host bytes on the CPU. What a memory budget counts for them.
  size_t weights_footprint_bytes = 0;
  size_t weights_host_bytes = 0;  // pinned host memory holding evicted copies (GPU)
  bool weights_resident = true;   // false while evicted
  /// Evictable arenas (session_options::evictable_arenas): the device memory they take when
  /// resident, the part of own_reserved_bytes they hold now, and whether they are resident.
  /// own_reserved_bytes - arena_reserved_bytes is what stays however the arenas go.
  size_t arena_footprint_bytes = 0;
  size_t arena_reserved_bytes = 0;
  bool arenas_resident = true;
};

class plan;    // runtime/plan.hpp
class device;  // runtime/device.hpp

class session {
 public:
  /// Loads, checks and prepares the model; plans are compiled lazily per input shapes (or
  /// eagerly with `prepare`).
  static expected<std::unique_ptr<session>> create(const std::string& model_path,
                                                   session_options options = {});
  static expected<std::unique_ptr<session>> create_from_graph(graph g, session_options options);
  ~session();

  const std::vector<io_desc>& inputs() const { return inputs_; }
  const std::vector<io_desc>& outputs() const { return outputs_; }
  const graph& model_graph() const { return graph_; }
  const session_options& options() const { return options_; }

  /// Compiles (or finds) the plan for these input infos, in the order of inputs(). The pointer
  /// is a lease (runtime/plan_cache.hpp): while it is held the plan is in use and never evicted,
  /// so hold it no longer than the plan is needed.
  expected<std::shared_ptr<plan>> prepare(const std::vector<tensor_info>& input_infos);
  /// The cache's key of a plan for these input infos.
  static std::string plan_key(const std::vector<tensor_info>& input_infos);
  /// A lease of the plan cached under `key` (plan_key), now the most recently used; null when
  /// the cache does not hold it (never compiled, or evicted): then prepare compiles it again.
  std::shared_ptr<plan> cached_plan(const std::string& key);
  /// Whether the cache holds a plan under `key`; the order of use is left as it is.
  bool caches_plan(const std::string& key) const;
  /// Plans and arena bytes the compiled-shape cache holds, and its evictions so far.
  shape_cache_stats shape_cache() const;

  /// Runs on host tensors given by name; returns host outputs in the order of outputs().
  expected<std::vector<tensor>> run(const std::map<std::string, tensor>& named_inputs);
  /// Runs on host tensors in the order of inputs().
  expected<std::vector<tensor>> run(const std::vector<tensor>& ordered_inputs);

  /// Bytes the device holds for this instance alone: its own pool (arenas, kernel-owned
  /// buffers) plus the shared constants' pool (the weights, counted in full: several instances
  /// sharing them hold them once, see memory_report).
  size_t device_reserved_bytes() const;
  /// Weights, arenas, workspace and pool figures of this instance.
  instance_memory memory_report() const;

  /// Another instance of this model on the same device: its own device context (stream,
  /// cuDNN/cuBLASLt handles, pool) and plans; the prepared graph and the device copies of the
  /// weights shared with this session. For parallel runs, one thread per instance.
  expected<std::unique_ptr<session>> create_instance() const;
  /// True when this session and `other` share their device constants (instances of one model).
  bool shares_weights_with(const session& other) const;
  /// Equal for sessions that share their device constants: the identity of that shared set.
  const void* weights_identity() const;

  /// With session_options::evictable_weights: moves the weights (shared with every instance) to
  /// host memory, pinned on a GPU, and gives their device memory back; returns the device bytes
  /// released. The plans, their CUDA graphs and the kernels' recorded choices stay as they are.
  /// No run of this session or an instance may be in flight; until page_in_weights, runs fail
  /// `unavailable` and no plan is compiled. unsupported without evictable_weights.
  expected<size_t> evict_weights();
  /// Puts the weights back on the device at the addresses the plans read; returns the device
  /// bytes mapped (0 on the CPU, where nothing moved). out_of_memory (still evicted) when the
  /// device cannot hold them.
  expected<size_t> page_in_weights();
  bool weights_resident() const;

  /// With session_options::evictable_arenas: gives this instance's plan arenas' device memory
  /// back (activations and workspace: nothing in them outlives a run); returns the bytes
  /// released. No run of this instance may be in flight; until restore_arenas, runs fail
  /// `unavailable` and no plan is compiled. unsupported without evictable_arenas.
  expected<size_t> discard_arenas();
  /// Maps device memory under the arenas again, at the addresses the plans (and their CUDA
  /// graphs) use; returns the bytes mapped. out_of_memory (still discarded) when it does not fit.
  expected<size_t> restore_arenas();
  bool arenas_resident() const;

  /// The batch a run of `rows` rows executes at: the smallest bucket >= rows, or rows itself
  /// without buckets, above the largest bucket, or for rows <= 0.
  int64_t bucket_for(int64_t rows) const;
  /// Compiles the plan of every batch bucket and runs each twice on zero inputs, so that the
  /// first real run of a bucket replays a captured CUDA graph. invalid_argument without buckets;
  /// unsupported when a non-batch input dim is not fixed (such plans compile at first use).
  status warm_up();

  /// Checks inputs (names, dtypes, ranks, fixed dims) and orders them as inputs().
  expected<std::vector<tensor>> order_inputs(const std::map<std::string, tensor>& named) const;

 private:
  session(graph g, session_options options);
  status init();
  status check_batch_buckets();
  expected<std::vector<tensor>> run_exact(const std::vector<tensor>& ordered_inputs);

  graph graph_;
  session_options options_;
  std::shared_ptr<device> device_;  // shared by every plan of this session
  std::vector<io_desc> inputs_;
  std::vector<io_desc> outputs_;
  std::vector<int64_t> buckets_;  // options_.batch_buckets sorted, without duplicates
  mutable std::mutex mutex_;      // guards plans_ and serialises runs
  plan_cache plans_;              // key: plan_key (the input infos as text)
};

}  // namespace troupe::runtime
