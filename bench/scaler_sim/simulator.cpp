#include "bench/scaler_sim/simulator.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>

#include "bench/scaler_sim/random.hpp"

namespace troupe::scaler_sim {
namespace {

constexpr double never = std::numeric_limits<double>::infinity();

/// FNV-1a: each trace draws its arrivals from its own stream.
uint64_t name_hash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

/// Latencies of one window in 0.1 ms buckets up to 2 s (and one beyond), for a p99.
class latency_histogram {
 public:
  void add(double ms, uint64_t n) {
    const auto b = static_cast<size_t>(std::clamp(ms * 10, 0.0, double(buckets_.size() - 1)));
    buckets_[b] += n;
    total_ += n;
  }
  std::optional<double> p99() const {
    if (total_ == 0) return std::nullopt;
    const uint64_t rank = total_ - total_ / 100;  // the smallest latency with 99% at or below
    uint64_t seen = 0;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      seen += buckets_[b];
      if (seen >= rank) return (static_cast<double>(b) + 1) / 10;
    }
    return static_cast<double>(buckets_.size()) / 10;
  }
  void clear() {
    if (total_) std::fill(buckets_.begin(), buckets_.end(), 0);
    total_ = 0;
  }

 private:
  std::vector<uint64_t> buckets_ = std::vector<uint64_t>(20'001, 0);
  uint64_t total_ = 0;
};

struct cohort {
  double arrival_s;
  uint64_t count;
};

struct replica {
  double added_s = 0;
  double ready_s = 0;
  double busy_until_s = never;  // never: idle
  uint64_t rows = 0;            // in service
  bool retiring = false;
};

class simulation {
 public:
  simulation(const trace& t, autoscaler& a, const sim_params& p)
      : t_(t), a_(a), p_(p), arrivals_rng_(p.seed ^ name_hash(t.name)) {}

  sim_result run(uint32_t initial) {
    now_ = -p_.warmup_s;
    for (uint32_t i = 0; i < initial; ++i) replicas_.push_back({now_, now_});
    const double end = t_.duration_s;
    const double tick = a_.tick_s();
    double next_tick = tick > 0 ? now_ + tick : never;
    double last_tick = now_;
    int64_t bin = 0;
    const int64_t first_bin = -static_cast<int64_t>(std::llround(p_.warmup_s / p_.bin_s));
    const int64_t end_bin = static_cast<int64_t>(std::llround(end / p_.bin_s));
    bin = first_bin;
    double ongoing_area = 0, replica_area = 0;

    for (;;) {
      const double next_bin = bin < end_bin ? static_cast<double>(bin + 1) * p_.bin_s : never;
      double next_done = never, next_ready = never;
      size_t done_i = 0, ready_i = 0;
      for (size_t i = 0; i < replicas_.size(); ++i) {
        const replica& r = replicas_[i];
        if (r.busy_until_s < next_done) next_done = r.busy_until_s, done_i = i;
        if (r.ready_s > now_ && r.ready_s < next_ready) next_ready = r.ready_s, ready_i = i;
      }
      const double tick_at = now_ < end ? next_tick : never;
      const double next = std::min({next_bin, next_done, next_ready, tick_at});
      if (next == never) break;
      if (next_bin == never && queued_ == 0 && next_done == never) break;
      now_ = next;

      if (next_done == next) {
        replica& r = replicas_[done_i];
        in_service_ -= r.rows;
        r.rows = 0;
        r.busy_until_s = never;
        if (r.retiring) {
          account(r, now_);
          replicas_.erase(replicas_.begin() + static_cast<ptrdiff_t>(done_i));
        } else {
          dispatch(done_i);
        }
      } else if (next_ready == next) {
        dispatch(ready_i);
      } else if (next_bin == next) {
        const double start = static_cast<double>(bin) * p_.bin_s;
        const double mid = start + p_.bin_s / 2;
        const uint64_t n = arrivals_rng_.poisson(t_.rate(mid) * p_.bin_s);
        if (n) {
          queue_.push_back({mid, n});
          queued_ += n;
          window_arrivals_ += n;
          if (mid >= 0) result_.requests += n;
        }
        if (start >= 0) {
          ongoing_area += static_cast<double>(queued_ + in_service_);
          replica_area += static_cast<double>(held());
          result_.peak_replicas = std::max(result_.peak_replicas, held());
          if (p_.record_series) {
            second_sample& ss = second(mid);
            ss.arrivals += n;
            ss.held = held();
            ss.ready = 0;
            for (const replica& r : replicas_) ss.ready += !r.retiring && r.ready_s <= now_;
            ss.queued = queued_;
          }
        }
        ++bin;
        for (size_t i = 0; i < replicas_.size() && queued_ > 0; ++i) dispatch(i);
      } else {
        cluster_view v;
        v.now_s = now_;
        v.window_s = now_ - last_tick;
        v.arrivals = window_arrivals_;
        v.queued = queued_;
        v.in_service = in_service_;
        for (const replica& r : replicas_) {
          if (r.retiring) continue;
          (r.ready_s <= now_ ? v.ready : v.starting)++;
        }
        v.target = v.ready + v.starting;
        v.busy_fraction = v.ready ? std::min(1.0, window_busy_s_ / (v.ready * v.window_s)) : 0;
        v.p99_ms = window_latency_.p99();
        apply(a_.tick(v));
        window_arrivals_ = 0;
        window_busy_s_ = 0;
        window_latency_.clear();
        last_tick = now_;
        next_tick += tick;
      }
    }
    for (const replica& r : replicas_) account(r, end);
    if (replica_area > 0) result_.mean_ongoing_per_replica = ongoing_area / replica_area;
    return result_;
  }

