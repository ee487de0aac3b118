#include "actors/batcher.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "actors/fault_injection.hpp"
#include "actors/fault_sites.hpp"
#include "serving/batch_scheduler.hpp"
#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/replica.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_decision;
using serving::batch_ref;
using serving::batch_scheduler;
using serving::fault_kind;
using serving::fault_plan;
using serving::infer_job;
using serving::job_list;
using serving::job_sink;
using serving::log_level;
using serving::model_signature;
using serving::no_deadline;
using serving::output_slice;
using serving::time_point;
using serving::version_metrics;
using serving::version_state;

namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;

struct replica_slot {
  worker_actor worker;
  caf::actor_addr address;
  uint32_t id = 0;
  uint32_t worker_index = 0;
  int outstanding = 0;  // batches sent and not returned
  bool alive = true;
  /// (detach)ed for a scale-down: not alive (no new batch), but the watchdog still watches the
  /// batches it was sent until they are back.
  bool detached = false;
  /// The watchdog killed the worker: no new batch goes to it; its down message retries the
  /// batches it holds (not before: a hung in-process worker still holds them).
  bool hung = false;
  time_point last_done{};  // when its last batch came back: its next one starts running then
};

struct in_flight_batch {
  batch* b = nullptr;
  size_t slot = 0;
  time_point sent{};
};

/// Jobs to send back, grouped by their reply_to (in practice one frontend): one call per group.
class outbox {
 public:
  void add(infer_job* j, bool release) {
    auto& groups = release ? releases_ : replies_;
    for (auto& [to, list] : groups)
      if (to == j->reply_to) {
        list.push_back(j);
        return;
      }
    job_list list;
    list.release = release;
    list.push_back(j);
    groups.emplace_back(j->reply_to, list);
  }
  void flush() {
    // The sinks are held here through the calls: the jobs handed over may be reused at once.
    for (auto& [to, list] : replies_) to->replied(list);
    for (auto& [to, list] : releases_) to->released(list);
    replies_.clear();
    releases_.clear();
  }

 private:
  std::vector<std::pair<std::shared_ptr<job_sink>, job_list>> replies_;
  std::vector<std::pair<std::shared_ptr<job_sink>, job_list>> releases_;
};

struct batcher_state {
  /// CAF constructs the state with its actor (stateful_actor::cr_state).
  explicit batcher_state(caf::local_actor* self) : self_(self) {}
  batcher_state(const batcher_state&) = delete;
  batcher_state& operator=(const batcher_state&) = delete;

  /// Monitoring a worker attaches a record naming this batcher to the *worker*, and CAF 0.17
  /// leaves it there when the batcher exits. The record holds a weak reference to the batcher,
  /// which keeps the batcher's whole memory block allocated until the worker itself exits: every
  /// version ever loaded left its batcher behind (issue 11: ~3.6 KB per load/unload cycle). The
  /// state is destroyed when the batcher exits (stateful_actor::on_exit), while the actor is
  /// still valid: the monitors go with it. A worker that is gone already has nothing to detach.
  ~batcher_state() {
    for (const auto& r : replicas) self_->demonitor(r.address);
  }

  caf::local_actor* self_;  // the batcher; outlives its state
  batcher_options options;
  batch_scheduler scheduler;
  bool batched = false;
  std::vector<replica_slot> replicas;
  std::vector<std::shared_ptr<batch>> batches;  // every batch ever made: the pool
  std::vector<batch*> free_batches;
  std::vector<in_flight_batch> in_flight;
  outbox out;
  uint64_t batches_sent = 0;
  int64_t last_batch_rows = 0;
  bool ever_had_replica = false;
  time_point timer_at = no_deadline;  // when the pending wake-up fires (no_deadline: none)
  uint64_t timer_generation = 0;
  time_point wake_hint = no_deadline;  // from the last decision: when the queue delay runs out
  /// Set when the last live replica's worker failed: the jobs held then wait until this time
  /// (options.recovery_wait later) for a replica to come back. no_deadline: not recovering.
  time_point recovery_until = no_deadline;
  /// (retire) asked: the version left the table. Answered once nothing is queued or running.
  bool retiring = false;
  std::vector<caf::typed_response_promise<bool>> retire_promises;
  // Scaling (see the header). A detached slot is not alive; its promise waits in detach_waits
  // until the slot has no batch outstanding.
  std::vector<std::pair<size_t, caf::typed_response_promise<bool>>> detach_waits;
  bool cold = false;       // scaled to zero: jobs are held while no replica is alive
  bool wake_sent = false;  // (wake) sent for the jobs held now
  uint64_t submitted_jobs = 0;
  uint64_t busy_us = 0;
  static inline const char* name = "batcher";

