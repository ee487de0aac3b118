#include "actors/worker_core.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/cpu_worker.hpp"
#include "actors/deadline_wakeup.hpp"
#include "actors/fault_injection.hpp"
#include "actors/fault_sites.hpp"
#include "actors/gpu_worker.hpp"
#include "actors/worker_proxy.hpp"
#include "runtime/background_read.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/serial_thread.hpp"
#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"
#include "serving/replica.hpp"
#include "serving/weight_residency.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_ref;
using serving::log_level;
using serving::no_deadline;
using serving::replica;
using serving::replica_memory;
using serving::serving_metrics;
using serving::time_point;
using serving::weight_residency;

namespace {

/// A load waiting for its model file to be read or its replica to be built.
struct waiting_load {
  replica::options options;
  caf::typed_response_promise<replica_info> promise;
  std::string where;  // "loading <path> on <device>", the context of its errors
  std::chrono::milliseconds load_timeout{0};  // of the file's read, should it need one
};

/// What a build on the worker's build thread hands back: one result per load, in order. Written
/// by the build thread before it sends (built, n), read by the worker after (the message orders
/// the two).
struct build_slot {
  std::vector<expected<std::shared_ptr<replica>>> results;
};

/// Replicas being compiled and warmed up on the build thread (runtime/serial_thread.hpp), off the
/// thread that runs the worker's batches: a load no longer stalls the other models on the device.
struct pending_build {
  std::string path;
  std::vector<waiting_load> loads;
  std::shared_ptr<build_slot> slot;
  /// Loads of the same file that arrived during the build: started once it is done, when they
  /// find its replicas to take the weights from (rather than reading the file again).
  std::vector<waiting_load> followers;
  /// Memory budget: the live replica the build takes its weights from, held on the device
  /// (weight_residency::acquire) until the build is done.
  std::shared_ptr<replica> held;
};

/// A model file being read off the worker's thread (runtime/background_read.hpp) and the loads
/// waiting for it: every load of one file that arrives during the read waits for that read, so
/// the second and later replicas take the first one's weights, as they do from a live replica.
struct pending_read {
  std::string path;
  std::chrono::milliseconds timeout{0};
  time_point deadline = no_deadline;  // actor clock: the read is abandoned then
  std::shared_ptr<runtime::background_read> read;
  std::vector<waiting_load> loads;
};

struct worker_state {
  worker_options options;
  device_traits traits;
  /// The live replicas by id. An unload erases its entry, so the table holds exactly the
  /// replicas loaded and not unloaded, however many loads came before (it was a vector indexed
  /// by id that grew a slot per load). Ids count up and are not reused before the counter wraps
  /// (2^32 loads): a batch that names an unloaded replica finds nothing rather than another
  /// model's replica.
  replica_table replicas;
  uint32_t next_replica_id = 0;
  bool setup_done = false;
  status setup_result;
  /// By read number: the (read, n) message names them; it or the load timeout settles the read's
  /// loads and erases it, so whichever comes second finds nothing.
  std::map<uint64_t, pending_read> reads;
  uint64_t last_read = 0;
  /// The threads the reads run on: one stays for the next read, so this worker's reads allocate
  /// in one malloc arena (runtime/read_threads.hpp). Closed with the worker: a read still blocked
  /// ends its thread whenever it returns.
  runtime::read_threads read_threads{1};
  /// Builds by number: (built, n) settles one.
  std::map<uint64_t, pending_build> builds;
  uint64_t last_build = 0;
  /// Set when the worker stops: the build running then ends before its next bucket.
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);
  /// Where replicas are built when model reads run in the background (a node); started by the
  /// first build. Its destructor drops the builds not started and waits for the running one.
  runtime::serial_thread build_thread{"replica-build"};
  /// The reads' load timeouts: one wake-up at a time (actors/deadline_wakeup.hpp).
  deadline_wakeup overdue;
  /// The memory budget (options.memory_budget_bytes > 0; null without one): which replicas'
  /// weights are on the device, evictions and page-ins (serving/weight_residency.hpp). Used on
  /// this actor's thread only.
  std::unique_ptr<weight_residency> residency;
  static inline const char* name = "worker";

