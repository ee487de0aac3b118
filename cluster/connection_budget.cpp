#include "cluster/connection_budget.hpp"

#include <algorithm>

namespace troupe::cluster {

namespace {
constexpr size_t min_sweep_at = 64;
}

connection_budget::connection_budget(uint32_t max_outstanding)
    : max_outstanding_(std::max<uint32_t>(max_outstanding, 1)), sweep_at_(min_sweep_at) {}

connection_budget::arrival connection_budget::arrive(std::string_view routing_id) {
  if (connections_.size() >= sweep_at_) sweep();
  auto it = connections_.find(routing_id);
  if (it == connections_.end())
    it = connections_.emplace(std::string(routing_id), std::make_unique<connection>()).first;
  connection* c = it->second.get();
  // Only this thread adds, so `before` is exact; other threads may only have lowered it since.
  const uint32_t before = c->outstanding_.fetch_add(1, std::memory_order_relaxed);
  return {c, before < max_outstanding_};
}

void connection_budget::sweep() {
  // A count of zero seen here stays zero (only this thread adds) and its last reply_left has
  // finished with the connection (acquire pairs with its release): it can go.
  std::erase_if(connections_, [](const auto& kv) { return kv.second->outstanding() == 0; });
  // Amortised: the next sweep waits until the map has doubled since this one.
  sweep_at_ = std::max(min_sweep_at, 2 * connections_.size());
}

}  // namespace troupe::cluster
