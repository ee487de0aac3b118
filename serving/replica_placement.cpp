#include "serving/replica_placement.hpp"

#include <string>
#include <tuple>

namespace troupe::serving {

namespace {

constexpr uint64_t fnv_offset = 0xcbf29ce484222325ull;
constexpr uint64_t fnv_prime = 0x100000001b3ull;

uint64_t fnv1a(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= fnv_prime;
  }
  // A separator, so that ("ab", "c") and ("a", "bc") hash apart.
  h ^= 0xff;
  h *= fnv_prime;
  return h;
}

/// splitmix64's finaliser: FNV-1a's low bits mix poorly on short, similar inputs.
uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

bool fits(const placement_candidate& c, uint64_t replica_bytes) {
  return replica_bytes == 0 || !c.memory_free_bytes || *c.memory_free_bytes >= replica_bytes;
}

std::string mib(uint64_t bytes) {
  return std::to_string((bytes + (uint64_t{1} << 19)) >> 20) + " MiB";
}

}  // namespace

uint64_t rendezvous_score(std::string_view model, int64_t version, std::string_view node,
                          std::string_view device) {
  uint64_t h = fnv_offset;
  h = fnv1a(h, model);
  h = fnv1a(h, std::to_string(version));
  h = fnv1a(h, node);
  h = fnv1a(h, device);
  return mix(h);
}

expected<uint32_t> choose_worker(std::span<const placement_candidate> candidates,
                                 const placement_request& request) {
  if (candidates.empty())
    return invalid_argument("no worker to place a replica of model '" + std::string(request.model) +
                            "' on");
  const placement_candidate* best = nullptr;
  // Smaller is better: counts ascending, then local workers by index, then joined ones by their
  // score descending.
  std::tuple<uint32_t, uint32_t, uint32_t, bool, uint64_t> best_key{};
  uint64_t most_free = 0;
  for (const auto& c : candidates) {
    if (c.memory_free_bytes && *c.memory_free_bytes > most_free) most_free = *c.memory_free_bytes;
    if (!fits(c, request.replica_bytes)) continue;
    const std::tuple<uint32_t, uint32_t, uint32_t, bool, uint64_t> key{
        c.replicas_of_version, c.replicas_of_version_on_node, c.replicas, !c.local,
        c.local ? c.worker : ~rendezvous_score(request.model, request.version, c.node, c.device)};
    if (!best || key < best_key) best = &c, best_key = key;
  }
  if (!best)
    return status(error_code::out_of_memory,
                  "no worker has room for a replica of model '" + std::string(request.model) +
                      "' version " + std::to_string(request.version) + " (" +
                      mib(request.replica_bytes) + "): the most free memory a worker has is " +
                      mib(most_free));
  return best->worker;
}

}  // namespace troupe::serving
