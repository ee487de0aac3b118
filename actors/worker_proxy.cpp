#include "actors/deadline_wakeup.hpp"
#include "actors/worker_proxy.hpp"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/fault_injection.hpp"
#include "actors/fault_sites.hpp"
#include "actors/worker_channel.hpp"
#include "serving/batch_gather.hpp"
#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"
#include "serving/shared_arena.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_gather;
using serving::batch_ref;
using serving::bucket_layout;
using serving::fault_kind;
using serving::log_level;
using serving::model_signature;
using serving::no_deadline;
using serving::output_block;
using serving::shared_arena;
using serving::shm_region;
using serving::time_point;

/// What the channel reports: a message of the process, or (no message) that it is gone.
struct worker_event_body {
  std::optional<worker_message> message;
  status closed;
};

namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;

size_t align_up(size_t n) {
  return (n + shared_arena::alignment - 1) / shared_arena::alignment * shared_arena::alignment;
}

/// One batch bucket of a replica in the process, as the node stages it.
struct proxy_bucket {
  bucket_layout layout;
  std::vector<size_t> input_offsets;  // of each input within a staging region
  std::vector<size_t> input_bytes;
  /// Two staging regions: the next batch is gathered into one while the process reads the other.
  struct staging_slot {
    shm_region region;
    bool busy = false;  // a run reads it: free again at its (done)
  };
  std::array<staging_slot, 2> staging;
  /// The pool's reference to each block; a block is free when only that one is left.
  std::vector<output_block*> blocks;
};

/// A replica in the process, with the regions the node gave it. Shared by the table and the runs
/// in flight, so that an unload during a run keeps its staging until the run is done.
struct proxy_replica {
  replica_info info;
  uint64_t process_pool_bytes = 0;    // device pool, as the process reported it
  std::vector<proxy_bucket> buckets;  // ascending by rows
  std::shared_ptr<shared_arena> arena;

  proxy_replica() = default;
  proxy_replica(const proxy_replica&) = delete;
  proxy_replica& operator=(const proxy_replica&) = delete;
  ~proxy_replica() {
    for (auto& b : buckets) {
      for (auto& s : b.staging)
        if (s.region.bytes > 0) arena->release(s.region);
      // Blocks still referenced by replies in flight live on; their last release gives the
      // region back.
      for (output_block* block : b.blocks) block->release();
    }
  }

  size_t node_bytes() const {
    size_t n = 0;
    for (const auto& b : buckets) {
      n += 2 * b.staging[0].region.bytes;
      n += b.blocks.size() * b.layout.block_bytes;
    }
    return n;
  }
};

struct pending_load {
  caf::typed_response_promise<replica_info> promise;
  replica_spec spec;
  std::string where;
  time_point deadline = no_deadline;  // actor clock: the load fails DEADLINE_EXCEEDED then
};

struct waiting_run {
  batch_ref ref;
  batcher_actor to;
};

struct running_batch {
  batch_ref ref;
  batcher_actor to;
  std::shared_ptr<proxy_replica> replica;
  proxy_bucket* bucket = nullptr;  // of `replica`, which keeps it alive
  int slot = 0;
  output_block* block = nullptr;  // one reference, the run's: handed to the batcher at (done)
  microseconds gather_time{0};
};

struct proxy_state {
  worker_options options;
  std::string label;  // "cpu", "cuda:0"
  std::shared_ptr<shared_arena> arena;
  std::unique_ptr<worker_channel> channel;
  int64_t pid = 0;
  bool hello = false;
  std::vector<worker_message> before_hello;  // sent once the process said hello
  std::map<uint64_t, pending_load> loads;    // by request number
  uint64_t last_request = 0;
  /// The loads' timeouts: one wake-up at a time (actors/deadline_wakeup.hpp).
  deadline_wakeup overdue;
  std::map<uint32_t, std::shared_ptr<proxy_replica>> replicas;  // by the process's replica id
  std::map<uint64_t, running_batch> running;                    // by run number
  uint64_t last_run = 0;
  std::deque<waiting_run> waiting;  // for a free staging region
  batch_gather gather;
  std::vector<std::byte*> gather_dst;
  /// Messages the worker_link hop's faults hold back (fault injection), each way in order: one
  /// leaves at its due time or after the one before it, whichever is later (a slow link, not a
  /// reordering one: the process drops a run numbered below the last as a duplicate).
  struct held_message {
    time_point due;
    worker_message message;
  };
  std::deque<held_message> held_out, held_in;
  bool failed = false;  // fail() ran: the proxy is exiting
  static inline const char* name = "worker_proxy";

