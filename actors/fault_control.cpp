#include "actors/fault_control.hpp"

#include <string>
#include <utility>

#include "serving/log_fields.hpp"

namespace troupe::actors {

using serving::fault_plan;
using serving::fault_rule;
using serving::fault_rule_state;
using serving::log_level;

fault_control::fault_control(std::shared_ptr<fault_plan> plan) : plan_(std::move(plan)) {}

status fault_control::check_enabled() const {
  if (plan_) return status::ok();
  return unsupported(
      "fault injection is off: start the node with fault_injection: true (node.yaml; tests only)");
}

expected<uint64_t> fault_control::inject(fault_rule r) const {
  if (!plan_) return check_enabled();
  const std::string kind(to_string(r.kind));
  const std::string target = r.target;
  const uint32_t times = r.times;
  TROUPE_ASSIGN_OR_RETURN(const uint64_t id, plan_->add(std::move(r)));
  log_event(log_level::warn, "fault rule injected",
            {{"rule", id}, {"kind", kind}, {"target", target}, {"times", times}});
  return id;
}

expected<std::vector<fault_rule_state>> fault_control::list() const {
  if (!plan_) return check_enabled();
  return plan_->list();
}

status fault_control::remove(uint64_t id) const {
  if (!plan_) return check_enabled();
  if (!plan_->remove(id)) return not_found("no fault rule " + std::to_string(id));
  log_event(log_level::warn, "fault rule removed", {{"rule", id}});
  return status::ok();
}

expected<size_t> fault_control::clear() const {
  if (!plan_) return check_enabled();
  const size_t n = plan_->clear();
  log_event(log_level::warn, "fault rules cleared", {{"rules", n}});
  return n;
}

}  // namespace troupe::actors