  /// The worker exits (node shutdown, a crash): the reads still running are abandoned (their
  /// threads call nothing back any more) and their loads answered, so that no requester waits
  /// for a worker that is gone.
  ~worker_state() {
    stopping->store(true, std::memory_order_relaxed);
    for (auto& [n, b] : builds)
      for (auto* list : {&b.loads, &b.followers})
        for (auto& l : *list)
          l.promise.deliver(to_caf_error(
              status(error_code::unavailable, "the worker stopped while the model was built")
                  .with_context(l.where)));
    for (auto& [n, r] : reads) {
      r.read->abandon();
      for (auto& l : r.loads)
        l.promise.deliver(to_caf_error(
            status(error_code::unavailable, "the worker stopped while the model was read")
                .with_context(l.where)));
    }
  }

  /// The device traits' thread setup, once, on the thread that handles the first message.
  const status& setup() {
    if (!setup_done) {
      setup_done = true;
      if (traits.thread_setup) setup_result = traits.thread_setup();
    }
    return setup_result;
  }

  void publish_memory() const {
    serving_metrics* m = options.metrics;
    if (!m) return;
    double device_pool = 0, staging = 0;
    for (auto i = replicas.begin(); i != replicas.end(); ++i) {
      const replica_memory mem = i->second->memory();
      device_pool += static_cast<double>(mem.device_pool_bytes);
      staging += static_cast<double>(mem.staging_bytes + mem.output_block_bytes);
      // Weights shared with an earlier replica are on the device once: count them there.
      for (auto j = replicas.begin(); j != i; ++j)
        if (j->second->shares_weights_with(*i->second)) {
          device_pool -= static_cast<double>(mem.shared_weights_bytes);
          break;
        }
    }
    m->set_worker_memory(options.index, traits.device_label, device_pool, staging);
  }

  /// The pending read `n`, taken out of `reads`; nullopt when settled already (the other of its
  /// two messages came first).
  std::optional<pending_read> take_read(uint64_t n) {
    auto it = reads.find(n);
    if (it == reads.end()) return std::nullopt;
    pending_read r = std::move(it->second);
    reads.erase(it);
    return r;
  }

  /// Creates (compiles, warms up) a replica on this thread and adds it to the table.
  expected<replica_info> add_replica(const replica::options& ro, const std::string& where) {
    auto r = replica::create(ro);
    if (!r) return r.error().with_context(where);
    auto info = adopt(std::move(*r));
    if (!info) return info.error().with_context(where);
    return info;
  }

  /// Adds a replica built (here or on the build thread) to the table under a new id; with a
  /// memory budget, only when it fits (evicting idle weights), else out_of_memory.
  expected<replica_info> adopt(std::shared_ptr<replica> r) {
    replica_info info;
    while (replicas.count(next_replica_id)) ++next_replica_id;  // only after a wrap
    info.id = next_replica_id++;
    info.signature = r->signature();
    info.bucket_rows = r->bucket_rows();
    for (const auto& l : r->warmup_latency()) info.warmup.push_back({l.rows, l.mean_us});
    info.pool_bytes = r->pool_bytes();
    // ---- memory budget
    if (residency)
      if (status admitted = residency->admit(info.id, r); !admitted.is_ok()) {
        release_replica(std::move(r));
        return admitted;
      }
    // ----
    replicas.emplace(info.id, std::move(r));
    publish_memory();
    return info;
  }

  /// Lets a replica go that left the table (unloaded, or refused by the memory budget).
  void release_replica(std::shared_ptr<replica> gone) {
    // Built on the build thread, released there too: the device's synchronisation and frees
    // stay off the thread that serves the other replicas, and the replica's host memory goes
    // back to the allocator arena it came from (freed here, through this thread's cache, it
    // left the heap more fragmented: RSS over 1,000 load/unload cycles grew by 1.008 instead
    // of 1.006).
    if (options.background_model_reads)
      (void)build_thread.post([gone = std::move(gone)]() mutable { gone.reset(); });
  }

