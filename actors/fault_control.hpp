#pragma once
/// What the management socket calls to change the node's fault plan at run time
/// (docs/faults.md): inject a rule, list, remove, clear. CAF-free and synchronous: the plan is a
/// short locked list (serving/fault_plan.hpp), so a call returns its answer at once.
///
/// A node without `fault_injection: true` has no plan: every call answers unsupported, saying how
/// to turn fault injection on (a refusal like model_control's for a control mode that forbids a
/// load). Each change is logged as a warning: faults are never a quiet thing on a node.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.hpp"
#include "serving/fault_plan.hpp"

namespace troupe::actors {

class fault_control {
 public:
  /// `plan`: the node's (shared with the fault sites); null when fault injection is off.
  explicit fault_control(std::shared_ptr<serving::fault_plan> plan);

  bool enabled() const { return plan_ != nullptr; }
  /// ok, or the unsupported error every call answers when fault injection is off.
  status check_enabled() const;

  /// Adds a rule; its id. invalid_argument from validate() (the message starts with the field).
  expected<uint64_t> inject(serving::fault_rule r) const;
  /// Every rule, in the order they were added, with what each has done.
  expected<std::vector<serving::fault_rule_state>> list() const;
  /// not_found when no rule has this id (never was, or removed or cleared).
  status remove(uint64_t id) const;
  /// Removes every rule; how many there were.
  expected<size_t> clear() const;

 private:
  std::shared_ptr<serving::fault_plan> plan_;
};

}  // namespace troupe::actors