  const model_signature& sig() const { return *options.signature; }
  const version_metrics* metrics() const { return options.metrics.get(); }

  size_t alive_replicas() const {
    size_t n = 0;
    for (const auto& r : replicas) n += r.alive;
    return n;
  }
  bool recovering() const { return recovery_until != no_deadline; }

  /// A worker failed: with no live replica left, the jobs held wait for one to come back.
  void begin_recovery(time_point t) {
    if (alive_replicas() == 0 && !recovering()) recovery_until = t + options.recovery_wait;
  }

  void answer(infer_job* j, status s) {
    j->result = std::move(s);
    out.add(j, false);
  }

  batch* acquire_batch() {
    if (free_batches.empty()) {
      batches.push_back(std::make_shared<batch>());
      batches.back()->jobs.reserve(static_cast<size_t>(std::max<int64_t>(1, sig().max_batch_size)));
      return batches.back().get();
    }
    batch* b = free_batches.back();
    free_batches.pop_back();
    return b;
  }
  void recycle(batch* b) {
    b->reset();
    free_batches.push_back(b);
  }

  void update_state() {
    const bool ready = alive_replicas() > 0 || cold;
    const auto s = retiring           ? version_state::draining
                   : ready            ? version_state::ready
                   : ever_had_replica ? version_state::unavailable
                                      : version_state::loading;
    if (options.state) options.state->store(static_cast<uint8_t>(s), std::memory_order_release);
    if (auto* m = metrics()) m->set_ready(ready);
  }
};

using self_ptr = batcher_actor::stateful_pointer<batcher_state>;

time_point now_of(self_ptr self) {
  return self->clock().now();
}

std::string model_label(const batcher_state& st) {
  return "model '" + st.sig().model + "' version " + std::to_string(st.sig().version);
}

/// Jobs of a batch whose worker failed: retried once (at the head of their level) while a replica
/// is alive or one is expected back (recovering), else answered UNAVAILABLE; early-answered jobs
/// are only released.
void retry_or_fail(batcher_state& st, batch& b, time_point t, const std::string& why) {
  const bool can_retry = st.alive_replicas() > 0 || st.recovering();
  for (auto it = b.jobs.rbegin(); it != b.jobs.rend(); ++it) {  // reverse: requeue keeps order
    infer_job* j = *it;
    if (j->early_reply)
      st.out.add(j, true);
    else if (j->deadline <= t)
      st.answer(j,
                make_error(error_code::deadline_exceeded,
                           "deadline passed after " +
                               std::to_string(duration_cast<microseconds>(t - j->arrival).count()) +
                               " us; " + model_label(st) + ": " + why));
    else if (can_retry && j->attempts < 2)
      st.scheduler.requeue_front(j);
    else
      st.answer(
          j, make_error(error_code::unavailable, model_label(st) + ": " + why +
                                                     (j->attempts >= 2 ? " (after a retry)" : "")));
  }
}

/// No replica is left and none is expected back: nothing queued can run.
void fail_queued(batcher_state& st, const std::string& why) {
  if (st.alive_replicas() > 0 || st.recovering() || st.cold) return;
  job_list all;
  st.scheduler.drain_all(all);
  while (infer_job* j = all.pop_front())
    st.answer(j, make_error(error_code::unavailable, model_label(st) + " " + why));
}