 private:
  uint32_t held() const {
    uint32_t n = 0;
    for (const replica& r : replicas_) n += !r.retiring;
    return n;
  }

  /// Replica-seconds of `r` within [0, duration), up to `until`.
  void account(const replica& r, double until) {
    const double from = std::max(r.added_s, 0.0), to = std::min(until, t_.duration_s);
    if (to > from) result_.replica_seconds += to - from;
  }

  second_sample& second(double t) {
    const auto i = static_cast<size_t>(t);
    if (result_.series.size() <= i) result_.series.resize(i + 1);
    return result_.series[i];
  }

  void dispatch(size_t i) {
    replica& r = replicas_[i];
    if (r.retiring || r.ready_s > now_ || r.busy_until_s != never || queued_ == 0) return;
    const uint64_t rows = std::min<uint64_t>(queued_, static_cast<uint64_t>(p_.max_batch));
    const double service_s = service_ms(p_.service, static_cast<double>(rows)) / 1000;
    const double finish = now_ + service_s;
    uint64_t left = rows;
    while (left > 0) {
      cohort& c = queue_.front();
      const uint64_t take = std::min(left, c.count);
      const double latency_ms = (finish - c.arrival_s) * 1000 + p_.transport_ms;
      if (c.arrival_s >= 0 && latency_ms <= p_.slo_ms) result_.within_slo += take;
      if (c.arrival_s >= 0 && latency_ms > p_.slo_ms && p_.record_series)
        second(c.arrival_s).late += take;
      window_latency_.add(latency_ms, take);
      c.count -= take;
      left -= take;
      if (c.count == 0) queue_.pop_front();
    }
    queued_ -= rows;
    in_service_ += rows;
    r.rows = rows;
    r.busy_until_s = finish;
    window_busy_s_ += service_s;
  }

  void apply(uint32_t target) {
    const uint32_t current = held();
    if (target == current) return;
    if (now_ >= 0 && now_ < t_.duration_s) {
      const int dir = target > current ? 1 : -1;
      for (auto it = result_.events.rbegin(); it != result_.events.rend(); ++it) {
        if (now_ - it->at_s >= p_.flap_window_s) break;
        if ((it->to > it->from ? 1 : -1) != dir) {
          ++result_.flaps;
          break;
        }
      }
      result_.events.push_back({now_, current, target});
      ++result_.scale_actions;
    }
    if (target > current) {
      for (uint32_t i = current; i < target; ++i) replicas_.push_back({now_, now_ + p_.startup_s});
      return;
    }
    uint32_t drop = current - target;
    // Starting ones first, newest first; then idle ones; then busy ones after their batch.
    for (size_t i = replicas_.size(); i-- > 0 && drop > 0;)
      if (!replicas_[i].retiring && replicas_[i].ready_s > now_) {
        account(replicas_[i], now_);
        replicas_.erase(replicas_.begin() + static_cast<ptrdiff_t>(i));
        --drop;
      }
    for (size_t i = replicas_.size(); i-- > 0 && drop > 0;)
      if (!replicas_[i].retiring && replicas_[i].busy_until_s == never) {
        account(replicas_[i], now_);
        replicas_.erase(replicas_.begin() + static_cast<ptrdiff_t>(i));
        --drop;
      }
    for (size_t i = replicas_.size(); i-- > 0 && drop > 0;)
      if (!replicas_[i].retiring) {
        replicas_[i].retiring = true;
        --drop;
      }
  }

  const trace& t_;
  autoscaler& a_;
  const sim_params& p_;
  rng arrivals_rng_;
  double now_ = 0;
  std::vector<replica> replicas_;
  std::deque<cohort> queue_;
  uint64_t queued_ = 0, in_service_ = 0;
  uint64_t window_arrivals_ = 0;
  double window_busy_s_ = 0;
  latency_histogram window_latency_;
  sim_result result_;
};

}  // namespace

sim_result simulate(const trace& t, autoscaler& a, uint32_t initial_replicas, const sim_params& p) {
  simulation s(t, a, p);
  return s.run(initial_replicas);
}

}  // namespace troupe::scaler_sim
