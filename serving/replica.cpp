#include "serving/replica.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "runtime/plan.hpp"
#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"

namespace troupe::serving {

output_block::output_block(size_t bytes)
    : data_(static_cast<std::byte*>(aligned_alloc_bytes(std::max<size_t>(bytes, 64)))),
      bytes_(bytes) {}

output_block::output_block(runtime::host_buffer memory)
    : memory_(std::move(memory)), data_(memory_.data()), bytes_(memory_.bytes()) {}

output_block::output_block(std::byte* data, size_t bytes, std::shared_ptr<block_home> home)
    : home_(std::move(home)), data_(data), bytes_(bytes) {}

output_block::~output_block() {
  if (home_)
    home_->give_back(data_, bytes_);
  else if (!memory_)
    aligned_free(data_);  // adopted memory frees itself
}

namespace {

constexpr size_t block_alignment = 64;

size_t align_up(size_t n) {
  return (n + block_alignment - 1) / block_alignment * block_alignment;
}

std::vector<int64_t> dims_of(const runtime::symbolic_shape& s) {
  std::vector<int64_t> d;
  d.reserve(s.size());
  for (const auto& x : s) d.push_back(x.is_static() ? x.size : -1);
  return d;
}

}  // namespace

std::vector<int64_t> default_bucket_rows(int64_t max_batch_size, const model_config& c) {
  if (max_batch_size <= 0) return {1};
  std::vector<int64_t> rows;
  if (!c.batch_buckets.empty()) {
    rows = c.batch_buckets;
  } else {
    for (int64_t r = 1; r < max_batch_size; r *= 2) rows.push_back(r);
    rows.insert(rows.end(), c.preferred_batch_sizes.begin(), c.preferred_batch_sizes.end());
  }
  rows.push_back(max_batch_size);  // every batch must fit some bucket
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  rows.erase(std::remove_if(rows.begin(), rows.end(),
                            [&](int64_t r) { return r < 1 || r > max_batch_size; }),
             rows.end());
  return rows;
}

expected<std::unique_ptr<replica>> replica::create(const options& o) {
  std::unique_ptr<replica> r(new replica());
  TROUPE_RETURN_IF_ERROR(r->init(o));
  return r;
}

replica::~replica() {
  for (auto& b : buckets_) release_blocks(*b);
}

void replica::release_blocks(bucket& b) {
  // Blocks still referenced by replies in flight live on until those release them.
  for (auto& slot : b.blocks) slot.block->release();
  b.blocks.clear();
}

namespace {

bool same_normalization(const std::optional<runtime::input_normalization>& a,
                        const std::optional<runtime::input_normalization>& b) {
  if (!a || !b) return !a && !b;
  return a->input == b->input && a->client_type == b->client_type && a->mean == b->mean &&
         a->stddev == b->stddev && a->channel_axis == b->channel_axis;
}

}  // namespace

bool replica::can_share_weights(const options& o) const {
  // The input normalisation is part of the prepared graph the sibling session copies.
  return session_ && signature_ && o.model_path == model_path_ && o.version == version_ &&
         o.where == where_ && o.device_index == device_index_ &&
         o.compute_precision == precision_ &&
         same_normalization(o.config.input_normalization, signature_->config.input_normalization);
}

bool replica::shares_weights_with(const replica& other) const {
  if (!session_ || !other.session_ || !session_->shares_weights_with(*other.session_)) return false;
  // The CPU backend reads constants where the host keeps them, so its device test holds for any
  // two CPU sessions; the prepared graphs' constants tell whether the bytes are the same ones.
  const auto& a = session_->model_graph().values;
  const auto& b = other.session_->model_graph().values;
  if (a.size() != b.size()) return false;
  bool any = false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].constant != !b[i].constant) return false;
    if (!a[i].constant) continue;
    if (a[i].constant->raw() != b[i].constant->raw()) return false;
    any = true;
  }
  return any;
}