  // ---- memory budget hooks (no-ops without one) ----
  /// Before a batch on `r`: its weights on the device, held until done_running.
  status page_in_for_run(replica& r) {
    return residency ? residency->acquire(r, "a batch") : status::ok();
  }
  void done_running(replica& r) {
    if (residency) residency->release(r);
  }
  /// Before a build taking its weights from `sibling` (null: a fresh load of `graph`): holds the
  /// sibling's weights on the device and makes room for what the build adds. The held replica
  /// goes in the pending build, released by build_done.
  expected<std::shared_ptr<replica>> prepare_build(const std::shared_ptr<replica>& sibling,
                                                   const runtime::graph* graph,
                                                   runtime::precision precision, size_t replicas,
                                                   const std::string& path) {
    if (!residency) return std::shared_ptr<replica>();
    const std::string reason = "load of " + path;
    if (sibling) TROUPE_RETURN_IF_ERROR(residency->acquire(*sibling, reason));
    residency->make_room(
        weight_residency::build_estimate(sibling.get(), graph, precision, replicas), reason);
    return sibling;
  }
  void build_done(const std::shared_ptr<replica>& held) {
    if (residency && held) residency->release(*held);
  }
  // ----
};

using worker_ptr = worker_actor::stateful_pointer<worker_state>;

/// Keeps one wake-up pending for the earliest load timeout of the reads in progress (see
/// actors/deadline_wakeup.hpp).
void arm_overdue(worker_ptr self) {
  auto& st = self->state;
  time_point earliest = no_deadline;
  for (const auto& [n, r] : st.reads) earliest = std::min(earliest, r.deadline);
  st.overdue.arm(self, earliest);
}

/// The read's load timeout passed: its loads fail DEADLINE_EXCEEDED.
void abandon_read(pending_read& pr) {
  // A blocked read cannot be cancelled: its thread is left to end whenever the read returns
  // (runtime/background_read.hpp), and its result, if any, is dropped.
  pr.read->abandon();
  const double seconds = std::chrono::duration<double>(pr.timeout).count();
  log_event(log_level::warn, "model read abandoned",
            {{"path", pr.path}, {"load_timeout_s", seconds}, {"loads", pr.loads.size()}});
  char limit[32];
  std::snprintf(limit, sizeof(limit), "%g", seconds);
  for (auto& l : pr.loads)
    l.promise.deliver(to_caf_error(
        status(error_code::deadline_exceeded,
               "reading the model file took longer than load_timeout_s (" + std::string(limit) +
                   " s): is it on a hung file system? The read was abandoned")
            .with_context(l.where)));
}

/// Builds replicas for `loads` (all of one model file) on the worker's build thread, one after
/// another: each takes its weights from an earlier one of the job that can share them, else from
/// `sibling` (a live replica), else from `graph`. (built, n) comes back when all are done.
void post_build(worker_ptr self, std::string path, std::vector<waiting_load> loads,
                std::shared_ptr<replica> sibling, std::shared_ptr<const runtime::graph> graph) {
  auto& st = self->state;
  const uint64_t n = ++st.last_build;
  auto held = st.prepare_build(sibling, graph.get(), loads.front().options.compute_precision,
                               loads.size(), path);  // memory budget
  if (!held) {
    for (auto& l : loads) l.promise.deliver(to_caf_error(held.error().with_context(l.where)));
    return;
  }
  auto slot = std::make_shared<build_slot>();
  std::vector<replica::options> options;
  for (const auto& l : loads) options.push_back(l.options);
  // Memory budget: a fresh load's plans take at most what the budget can give them; a bucket
  // needing more runs as slices (instances share their sibling's plans' bound).
  if (st.residency && !sibling && graph)
    for (auto& o : options)
      o.max_arena_bytes = st.residency->arena_room(
          weight_residency::build_estimate(nullptr, graph.get(), o.compute_precision, 1));
  // Owns what it uses: it may run after the worker is gone (then its (built, n) is dropped, and
  // the replicas it made go with the job, on the build thread).
  auto job = [slot, options = std::move(options), sibling = std::move(sibling),
              graph = std::move(graph), setup = st.traits.thread_setup, stopping = st.stopping,
              before = st.options.before_build, worker = caf::actor_cast<worker_actor>(self),
              n]() mutable {
    // The device traits' setup applies per thread: the current CUDA device, OpenMP threads.
    const status set_up = setup ? setup() : status::ok();
    for (replica::options& o : options) {
      if (!set_up.is_ok()) {
        slot->results.emplace_back(set_up);
        continue;
      }
      if (before) before(o.model_path);
      o.cancel = stopping.get();
      for (const auto& earlier : slot->results)
        if (earlier && (*earlier)->can_share_weights(o)) {
          o.weights_from = earlier->get();
          break;
        }
      if (!o.weights_from && sibling && sibling->can_share_weights(o))
        o.weights_from = sibling.get();
      if (!o.weights_from) o.graph = graph;
      auto r = replica::create(o);
      if (r)
        slot->results.emplace_back(std::shared_ptr<replica>(std::move(*r)));
      else
        slot->results.emplace_back(r.error());
    }
    caf::anon_send(worker, built_atom::value, n);
  };
  if (status posted = st.build_thread.post(std::move(job)); !posted.is_ok()) {
    st.build_done(*held);
    for (auto& l : loads) l.promise.deliver(to_caf_error(posted.with_context(l.where)));
    return;
  }
  pending_build b;
  b.path = std::move(path);
  b.loads = std::move(loads);
  b.slot = std::move(slot);
  b.held = std::move(*held);
  st.builds.emplace(n, std::move(b));
}

