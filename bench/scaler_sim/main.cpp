// scaler_sim: troupe's scaling policy, Ray Serve's default policy and static provisioning on the
// same traces, in a discrete-event simulation of ResNet-50 replicas on H100s (simulator.hpp).
//
//   scaler_sim [--out-dir bench/results] [--short] [--seed N] [--seeds N] [--trace NAME]...
//              [--series DIR] [--max-replicas N] [--upscale-delay-s S] [--downscale-delay-s S]
//              [--target-utilization U] [--backlog-drain-s S]
//
// Writes <out-dir>/scaler.json (rows {trace, policy, slo_attainment, replica_seconds,
// scale_actions, flaps} for --seed) and <out-dir>/scaler.md. --seeds N reruns troupe and Ray
// Serve on N - 1 further seeds (other arrivals and MMPP states) for the report's robustness table.
// --short runs every trace at a tenth of its length after a 60 s warm-up (the ctest). --series
// writes each run's per-second figures and scale events as CSV. Deterministic for a seed.

#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/scaler_sim/autoscalers.hpp"
#include "bench/scaler_sim/ray_serve_policy.hpp"
#include "bench/scaler_sim/report.hpp"

namespace troupe::scaler_sim {
namespace {

struct options {
  std::string out_dir;
  std::string series_dir;
  bool short_run = false;
  uint64_t seed = 1;
  uint32_t seeds = 1;
  std::vector<std::string> traces;
  uint32_t min_replicas = 1, max_replicas = 16;
  double upscale_delay_s = 2, downscale_delay_s = 600;
  serving::scaling_tuning tuning;
};

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--out-dir DIR] [--short] [--seed N] [--seeds N] [--trace NAME]... "
               "[--series DIR] [--max-replicas N] [--upscale-delay-s S] [--downscale-delay-s S] "
               "[--target-utilization U] [--backlog-drain-s S]\n",
               argv0);
  return 2;
}

