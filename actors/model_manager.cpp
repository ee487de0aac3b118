#include "actors/model_manager.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include <prometheus/client_metric.h>
#include <prometheus/histogram.h>
#include "actors/batcher.hpp"
#include "runtime/regular_file.hpp"
#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/replica_placement.hpp"

namespace troupe::actors {

using serving::choose_worker;
using serving::device_preference;
using serving::fault_plan;
using serving::load_model_config;
using serving::log_level;
using serving::model_config;
using serving::model_control_mode;
using serving::model_entry;
using serving::model_signature;
using serving::model_table;
using serving::parse_model_config;
using serving::placement_candidate;
using serving::table_ptr;
using serving::traffic_match;
using serving::version_entry;
using serving::version_metrics;
using serving::version_state;

namespace {

namespace fs = std::filesystem;

/// A version the manager loaded (or tried to). Shared: a load's callbacks hold it while the
/// model's record may move on to another set of versions.
struct version_record {
  int64_t version = 0;
  std::string path;
  std::string fingerprint;  // model.onnx's size and mtime, and the model's configuration
  std::shared_ptr<const model_signature> signature;
  batcher_actor batcher;
  /// `batcher` as the published tables hold it: made when the batcher is spawned, shared by every
  /// snapshot of the table, reset with `batcher`.
  std::shared_ptr<const serving::batcher_ref> table_batcher;
  std::shared_ptr<std::atomic<uint8_t>> state =
      std::make_shared<std::atomic<uint8_t>>(static_cast<uint8_t>(version_state::loading));
  status error;
  std::shared_ptr<version_metrics> metrics;
  std::vector<std::pair<uint32_t, uint32_t>> replicas;  // (worker index, replica id)
  /// By worker index: replicas that worker lost when it failed and that are not back yet (their
  /// reload onto its replacement is in flight, or failed). The worker's next replacement loads
  /// them again, so a replacement that fails during its reloads does not lose them for good.
  std::map<uint32_t, uint32_t> missing;
  /// By worker index (a joined worker's), a version without `scaling:`: the replicas of its
  /// instance_count the worker had no room for when it joined; placed there once room shows
  /// (place_unplaced), forgotten when the worker is lost (its rejoin counts afresh).
  std::map<uint32_t, uint32_t> unplaced;
  // Scaling (versions of a model with a `scaling:` block; see scale_version below).
  uint32_t wanted = 0;                // the replica count asked for (at load: min_replicas, >= 1)
  std::vector<uint32_t> starting_on;  // worker index of each replica load in flight for scaling
  caf::actor_clock::time_point retry_loads_at{};  // a scaling load failed: none before this
  uint64_t replica_bytes = 0;                     // the largest pool_bytes of its replicas
  /// A control node of a cluster (manager_options::cluster_control) with no worker of the
  /// version's kind yet: it loads on the first one that joins (docs/cluster.md).
  bool awaiting_workers = false;

  version_state current() const { return static_cast<version_state>(state->load()); }
  void set(version_state s) { state->store(static_cast<uint8_t>(s), std::memory_order_release); }
};
using version_ptr = std::shared_ptr<version_record>;

struct model_record {
  std::string name;
  model_config config;
  std::string config_text;  // what `config` was parsed from ("" without config.yaml)
  status error;                       // the model as a whole (config, no versions)
  std::vector<version_ptr> versions;  // in the table, ascending
  bool unloaded = false;              // through munload: not in the table
  std::string unload_reason;
  /// Operations on this model run one at a time: the running one holds `busy`, later ones wait.
  bool busy = false;
  std::deque<std::function<void()>> waiting;
  /// Weights set at run time: replace config.traffic.weights until cleared (reloads keep them).
  std::optional<std::map<int64_t, uint32_t>> weights_override;
  std::string traffic_note;  // the last promote or rollback, and why

