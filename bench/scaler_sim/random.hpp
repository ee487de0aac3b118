#pragma once
/// The simulator's random numbers: xoshiro256** seeded by splitmix64, and samplers written out
/// here rather than taken from <random>, whose distributions differ between standard libraries.
/// The same seed gives the same traces on every machine.

#include <cmath>
#include <cstdint>

namespace troupe::scaler_sim {

class rng {
 public:
  explicit rng(uint64_t seed) {
    for (uint64_t& s : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      s = z ^ (z >> 31);
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// Exponential with the given mean.
  double exponential(double mean) { return -mean * std::log1p(-uniform()); }

  /// Poisson with the given mean, by inversion; means above 30 are split into parts (a sum of
  /// Poisson variables is Poisson), so exp(-mean) never underflows.
  uint64_t poisson(double mean) {
    uint64_t total = 0;
    while (mean > 30) {
      total += poisson_small(30);
      mean -= 30;
    }
    return total + poisson_small(mean);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  uint64_t poisson_small(double mean) {
    if (!(mean > 0)) return 0;
    double p = std::exp(-mean), cdf = p;
    const double u = uniform();
    uint64_t k = 0;
    while (u > cdf && k < 1000) {
      ++k;
      p *= mean / static_cast<double>(k);
      cdf += p;
    }
    return k;
  }

  uint64_t s_[4];
};

}  // namespace troupe::scaler_sim
