#include "runtime/plan_cache.hpp"

#include "runtime/plan.hpp"

namespace troupe::runtime {

std::shared_ptr<plan> plan_cache::find(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  entries_.splice(entries_.begin(), entries_, it->second);
  return it->second->compiled;
}

std::shared_ptr<plan> plan_cache::insert(std::string key, std::unique_ptr<plan> p) {
  const size_t bytes = p->memory().planned_arena_bytes;
  make_room(1, bytes);  // the plans evicted here are freed before the new one is counted
  entries_.push_front(entry{key, std::shared_ptr<plan>(std::move(p)), bytes});
  index_[std::move(key)] = entries_.begin();
  bytes_ += bytes;
  return entries_.front().compiled;
}

void plan_cache::make_room(size_t plans, size_t bytes) {
  auto over = [&] {
    return entries_.size() + plans > limits_.max_plans || bytes_ + bytes > limits_.max_bytes;
  };
  // From the least recently used end; one pass, as evicting a plan puts none back in use.
  for (auto it = entries_.end(); over() && it != entries_.begin();) {
    --it;
    if (it->compiled.use_count() > 1) continue;  // a lease is out: in use
    bytes_ -= it->bytes;
    index_.erase(it->key);
    it = entries_.erase(it);  // frees the plan: no lease is out
    ++evictions_;
  }
}

void plan_cache::for_each(const std::function<void(const plan&)>& visit) const {
  for (const entry& e : entries_) visit(*e.compiled);
}

}  // namespace troupe::runtime