  /// Nothing loaded, failed or unloaded: a record only while an operation runs (a model that is
  /// not in the repository leaves none behind).
  bool placeholder() const { return versions.empty() && error.is_ok() && !unloaded; }
};

/// A version on its way out (index: DRAINING, then UNLOADING).
struct retiring_version {
  std::string model;
  version_ptr v;
};

/// What the automatic rollback saw of a version at the last check: the window is the difference.
struct version_snapshot {
  uint64_t ok = 0, failed = 0;
  std::vector<double> latency_buckets;  // cumulative counts, by upper bound
  std::vector<double> upper_bounds;
};

struct rollback_watch {
  std::map<int64_t, version_snapshot> last;  // by version
};

struct manager_state {
  manager_options options;
  std::map<std::string, rollback_watch> watches;  // models whose canaries are being judged
  std::string repository;
  std::map<std::string, model_record> models;
  std::vector<retiring_version> retiring;
  /// Every batcher alive, shared with the exit functor that stops them when the manager exits
  /// (the state may be gone by then).
  std::shared_ptr<std::vector<batcher_actor>> batchers =
      std::make_shared<std::vector<batcher_actor>>();
  bool polling = false;
  /// By worker index: bumped by every (replaced): a reload answered by an earlier replacement,
  /// failed since, is left to the current one.
  std::vector<uint64_t> worker_generation;
  /// By worker index: false once a worker of a worker node is gone (until one joins in its
  /// place); local workers are always live (the supervisor replaces them).
  std::vector<bool> worker_live;
  /// A joined worker as placement sees it: what it said when it joined (node, device, memory),
  /// and the free memory its heartbeats reported last (memory; 0 before any): other processes'
  /// use of the device shows there, not in what this control node placed.
  struct joined_place {
    joined_worker joined;
    uint64_t memory_reported_free_bytes = 0;
  };
  /// By worker index; none for the node's own workers.
  std::map<uint32_t, joined_place> joined;
  scaler_actor scaler;  // (subscribe, scaler): gets the (wake) of versions scaled to zero
  static inline const char* name = "model_manager";
};

using self_ptr = manager_actor::stateful_pointer<manager_state>;

bool is_version_dir(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n.size() < 18 &&
         std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         std::stoll(n) > 0;
}

/// The model folders of the repository, sorted.
expected<std::vector<std::string>> list_models(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return not_found("model repository '" + dir + "' is not a directory");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  if (ec) return io_error("cannot list '" + dir + "': " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

/// config.yaml's text for the fingerprint, read only after load_model_config accepted the file (a
/// regular file: a FIFO never reaches here); "" when absent or unreadable.
std::string config_text_of(const fs::path& p) {
  auto f = runtime::regular_file::open(p.string(), "'" + p.string() + "'");
  if (!f) return "";
  auto text = f->read_all(size_t{16} << 20, error_code::invalid_model);
  return text ? *text : "";
}

/// A version's fingerprint: its file's size and modification time, and the model's configuration
/// text. Equal fingerprints: a reload keeps the loaded version as it is.
std::string fingerprint_of(const std::string& path, const std::string& config_text) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
  return std::to_string(size) + "/" + std::to_string(mtime) + "/" +
         std::to_string(std::hash<std::string>{}(config_text));
}

/// Reads one model's layout into a record (no loading yet): its configuration (`override_text`
/// when not empty, else config.yaml) and its versions by the version policy.
model_record scan_model(const std::string& dir, const std::string& name,
                        const std::string& override_text) {
  model_record m;
  m.name = name;
  const fs::path md = fs::path(dir) / name;
  std::error_code ec;
  if (!fs::is_directory(md, ec)) {
    m.error = not_found("no model '" + name + "' in the repository '" + dir + "'");
    return m;
  }
  const fs::path config_path = md / "config.yaml";
  auto cfg = !override_text.empty() ? parse_model_config(override_text, name + " (load request)")
                                    : load_model_config(config_path.string());
  if (!cfg) {
    m.error = cfg.error();
    return m;
  }
  const std::string config_text =
      !override_text.empty() ? override_text
                             : (fs::exists(config_path, ec) ? config_text_of(config_path) : "");
  if (override_text.empty() && !config_text.empty()) {
    // The text read for the fingerprint is what worker processes parse (replica_spec::
    // config_text): the node takes its config from the same text, so the two cannot differ
    // should the file change between the two reads.
    cfg = parse_model_config(config_text, config_path.string());
    if (!cfg) {
      m.error = cfg.error();
      return m;
    }
  }
  m.config = *cfg;
  m.config_text = config_text;
  std::vector<int64_t> found;
  for (const auto& e : fs::directory_iterator(md, ec))
    if (e.is_directory() && is_version_dir(e.path()) && fs::exists(e.path() / "model.onnx"))
      found.push_back(std::stoll(e.path().filename().string()));
  std::sort(found.begin(), found.end());
  std::vector<int64_t> chosen;
  if (!m.config.specific_versions.empty()) {
    chosen = m.config.specific_versions;
  } else if (m.config.latest_versions > 0) {
    const size_t n = std::min<size_t>(found.size(), static_cast<size_t>(m.config.latest_versions));
    chosen.assign(found.end() - static_cast<ptrdiff_t>(n), found.end());
  } else {
    chosen = found;
  }
  std::sort(chosen.begin(), chosen.end());
  if (chosen.empty())
    m.error = not_found("model '" + m.name + "' has no <version>/model.onnx under " + md.string());
  for (int64_t v : chosen) {
    auto r = std::make_shared<version_record>();
    r->version = v;
    r->path = (md / std::to_string(v) / "model.onnx").string();
    if (std::find(found.begin(), found.end(), v) == found.end()) {
      r->error = not_found("version " + std::to_string(v) +
                           " named by version_policy has no model.onnx");
      r->set(version_state::failed);
    } else {
      r->fingerprint = fingerprint_of(r->path, config_text);
    }
    m.versions.push_back(std::move(r));
  }
  return m;
}

/// What the table says of the models: every record not unloaded.
void publish(self_ptr self) {
  auto& st = self->state;
  auto table = std::make_shared<model_table>();
  for (const auto& [name, m] : st.models) {
    if (m.unloaded) {
      table->unloaded.emplace(name, m.unload_reason);
      continue;
    }
    if (m.placeholder()) continue;
    model_entry e;
    e.name = name;
    e.traffic = m.config.traffic;
    if (m.weights_override) e.traffic.weights = *m.weights_override;
    // Node-label rules are decided here, once: one that holds on this node matches every request
    // (both names empty), one that does not is dropped.
    std::vector<traffic_match> rules;
    for (traffic_match r : e.traffic.match) {
      if (!r.node_label.empty()) {
        auto l = st.options.node_labels.find(r.node_label);
        if (l == st.options.node_labels.end() || l->second != r.value) continue;
        r.node_label.clear();
      }
      rules.push_back(std::move(r));
    }
    e.traffic.match = std::move(rules);
    e.load_error = m.error;
    for (const auto& v : m.versions) {
      version_entry ve;
      ve.version = v->version;
      ve.signature = v->signature;
      ve.batcher = v->table_batcher;
      ve.state = v->state;
      ve.load_error = v->error;
      ve.metrics = v->metrics;
      e.versions.push_back(std::move(ve));
    }
    table->models.emplace(name, std::move(e));
  }
  table_ptr snapshot = table;
  self->send(st.options.router, table_atom::value, snapshot);
  if (st.options.holder) st.options.holder->publish(snapshot);
}

worker_kind kind_of(const manager_state& st, uint32_t w) {
  return w < st.options.worker_kinds.size() ? st.options.worker_kinds[w] : worker_kind::cpu;
}

bool live(const manager_state& st, uint32_t w) {
  return w < st.options.workers.size() && (w >= st.worker_live.size() || st.worker_live[w]);
}

/// The workers that get replicas of `m`, or unavailable when the node has none of its kind.
expected<std::vector<uint32_t>> placement(const manager_state& st, const model_record& m) {
  const auto n = static_cast<uint32_t>(st.options.workers.size());
  auto of_kind = [&](worker_kind k) {
    std::vector<uint32_t> out;
    for (uint32_t w = 0; w < n; ++w)
      if (kind_of(st, w) == k && live(st, w)) out.push_back(w);
    return out;
  };
  std::vector<uint32_t> chosen;
  switch (m.config.device) {
    case device_preference::cpu:
      chosen = of_kind(worker_kind::cpu);
      break;
    case device_preference::gpu:
      chosen = of_kind(worker_kind::gpu);
      break;
    case device_preference::any:
      chosen = of_kind(worker_kind::gpu);
      if (chosen.empty()) chosen = of_kind(worker_kind::cpu);
      break;
  }
  if (chosen.empty() && st.options.cluster_control) return chosen;  // it waits for one to join
  if (chosen.empty())
    return status(error_code::unavailable,
                  "model '" + m.name + "' asks for device " +
                      std::string(device_preference_name(m.config.device)) +
                      " and this node has no worker of that kind");
  return chosen;
}

replica_spec spec_of(const manager_state& st, const model_record& m, const version_record& v) {
  replica_spec s;
  s.model = m.name;
  s.version = v.version;
  s.path = v.path;
  s.config = m.config;
  s.config_text = m.config_text;
  s.warmup_runs = st.options.warmup_runs;
  s.load_timeout = m.config.load_timeout.value_or(st.options.load_timeout);
  return s;
}

/// One JSON line per replica load (or reload onto a replacement worker) with the time the worker
/// took to load, compile and warm it up; failures at error level with their code.
void log_load(const std::string& model, int64_t version, uint32_t worker,
              std::chrono::steady_clock::time_point started, const status& result, uint32_t replica,
              bool reload) {
  const double duration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  if (result.is_ok()) {
    log_event(log_level::info, reload ? "model reloaded" : "model loaded",
              {{"model", model},
               {"version", version},
               {"code", "ok"},
               {"duration_ms", duration_ms},
               {"worker", worker},
               {"replica", replica}});
  } else {
    log_event(log_level::error, reload ? "model reload failed" : "model load failed",
              {{"model", model},
               {"version", version},
               {"code", to_string(result.code())},
               {"duration_ms", duration_ms},
               {"worker", worker},
               {"error", result.message()}});
  }
}

/// troupe_replicas{model,version}: the replicas attached to the version's batcher now.
void show_replicas(const version_record& v) {
  if (v.metrics) v.metrics->set_replicas(static_cast<double>(v.replicas.size()));
}

/// A replica arrived: the version's first one also creates its batcher.
void adopt_replica(self_ptr self, version_record& v, uint32_t worker_index,
                   const replica_info& info) {
  auto& st = self->state;
  if (!v.batcher) {
    v.signature = info.signature;
    if (st.options.metrics && !v.metrics)
      v.metrics = st.options.metrics->for_version(info.signature->model, v.version);
    batcher_options bo;
    bo.signature = info.signature;
    bo.state = v.state;
    bo.metrics = v.metrics;
    bo.max_batches_per_replica = st.options.max_batches_per_replica;
    bo.recovery_wait = st.options.recovery_wait;
    bo.faults = st.options.faults;
    bo.manager = caf::actor_cast<manager_actor>(self);
    bo.watchdog_multiple = st.options.watchdog_multiple;
    bo.watchdog_min = st.options.watchdog_min;
    v.batcher = spawn_batcher(self->system(), std::move(bo));
    v.table_batcher = std::make_shared<const serving::batcher_ref>(v.batcher);
    st.batchers->push_back(v.batcher);
  }
  v.replicas.emplace_back(worker_index, info.id);
  v.replica_bytes = std::max(v.replica_bytes, info.pool_bytes);
  show_replicas(v);
  replica_handle h;
  h.worker = st.options.workers[worker_index];
  h.worker_index = worker_index;
  h.info = info;
  self->send(v.batcher, replica_atom::value, std::move(h));
}

/// Replicas on worker `w` now, of every version (and those of `only`, when given), counting the
/// scaling loads in flight.
uint32_t replicas_on(const manager_state& st, uint32_t w, const version_record* only = nullptr) {
  uint32_t n = 0;
  auto count = [&](const version_record& v) {
    for (const auto& r : v.replicas) n += r.first == w;
    for (uint32_t s : v.starting_on) n += s == w;
  };
  if (only) {
    count(*only);
    return n;
  }
  for (const auto& [name, m] : st.models)
    for (const auto& v : m.versions) count(*v);
  return n;
}

/// What a joined worker can still hold, the smaller of two bounds: what it advertised when it
/// joined (raised when a report shows more free than that less this node's replicas there: memory
/// another process held came back) less the replicas placed on it since (each the largest pool
/// its version's replicas reported; a worker's replicas all came after its join: they leave with
/// it), and what its
/// heartbeats reported last less the loads in flight there (which the report may not show yet;
/// the report shows what other processes took). Unknown for the node's own workers.
/// The memory of this node's replicas on worker `w` (each at the largest pool of its version's
/// replicas), the loads in flight there included, and of those loads alone.
struct placed_bytes {
  uint64_t all = 0, starting = 0;
};
placed_bytes placed_on(const manager_state& st, uint32_t w) {
  placed_bytes out;
  for (const auto& [name, m] : st.models)
    for (const auto& v : m.versions) {
      out.all += uint64_t{replicas_on(st, w, v.get())} * v->replica_bytes;
      out.starting +=
          uint64_t(std::count(v->starting_on.begin(), v->starting_on.end(), w)) * v->replica_bytes;
    }
  return out;
}

std::optional<uint64_t> memory_free_on(const manager_state& st, uint32_t w) {
  auto it = st.joined.find(w);
  if (it == st.joined.end() || it->second.joined.memory_total_bytes == 0) return std::nullopt;
  const auto [placed, starting] = placed_on(st, w);
  auto less = [](uint64_t a, uint64_t b) { return a > b ? a - b : 0; };
  uint64_t free_bytes = less(it->second.joined.memory_free_bytes, placed);
  if (it->second.memory_reported_free_bytes > 0)
    free_bytes = std::min(free_bytes, less(it->second.memory_reported_free_bytes, starting));
  return free_bytes;
}

/// Where a new replica of `m`'s version `v` goes among `where` (serving/replica_placement.hpp):
/// a worker with room for it, the fewest replicas of `v` there and on its node, the fewest
/// replicas overall, then the node's own workers by index and joined ones by rendezvous hash.
/// Each worker runs one batch at a time, so replicas spread over workers add throughput and
/// replicas stacked on one do not. `extra`: replicas being placed in the same round, by worker.
expected<uint32_t> pick_worker(const manager_state& st, const model_record& m,
                               const std::vector<uint32_t>& where, const version_record& v,
                               const std::map<uint32_t, uint32_t>& extra = {}) {
  auto added_on = [&](uint32_t w) {
    const auto e = extra.find(w);
    return e == extra.end() ? 0u : e->second;
  };
  std::vector<placement_candidate> candidates;
  std::map<std::string, uint32_t> of_version_by_node;
  for (uint32_t w : where) {
    placement_candidate c;
    c.worker = w;
    auto j = st.joined.find(w);
    c.local = j == st.joined.end();
    if (!c.local) c.node = j->second.joined.node, c.device = j->second.joined.device;
    c.replicas_of_version = replicas_on(st, w, &v) + added_on(w);
    c.replicas = replicas_on(st, w) + added_on(w);
    c.memory_free_bytes = memory_free_on(st, w);
    if (c.memory_free_bytes) {
      const uint64_t placed = uint64_t{added_on(w)} * v.replica_bytes;
      *c.memory_free_bytes = *c.memory_free_bytes > placed ? *c.memory_free_bytes - placed : 0;
    }
    of_version_by_node[c.node] += c.replicas_of_version;
    candidates.push_back(std::move(c));
  }
  for (auto& c : candidates) c.replicas_of_version_on_node = of_version_by_node[c.node];
  return choose_worker(candidates, {m.name, v.version, v.replica_bytes});
}

/// The workers of the replicas a version loads first, one entry per replica: `instance_count` on
/// each worker of `where` for a model without `scaling:` (as always), else `min_replicas` (at least
/// one: the first replica gives the version its signature and batcher) spread by pick_worker; the
/// scaler decides the count from then on.
std::vector<uint32_t> first_replicas(const manager_state& st, const model_record& m,
                                     const version_record& v, const std::vector<uint32_t>& where) {
  std::vector<uint32_t> out;
  if (!m.config.scaling) {
    for (uint32_t w : where)
      for (uint32_t i = 0; i < m.config.instance_count; ++i) out.push_back(w);
    return out;
  }
  std::map<uint32_t, uint32_t> placed;
  for (uint32_t i = 0; i < std::max<uint32_t>(m.config.scaling->min_replicas, 1); ++i) {
    // A version's first replicas have no known size yet, so no worker lacks room for them: only
    // an empty `where` could fail, and it is not empty here.
    const auto picked = pick_worker(st, m, where, v, placed);
    const uint32_t w = picked ? *picked : where.front();
    ++placed[w];
    out.push_back(w);
  }
  return out;
}

/// Asks the workers for the replicas of `versions` (those without an error) and calls `done` once
/// every load has answered and the new batchers hold their replicas (so the versions' states are
/// the outcome: ready, or failed with the reason).
void load_versions(self_ptr self, const model_record& m, std::vector<version_ptr> versions,
                   std::function<void()> done) {
  auto& st = self->state;
  auto where = placement(st, m);
  std::vector<version_ptr> todo;
  for (auto& v : versions) {
    if (!v->error.is_ok()) continue;
    if (!where) {
      v->error = where.error();
      v->set(version_state::failed);
      continue;
    }
    todo.push_back(v);
  }
  // Called once every load has answered: the barrier, then `done`.
  auto finish = [self, todo, done]() {
    if (self->state.options.after_model_load) self->state.options.after_model_load();
    std::vector<batcher_actor> batchers;
    for (const auto& v : todo) {
      if (v->batcher) {
        batchers.push_back(v->batcher);
      } else if (v->awaiting_workers) {
        // Not failed: it loads when a worker of its kind joins (it stays LOADING meanwhile).
        v->error = status(error_code::unavailable,
                          "waiting for a worker of a worker node to join (docs/cluster.md)");
      } else {
        if (v->error.is_ok()) v->error = internal_error("no replica loaded");
        v->set(version_state::failed);
      }
    }
    // A version's state is set by its batcher when the replica message arrives. One stats
    // request to each batcher, answered after the replica messages sent before it (one sender:
    // mailbox order), is the barrier after which the states are the load's outcome.
    if (batchers.empty()) return done();
    auto unanswered = std::make_shared<size_t>(batchers.size());
    for (const auto& b : batchers)
      self->request(b, caf::infinite, stats_atom::value)
          .then([=](const batcher_stats&) { if (--*unanswered == 0) done(); },
                [=](caf::error&) { if (--*unanswered == 0) done(); });
  };
  std::vector<std::vector<uint32_t>> replica_workers;  // by version of `todo`: one per replica
  size_t total = 0;
  for (const auto& v : todo) {
    v->awaiting_workers = where->empty();
    replica_workers.push_back(where->empty() ? std::vector<uint32_t>{}
                                             : first_replicas(st, m, *v, *where));
    v->wanted = static_cast<uint32_t>(replica_workers.back().size());
    total += replica_workers.back().size();
  }
  if (total == 0) return finish();
  auto pending = std::make_shared<size_t>(total);
  const std::string model_name = m.name;
  for (size_t k = 0; k < todo.size(); ++k) {
    const version_ptr& v = todo[k];
    for (uint32_t w : replica_workers[k]) {
      const auto started = std::chrono::steady_clock::now();
      self->request(st.options.workers[w], caf::infinite, load_atom::value, spec_of(st, m, *v))
          .then(
              [=](replica_info& info) {
                log_load(model_name, v->version, w, started, status::ok(), info.id, false);
                adopt_replica(self, *v, w, info);
                if (--*pending == 0) finish();
              },
              [=](caf::error& err) {
                const status s = from_caf_error(self->system(), err);
                log_load(model_name, v->version, w, started, s, 0, false);
                if (v->error.is_ok() && !v->batcher) v->error = s;
                if (--*pending == 0) finish();
              });
    }
  }
}

/// Takes `v` (already out of the published table) out of service: through the router, after its
/// last job, the batcher drains; then the replicas are unloaded on their workers and the batcher
/// stops. `done` runs once it is gone.
void retire_version(self_ptr self, const std::string& model, version_ptr v,
                    std::function<void()> done) {
  auto& st = self->state;
  if (!v->batcher) {
    if (done) done();
    return;
  }
  // Not set to DRAINING here: the version's state is shared with the tables, and the router may
  // still route by the table that holds `v` (the new one is in its mailbox). The batcher marks
  // itself draining when the retire reaches it, through the router after that table switch.
  st.retiring.push_back({model, v});
  auto gone = [self, model, v, done](const status& drained) {
    auto& st = self->state;
    v->set(version_state::unloading);
    for (const auto& [w, id] : v->replicas)
      if (w < st.options.workers.size()) self->send(st.options.workers[w], unload_atom::value, id);
    v->replicas.clear();
    show_replicas(*v);
    auto& all = *st.batchers;
    all.erase(std::remove(all.begin(), all.end(), v->batcher), all.end());
    self->send_exit(v->batcher, caf::exit_reason::user_shutdown);
    v->batcher = nullptr;
    v->table_batcher = nullptr;
    st.retiring.erase(std::remove_if(st.retiring.begin(), st.retiring.end(),
                                     [&](const retiring_version& r) { return r.v == v; }),
                      st.retiring.end());
    log_event(drained.is_ok() ? log_level::info : log_level::warn, "model version unloaded",
              {{"model", model},
               {"version", v->version},
               {"code", drained.is_ok() ? "ok" : to_string(drained.code())}});
    if (done) done();
  };
  self->request(st.options.router, caf::infinite, retire_atom::value, v->batcher)
      .then([gone](bool) { gone(status::ok()); },
            [self, gone](caf::error& e) { gone(from_caf_error(self->system(), e)); });
}

/// Runs `op` when no other operation on `name` runs; `op` calls the `release` it gets when done.
void run_exclusive(self_ptr self, const std::string& name,
                   std::function<void(std::function<void()> release)> op) {
  auto& rec = self->state.models[name];
  rec.name = name;
  auto start = [self, name, op]() {
    self->state.models[name].busy = true;
    op([self, name]() {
      auto& models = self->state.models;
      auto& r = models[name];
      r.busy = false;
      if (!r.waiting.empty()) {
        auto next = std::move(r.waiting.front());
        r.waiting.pop_front();
        next();
      } else if (r.placeholder()) {
        models.erase(name);
      }
    });
  };
  if (rec.busy)
    rec.waiting.push_back(std::move(start));
  else
    start();
}

std::string join_errors(const std::vector<std::string>& errors) {
  std::string out;
  for (const auto& e : errors) out += (out.empty() ? "" : "; ") + e;
  return out;
}

void watch_canaries(self_ptr self, const std::string& name);

/// Loads or reloads `name` (see the header). `done` gets the outcome.
///
/// What a failure leaves depends on who asked. At start (and in poll mode) the repository is what
/// the node was asked to serve: a model or version that fails is listed FAILED in the table, and
/// strict readiness reports it. Through the API (`on_request`), the caller gets the error and the
/// node serves what it served before: a model that was not serving stays out of the table (the
/// index lists it UNAVAILABLE with the reason; requests are told it), a new model's failed
/// versions are left out.
void load_model(self_ptr self, const std::string& name, const std::string& override_text,
                bool on_request, std::function<void(status)> done) {
  auto& st = self->state;
  model_record cand = scan_model(st.repository, name, override_text);
  model_record& cur = st.models[name];
  cur.name = name;
  const bool serving = !cur.unloaded && !cur.versions.empty() && cur.error.is_ok() &&
                       std::any_of(cur.versions.begin(), cur.versions.end(),
                                   [](const version_ptr& v) { return v->batcher != nullptr; });
  if (!cand.error.is_ok()) {
    log_event(log_level::error, "model load failed",
              {{"model", name}, {"code", to_string(cand.error.code())},
               {"error", cand.error.message()}});
    if (!serving) {  // nothing to keep: the model is listed as failed (or gone, when absent)
      std::vector<version_ptr> old = std::move(cur.versions);
      cur.versions.clear();
      cur.config = cand.config;
      cur.config_text = cand.config_text;
      const bool absent = !fs::is_directory(fs::path(st.repository) / name);
      cur.error = absent || on_request ? status::ok() : cand.error;
      cur.unloaded = !absent && on_request;
      cur.unload_reason = "its load failed: " + cand.error.to_string();
      publish(self);
      for (auto& v : old) retire_version(self, name, v, nullptr);
    }
    return done(cand.error);
  }
  // Versions whose file and configuration did not change stay loaded as they are.
  std::vector<version_ptr> next, to_load;
  for (auto& v : cand.versions) {
    version_ptr keep;
    if (serving && v->error.is_ok())
      for (const auto& old : cur.versions)
        if (old->version == v->version && old->fingerprint == v->fingerprint && old->batcher &&
            old->current() == version_state::ready)
          keep = old;
    if (keep) {
      next.push_back(keep);
    } else {
      next.push_back(v);
      if (v->error.is_ok()) to_load.push_back(v);
    }
  }
  if (!serving && !on_request) {
    // A new model at start (or in poll mode): its versions are listed as loading meanwhile. Through
    // the API the table changes only once the load is done, so that node readiness does not.
    std::vector<version_ptr> old = std::move(cur.versions);
    cur.versions = next;
    cur.config = cand.config;
    cur.config_text = cand.config_text;
    cur.error = status::ok();
    cur.unloaded = false;
    publish(self);
    for (auto& v : old) retire_version(self, name, v, nullptr);
  }
  auto config = cand.config;
  auto config_text = cand.config_text;
  load_versions(self, cand, to_load, [self, name, next, serving, config, config_text, on_request,
                                      done]() mutable {
    auto& st = self->state;
    model_record& cur = st.models[name];
    std::vector<std::string> errors;
    for (const auto& v : next)
      if (!v->error.is_ok())
        errors.push_back(name + "/" + std::to_string(v->version) + ": " + v->error.to_string());
    if (!serving && on_request && !errors.empty()) {
      // A new model through the API: its failed versions stay out of the table.
      next.erase(std::remove_if(next.begin(), next.end(),
                                [](const version_ptr& v) { return !v->error.is_ok(); }),
                 next.end());
      if (next.empty()) {
        cur.versions.clear();
        cur.unloaded = true;
        cur.unload_reason = "its load failed: " + join_errors(errors);
        publish(self);
        return done(make_error(error_code::unavailable,
                               "model '" + name + "' failed to load: " + join_errors(errors)));
      }
    }
    if (serving && !errors.empty()) {
      // A failed reload: the versions that serve now go on; the new ones that loaded go.
      for (const auto& v : next)
        if (std::find(cur.versions.begin(), cur.versions.end(), v) == cur.versions.end())
          retire_version(self, name, v, nullptr);
      return done(make_error(error_code::unavailable,
                             "reload of model '" + name + "' failed, the loaded versions keep "
                             "serving: " + join_errors(errors)));
    }
    // One switch: the table from now on routes to `next`; the versions left behind drain.
    std::vector<version_ptr> leaving;
    for (const auto& v : cur.versions)
      if (std::find(next.begin(), next.end(), v) == next.end()) leaving.push_back(v);
    cur.versions = next;
    // With its text: replicas loaded later (onto a replaced or joining worker, or by the scaler)
    // are made from the same configuration.
    cur.config = config;
    cur.config_text = config_text;
    cur.error = status::ok();
    cur.unloaded = false;
    publish(self);
    for (auto& v : leaving) retire_version(self, name, v, nullptr);
    watch_canaries(self, name);
    done(errors.empty() ? status::ok()
                        : make_error(error_code::unavailable,
                                     "model '" + name + "' loaded with failures: " +
                                         join_errors(errors)));
  });
}

/// Unloads `name` (see the header). `done` runs once every version's replicas are released.
void unload_model(self_ptr self, const std::string& name, std::function<void(status)> done) {
  auto& st = self->state;
  auto it = st.models.find(name);
  if (it == st.models.end() || it->second.unloaded ||
      (it->second.versions.empty() && it->second.error.is_ok()))
    return done(not_found("model '" + name + "' is not loaded"));
  model_record& m = it->second;
  std::vector<version_ptr> leaving = std::move(m.versions);
  m.versions.clear();
  m.error = status::ok();
  m.unloaded = true;
  m.unload_reason = "unloaded through the model repository API";
  publish(self);
  auto left = std::make_shared<size_t>(leaving.size() + 1);
  auto one_gone = [left, done]() {
    if (--*left == 0) done(status::ok());
  };
  for (auto& v : leaving) retire_version(self, name, v, one_gone);
  one_gone();
}

/// The version's counts now, from its metrics (null: none; the node runs without metrics).
std::optional<version_snapshot> snapshot_of(const version_record& v) {
  if (!v.metrics || !v.metrics->request_latency_s) return std::nullopt;
  version_snapshot s;
  s.ok = v.metrics->stats.success_count.load();
  s.failed = v.metrics->stats.fail_count.load();
  const prometheus::ClientMetric m = v.metrics->request_latency_s->Collect();
  for (const auto& b : m.histogram.bucket) {
    s.latency_buckets.push_back(static_cast<double>(b.cumulative_count));
    s.upper_bounds.push_back(b.upper_bound);
  }
  return s;
}

/// Requests, error rate and p99 (a histogram bucket's upper bound) of the window between two
/// snapshots.
struct window_figures {
  uint64_t requests = 0;
  double error_rate = 0;
  double p99_s = 0;
};

window_figures figures_between(const version_snapshot& a, const version_snapshot& b) {
  window_figures f;
  const uint64_t ok = b.ok - a.ok, failed = b.failed - a.failed;
  f.requests = ok + failed;
  f.error_rate = f.requests ? static_cast<double>(failed) / static_cast<double>(f.requests) : 0;
  if (a.latency_buckets.size() == b.latency_buckets.size() && !b.latency_buckets.empty()) {
    const double total = b.latency_buckets.back() - a.latency_buckets.back();
    for (size_t i = 0; i < b.latency_buckets.size() && total > 0; ++i)
      if (b.latency_buckets[i] - a.latency_buckets[i] >= 0.99 * total) {
        f.p99_s = b.upper_bounds[i];
        break;
      }
  }
  return f;
}

traffic_report report_of(const model_record& m);

/// Starts judging `name`'s canaries when its rules and weights call for it (idempotent).
void watch_canaries(self_ptr self, const std::string& name) {
  auto& st = self->state;
  auto it = st.models.find(name);
  if (it == st.models.end() || !it->second.config.rollback || st.watches.count(name)) return;
  const auto weights = report_of(it->second).weights;
  size_t weighted = 0;
  for (const auto& [v, w] : weights) weighted += w > 0;
  if (weighted < 2) return;
  st.watches[name];  // empty snapshots: the first check only takes them
  self->delayed_send(self, it->second.config.rollback->window, rollchk_atom::value, name);
}

/// One window of `name`: a canary (a weighted version other than the heaviest) whose error rate
/// or p99 exceeds the stable version's by the configured ratio gets weight 0.
void check_canaries(self_ptr self, const std::string& name) {
  auto& st = self->state;
  auto it = st.models.find(name);
  auto w = st.watches.find(name);
  if (w == st.watches.end()) return;
  if (it == st.models.end() || it->second.unloaded || !it->second.config.rollback) {
    st.watches.erase(w);
    return;
  }
  model_record& m = it->second;
  const auto rule = *m.config.rollback;
  auto weights = report_of(m).weights;
  int64_t stable = 0;
  uint32_t heaviest = 0;
  for (const auto& [v, x] : weights)
    if (x > heaviest) {
      heaviest = x;
      stable = v;
    }
  std::map<int64_t, version_snapshot> now;
  for (const auto& v : m.versions)
    if (weights.count(v->version) && weights[v->version] > 0)
      if (auto s = snapshot_of(*v)) now[v->version] = std::move(*s);
  auto& last = w->second.last;
  std::optional<window_figures> base;
  if (now.count(stable) && last.count(stable)) base = figures_between(last[stable], now[stable]);
  bool changed = false;
  for (const auto& [v, snap] : now) {
    if (v == stable || !base || !last.count(v)) continue;
    const window_figures c = figures_between(last[v], snap);
    if (c.requests < rule.min_requests) continue;
    std::string why;
    if (rule.max_error_ratio > 0 && c.error_rate > 0 &&
        c.error_rate > rule.max_error_ratio * base->error_rate)
      why = "error rate " + std::to_string(c.error_rate) + " against " +
            std::to_string(base->error_rate) + " of version " + std::to_string(stable);
    else if (rule.max_p99_ratio > 0 && base->requests >= rule.min_requests && base->p99_s > 0 &&
             c.p99_s > rule.max_p99_ratio * base->p99_s)
      why = "p99 " + std::to_string(c.p99_s * 1000) + " ms against " +
            std::to_string(base->p99_s * 1000) + " ms of version " + std::to_string(stable);
    if (why.empty()) continue;
    weights[v] = 0;
    m.weights_override = weights;
    m.traffic_note = "version " + std::to_string(v) + " rolled back automatically: " + why +
                     " over " + std::to_string(rule.window.count() / 1000.0) + " s";
    log_event(log_level::warn, "traffic rolled back",
              {{"model", name}, {"version", v}, {"reason", m.traffic_note}});
    for (const auto& x : m.versions)
      if (x->version == v && x->metrics) x->metrics->count_rollback();
    changed = true;
  }
  if (changed) publish(self);
  last = std::move(now);
  size_t weighted = 0;
  for (const auto& [v, x] : report_of(m).weights) weighted += x > 0;
  if (weighted < 2) {
    st.watches.erase(name);
    return;
  }
  self->delayed_send(self, rule.window, rollchk_atom::value, name);
}

traffic_report report_of(const model_record& m) {
  traffic_report r;
  r.weights = m.weights_override ? *m.weights_override : m.config.traffic.weights;
  r.overridden = m.weights_override.has_value();
  r.note = m.traffic_note;
  return r;
}

std::string weights_text(const std::map<int64_t, uint32_t>& w) {
  std::string out;
  for (const auto& [v, x] : w) out += (out.empty() ? "" : ",") + std::to_string(v) + "=" + std::to_string(x);
  return out.empty() ? "newest ready version" : out;
}

/// Applies a traffic change to `name` (one operation at a time on the model, as loads).
expected<traffic_report> change_traffic(self_ptr self, const traffic_change& c) {
  auto& st = self->state;
  auto it = st.models.find(c.model);
  if (it == st.models.end() || it->second.unloaded || it->second.versions.empty())
    return not_found("model '" + c.model + "' is not loaded");
  model_record& m = it->second;
  auto ready = [&](int64_t v) {
    for (const auto& x : m.versions)
      if (x->version == v && x->current() == version_state::ready) return true;
    return false;
  };
  switch (c.what) {
    case traffic_change::kind::show:
      return report_of(m);
    case traffic_change::kind::set: {
      uint64_t total = 0;
      for (const auto& [v, w] : c.weights) {
        if (!ready(v))
          return invalid_argument("model '" + c.model + "' has no ready version " +
                                  std::to_string(v));
        total += w;
      }
      if (total == 0) return invalid_argument("the weights give no version any traffic");
      m.weights_override = c.weights;
      break;
    }
    case traffic_change::kind::clear:
      m.weights_override.reset();
      break;
    case traffic_change::kind::rollback: {
      auto w = report_of(m).weights;
      if (!w.count(c.version) || w[c.version] == 0)
        return invalid_argument("version " + std::to_string(c.version) + " of model '" + c.model +
                                "' gets no weighted traffic (weights: " + weights_text(w) + ")");
      w[c.version] = 0;
      uint64_t total = 0;
      for (const auto& [v, x] : w) total += ready(v) ? x : 0;
      if (total == 0)
        return invalid_argument("rolling back version " + std::to_string(c.version) +
                                " would leave no ready version with traffic");
      m.weights_override = w;
      m.traffic_note = "version " + std::to_string(c.version) + " rolled back by request";
      log_event(log_level::warn, "traffic rolled back",
                {{"model", c.model}, {"version", c.version}, {"reason", "request"}});
      break;
    }
    case traffic_change::kind::promote: {
      if (!ready(c.version))
        return invalid_argument("model '" + c.model + "' has no ready version " +
                                std::to_string(c.version) + " to promote");
      std::vector<version_ptr> leaving, kept;
      for (auto& v : m.versions) (v->version == c.version ? kept : leaving).push_back(v);
      m.versions = kept;
      m.weights_override = std::map<int64_t, uint32_t>{{c.version, 1}};
      m.traffic_note = "version " + std::to_string(c.version) + " promoted: it takes all traffic";
      publish(self);
      for (auto& v : leaving) retire_version(self, c.model, v, nullptr);
      log_event(log_level::info, "traffic promoted", {{"model", c.model}, {"version", c.version}});
      return report_of(m);
    }
  }
  publish(self);
  watch_canaries(self, c.model);
  return report_of(m);
}

model_index make_index(const manager_state& st) {
  model_index out;
  auto upper = [](std::string_view s) {
    std::string u(s);
    for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return u;
  };
  for (const auto& [name, m] : st.models) {
    if (m.unloaded)
      out.push_back({name, 0, "UNAVAILABLE", m.unload_reason});
    else if (!m.error.is_ok())
      out.push_back({name, 0, "UNAVAILABLE", m.error.to_string()});
    else if (m.placeholder() && m.busy)
      out.push_back({name, 0, "LOADING", ""});
    for (const auto& v : m.versions)
      out.push_back({name, v->version, upper(to_string(v->current())),
                     v->error.is_ok() ? std::string() : v->error.to_string()});
  }
  for (const auto& r : st.retiring)
    out.push_back({r.model, r.v->version, upper(to_string(r.v->current())), "being unloaded"});
  if (auto names = list_models(st.repository))
    for (const auto& n : *names)
      if (!st.models.count(n)) out.push_back({n, 0, "", ""});
  std::sort(out.begin(), out.end(), [](const model_index_entry& a, const model_index_entry& b) {
    return std::tie(a.name, a.version) < std::tie(b.name, b.version);
  });
  return out;
}

/// The fingerprint of what `scan_model` would load now, to compare with what is loaded.
std::string repository_fingerprint(const model_record& m) {
  std::string f = m.error.is_ok() ? "" : "error:" + m.error.to_string();
  for (const auto& v : m.versions) f += std::to_string(v->version) + "=" + v->fingerprint + ";";
  return f;
}

/// poll mode: applies what changed in the repository since the last look.
void poll_repository(self_ptr self) {
  auto& st = self->state;
  auto names = list_models(st.repository);
  if (!names) {
    log_event(log_level::error, "repository poll failed", {{"error", names.error().message()}});
    return;
  }
  for (const auto& n : *names) {
    auto it = st.models.find(n);
    if (it != st.models.end() && !it->second.unloaded &&
        repository_fingerprint(scan_model(st.repository, n, "")) ==
            repository_fingerprint(it->second))
      continue;
    run_exclusive(self, n, [self, n](std::function<void()> release) {
      load_model(self, n, "", /*on_request=*/false, [release](status) { release(); });
    });
  }
  for (auto& [name, m] : st.models) {
    if (m.unloaded || std::find(names->begin(), names->end(), name) != names->end()) continue;
    const std::string n = name;
    run_exclusive(self, n, [self, n](std::function<void()> release) {
      unload_model(self, n, [release](status) { release(); });
    });
  }
}

/// An operation's outcome to the request that asked for it, then the model's next operation.
std::function<void(status)> answer_then(caf::typed_response_promise<bool> rp,
                                        std::function<void()> release) {
  return [rp, release](status s) mutable {
    if (s.is_ok())
      rp.deliver(true);
    else
      rp.deliver(to_caf_error(s));
    release();
  };
}

/// Worker `index` failed and `fresh` replaced it: the replicas it held, and those an earlier
/// replacement failed to reload, are loaded onto `fresh` and handed to their batchers.
void reload_replicas(self_ptr self, uint32_t index, worker_actor fresh) {
  auto& st = self->state;
  if (index >= st.options.workers.size()) return;
  st.options.workers[index] = fresh;
  if (st.worker_generation.size() < st.options.workers.size())
    st.worker_generation.resize(st.options.workers.size());
  const uint64_t generation = ++st.worker_generation[index];
  for (auto& [name, m] : st.models) {
    for (auto& v : m.versions) {
      const auto lost = std::count_if(v->replicas.begin(), v->replicas.end(),
                                      [&](const auto& r) { return r.first == index; });
      v->replicas.erase(std::remove_if(v->replicas.begin(), v->replicas.end(),
                                       [&](const auto& r) { return r.first == index; }),
                        v->replicas.end());
      show_replicas(*v);
      uint32_t& missing = v->missing[index];
      missing += static_cast<uint32_t>(lost);
      for (uint32_t i = 0; i < missing; ++i) {
        const std::string model_name = name;
        const auto started = std::chrono::steady_clock::now();
        version_ptr ver = v;
        self->request(fresh, caf::infinite, load_atom::value, spec_of(st, m, *v))
            .then(
                [=](replica_info& info) {
                  auto& st = self->state;
                  if (st.worker_generation[index] != generation)
                    return;  // that worker failed since: its replacement loads the replica
                  --ver->missing[index];
                  log_load(model_name, ver->version, index, started, status::ok(), info.id, true);
                  if (ver->batcher) {
                    adopt_replica(self, *ver, index, info);
                  } else if (ver->awaiting_workers) {
                    // The first worker of its kind joined: its first replica, its batcher, and
                    // the table that routes to it.
                    ver->awaiting_workers = false;
                    ver->error = status::ok();
                    adopt_replica(self, *ver, index, info);
                    publish(self);
                  } else {  // retired meanwhile: the replica is not needed
                    self->send(st.options.workers[index], unload_atom::value, info.id);
                  }
                },
                [=](caf::error& err) {
                  // Still missing: the next replacement of this worker tries again.
                  status failed = from_caf_error(self->system(), err);
                  log_load(model_name, ver->version, index, started, failed, 0, true);
                  // A version still waiting for its first replica says why the worker that
                  // joined could not load it (it keeps waiting: another worker may).
                  if (ver->awaiting_workers && !ver->batcher) {
                    ver->error = std::move(failed);
                    publish(self);
                  }
                });
      }
    }
  }
}

// ---- workers of worker nodes (docs/cluster.md) ------------------------------------------------
//
// A control node's workers come and go: each joins as a proxy of a remote worker process
// (joined) and is watched here, not by the supervisor (nothing of it runs on this node to
// restart). A worker that joins gets instance_count replicas of every version without `scaling:`
// that its kind serves, and the first replicas of versions that waited for a worker; one that
// rejoins in the place of a lost one (same node and device) gets what that one held. A worker
// that is lost takes its replicas along: those of versions without `scaling:` come back when a
// worker takes its place; those of scaled versions are re-placed on the others by the scaler's
// next tick (they no longer count).

void lose_worker(self_ptr self, uint32_t index);
uint64_t generation_of(const manager_state& st, uint32_t w);

void join_worker(self_ptr self, uint32_t index, worker_actor w, worker_kind kind) {
  auto& st = self->state;
  if (index >= st.options.workers.size()) {
    st.options.workers.resize(index + 1);
    st.options.worker_kinds.resize(index + 1, worker_kind::cpu);
    st.worker_live.resize(index + 1, false);
  }
  // Joined in the place of one still taken for live (its loss not seen yet): that one is lost now.
  if (live(st, index) && st.options.workers[index] && st.options.workers[index] != w)
    lose_worker(self, index);
  st.options.worker_kinds[index] = kind;
  st.worker_live[index] = true;
  st.options.workers[index] = w;
  self->monitor(w);
  log_event(log_level::info, "worker joined",
            {{"worker", index}, {"kind", worker_kind_name(kind)}});
  // Versions without `scaling:` get instance_count replicas here as far as the worker's memory
  // holds them (once a replica told their size); the rest are not placed, with a warning.
  std::optional<uint64_t> room = memory_free_on(st, index);
  for (auto& [name, m] : st.models) {
    if (m.unloaded || !m.error.is_ok()) continue;
    auto where = placement(st, m);
    if (!where || std::find(where->begin(), where->end(), index) == where->end()) continue;
    for (auto& v : m.versions) {
      if (!v->batcher && !v->awaiting_workers) continue;  // failed, or not loaded
      if (!m.config.scaling) {
        uint64_t n = m.config.instance_count;
        if (room && v->replica_bytes > 0) {
          n = std::min<uint64_t>(n, *room / v->replica_bytes);
          *room -= n * v->replica_bytes;
          if (n < m.config.instance_count)
            log_event(log_level::warn, "replicas not placed",
                      {{"model", name},
                       {"version", v->version},
                       {"worker", index},
                       {"instance_count", m.config.instance_count},
                       {"placed", static_cast<int64_t>(n)},
                       {"replica_bytes", static_cast<int64_t>(v->replica_bytes)},
                       {"error", "the worker has no room for more"}});
        }
        v->missing[index] = static_cast<uint32_t>(n);
        if (n < m.config.instance_count)
          v->unplaced[index] = static_cast<uint32_t>(m.config.instance_count - n);
        else
          v->unplaced.erase(index);
      } else if (v->awaiting_workers && v->missing.empty()) {
        v->wanted = std::max<uint32_t>(m.config.scaling->min_replicas, 1);
        v->missing[index] = v->wanted;
      }
    }
  }
  reload_replicas(self, index, std::move(w));
}

void lose_worker(self_ptr self, uint32_t index) {
  auto& st = self->state;
  st.worker_live[index] = false;
  if (st.worker_generation.size() <= index) st.worker_generation.resize(index + 1);
  ++st.worker_generation[index];  // its loads in flight, if they answer, are not adopted
  uint32_t lost_replicas = 0;
  for (auto& [name, m] : st.models) {
    for (auto& v : m.versions) {
      const auto lost = std::count_if(v->replicas.begin(), v->replicas.end(),
                                      [&](const auto& r) { return r.first == index; });
      if (lost == 0) continue;
      lost_replicas += static_cast<uint32_t>(lost);
      v->replicas.erase(std::remove_if(v->replicas.begin(), v->replicas.end(),
                                       [&](const auto& r) { return r.first == index; }),
                        v->replicas.end());
      show_replicas(*v);
      if (!m.config.scaling) v->missing[index] = m.config.instance_count;
    }
    for (auto& v : m.versions) v->unplaced.erase(index);
  }
  log_event(log_level::warn, "worker lost",
            {{"worker", index}, {"replicas", static_cast<int64_t>(lost_replicas)}});
}

/// Loads one more replica of `v` on worker `w`, counted in `starting_on` (so in the worker's room)
/// until it answers: adopted when it arrives if `keep(*v)` still holds, else unloaded again (gone
/// with its worker if that failed meanwhile). A load that fails calls `failed` with whether its
/// worker is still the one asked.
void load_replica_on(self_ptr self, const model_record& m, const version_ptr& v, uint32_t w,
                     std::function<bool(const version_record&)> keep,
                     std::function<void(bool same_worker)> failed) {
  auto& st = self->state;
  v->starting_on.push_back(w);
  const uint64_t generation = generation_of(st, w);
  const auto started = std::chrono::steady_clock::now();
  const std::string model = m.name;
  auto done_starting = [v, w] {
    auto it = std::find(v->starting_on.begin(), v->starting_on.end(), w);
    if (it != v->starting_on.end()) v->starting_on.erase(it);
  };
  self->request(st.options.workers[w], caf::infinite, load_atom::value, spec_of(st, m, *v))
      .then(
          [=](replica_info& info) {
            auto& st = self->state;
            done_starting();
            log_load(model, v->version, w, started, status::ok(), info.id, false);
            if (generation_of(st, w) != generation) return;  // its worker failed: gone with it
            if (!keep(*v)) {
              self->send(st.options.workers[w], unload_atom::value, info.id);
              return;
            }
            adopt_replica(self, *v, w, info);
          },
          [=](caf::error& err) {
            done_starting();
            log_load(model, v->version, w, started, from_caf_error(self->system(), err), 0, false);
            failed(generation_of(self->state, w) == generation);
          });
}

/// Places on joined worker `w` the replicas of versions without `scaling:` it had no room for
/// when it joined, as far as its room holds them now (its heartbeats reported memory freed: this
/// node unloaded something there, or another process did). A load that fails leaves the replica
/// unplaced for the next report.
void place_unplaced(self_ptr self, uint32_t w) {
  auto& st = self->state;
  if (!live(st, w)) return;
  for (auto& [name, m] : st.models) {
    if (m.unloaded || m.config.scaling) continue;
    for (const version_ptr& v : m.versions) {
      auto it = v->unplaced.find(w);
      if (it == v->unplaced.end() || it->second == 0 || !v->batcher || v->replica_bytes == 0)
        continue;
      const std::optional<uint64_t> room = memory_free_on(st, w);
      if (!room) continue;
      const auto n =
          static_cast<uint32_t>(std::min<uint64_t>(it->second, *room / v->replica_bytes));
      it->second -= n;
      for (uint32_t i = 0; i < n; ++i)
        load_replica_on(
            self, m, v, w, [](const version_record& x) { return static_cast<bool>(x.batcher); },
            [v, w](bool same_worker) {
              if (same_worker) ++v->unplaced[w];  // for the next report
            });
    }
  }
}

// ---- scaling: the scaler's replica counts carried out (docs/scaling.md) ---------------------------
//
// A version of a model with `scaling:` has `wanted` replicas: min_replicas (at least one) at load,
// then what the scaler asks with (scale). More are loaded onto the least loaded workers of its kind
// and attached to its batcher like the first ones; fewer are detached from the batcher first (no
// new batch goes there; the running ones finish and are answered as usual) and unloaded only once
// the batcher says none runs. Detaching the last one leaves the version cold (scaled to zero: the
// batcher holds requests and wakes the scaler through (wake)). Models without `scaling:` keep
// `instance_count` per worker and are never touched here.

/// How long scaling loads of a version wait after one failed (the scaler asks every tick).
constexpr std::chrono::seconds scaling_load_retry{5};

uint64_t generation_of(const manager_state& st, uint32_t w) {
  return w < st.worker_generation.size() ? st.worker_generation[w] : 0;
}

/// Loads one more replica of `v` for the scaler; attached to the batcher when it arrives, unless
/// the version no longer wants it (scaled down meanwhile, or retired), which unloads it again.
void start_replica(self_ptr self, const model_record& m, const version_ptr& v,
                   const std::vector<uint32_t>& where) {
  auto& st = self->state;
  const auto picked = pick_worker(st, m, where, *v);
  if (!picked) {
    // No worker has room for it now: the scaler asks again, after scaling_load_retry.
    log_event(log_level::warn, "replica not placed",
              {{"model", m.name}, {"version", v->version}, {"error", picked.error().message()}});
    v->retry_loads_at = self->clock().now() + scaling_load_retry;
    return;
  }
  load_replica_on(
      self, m, v, *picked,
      [](const version_record& x) { return x.batcher && x.replicas.size() < x.wanted; },
      [self, v](bool) { v->retry_loads_at = self->clock().now() + scaling_load_retry; });
}

/// Takes one replica of `v` out of service: detached from the batcher, unloaded once its batches
/// have finished. The one on the worker with the most replicas goes (the newest there), so that
/// the others stay spread.
void detach_replica(self_ptr self, const std::string& model, const version_ptr& v) {
  auto& st = self->state;
  size_t chosen = 0;
  uint32_t most = 0;
  for (size_t i = 0; i < v->replicas.size(); ++i)
    if (const uint32_t n = replicas_on(st, v->replicas[i].first); n >= most) most = n, chosen = i;
  const auto [w, id] = v->replicas[chosen];
  v->replicas.erase(v->replicas.begin() + static_cast<ptrdiff_t>(chosen));
  show_replicas(*v);
  const uint64_t generation = generation_of(st, w);
  auto unload = [self, model, v, w, id, generation](const char* how) {
    auto& st = self->state;
    // A worker replaced meanwhile took the replica with it (and is not asked to reload it).
    if (generation_of(st, w) == generation && w < st.options.workers.size())
      self->send(st.options.workers[w], unload_atom::value, id);
    log_event(log_level::info, "replica removed",
              {{"model", model}, {"version", v->version}, {"worker", w}, {"replica", id},
               {"drained", how}});
  };
  // An error: the batcher is gone (the version retired): nothing runs there any more.
  self->request(v->batcher, caf::infinite, detach_atom::value, w, id)
      .then([unload](bool) { unload("batches finished"); },
            [unload](caf::error&) { unload("batcher gone"); });
}

/// Brings the version's replicas towards `wanted`: loads the ones missing (unless a load failed
/// within scaling_load_retry), detaches the ones beyond it. Loads in flight and replicas a failed
/// worker took (reloaded onto its replacement) count as there.
void reconcile_replicas(self_ptr self, const model_record& m, const version_ptr& v) {
  auto& st = self->state;
  uint32_t missing = 0;
  for (const auto& [w, n] : v->missing) missing += n;
  const auto attached = static_cast<uint32_t>(v->replicas.size());
  const uint32_t have = attached + static_cast<uint32_t>(v->starting_on.size()) + missing;
  if (have < v->wanted) {
    if (self->clock().now() < v->retry_loads_at) return;
    auto where = placement(st, m);
    if (!where || where->empty()) return;
    for (uint32_t i = have; i < v->wanted; ++i) start_replica(self, m, v, *where);
  } else {
    for (uint32_t i = v->wanted; i < attached; ++i) detach_replica(self, m.name, v);
  }
}

/// (scale, model, version, n): the version's replica count becomes n, within its bounds.
status scale_version(self_ptr self, const std::string& model, int64_t version, uint32_t n) {
  auto& st = self->state;
  auto it = st.models.find(model);
  if (it == st.models.end() || it->second.unloaded)
    return not_found("model '" + model + "' is not loaded");
  model_record& m = it->second;
  if (!m.config.scaling)
    return invalid_argument("model '" + model +
                            "' has no scaling: block; its replicas follow instance_count");
  version_ptr v;
  for (const auto& x : m.versions)
    if (x->version == version && x->batcher) v = x;
  if (!v)
    return not_found("model '" + model + "' has no loaded version " + std::to_string(version));
  v->wanted = std::clamp(n, m.config.scaling->min_replicas, m.config.scaling->max_replicas);
  reconcile_replicas(self, m, v);
  return status::ok();
}

/// The versions the scaler scales: those of models with `scaling:` that have a batcher.
scaled_versions list_scaled(const manager_state& st) {
  scaled_versions out;
  for (const auto& [name, m] : st.models) {
    if (m.unloaded || !m.config.scaling) continue;
    auto where = placement(st, m);
    if (!where || where->empty()) continue;
    for (const auto& v : m.versions) {
      if (!v->batcher) continue;
      scaled_version s;
      s.model = name;
      s.version = v->version;
      s.scaling = *m.config.scaling;
      s.batcher = v->batcher;
      s.metrics = v->metrics;
      s.wanted = v->wanted;
      s.ready = static_cast<uint32_t>(v->replicas.size());
      s.starting = static_cast<uint32_t>(v->starting_on.size());
      for (const auto& [w, n] : v->missing) s.starting += n;
      s.replica_bytes = v->replica_bytes;
      s.gpu = kind_of(st, where->front()) == worker_kind::gpu;
      s.workers = static_cast<uint32_t>(where->size());
      out.push_back(std::move(s));
    }
  }
  return out;
}

/// (wake) from a batcher scaled to zero that holds a request: the scaler decides at once; a node
/// without one (tests of the manager alone) brings one replica back.
void wake_version(self_ptr self, const std::string& model, int64_t version) {
  auto& st = self->state;
  if (st.scaler) {
    self->send(st.scaler, wake_atom::value, model, version);
    return;
  }
  (void)scale_version(self, model, version, 1);
}

manager_actor::behavior_type model_manager(self_ptr self, manager_options o) {
  self->state.options = std::move(o);
  self->state.worker_live.assign(self->state.options.workers.size(), true);
  // Workers of worker nodes (joined) are watched here: one that goes down is lost.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    for (uint32_t w = 0; w < st.options.workers.size(); ++w)
      if (st.options.workers[w] && st.options.workers[w].address() == dm.source && live(st, w))
        lose_worker(self, w);
  });
  // The batchers live as long as the manager (a retired one stops earlier): stopped when it exits.
  self->attach_functor([batchers = self->state.batchers](const caf::error&) {
    for (const auto& b : *batchers) caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
  });
  // The watchdog's clock (batcher.hpp says why the batchers have none of their own).
  if (self->state.options.watchdog_multiple > 0 && self->state.options.watchdog_interval.count() > 0)
    self->delayed_send(self, self->state.options.watchdog_interval, watch_atom::value);
  return {
      [=](load_atom, const std::string& dir) -> caf::result<load_report> {
        auto& st = self->state;
        st.repository = dir;
        auto names = list_models(dir);
        if (!names) return to_caf_error(names.error());
        std::vector<std::string> chosen;
        if (st.options.control_mode != model_control_mode::explicit_ ||
            std::find(st.options.load_models.begin(), st.options.load_models.end(), "*") !=
                st.options.load_models.end()) {
          chosen = *names;
        } else {
          chosen = st.options.load_models;
        }
        auto rp = self->make_response_promise<load_report>();
        auto report = std::make_shared<load_report>();
        auto left = std::make_shared<size_t>(chosen.size() + 1);
        auto one_done = [self, rp, report, left]() mutable {
          if (--*left != 0) return;
          auto& st = self->state;
          for (const auto& [name, m] : st.models) {
            if (!m.error.is_ok()) report->failures.push_back(name + ": " + m.error.to_string());
            for (const auto& v : m.versions) {
              if (v->batcher)
                ++report->versions_ready;
              else if (v->awaiting_workers)
                ++report->versions_waiting;
              else
                report->failures.push_back(name + "/" + std::to_string(v->version) + ": " +
                                           v->error.to_string());
            }
          }
          publish(self);
          if (auto* holder = st.options.holder) holder->loaded.store(true);
          if (st.options.control_mode == model_control_mode::poll && !st.polling) {
            st.polling = true;
            self->delayed_send(self, st.options.repository_poll, poll_atom::value);
          }
          rp.deliver(*report);
        };
        for (const auto& name : chosen)
          run_exclusive(self, name, [self, name, one_done](std::function<void()> release) mutable {
            load_model(self, name, "", /*on_request=*/false, [release, one_done](status) mutable {
              release();
              one_done();
            });
          });
        one_done();
        return rp;
      },
      [=](mload_atom, const std::string& name, const std::string& config) -> caf::result<bool> {
        auto& st = self->state;
        if (st.repository.empty())
          return to_caf_error(make_error(error_code::unavailable,
                                         "the node has not opened its model repository yet"));
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
          return to_caf_error(invalid_argument("'" + name + "' is not a model name"));
        auto rp = self->make_response_promise<bool>();
        run_exclusive(self, name, [self, name, config, rp](std::function<void()> release) {
          load_model(self, name, config, /*on_request=*/true, answer_then(rp, release));
        });
        return rp;
      },
      [=](munload_atom, const std::string& name) -> caf::result<bool> {
        auto rp = self->make_response_promise<bool>();
        run_exclusive(self, name, [self, name, rp](std::function<void()> release) {
          unload_model(self, name, answer_then(rp, release));
        });
        return rp;
      },
      [=](index_atom) -> model_index { return make_index(self->state); },
      [=](rollchk_atom, const std::string& name) { check_canaries(self, name); },
      [=](traffic_atom, const traffic_change& c) -> caf::result<traffic_report> {
        auto rp = self->make_response_promise<traffic_report>();
        run_exclusive(self, c.model, [self, c, rp](std::function<void()> release) mutable {
          auto r = change_traffic(self, c);
          if (r)
            rp.deliver(*r);
          else
            rp.deliver(to_caf_error(r.error()));
          release();
        });
        return rp;
      },
      [=](watch_atom) {
        auto& st = self->state;
        for (const auto& b : *st.batchers) self->send(b, watch_atom::value);
        self->delayed_send(self, st.options.watchdog_interval, watch_atom::value);
      },
      [=](poll_atom) {
        poll_repository(self);
        self->delayed_send(self, self->state.options.repository_poll, poll_atom::value);
      },
      [=](replaced_atom, uint32_t index, worker_actor fresh) {
        reload_replicas(self, index, std::move(fresh));
      },
      [=](memory_atom, uint32_t index, uint64_t free_bytes) {
        auto it = self->state.joined.find(index);
        if (it == self->state.joined.end()) return;
        it->second.memory_reported_free_bytes = free_bytes;
        // More free than what it advertised at its join less this node's replicas there: memory
        // another process held is back, and the first bound of memory_free_on rises with it.
        auto& advertised = it->second.joined.memory_free_bytes;
        advertised = std::max<uint64_t>(advertised, free_bytes + placed_on(self->state, index).all);
        place_unplaced(self, index);
      },
      [=](joined_atom, uint32_t index, worker_actor w, joined_worker& where) {
        self->state.joined[index] = {where, 0};
        join_worker(self, index, std::move(w), where.gpu ? worker_kind::gpu : worker_kind::cpu);
      },
      [=](scaled_atom) -> scaled_versions { return list_scaled(self->state); },
      [=](scale_atom, const std::string& model, int64_t version,
          uint32_t replicas) -> caf::result<bool> {
        if (status s = scale_version(self, model, version, replicas); !s.is_ok())
          return to_caf_error(s);
        return true;
      },
      [=](wake_atom, const std::string& model, int64_t version) {
        wake_version(self, model, version);
      },
      [=](subscr_atom, scaler_actor scaler) { self->state.scaler = std::move(scaler); },
  };
}

}  // namespace

manager_actor spawn_model_manager(caf::actor_system& sys, manager_options o) {
  return sys.spawn(model_manager, std::move(o));
}

}  // namespace troupe::actors