status replica::init(const options& o) {
  metrics_ = o.metrics;
  where_ = o.where;
  gather_ = batch_gather(o.staging_threads, o.parallel_staging_bytes);
  external_staging_ = o.external_staging;
  device_index_ = o.device_index;
  model_path_ = o.model_path;
  version_ = o.version;
  const auto& fv = o.config.fault_versions;
  if (fv.empty() || std::find(fv.begin(), fv.end(), o.version) != fv.end())
    fault_error_ratio_ = o.config.fault_error_ratio;
  precision_ = o.compute_precision;
  slice_rows_ = o.config.batch_slice_rows;
  if (o.weights_from) {
    if (!o.weights_from->can_share_weights(o))
      return internal_error("replica of '" + o.model_name +
                            "': weights_from is another model, device or precision");
    TROUPE_ASSIGN_OR_RETURN(session_, o.weights_from->session_->create_instance());
  } else {
    runtime::session_options so;
    so.where = o.where;
    so.device_index = o.device_index;
    so.compute_precision = o.compute_precision;
    so.shape_cache = o.config.shape_cache;
    so.evictable_weights = o.evictable_weights;
    // A budget evicts a replica's arenas with its weights: an idle replica then holds next to
    // nothing on the device (instances made below inherit the option).
    so.evictable_arenas = o.evictable_weights;
    so.max_arena_bytes = o.max_arena_bytes;
    // The signature below comes from the session's inputs: a normalised input shows the client
    // type.
    if (o.config.input_normalization)
      so.input_normalizations.push_back(*o.config.input_normalization);
    if (o.graph) {
      TROUPE_ASSIGN_OR_RETURN(session_, runtime::session::create_from_graph(*o.graph, so));
    } else {
      TROUPE_ASSIGN_OR_RETURN(session_, runtime::session::create(o.model_path, so));
    }
  }

  auto sig = std::make_shared<model_signature>();
  sig->model = o.model_name;
  sig->version = o.version;
  sig->config = o.config;
  for (const auto& in : session_->inputs())
    sig->inputs.push_back({in.name, in.type, dims_of(in.shape)});
  for (const auto& out : session_->outputs())
    sig->outputs.push_back({out.name, out.type, dims_of(out.shape)});
  if (sig->inputs.empty())
    return unsupported("model '" + o.model_name + "' has no inputs to serve");

  // Batching needs a dynamic leading dim on every input (and every declared output).
  std::string static_lead;
  for (const auto* list : {&sig->inputs, &sig->outputs})
    for (const auto& t : *list)
      if (static_lead.empty() && (t.shape.empty() ? list == &sig->inputs : t.shape[0] >= 0))
        static_lead = "'" + t.name + "'";
  int64_t mbs = o.config.max_batch_size;
  if (mbs < 0) mbs = static_lead.empty() ? 8 : 0;
  if (mbs > 0 && !static_lead.empty())
    return invalid_argument("model '" + o.model_name + "': max_batch_size " + std::to_string(mbs) +
                            " needs a dynamic leading (batch) dim on every input and output; " +
                            static_lead + " has none");
  sig->max_batch_size = mbs;
  sig->config.max_batch_size = mbs;
  if (mbs > 0)
    for (auto* list : {&sig->inputs, &sig->outputs})
      for (auto& t : *list)
        if (!t.shape.empty()) t.shape[0] = -1;
  for (int64_t p : sig->config.preferred_batch_sizes)
    if (mbs > 0 && p > mbs)
      return invalid_argument("model '" + o.model_name + "': preferred batch size " +
                              std::to_string(p) + " exceeds max_batch_size " + std::to_string(mbs));
  signature_ = sig;
  bucket_rows_ = default_bucket_rows(mbs, sig->config);

  // Compile and warm up every bucket now when the shapes are known; models with dynamic non-batch
  // dims compile per shape at first use.
  bool static_shapes = true;
  for (const auto& t : sig->inputs)
    for (size_t d = mbs > 0 ? 1 : 0; d < t.shape.size(); ++d) static_shapes &= t.shape[d] >= 0;
  if (!static_shapes) {
    if (external_staging_)
      return unsupported("model '" + o.model_name +
                         "' has dynamic non-batch dims: a worker process serves only models whose "
                         "non-batch dims are fixed (serve it with worker_processes: off)");
    return status::ok();
  }

  // Largest first, as session::warm_up: the batch size throughput depends on fixes each
  // convolution's configuration (the weights' form) for the smaller ones.
  for (auto it = bucket_rows_.rbegin(); it != bucket_rows_.rend(); ++it) {
    if (o.cancel && o.cancel->load(std::memory_order_relaxed))
      return status(error_code::cancelled, "the worker stopped while the model was built");
    const int64_t rows = *it;
    std::vector<shape_t> shapes;
    for (const auto& t : sig->inputs) {
      shape_t s(t.shape.begin(), t.shape.end());
      if (mbs > 0) s[0] = rows;
      shapes.push_back(std::move(s));
    }
    TROUPE_ASSIGN_OR_RETURN(bucket_lease lease, build_bucket(std::move(shapes), rows));
    bucket* b = lease.b;
    // The load-time plans are the model's whole set: held for the replica's life, so that the
    // cache never evicts them (a run then never compiles, and never allocates).
    b->pinned = lease.plan;
    // The warm-up runs on the bucket's own staging and a block of its pool; with external
    // staging, on memory of the same kind borrowed for the warm-up alone.
    std::vector<runtime::host_buffer> borrowed;
    std::vector<tensor> inputs, outputs;
    if (external_staging_) {
      for (const tensor_info& info : b->input_infos) {
        TROUPE_ASSIGN_OR_RETURN(runtime::host_buffer mem, runtime::host_buffer::allocate(
                                                              where_, device_index_, info.bytes()));
        std::memset(mem.data(), 0, info.bytes());
        inputs.push_back(tensor::borrow(info.type, info.shape, mem.data()));
        borrowed.push_back(std::move(mem));
      }
      TROUPE_ASSIGN_OR_RETURN(runtime::host_buffer mem, runtime::host_buffer::allocate(
                                                            where_, device_index_, b->block_bytes));
      for (size_t k = 0; k < b->output_infos.size(); ++k)
        outputs.push_back(tensor::borrow(b->output_infos[k].type, b->output_infos[k].shape,
                                         mem.data() + b->output_offsets[k]));
      borrowed.push_back(std::move(mem));
    } else {
      TROUPE_ASSIGN_OR_RETURN(block_slot * slot, free_block(*b));
      inputs = b->staging;
      outputs = slot->outputs;
    }
    // One untimed run, then the timed ones: the mean is the latency the adaptive policy starts
    // from.
    TROUPE_RETURN_IF_ERROR(
        run_bucket(*b, *b->pinned, inputs, outputs, b->rows).with_context("warm-up"));
    double total_us = 0;
    for (uint32_t i = 0; i < o.warmup_runs; ++i) {
      const auto start = std::chrono::steady_clock::now();
      TROUPE_RETURN_IF_ERROR(
          run_bucket(*b, *b->pinned, inputs, outputs, b->rows).with_context("warm-up"));
      total_us +=
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count();
    }
    if (o.warmup_runs > 0) warmup_.push_back({b->rows, total_us / o.warmup_runs});
  }
  std::reverse(warmup_.begin(), warmup_.end());  // by rows, ascending
  // A sliced bucket rounds its rows up to whole slices: the buckets are what was built.
  bucket_rows_.clear();
  for (const auto& b : buckets_) bucket_rows_.push_back(b->rows);
  std::sort(bucket_rows_.begin(), bucket_rows_.end());
  bucket_rows_.erase(std::unique(bucket_rows_.begin(), bucket_rows_.end()), bucket_rows_.end());
  return status::ok();
}