/// Sends a batch to its replica's worker, through the batcher_worker hop's faults when a fault plan
/// is set: a dropped run is found by the watchdog, a duplicate claims nothing (batch::claim).
void send_run(self_ptr self, const replica_slot& slot, batch& b) {
  auto& st = self->state;
  batch_ref ref{b.shared_from_this(), b.sequence};
  b.dispatched.store(b.sequence, std::memory_order_release);
  if (fault_plan* plan = st.options.faults.get())
    if (auto f = take_message_fault(*plan, hop_site("batcher_worker", slot.worker_index))) {
      switch (f->kind) {
        case fault_kind::drop:
          return;
        case fault_kind::duplicate:
          self->send(slot.worker, run_atom::value, ref);
          break;
        default:  // delay, slow_link
          self->delayed_send(slot.worker, f->delay, run_atom::value, std::move(ref));
          return;
      }
    }
  self->send(slot.worker, run_atom::value, std::move(ref));
}

replica_slot* pick_replica(batcher_state& st, size_t& index) {
  replica_slot* best = nullptr;
  for (size_t i = 0; i < st.replicas.size(); ++i) {
    replica_slot& r = st.replicas[i];
    if (!r.alive || r.hung || r.outstanding >= st.options.max_batches_per_replica) continue;
    if (!best || r.outstanding < best->outstanding) {
      best = &r;
      index = i;
    }
  }
  return best;
}

void dispatch(self_ptr self, time_point t) {
  auto& st = self->state;
  st.wake_hint = no_deadline;
  for (;;) {
    size_t slot_index = 0;
    replica_slot* slot = pick_replica(st, slot_index);
    if (!slot) return;  // every replica busy: the queue grows and the next batch is formed from it
    const batch_decision d = st.scheduler.decide(t, static_cast<int>(st.alive_replicas()));
    if (!d.dispatch) {
      st.wake_hint = d.wake_at;
      return;
    }
    batch* b = st.acquire_batch();
    st.scheduler.take(d.max_rows, b->jobs);
    if (b->jobs.empty()) {
      st.recycle(b);
      return;
    }
    b->replica_id = slot->id;
    b->sequence = ++st.batches_sent;
    for (infer_job* j : b->jobs) {
      b->rows += j->rows;
      ++j->attempts;
      j->queue_time = duration_cast<microseconds>(t - j->arrival);
      if (auto* m = st.metrics())
        m->observe_queue(std::chrono::duration<double>(t - j->arrival).count());
    }
    st.last_batch_rows = b->rows;
    if (auto* m = st.metrics()) m->observe_batch(b->rows);
    ++slot->outstanding;
    st.in_flight.push_back({b, slot_index, t});
    send_run(self, *slot, *b);
  }
}

/// When the batch a replica runs now is overdue (batcher_options' watchdog); no_deadline: never.
/// `f` is the replica's oldest batch in flight.
time_point overdue_at(const batcher_state& st, const in_flight_batch& f) {
  if (st.options.watchdog_multiple <= 0) return no_deadline;
  const replica_slot& slot = st.replicas[f.slot];
  const time_point started = std::max(f.sent, slot.last_done);
  const double p99_us = st.scheduler.adaptive().latency_p99_us(f.b->rows);
  auto limit = std::max<microseconds>(
      st.options.watchdog_min,
      microseconds(static_cast<int64_t>(st.options.watchdog_multiple * std::max(0.0, p99_us))));
  // troupe.sleep_ms (fault injection's slow model) is not a hang.
  if (st.options.faults) limit += requested_sleep(*f.b);
  return started + limit;
}

