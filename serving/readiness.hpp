#pragma once
/// Node readiness: one answer for every front door (ZeroMQ health, KServe /v2/health/ready and
/// ServerReady, the model-ready calls). CAF-free: it reads the table_holder (the published routing
/// table and the node's loaded/draining flags) and nothing else, from any thread.
///
/// A node is never ready before its first repository load completes, nor while it drains. Then:
/// - strict (the default; Triton's strict readiness): every model and version the repository
///   asked for is READY. A model whose config.yaml failed, a version that failed to load, or a
///   version without a healthy replica (UNAVAILABLE) makes the node not ready. An empty repository
///   asks for nothing: ready.
/// - any: at least one version of some model is READY.

#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::serving {

class table_holder;
class model_table;

/// node.yaml `readiness: strict|any` (default strict).
enum class readiness_policy : uint8_t { strict, any };
std::string_view readiness_policy_name(readiness_policy p);

struct node_readiness {
  bool live = true;
  bool ready = false;
  /// Empty when ready; else why not: "loading", "draining", or the versions that are not ready,
  /// e.g. "model 'x' version 1 failed to load: unsupported: ...", joined by "; ".
  std::string reason;
};

node_readiness evaluate_readiness(const table_holder& holder, readiness_policy policy);

/// A model (version 0 = its default version) is ready to take requests.
bool model_ready(const model_table& table, std::string_view model, int64_t version);

}  // namespace troupe::serving