  /// The proxy exits (a failure, node shutdown): the process goes with the channel, loads still
  /// waiting are answered, the blocks of runs in flight go back (their batches are the
  /// batchers' to retry: they see this worker go down).
  ~proxy_state() {
    channel.reset();  // ends and reaps the process
    for (auto& [n, l] : loads)
      l.promise.deliver(to_caf_error(
          status(error_code::unavailable, "the worker process stopped while the model loaded")
              .with_context(l.where)));
    for (auto& [n, r] : running)
      if (r.block) r.block->release();
  }

  void send(worker_message m) {
    if (!hello) {
      before_hello.push_back(std::move(m));
      return;
    }
    // A channel that cannot send is closing: its on_closed follows and ends the proxy.
    if (channel) (void)channel->send(std::move(m));
  }

  void publish_memory() const {
    if (!options.metrics) return;
    double device_pool = 0, staging = 0;
    for (const auto& [id, r] : replicas) {
      device_pool += static_cast<double>(r->process_pool_bytes);
      staging += static_cast<double>(r->node_bytes());
    }
    options.metrics->set_worker_memory(options.index, label, device_pool, staging);
  }
};

using proxy_ptr = worker_actor::stateful_pointer<proxy_state>;

void arm_overdue(proxy_ptr self);
void on_message(proxy_ptr self, worker_message m);

/// The worker_link hop's fault for one message (fault injection), if one fires.
std::optional<injected_fault> link_fault(proxy_state& st) {
  if (!st.options.faults) return std::nullopt;
  return take_message_fault(*st.options.faults, hop_site("worker_link", st.options.index));
}

/// Holds `m` back for `delay` behind what is held already.
void hold(proxy_ptr self, std::deque<proxy_state::held_message>& q, worker_message m,
          std::chrono::milliseconds delay) {
  time_point due = self->clock().now() + delay;
  if (!q.empty()) due = std::max(due, q.back().due);
  q.push_back({due, std::move(m)});
  arm_overdue(self);
}

/// Sends a message to the process through the link's faults.
void link_send(proxy_ptr self, worker_message m) {
  auto& st = self->state;
  if (!st.held_out.empty()) return hold(self, st.held_out, std::move(m), {});  // keeps the order
  if (auto f = link_fault(st)) {
    if (f->kind == fault_kind::drop) return;
    if (f->kind == fault_kind::duplicate) {
      st.send(m);
    } else {
      return hold(self, st.held_out, std::move(m), f->delay);
    }
  }
  st.send(std::move(m));
}

/// A message of the process through the link's faults (hello is never faulted: it is the link's
/// handshake, not traffic).
void link_receive(proxy_ptr self, worker_message m) {
  auto& st = self->state;
  if (std::holds_alternative<worker_hello>(m)) return on_message(self, std::move(m));
  if (!st.held_in.empty()) return hold(self, st.held_in, std::move(m), {});
  if (auto f = link_fault(st)) {
    if (f->kind == fault_kind::drop) return;
    if (f->kind == fault_kind::duplicate) {
      on_message(self, m);
    } else {
      return hold(self, st.held_in, std::move(m), f->delay);
    }
  }
  on_message(self, std::move(m));
}

