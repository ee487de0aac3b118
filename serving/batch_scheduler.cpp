#include "serving/batch_scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace troupe::serving {

// ---- adaptive_policy ---------------------------------------------------------------------------

namespace {
// The arrival rate forgets with this time constant: long enough to smooth Poisson noise over a
// few hundred requests at serving rates, short enough to follow a load step within a second.
constexpr double rate_tau_s = 0.25;
// Latency estimates move by this fraction of each new observation.
constexpr double latency_alpha = 0.1;
// p99 ~ mean + 3 * mean absolute deviation (a normal-ish tail bound without keeping samples).
constexpr double p99_deviations = 3.0;
constexpr double headroom = 1.25;
}  // namespace

adaptive_policy::adaptive_policy(double slo_p99_us, std::vector<int64_t> candidate_rows)
    : slo_us_(slo_p99_us) {
  std::sort(candidate_rows.begin(), candidate_rows.end());
  candidate_rows.erase(std::unique(candidate_rows.begin(), candidate_rows.end()),
                       candidate_rows.end());
  for (int64_t r : candidate_rows)
    if (r > 0) estimates_.push_back({r, 0, 0, false});
}

void adaptive_policy::observe_arrival(time_point t, int64_t rows) {
  if (!have_rate_time_) {
    rate_time_ = t;
    have_rate_time_ = true;
  }
  const double dt = std::max(0.0, std::chrono::duration<double>(t - rate_time_).count());
  rate_ = rate_ * std::exp(-dt / rate_tau_s) + static_cast<double>(rows) / rate_tau_s;
  if (t > rate_time_) rate_time_ = t;
}

double adaptive_policy::arrival_rows_per_s(time_point now) const {
  if (!have_rate_time_) return 0;
  const double dt = std::max(0.0, std::chrono::duration<double>(now - rate_time_).count());
  return rate_ * std::exp(-dt / rate_tau_s);
}

void adaptive_policy::observe_latency(int64_t bucket_rows, double us) {
  for (auto& e : estimates_) {
    if (e.rows != bucket_rows) continue;
    if (!e.known) {
      e.mean_us = us;
      e.mad_us = 0;
      e.known = true;
    } else {
      e.mad_us += latency_alpha * (std::abs(us - e.mean_us) - e.mad_us);
      e.mean_us += latency_alpha * (us - e.mean_us);
    }
    return;
  }
}

void adaptive_policy::seed_latency(int64_t bucket_rows, double us) {
  for (auto& e : estimates_)
    if (e.rows == bucket_rows) {
      e.mean_us = us;
      e.mad_us = 0.1 * us;  // no spread measured yet: assume 10%
      e.known = true;
    }
}

const adaptive_policy::estimate* adaptive_policy::at_or_above(int64_t rows) const {
  for (const auto& e : estimates_)
    if (e.rows >= rows) return &e;
  return estimates_.empty() ? nullptr : &estimates_.back();
}

double adaptive_policy::latency_mean_us(int64_t rows) const {
  // A batch runs on the smallest bucket that holds it; unknown buckets borrow the nearest known
  // one, scaled linearly by rows (an overestimate for the small sizes, which is the safe side).
  const estimate* e = at_or_above(rows);
  if (!e) return 0;
  if (e->known) return e->mean_us;
  const estimate* best = nullptr;
  for (const auto& k : estimates_)
    if (k.known && (!best || std::llabs(k.rows - e->rows) < std::llabs(best->rows - e->rows)))
      best = &k;
  if (!best) return 0;
  return best->mean_us *
         std::max(1.0, static_cast<double>(e->rows) / static_cast<double>(best->rows));
}

std::vector<std::pair<int64_t, double>> adaptive_policy::known_latencies() const {
  std::vector<std::pair<int64_t, double>> out;
  for (const auto& e : estimates_)
    if (e.known) out.emplace_back(e.rows, e.mean_us);
  return out;
}

double adaptive_policy::latency_p99_us(int64_t rows) const {
  const estimate* e = at_or_above(rows);
  const double mean = latency_mean_us(rows);
  const double mad = e && e->known ? e->mad_us : 0.1 * mean;
  return mean + p99_deviations * mad;
}

