#pragma once
/// Where a new replica of a model version goes, as a pure function of what a control node knows
/// of its workers (docs/cluster.md, "Placement"). No state and no randomness: control nodes that
/// see the same workers with the same replicas choose the same worker, whatever order the workers
/// joined in, so several control nodes need no agreement protocol to place alike.
///
/// The order of preference, each a tie-break of the one before:
///   1. the replica fits: the worker's free memory (when it advertised any) holds the replica's
///      expected size (when known: a loaded replica of the version tells it);
///   2. fewest replicas of this version on the worker (each worker runs one batch at a time:
///      replicas spread over workers add throughput, stacked ones do not);
///   3. fewest replicas of this version on the worker's node (a node lost takes fewer of them);
///   4. fewest replicas of any model on the worker;
///   5. the control node's own workers (configured, `local`) before joined ones, in index order
///      (the configuration's, the same at every start);
///   6. for joined workers, the highest rendezvous score of (model, version, node, device): a
///      stable hash, so the choice among equals does not depend on the order workers joined in
///      and moves as little as possible when workers join or leave.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/status.hpp"

namespace troupe::serving {

struct placement_candidate {
  uint32_t worker = 0;  // the caller's index of the worker
  bool local = false;   // the control node's own worker (no node name: not a joined one)
  std::string node;     // the worker's node ("" for the control node's own workers)
  std::string device;   // "gpu:0", "cpu", ...
  uint32_t replicas_of_version = 0;          // replicas of the version being placed, on the worker
  uint32_t replicas_of_version_on_node = 0;  // the same, on every worker of the worker's node
  uint32_t replicas = 0;                     // replicas of every model on the worker
  /// What the worker can still hold; unknown for workers that advertise nothing (in-process).
  std::optional<uint64_t> memory_free_bytes;
};

struct placement_request {
  std::string_view model;
  int64_t version = 0;
  /// A replica's expected device memory (weights and plan arenas); 0 when not known yet.
  uint64_t replica_bytes = 0;
};

/// The chosen candidate's `worker`. out_of_memory when no candidate has room for the replica
/// (the message names the largest free memory seen); invalid_argument for no candidate at all.
expected<uint32_t> choose_worker(std::span<const placement_candidate> candidates,
                                 const placement_request& request);

/// The rendezvous (highest random weight) score of a worker for a version: a 64-bit hash that is
/// the same on every machine and in every build (FNV-1a over the fields, then a finaliser).
uint64_t rendezvous_score(std::string_view model, int64_t version, std::string_view node,
                          std::string_view device);

}  // namespace troupe::serving