/// Delivers the held messages that are due; the earliest still held.
time_point release_held(proxy_ptr self) {
  auto& st = self->state;
  const time_point now = self->clock().now();
  while (!st.held_out.empty() && st.held_out.front().due <= now) {
    st.send(std::move(st.held_out.front().message));
    st.held_out.pop_front();
  }
  while (!st.held_in.empty() && st.held_in.front().due <= now) {
    worker_message m = std::move(st.held_in.front().message);
    st.held_in.pop_front();
    on_message(self, std::move(m));
    if (st.failed) return no_deadline;
  }
  time_point next = no_deadline;
  if (!st.held_out.empty()) next = st.held_out.front().due;
  if (!st.held_in.empty()) next = std::min(next, st.held_in.front().due);
  return next;
}

void fail(proxy_ptr self, const std::string& why) {
  self->state.failed = true;
  log_event(log_level::error, "worker process failed",
            {{"worker", self->state.options.index}, {"pid", self->state.pid}, {"reason", why}});
  self->quit(caf::make_error(caf::sec::runtime_error, "worker process " +
                                                          std::to_string(self->state.pid) + " on " +
                                                          self->state.label + ": " + why));
}

/// Checks a layout the process reported against the signature it reported (the node never
/// trusts sizes it did not compute), and sets the node's staging layout.
status check_layout(const worker_loaded& l, const bucket_layout& b, proxy_bucket& out) {
  const std::string what = "bucket of " + std::to_string(b.rows) + " rows";
  if (b.inputs.size() != l.inputs.size() || b.outputs.size() != l.outputs.size())
    return internal_error(what + ": its tensors are not the signature's");
  size_t offset = 0;
  for (size_t i = 0; i < b.inputs.size(); ++i) {
    if (b.inputs[i].type != l.inputs[i].type)
      return internal_error(what + ": input " + std::to_string(i) + " has another type");
    out.input_offsets.push_back(offset);
    out.input_bytes.push_back(b.inputs[i].bytes());
    offset += align_up(b.inputs[i].bytes());
  }
  for (size_t k = 0; k < b.outputs.size(); ++k) {
    const size_t bytes = b.outputs[k].bytes();
    if (b.outputs[k].type != l.outputs[k].type || b.output_offsets[k] > b.block_bytes ||
        bytes > b.block_bytes - b.output_offsets[k] ||
        b.output_row_bytes[k] * static_cast<size_t>(l.max_batch_size > 0 ? b.rows : 1) > bytes)
      return internal_error(what + ": output " + std::to_string(k) +
                            " does not fit its output block");
  }
  out.layout = b;
  return status::ok();
}

/// The node's side of a loaded replica: staging regions and a first output block per bucket.
expected<std::shared_ptr<proxy_replica>> adopt(proxy_state& st, const worker_loaded& l,
                                               const pending_load& pl) {
  auto r = std::make_shared<proxy_replica>();
  r->arena = st.arena;
  r->process_pool_bytes = l.pool_bytes;
  if (l.buckets.empty()) return internal_error("the worker process reported no batch bucket");
  for (const bucket_layout& b : l.buckets) {
    proxy_bucket pb;
    TROUPE_RETURN_IF_ERROR(check_layout(l, b, pb));
    if (!r->buckets.empty() && b.rows <= r->buckets.back().layout.rows)
      return internal_error("the worker process reported its buckets out of order");
    r->buckets.push_back(std::move(pb));
  }
  for (proxy_bucket& b : r->buckets) {
    size_t staging_bytes = 0;
    for (size_t i = 0; i < b.input_bytes.size(); ++i)
      staging_bytes = b.input_offsets[i] + align_up(b.input_bytes[i]);
    for (auto& s : b.staging) {
      TROUPE_ASSIGN_OR_RETURN(s.region, st.arena->allocate(staging_bytes));
      std::memset(st.arena->at(s.region), 0, s.region.bytes);  // padding rows stay finite
    }
    TROUPE_ASSIGN_OR_RETURN(shm_region block, st.arena->allocate(b.layout.block_bytes));
    b.blocks.push_back(new output_block(st.arena->at(block), block.bytes, st.arena));
  }
  auto sig = std::make_shared<model_signature>();
  sig->model = pl.spec.model;
  sig->version = pl.spec.version;
  sig->config = pl.spec.config;
  sig->config.max_batch_size = l.max_batch_size;
  sig->inputs = l.inputs;
  sig->outputs = l.outputs;
  sig->max_batch_size = l.max_batch_size;
  r->info.id = l.replica;
  r->info.signature = std::move(sig);
  r->info.bucket_rows = l.bucket_rows;
  for (const auto& w : l.warmup) r->info.warmup.push_back({w.rows, w.mean_us});
  r->info.pool_bytes = l.pool_bytes + r->node_bytes();
  return r;
}

