// A worker's memory budget: what it counts and which idle weights go first (see the header).
#include "serving/replica_residency.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace troupe::serving {
namespace {

std::string mib(size_t bytes) {
  char out[32];
  std::snprintf(out, sizeof(out), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return out;
}

}  // namespace

void replica_residency::add(uint32_t replica, group_id g, size_t fixed_bytes, size_t weights_bytes,
                            size_t arena_bytes) {
  remove(replica);
  auto [it, fresh] = groups_.try_emplace(g);
  group& gr = it->second;
  if (fresh) gr.last_use = ++tick_;
  gr.weights_bytes = weights_bytes;
  ++gr.replicas;
  replicas_[replica] = member{g, fixed_bytes, arena_bytes};
}

bool replica_residency::remove(uint32_t replica) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end()) return false;
  const group_id g = it->second.group;
  replicas_.erase(it);
  auto gi = groups_.find(g);
  if (gi == groups_.end() || --gi->second.replicas > 0) return false;
  groups_.erase(gi);
  return true;
}

void replica_residency::update(uint32_t replica, size_t fixed_bytes, size_t weights_bytes,
                               size_t arena_bytes) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end()) return;
  it->second.fixed_bytes = fixed_bytes;
  it->second.arena_bytes = arena_bytes;
  groups_[it->second.group].weights_bytes = weights_bytes;
}

std::optional<replica_residency::group_id> replica_residency::group_of(uint32_t replica) const {
  auto it = replicas_.find(replica);
  if (it == replicas_.end()) return std::nullopt;
  return it->second.group;
}

std::vector<uint32_t> replica_residency::replicas_of(group_id g) const {
  std::vector<uint32_t> out;
  for (const auto& [id, m] : replicas_)
    if (m.group == g) out.push_back(id);
  return out;
}

bool replica_residency::resident(group_id g) const {
  auto it = groups_.find(g);
  return it != groups_.end() && it->second.resident;
}

void replica_residency::set_resident(group_id g, bool resident) {
  if (auto it = groups_.find(g); it != groups_.end()) it->second.resident = resident;
}

size_t replica_residency::weights_bytes(group_id g) const {
  auto it = groups_.find(g);
  return it == groups_.end() ? 0 : it->second.weights_bytes;
}

size_t replica_residency::evictable_bytes(group_id g) const {
  auto it = groups_.find(g);
  if (it == groups_.end()) return 0;
  size_t bytes = it->second.weights_bytes;
  for (const auto& [id, m] : replicas_)
    if (m.group == g) bytes += m.arena_bytes;
  return bytes;
}

void replica_residency::touch(group_id g) {
  if (auto it = groups_.find(g); it != groups_.end()) it->second.last_use = ++tick_;
}

void replica_residency::pin(group_id g) {
  if (auto it = groups_.find(g); it != groups_.end()) ++it->second.pins;
}

void replica_residency::unpin(group_id g) {
  if (auto it = groups_.find(g); it != groups_.end() && it->second.pins > 0) --it->second.pins;
}

bool replica_residency::pinned(group_id g) const {
  auto it = groups_.find(g);
  return it != groups_.end() && it->second.pins > 0;
}

size_t replica_residency::resident_bytes() const {
  size_t total = 0;
  for (const auto& [id, m] : replicas_) {
    total += m.fixed_bytes;
    auto g = groups_.find(m.group);
    if (g != groups_.end() && g->second.resident) total += m.arena_bytes;
  }
  for (const auto& [g, gr] : groups_)
    if (gr.resident) total += gr.weights_bytes;
  return total;
}

size_t replica_residency::fixed_bytes() const {
  size_t total = 0;
  for (const auto& [id, m] : replicas_) total += m.fixed_bytes;
  return total;
}

bool replica_residency::fits(size_t extra_bytes) const {
  return budget_ == 0 || resident_bytes() + extra_bytes <= budget_;
}

expected<std::vector<replica_residency::group_id>> replica_residency::victims_for(
    size_t extra_bytes, std::optional<group_id> keep) const {
  std::vector<group_id> victims;
  if (budget_ == 0) return victims;
  size_t counted = resident_bytes() + extra_bytes;
  if (counted <= budget_) return victims;
  std::vector<std::pair<uint64_t, group_id>> candidates;  // (last use, group): oldest first
  for (const auto& [g, gr] : groups_)
    if (gr.resident && gr.pins == 0 && (!keep || *keep != g) && evictable_bytes(g) > 0)
      candidates.emplace_back(gr.last_use, g);
  std::sort(candidates.begin(), candidates.end());
  for (const auto& [use, g] : candidates) {
    victims.push_back(g);
    counted -= evictable_bytes(g);
    if (counted <= budget_) return victims;
  }
  return status(error_code::out_of_memory,
                "the worker's memory budget of " + mib(budget_) +
                    " cannot hold it: " + mib(counted) +
                    " would stay resident after evicting every idle model's weights and arenas "
                    "(what stays: the models in use, and every replica's kernel-owned memory)");
}

}  // namespace troupe::serving
