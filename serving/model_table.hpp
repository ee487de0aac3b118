#pragma once
/// The routing table: every served model, its versions, their signatures, batchers and state.
/// model_manager builds a new immutable snapshot on every change and publishes it (to the router as
/// a message, to the frontend through `table_holder`): readers never lock a table, they hold a
/// snapshot. A version's *state* changes without a new snapshot (an atomic the batcher sets when
/// its replicas fail or return), so readiness follows the request path at once.

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"
#include "serving/signature.hpp"

namespace troupe::serving {

struct version_metrics;  // metrics.hpp
/// A version's batcher (an actor): opaque here, so that the table needs no CAF. actors/batcher.hpp
/// defines it; the router and model_manager are the ones that look inside.
class batcher_ref;

/// Numbers match proto ModelState. draining and unloading are states of a version on its way out
/// (model_manager's records and index): a published table holds only loading, ready, unavailable
/// and failed versions.
///
///   loading -> ready | failed;  ready <-> unavailable (a worker failed, its replacement loaded);
///   ready | unavailable -> draining (out of the table, queued and running requests finish)
///         -> unloading (replicas released on their workers) -> gone
enum class version_state : uint8_t {
  loading = 1,
  ready = 2,
  unavailable = 3,
  failed = 4,
  draining = 5,
  unloading = 6
};
std::string_view to_string(version_state s);

struct version_entry {
  int64_t version = 0;
  std::shared_ptr<const model_signature> signature;  // null when the version failed to load
  std::shared_ptr<const batcher_ref> batcher;        // null when failed
  std::shared_ptr<std::atomic<uint8_t>> state;       // version_state, set by the batcher
  status load_error;                                 // why it failed
  std::shared_ptr<version_metrics> metrics;

  version_state current_state() const {
    return state ? static_cast<version_state>(state->load(std::memory_order_acquire))
                 : version_state::failed;
  }
};

struct model_entry {
  std::string name;
  std::vector<version_entry> versions;  // ascending
  traffic_policy traffic;
  status load_error;  // the model as a whole failed (e.g. a bad config.yaml)

  const version_entry* find(int64_t version) const;
  /// The newest ready version, else the newest loaded one (requests then get UNAVAILABLE).
  const version_entry* default_version() const;
};

class model_table;
using table_ptr = std::shared_ptr<const model_table>;

class model_table {
 public:
  std::map<std::string, model_entry, std::less<>> models;
  /// Models unloaded through the repository API (not in `models`): a request naming one is told
  /// so (not_found with this reason) instead of "no model".
  std::map<std::string, std::string, std::less<>> unloaded;

  const model_entry* find(std::string_view name) const;
  /// The error for a request naming a model not in `models`: not_found, saying why when the model
  /// was unloaded.
  status unknown_model(std::string_view name) const;

  /// The traffic policy: explicit version, then match rules on request parameters, then weights
  /// (hash of `routing_key` when given, else a round robin on `counter`), then the newest ready
  /// version. NOT_FOUND for an unknown version, UNAVAILABLE when the chosen version is not ready.
  static expected<const version_entry*> route(
      const model_entry& m, int64_t requested_version, std::string_view routing_key,
      const std::vector<std::pair<std::string_view, std::string_view>>& parameters,
      uint64_t& counter);
};

/// Where the frontend (another thread) finds the newest table, and the node-wide flags.
class table_holder {
 public:
  void publish(table_ptr t) {
    std::lock_guard<std::mutex> lock(mutex_);
    table_ = std::move(t);
    generation_.fetch_add(1, std::memory_order_release);
  }
  table_ptr get() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return table_;
  }
  /// Changes whenever a new table is published: readers re-`get` only then.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  std::atomic<bool> loaded{false};    // the repository has been loaded once
  std::atomic<bool> draining{false};  // SIGTERM: no new work

 private:
  mutable std::mutex mutex_;
  table_ptr table_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace troupe::serving