/// The smallest bucket that holds the batch's rows.
proxy_bucket* bucket_for(proxy_replica& r, const batch& b) {
  for (auto& pb : r.buckets)
    if (pb.layout.rows >= b.rows || r.info.signature->max_batch_size <= 0) return &pb;
  return nullptr;
}

/// A free output block of bucket `b` (one whose only reference is the pool's), or a new one.
expected<output_block*> free_block(proxy_state& st, proxy_bucket& b) {
  for (output_block* block : b.blocks)
    if (block->idle()) return block;
  TROUPE_ASSIGN_OR_RETURN(shm_region region, st.arena->allocate(b.layout.block_bytes));
  b.blocks.push_back(new output_block(st.arena->at(region), region.bytes, st.arena));
  return b.blocks.back();
}

void answer(proxy_ptr self, batch& b, const batcher_actor& to, const batch_ref& ref,
            status result) {
  b.result = std::move(result);
  self->send(to, done_atom::value, ref);
}

/// Starts `ref` on its replica when a staging region is free, else queues it.
void start_run(proxy_ptr self, batch_ref ref, batcher_actor to) {
  auto& st = self->state;
  batch& b = *ref.ptr;
  auto found = st.replicas.find(b.replica_id);
  if (found == st.replicas.end())
    return answer(self, b, to, ref,
                  make_error(error_code::unavailable,
                             "replica " + std::to_string(b.replica_id) + " is not loaded"));
  std::shared_ptr<proxy_replica> r = found->second;
  proxy_bucket* bucket = b.jobs.empty() ? nullptr : bucket_for(*r, b);
  if (!bucket)
    return answer(self, b, to, ref,
                  internal_error("a batch of " + std::to_string(b.rows) +
                                 " rows fits no bucket of the worker process"));
  int slot = -1;
  for (int s = 0; s < 2; ++s)
    if (!bucket->staging[static_cast<size_t>(s)].busy) slot = s;
  if (slot < 0) {
    st.waiting.push_back({std::move(ref), std::move(to)});
    return;
  }
  auto& staging = bucket->staging[static_cast<size_t>(slot)];
  const auto start = std::chrono::steady_clock::now();
  st.gather_dst.clear();
  for (size_t offset : bucket->input_offsets)
    st.gather_dst.push_back(st.arena->at(staging.region) + offset);
  if (status s = st.gather.gather(b.jobs, st.gather_dst, bucket->input_bytes); !s.is_ok())
    return answer(self, b, to, ref, s);
  auto block = free_block(st, *bucket);
  if (!block) return answer(self, b, to, ref, block.error());
  (*block)->retain();  // the run's reference: no other run takes the block meanwhile
  staging.busy = true;
  worker_run run;
  run.batch = ++st.last_run;
  run.replica = b.replica_id;
  run.rows = b.rows;
  run.bucket_rows = bucket->layout.rows;
  for (size_t i = 0; i < bucket->input_offsets.size(); ++i)
    run.inputs.push_back(
        data_ref{data_ref::kind::shm,
                 {0, staging.region.offset + bucket->input_offsets[i], bucket->input_bytes[i]},
                 0});
  run.outputs = data_ref{data_ref::kind::shm,
                         st.arena->region_of((*block)->data(), bucket->layout.block_bytes), 0};
  if (st.options.fault_injection) {
    run.fault = std::string(requested_fault(b));
    run.sleep_ms = static_cast<uint32_t>(requested_sleep(b).count());
  }
  if (st.options.faults)
    run.injected = take_batch_fault(*st.options.faults, st.options.index,
                                    st.options.kind == worker_kind::gpu);
  running_batch rb;
  rb.ref = std::move(ref);
  rb.to = std::move(to);
  rb.replica = std::move(r);
  rb.bucket = bucket;
  rb.slot = slot;
  rb.block = *block;
  rb.gather_time = duration_cast<microseconds>(std::chrono::steady_clock::now() - start);
  st.running.emplace(run.batch, std::move(rb));
  link_send(self, std::move(run));
}

