#include "actors/scaler.hpp"

#include <prometheus/client_metric.h>
#include <prometheus/histogram.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "actors/scaler_signals.hpp"
#include "serving/log_fields.hpp"

namespace troupe::actors {

using serving::batch_service_time;
using serving::log_level;
using serving::scaling_clock;
using serving::scaling_decision;
using serving::scaling_policy;
using serving::scaling_signals;
using serving::serving_metrics;
using serving::version_metrics;

namespace {

/// A request of a tick (to model_manager, to a batcher) that gets no answer within this long is
/// given up, so that one stuck actor cannot stop the scaling of every version.
constexpr std::chrono::seconds answer_timeout{10};

struct version_track {
  scaling_policy policy;
  caf::actor_addr batcher;  // a reloaded version has a new batcher: a new track
  std::optional<version_reading> last;
};

struct scaler_state {
  scaler_options options;
  std::map<std::pair<std::string, int64_t>, version_track> versions;
  bool ticking = false;  // a tick's requests are out
  bool again = false;    // a wake came meanwhile: tick again once this one is done
  static inline const char* name = "scaler";
};

using self_ptr = scaler_actor::stateful_pointer<scaler_state>;

std::optional<latency_histogram> latency_of(const version_metrics* m) {
  if (!m || !m->request_latency_s) return std::nullopt;
  const prometheus::ClientMetric c = m->request_latency_s->Collect();
  latency_histogram h;
  for (const auto& b : c.histogram.bucket) {
    h.upper_bounds_s.push_back(b.upper_bound);
    h.cumulative.push_back(static_cast<double>(b.cumulative_count));
  }
  return h;
}

std::vector<batch_service_time> profile_of(const batcher_stats& s) {
  std::vector<batch_service_time> out;
  for (const replica_latency& l : s.latency_profile) out.push_back({l.rows, l.mean_us / 1000.0});
  return out;
}

/// One version's decision at `now` from its batcher's answer; returns its demand on the node.
replica_demand decide_one(self_ptr self, const scaled_version& sv, const batcher_stats& stats,
                          scaling_clock::time_point now,
                          const std::vector<serving_metrics::gpu_reading>& gpus,
                          std::optional<uint64_t> budget_room) {
  auto& st = self->state;
  const auto key = std::make_pair(sv.model, sv.version);
  auto it = st.versions.find(key);
  if (it == st.versions.end() || it->second.batcher != sv.batcher.address()) {
    version_track fresh{scaling_policy(sv.scaling, sv.wanted, st.options.tuning),
                        sv.batcher.address(), std::nullopt};
    it = st.versions.insert_or_assign(key, std::move(fresh)).first;
  }
  version_track& track = it->second;

  version_reading reading;
  reading.at = now;
  reading.submitted_jobs = stats.submitted_jobs;
  reading.busy_us = stats.busy_us;
  reading.queued = stats.queued_jobs;
  reading.latency = latency_of(sv.metrics.get());
  const version_reading before = track.last.value_or(reading);
  track.last = reading;

  const auto profile = profile_of(stats);
  scaling_signals s = signals_between(before, reading, sv.ready, profile, sv.scaling.slo_p99_ms);
  s.starting_replicas = sv.starting;
  if (sv.gpu && !gpus.empty()) {
    // NVML's GPUs are not matched to the workers' CUDA ordinals: the best of them stands for the
    // candidate device (exact where the node's NVML sees only its own GPUs, as in a pod).
    uint64_t free = 0;
    double util = 1;
    std::optional<double> pcie;  // the least busy link, where NVML reports links
    for (const auto& g : gpus) {
      free = std::max(free, g.free_bytes), util = std::min(util, g.utilization);
      if (g.pcie_utilization) pcie = std::min(pcie.value_or(1.0), *g.pcie_utilization);
    }
    // Under a memory budget the worker, not the device, is the limit (the budget is smaller
    // than the device, and evicting idle versions makes room up to it).
    if (budget_room) free = std::min(free, *budget_room);
    s.memory_headroom_bytes = free;
    s.replica_bytes = sv.replica_bytes;
    s.gpu_utilization = util;
    s.pcie_utilization = pcie;
  }

  const uint32_t from = track.policy.replicas();
  const scaling_decision d = track.policy.decide(now, s);
  const std::string_view action = scaling_action_name(d.action);
  const std::string_view reason = scaling_reason_name(d.reason);
  if (auto* m = st.options.metrics) {
    m->count_scaler_decision(sv.model, action, reason);
    m->set_scaler_desired_replicas(sv.model, sv.version, d.replicas);
  }
  if (d.replicas != from)
    log_event(log_level::info, "scaling decision",
              {{"model", sv.model},
               {"version", sv.version},
               {"from", from},
               {"to", d.replicas},
               {"action", action},
               {"reason", reason},
               {"needed", d.needed},
               {"arrival_rps", s.arrival_rps},
               {"queued", s.queued},
               {"p99_ms", s.p99_ms.value_or(-1.0)},
               {"busy_fraction", s.busy_fraction},
               {"ready", s.ready_replicas},
               {"starting", s.starting_replicas}});
  // Sent while model_manager is not at the count: a load that failed is tried again next tick,
  // and a replica back from a failed worker beyond the count is taken away again.
  if (d.replicas != sv.wanted || sv.ready + sv.starting != d.replicas) {
    const std::string model = sv.model;
    const int64_t version = sv.version;
    const uint32_t n = d.replicas;
    self->request(st.options.manager, answer_timeout, scale_atom::value, model, version, n)
        .then([](bool) {},
              [self, model, version, n](caf::error& e) {
                const status s = from_caf_error(self->system(), e);
                log_event(log_level::warn, "scaling not carried out",
                          {{"model", model},
                           {"version", version},
                           {"to", n},
                           {"code", to_string(s.code())},
                           {"error", s.message()}});
              });
  }

  replica_demand demand;
  demand.gpu = sv.gpu;
  demand.workers = sv.workers;
  demand.needed = d.needed;
  demand.replicas = d.replicas;
  demand.replica_bytes = sv.replica_bytes;
  return demand;
}

void tick(self_ptr self);

/// Every batcher answered (or failed to): the decisions, the node's demand, the next tick.
void decide_all(self_ptr self, const scaled_versions& list,
                const std::vector<std::optional<batcher_stats>>& stats) {
  auto& st = self->state;
  const scaling_clock::time_point now = self->clock().now();
  std::vector<serving_metrics::gpu_reading> gpus;  // asked only where a version is on GPUs
  std::optional<uint64_t> budget_room;
  if (std::any_of(list.begin(), list.end(), [](const scaled_version& v) { return v.gpu; })) {
    if (st.options.gpus)
      gpus = st.options.gpus();
    else if (st.options.metrics)
      gpus = st.options.metrics->gpu_readings();
    if (st.options.budget_room)
      budget_room = st.options.budget_room();
    else if (st.options.metrics)
      budget_room = st.options.metrics->budget_room();
  }
  std::vector<replica_demand> demand;
  std::map<std::pair<std::string, int64_t>, version_track> kept;
  for (size_t i = 0; i < list.size(); ++i) {
    if (!stats[i]) continue;  // its batcher went (a reload, an unload): next tick's list says
    demand.push_back(decide_one(self, list[i], *stats[i], now, gpus, budget_room));
    const auto key = std::make_pair(list[i].model, list[i].version);
    kept.insert_or_assign(key, std::move(st.versions.at(key)));
  }
  st.versions = std::move(kept);  // versions no longer scaled are forgotten
  if (auto* m = st.options.metrics) {
    uint64_t gpu_memory = 0;
    for (const auto& g : gpus) gpu_memory += g.total_bytes;
    m->set_scaler_desired_nodes(desired_nodes(demand, gpu_memory));
  }
  st.ticking = false;
  if (st.again) {
    st.again = false;
    tick(self);
  }
}

/// One tick: the list of scaled versions, then each batcher's counters, then decide_all.
void tick(self_ptr self) {
  auto& st = self->state;
  if (st.ticking) {
    st.again = true;
    return;
  }
  st.ticking = true;
  self->request(st.options.manager, answer_timeout, scaled_atom::value)
      .then(
          [self](scaled_versions& list) {
            if (list.empty()) return decide_all(self, {}, {});
            auto shared = std::make_shared<const scaled_versions>(std::move(list));
            auto stats =
                std::make_shared<std::vector<std::optional<batcher_stats>>>(shared->size());
            auto left = std::make_shared<size_t>(shared->size());
            for (size_t i = 0; i < shared->size(); ++i)
              self->request((*shared)[i].batcher, answer_timeout, stats_atom::value)
                  .then(
                      [self, shared, stats, left, i](batcher_stats& s) {
                        (*stats)[i] = std::move(s);
                        if (--*left == 0) decide_all(self, *shared, *stats);
                      },
                      [self, shared, stats, left](caf::error&) {
                        if (--*left == 0) decide_all(self, *shared, *stats);
                      });
          },
          [self](caf::error&) {
            self->state.ticking = false;  // model_manager is gone or stuck: the next tick asks
          });
}

scaler_actor::behavior_type scaler(self_ptr self, scaler_options o) {
  self->state.options = std::move(o);
  self->delayed_send(self, self->state.options.interval, tick_atom::value);
  return {
      [=](tick_atom) {
        tick(self);
        self->delayed_send(self, self->state.options.interval, tick_atom::value);
      },
      [=](wake_atom, const std::string&, int64_t) { tick(self); },
  };
}

}  // namespace

scaler_actor spawn_scaler(caf::actor_system& sys, scaler_options o) {
  return sys.spawn(scaler, std::move(o));
}

}  // namespace troupe::actors