/// A load with model reads in the background: it joins the read or the build of its file in
/// progress, else takes a live replica's weights, else reads the file (under its load timeout)
/// and then builds.
void start_load(worker_ptr self, waiting_load l) {
  auto& st = self->state;
  const std::string& path = l.options.model_path;
  for (auto& [n, r] : st.reads)
    if (r.path == path) {
      r.loads.push_back(std::move(l));
      return;
    }
  for (auto& [n, b] : st.builds)
    if (b.path == path) {
      b.followers.push_back(std::move(l));
      return;
    }
  if (std::shared_ptr<replica> sibling = weights_sibling(st.replicas, l.options)) {
    std::vector<waiting_load> loads;
    loads.push_back(std::move(l));
    post_build(self, path, std::move(loads), std::move(sibling), nullptr);
    return;
  }
  const uint64_t n = ++st.last_read;
  // Runs on the read's thread: one message to this worker, nothing else. The handle is
  // released when the read ends or is abandoned (the worker's exit abandons it).
  runtime::background_read::read_function read_file = [path] {
    return runtime::load_onnx_file(path);
  };
  if (st.options.read_model_file)
    read_file = [path, f = st.options.read_model_file] { return f(path); };
  auto read = runtime::background_read::start(st.read_threads, std::move(read_file),
                                              [worker = caf::actor_cast<worker_actor>(self), n] {
                                                caf::anon_send(worker, read_atom::value, n);
                                              });
  if (!read) {
    l.promise.deliver(to_caf_error(read.error().with_context(l.where)));
    return;
  }
  pending_read pr;
  pr.path = path;
  pr.timeout = l.load_timeout;
  pr.deadline = self->clock().now() + l.load_timeout;
  pr.read = std::move(*read);
  pr.loads.push_back(std::move(l));
  st.reads.emplace(n, std::move(pr));
  arm_overdue(self);
}

