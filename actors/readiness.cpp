#include "actors/readiness.hpp"

#include "actors/model_table.hpp"

namespace troupe::actors {

node_readiness evaluate_readiness(const table_holder& holder, readiness_policy policy) {
  node_readiness r;
  if (holder.draining.load()) {
    r.reason = "draining";
    return r;
  }
  const table_ptr table = holder.get();
  if (!holder.loaded.load() || !table) {
    r.reason = "loading";
    return r;
  }
  bool any_ready = false;
  std::string first_problem;
  for (const auto& [name, model] : table->models) {
    if (!model.load_error.is_ok()) {
      if (first_problem.empty())
        first_problem = "model '" + name + "' failed to load: " + model.load_error.to_string();
      continue;
    }
    for (const auto& v : model.versions) {
      const version_state s = v.current_state();
      if (s == version_state::ready) {
        any_ready = true;
      } else if (first_problem.empty()) {
        first_problem = "model '" + name + "' version " + std::to_string(v.version) + " is " +
                        std::string(to_string(s));
        if (s == version_state::failed) first_problem += ": " + v.load_error.to_string();
      }
    }
  }
  r.ready = policy == readiness_policy::strict ? first_problem.empty() : any_ready;
  if (!r.ready) r.reason = first_problem.empty() ? "no model version is ready" : first_problem;
  return r;
}

bool model_ready(const model_table& table, std::string_view model, int64_t version) {
  const model_entry* m = table.find(model);
  if (!m) return false;
  const version_entry* v = version > 0 ? m->find(version) : m->default_version();
  return v && v->current_state() == version_state::ready;
}

}  // namespace troupe::actors
