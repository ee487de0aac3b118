#pragma once
/// Whether the node and its models can take requests: one answer for every front door (the
/// ZeroMQ health request, KServe's /v2/health/ready and ServerReady, Kubernetes probes).

#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::actors {

class table_holder;
class model_table;

/// node.yaml `readiness`: strict (every model version asked for is ready, Triton's rule) or any
/// (at least one version is ready).
enum class readiness_policy : uint8_t { strict, any };

struct node_readiness {
  bool live = true;
  bool ready = false;
  std::string reason;  // empty when ready; else why not ("loading", "draining", the failed model)
};

node_readiness evaluate_readiness(const table_holder& holder, readiness_policy policy);

/// A model (version 0: its default version) is ready to take requests.
bool model_ready(const model_table& table, std::string_view model, int64_t version);

}  // namespace troupe::actors