/// The oldest batch in flight of every live replica: the one it runs now.
/// Quadratic in the batches in flight, which are at most max_batches_per_replica per replica, and
/// with no allocation: this runs at every message.
template <typename F>
void for_each_running(batcher_state& st, F&& f) {
  for (size_t i = 0; i < st.in_flight.size(); ++i) {
    bool first = true;
    for (size_t k = 0; k < i && first; ++k) first = st.in_flight[k].slot != st.in_flight[i].slot;
    if (first) f(st.in_flight[i]);
  }
}

/// Kills the workers whose running batch is overdue.
void watch(self_ptr self, time_point t) {
  auto& st = self->state;
  for_each_running(st, [&](const in_flight_batch& f) {
    replica_slot& slot = st.replicas[f.slot];
    if (!(slot.alive || slot.detached) || slot.hung || overdue_at(st, f) > t) return;
    slot.hung = true;
    const auto waited = duration_cast<std::chrono::milliseconds>(t - std::max(f.sent, slot.last_done));
    log_event(log_level::error, "worker hung",
              {{"worker", slot.worker_index},
               {"model", st.sig().model},
               {"version", st.sig().version},
               {"batch", f.b->sequence},
               {"rows", f.b->rows},
               {"waited_ms", static_cast<int64_t>(waited.count())},
               {"limit_ms", static_cast<int64_t>(duration_cast<std::chrono::milliseconds>(
                                                     overdue_at(st, f) - std::max(f.sent, slot.last_done))
                                                     .count())}});
    if (auto* m = st.metrics()) m->count_watchdog_kill();
    // A kill cannot be trapped: the worker (a process's proxy, which takes its process along)
    // exits with it, and the supervisor replaces it.
    self->send_exit(slot.worker, caf::exit_reason::kill);
  });
}

/// Answers running jobs whose deadline passed (their batch keeps running; they are released when
/// it returns) and queued ones.
void expire(self_ptr self, time_point t) {
  auto& st = self->state;
  job_list expired;
  st.scheduler.expire(t, expired);
  while (infer_job* j = expired.pop_front())
    st.answer(j,
              make_error(error_code::deadline_exceeded,
                         "deadline passed after " +
                             std::to_string(duration_cast<microseconds>(t - j->arrival).count()) +
                             " us while queued for " + model_label(st) +
                             (st.cold ? " (scaled to zero: a replica was starting)" : "")));
  for (auto& f : st.in_flight)
    for (infer_job* j : f.b->jobs)
      if (!j->early_reply && j->deadline <= t) {
        j->early_reply = true;
        st.answer(
            j, make_error(error_code::deadline_exceeded,
                          "deadline passed after " +
                              std::to_string(duration_cast<microseconds>(t - j->arrival).count()) +
                              " us while running on " + model_label(st)));
      }
}

/// Keeps one wake-up pending for the earliest thing that needs time to pass.
void arm_timer(self_ptr self, time_point t) {
  auto& st = self->state;
  time_point next = std::min({st.wake_hint, st.scheduler.earliest_deadline(), st.recovery_until});
  for (const auto& f : st.in_flight)
    for (const infer_job* j : f.b->jobs)
      if (!j->early_reply) next = std::min(next, j->deadline);
  if (next == no_deadline || next >= st.timer_at) return;
  st.timer_at = next;
  const auto delay =
      next > t ? duration_cast<microseconds>(next - t) + microseconds(1) : microseconds(0);
  self->delayed_send(self, delay, tick_atom::value, ++st.timer_generation);
}

// ---- scaling: detach (a scale-down) and cold (scaled to zero); see the header -------------------

/// Answers the detaches whose replica has no batch outstanding any more.
void finish_detaches(batcher_state& st) {
  for (size_t i = 0; i < st.detach_waits.size();) {
    if (st.replicas[st.detach_waits[i].first].outstanding > 0) {
      ++i;
      continue;
    }
    st.detach_waits[i].second.deliver(true);
    st.detach_waits.erase(st.detach_waits.begin() + static_cast<ptrdiff_t>(i));
  }
}

