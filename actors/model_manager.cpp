#include "actors/model_manager.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>

#include "actors/batcher.hpp"
#include "actors/log_fields.hpp"
#include "actors/metrics.hpp"
#include "actors/model_table.hpp"

namespace troupe::actors {
namespace {

namespace fs = std::filesystem;

struct version_record {
  int64_t version = 0;
  std::string path;
  std::shared_ptr<const model_signature> signature;
  batcher_actor batcher;
  std::shared_ptr<std::atomic<uint8_t>> state =
      std::make_shared<std::atomic<uint8_t>>(static_cast<uint8_t>(version_state::loading));
  status error;
  std::shared_ptr<version_metrics> metrics;
  std::vector<std::pair<uint32_t, uint32_t>> replicas;  // (worker index, replica id)
  uint32_t pending = 0;                                 // loads asked and not answered
};

struct model_record {
  std::string name;
  model_config config;
  status error;
  std::vector<version_record> versions;  // ascending
};

struct manager_state {
  manager_options options;
  std::map<std::string, model_record> models;
  static inline const char* name = "model_manager";
};

using self_ptr = manager_actor::stateful_pointer<manager_state>;

bool is_version_dir(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n.size() < 18 &&
         std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         std::stoll(n) > 0;
}

/// Reads the repository layout into records (no loading yet). Errors of one model stay with it.
status scan(const std::string& dir, std::map<std::string, model_record>& out) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return not_found("model repository '" + dir + "' is not a directory");
  std::vector<fs::path> model_dirs;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) model_dirs.push_back(e.path());
  if (ec) return io_error("cannot list '" + dir + "': " + ec.message());
  std::sort(model_dirs.begin(), model_dirs.end());
  for (const auto& md : model_dirs) {
    model_record m;
    m.name = md.filename().string();
    auto cfg = load_model_config((md / "config.yaml").string());
    if (!cfg) {
      m.error = cfg.error();
      out.emplace(m.name, std::move(m));
      continue;
    }
    m.config = *cfg;
    std::vector<int64_t> found;
    for (const auto& e : fs::directory_iterator(md, ec))
      if (e.is_directory() && is_version_dir(e.path()) && fs::exists(e.path() / "model.onnx"))
        found.push_back(std::stoll(e.path().filename().string()));
    std::sort(found.begin(), found.end());
    std::vector<int64_t> chosen;
    if (!m.config.specific_versions.empty()) {
      chosen = m.config.specific_versions;
    } else if (m.config.latest_versions > 0) {
      const size_t n =
          std::min<size_t>(found.size(), static_cast<size_t>(m.config.latest_versions));
      chosen.assign(found.end() - static_cast<ptrdiff_t>(n), found.end());
    } else {
      chosen = found;
    }
    std::sort(chosen.begin(), chosen.end());
    if (chosen.empty())
      m.error =
          not_found("model '" + m.name + "' has no <version>/model.onnx under " + md.string());
    for (int64_t v : chosen) {
      version_record r;
      r.version = v;
      r.path = (md / std::to_string(v) / "model.onnx").string();
      if (std::find(found.begin(), found.end(), v) == found.end()) {
        r.error = not_found("version " + std::to_string(v) +
                            " named by version_policy has no model.onnx");
        r.state->store(static_cast<uint8_t>(version_state::failed));
      }
      m.versions.push_back(std::move(r));
    }
    out.emplace(m.name, std::move(m));
  }
  return status::ok();
}

