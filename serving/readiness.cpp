#include "serving/readiness.hpp"

#include <vector>

#include "serving/model_table.hpp"

namespace troupe::serving {
namespace {

/// Problems beyond this many are counted, not listed: the reason stays one readable line.
constexpr size_t max_listed_problems = 8;

std::string version_problem(const model_entry& m, const version_entry& v) {
  const std::string what = "model '" + m.name + "' version " + std::to_string(v.version);
  switch (v.current_state()) {
    case version_state::ready:
      return {};
    case version_state::loading:
      return what + " is loading";
    case version_state::unavailable:
      return what + " has no healthy replica";
    case version_state::failed:
      return what + " failed to load: " + v.load_error.to_string();
    case version_state::draining:
    case version_state::unloading:
      return {};  // on its way out (not in a published table): not a problem of the node
  }
  return what + " is in an unknown state";
}

std::string join(const std::vector<std::string>& problems) {
  std::string out;
  for (size_t i = 0; i < problems.size() && i < max_listed_problems; ++i)
    out += (i ? "; " : "") + problems[i];
  if (problems.size() > max_listed_problems)
    out += "; and " + std::to_string(problems.size() - max_listed_problems) + " more";
  return out;
}

}  // namespace

std::string_view readiness_policy_name(readiness_policy p) {
  switch (p) {
    case readiness_policy::strict:
      return "strict";
    case readiness_policy::any:
      return "any";
  }
  return "?";
}

node_readiness evaluate_readiness(const table_holder& holder, readiness_policy policy) {
  node_readiness r;
  if (holder.draining.load(std::memory_order_acquire)) {
    r.reason = "draining";
    return r;
  }
  const table_ptr table = holder.loaded.load(std::memory_order_acquire) ? holder.get() : nullptr;
  if (!table) {
    r.reason = "loading";
    return r;
  }
  std::vector<std::string> problems;
  size_t ready_versions = 0;
  for (const auto& [name, m] : table->models) {
    if (!m.load_error.is_ok()) {
      problems.push_back("model '" + name + "' failed to load: " + m.load_error.to_string());
      continue;
    }
    for (const auto& v : m.versions) {
      std::string p = version_problem(m, v);
      if (p.empty())
        ++ready_versions;
      else
        problems.push_back(std::move(p));
    }
  }
  switch (policy) {
    case readiness_policy::strict:
      r.ready = problems.empty();
      r.reason = join(problems);
      break;
    case readiness_policy::any:
      r.ready = ready_versions > 0;
      if (!r.ready)
        r.reason = problems.empty() ? "no model version is ready: the repository is empty"
                                    : "no model version is ready: " + join(problems);
      break;
  }
  return r;
}

bool model_ready(const model_table& table, std::string_view model, int64_t version) {
  const model_entry* m = table.find(model);
  if (!m || !m->load_error.is_ok()) return false;
  const version_entry* v = version > 0 ? m->find(version) : m->default_version();
  return v && v->current_state() == version_state::ready;
}

}  // namespace troupe::serving
