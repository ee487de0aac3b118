// First-fit allocation in an address range backed by chunks (see chunked_arena.hpp).
#include "kernels/chunked_arena.hpp"

#include <algorithm>
#include <iterator>
#include <string>

namespace troupe::kernels {
namespace {

size_t round_up(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

}  // namespace

chunked_arena::chunked_arena(size_t capacity_bytes, size_t chunk_bytes, size_t alignment)
    : chunk_bytes_(std::max<size_t>(chunk_bytes, 1)), alignment_(std::max<size_t>(alignment, 1)) {
  capacity_ = round_up(capacity_bytes, chunk_bytes_);
  users_.assign(capacity_ / chunk_bytes_, 0);
  if (capacity_ > 0) free_.emplace(0, capacity_);
}

expected<chunked_arena::grant> chunked_arena::allocate(size_t bytes) {
  const size_t need = round_up(std::max<size_t>(bytes, 1), alignment_);
  auto it = std::find_if(free_.begin(), free_.end(),
                         [need](const auto& range) { return range.second >= need; });
  if (it == free_.end())
    return status(error_code::out_of_memory, "no free range of " + std::to_string(need) +
                                                 " bytes among " + std::to_string(capacity_) +
                                                 " (" + std::to_string(allocated_bytes_) +
                                                 " allocated)");
  grant g;
  g.offset = it->first;
  g.bytes = need;
  const size_t rest = it->second - need;
  free_.erase(it);
  if (rest > 0) free_.emplace(g.offset + need, rest);
  allocated_.emplace(g.offset, need);
  allocated_bytes_ += need;
  g.first_chunk = chunk_of(g.offset);
  g.last_chunk = chunk_of(g.offset + need - 1);
  for (size_t c = g.first_chunk; c <= g.last_chunk; ++c)
    if (users_[c]++ == 0) ++live_chunks_;
  return g;
}

std::vector<size_t> chunked_arena::free(size_t offset) {
  std::vector<size_t> emptied;
  auto a = allocated_.find(offset);
  if (a == allocated_.end()) return emptied;
  const size_t bytes = a->second;
  allocated_.erase(a);
  allocated_bytes_ -= bytes;
  for (size_t c = chunk_of(offset); c <= chunk_of(offset + bytes - 1); ++c)
    if (--users_[c] == 0) {
      --live_chunks_;
      emptied.push_back(c);
    }
  // Back into the free list, merged with its neighbours.
  size_t start = offset, length = bytes;
  auto next = free_.lower_bound(offset);
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      length += prev->second;
      free_.erase(prev);
    }
  }
  if (next != free_.end() && offset + bytes == next->first) {
    length += next->second;
    free_.erase(next);
  }
  free_.emplace(start, length);
  return emptied;
}

std::vector<size_t> chunked_arena::live_chunks() const {
  std::vector<size_t> out;
  out.reserve(live_chunks_);
  for (size_t c = 0; c < users_.size(); ++c)
    if (users_[c] > 0) out.push_back(c);
  return out;
}

}  // namespace troupe::kernels
