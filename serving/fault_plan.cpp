#include "serving/fault_plan.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

namespace troupe::serving {
namespace {

constexpr std::array<std::pair<fault_kind, std::string_view>, 9> kinds = {{
    {fault_kind::fail_allocations, "fail_allocations"},
    {fault_kind::device_trap, "device_trap"},
    {fault_kind::abort, "abort"},
    {fault_kind::segfault, "segfault"},
    {fault_kind::hang, "hang"},
    {fault_kind::delay, "delay"},
    {fault_kind::drop, "drop"},
    {fault_kind::duplicate, "duplicate"},
    {fault_kind::slow_link, "slow_link"},
}};

uint32_t bit(fault_kind k) {
  return uint32_t{1} << static_cast<unsigned>(k);
}

/// The family of a site or target: what comes before ':' ("worker:2" -> "worker").
std::string_view family(std::string_view s) {
  return s.substr(0, s.find(':'));
}

/// "0.25", "nan": a probability as the user wrote it, near enough.
std::string shortest(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", v);
  return text;
}

bool is_hop(std::string_view name) {
  return std::find(std::begin(fault_hops), std::end(fault_hops), name) != std::end(fault_hops);
}

}  // namespace

std::string_view to_string(fault_kind k) {
  for (const auto& [kind, name] : kinds)
    if (kind == k) return name;
  return "unknown";
}

expected<fault_kind> parse_fault_kind(std::string_view name) {
  for (const auto& [kind, n] : kinds)
    if (n == name) return kind;
  std::string known;
  for (const auto& [kind, n] : kinds) known += (known.empty() ? "" : ", ") + std::string(n);
  return invalid_argument("unknown fault kind '" + std::string(name) + "' (kinds: " + known + ")");
}

bool is_message_fault(fault_kind k) {
  return k == fault_kind::delay || k == fault_kind::drop || k == fault_kind::duplicate ||
         k == fault_kind::slow_link;
}

bool target_matches(std::string_view target, std::string_view site) {
  if (target == site) return true;
  const std::string_view f = family(site);
  if (target == f) return true;  // a family: every site of it
  return target.size() == f.size() + 2 && target.substr(0, f.size()) == f &&
         target.substr(f.size()) == ":*";
}

status validate(const fault_rule& r) {
  // Each message starts with the field at fault (validate's contract in the header).
  const std::string kind(to_string(r.kind));
  if (r.target.empty()) return invalid_argument("target: no target given for fault " + kind);
  const std::string_view f = family(r.target);
  const std::string_view rest =
      r.target.size() > f.size() ? std::string_view(r.target).substr(f.size() + 1) : "";
  if (r.target.size() > f.size()) {
    const bool number = !rest.empty() && rest.size() <= 6 &&
                        std::all_of(rest.begin(), rest.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (rest != "*" && !number)
      return invalid_argument("target: '" + r.target +
                              "' names no worker (worker:N, worker:* or worker)");
  }
  if (is_message_fault(r.kind)) {
    if (!is_hop(f))
      return invalid_argument("target: fault " + kind +
                              " happens on a hop: target frontend_router, "
                              "batcher_worker[:N] or worker_link[:N], not '" +
                              r.target + "'");
    if (f == "frontend_router" && r.target.size() > f.size())
      return invalid_argument("target: fault " + kind + ": frontend_router has no workers to name");
    // Jobs travel to the router as intrusive lists, one party's at a time: a second copy of the
    // message cannot exist (cluster/frontend.cpp).
    if (f == "frontend_router" && r.kind == fault_kind::duplicate)
      return invalid_argument(
          "target: fault duplicate: frontend_router carries jobs that belong to one party at a "
          "time, so its messages cannot be duplicated (batcher_worker and worker_link can)");
  } else if (f != "worker") {
    return invalid_argument("target: fault " + kind +
                            " happens to a worker: target worker[:N], not '" + r.target + "'");
  }
  if (!(r.probability > 0.0 && r.probability <= 1.0))  // also refuses NaN
    return invalid_argument("probability: must be in (0, 1], got " + shortest(r.probability));
  if ((r.kind == fault_kind::delay || r.kind == fault_kind::slow_link) && r.delay.count() <= 0)
    return invalid_argument("delay_ms: fault " + kind + " needs a delay (ms) above 0");
  if (r.delay.count() < 0) return invalid_argument("delay_ms: fault " + kind + ": negative delay");
  if (r.delay > std::chrono::hours(1))
    return invalid_argument("delay_ms: fault " + kind + ": a delay above an hour");
  if (r.kind == fault_kind::fail_allocations && r.allocations == 0)
    return invalid_argument("allocations: fault fail_allocations needs at least one allocation");
  return status::ok();
}

void fault_plan::set_observer(observer o) {
  auto shared = o ? std::make_shared<const observer>(std::move(o)) : nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  observer_ = std::move(shared);
}

expected<uint64_t> fault_plan::add(fault_rule r) {
  TROUPE_RETURN_IF_ERROR(validate(r));
  std::lock_guard<std::mutex> lock(mutex_);
  entry e;
  e.state.id = next_id_++;
  e.random.seed(r.seed);
  e.state.rule = std::move(r);
  rules_.push_back(std::move(e));
  refresh_kinds();
  return rules_.back().state.id;
}

bool fault_plan::remove(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = std::find_if(rules_.begin(), rules_.end(),
                               [&](const entry& e) { return e.state.id == id; });
  if (it == rules_.end()) return false;
  rules_.erase(it);
  refresh_kinds();
  return true;
}

size_t fault_plan::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t n = rules_.size();
  rules_.clear();
  refresh_kinds();
  return n;
}

std::optional<fault_rule> fault_plan::fire(fault_kind kind, std::string_view site) {
  if (!may_fire(kind)) return std::nullopt;
  std::optional<fault_rule> fired;
  uint64_t id = 0;
  std::shared_ptr<const observer> tell;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& e : rules_) {
      fault_rule_state& s = e.state;
      if (s.rule.kind != kind || s.spent() || !target_matches(s.rule.target, site)) continue;
      ++s.chances;
      if (s.rule.probability < 1.0 &&
          std::uniform_real_distribution<double>(0.0, 1.0)(e.random) >= s.rule.probability)
        continue;
      ++s.fired;
      fired = s.rule;
      id = s.id;
      tell = observer_;
      if (s.spent()) refresh_kinds();
      break;
    }
  }
  if (fired && tell) (*tell)(*fired, id, site);
  return fired;
}

std::vector<fault_rule_state> fault_plan::list() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<fault_rule_state> out;
  for (const auto& e : rules_) out.push_back(e.state);
  return out;
}

bool fault_plan::may_fire(fault_kind kind) const {
  return (live_kinds_.load(std::memory_order_relaxed) & bit(kind)) != 0;
}

void fault_plan::refresh_kinds() {
  uint32_t live = 0;
  for (const auto& e : rules_)
    if (!e.state.spent()) live |= bit(e.state.rule.kind);
  live_kinds_.store(live, std::memory_order_relaxed);
}

}  // namespace troupe::serving
