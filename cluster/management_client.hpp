#pragma once
/// A client of the node's management socket (cluster/management_socket.hpp): `troupe models` and
/// `troupe faults`. One request at a time; not thread-safe.

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "serving/fault_plan.hpp"

namespace troupe::cluster {

struct model_index_line {
  std::string name;
  int64_t version = 0;  // 0: the model as a whole
  std::string state;
  std::string reason;
};

enum class traffic_op { show, set, clear, promote, rollback };

struct traffic_state {
  std::map<int64_t, uint32_t> weights;  // empty: the newest ready version serves
  bool overridden = false;
  std::string note;
};

class management_client {
 public:
  /// `token` is sent with every request ("" where the node needs none).
  static expected<std::unique_ptr<management_client>> connect(const std::string& endpoint,
                                                               std::string token);
  ~management_client();

  expected<std::vector<model_index_line>> index(bool ready_only, std::chrono::milliseconds timeout);
  /// Answers once the model is loaded and warmed up (or failed): give loads a generous timeout.
  status load(const std::string& name, const std::string& config,
              std::chrono::milliseconds timeout);
  status unload(const std::string& name, std::chrono::milliseconds timeout);
  /// `set` takes `weights`; `promote` and `rollback` take `version`.
  expected<traffic_state> traffic(const std::string& name, traffic_op op, int64_t version,
                                  const std::map<int64_t, uint32_t>& weights,
                                  std::chrono::milliseconds timeout);

  /// Fault injection (docs/faults.md); a node without it answers unsupported.
  /// Adds `rule` to the node's fault plan; the new rule's id.
  expected<uint64_t> inject_fault(const serving::fault_rule& rule,
                                  std::chrono::milliseconds timeout);
  expected<std::vector<serving::fault_rule_state>> list_faults(std::chrono::milliseconds timeout);
  /// not_found when the node has no rule `id`.
  status remove_fault(uint64_t id, std::chrono::milliseconds timeout);
  /// How many rules there were.
  expected<uint64_t> clear_faults(std::chrono::milliseconds timeout);

  class impl;

 private:
  explicit management_client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