worker_actor::behavior_type worker(worker_ptr self, worker_options o, device_traits traits) {
  self->state.options = o;
  self->state.traits = std::move(traits);
  if (o.memory_budget_bytes > 0) {
    weight_residency::options ro;
    ro.budget_bytes = o.memory_budget_bytes;
    ro.worker = o.index;
    ro.device_label = self->state.traits.device_label;
    ro.metrics = o.metrics;
    ro.moved = [self] { self->state.publish_memory(); };
    self->state.residency = std::make_unique<weight_residency>(std::move(ro));
  }
  return {
      [=](load_atom, const replica_spec& spec) -> caf::result<replica_info> {
        auto& st = self->state;
        const std::string where = "loading " + spec.path + " on " + st.traits.device_label;
        if (const status& s = st.setup(); !s.is_ok()) return to_caf_error(s.with_context(where));
        if (st.options.faults)
          if (auto f = take_load_fault(*st.options.faults, st.options.index))
            (void)carry_out(*f, st.traits.backend, st.options.device_index, in_process_hang_limit);
        auto precision = st.traits.precision_for(spec.config);
        if (!precision) return to_caf_error(precision.error().with_context(where));
        replica::options ro;
        ro.model_name = spec.model;
        ro.version = spec.version;
        ro.model_path = spec.path;
        ro.config = spec.config;
        ro.warmup_runs = spec.warmup_runs;
        ro.where = st.traits.backend;
        ro.device_index = st.options.device_index;
        ro.compute_precision = *precision;
        ro.metrics = st.options.metrics;
        ro.evictable_weights = st.residency != nullptr;
        if (!st.options.background_model_reads) {
          // Everything on this thread (tests on the test coordinator): read, compile, warm up.
          std::shared_ptr<replica> sibling = weights_sibling(st.replicas, ro);
          ro.weights_from = sibling.get();
          if (!sibling && st.options.read_model_file) {
            auto graph = st.options.read_model_file(spec.path);
            if (!graph) return to_caf_error(graph.error().with_context(where));
            ro.graph = std::make_shared<const runtime::graph>(std::move(*graph));
          }
          auto held = st.prepare_build(sibling, ro.graph.get(), ro.compute_precision, 1,
                                       spec.path);  // memory budget
          if (st.residency && !sibling)
            ro.max_arena_bytes = st.residency->arena_room(
                ro.graph ? weight_residency::build_estimate(nullptr, ro.graph.get(),
                                                            ro.compute_precision, 1)
                         : weight_residency::file_weights_estimate(spec.path,
                                                                   ro.compute_precision));
          if (!held) return to_caf_error(held.error().with_context(where));
          auto info = st.add_replica(ro, where);
          st.build_done(*held);
          if (!info) return to_caf_error(info.error());
          return std::move(*info);
        }
        auto promise = self->make_response_promise<replica_info>();
        start_load(self, waiting_load{std::move(ro), promise, where, spec.load_timeout});
        return promise;
      },
      [=](read_atom, uint64_t n) {
        auto& st = self->state;
        std::optional<pending_read> pr = st.take_read(n);
        if (!pr) return;  // settled by its timeout already
        auto graph = pr->read->take();
        if (!graph) {
          for (auto& l : pr->loads)
            l.promise.deliver(to_caf_error(graph.error().with_context(l.where)));
          return;
        }
        // A replica of the model loaded meanwhile lends its weights; else the graph read.
        std::shared_ptr<replica> sibling = weights_sibling(st.replicas, pr->loads.front().options);
        post_build(self, pr->path, std::move(pr->loads), std::move(sibling),
                   std::make_shared<const runtime::graph>(std::move(*graph)));
      },
      [=](built_atom, uint64_t n) {
        auto& st = self->state;
        auto it = st.builds.find(n);
        if (it == st.builds.end()) return;
        pending_build b = std::move(it->second);
        st.builds.erase(it);
        for (size_t i = 0; i < b.loads.size(); ++i) {
          waiting_load& l = b.loads[i];
          expected<std::shared_ptr<replica>>& r = b.slot->results[i];
          auto info = r ? st.adopt(std::move(*r)) : expected<replica_info>(r.error());
          if (info)
            l.promise.deliver(std::move(*info));
          else
            l.promise.deliver(to_caf_error(info.error().with_context(l.where)));
        }
        st.build_done(b.held);  // memory budget
        for (auto& f : b.followers) start_load(self, std::move(f));
      },
      [=](overdue_atom, uint64_t generation) {
        auto& st = self->state;
        if (!st.overdue.fired(generation)) return;  // an earlier arming's wake-up
        const auto now = self->clock().now();
        std::vector<uint64_t> due;
        for (const auto& [n, r] : st.reads)
          if (r.deadline <= now) due.push_back(n);
        for (uint64_t n : due)
          if (std::optional<pending_read> pr = st.take_read(n)) abandon_read(*pr);
        arm_overdue(self);
      },
      [=](unload_atom, uint32_t id) {
        auto& st = self->state;
        auto it = st.replicas.find(id);
        if (it == st.replicas.end()) return;
        std::shared_ptr<replica> gone = std::move(it->second);
        st.replicas.erase(it);
        if (st.residency) st.residency->remove(id);  // memory budget
        st.publish_memory();
        st.release_replica(std::move(gone));
      },
      [=](run_atom, batch_ref ref) {
        auto& st = self->state;
        batch& b = *ref.ptr;
        // A duplicate or stale run message (batch::claim): the batch is running or done already.
        if (!b.claim(ref.sequence)) return;
        status injected = status::ok();
        if (st.options.faults)
          if (auto f = take_batch_fault(*st.options.faults, st.options.index,
                                        st.options.kind == worker_kind::gpu))
            injected = carry_out(*f, st.traits.backend, st.options.device_index,
                                 in_process_hang_limit);
        const std::string_view fault =
            st.options.fault_injection ? requested_fault(b) : std::string_view{};
        if (fault == "crash") {
          // Dies holding the batch: the batcher sees the worker go down and retries it.
          self->quit(caf::make_error(caf::sec::runtime_error, "fault injection: worker crash"));
          return;
        }
        const auto start = std::chrono::steady_clock::now();
        if (st.options.fault_injection) std::this_thread::sleep_for(requested_sleep(b));
        const auto found = st.replicas.find(b.replica_id);
        replica* r = found != st.replicas.end() ? found->second.get() : nullptr;
        if (const status& s = st.setup(); !s.is_ok())
          b.result = s;
        else if (!r)
          b.result = make_error(error_code::unavailable,
                                "replica " + std::to_string(b.replica_id) + " is not loaded");
        else if (fault == "device")
          b.result = make_error(error_code::device_error, "fault injection: device error");
        else if (!injected.is_ok())
          b.result = injected;
        else if (st.options.fault_injection && r->inject_error())
          b.result = internal_error(
              "fault injection: this version is configured to fail "
              "(config.yaml fault_injection.error_ratio)");
        else if (status paged = st.page_in_for_run(*r); !paged.is_ok())  // memory budget
          b.result = paged;
        else {
          (void)r->run(b);
          st.done_running(*r);  // memory budget
        }
        b.compute_time = std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::steady_clock::now() - start);
        // Decided before the hand-off: once (done) is sent the batch is the batcher's, which may
        // already have reset or reused it (it then read false here, and the worker stayed up).
        const bool failed = b.result.code() == error_code::device_error;
        const std::string failure = failed ? b.result.message() : std::string();
        b.worker_failed = failed;
        self->send(caf::actor_cast<batcher_actor>(self->current_sender()), done_atom::value, ref);
        // Nothing below touches `b`.
        if (!failed && st.options.idle_spin_us > 0) {
          // Wait for the next batch here, yielding the core, rather than in CAF's condition
          // variable: a batch that comes within the window costs no thread wake-up. Only a
          // detached worker spins (a scheduler thread must go back to its other actors).
          const auto until =
              std::chrono::steady_clock::now() + std::chrono::microseconds(st.options.idle_spin_us);
          while (self->mailbox().empty() && std::chrono::steady_clock::now() < until)
            std::this_thread::yield();
        }
        if (failed) {
          // A device error may leave the device unusable: the supervisor builds a fresh worker
          // (fresh contexts) and model_manager reloads its replicas there.
          self->quit(caf::make_error(caf::sec::runtime_error,
                                     st.traits.device_label + " device error: " + failure));
        }
      },
      [=](crash_atom) {
        self->quit(caf::make_error(caf::sec::runtime_error, "fault injection: worker crash"));
      },
      [=](wevent_atom, const worker_event&) {},  // a worker process's proxy's: none here
  };
}

}  // namespace

uint32_t default_idle_spin_us() {
  return std::thread::hardware_concurrency() >= 8 ? 500 : 0;
}

std::string_view worker_kind_name(worker_kind k) {
  return k == worker_kind::gpu ? "gpu" : "cpu";
}

std::shared_ptr<replica> weights_sibling(const replica_table& replicas, const replica::options& o) {
  for (const auto& [id, r] : replicas)
    if (r->can_share_weights(o)) return r;
  return nullptr;
}

worker_actor spawn_worker_with(caf::actor_system& sys, const worker_options& o,
                               device_traits traits, bool detached) {
  worker_options wo = o;
  if (detached) return sys.spawn<caf::detached>(worker, wo, std::move(traits));
  wo.idle_spin_us = 0;  // a scheduler thread serves other actors between batches
  return sys.spawn(worker, wo, std::move(traits));
}

worker_actor spawn_worker(caf::actor_system& sys, const worker_options& o, bool detached) {
  if (o.processes) return spawn_worker_proxy(sys, o, detached);
  return o.kind == worker_kind::gpu ? spawn_gpu_worker(sys, o, detached)
                                    : spawn_cpu_worker(sys, o, detached);
}

}  // namespace troupe::actors