std::string machine_line() {
  std::string cpu = "unknown CPU";
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  utsname u{};
  uname(&u);
  return cpu + ", " + std::to_string(std::thread::hardware_concurrency()) + " hardware threads, " +
         u.sysname + " " + u.release;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

void write_series(const std::string& dir, const trace& t, const std::string& policy,
                  const sim_result& r) {
  std::filesystem::create_directories(dir);
  std::ofstream csv(dir + "/" + t.name + "-" + policy + ".csv");
  csv << "second,rate,arrivals,late,held,ready,queued\n";
  for (size_t i = 0; i < r.series.size(); ++i) {
    const second_sample& s = r.series[i];
    csv << i << "," << t.rate(static_cast<double>(i)) << "," << s.arrivals << "," << s.late << ","
        << s.held << "," << s.ready << "," << s.queued << "\n";
  }
  std::ofstream ev(dir + "/" + t.name + "-" + policy + "-events.csv");
  ev << "at_s,from,to\n";
  for (const scale_event& e : r.events) ev << e.at_s << "," << e.from << "," << e.to << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--out-dir")
        o.out_dir = value();
      else if (a == "--short")
        o.short_run = true;
      else if (a == "--seed")
        o.seed = std::stoull(value());
      else if (a == "--seeds")
        o.seeds = static_cast<uint32_t>(std::stoul(value()));
      else if (a == "--trace")
        o.traces.push_back(value());
      else if (a == "--series")
        o.series_dir = value();
      else if (a == "--max-replicas")
        o.max_replicas = static_cast<uint32_t>(std::stoul(value()));
      else if (a == "--upscale-delay-s")
        o.upscale_delay_s = std::stod(value());
      else if (a == "--downscale-delay-s")
        o.downscale_delay_s = std::stod(value());
      else if (a == "--target-utilization")
        o.tuning.target_utilization = std::stod(value());
      else if (a == "--backlog-drain-s")
        o.tuning.backlog_drain = std::chrono::milliseconds(std::llround(std::stod(value()) * 1000));
      else
        return usage(argv[0]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return usage(argv[0]);
    }
  }

  sim_params p;
  p.record_series = !o.series_dir.empty();
  p.flap_window_s = o.downscale_delay_s;  // troupe's cooldown, the same window for every policy
  if (o.short_run) p.warmup_s = 60;
  const auto profile = measured_profile(p.service, p.max_batch);

  serving::scaling_config tc;
  tc.min_replicas = o.min_replicas;
  tc.max_replicas = o.max_replicas;
  tc.slo_p99_ms = p.slo_ms;
  tc.upscale_delay = std::chrono::milliseconds(std::llround(o.upscale_delay_s * 1000));
  tc.downscale_delay = std::chrono::milliseconds(std::llround(o.downscale_delay_s * 1000));
  if (auto st = serving::check_scaling_config(tc); !st.is_ok()) {
    std::fprintf(stderr, "%s\n", st.to_string().c_str());
    return 2;
  }
  const serving::scaling_tuning tuning = o.tuning;
  const double capacity =
      serving::replica_capacity_rps(profile, p.slo_ms, tuning.slo_latency_share);
  const double planned = capacity * tuning.target_utilization;
  // Static provisioning plans what troupe's policy plans per replica (the same utilisation).
  const auto provision = [&](double rps) {
    return std::clamp<uint32_t>(static_cast<uint32_t>(std::ceil(rps / planned - 1e-9)),
                                o.min_replicas, o.max_replicas);
  };

  ray_serve_config rc;  // Ray's documented defaults; the same bounds as troupe's
  rc.min_replicas = o.min_replicas;
  rc.max_replicas = o.max_replicas;

  // Supplementary: Ray's policy with target_ongoing_requests set as its docs advise (load-test a
  // replica, set the target from the latency objective): the ongoing requests of one replica at
  // the load troupe plans per replica.
  ray_serve_config tuned = rc;
  {
    trace calibration;
    calibration.name = "calibration";
    calibration.duration_s = o.short_run ? 20 : 120;
    calibration.steps = {{0, planned}};
    static_autoscaler one("static", 1);
    sim_params cp = p;
    cp.warmup_s = 5;
    cp.record_series = false;
    tuned.target_ongoing_requests = simulate(calibration, one, 1, cp).mean_ongoing_per_replica;
  }
  std::fprintf(stderr,
               "replica capacity at the SLO %.0f req/s (planned %.0f); Ray tuned target %.1f\n",
               capacity, planned, tuned.target_ongoing_requests);

  const double duration_scale = o.short_run ? 0.1 : 1;
  const auto wanted = [&](const trace& t) {
    return o.traces.empty() ||
           std::find(o.traces.begin(), o.traces.end(), t.name) != o.traces.end();
  };
  std::vector<report_row> rows, extra, seeds;
  for (uint32_t k = 0; k < std::max<uint32_t>(o.seeds, 1); ++k) {
    const uint64_t seed = o.seed + k;
    p.seed = seed;
    for (const trace& t : standard_traces(seed, 1, duration_scale)) {
      if (!wanted(t)) continue;
      const uint32_t initial = provision(t.rate(-p.warmup_s));
      std::vector<std::unique_ptr<autoscaler>> policies;
      policies.push_back(std::make_unique<troupe_autoscaler>(tc, initial, profile, tuning));
      policies.push_back(std::make_unique<ray_serve_autoscaler>(rc));
      if (k == 0) {
        policies.push_back(
            std::make_unique<static_autoscaler>("static_mean", provision(t.mean_rps())));
        policies.push_back(
            std::make_unique<static_autoscaler>("static_peak", provision(t.peak_rps())));
        policies.push_back(std::make_unique<ray_serve_autoscaler>(tuned, "ray_serve_tuned"));
      }
      for (auto& a : policies) {
        const auto wall0 = std::chrono::steady_clock::now();
        const uint32_t start = a->tick_s() == 0 ? a->tick({}) : initial;
        const sim_result r = simulate(t, *a, start, p);
        const double wall =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
        std::fprintf(stderr,
                     "seed %2llu %-8s %-16s attainment %.5f  replica-s %9.0f  actions %4u  "
                     "flaps %3u  peak %2u  (%.1f s)\n",
                     static_cast<unsigned long long>(seed), t.name.c_str(), a->name().c_str(),
                     r.slo_attainment(), r.replica_seconds, r.scale_actions, r.flaps,
                     r.peak_replicas, wall);
        if (!o.series_dir.empty() && k == 0) write_series(o.series_dir, t, a->name(), r);
        report_row row{t.name, a->name(), seed, r};
        row.result.series.clear();
        (k > 0 ? seeds : a->name() == "ray_serve_tuned" ? extra : rows).push_back(std::move(row));
      }
    }
  }

  if (!o.out_dir.empty()) {
    report_context c;
    c.seed = o.seed;
    c.seeds = std::max<uint32_t>(o.seeds, 1);
    c.short_run = o.short_run;
    c.machine = machine_line();
    c.date = utc_now();
    c.params = p;
    c.params.seed = o.seed;
    c.troupe = tc;
    c.tuning = tuning;
    c.ray = rc;
    c.ray_tuned_target = tuned.target_ongoing_requests;
    c.capacity_rps = capacity;
    for (const trace& t : standard_traces(o.seed, 1, duration_scale))
      if (wanted(t)) c.traces.push_back(t);
    std::filesystem::create_directories(o.out_dir);
    std::ofstream(o.out_dir + "/scaler.json") << report_json(rows, seeds, c).dump(1) << "\n";
    std::ofstream(o.out_dir + "/scaler.md") << report_markdown(rows, extra, seeds, c);
  }
  return 0;
}

}  // namespace troupe::scaler_sim

int main(int argc, char** argv) {
  return troupe::scaler_sim::main(argc, argv);
}
