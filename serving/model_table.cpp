#include "serving/model_table.hpp"

namespace troupe::serving {

std::string_view to_string(version_state s) {
  switch (s) {
    case version_state::loading:
      return "loading";
    case version_state::ready:
      return "ready";
    case version_state::unavailable:
      return "unavailable";
    case version_state::failed:
      return "failed";
    case version_state::draining:
      return "draining";
    case version_state::unloading:
      return "unloading";
  }
  return "unknown";
}

const version_entry* model_entry::find(int64_t version) const {
  for (const auto& v : versions)
    if (v.version == version) return &v;
  return nullptr;
}

const version_entry* model_entry::default_version() const {
  const version_entry* loaded = nullptr;
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (it->current_state() == version_state::ready) return &*it;
    if (!loaded && it->signature) loaded = &*it;
  }
  return loaded;
}

const model_entry* model_table::find(std::string_view name) const {
  auto it = models.find(name);
  return it == models.end() ? nullptr : &it->second;
}

status model_table::unknown_model(std::string_view name) const {
  if (auto it = unloaded.find(name); it != unloaded.end())
    return not_found("model '" + std::string(name) + "' is not loaded: " + it->second);
  return not_found("no model '" + std::string(name) + "'");
}

namespace {

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

expected<const version_entry*> usable(const model_entry& m, const version_entry* v) {
  switch (v->current_state()) {
    case version_state::ready:
      return v;
    case version_state::failed:
      return make_error(error_code::unavailable,
                        "model '" + m.name + "' version " + std::to_string(v->version) +
                            " failed to load: " + v->load_error.to_string());
    case version_state::loading:
      return make_error(
          error_code::unavailable,
          "model '" + m.name + "' version " + std::to_string(v->version) + " is still loading");
    case version_state::unavailable:
      return make_error(error_code::unavailable, "model '" + m.name + "' version " +
                                                     std::to_string(v->version) +
                                                     " has no healthy replica (a worker failed)");
    case version_state::draining:
    case version_state::unloading:
      return make_error(error_code::unavailable, "model '" + m.name + "' version " +
                                                     std::to_string(v->version) +
                                                     " is being unloaded");
  }
  return internal_error("unknown version state");
}

}  // namespace

expected<const version_entry*> model_table::route(
    const model_entry& m, int64_t requested_version, std::string_view routing_key,
    const std::vector<std::pair<std::string_view, std::string_view>>& parameters,
    uint64_t& counter) {
  if (!m.load_error.is_ok())
    return make_error(error_code::unavailable,
                      "model '" + m.name + "' failed to load: " + m.load_error.to_string());
  if (requested_version > 0) {
    const version_entry* v = m.find(requested_version);
    if (!v) {
      std::string known;
      for (const auto& x : m.versions)
        known += (known.empty() ? "" : ", ") + std::to_string(x.version);
      return not_found("model '" + m.name + "' has no version " +
                       std::to_string(requested_version) + " (versions: " + known + ")");
    }
    return usable(m, v);
  }
  for (const auto& rule : m.traffic.match) {
    if (rule.parameter.empty()) {  // a node-label rule that holds on this node (model_manager)
      if (const version_entry* v = m.find(rule.version)) return usable(m, v);
      continue;
    }
    for (const auto& [name, value] : parameters)
      if (name == rule.parameter && value == rule.value)
        if (const version_entry* v = m.find(rule.version)) return usable(m, v);
  }
  if (!m.traffic.weights.empty()) {
    uint64_t total = 0;
    for (const auto& [version, weight] : m.traffic.weights)
      if (const version_entry* v = m.find(version); v && v->current_state() == version_state::ready)
        total += weight;
    if (total > 0) {
      uint64_t pick = (routing_key.empty() ? counter++ : fnv1a(routing_key)) % total;
      for (const auto& [version, weight] : m.traffic.weights) {
        const version_entry* v = m.find(version);
        if (!v || v->current_state() != version_state::ready) continue;
        if (pick < weight) return v;
        pick -= weight;
      }
    }
  }
  const version_entry* v = m.default_version();
  if (!v)
    return make_error(error_code::unavailable, "model '" + m.name + "' has no loaded version");
  return usable(m, v);
}

}  // namespace troupe::serving