expected<replica::bucket_lease> replica::build_bucket(std::vector<shape_t> input_shapes,
                                                      int64_t rows) {
  const bool batched = signature_->max_batch_size > 0;
  int64_t slice = rows;
  if (batched && slice_rows_ > 0 && rows > slice_rows_) slice = slice_rows_;
  for (;;) {
    auto built = build_bucket_at(input_shapes, rows, slice);
    // Sliced automatically only without batch_slice_rows, and only for want of memory.
    if (built || !batched || slice_rows_ > 0 || slice <= 1 ||
        built.error().code() != error_code::out_of_memory)
      return built;
    const int64_t half = (slice + 1) / 2;
    log_event(log_level::warn, "batches sliced",
              {{"model", signature_->model},
               {"version", version_},
               {"bucket_rows", rows},
               {"slice_rows", half},
               {"reason", built.error().message()}});
    slice = half;
  }
}

expected<replica::bucket_lease> replica::build_bucket_at(const std::vector<shape_t>& input_shapes,
                                                         int64_t rows, int64_t slice_rows) {
  const model_signature& sig = *signature_;
  const bool batched = sig.max_batch_size > 0;
  // Whole slices: the staging and the output block hold them all (padding rows past `rows`).
  const int64_t full = batched ? (rows + slice_rows - 1) / slice_rows * slice_rows : rows;
  std::vector<tensor_info> infos, slice_infos;
  for (size_t i = 0; i < sig.inputs.size(); ++i) {
    shape_t s = input_shapes[i];
    if (batched && !s.empty()) s[0] = full;
    infos.push_back({sig.inputs[i].type, s});
    if (batched && !s.empty()) s[0] = slice_rows;
    slice_infos.push_back({sig.inputs[i].type, std::move(s)});
  }
  TROUPE_ASSIGN_OR_RETURN(std::shared_ptr<runtime::plan> p, session_->prepare(slice_infos));

  auto b = std::make_unique<bucket>();
  b->rows = full;
  b->slice_rows = batched ? slice_rows : full;
  b->plan_key = runtime::session::plan_key(slice_infos);
  for (const auto& info : infos) {
    if (!external_staging_) {
      TROUPE_ASSIGN_OR_RETURN(runtime::host_buffer mem,
                              runtime::host_buffer::allocate(where_, device_index_, info.bytes()));
      std::memset(mem.data(), 0, info.bytes());  // padding rows stay finite
      b->staging.push_back(tensor::borrow(info.type, info.shape, mem.data()));
      b->staging_memory.push_back(std::move(mem));
    }
    const int64_t lead = batched && !info.shape.empty() ? std::max<int64_t>(info.shape[0], 1) : 1;
    b->input_row_bytes.push_back(info.bytes() / static_cast<size_t>(lead));
  }
  for (auto& s : b->input_shapes = input_shapes)
    if (batched && !s.empty()) s[0] = full;
  b->input_infos = std::move(infos);
  b->slice_input_infos = std::move(slice_infos);
  b->slice_output_infos = p->output_infos();
  size_t offset = 0;
  for (size_t k = 0; k < b->slice_output_infos.size(); ++k) {
    tensor_info oi = b->slice_output_infos[k];
    if (batched && (oi.shape.empty() || oi.shape[0] != slice_rows))
      return invalid_argument("model '" + sig.model + "': output '" + sig.outputs[k].name +
                              "' has shape " + shape_to_string(oi.shape) + " for a batch of " +
                              std::to_string(slice_rows) +
                              ": it does not carry the batch dim, serve it with max_batch_size: 0");
    const size_t row_bytes = batched ? oi.bytes() / static_cast<size_t>(slice_rows) : oi.bytes();
    if (batched) oi.shape[0] = full;
    b->output_offsets.push_back(offset);
    b->output_row_bytes.push_back(row_bytes);
    offset += align_up(oi.bytes());
    b->output_infos.push_back(std::move(oi));
  }
  b->block_bytes = offset;
  buckets_.push_back(std::move(b));
  return bucket_lease{buckets_.back().get(), std::move(p)};
}

