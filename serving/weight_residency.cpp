// A worker's memory budget carried out on its replicas' weights (see the header).
#include "serving/weight_residency.hpp"

#include <chrono>
#include <filesystem>
#include <utility>

#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"

namespace troupe::serving {
namespace {

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

uint64_t plans_seen(const replica& r) {
  const runtime::shape_cache_stats s = r.shape_cache();
  return s.plans + s.evictions;
}

/// What a replica holds however its group goes: its own memory but the arenas.
size_t fixed_bytes(const replica_memory& m) {
  return m.own_device_bytes > m.arena_reserved_bytes ? m.own_device_bytes - m.arena_reserved_bytes
                                                     : 0;
}

}  // namespace

weight_residency::weight_residency(options o)
    : options_(std::move(o)), state_(options_.budget_bytes) {}

size_t weight_residency::resident_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_.resident_bytes();
}

uint64_t weight_residency::evictions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return evictions_;
}

uint64_t weight_residency::page_ins() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return page_ins_;
}

std::optional<weight_residency::group_id> weight_residency::group_of(const replica& r) const {
  auto it = groups_.find(r.weights_identity());
  if (it == groups_.end()) return std::nullopt;
  return it->second;
}

std::shared_ptr<version_metrics> weight_residency::metrics_of(const replica& r) {
  if (!options_.metrics) return nullptr;
  auto& m = version_metrics_[{r.model_name(), r.version()}];
  if (!m) m = options_.metrics->for_version(r.model_name(), r.version());
  return m;
}

void weight_residency::publish() {
  if (options_.metrics) {
    options_.metrics->set_worker_residency(options_.worker, options_.device_label,
                                           static_cast<double>(state_.resident_bytes()),
                                           static_cast<double>(state_.budget_bytes()));
    // What a new replica could get: the scaler's headroom under a budget (actors/scaler.cpp).
    if (options_.device_label != "cpu") {
      const size_t fixed = state_.fixed_bytes(), budget = state_.budget_bytes();
      options_.metrics->set_worker_budget_room(options_.worker, budget > fixed ? budget - fixed : 0);
    }
  }
  if (options_.moved) options_.moved();
}

void weight_residency::refresh(uint32_t id, tracked& t) {
  const replica_memory m = t.r->memory();
  state_.update(id, fixed_bytes(m), m.weights_footprint_bytes, m.arena_footprint_bytes);
  t.plans_seen = plans_seen(*t.r);
}

status weight_residency::admit(uint32_t id, std::shared_ptr<replica> r) {
  std::lock_guard<std::mutex> lock(mutex_);
  const replica_memory m = r->memory();
  const void* identity = r->weights_identity();
  auto [it, fresh] = groups_.try_emplace(identity, next_group_);
  if (fresh) ++next_group_;
  const group_id g = it->second;
  // Everything but the newcomer is counted; its figures are what has to fit beside them (its
  // arenas are mapped: it was just built and warmed up).
  const size_t extra = fixed_bytes(m) + m.arena_footprint_bytes +
                       (state_.has_group(g) && state_.resident(g) ? 0 : m.weights_footprint_bytes);
  auto victims = state_.victims_for(extra, g);
  if (!victims) {
    if (fresh) groups_.erase(it);
    return victims.error().with_context(
        "model '" + r->model_name() + "' version " + std::to_string(r->version()) + " needs " +
        std::to_string(extra) + " bytes on " + options_.device_label);
  }
  state_.add(id, g, fixed_bytes(m), m.weights_footprint_bytes, m.arena_footprint_bytes);
  state_.set_resident(g, r->weights_resident());
  // A group is resident or evicted as one: a newcomer joining an evicted group (its build took
  // the weights before they went) gives its arenas back too.
  if (!state_.resident(g) && r->arenas_resident()) (void)r->discard_arenas();
  state_.touch(g);
  tracked& t = replicas_[id];
  t.r = std::move(r);
  t.plans_seen = plans_seen(*t.r);
  // The newcomer's group is not among the victims (kept).
  status evicted = evict(
      *victims, "load of " + t.r->model_name() + " version " + std::to_string(t.r->version()));
  if (!evicted.is_ok()) {
    // A device error while evicting: the newcomer is not counted (its load fails).
    replicas_.erase(id);
    if (state_.remove(id)) groups_.erase(identity);
  }
  publish();
  return evicted;
}

void weight_residency::remove(uint32_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = replicas_.find(id);
  if (it == replicas_.end()) return;
  const void* identity = it->second.r->weights_identity();
  replicas_.erase(it);
  if (state_.remove(id)) groups_.erase(identity);
  publish();
}

void weight_residency::make_room(size_t bytes, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  // All or nothing: weights evicted for a load that fails anyway would be paged in again.
  auto victims = state_.victims_for(bytes);
  if (!victims) return;
  (void)evict(*victims, reason);
  publish();
}

size_t weight_residency::arena_room(size_t weights_bytes) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t taken = state_.fixed_bytes() + weights_bytes;
  return state_.budget_bytes() > taken ? state_.budget_bytes() - taken : 1;
}

size_t weight_residency::file_weights_estimate(const std::string& path,
                                               runtime::precision precision) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  if (ec) return 0;
  const bool half = precision == runtime::precision::fp16 || precision == runtime::precision::bf16;
  return half ? static_cast<size_t>(bytes / 2) : static_cast<size_t>(bytes);
}