void on_done(proxy_ptr self, worker_done& d) {
  auto& st = self->state;
  auto it = st.running.find(d.batch);
  if (it == st.running.end()) {
    // A second answer to a batch answered already (a duplicate on the link, fault injection)
    // changes nothing; an answer to a batch never sent breaks the protocol.
    if (d.batch <= st.last_run) {
      log_event(log_level::warn, "duplicate answer dropped",
                {{"worker", st.options.index}, {"batch", d.batch}});
      return;
    }
    return fail(self, "it answered batch " + std::to_string(d.batch) + ", which it was not given");
  }
  running_batch rb = std::move(it->second);
  st.running.erase(it);
  rb.bucket->staging[static_cast<size_t>(rb.slot)].busy = false;
  batch& b = *rb.ref.ptr;
  b.result = std::move(d.result);
  b.compute_time = rb.gather_time + microseconds(d.compute_us);
  const bucket_layout& layout = rb.bucket->layout;
  if (b.result.is_ok()) {
    // The outputs are where the layout the node checked at load puts them; a process that
    // reports otherwise is not believed.
    bool same = d.outputs.size() == layout.outputs.size() && d.bucket_rows == layout.rows;
    for (size_t k = 0; same && k < d.outputs.size(); ++k)
      same = d.outputs[k].info == layout.outputs[k] &&
             d.outputs[k].offset == layout.output_offsets[k] &&
             d.outputs[k].row_bytes == layout.output_row_bytes[k];
    if (!same)
      b.result = internal_error("the worker process reported outputs unlike its bucket's layout");
  }
  if (b.result.is_ok()) {
    b.block = rb.block;  // the run's reference goes to the batcher
    b.bucket_rows = layout.rows;
    b.outputs.resize(layout.outputs.size());
    for (size_t k = 0; k < layout.outputs.size(); ++k) {
      batch::output_layout& o = b.outputs[k];
      o.info.type = layout.outputs[k].type;
      o.info.shape.assign(layout.outputs[k].shape.begin(), layout.outputs[k].shape.end());
      o.offset = layout.output_offsets[k];
      o.row_bytes = layout.output_row_bytes[k];
    }
  } else {
    rb.block->release();
  }
  b.worker_failed = b.result.code() == error_code::device_error;
  self->send(rb.to, done_atom::value, rb.ref);
  if (b.worker_failed) {
    // The device may be unusable: a fresh process gets a fresh context.
    fail(self, "device error: " + b.result.message());
    return;
  }
  // A batch waiting for this bucket's staging (or any: they are few) goes now.
  std::deque<waiting_run> waiting;
  waiting.swap(st.waiting);
  for (auto& w : waiting) start_run(self, std::move(w.ref), std::move(w.to));
}

void on_loaded(proxy_ptr self, worker_loaded& l) {
  auto& st = self->state;
  auto it = st.loads.find(l.request);
  if (it == st.loads.end()) {
    // Its load timed out: the replica is not wanted.
    if (l.result.is_ok()) st.send(worker_unload{l.replica});
    return;
  }
  pending_load pl = std::move(it->second);
  st.loads.erase(it);
  if (!l.result.is_ok()) {
    pl.promise.deliver(to_caf_error(l.result));
    return;
  }
  if (st.replicas.count(l.replica)) {
    pl.promise.deliver(to_caf_error(
        internal_error("the worker process reused replica id " + std::to_string(l.replica))
            .with_context(pl.where)));
    return;
  }
  auto r = adopt(st, l, pl);
  if (!r) {
    st.send(worker_unload{l.replica});
    pl.promise.deliver(to_caf_error(r.error().with_context(pl.where)));
    return;
  }
  replica_info info = (*r)->info;
  st.replicas.emplace(l.replica, std::move(*r));
  st.publish_memory();
  pl.promise.deliver(std::move(info));
}