/// Cold with jobs held: their wait is bounded (recovery_wait from now, for those whose deadline
/// is later), and model_manager is asked once for a replica.
void hold_cold(self_ptr self, time_point t) {
  auto& st = self->state;
  if (!st.cold || st.alive_replicas() > 0 || st.scheduler.queued_jobs() == 0) return;
  if (!st.recovering()) st.recovery_until = t + st.options.recovery_wait;
  if (!st.wake_sent && st.options.manager) {
    st.wake_sent = true;
    self->send(st.options.manager, wake_atom::value, st.sig().model, st.sig().version);
  }
}

/// No replica came within recovery_wait of the first held job: the held jobs are answered; the
/// version stays cold, and the next job asks again.
void fail_cold(batcher_state& st) {
  job_list all;
  st.scheduler.drain_all(all);
  while (infer_job* j = all.pop_front())
    st.answer(j, make_error(error_code::unavailable,
                            model_label(st) + " is scaled to zero and no replica started within " +
                                std::to_string(st.options.recovery_wait.count()) +
                                " ms of the request that asked for one"));
  st.wake_sent = false;
}

/// Ends every handler: new batches, the next wake-up, the replies, the gauges.
void settle(self_ptr self, time_point t) {
  auto& st = self->state;
  dispatch(self, t);
  finish_detaches(st);
  hold_cold(self, t);
  arm_timer(self, t);
  st.out.flush();
  if (auto* m = st.metrics()) m->set_queue_length(static_cast<double>(st.scheduler.queued_jobs()));
  if (st.retiring && st.scheduler.queued_jobs() == 0 && st.in_flight.empty()) {
    for (auto& p : st.retire_promises) p.deliver(true);
    st.retire_promises.clear();
  }
}

void finish_batch(batcher_state& st, batch& b, time_point t) {
  const bool ok = b.result.is_ok() && b.block != nullptr;
  int64_t row = 0;
  for (infer_job* j : b.jobs) {
    if (j->early_reply) {
      st.out.add(j, true);
    } else if (!ok) {
      st.answer(j, b.result.is_ok() ? internal_error("worker returned no outputs") : b.result);
    } else {
      j->compute_time = b.compute_time;
      j->batch_rows = static_cast<uint32_t>(b.rows);
      const size_t n =
          j->requested_outputs.empty() ? b.outputs.size() : j->requested_outputs.size();
      j->outputs.resize(n);
      for (size_t i = 0; i < n; ++i) {
        const int k = j->requested_outputs.empty() ? static_cast<int>(i) : j->requested_outputs[i];
        const batch::output_layout& layout = b.outputs[static_cast<size_t>(k)];
        output_slice& s = j->outputs[i];
        s.output_index = k;
        s.info.type = layout.info.type;
        s.info.shape.assign(layout.info.shape.begin(), layout.info.shape.end());
        if (st.batched && !s.info.shape.empty()) s.info.shape[0] = j->rows;
        s.block = b.block;
        s.offset = layout.offset + static_cast<size_t>(row) * layout.row_bytes;
        b.block->retain();
      }
      j->result = status::ok();
      st.out.add(j, false);
    }
    row += j->rows;
  }
  if (b.block) b.block->release();  // the batcher's reference; the slices hold their own
  b.block = nullptr;
  (void)t;
}