size_t weight_residency::build_estimate(const replica* sibling, const runtime::graph* graph,
                                        runtime::precision precision, size_t replicas) {
  if (sibling) return sibling->memory().own_device_bytes * replicas;
  if (!graph) return 0;
  const bool half = precision == runtime::precision::fp16 || precision == runtime::precision::bf16;
  size_t weights = 0;
  for (const auto& v : graph->values) {
    if (!v.constant) continue;
    const size_t bytes = v.constant->bytes();
    weights += half && v.constant->type() == dtype::f32 ? bytes / 2 : bytes;
  }
  return weights;
}

status weight_residency::evict(const std::vector<group_id>& victims, const std::string& reason) {
  for (group_id g : victims) {
    const std::vector<uint32_t> members = state_.replicas_of(g);
    if (members.empty() || !state_.resident(g)) continue;
    replica& r = *replicas_.at(members.front()).r;
    const auto start = std::chrono::steady_clock::now();
    // Every replica of the group shares these weights: evicting them through one evicts them
    // for all (state_ chose an idle group: none of them runs or builds now). Each replica's
    // arenas go with them; when one cannot be discarded (a device error) the group stays
    // resident as far as the budget knows, and the error is the caller's.
    expected<size_t> released = size_t{0};
    size_t arenas_released = 0;
    for (size_t i = 0; i < members.size(); ++i) {
      auto a = replicas_.at(members[i]).r->discard_arenas();
      if (!a) {
        for (size_t k = 0; k < i; ++k) (void)replicas_.at(members[k]).r->restore_arenas();
        released = a.error();
        break;
      }
      arenas_released += *a;
    }
    if (released) released = r.evict_weights();
    if (!released) {
      log_event(log_level::error, "weights eviction failed",
                {{"model", r.model_name()},
                 {"version", r.version()},
                 {"worker", options_.worker},
                 {"device", options_.device_label},
                 {"code", to_string(released.error().code())},
                 {"error", released.error().message()}});
      return released.error();
    }
    state_.set_resident(g, false);
    ++evictions_;
    if (auto m = metrics_of(r)) m->count_weight_eviction();
    log_event(log_level::info, "weights evicted",
              {{"model", r.model_name()},
               {"version", r.version()},
               {"worker", options_.worker},
               {"device", options_.device_label},
               {"bytes", state_.evictable_bytes(g)},
               {"weights_bytes", state_.weights_bytes(g)},
               {"device_bytes_released", *released + arenas_released},
               {"duration_ms", ms_since(start)},
               {"reason", reason},
               {"resident_bytes", state_.resident_bytes()},
               {"budget_bytes", state_.budget_bytes()}});
  }
  return status::ok();
}

status weight_residency::acquire(const replica& r, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::optional<group_id> g = group_of(r);
  if (!g) return status::ok();
  if (!state_.resident(*g)) {
    const auto start = std::chrono::steady_clock::now();
    const size_t need = state_.evictable_bytes(*g);
    auto victims = state_.victims_for(need, *g);
    if (!victims)
      return victims.error().with_context("paging in the weights of model '" + r.model_name() +
                                          "' version " + std::to_string(r.version()) + " (" +
                                          std::to_string(need) + " bytes) on " +
                                          options_.device_label);
    const std::string why = "page-in of " + r.model_name() + " version " +
                            std::to_string(r.version()) + " for " + reason;
    TROUPE_RETURN_IF_ERROR(evict(*victims, why));
    const double evict_ms = ms_since(start);
    // Through any replica of the group: `r` itself is const here, and the weights are shared.
    const std::vector<uint32_t> members = state_.replicas_of(*g);
    replica& member = *replicas_.at(members.front()).r;
    auto mapped = member.page_in_weights();
    // Then every replica's arenas; on a failure the group goes back to evicted as a whole.
    for (size_t i = 0; mapped && i < members.size(); ++i) {
      auto a = replicas_.at(members[i]).r->restore_arenas();
      if (!a) {
        for (size_t k = 0; k < i; ++k) (void)replicas_.at(members[k]).r->discard_arenas();
        (void)member.evict_weights();
        mapped = a.error();
      } else {
        *mapped += *a;
      }
    }
    if (!mapped) {
      publish();
      return mapped.error().with_context("paging in the weights and arenas of model '" +
                                         r.model_name() + "' version " +
                                         std::to_string(r.version()));
    }
    state_.set_resident(*g, true);
    ++page_ins_;
    const double seconds = ms_since(start) / 1000;
    if (auto m = metrics_of(r)) m->observe_weight_page_in(seconds);
    log_event(log_level::info, "weights paged in",
              {{"model", r.model_name()},
               {"version", r.version()},
               {"worker", options_.worker},
               {"device", options_.device_label},
               {"bytes", need},
               {"device_bytes_mapped", *mapped},
               {"duration_ms", seconds * 1000},
               {"eviction_ms", evict_ms},
               {"evicted", victims->size()},
               {"reason", reason},
               {"resident_bytes", state_.resident_bytes()},
               {"budget_bytes", state_.budget_bytes()}});
    publish();
  }
  state_.pin(*g);
  state_.touch(*g);
  return status::ok();
}

void weight_residency::release(const replica& r) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::optional<group_id> g = group_of(r);
  if (!g) return;
  state_.unpin(*g);
  state_.touch(*g);
  for (auto& [id, t] : replicas_)
    if (t.r.get() == &r && plans_seen(r) != t.plans_seen) {
      refresh(id, t);
      publish();
    }
}

}  // namespace troupe::serving
