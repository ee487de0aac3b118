#include "cluster/request_gateway.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "actors/actor_job_sink.hpp"
#include "actors/caf_compat.hpp"
#include "actors/node.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"

namespace troupe::cluster {

using serving::infer_job;
using serving::job_list;
using clock_type = std::chrono::steady_clock;

namespace {

struct pooled_request : gateway_request {
  /// Set by whoever delivers the reply first (a bridge or stop's cancellation): exactly one reply.
  std::atomic<bool> replied{false};
  /// Submitted and not yet handed back by the actors; guarded by shared_state::mutex.
  bool out = false;
};

}  // namespace

/// Shared by the gateway and its bridge actors, so that a reply list reaching a bridge after the
/// gateway stopped still finds live memory.
struct request_gateway::shared_state {
  caf::actor_system& sys;
  std::shared_ptr<serving::job_target> router;
  serving::table_holder& holder;
  serving::serving_metrics* metrics;
  gateway_options options;
  std::vector<caf::actor> bridges;
  std::vector<std::shared_ptr<serving::job_sink>> sinks;  // one per bridge: jobs' reply_to
  std::atomic<uint64_t> next_bridge{0};
  std::atomic<uint64_t> sequence{0};
  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};
  std::atomic<bool> bridges_released{false};
  std::atomic<uint32_t> inflight{0};

  std::mutex mutex;  // guards the pool and `out`
  std::condition_variable idle;
  std::vector<std::unique_ptr<pooled_request>> pool;
  std::vector<pooled_request*> free;

  shared_state(caf::actor_system& s, const actors::node_handles& node, serving::table_holder& h,
               serving::serving_metrics* m, gateway_options o)
      : sys(s),
        router(actors::make_router_target(node.router)),
        holder(h),
        metrics(m),
        options(o) {}

  const serving::version_metrics* metrics_of(const infer_job& j) const {
    if (j.metrics) return j.metrics;
    return metrics ? &metrics->unrouted() : nullptr;
  }

  /// Runs the door's callback once and recycles the request. The actors no longer hold it.
  void deliver(pooled_request* r) {
    const bool first = !r->replied.exchange(true, std::memory_order_acq_rel);
    if (first) {
      if (const auto* vm = metrics_of(*r)) {
        // Counted before the reply leaves: a client that reads /metrics once it has its reply
        // must find its request there.
        vm->record_request(r->result.code(),
                           std::chrono::duration<double>(clock_type::now() - r->arrival).count());
      }
      if (r->on_reply) r->on_reply(*r);
    }
    // Slices are null unless the batcher set them for this request (recycling nulls them).
    for (auto& o : r->outputs)
      if (o.block) {
        o.block->release();
        o.block = nullptr;
      }
    // Lost to stop()'s cancellation: stop may still be in the callback, and after stop nothing
    // needs the request back.
    if (first) recycle(r);
  }

  void recycle(pooled_request* r) {
    r->on_reply = nullptr;
    r->input_owner.reset();
    r->reset_for_reuse();
    r->replied.store(false, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mutex);
    if (r->out) {
      r->out = false;
      const uint32_t left = inflight.fetch_sub(1, std::memory_order_acq_rel) - 1;
      if (metrics) metrics->set_inflight(serving::serving_metrics::door::kserve, left);
      if (left == 0) idle.notify_all();
    }
    free.push_back(r);
  }

  /// A reply list: early-answered jobs wait for their release (the worker may still read them).
  void on_reply_list(job_list l) {
    while (infer_job* j = l.pop_front())
      if (!j->early_reply) deliver(static_cast<pooled_request*>(j));
  }
  void on_release_list(job_list l) {
    l.release = true;
    while (infer_job* j = l.pop_front()) deliver(static_cast<pooled_request*>(j));
  }
};

request_gateway::request_gateway(std::shared_ptr<shared_state> s) : state_(std::move(s)) {}

request_gateway::~request_gateway() {
  stop();
}