status replica::run_bucket(const bucket& b, runtime::plan& p, std::span<const tensor> inputs,
                           std::span<tensor> outputs, int64_t used_rows) {
  if (b.slice_rows >= b.rows) return p.run(inputs, outputs);
  for (int64_t first = 0; first < std::max<int64_t>(used_rows, 1); first += b.slice_rows) {
    slice_inputs_.clear();
    slice_outputs_.clear();
    const auto row = static_cast<size_t>(first);
    for (size_t i = 0; i < inputs.size(); ++i)
      slice_inputs_.push_back(tensor::borrow(
          b.slice_input_infos[i].type, b.slice_input_infos[i].shape,
          static_cast<std::byte*>(const_cast<void*>(inputs[i].raw())) + row * b.input_row_bytes[i]));
    for (size_t k = 0; k < outputs.size(); ++k)
      slice_outputs_.push_back(tensor::borrow(
          b.slice_output_infos[k].type, b.slice_output_infos[k].shape,
          static_cast<std::byte*>(outputs[k].raw()) + row * b.output_row_bytes[k]));
    TROUPE_RETURN_IF_ERROR(p.run(slice_inputs_, slice_outputs_));
  }
  return status::ok();
}

std::vector<std::pair<int64_t, int64_t>> replica::bucket_slices() const {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& b : buckets_)
    if (b->pinned) out.emplace_back(b->rows, b->slice_rows);
  std::sort(out.begin(), out.end());
  return out;
}

void replica::drop_evicted_buckets() {
  // Only this replica's runs use its session (one at a time, on the worker's thread), so a plan
  // leaves the cache only during a prepare of ours: checking after each one keeps every bucket's
  // plan cached.
  const auto evicted = std::stable_partition(
      buckets_.begin(), buckets_.end(), [&](const std::unique_ptr<bucket>& b) {
        return b->pinned || session_->caches_plan(b->plan_key);
      });
  for (auto it = evicted; it != buckets_.end(); ++it) release_blocks(**it);
  buckets_.erase(evicted, buckets_.end());
}

