#pragma once
// The one seed of the C++ tests' random inputs (header-only: the runtime tests link no test
// library). Fixed by default, so that a test passes or fails the same way on every run and every
// machine; TROUPE_TEST_SEED=N replays another seed, TROUPE_TEST_SEED=random draws a fresh one (to
// explore), and the seed in use is printed once per process so that any failure can be replayed.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

namespace troupe::testing {

inline constexpr uint64_t default_test_seed = 20251206;

inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    uint64_t s = default_test_seed;
    if (const char* env = std::getenv("TROUPE_TEST_SEED"); env && *env) {
      if (std::strcmp(env, "random") == 0)
        s = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
      else
        s = std::strtoull(env, nullptr, 10);
    }
    std::fprintf(stderr, "[troupe] test seed %llu (TROUPE_TEST_SEED=N replays)\n",
                 static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

}  // namespace troupe::testing