void on_event(proxy_ptr self, const worker_event_body& e) {
  if (!e.message) return fail(self, e.closed.to_string());
  link_receive(self, *e.message);
}

void on_message(proxy_ptr self, worker_message m) {
  auto& st = self->state;
  if (auto* h = std::get_if<worker_hello>(&m)) {
    if (st.hello || h->worker_index != st.options.index)
      return fail(self, "an unexpected hello (worker " + std::to_string(h->worker_index) + ")");
    st.hello = true;
    log_event(log_level::info, "worker process started",
              {{"worker", st.options.index}, {"pid", h->pid}, {"device", h->device}});
    std::vector<worker_message> queued;
    queued.swap(st.before_hello);
    for (auto& q : queued) st.send(std::move(q));
    return;
  }
  if (!st.hello) return fail(self, std::string("a '") + worker_message_name(m) + "' before hello");
  if (auto* d = std::get_if<worker_done>(&m)) return on_done(self, *d);
  if (auto* l = std::get_if<worker_loaded>(&m)) return on_loaded(self, *l);
  fail(self,
       std::string("a '") + worker_message_name(m) + "' message, which the node does not take");
}

/// Keeps one wake-up pending for the earliest deadline of the loads in progress.
void arm_overdue(proxy_ptr self) {
  auto& st = self->state;
  time_point earliest = no_deadline;
  for (const auto& [n, l] : st.loads) earliest = std::min(earliest, l.deadline);
  if (!st.held_out.empty()) earliest = std::min(earliest, st.held_out.front().due);
  if (!st.held_in.empty()) earliest = std::min(earliest, st.held_in.front().due);
  st.overdue.arm(self, earliest);
}

/// Loads past their deadline fail DEADLINE_EXCEEDED; a late answer is unloaded when it comes.
void expire_loads(proxy_ptr self) {
  auto& st = self->state;
  const auto now = self->clock().now();
  for (auto it = st.loads.begin(); it != st.loads.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    pending_load pl = std::move(it->second);
    it = st.loads.erase(it);
    const double seconds = std::chrono::duration<double>(pl.spec.load_timeout).count();
    log_event(log_level::warn, "worker process load timed out",
              {{"path", pl.spec.path}, {"load_timeout_s", seconds}});
    char limit[32];
    std::snprintf(limit, sizeof(limit), "%g", seconds);
    pl.promise.deliver(
        to_caf_error(status(error_code::deadline_exceeded,
                            "the worker process did not load the model within load_timeout_s (" +
                                std::string(limit) + " s): is the file on a hung file system?")
                         .with_context(pl.where)));
  }
}

