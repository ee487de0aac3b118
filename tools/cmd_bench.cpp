// `troupe bench`: a load generator against a serving node. Closed loop (--concurrency N: N
// requests always in flight) or open loop (--rate R: Poisson arrivals at R requests/s, whatever the
// replies do). Reports throughput, latency percentiles and errors by code; a progress line every
// second on stderr; --json writes the same figures. Speaks troupe's ZeroMQ protocol, or KServe v2
// gRPC with a grpc://host:port server (troupe's gRPC door, or any KServe v2 server).

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cluster/client.hpp"
#ifdef TROUPE_HAVE_GRPC
#include "cluster/kserve_grpc_client.hpp"
#endif
#include "tools/commands.hpp"
#include "tools/npz.hpp"

namespace troupe::tools {
namespace {

using bench_clock = std::chrono::steady_clock;

struct bench_options {
  std::string model;
  std::string server = "tcp://127.0.0.1:5555";
  int concurrency = 0;
  double rate = 0;
  double duration_s = 10;
  double warmup_s = 1;
  int connections = 1;
  std::string inputs_path;
  std::string json_path;
  int64_t version = 0;
  uint64_t timeout_ms = 0;
  int64_t rows = 1;  // the batch dim of synthesized inputs
  bool quiet = false;
};

/// What one connection measured after the warm-up.
struct tally {
  std::vector<double> latencies_ms;  // successful replies
  std::map<std::string, uint64_t> errors;
  uint64_t sent = 0;
  uint64_t ok = 0;
  uint64_t lost = 0;  // no reply before the end
  uint64_t failovers = 0;  // requests sent again to another endpoint (several endpoints)
  // Sums over the successful measured replies of what the server reported in them.
  uint64_t batch_rows = 0;  // rows of the batch each request ran in
  uint64_t queue_us = 0, compute_us = 0, server_total_us = 0;
};

struct shared_progress {
  std::atomic<uint64_t> sent{0}, ok{0}, errors{0};
  std::atomic<bool> stop_sending{false};
};

/// One load-generating connection: a request prepared once, sent under many ids.
class bench_connection {
 public:
  virtual ~bench_connection() = default;
  virtual status send(const std::string& id) = 0;
  /// One reply (outputs not decoded), or nullopt after `wait` without one.
  virtual expected<std::optional<cluster::infer_reply>> receive(std::chrono::milliseconds wait) = 0;
  /// Requests sent again to another endpoint after theirs was lost (several endpoints).
  virtual uint64_t failovers() const { return 0; }
};

/// The door the bench drives: `--server tcp://...` (troupe's ZeroMQ protocol) or grpc://host:port
/// (KServe v2 gRPC). Opens connections and answers the probe's metadata and first request.
class bench_target {
 public:
  virtual ~bench_target() = default;
  virtual expected<cluster::model_metadata> metadata(const bench_options& o) = 0;
  virtual expected<cluster::infer_reply> infer(const cluster::infer_request& r) = 0;
  virtual expected<std::unique_ptr<bench_connection>> open(const cluster::infer_request& r) = 0;
  /// Whether replies carry the server's batch size and queue/compute times (troupe's protocol).
  virtual bool reports_server_timings() const = 0;
};

constexpr std::chrono::milliseconds kProbeTimeout(30000);

class zmq_connection final : public bench_connection {
 public:
  zmq_connection(std::unique_ptr<cluster::client> c, std::shared_ptr<cluster::client::prepared> p)
      : client_(std::move(c)), prepared_(std::move(p)) {}
  status send(const std::string& id) override { return client_->send(*prepared_, id); }
  expected<std::optional<cluster::infer_reply>> receive(std::chrono::milliseconds wait) override {
    return client_->receive(wait, /*decode_outputs=*/false);
  }
  uint64_t failovers() const override { return client_->failovers(); }

 private:
  std::unique_ptr<cluster::client> client_;
  std::shared_ptr<cluster::client::prepared> prepared_;
};

class zmq_target final : public bench_target {
 public:
  static expected<std::unique_ptr<bench_target>> create(const std::string& server) {
    TROUPE_ASSIGN_OR_RETURN(auto probe, cluster::client::connect(server));
    return std::unique_ptr<bench_target>(new zmq_target(server, std::move(probe)));
  }
  expected<cluster::model_metadata> metadata(const bench_options& o) override {
    return probe_->metadata(o.model, o.version, std::chrono::milliseconds(10000));
  }
  expected<cluster::infer_reply> infer(const cluster::infer_request& r) override {
    return probe_->infer(r, kProbeTimeout);
  }
  expected<std::unique_ptr<bench_connection>> open(const cluster::infer_request& r) override {
    TROUPE_ASSIGN_OR_RETURN(auto c, cluster::client::connect(server_));
    TROUPE_ASSIGN_OR_RETURN(auto prepared, c->prepare(r));
    return std::unique_ptr<bench_connection>(new zmq_connection(std::move(c), std::move(prepared)));
  }
  bool reports_server_timings() const override { return true; }