void publish(self_ptr self) {
  auto& st = self->state;
  auto table = std::make_shared<model_table>();
  for (const auto& [name, m] : st.models) {
    model_entry e;
    e.name = name;
    e.traffic = m.config.traffic;
    e.load_error = m.error;
    for (const auto& v : m.versions) {
      version_entry ve;
      ve.version = v.version;
      ve.signature = v.signature;
      ve.batcher = v.batcher;
      ve.state = v.state;
      ve.load_error = v.error;
      ve.metrics = v.metrics;
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

/// The workers that get replicas of `m`, or unavailable when the node has none of its kind.
expected<std::vector<uint32_t>> placement(const manager_state& st, const model_record& m) {
  const auto n = static_cast<uint32_t>(st.options.workers.size());
  auto of_kind = [&](worker_kind k) {
    std::vector<uint32_t> out;
    for (uint32_t w = 0; w < n; ++w)
      if (kind_of(st, w) == k) out.push_back(w);
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
    v.batcher = spawn_batcher(self->system(), std::move(bo));
    // The batchers live as long as the manager: it stops them when it exits (node shutdown).
    self->attach_functor([b = v.batcher](const caf::error& reason) {
      (void)reason;
      caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
    });
  }
  v.replicas.emplace_back(worker_index, info.id);
  replica_handle h;
  h.worker = st.options.workers[worker_index];
  h.worker_index = worker_index;
  h.info = info;
  self->send(v.batcher, replica_atom::value, std::move(h));
}

manager_actor::behavior_type model_manager(self_ptr self, manager_options o) {
  self->state.options = std::move(o);
  return {
      [=](load_atom, const std::string& dir) -> caf::result<load_report> {
        auto& st = self->state;
        if (status s = scan(dir, st.models); !s.is_ok()) return to_caf_error(s);
        auto rp = self->make_response_promise<load_report>();
        auto pending = std::make_shared<size_t>(0);
        // Called when every load has answered: publish and report.
        auto finish = [=]() mutable {
          auto& st = self->state;
          load_report report;
          for (auto& [name, m] : st.models) {
            if (!m.error.is_ok()) report.failures.push_back(name + ": " + m.error.to_string());
            for (auto& v : m.versions) {
              if (v.batcher) {
                ++report.versions_ready;
              } else {
                if (v.error.is_ok()) v.error = internal_error("no replica loaded");
                v.state->store(static_cast<uint8_t>(version_state::failed));
                report.failures.push_back(name + "/" + std::to_string(v.version) + ": " +
                                          v.error.to_string());
              }
            }
          }
          publish(self);
          // A version's state is set by its batcher when the replica message arrives, which may
          // be after this point. One stats request to every batcher, answered after the replica
          // messages sent before it (one sender: mailbox order), is the barrier after which the
          // table's states are the load's outcome: only then is the node `loaded` and the report
          // sent, so readiness computed from them is never a stale "loading".
          std::vector<batcher_actor> batchers;
          for (auto& [name, m] : st.models)
            for (auto& v : m.versions)
              if (v.batcher) batchers.push_back(v.batcher);
          auto deliver = [=]() mutable {
            if (auto* holder = self->state.options.holder) holder->loaded.store(true);
            rp.deliver(report);
          };
          if (batchers.empty()) {
            deliver();
            return;
          }
          auto unanswered = std::make_shared<size_t>(batchers.size());
          for (const auto& b : batchers)
            self->request(b, caf::infinite, stats_atom::value)
                .then(
                    [=](const batcher_stats&) mutable {
                      if (--*unanswered == 0) deliver();
                    },
                    [=](caf::error&) mutable {
                      if (--*unanswered == 0) deliver();
                    });
        };
        std::map<std::string, std::vector<uint32_t>> targets;  // by model
        for (auto& [name, m] : st.models) {
          auto where = placement(st, m);
          if (!where) {
            for (auto& v : m.versions)
              if (v.error.is_ok()) v.error = where.error();
            continue;
          }
          for (auto& v : m.versions)
            if (v.error.is_ok()) *pending += where->size() * m.config.instance_count;
          targets.emplace(name, std::move(*where));
        }
        if (*pending == 0) {
          finish();
          return rp;
        }
        for (auto& [name, m] : st.models) {
          for (auto& v : m.versions) {
            if (!v.error.is_ok()) continue;
            for (uint32_t w : targets[name]) {
              for (uint32_t i = 0; i < m.config.instance_count; ++i) {
                const std::string model_name = name;
                const int64_t version = v.version;
                auto find = [=]() -> version_record* {
                  auto& models = self->state.models;
                  auto it = models.find(model_name);
                  if (it == models.end()) return nullptr;
                  for (auto& r : it->second.versions)
                    if (r.version == version) return &r;
                  return nullptr;
                };
                const auto started = std::chrono::steady_clock::now();
                self->request(st.options.workers[w], caf::infinite, load_atom::value,
                              spec_of(st, m, v))
                    .then(
                        [=](replica_info& info) mutable {
                          if (version_record* r = find()) {
                            log_load(model_name, version, w, started, status::ok(), info.id, false);
                            adopt_replica(self, *r, w, info);
                          }
                          if (--*pending == 0) finish();
                        },
                        [=](caf::error& err) mutable {
                          if (version_record* r = find()) {
                            const status s = from_caf_error(self->system(), err);
                            log_load(model_name, version, w, started, s, 0, false);
                            if (r->error.is_ok() && !r->batcher) r->error = s;
                          }
                          if (--*pending == 0) finish();
                        });
              }
            }
          }
        }
        return rp;
      },
      [=](replaced_atom, uint32_t index, worker_actor fresh) {
        auto& st = self->state;
        if (index >= st.options.workers.size()) return;
        st.options.workers[index] = fresh;
        for (auto& [name, m] : st.models) {
          for (auto& v : m.versions) {
            const auto lost = std::count_if(v.replicas.begin(), v.replicas.end(),
                                            [&](const auto& r) { return r.first == index; });
            v.replicas.erase(std::remove_if(v.replicas.begin(), v.replicas.end(),
                                            [&](const auto& r) { return r.first == index; }),
                             v.replicas.end());
            for (long i = 0; i < lost; ++i) {
              const std::string model_name = name;
              const int64_t version = v.version;
              const auto started = std::chrono::steady_clock::now();
              self->request(fresh, caf::infinite, load_atom::value, spec_of(st, m, v))
                  .then(
                      [=](replica_info& info) {
                        auto& models = self->state.models;
                        auto it = models.find(model_name);
                        if (it == models.end()) return;
                        for (auto& r : it->second.versions)
                          if (r.version == version && r.batcher) {
                            log_load(model_name, version, index, started, status::ok(), info.id,
                                     true);
                            adopt_replica(self, r, index, info);
                          }
                      },
                      [=](caf::error& err) {
                        log_load(model_name, version, index, started,
                                 from_caf_error(self->system(), err), 0, true);
                      });
            }
          }
        }
      },
  };
}

}  // namespace

manager_actor spawn_model_manager(caf::actor_system& sys, manager_options o) {
  return sys.spawn(model_manager, std::move(o));
}

}  // namespace troupe::actors