adaptive_policy::choice adaptive_policy::choose(time_point now, int replicas) const {
  choice best_cover, best_feasible, best_throughput, best_latency;
  bool have_cover = false, have_feasible = false, have_throughput = false, have_latency = false;
  double feasible_capacity = -1, max_capacity = -1,
         min_estimate = std::numeric_limits<double>::infinity();
  const double lambda = arrival_rows_per_s(now) / 1e6;  // rows per microsecond
  const double r = std::max(1, replicas);
  for (const auto& e : estimates_) {
    const double mean = latency_mean_us(e.rows);
    if (!(mean > 0)) continue;
    const double p99 = latency_p99_us(e.rows);
    const double capacity = r * static_cast<double>(e.rows) / mean;  // rows per microsecond
    const double u = lambda / capacity;
    const double fill_us = e.rows <= 1 ? 0.0
                                       : (lambda > 0 ? (e.rows - 1) / lambda
                                                     : std::numeric_limits<double>::infinity());
    const double inflated =
        u < 1 ? p99 / std::max(0.05, 1 - u) : std::numeric_limits<double>::infinity();
    const double estimate_us = fill_us + inflated;
    auto make = [&](double wait_us) {
      choice c;
      c.batch_rows = e.rows;
      c.max_wait = std::chrono::microseconds(static_cast<int64_t>(std::max(0.0, wait_us)));
      return c;
    };
    if (capacity > max_capacity) {
      max_capacity = capacity;
      best_throughput = make(0);
      have_throughput = true;
    }
    if (u < 1 && estimate_us < min_estimate) {
      min_estimate = estimate_us;
      best_latency = make(std::min(fill_us, std::max(0.0, slo_us_ - inflated)));
      have_latency = true;
    }
    if (u < 1 && estimate_us <= slo_us_) {
      const double wait = std::min(fill_us, slo_us_ - inflated);
      if (!have_cover && capacity >= headroom * lambda) {
        best_cover = make(wait);  // ascending rows: the first that covers is the smallest
        have_cover = true;
      }
      if (capacity > feasible_capacity) {
        feasible_capacity = capacity;
        best_feasible = make(wait);
        have_feasible = true;
      }
    }
  }
  if (have_cover) return best_cover;
  if (have_feasible) return best_feasible;
  if (have_latency) return best_latency;  // stable but the SLO cannot be met: lowest latency
  if (have_throughput) return best_throughput;
  return {};
}

// ---- job_ring ----------------------------------------------------------------------------------

void job_ring::grow() {
  std::vector<infer_job*> bigger(slots_.size() * 2);
  for (size_t i = 0; i < count_; ++i) bigger[i] = at(i);
  slots_ = std::move(bigger);
  head_ = 0;
}

void job_ring::push_back(infer_job* j) {
  if (count_ == slots_.size()) grow();
  slots_[(head_ + count_) % slots_.size()] = j;
  ++count_;
}

void job_ring::push_front(infer_job* j) {
  if (count_ == slots_.size()) grow();
  head_ = (head_ + slots_.size() - 1) % slots_.size();
  slots_[head_] = j;
  ++count_;
}

infer_job* job_ring::pop_front() {
  infer_job* j = slots_[head_];
  head_ = (head_ + 1) % slots_.size();
  --count_;
  return j;
}

// ---- batch_scheduler ---------------------------------------------------------------------------

batch_scheduler::batch_scheduler(const model_signature& sig, std::vector<int64_t> candidate_rows)
    : max_queue_size_(std::max<uint32_t>(1, sig.config.queue.max_queue_size)),
      max_batch_size_(sig.max_batch_size),
      max_queue_delay_(sig.config.max_queue_delay),
      preferred_(sig.config.preferred_batch_sizes),
      adaptive_enabled_(sig.config.adaptive.enabled && sig.max_batch_size > 0),
      adaptive_(sig.config.adaptive.slo_p99_ms * 1000.0, std::move(candidate_rows)) {
  levels_.reserve(sig.config.priority_levels);
  for (uint32_t i = 0; i < std::max<uint32_t>(1, sig.config.priority_levels); ++i)
    levels_.emplace_back(max_queue_size_);
}