 private:
  zmq_target(std::string server, std::unique_ptr<cluster::client> probe)
      : server_(std::move(server)), probe_(std::move(probe)) {}
  std::string server_;
  std::unique_ptr<cluster::client> probe_;
};

constexpr std::string_view kGrpcScheme = "grpc://";

#ifdef TROUPE_HAVE_GRPC
class grpc_connection final : public bench_connection {
 public:
  grpc_connection(std::unique_ptr<cluster::kserve_grpc_client> c,
                  std::shared_ptr<cluster::kserve_grpc_client::prepared> p)
      : client_(std::move(c)), prepared_(std::move(p)) {}
  status send(const std::string& id) override { return client_->send(*prepared_, id); }
  expected<std::optional<cluster::infer_reply>> receive(std::chrono::milliseconds wait) override {
    return client_->receive(wait, /*decode_outputs=*/false);
  }

 private:
  std::unique_ptr<cluster::kserve_grpc_client> client_;
  std::shared_ptr<cluster::kserve_grpc_client::prepared> prepared_;
};

class grpc_target final : public bench_target {
 public:
  static expected<std::unique_ptr<bench_target>> create(std::string address) {
    TROUPE_ASSIGN_OR_RETURN(auto probe, cluster::kserve_grpc_client::connect(address, kProbeTimeout));
    return std::unique_ptr<bench_target>(new grpc_target(std::move(address), std::move(probe)));
  }
  expected<cluster::model_metadata> metadata(const bench_options& o) override {
    return probe_->metadata(o.model, o.version, std::chrono::milliseconds(10000));
  }
  expected<cluster::infer_reply> infer(const cluster::infer_request& r) override {
    return probe_->infer(r, kProbeTimeout);
  }
  expected<std::unique_ptr<bench_connection>> open(const cluster::infer_request& r) override {
    TROUPE_ASSIGN_OR_RETURN(auto c, cluster::kserve_grpc_client::connect(address_, kProbeTimeout));
    TROUPE_ASSIGN_OR_RETURN(auto prepared, c->prepare(r));
    return std::unique_ptr<bench_connection>(new grpc_connection(std::move(c), std::move(prepared)));
  }
  bool reports_server_timings() const override { return false; }

 private:
  grpc_target(std::string address, std::unique_ptr<cluster::kserve_grpc_client> probe)
      : address_(std::move(address)), probe_(std::move(probe)) {}
  std::string address_;
  std::unique_ptr<cluster::kserve_grpc_client> probe_;
};
#endif

expected<std::unique_ptr<bench_target>> open_target(const std::string& server) {
  if (server.rfind(kGrpcScheme, 0) != 0) return zmq_target::create(server);
#ifdef TROUPE_HAVE_GRPC
  return grpc_target::create(server.substr(kGrpcScheme.size()));
#else
  return unsupported("this troupe was built without gRPC: '" + server + "' cannot be reached");
#endif
}

expected<cluster::infer_request> make_request(const bench_options& o, bench_target& target) {
  cluster::infer_request r;
  r.model = o.model;
  r.version = o.version;
  r.timeout_us = o.timeout_ms * 1000;
  if (!o.inputs_path.empty()) {
    TROUPE_ASSIGN_OR_RETURN(named_tensors inputs, read_npz(o.inputs_path));
    for (auto& [name, t] : inputs) r.inputs.emplace_back(name, std::move(t));
    return r;
  }
  // Synthesized inputs from the model's metadata: dynamic dims become --rows (the batch dim) or 1.
  TROUPE_ASSIGN_OR_RETURN(auto md, target.metadata(o));
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (const auto& spec : md.inputs) {
    shape_t shape;
    for (size_t d = 0; d < spec.shape.size(); ++d)
      shape.push_back(spec.shape[d] >= 0 ? spec.shape[d] : (d == 0 ? o.rows : 1));
    tensor t = tensor::zeros(spec.type, shape);
    if (spec.type == dtype::f32)
      for (int64_t i = 0; i < t.elements(); ++i) t.data<float>()[i] = dist(rng);
    r.inputs.emplace_back(spec.name, std::move(t));
  }
  return r;
}

/// One connection's loop. `rate` > 0: open loop at that rate; else closed loop with `concurrency`.
status drive(const bench_options& o, bench_target& target, const cluster::infer_request& request,
             int concurrency, double rate, bench_clock::time_point start,
             bench_clock::time_point measure_from, bench_clock::time_point end,
             shared_progress& progress, tally& out, uint64_t seed) {
  TROUPE_ASSIGN_OR_RETURN(auto c, target.open(request));
  std::vector<bench_clock::time_point> sent_at;
  sent_at.reserve(rate > 0 ? static_cast<size_t>(rate * (o.duration_s + o.warmup_s) * 1.2) + 16
                           : 1 << 16);
  uint64_t in_flight = 0;
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate > 0 ? rate : 1);
  auto next_send = start;