/// Creates the shared memory and starts the process; errors end the proxy (the supervisor then
/// tries again, within its restart limit).
status start_process(proxy_ptr self) {
  auto& st = self->state;
  const worker_process_options& p = *st.options.processes;
  if (!p.channels) return internal_error("worker processes are on, but the node gave no channel");
  const size_t bytes = (p.shared_memory_bytes + shared_arena::alignment - 1) /
                       shared_arena::alignment * shared_arena::alignment;
  TROUPE_ASSIGN_OR_RETURN(
      st.arena, shared_arena::create(bytes, "troupe-worker-" + std::to_string(st.options.index)));
  worker_process_spec spec;
  spec.kind = st.options.kind;
  spec.index = st.options.index;
  spec.device_index = st.options.device_index;
  spec.compute_threads = st.options.compute_threads;
  spec.fault_injection = st.options.fault_injection;
  spec.tuning_records_file = p.tuning_records_file;
  spec.shm_fd = st.arena->fd();
  spec.shm_bytes = st.arena->bytes();
  spec.arena = st.arena;
  spec.heartbeat_interval = p.heartbeat_interval;
  spec.heartbeat_timeout = p.heartbeat_timeout;
  spec.memory_budget_bytes = st.options.memory_budget_bytes;
  spec.idle_spin_us = st.options.idle_spin_us;
  worker_channel_events events;
  const worker_actor me = caf::actor_cast<worker_actor>(self);
  events.on_message = [me](worker_message m) {
    auto e = std::make_shared<worker_event_body>();
    e->message = std::move(m);
    caf::anon_send(me, wevent_atom::value, worker_event(std::move(e)));
  };
  events.on_closed = [me](status why) {
    auto e = std::make_shared<worker_event_body>();
    e->closed = std::move(why);
    caf::anon_send(me, wevent_atom::value, worker_event(std::move(e)));
  };
  TROUPE_ASSIGN_OR_RETURN(st.channel, p.channels(spec, std::move(events)));
  st.pid = st.channel->pid();
  return status::ok();
}

worker_actor::behavior_type worker_proxy(proxy_ptr self, worker_options o) {
  auto& st = self->state;
  st.options = std::move(o);
  st.label = st.options.kind == worker_kind::gpu ? "cuda:" + std::to_string(st.options.device_index)
                                                 : std::string("cpu");
  if (status s = start_process(self); !s.is_ok()) fail(self, "cannot start: " + s.to_string());
  return {
      [=](load_atom, const replica_spec& spec) -> caf::result<replica_info> {
        auto& st = self->state;
        const uint64_t n = ++st.last_request;
        auto promise = self->make_response_promise<replica_info>();
        pending_load pl{promise, spec,
                        "loading " + spec.path + " on " + st.label + " (worker process " +
                            std::to_string(st.pid) + ")",
                        self->clock().now() + spec.load_timeout};
        st.loads.emplace(n, std::move(pl));
        worker_load l;
        l.request = n;
        l.model = spec.model;
        l.version = spec.version;
        l.path = spec.path;
        l.config_text = spec.config_text;
        l.warmup_runs = spec.warmup_runs;
        l.load_timeout_ms = static_cast<uint64_t>(spec.load_timeout.count());
        if (st.options.faults) l.injected = take_load_fault(*st.options.faults, st.options.index);
        link_send(self, std::move(l));
        arm_overdue(self);
        return promise;
      },
      [=](overdue_atom, uint64_t generation) {
        auto& st = self->state;
        if (!st.overdue.fired(generation)) return;  // an earlier arming's wake-up
        expire_loads(self);
        (void)release_held(self);
        if (!st.failed) arm_overdue(self);
      },
      [=](unload_atom, uint32_t id) {
        auto& st = self->state;
        auto it = st.replicas.find(id);
        if (it == st.replicas.end()) return;
        st.replicas.erase(it);  // runs in flight keep its regions until their (done)
        st.publish_memory();
        link_send(self, worker_unload{id});
      },
      [=](run_atom, batch_ref ref) {
        // A duplicate or stale run message (batch::claim): the batch is running or done already.
        if (!ref.ptr->claim(ref.sequence)) return;
        start_run(self, std::move(ref), caf::actor_cast<batcher_actor>(self->current_sender()));
      },
      [=](crash_atom) { fail(self, "fault injection: worker crash"); },
      [=](read_atom, uint64_t) {},   // the in-process worker's
      [=](built_atom, uint64_t) {},  // the in-process worker's
      [=](wevent_atom, const worker_event& e) {
        if (e) on_event(self, *e);
      },
  };
}

}  // namespace

worker_actor spawn_worker_proxy(caf::actor_system& sys, const worker_options& o, bool detached) {
  // Detached in a node: the gather of a large batch is a memory-bound copy that must not hold
  // up the actors sharing a scheduler thread (routing, batching, timeouts).
  if (detached) return sys.spawn<caf::detached>(worker_proxy, o);
  return sys.spawn(worker_proxy, o);
}

}  // namespace troupe::actors
