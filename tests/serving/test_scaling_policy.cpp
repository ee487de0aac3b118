// The scaler's decisions as plain functions of (simulated) time: each signal, the bounds, the
// hysteresis band, the cooldown, scale to zero and back, the memory and device caps.

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "serving/scaling_policy.hpp"

namespace troupe::serving {
namespace {

using namespace std::chrono_literals;
using tp = scaling_clock::time_point;

const tp t0 = tp{} + std::chrono::hours(1);

// One replica serves 1,000 req/s at the SLO: the policy plans 800 per replica (utilisation 0.8)
// for scale-up and 680 (band 0.15) for scale-down.
constexpr double capacity = 1000;

scaling_config make_config(uint32_t min = 1, uint32_t max = 10) {
  scaling_config c;
  c.min_replicas = min;
  c.max_replicas = max;
  c.slo_p99_ms = 50;
  c.upscale_delay = 0s;
  c.downscale_delay = 60s;
  return c;
}

scaling_signals load(double rps, uint32_t ready, uint64_t queued = 0) {
  scaling_signals s;
  s.arrival_rps = rps;
  s.queued = queued;
  s.ready_replicas = ready;
  s.replica_capacity_rps = capacity;
  s.busy_fraction = std::min(1.0, rps / (capacity * std::max<uint32_t>(ready, 1)));
  return s;
}

/// Drives the policy once a second from `from` for `seconds` at a constant rate, the actuator
/// carrying out every decision at once; returns the decisions.
std::vector<scaling_decision> run(scaling_policy& p, tp from, int seconds, double rps) {
  std::vector<scaling_decision> out;
  for (int i = 0; i < seconds; ++i) out.push_back(p.decide(from + i * 1s, load(rps, p.replicas())));
  return out;
}

int count_actions(const std::vector<scaling_decision>& ds) {
  int n = 0;
  for (const auto& d : ds) n += d.action != scaling_action::hold;
  return n;
}

TEST(scaling_policy, capacity_is_the_best_throughput_that_fits_the_slo) {
  const std::vector<batch_service_time> profile = {{1, 0.4}, {8, 0.6}, {32, 1.2}, {64, 2.2}};
  // 2 x 2.2 ms fits 0.8 x 10 ms: batch 64, 29,091 req/s.
  EXPECT_NEAR(replica_capacity_rps(profile, 10), 64 / 2.2e-3, 1);
  // 2 x 1.2 fits 0.8 x 3 ms, 2 x 2.2 does not: batch 32.
  EXPECT_NEAR(replica_capacity_rps(profile, 3), 32 / 1.2e-3, 1);
  // Nothing fits 0.5 ms: the smallest batch's throughput.
  EXPECT_NEAR(replica_capacity_rps(profile, 0.5), 1 / 0.4e-3, 1);
  EXPECT_EQ(replica_capacity_rps({}, 10), 0);
}

TEST(scaling_policy, arrival_rate_sets_the_count_through_the_capacity_model) {
  scaling_policy p(make_config(), 1);
  auto d = p.decide(t0, load(2'000, 1));  // 2,000 / 800 = 2.5 -> 3
  EXPECT_EQ(d.action, scaling_action::up);
  EXPECT_EQ(d.reason, scaling_reason::capacity);
  EXPECT_EQ(d.replicas, 3u);
  EXPECT_NEAR(d.needed, 2.5, 1e-9);
  d = p.decide(t0 + 1s, load(2'000, 3));
  EXPECT_EQ(d.action, scaling_action::hold);
  EXPECT_EQ(d.reason, scaling_reason::steady);
  EXPECT_EQ(p.decide(t0 + 2s, load(2'400, 3)).replicas, 3u);  // exactly 3 x 800: no more
}

TEST(scaling_policy, upscale_waits_for_the_upscale_delay_and_ignores_a_shorter_burst) {
  auto c = make_config();
  c.upscale_delay = 5s;
  scaling_policy p(c, 1);
  for (int i = 0; i < 10; ++i) p.decide(t0 + i * 1s, load(500, 1));
  // A burst of 3 s: wanted, never for 5 s.
  for (int i = 10; i < 13; ++i) {
    auto d = p.decide(t0 + i * 1s, load(3'000, 1));
    EXPECT_EQ(d.action, scaling_action::hold);
    EXPECT_EQ(d.reason, scaling_reason::upscale_delay);
  }
  for (int i = 13; i < 20; ++i) EXPECT_EQ(p.decide(t0 + i * 1s, load(500, 1)).replicas, 1u);
  // Sustained: up once 5 s have passed, to what the whole window wanted (the minimum).
  p.decide(t0 + 20s, load(4'000, 1));  // wants 5
  for (int i = 21; i < 25; ++i)
    EXPECT_EQ(p.decide(t0 + i * 1s, load(3'000, 1)).action, scaling_action::hold);  // wants 4
  auto d = p.decide(t0 + 25s, load(3'000, 1));
  EXPECT_EQ(d.action, scaling_action::up);
  EXPECT_EQ(d.replicas, 4u);
}

TEST(scaling_policy, a_growing_backlog_skips_the_upscale_delay) {
  auto c = make_config();
  c.upscale_delay = 30s;
  scaling_policy p(c, 1);
  p.decide(t0, load(500, 1));
  // The rate alone: wait for the delay.
  auto d = p.decide(t0 + 1s, load(5'000, 1));
  EXPECT_EQ(d.action, scaling_action::hold);
  EXPECT_EQ(d.reason, scaling_reason::upscale_delay);
  // A backlog beyond half the SLO's worth (25) that grows: requests miss the SLO now. At once.
  d = p.decide(t0 + 2s, load(5'000, 1, 1'000));
  EXPECT_EQ(d.action, scaling_action::up);
  EXPECT_EQ(d.replicas, 7u);  // ceil(5,000 / 800)
}

TEST(scaling_policy, counts_stay_within_the_bounds) {
  scaling_policy p(make_config(2, 4), 7);
  EXPECT_EQ(p.replicas(), 4u);  // the initial count is clamped
  EXPECT_EQ(p.decide(t0, load(100'000, 4)).replicas, 4u);
  scaling_policy q(make_config(2, 4), 0);
  EXPECT_EQ(q.replicas(), 2u);  // 0 only with min_replicas 0
  const auto ds = run(q, t0, 600, 0);
  for (const auto& d : ds) EXPECT_EQ(d.replicas, 2u);  // no load: min_replicas, not fewer
}

TEST(scaling_policy, a_growing_queue_scales_up_when_the_rate_model_says_enough) {
  scaling_policy p(make_config(), 2);
  // 1,200 req/s: 2 replicas by the model. The queue beyond what 2 replicas clear in half the
  // SLO (2 x 1,000 x 0.025 = 50) grows by 600 per second: 600 req/s short -> one more replica.
  EXPECT_EQ(p.decide(t0, load(1'200, 2, 10)).action, scaling_action::hold);
  EXPECT_EQ(p.decide(t0 + 1s, load(1'200, 2, 60)).replicas, 3u);  // grows 50/s: 2 + 1
  scaling_policy q(make_config(), 2);
  q.decide(t0, load(1'200, 2, 100));
  const auto d = q.decide(t0 + 1s, load(1'200, 2, 2'100));  // +2,000/s: 2 + 2
  EXPECT_EQ(d.action, scaling_action::up);
  EXPECT_EQ(d.reason, scaling_reason::queue);
  EXPECT_EQ(d.replicas, 4u);
  // A queue within half the SLO's worth is noise: nothing.
  scaling_policy r(make_config(), 2);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(r.decide(t0 + i * 1s, load(1'200, 2, i % 2 ? 45 : 5)).action, scaling_action::hold);
}

TEST(scaling_policy, a_queue_growing_while_replicas_start_counts_only_its_backlog) {
  scaling_policy p(make_config(), 3);
  auto s = load(1'200, 2, 100);
  s.starting_replicas = 1;  // help is on the way: the growth term is off
  p.decide(t0, s);
  s.queued = 2'100;
  const auto d = p.decide(t0 + 1s, s);
  // The backlog (2,100 - 50) drained in 5 s: (1,200 + 410) / 1,000 -> 2: the 3 do it.
  EXPECT_EQ(d.action, scaling_action::hold);
  EXPECT_EQ(d.replicas, 3u);
}

TEST(scaling_policy, p99_over_the_slo_scales_up_in_proportion) {
  auto c = make_config();
  scaling_policy p(c, 2);
  auto s = load(1'000, 2);
  s.p99_ms = 75;  // 1.5 x the SLO; the model says 2 are enough
  // Within slo_guard_interval (10 s) of the start (counted as a scale-up): not yet.
  EXPECT_EQ(p.decide(t0, s).action, scaling_action::hold);
  auto d = p.decide(t0 + 10s, s);
  EXPECT_EQ(d.action, scaling_action::up);
  EXPECT_EQ(d.reason, scaling_reason::slo);
  EXPECT_EQ(d.replicas, 3u);  // ceil(2 x 1.5)
  // Right after that scale-up: the window still holds the old p99; wait.
  s.ready_replicas = 3;
  EXPECT_EQ(p.decide(t0 + 11s, s).action, scaling_action::hold);
  // Much over the SLO: at most doubled.
  s.p99_ms = 500;
  d = p.decide(t0 + 21s, s);
  EXPECT_EQ(d.replicas, 6u);
  // Replicas starting: they are the answer; no more.
  s.p99_ms = 500;
  s.starting_replicas = 1;
  EXPECT_EQ(p.decide(t0 + 40s, s).action, scaling_action::hold);
}

TEST(scaling_policy, without_a_profile_capacity_comes_from_the_busy_fraction) {
  scaling_policy p(make_config(), 2);
  scaling_signals s;
  s.arrival_rps = 1'500;
  s.ready_replicas = 2;
  s.busy_fraction = 0.9;  // 1,500 / (0.9 x 2) = 833 req/s per busy replica -> 666 planned
  EXPECT_EQ(p.decide(t0, s).replicas, 3u);
  s.busy_fraction = 0;  // nothing measured: hold
  scaling_policy q(make_config(), 2);
  EXPECT_EQ(q.decide(t0, s).action, scaling_action::hold);
}

TEST(scaling_policy, downscale_waits_for_the_cooldown_then_follows_the_window_peak) {
  scaling_policy p(make_config(), 1);
  EXPECT_EQ(p.decide(t0, load(4'000, 1)).replicas, 5u);
  // The load drops at once: nothing for downscale_delay (60 s) after the scale-up.
  for (int i = 1; i < 60; ++i) {
    const auto d = p.decide(t0 + i * 1s, load(1'000, 5));
    EXPECT_EQ(d.action, scaling_action::hold) << i;
    EXPECT_EQ(d.reason, scaling_reason::cooldown) << i;
  }
  // At 60 s the window [0, 60] still holds the first second's 4,000 req/s.
  EXPECT_EQ(p.decide(t0 + 60s, load(1'000, 5)).action, scaling_action::hold);
  // 60 s of 1,000 req/s: at 680 per replica (the band), 2.
  auto d = p.decide(t0 + 61s, load(1'000, 5));
  EXPECT_EQ(d.action, scaling_action::down);
  EXPECT_EQ(d.reason, scaling_reason::low_load);
  EXPECT_EQ(d.replicas, 2u);
}

TEST(scaling_policy, hysteresis_band_keeps_a_count_the_scale_up_would_not_reach) {
  scaling_policy p(make_config(), 1);
  EXPECT_EQ(p.decide(t0, load(2'300, 1)).replicas, 3u);  // 2.9 -> 3
  // 1,700 req/s needs 2.1 at 800 per replica (3 on the way up) and 2.5 at 680: stays at 3.
  const auto ds = run(p, t0 + 1s, 600, 1'700);
  EXPECT_EQ(count_actions(ds), 0);
  EXPECT_EQ(p.replicas(), 3u);
  // 1,350: 1.99 at 680 -> down to 2 after the window.
  const auto later = run(p, t0 + 601s, 120, 1'350);
  EXPECT_EQ(count_actions(later), 1);
  EXPECT_EQ(p.replicas(), 2u);
}

TEST(scaling_policy, a_rising_load_holds_a_scale_down_the_window_allows) {
  scaling_policy p(make_config(), 1);
  EXPECT_EQ(p.decide(t0, load(4'000, 1)).replicas, 5u);
  // Down to 1,000 req/s, then rising by 5 req/s every second: past a trough. The window would
  // allow 2 replicas from 61 s; the trend says the load is coming back.
  for (int i = 1; i <= 120; ++i) {
    const auto d = p.decide(t0 + i * 1s, load(1'000 + 5.0 * i, 5));
    EXPECT_EQ(d.action, scaling_action::hold) << i;
    if (i > 61) EXPECT_EQ(d.reason, scaling_reason::rising_load) << i;
  }
  // Flat (noisy) at 1,600 from 121 s: once the rise has mostly left the trend's window (60 s),
  // down to what the window's peak needs (1,620 / 680 -> 3).
  int down_at = -1;
  for (int i = 121; i <= 250 && down_at < 0; ++i)
    if (p.decide(t0 + i * 1s, load(1'600 + (i % 2 ? 20 : -20), 5)).action == scaling_action::down)
      down_at = i;
  EXPECT_GT(down_at, 140);
  EXPECT_LT(down_at, 181);
  EXPECT_EQ(p.replicas(), 3u);
}

TEST(scaling_policy, a_flap_widens_the_downscale_window) {
  scaling_policy p(make_config(), 1);  // downscale_delay 60 s
  EXPECT_EQ(p.decide(t0, load(4'000, 1)).replicas, 5u);
  int i = 1;
  for (; p.replicas() == 5; ++i) p.decide(t0 + i * 1s, load(1'000, 5));
  EXPECT_EQ(i, 62);  // down to 2 at 61 s
  // The load is back 20 s later: up again within the cooldown of the scale-down, a flap.
  EXPECT_EQ(p.decide(t0 + 81s, load(4'000, 2)).replicas, 5u);
  // Now the window and the cooldown are 120 s: no scale-down at 81 + 61 s, one at 81 + 121 s.
  int down_at = -1;
  for (int j = 82; j < 400 && down_at < 0; ++j)
    if (p.decide(t0 + j * 1s, load(1'000, 5)).action == scaling_action::down) down_at = j;
  EXPECT_EQ(down_at, 81 + 121);
}

TEST(scaling_policy, noisy_load_does_not_flap) {
  // A load around a replica boundary (2,400 = 3 x 800) with +-20% of noise each second, for two
  // hours: the count rises to what the noise's highs need and stays there.
  auto c = make_config();
  c.upscale_delay = 2s;
  scaling_policy p(c, 1);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> noise(0.8, 1.2);
  std::vector<std::pair<int, scaling_action>> actions;
  for (int i = 0; i < 7200; ++i) {
    const auto d = p.decide(t0 + i * 1s, load(2'400 * noise(rng), p.replicas()));
    if (d.action != scaling_action::hold) actions.emplace_back(i, d.action);
  }
  EXPECT_LE(actions.size(), 3u);
  for (size_t i = 1; i < actions.size(); ++i)
    EXPECT_FALSE(actions[i - 1].second == scaling_action::down &&
                 actions[i].second == scaling_action::up &&
                 actions[i].first - actions[i - 1].first < 60)
        << "flap at " << actions[i].first;
}

TEST(scaling_policy, scales_to_zero_when_idle_and_back_at_the_first_arrival) {
  auto c = make_config(0, 10);
  c.scale_to_zero_after = 120s;
  scaling_policy p(c, 2);
  p.decide(t0, load(1'000, 2));
  // Idle from 1 s: at 120 s of no arrival (and the 60 s downscale to min 1 on the way), zero.
  int to_zero_at = -1;
  for (int i = 1; i < 200 && to_zero_at < 0; ++i) {
    const auto d = p.decide(t0 + i * 1s, load(0, p.replicas()));
    if (d.action == scaling_action::to_zero) {
      to_zero_at = i;
      EXPECT_EQ(d.reason, scaling_reason::idle);
      EXPECT_EQ(d.replicas, 0u);
    }
  }
  EXPECT_EQ(to_zero_at, 120);
  // At zero with no arrivals: stays.
  EXPECT_EQ(p.decide(t0 + 300s, load(0, 0)).action, scaling_action::hold);
  // A queued request (the rate window has not seen it yet) brings it back at once.
  auto d = p.decide(t0 + 301s, load(0, 0, 1));
  EXPECT_EQ(d.action, scaling_action::from_zero);
  EXPECT_EQ(d.reason, scaling_reason::arrival);
  EXPECT_EQ(d.replicas, 1u);
  // And from zero with a rate: what the rate needs, no delay.
  c.upscale_delay = 30s;
  scaling_policy q(c, 0);
  d = q.decide(t0, load(3'000, 0));
  EXPECT_EQ(d.action, scaling_action::from_zero);
  EXPECT_EQ(d.replicas, 4u);
}

TEST(scaling_policy, memory_headroom_caps_a_scale_up) {
  scaling_policy p(make_config(), 1);
  auto s = load(4'000, 1);  // wants 5
  s.replica_bytes = 400ull << 20;
  s.memory_headroom_bytes = 900ull << 20;  // room for 2 more
  auto d = p.decide(t0, s);
  EXPECT_EQ(d.action, scaling_action::up);
  EXPECT_EQ(d.reason, scaling_reason::memory);
  EXPECT_EQ(d.replicas, 3u);
  s.ready_replicas = 3;
  s.memory_headroom_bytes = 100ull << 20;  // no room
  d = p.decide(t0 + 1s, s);
  EXPECT_EQ(d.action, scaling_action::hold);
  EXPECT_EQ(d.reason, scaling_reason::memory);
  EXPECT_EQ(d.replicas, 3u);
  // From zero without room for one: hold, say why.
  auto c = make_config(0, 4);
  c.scale_to_zero_after = 60s;
  scaling_policy z(c, 0);
  d = z.decide(t0, s);
  EXPECT_EQ(d.replicas, 0u);
  EXPECT_EQ(d.reason, scaling_reason::memory);
}

TEST(scaling_policy, a_saturated_device_or_link_holds_a_scale_up) {
  scaling_policy p(make_config(), 1);
  auto s = load(4'000, 1);
  s.gpu_utilization = 0.97;
  auto d = p.decide(t0, s);
  EXPECT_EQ(d.action, scaling_action::hold);
  EXPECT_EQ(d.reason, scaling_reason::gpu_saturated);
  s.gpu_utilization = 0.5;
  s.pcie_utilization = 0.93;
  EXPECT_EQ(p.decide(t0 + 1s, s).reason, scaling_reason::pcie_saturated);
  s.pcie_utilization = 0.2;
  EXPECT_EQ(p.decide(t0 + 2s, s).replicas, 5u);
}

TEST(scaling_policy, config_checks_name_the_key) {
  auto c = make_config(3, 2);
  auto st = check_scaling_config(c);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("scaling.min_replicas"), std::string::npos) << st.message();
  c = make_config(0, 2);
  st = check_scaling_config(c);
  EXPECT_NE(st.message().find("scale_to_zero_after_s"), std::string::npos) << st.message();
  c.scale_to_zero_after = 10s;
  EXPECT_TRUE(check_scaling_config(c).is_ok());
  c = make_config(1, 2);
  c.scale_to_zero_after = 10s;
  EXPECT_FALSE(check_scaling_config(c).is_ok());
  c = make_config();
  c.slo_p99_ms = 0;
  EXPECT_NE(check_scaling_config(c).message().find("slo_p99_ms"), std::string::npos);
  c = make_config();
  c.downscale_delay = -1s;
  EXPECT_NE(check_scaling_config(c).message().find("downscale_delay_s"), std::string::npos);
  c = make_config(0, 0);
  EXPECT_NE(check_scaling_config(c).message().find("max_replicas"), std::string::npos);
}

TEST(scaling_policy, names) {
  EXPECT_EQ(scaling_action_name(scaling_action::from_zero), "from_zero");
  EXPECT_EQ(scaling_reason_name(scaling_reason::low_load), "low_load");
  EXPECT_EQ(scaling_reason_name(scaling_reason::memory), "memory");
}

}  // namespace
}  // namespace troupe::serving