  auto send_one = [&]() -> status {
    const uint64_t id = sent_at.size();
    sent_at.push_back(bench_clock::now());
    TROUPE_RETURN_IF_ERROR(c->send(std::to_string(id)));
    ++in_flight;
    progress.sent.fetch_add(1, std::memory_order_relaxed);
    if (sent_at.back() >= measure_from) ++out.sent;
    return status::ok();
  };

  if (rate <= 0)
    for (int i = 0; i < concurrency; ++i) TROUPE_RETURN_IF_ERROR(send_one());
  const auto drain_until = end + std::chrono::seconds(5);
  for (;;) {
    const auto now = bench_clock::now();
    const bool sending = now < end && !progress.stop_sending.load(std::memory_order_relaxed);
    if (!sending && in_flight == 0) break;
    if (now >= drain_until) break;
    std::chrono::milliseconds wait(50);
    if (sending && rate > 0) {
      while (next_send <= now) {
        TROUPE_RETURN_IF_ERROR(send_one());
        next_send += std::chrono::nanoseconds(static_cast<int64_t>(gap(rng) * 1e9));
      }
      wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_send - bench_clock::now());
      if (wait.count() < 0) wait = std::chrono::milliseconds(0);
    }
    TROUPE_ASSIGN_OR_RETURN(auto reply, c->receive(wait));
    if (!reply) continue;
    const auto done = bench_clock::now();
    --in_flight;
    uint64_t id = 0;
    try {
      id = std::stoull(reply->id);
    } catch (...) {
      return io_error("reply with an unknown id '" + reply->id + "'");
    }
    if (id >= sent_at.size()) return io_error("reply with an unknown id '" + reply->id + "'");
    const bool measured = sent_at[id] >= measure_from;
    if (reply->result.is_ok()) {
      progress.ok.fetch_add(1, std::memory_order_relaxed);
      if (measured) {
        ++out.ok;
        out.latencies_ms.push_back(
            std::chrono::duration<double, std::milli>(done - sent_at[id]).count());
        out.batch_rows += reply->batch_size;
        out.queue_us += reply->queue_us;
        out.compute_us += reply->compute_us;
        out.server_total_us += reply->total_us;
      }
    } else {
      progress.errors.fetch_add(1, std::memory_order_relaxed);
      if (measured) ++out.errors[std::string(to_string(reply->result.code()))];
    }
    if (rate <= 0 && bench_clock::now() < end &&
        !progress.stop_sending.load(std::memory_order_relaxed))
      TROUPE_RETURN_IF_ERROR(send_one());
  }
  out.lost = in_flight;
  out.failovers = c->failovers();
  return status::ok();
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(sorted.size() - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

status run_bench(const bench_options& o) {
  if ((o.concurrency > 0) == (o.rate > 0))
    return invalid_argument("give exactly one of --concurrency N or --rate R");
  if (o.duration_s <= 0) return invalid_argument("--duration must be positive");
  if (o.connections < 1) return invalid_argument("--connections must be at least 1");
  TROUPE_ASSIGN_OR_RETURN(auto target, open_target(o.server));
  TROUPE_ASSIGN_OR_RETURN(cluster::infer_request request, make_request(o, *target));
  // One request first: a wrong model or input fails here, with its typed error, not as a flood.
  request.id = "bench-probe";
  TROUPE_ASSIGN_OR_RETURN(auto first, target->infer(request));
  if (!first.result.is_ok()) return first.result.with_context("first request");

  // Closed loop: every connection keeps at least one request in flight, so there are never more
  // connections than requests in flight.
  const int n = o.concurrency > 0 ? std::min(o.connections, o.concurrency) : o.connections;
  const auto start = bench_clock::now();
  const auto measure_from =
      start + std::chrono::microseconds(static_cast<int64_t>(o.warmup_s * 1e6));
  const auto end =
      measure_from + std::chrono::microseconds(static_cast<int64_t>(o.duration_s * 1e6));
  shared_progress progress;
  std::vector<tally> tallies(static_cast<size_t>(n));
  std::vector<status> results(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    const int conc = o.concurrency / n + (i < o.concurrency % n ? 1 : 0);
    const double rate = o.rate / n;
    threads.emplace_back([&, i, conc, rate] {
      results[static_cast<size_t>(i)] =
          drive(o, *target, request, std::max(conc, o.concurrency > 0 ? 1 : 0), rate, start, measure_from,
                end, progress, tallies[static_cast<size_t>(i)], 1000 + static_cast<uint64_t>(i));
    });
  }
  uint64_t last_ok = 0;
  auto last = start;
  while (bench_clock::now() < end) {
    std::this_thread::sleep_until(std::min(end, last + std::chrono::seconds(1)));
    const auto now = bench_clock::now();
    const uint64_t ok = progress.ok.load();
    if (!o.quiet)
      std::fprintf(
          stderr, "[%5.1fs%s] sent %llu  ok %llu  errors %llu  %.0f ok/s\n",
          std::chrono::duration<double>(now - start).count(), now < measure_from ? " warm-up" : "",
          static_cast<unsigned long long>(progress.sent.load()),
          static_cast<unsigned long long>(ok),
          static_cast<unsigned long long>(progress.errors.load()),
          static_cast<double>(ok - last_ok) / std::chrono::duration<double>(now - last).count());
    last_ok = ok;
    last = now;
  }
  for (auto& t : threads) t.join();
  for (const auto& s : results) TROUPE_RETURN_IF_ERROR(s);

  tally all;
  for (auto& t : tallies) {
    all.sent += t.sent;
    all.ok += t.ok;
    all.lost += t.lost;
    all.failovers += t.failovers;
    all.batch_rows += t.batch_rows;
    all.queue_us += t.queue_us;
    all.compute_us += t.compute_us;
    all.server_total_us += t.server_total_us;
    all.latencies_ms.insert(all.latencies_ms.end(), t.latencies_ms.begin(), t.latencies_ms.end());
    for (const auto& [code, count] : t.errors) all.errors[code] += count;
  }
  std::sort(all.latencies_ms.begin(), all.latencies_ms.end());
  uint64_t errors = 0;
  for (const auto& [code, count] : all.errors) errors += count;
  const double throughput = static_cast<double>(all.ok) / o.duration_s;
  const double mean = all.latencies_ms.empty()
                          ? 0
                          : std::accumulate(all.latencies_ms.begin(), all.latencies_ms.end(), 0.0) /
                                static_cast<double>(all.latencies_ms.size());

  nlohmann::json j;
  j["model"] = o.model;
  j["server"] = o.server;
  j["mode"] = o.rate > 0 ? "open_loop_poisson" : "closed_loop";
  if (o.rate > 0)
    j["rate_rps"] = o.rate;
  else
    j["concurrency"] = o.concurrency;
  j["connections"] = n;
  j["duration_s"] = o.duration_s;
  j["warmup_s"] = o.warmup_s;
  j["sent"] = all.sent;
  j["ok"] = all.ok;
  j["errors"] = errors;
  j["errors_by_code"] = all.errors;
  j["lost"] = all.lost;
  j["failovers"] = all.failovers;
  j["throughput_rps"] = throughput;
  j["latency_ms"] = {{"mean", mean},
                     {"p50", percentile(all.latencies_ms, 50)},
                     {"p90", percentile(all.latencies_ms, 90)},
                     {"p99", percentile(all.latencies_ms, 99)},
                     {"p99.9", percentile(all.latencies_ms, 99.9)},
                     {"max", all.latencies_ms.empty() ? 0.0 : all.latencies_ms.back()}};
  // What the replies say the server did, averaged over the successful measured requests: the
  // rows of the batch each ran in (a request-weighted mean: a batch of 32 counts 32 times), and
  // the time queued, computing (the batch's run, staging included) and in the node overall.
  const double per_ok = all.ok ? 1.0 / static_cast<double>(all.ok) : 0.0;
  // KServe replies carry no server timings: the key is absent then.
  if (target->reports_server_timings())
    j["server_reported"] = {
        {"batch_rows_mean", static_cast<double>(all.batch_rows) * per_ok},
        {"queue_ms_mean", static_cast<double>(all.queue_us) * per_ok / 1000},
        {"compute_ms_mean", static_cast<double>(all.compute_us) * per_ok / 1000},
        {"total_ms_mean", static_cast<double>(all.server_total_us) * per_ok / 1000}};

  std::printf("throughput: %.1f requests/s (%llu ok in %.1f s)\n", throughput,
              static_cast<unsigned long long>(all.ok), o.duration_s);
  std::printf("latency_ms: p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f mean=%.3f max=%.3f\n",
              percentile(all.latencies_ms, 50), percentile(all.latencies_ms, 90),
              percentile(all.latencies_ms, 99), percentile(all.latencies_ms, 99.9), mean,
              all.latencies_ms.empty() ? 0.0 : all.latencies_ms.back());
  if (target->reports_server_timings())
    std::printf("server: batch_rows_mean=%.2f queue_ms_mean=%.3f compute_ms_mean=%.3f\n",
                static_cast<double>(all.batch_rows) * per_ok,
                static_cast<double>(all.queue_us) * per_ok / 1000,
                static_cast<double>(all.compute_us) * per_ok / 1000);
  std::printf("errors: %llu", static_cast<unsigned long long>(errors));
  for (const auto& [code, count] : all.errors)
    std::printf(" %s=%llu", code.c_str(), static_cast<unsigned long long>(count));
  std::printf("  lost: %llu", static_cast<unsigned long long>(all.lost));
  if (all.failovers > 0)
    std::printf("  sent again after a lost endpoint: %llu",
                static_cast<unsigned long long>(all.failovers));
  std::printf("\n");
  std::fflush(stdout);
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << j.dump(2) << "\n";
    if (!f) return io_error("cannot write '" + o.json_path + "'");
  }
  return status::ok();
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<bench_options>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Load-test a serving node: closed loop or open-loop Poisson arrivals.");
  cmd->add_option("model", o->model, "The model's name")->required();
  cmd->add_option("--server,-s", o->server,
                  "The node's endpoint: its ZeroMQ address, or grpc://host:port for a KServe v2 "
                  "gRPC server")
      ->capture_default_str();
  cmd->add_option("--concurrency,-c", o->concurrency, "Closed loop: requests kept in flight");
  cmd->add_option("--rate,-r", o->rate, "Open loop: Poisson arrivals, requests per second");
  cmd->add_option("--duration,-d", o->duration_s, "Measured seconds")->capture_default_str();
  cmd->add_option("--warmup", o->warmup_s, "Seconds of load before measuring")
      ->capture_default_str();
  cmd->add_option("--connections", o->connections,
                  "Client connections (DEALER sockets or gRPC channels, one thread each); closed "
                  "loop: at most --concurrency")
      ->capture_default_str();
  cmd->add_option("--inputs,-i", o->inputs_path,
                  "Request inputs (.npz); default: random, from the model's metadata");
  cmd->add_option("--rows", o->rows, "Batch dim of synthesized inputs")->capture_default_str();
  cmd->add_option("--version", o->version, "Model version (0: the traffic policy)");
  cmd->add_option("--timeout-ms", o->timeout_ms,
                  "Server-side deadline per request (0: the model's default)");
  cmd->add_option("--json", o->json_path, "Write the figures to this JSON file");
  cmd->add_flag("--quiet,-q", o->quiet, "No progress line");
  cmd->footer(
      "Prints throughput (successful replies per measured second), latency percentiles of "
      "successful\n"
      "replies (p50/p90/p99/p99.9, ms), what the replies report of the server (mean rows of the "
      "batch a\n"
      "request ran in, mean queue and compute time) and errors by code. The JSON holds the same\n"
      "figures. --connections N spreads the requests in flight over N DEALER connections, one "
      "thread\n"
      "each: one connection carries one I/O thread's worth of bytes (about 2 GB/s on loopback), "
      "too\n"
      "little for image-sized requests at GPU rates.\n\n"
      "Examples:\n"
      "  troupe bench mlp --server tcp://127.0.0.1:5555 --concurrency 32 --duration 10\n"
      "  troupe bench mlp --rate 2000 --duration 10 --json out.json");
  cmd->callback([o, &exit_code] {
    const status s = run_bench(*o);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
}

}  // namespace troupe::tools