expected<std::unique_ptr<request_gateway>> request_gateway::create(
    caf::actor_system& sys, const actors::node_handles& node, serving::table_holder& holder,
    serving::serving_metrics* metrics, gateway_options o) {
  if (o.max_inflight == 0) return invalid_argument("gateway max_inflight must be at least 1");
  auto st = std::make_shared<shared_state>(sys, node, holder, metrics, o);
  const uint32_t bridges = std::max<uint32_t>(o.bridges, 1);
  for (uint32_t i = 0; i < bridges; ++i) {
    std::shared_ptr<shared_state> s = st;
    st->bridges.push_back(sys.spawn([s](caf::event_based_actor*) -> caf::behavior {
      return {
          [s](actors::reply_atom, job_list l) { s->on_reply_list(l); },
          [s](actors::release_atom, job_list l) { s->on_release_list(l); },
      };
    }));
    st->sinks.push_back(actors::make_actor_job_sink(st->bridges.back()));
  }
  return std::unique_ptr<request_gateway>(new request_gateway(std::move(st)));
}

gateway_request* request_gateway::acquire() {
  auto& st = *state_;
  std::lock_guard<std::mutex> lock(st.mutex);
  if (!st.free.empty()) {
    pooled_request* r = st.free.back();
    st.free.pop_back();
    return r;
  }
  if (st.pool.size() >= st.options.max_inflight) return nullptr;
  st.pool.push_back(std::make_unique<pooled_request>());
  return st.pool.back().get();
}

void request_gateway::discard(gateway_request* r) {
  state_->recycle(static_cast<pooled_request*>(r));
}

void request_gateway::answer_now(gateway_request* r, status s) {
  if (r->arrival == serving::time_point{}) r->arrival = clock_type::now();
  r->result = std::move(s);
  r->outputs.clear();
  state_->deliver(static_cast<pooled_request*>(r));
}

void request_gateway::submit(gateway_request* r, const serving::request_fields& f) {
  auto& st = *state_;
  auto* p = static_cast<pooled_request*>(r);
  p->arrival = clock_type::now();
  if (st.draining.load(std::memory_order_acquire))
    return answer_now(r,
                      make_error(error_code::unavailable, "the node is draining (shutting down)"));
  const serving::table_ptr table = st.holder.get();
  if (status s = serving::bind_request(table.get(), f, *p); !s.is_ok())
    return answer_now(r, std::move(s));
  p->sequence = st.sequence.fetch_add(1, std::memory_order_relaxed) + 1;
  p->reply_to = st.sinks[st.next_bridge.fetch_add(1, std::memory_order_relaxed) % st.sinks.size()];
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    p->out = true;
    const uint32_t now = st.inflight.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (st.metrics) st.metrics->set_inflight(serving::serving_metrics::door::kserve, now);
  }
  job_list l;
  l.push_back(p);
  st.router->submit(l);
}

std::shared_ptr<const serving::model_table> request_gateway::table() const {
  return state_->holder.get();
}

serving::table_holder& request_gateway::holder() const {
  return state_->holder;
}

void request_gateway::begin_drain() {
  state_->draining.store(true, std::memory_order_release);
}

bool request_gateway::draining() const {
  return state_->draining.load(std::memory_order_acquire);
}

uint32_t request_gateway::inflight() const {
  return state_->inflight.load(std::memory_order_acquire);
}

bool request_gateway::wait_idle(std::chrono::milliseconds timeout) {
  auto& st = *state_;
  std::unique_lock<std::mutex> lock(st.mutex);
  return st.idle.wait_for(lock, timeout, [&] { return st.inflight.load() == 0; });
}

void request_gateway::stop() {
  auto& st = *state_;
  if (st.stopped.exchange(true)) return;
  st.draining.store(true);
  std::vector<pooled_request*> held;
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    for (auto& r : st.pool)
      if (r->out) held.push_back(r.get());
  }
  // The actors still hold these: answer them, but never recycle (a late reply list may still name
  // them; the pool's memory lives as long as the shared state).
  for (pooled_request* r : held)
    if (!r->replied.exchange(true, std::memory_order_acq_rel)) {
      r->result =
          make_error(error_code::cancelled, "the node stopped before the request completed");
      if (const auto* vm = st.metrics_of(*r)) vm->count(error_code::cancelled);
      if (r->on_reply) r->on_reply(*r);
      // The request stays in the pool until the gateway dies; its callback must not: a door's
      // callback holds the door's connection, which must not outlive the door's I/O. (deliver
      // never reads on_reply once `replied` is set.)
      r->on_reply = nullptr;
    }
  release_actors();
}

void request_gateway::release_actors() {
  auto& st = *state_;
  if (st.bridges_released.exchange(true)) return;
  for (auto& b : st.bridges) caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
}

}  // namespace troupe::cluster
