#pragma once
/// The batcher's decisions, apart from the actor so that they can be tested as plain functions of
/// time: priority queues with a bound, Triton's dynamic-batching rules, and the adaptive policy.
///
/// Triton's rules as implemented (model_config.hpp names the keys):
/// - a batch leaves at once when the queued rows reach max_batch_size, or reach a preferred batch
///   size (the largest one reachable is used);
/// - otherwise it leaves when the oldest queued request has waited max_queue_delay, with every
///   queued row that fits max_batch_size;
/// - levels are served highest first (1 = highest), FIFO within a level; a batch holds requests
///   of one input shape (the batch dim aside), and stops at the first request that does not fit;
/// - a full level refuses new requests (OVERLOADED) instead of queueing without bound.
/// The batcher asks only while a replica can take a batch, so a busy model accumulates a queue and
/// the next batch is formed from it (what Triton does when every instance is busy).

#include <chrono>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "serving/job.hpp"
#include "serving/signature.hpp"

namespace troupe::serving {

/// Adaptive batching: estimates the arrival rate (rows/s, exponentially decayed) and each batch
/// size's latency (mean and mean absolute deviation, from warm-up and then from every batch), and
/// picks the batch size and the longest wait such that
///   p99 estimate = wait to fill the batch + latency p99 / (1 - utilisation) <= SLO,
/// preferring the smallest batch whose throughput covers the arrival rate with 25% headroom (what
/// is served is then the whole arrival rate, at the lowest latency); when none covers it, the
/// feasible batch with the highest throughput; when none is feasible (overload), the batch with the
/// highest throughput and no wait: throughput first, the queue bound answers the excess.
class adaptive_policy {
 public:
  struct choice {
    int64_t batch_rows = 1;
    std::chrono::microseconds max_wait{0};
  };

  adaptive_policy() = default;
  adaptive_policy(double slo_p99_us, std::vector<int64_t> candidate_rows);

  void observe_arrival(time_point t, int64_t rows);
  /// A batch padded to `bucket_rows` took `us` of compute.
  void observe_latency(int64_t bucket_rows, double us);
  /// Seeds (or replaces) a latency before any batch ran: warm-up measurements.
  void seed_latency(int64_t bucket_rows, double us);

  choice choose(time_point now, int replicas) const;
  double arrival_rows_per_s(time_point now) const;
  /// p99 estimate of a batch of `rows` (interpolated between measured sizes), microseconds.
  double latency_p99_us(int64_t rows) const;
  double latency_mean_us(int64_t rows) const;
  /// The buckets with a latency estimate (warm-up or a batch), ascending: (rows, mean us).
  std::vector<std::pair<int64_t, double>> known_latencies() const;

 private:
  struct estimate {
    int64_t rows = 0;
    double mean_us = 0;
    double mad_us = 0;  // mean absolute deviation
    bool known = false;
  };
  const estimate* at_or_above(int64_t rows) const;

  double slo_us_ = 0;
  std::vector<estimate> estimates_;  // ascending rows
  double rate_ = 0;                  // decayed arrival rate, rows per second, as of rate_time_
  time_point rate_time_{};
  bool have_rate_time_ = false;
};

/// A bounded FIFO ring of jobs; grows only for retries pushed back to the front.
class job_ring {
 public:
  explicit job_ring(size_t capacity = 0) : slots_(std::max<size_t>(capacity, 1)) {}
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  infer_job* front() const { return slots_[head_]; }
  infer_job* at(size_t i) const { return slots_[(head_ + i) % slots_.size()]; }
  void push_back(infer_job* j);
  void push_front(infer_job* j);
  infer_job* pop_front();
  /// Removes the jobs for which `pred` holds, keeping the order of the rest; returns them in `out`.
  template <class Pred>
  void remove_if(Pred pred, job_list& out);

 private:
  void grow();
  std::vector<infer_job*> slots_;
  size_t head_ = 0;
  size_t count_ = 0;
};

struct batch_decision {
  bool dispatch = false;
  int64_t max_rows = 0;              // rows the batch may take (the first job always goes)
  time_point wake_at = no_deadline;  // when to ask again if nothing changes
};

class batch_scheduler {
 public:
  batch_scheduler() = default;
  /// `candidate_rows`: the batch sizes with a compiled plan (the adaptive policy's choices).
  explicit batch_scheduler(const model_signature& sig, std::vector<int64_t> candidate_rows);

  /// Queues a job at its level (job->level); OVERLOADED when that level holds max_queue_size jobs.
  status enqueue(infer_job* job, time_point now);
  /// Puts a job that must be retried at the head of its level; never refused.
  void requeue_front(infer_job* job);

  batch_decision decide(time_point now, int replicas) const;
  /// Moves jobs into `out` (highest level first, FIFO) while they fit `max_rows` and share the
  /// first job's batch shape. The first job always goes.
  void take(int64_t max_rows, std::vector<infer_job*>& out);
  /// Removes queued jobs whose deadline is <= now and appends them to `expired`.
  void expire(time_point now, job_list& expired);
  /// Removes every queued job (shutdown, no replica left).
  void drain_all(job_list& out);

  size_t queued_jobs() const { return queued_jobs_; }
  int64_t queued_rows() const { return queued_rows_; }
  /// A lower bound on the earliest queued deadline (exact after `expire`).
  time_point earliest_deadline() const { return earliest_deadline_; }
  adaptive_policy& adaptive() { return adaptive_; }
  const adaptive_policy& adaptive() const { return adaptive_; }
  bool adaptive_enabled() const { return adaptive_enabled_; }

 private:
  std::vector<job_ring> levels_;  // index level-1
  uint32_t max_queue_size_ = 1;
  int64_t max_batch_size_ = 0;
  std::chrono::microseconds max_queue_delay_{0};
  std::vector<int64_t> preferred_;
  bool adaptive_enabled_ = false;
  adaptive_policy adaptive_;
  size_t queued_jobs_ = 0;
  int64_t queued_rows_ = 0;
  time_point earliest_deadline_ = no_deadline;
};

template <class Pred>
void job_ring::remove_if(Pred pred, job_list& out) {
  size_t kept = 0;
  for (size_t i = 0; i < count_; ++i) {
    infer_job* j = at(i);
    if (pred(j))
      out.push_back(j);
    else
      slots_[(head_ + kept++) % slots_.size()] = j;
  }
  count_ = kept;
}

}  // namespace troupe::serving