void replica::count_evictions() {
  const uint64_t evictions = session_->shape_cache().evictions;
  if (evictions == evictions_counted_) return;
  if (metrics_ && !version_metrics_)
    version_metrics_ = metrics_->for_version(signature_->model, version_);
  if (version_metrics_)
    version_metrics_->count_shape_cache_evictions(evictions - evictions_counted_);
  evictions_counted_ = evictions;
}

expected<replica::block_slot*> replica::free_block(bucket& b) {
  for (auto& slot : b.blocks)
    if (slot.block->idle()) return &slot;
  // Every block is still referenced by replies in flight: add one. Steady state reuses blocks;
  // this grows the pool to the number of batches whose replies are in flight at once.
  TROUPE_ASSIGN_OR_RETURN(runtime::host_buffer mem,
                          runtime::host_buffer::allocate(where_, device_index_, b.block_bytes));
  block_slot slot;
  slot.block = new output_block(std::move(mem));
  for (size_t k = 0; k < b.output_infos.size(); ++k)
    slot.outputs.push_back(tensor::borrow(b.output_infos[k].type, b.output_infos[k].shape,
                                          slot.block->data() + b.output_offsets[k]));
  b.blocks.push_back(std::move(slot));
  return &b.blocks.back();
}

expected<replica::bucket_lease> replica::find_or_build_bucket(
    int64_t rows, const std::vector<input_view>& first) {
  const bool batched = signature_->max_batch_size > 0;
  bucket* best = nullptr;
  for (auto& b : buckets_) {
    if (b->rows < rows || (best && b->rows >= best->rows)) continue;
    bool same = first.size() == b->input_shapes.size();
    for (size_t i = 0; same && i < first.size(); ++i) {
      const shape_t& want = first[i].info.shape;
      const shape_t& have = b->input_shapes[i];
      same = want.size() == have.size();
      for (size_t d = batched ? 1 : 0; same && d < want.size(); ++d) same = want[d] == have[d];
    }
    if (same) best = b.get();
  }
  if (best && best->pinned) return bucket_lease{best, best->pinned};
  if (best) {
    // A lease for this run, which also makes the plan the cache's most recently used.
    if (auto p = session_->cached_plan(best->plan_key)) return bucket_lease{best, std::move(p)};
    // Evicted by someone else's prepare (not this replica's: drop_evicted_buckets runs after
    // those): build it again below.
    drop_evicted_buckets();
  }

  // A shape without a plan: only models with dynamic non-batch dims get here. Its plan joins the
  // session's bounded cache, which may evict others: their buckets go too.
  int64_t bucket_rows = 1;
  if (batched) {
    auto it = std::lower_bound(bucket_rows_.begin(), bucket_rows_.end(), rows);
    if (it == bucket_rows_.end())
      return internal_error("a batch of " + std::to_string(rows) + " rows exceeds max_batch_size");
    bucket_rows = *it;
  }
  std::vector<shape_t> shapes;
  for (const auto& in : first) {
    shape_t s = in.info.shape;
    if (batched) s[0] = bucket_rows;
    shapes.push_back(std::move(s));
  }
  TROUPE_ASSIGN_OR_RETURN(bucket_lease lease, build_bucket(std::move(shapes), bucket_rows));
  drop_evicted_buckets();  // never the new bucket: its plan is cached and leased
  count_evictions();
  return lease;
}

status replica::run(batch& bt) {
  bt.result = [&]() -> status {
    if (bt.jobs.empty()) return internal_error("empty batch");
    if (external_staging_) return internal_error("run: this replica stages through run_staged");
    // The lease keeps the plan in use (not evictable) until this run has finished with it.
    TROUPE_ASSIGN_OR_RETURN(bucket_lease lease,
                            find_or_build_bucket(bt.rows, bt.jobs.front()->inputs));
    bucket* b = lease.b;
    // Staging: the one host copy of request bytes, frame -> the plan's input rows.
    gather_dst_.clear();
    gather_capacity_.clear();
    for (tensor& t : b->staging) {
      gather_dst_.push_back(static_cast<std::byte*>(t.raw()));
      gather_capacity_.push_back(t.bytes());
    }
    TROUPE_RETURN_IF_ERROR(gather_.gather(bt.jobs, gather_dst_, gather_capacity_));
    TROUPE_ASSIGN_OR_RETURN(block_slot * slot, free_block(*b));
    TROUPE_RETURN_IF_ERROR(run_bucket(*b, *lease.plan, b->staging, slot->outputs, bt.rows));
    slot->block->retain();  // the batcher's reference, handed over with the results
    bt.block = slot->block;
    bt.bucket_rows = b->rows;
    // Resize and assign in place: a pooled batch keeps its shape vectors' capacity.
    bt.outputs.resize(b->output_infos.size());
    for (size_t k = 0; k < b->output_infos.size(); ++k) {
      batch::output_layout& l = bt.outputs[k];
      l.info.type = b->output_infos[k].type;
      l.info.shape.assign(b->output_infos[k].shape.begin(), b->output_infos[k].shape.end());
      l.offset = b->output_offsets[k];
      l.row_bytes = b->output_row_bytes[k];
    }
    return status::ok();
  }();
  return bt.result;
}