status batch_scheduler::enqueue(infer_job* job, time_point now) {
  const size_t level = std::clamp<size_t>(job->level, 1, levels_.size()) - 1;
  job_ring& ring = levels_[level];
  if (ring.size() >= max_queue_size_)
    return make_error(error_code::overloaded, "model '" + job->model + "' queue at priority " +
                                                  std::to_string(level + 1) + " is full (" +
                                                  std::to_string(max_queue_size_) + " requests)");
  ring.push_back(job);
  ++queued_jobs_;
  queued_rows_ += job->rows;
  earliest_deadline_ = std::min(earliest_deadline_, job->deadline);
  if (adaptive_enabled_) adaptive_.observe_arrival(now, job->rows);
  return status::ok();
}

void batch_scheduler::requeue_front(infer_job* job) {
  const size_t level = std::clamp<size_t>(job->level, 1, levels_.size()) - 1;
  levels_[level].push_front(job);
  ++queued_jobs_;
  queued_rows_ += job->rows;
  earliest_deadline_ = std::min(earliest_deadline_, job->deadline);
}

batch_decision batch_scheduler::decide(time_point now, int replicas) const {
  batch_decision d;
  if (queued_jobs_ == 0) return d;
  if (max_batch_size_ <= 0) {  // no batching: every request runs alone, at once
    d.dispatch = true;
    d.max_rows = 1;
    return d;
  }
  int64_t target = max_batch_size_;
  std::chrono::microseconds delay = max_queue_delay_;
  if (adaptive_enabled_) {
    const auto c = adaptive_.choose(now, replicas);
    target = std::clamp<int64_t>(c.batch_rows, 1, max_batch_size_);
    delay = c.max_wait;
  }
  if (queued_rows_ >= target) {
    d.dispatch = true;
    d.max_rows = target;
    return d;
  }
  if (!adaptive_enabled_) {
    for (auto it = preferred_.rbegin(); it != preferred_.rend(); ++it)
      if (*it <= queued_rows_) {
        d.dispatch = true;
        d.max_rows = *it;
        return d;
      }
  }
  time_point oldest = time_point::max();
  for (const auto& ring : levels_)
    if (!ring.empty()) oldest = std::min(oldest, ring.front()->arrival);
  const time_point due = oldest + delay;
  if (now >= due) {
    d.dispatch = true;
    d.max_rows = max_batch_size_;
    return d;
  }
  d.wake_at = due;
  return d;
}

void batch_scheduler::take(int64_t max_rows, std::vector<infer_job*>& out) {
  const bool batched = max_batch_size_ > 0;
  int64_t rows = 0;
  infer_job* first = nullptr;
  for (auto& ring : levels_) {
    while (!ring.empty()) {
      infer_job* j = ring.front();
      if (first) {
        if (!batched || rows + j->rows > max_rows) return;
        if (!model_signature::same_batch_shape(first->inputs, j->inputs, batched)) return;
      }
      ring.pop_front();
      out.push_back(j);
      rows += j->rows;
      --queued_jobs_;
      queued_rows_ -= j->rows;
      if (!first) first = j;
    }
  }
}

void batch_scheduler::expire(time_point now, job_list& expired) {
  time_point earliest = no_deadline;
  for (auto& ring : levels_) {
    ring.remove_if([&](infer_job* j) { return j->deadline <= now; }, expired);
    for (size_t i = 0; i < ring.size(); ++i) earliest = std::min(earliest, ring.at(i)->deadline);
  }
  // Recount: expire is the slow path and recounting keeps the totals exact.
  queued_jobs_ = 0;
  queued_rows_ = 0;
  for (auto& ring : levels_)
    for (size_t i = 0; i < ring.size(); ++i) {
      ++queued_jobs_;
      queued_rows_ += ring.at(i)->rows;
    }
  earliest_deadline_ = earliest;
}

void batch_scheduler::drain_all(job_list& out) {
  for (auto& ring : levels_)
    while (!ring.empty()) out.push_back(ring.pop_front());
  queued_jobs_ = 0;
  queued_rows_ = 0;
  earliest_deadline_ = no_deadline;
}

}  // namespace troupe::serving
