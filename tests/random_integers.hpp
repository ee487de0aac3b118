#pragma once
// Random integer tensors for tests in every directory (header-only: the runtime tests link no test
// library): uint8 pixels, int8/uint16/int16 inputs of casts and fused chains.
#include <cstdint>
#include <random>

#include "core/tensor.hpp"

namespace troupe::testing {

/// Integers uniform in [lo, hi] (inclusive) in a tensor of `type`, drawn from `rng`.
inline tensor random_integers(dtype type, const shape_t& shape, int lo, int hi,
                              std::mt19937_64& rng) {
  tensor t = tensor::allocate(type, shape);
  std::uniform_int_distribution<int> u(lo, hi);
  for (int64_t i = 0; i < t.elements(); ++i) t.set_value_from_double(i, u(rng));
  return t;
}
/// The same from a generator seeded with `seed`: the same seed, the same tensor.
inline tensor random_integers(dtype type, const shape_t& shape, int lo, int hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return random_integers(type, shape, lo, hi, rng);
}

}  // namespace troupe::testing