std::vector<bucket_layout> replica::layouts() const {
  std::vector<bucket_layout> out;
  for (const auto& b : buckets_) {
    if (!b->pinned) continue;
    bucket_layout l;
    l.rows = b->rows;
    l.inputs = b->input_infos;
    l.outputs = b->output_infos;
    l.output_offsets = b->output_offsets;
    l.output_row_bytes = b->output_row_bytes;
    l.block_bytes = b->block_bytes;
    out.push_back(std::move(l));
  }
  std::sort(out.begin(), out.end(),
            [](const bucket_layout& a, const bucket_layout& b) { return a.rows < b.rows; });
  return out;
}

status replica::run_staged(int64_t bucket_rows, std::span<std::byte* const> inputs,
                           std::byte* output_block) {
  bucket* b = nullptr;
  for (auto& candidate : buckets_)
    if (candidate->pinned && candidate->rows == bucket_rows) b = candidate.get();
  if (!b)
    return invalid_argument("model '" + signature_->model + "' has no batch bucket of " +
                            std::to_string(bucket_rows) + " rows");
  if (inputs.size() != b->input_infos.size() || !output_block)
    return invalid_argument("run_staged: " + std::to_string(inputs.size()) + " inputs for " +
                            std::to_string(b->input_infos.size()));
  staged_inputs_.clear();
  staged_outputs_.clear();
  for (size_t i = 0; i < inputs.size(); ++i)
    staged_inputs_.push_back(
        tensor::borrow(b->input_infos[i].type, b->input_infos[i].shape, inputs[i]));
  for (size_t k = 0; k < b->output_infos.size(); ++k)
    staged_outputs_.push_back(tensor::borrow(b->output_infos[k].type, b->output_infos[k].shape,
                                             output_block + b->output_offsets[k]));
  return run_bucket(*b, *b->pinned, staged_inputs_, staged_outputs_, b->rows);
}

replica_memory replica::memory() const {
  replica_memory m;
  const runtime::instance_memory im = session_->memory_report();
  m.device_pool_bytes = im.device_reserved_bytes;
  m.shared_weights_bytes = im.weights_reserved_bytes;
  m.own_device_bytes = im.own_reserved_bytes;
  m.weights_footprint_bytes = im.weights_footprint_bytes;
  m.weights_resident = im.weights_resident;
  m.arena_reserved_bytes = im.arena_reserved_bytes;
  m.arena_footprint_bytes = im.arena_footprint_bytes;
  m.arenas_resident = im.arenas_resident;
  bool any = false;
  m.pinned = true;
  for (const auto& b : buckets_) {
    for (const auto& s : b->staging_memory) {
      m.staging_bytes += s.bytes();
      m.pinned &= s.pinned();
      any = true;
    }
    for (const auto& slot : b->blocks) {
      m.pinned &= slot.block->pinned();
      any = true;
    }
    m.output_blocks += b->blocks.size();
    m.output_block_bytes += b->blocks.size() * b->block_bytes;
  }
  m.pinned &= any;
  return m;
}

size_t replica::pool_bytes() const {
  const replica_memory m = memory();
  return m.device_pool_bytes + m.staging_bytes + m.output_block_bytes;
}

bool replica::inject_error() {
  if (fault_error_ratio_ <= 0) return false;
  const uint64_t n = fault_calls_++;
  // The n-th call fails when it crosses the next multiple of 1 / ratio.
  return static_cast<uint64_t>(static_cast<double>(n + 1) * fault_error_ratio_) >
         static_cast<uint64_t>(static_cast<double>(n) * fault_error_ratio_);
}

}  // namespace troupe::serving