batcher_actor::behavior_type batcher(self_ptr self, batcher_options o) {
  auto& st = self->state;
  st.options = std::move(o);
  st.batched = st.sig().max_batch_size > 0;
  st.scheduler =
      batch_scheduler(st.sig(), default_bucket_rows(st.sig().max_batch_size, st.sig().config));
  st.update_state();

  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    const time_point t = now_of(self);
    bool hit = false;
    for (auto& r : st.replicas)
      if (r.alive && r.address == dm.source) {
        r.alive = false;
        hit = true;
      }
    // A worker that failed is replaced (actors/supervisor.hpp) and its replicas reloaded; one
    // that exited normally (the node stops) is not.
    const bool failed = dm.reason && dm.reason != caf::exit_reason::user_shutdown &&
                        dm.reason != caf::exit_reason::normal;
    if (hit && failed) st.begin_recovery(t);
    // Batches the failed worker held: retried elsewhere once, or answered.
    for (size_t i = 0; i < st.in_flight.size();) {
      in_flight_batch f = st.in_flight[i];
      if (st.replicas[f.slot].address != dm.source) {
        ++i;
        continue;
      }
      hit = true;
      st.in_flight.erase(st.in_flight.begin() + static_cast<ptrdiff_t>(i));
      st.replicas[f.slot].outstanding = 0;
      retry_or_fail(st, *f.b, t, "its worker failed while running the request");
      st.recycle(f.b);
    }
    if (!hit) return;
    st.update_state();
    fail_queued(st, "has no healthy replica");
    settle(self, t);
  });

  return {
      [=](submit_atom, job_list jobs) {
        auto& st = self->state;
        const time_point t = now_of(self);
        const bool alive = st.alive_replicas() > 0;
        st.submitted_jobs += jobs.size;
        while (infer_job* j = jobs.pop_front()) {
          if (j->deadline <= t) {
            st.answer(
                j, make_error(error_code::deadline_exceeded,
                              "deadline passed before " + model_label(st) + " queued the request"));
          } else if (!alive && !st.cold) {  // cold: held until a replica starts
            st.answer(j, make_error(error_code::unavailable,
                                    model_label(st) + " has no healthy replica"));
          } else if (status s = st.scheduler.enqueue(j, t); !s.is_ok()) {
            st.answer(j, std::move(s));
          }
        }
        settle(self, t);
      },
      [=](done_atom, batch_ref ref) {
        auto& st = self->state;
        const time_point t = now_of(self);
        auto it = std::find_if(st.in_flight.begin(), st.in_flight.end(),
                               [&](const in_flight_batch& f) { return f.b == ref.ptr.get(); });
        if (it == st.in_flight.end()) return;  // already handled as part of a worker failure
        const in_flight_batch f = *it;
        st.in_flight.erase(it);
        replica_slot& slot = st.replicas[f.slot];
        --slot.outstanding;
        slot.last_done = t;
        batch& b = *f.b;
        st.busy_us += static_cast<uint64_t>(std::max<int64_t>(0, b.compute_time.count()));
        if (b.worker_failed) {
          // The worker exits (and is replaced); its down message retries the other batches it
          // still holds.
          slot.alive = false;
          st.begin_recovery(t);
          if (b.block) b.block->release();
          b.block = nullptr;
          retry_or_fail(st, b, t, "its worker failed (" + b.result.to_string() + ")");
          st.update_state();
          fail_queued(st, "has no healthy replica");
        } else {
          if (b.result.is_ok()) {
            st.scheduler.adaptive().observe_latency(b.bucket_rows,
                                                    static_cast<double>(b.compute_time.count()));
            if (auto* m = st.metrics())
              m->observe_compute(std::chrono::duration<double>(b.compute_time).count(),
                                 b.jobs.size());
          }
          finish_batch(st, b, t);
        }
        st.recycle(&b);
        settle(self, t);
      },
      [=](tick_atom, uint64_t generation) {
        auto& st = self->state;
        const time_point t = now_of(self);
        if (generation == st.timer_generation) st.timer_at = no_deadline;
        expire(self, t);
        watch(self, t);
        if (st.recovering() && st.recovery_until <= t) {
          st.recovery_until = no_deadline;
          if (st.cold)
            fail_cold(st);
          else
            fail_queued(st, "has no healthy replica: none came back within " +
                                std::to_string(st.options.recovery_wait.count()) +
                                " ms of its worker's failure");
        }
        settle(self, t);
      },
      [=](replica_atom, replica_handle h) {
        auto& st = self->state;
        replica_slot slot;
        slot.worker = h.worker;
        slot.address = h.worker.address();
        slot.id = h.info.id;
        slot.worker_index = h.worker_index;
        // One monitor per worker: a second replica on it shares the first one's.
        if (std::none_of(st.replicas.begin(), st.replicas.end(),
                         [&](const replica_slot& r) { return r.address == slot.address; }))
          self->monitor(h.worker);
        // A dead slot that no batch in flight refers to is reused: a worker that fails over and
        // over does not grow the table by a slot per restart.
        auto reusable = st.replicas.end();
        for (auto it = st.replicas.begin();
             it != st.replicas.end() && reusable == st.replicas.end(); ++it) {
          const auto index = static_cast<size_t>(it - st.replicas.begin());
          if (!it->alive && std::none_of(st.in_flight.begin(), st.in_flight.end(),
                                         [&](const in_flight_batch& f) { return f.slot == index; }))
            reusable = it;
        }
        if (reusable != st.replicas.end())
          *reusable = std::move(slot);
        else
          st.replicas.push_back(std::move(slot));
        st.recovery_until = no_deadline;
        st.cold = st.wake_sent = false;
        st.ever_had_replica = true;
        for (const auto& l : h.info.warmup) st.scheduler.adaptive().seed_latency(l.rows, l.mean_us);
        st.update_state();
        settle(self, now_of(self));
      },
      [=](retire_atom) -> caf::result<bool> {
        // Sent through the router after its last job for this version: what is queued or running
        // finishes (answered as usual), then the promise says the batcher may go.
        auto& st = self->state;
        st.retiring = true;
        if (st.cold) {  // no replica is coming: what it holds is answered
          st.cold = false;
          st.recovery_until = no_deadline;
          fail_queued(st, "is being unloaded (it was scaled to zero)");
        }
        st.update_state();
        auto rp = self->make_response_promise<bool>();
        st.retire_promises.push_back(rp);
        settle(self, now_of(self));
        return rp;
      },
      [=](watch_atom) { watch(self, now_of(self)); },
      [=](stats_atom) {
        auto& st = self->state;
        batcher_stats s;
        s.queued_jobs = st.scheduler.queued_jobs();
        s.in_flight_batches = st.in_flight.size();
        s.alive_replicas = st.alive_replicas();
        s.batches_sent = st.batches_sent;
        s.last_batch_rows = st.last_batch_rows;
        if (st.scheduler.adaptive_enabled()) {
          const auto c =
              st.scheduler.adaptive().choose(now_of(self), static_cast<int>(st.alive_replicas()));
          s.adaptive_rows = c.batch_rows;
          s.adaptive_wait_us = c.max_wait.count();
        }
        s.submitted_jobs = st.submitted_jobs;
        s.busy_us = st.busy_us;
        for (const auto& [rows, mean_us] : st.scheduler.adaptive().known_latencies())
          s.latency_profile.push_back({rows, mean_us});
        s.cold = st.cold;
        return s;
      },
      [=](detach_atom, uint32_t worker_index, uint32_t id) -> caf::result<bool> {
        auto& st = self->state;
        auto it = std::find_if(st.replicas.begin(), st.replicas.end(), [&](const replica_slot& r) {
          return r.alive && r.worker_index == worker_index && r.id == id;
        });
        if (it == st.replicas.end()) return true;  // not serving (its worker failed): none runs
        it->alive = false;
        it->detached = true;
        if (st.alive_replicas() == 0 && !st.retiring) st.cold = true;
        st.update_state();
        auto rp = self->make_response_promise<bool>();
        st.detach_waits.emplace_back(static_cast<size_t>(it - st.replicas.begin()), rp);
        settle(self, now_of(self));  // answered here already when none of its batches runs
        return rp;
      },
  };
}

}  // namespace

batcher_actor spawn_batcher(caf::actor_system& sys, batcher_options o) {
  return sys.spawn(batcher, std::move(o));
}

}  // namespace troupe::actors
