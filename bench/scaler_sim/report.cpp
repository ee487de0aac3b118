#include "bench/scaler_sim/report.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace troupe::scaler_sim {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string thousands(double v) {
  std::string s = fmt("%.0f", v);
  for (int i = static_cast<int>(s.size()) - 3; i > (s[0] == '-' ? 1 : 0); i -= 3) s.insert(i, ",");
  return s;
}

const report_row* find(const std::vector<report_row>& rows, const std::string& trace,
                       const std::string& policy, uint64_t seed) {
  for (const report_row& r : rows)
    if (r.trace == trace && r.policy == policy && r.seed == seed) return &r;
  return nullptr;
}

nlohmann::ordered_json row_json(const report_row& r) {
  return {{"trace", r.trace},
          {"policy", r.policy},
          {"slo_attainment", r.result.slo_attainment()},
          {"replica_seconds", std::round(r.result.replica_seconds * 10) / 10},
          {"scale_actions", r.result.scale_actions},
          {"flaps", r.result.flaps}};
}

/// troupe against Ray Serve on one trace and seed: the three conditions.
struct verdict {
  bool attainment = false, replicas = false, flaps = false;
  double ratio = 0;
  bool all() const { return attainment && replicas && flaps; }
};

verdict judge(const sim_result& troupe, const sim_result& ray) {
  verdict v;
  v.attainment = troupe.slo_attainment() >= ray.slo_attainment();
  v.ratio = ray.replica_seconds > 0 ? troupe.replica_seconds / ray.replica_seconds : 0;
  v.replicas = v.ratio <= 0.8;
  v.flaps = troupe.flaps == 0;
  return v;
}

std::string misses(const verdict& v) {
  std::string s;
  const auto add = [&](const char* w) { s += (s.empty() ? "" : ", ") + std::string(w); };
  if (!v.attainment) add("attainment");
  if (!v.replicas) add("replica-seconds");
  if (!v.flaps) add("flaps");
  return s.empty() ? "met" : "**missed** (" + s + ")";
}

/// What troupe's policy and static provisioning plan for `rps`.
uint32_t planned_replicas(const report_context& c, double rps) {
  return static_cast<uint32_t>(std::ceil(rps / (c.capacity_rps * c.tuning.target_utilization)));
}

/// "goes from 3 to 12 replicas 1 s after the edge, to 16 3 s after it": the scale-ups in the two
/// minutes after `edge_s`.
std::string events_text(const sim_result& r, double edge_s) {
  std::string out;
  int n = 0;
  for (const scale_event& e : r.events) {
    if (e.at_s < edge_s || e.at_s > edge_s + 120 || e.to < e.from) continue;
    out += n == 0 ? "goes from " + std::to_string(e.from) + " to " : std::string(", to ");
    out += std::to_string(e.to) + " replicas " + fmt("%.1f", e.at_s - edge_s) + " s after the edge";
    if (++n == 3) break;
  }
  return n ? out : "does not scale up";
}

/// The reasons behind the verdicts, with this run's numbers.
std::string why(const std::vector<report_row>& rows, const std::vector<report_row>& extra,
                const std::vector<report_row>& other_seeds, const report_context& c,
                std::map<std::string, double>& duration) {
  std::ostringstream md;
  const auto mean_replicas = [&](const report_row* r) {
    return r ? r->result.replica_seconds / duration[r->trace] : 0.0;
  };
  md << "\n## Why\n\n";
  md << "- **Ray Serve's default is, on this model, static provisioning at max_replicas.** Its "
        "rule wants total ongoing requests / "
     << fmt("%g", c.ray.target_ongoing_requests)
     << " replicas, but a batching replica holds many requests at once: "
     << fmt("%.1f", c.ray_tuned_target) << " on average at the load troupe plans per replica ("
     << thousands(c.capacity_rps * c.tuning.target_utilization) << " req/s). So it asks for ~"
     << fmt("%.0f", c.ray_tuned_target / c.ray.target_ongoing_requests)
     << "x the replicas the load needs and sits at the bound (" << c.ray.max_replicas
     << ") whenever the load is above a few thousand requests per second: mean replicas";
  for (const trace& t : c.traces)
    md << " " << t.name << " "
       << fmt("%.1f", mean_replicas(find(rows, t.name, "ray_serve", c.seed))) << ",";
  md.seekp(-1, std::ios_base::cur);
  md << ". That standing capacity is what it has on every burst, and what the replica-seconds "
        "target is measured against.\n";

  if (const report_row* tr = find(rows, "spike", "troupe", c.seed),
      *ray = find(rows, "spike", "ray_serve", c.seed),
      *peak = find(rows, "spike", "static_peak", c.seed);
      tr && ray) {
    const trace* t = nullptr;
    for (const trace& x : c.traces)
      if (x.name == "spike") t = &x;
    const double late =
        (1 - tr->result.slo_attainment()) * static_cast<double>(tr->result.requests);
    md << "- **spike** (attainment "
       << (judge(tr->result, ray->result).attainment ? "met" : "missed") << "): troupe holds the "
       << (t ? planned_replicas(c, t->rate(0)) : 0)
       << " replicas 40k req/s needs and reacts at its first tick after the edge (a growing "
          "backlog skips the upscale delay): "
       << events_text(tr->result, t ? t->steps[1].first : 0) << ". The new replicas serve "
       << fmt("%.1f", c.params.startup_s)
       << " s later and the backlog then drains. Requests late: " << thousands(late) << ", about "
       << fmt("%.1f", t ? late / t->peak_rps() : 0) << " s of the spike's traffic, "
       << fmt("%.2f%%", 100 * (1 - tr->result.slo_attainment()))
       << " of the trace's requests. Ray, at " << fmt("%.1f", mean_replicas(ray))
       << " replicas on average, has the spike's capacity standing. A reactive policy cannot "
          "match that without holding it too: static provisioning for the spike";
    if (peak)
      md << " (" << peak->result.peak_replicas << " replicas) meets the attainment with "
         << fmt("%.1f%%", 100 * peak->result.replica_seconds / ray->result.replica_seconds)
         << " of Ray's replica-seconds";
    md << ".\n";
  }

  if (const report_row* tr = find(rows, "mmpp", "troupe", c.seed); tr) {
    int missed = 0, runs = 0;
    for (uint64_t seed = c.seed; seed < c.seed + c.seeds; ++seed) {
      const auto& pool = seed == c.seed ? rows : other_seeds;
      const report_row* a = find(pool, "mmpp", "troupe", seed);
      const report_row* b = find(pool, "mmpp", "ray_serve", seed);
      if (!a || !b) continue;
      ++runs;
      missed += !judge(a->result, b->result).all();
    }
    md << "- **mmpp** (met on " << runs - missed << " of " << runs
       << " seeds): bursts come every 150 s on average, within troupe's downscale window ("
       << fmt("%.0f", c.troupe.downscale_delay.count() / 1000.0)
       << " s), so it keeps the high state's replicas (" << fmt("%.1f", mean_replicas(tr))
       << " on average in seed " << c.seed
       << ") and meets every burst. Where a quiet period outlasts the window (the seeds that "
          "miss: quiet periods are exponential, 120 s on average), it scales down, and the next "
          "burst finds the "
       << planned_replicas(c, 40'000)
       << " replicas of the quiet state: a few seconds of it late, and the scale-up counts as "
          "flaps. "
          "The flap widens troupe's window for the bursts after it; Ray never scales down at 40k "
          "req/s.\n";
  }
  const trace* step = nullptr;
  for (const trace& x : c.traces)
    if (x.name == "step") step = &x;
  if (const report_row* tr = find(rows, "step", "troupe", c.seed),
      *ray = find(rows, "step", "ray_serve", c.seed);
      tr && ray && step)
    md << "- **step**: troupe " << events_text(tr->result, step->steps[1].first)
       << " (the backlog's drain), and keeps that for its cooldown: "
       << fmt("%.0f%%", 100 * tr->result.replica_seconds / ray->result.replica_seconds)
       << " of Ray's replica-seconds. Ray " << events_text(ray->result, step->steps[1].first)
       << ": its upscale_delay_s (" << fmt("%g", c.ray.upscale_delay_s)
       << " s) with a 30x load on the replicas of 6k req/s, then a queue to drain. Late: "
       << fmt("%.2f%%", 100 * (1 - ray->result.slo_attainment())) << " of requests for Ray, "
       << fmt("%.2f%%", 100 * (1 - tr->result.slo_attainment())) << " for troupe.\n";
  if (const report_row* tr = find(rows, "diurnal", "troupe", c.seed); tr)
    md << "- **diurnal**: both meet every request; troupe follows the sine one replica at a time "
          "("
       << tr->result.scale_actions
       << " scale actions), holds each count for the downscale window after the load falls, "
          "and does not scale down past a trough while the rate already rises (the trend check), "
          "which is where it flapped without it.\n";
  bool tuned_worse = !extra.empty();
  for (const report_row& r : extra)
    if (const report_row* d = find(rows, r.trace, "ray_serve", c.seed))
      tuned_worse = tuned_worse && r.result.slo_attainment() < d->result.slo_attainment();
  if (tuned_worse)
    md << "- **Ray with a tuned target** meets fewer requests than with the default on every "
          "trace: with "
          "batching, ongoing requests per replica fall faster than the load per replica (batches "
          "shrink), so total / target undershoots what the load needs; the replicas it removes "
          "are missed within its upscale delay, and it oscillates (the flaps above).\n";
  return md.str();
}

}  // namespace

nlohmann::ordered_json report_json(const std::vector<report_row>& rows,
                                   const std::vector<report_row>& other_seeds,
                                   const report_context& c) {
  nlohmann::ordered_json out;
  out["rows"] = nlohmann::ordered_json::array();
  for (const report_row& r : rows) out["rows"].push_back(row_json(r));
  out["other_seeds"] = nlohmann::ordered_json::array();
  for (const report_row& r : other_seeds) {
    auto j = row_json(r);
    j["seed"] = r.seed;
    out["other_seeds"].push_back(j);
  }
  out["seed"] = c.seed;
  out["short"] = c.short_run;
  out["date"] = c.date;
  out["machine"] = c.machine;
  out["model"] = "ResNet-50 fp16, H100 (service times: bench/results/serving-gpu.json)";
  out["slo_p99_ms"] = c.params.slo_ms;
  out["replica_startup_s"] = c.params.startup_s;
  out["flap_window_s"] = c.params.flap_window_s;
  out["min_replicas"] = c.troupe.min_replicas;
  out["max_replicas"] = c.troupe.max_replicas;
  out["replica_capacity_rps"] = std::round(c.capacity_rps);
  return out;
}

std::string report_markdown(const std::vector<report_row>& rows,
                            const std::vector<report_row>& extra,
                            const std::vector<report_row>& other_seeds, const report_context& c) {
  const sim_params& p = c.params;
  const double planned = c.capacity_rps * c.tuning.target_utilization;
  std::ostringstream md;
  md << "# Scaler: troupe's policy against Ray Serve's default autoscaling and static "
        "provisioning\n\n";
  md << "Simulated by `bench/scaler_sim` (the real `serving/scaling_policy` linked in), " << c.date
     << ", on " << c.machine << "; seed " << c.seed
     << (c.short_run ? "; **short run** (every trace at a tenth of its length)" : "")
     << ". The figures depend on the seed, not on the machine. Reproduce: `build/bench/scaler_sim/"
        "scaler_sim --out-dir bench/results"
     << (c.seeds > 1 ? " --seeds " + std::to_string(c.seeds) : std::string()) << "`.\n\n";

  md << "## Results (seed " << c.seed << ")\n\n";
  md << "| trace | policy | SLO attainment | replica-seconds | mean replicas | peak | scale "
        "actions "
        "| flaps |\n";
  md << "|---|---|---:|---:|---:|---:|---:|---:|\n";
  std::map<std::string, double> duration;
  for (const trace& t : c.traces) duration[t.name] = t.duration_s;
  for (const report_row& r : rows)
    md << "| " << r.trace << " | " << r.policy << " | " << fmt("%.5f", r.result.slo_attainment())
       << " | " << thousands(r.result.replica_seconds) << " | "
       << fmt("%.1f", r.result.replica_seconds / duration[r.trace]) << " | "
       << r.result.peak_replicas << " | " << r.result.scale_actions << " | " << r.result.flaps
       << " |\n";

  md << "\n## Against the targets\n\n";
  md << "Issue 14: on every trace, troupe's SLO attainment >= Ray Serve's, with <= 80% of its "
        "replica-seconds, and no scale-down followed by a scale-up within the cooldown (flaps, "
        "counted both ways within "
     << fmt("%.0f", p.flap_window_s) << " s, troupe's cooldown).\n\n";
  md << "| trace | SLO attainment, troupe / Ray | replica-seconds, troupe / Ray | troupe flaps | "
        "|\n|---|---|---|---:|---|\n";
  for (const trace& t : c.traces) {
    const report_row* tr = find(rows, t.name, "troupe", c.seed);
    const report_row* ray = find(rows, t.name, "ray_serve", c.seed);
    if (!tr || !ray) continue;
    const verdict v = judge(tr->result, ray->result);
    md << "| " << t.name << " | " << fmt("%.5f", tr->result.slo_attainment()) << " / "
       << fmt("%.5f", ray->result.slo_attainment()) << " | "
       << thousands(tr->result.replica_seconds) << " / " << thousands(ray->result.replica_seconds)
       << " = " << fmt("%.0f%%", 100 * v.ratio) << " | " << tr->result.flaps << " | " << misses(v)
       << " |\n";
  }

  if (c.seeds > 1) {
    md << "\n### Other seeds\n\n";
    md << "The same runs of troupe and Ray Serve with seeds " << c.seed + 1 << " to "
       << c.seed + c.seeds - 1
       << " (other Poisson arrivals and, for the MMPP, other states and sojourns):\n\n";
    md << "| trace | seed | attainment, troupe / Ray | replica-seconds, troupe / Ray | troupe "
          "flaps | |\n|---|---:|---|---:|---:|---|\n";
    std::map<std::string, std::pair<int, int>> met;  // trace -> (met, runs), all seeds
    for (const trace& t : c.traces) {
      for (uint64_t seed = c.seed; seed < c.seed + c.seeds; ++seed) {
        const auto& pool = seed == c.seed ? rows : other_seeds;
        const report_row* tr = find(pool, t.name, "troupe", seed);
        const report_row* ray = find(pool, t.name, "ray_serve", seed);
        if (!tr || !ray) continue;
        const verdict v = judge(tr->result, ray->result);
        met[t.name].first += v.all();
        met[t.name].second += 1;
        if (seed == c.seed) continue;
        md << "| " << t.name << " | " << seed << " | " << fmt("%.5f", tr->result.slo_attainment())
           << " / " << fmt("%.5f", ray->result.slo_attainment()) << " | "
           << fmt("%.0f%%", 100 * v.ratio) << " | " << tr->result.flaps << " | " << misses(v)
           << " |\n";
      }
    }
    md << "\nAll three targets met, of " << c.seeds << " seeds:";
    for (const trace& t : c.traces)
      md << " " << t.name << " " << met[t.name].first << "/" << met[t.name].second << ";";
    md.seekp(-1, std::ios_base::cur);
    md << ".\n";
  }

  if (!extra.empty()) {
    md << "\n## Ray Serve with a tuned target (not part of the targets)\n\n";
    md << "Ray's documentation advises load-testing a replica and setting "
          "`target_ongoing_requests` from the latency objective. Measured in the same simulation: "
          "one replica at the load troupe plans per replica ("
       << thousands(planned) << " req/s) holds " << fmt("%.1f", c.ray_tuned_target)
       << " ongoing requests on average, so this run sets `target_ongoing_requests: "
       << fmt("%.1f", c.ray_tuned_target) << "`, all else at Ray's defaults:\n\n";
    md << "| trace | SLO attainment | replica-seconds | mean replicas | peak | scale actions | "
          "flaps |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for (const report_row& r : extra)
      md << "| " << r.trace << " | " << fmt("%.5f", r.result.slo_attainment()) << " | "
         << thousands(r.result.replica_seconds) << " | "
         << fmt("%.1f", r.result.replica_seconds / duration[r.trace]) << " | "
         << r.result.peak_replicas << " | " << r.result.scale_actions << " | " << r.result.flaps
         << " |\n";
  }

  md << why(rows, extra, other_seeds, c, duration);

  md << "\n## Method\n\n";
  md << "- **Replicas.** ResNet-50 fp16 on an H100 (one replica per GPU), batch service times "
        "from troupe's own measurements: `bench/results/serving-gpu.json` (serving.md, \"ResNet-50 "
        "on the GPU host\", 2026-11-25), mean rows per batch against the mean time a batch spent "
        "in the worker, 1 row 0.369 ms to 63.3 rows 2.846 ms, interpolated; batches of at most "
     << p.max_batch << " rows; plus " << fmt("%.2f", p.transport_ms)
     << " ms of transport per request (the measured batch-1 overhead). One replica's capacity at "
        "the SLO: "
     << thousands(c.capacity_rps) << " req/s. A new replica serves " << fmt("%.1f", p.startup_s)
     << " s after the decision (`bench/results/lifecycle.md`: ResNet-50 loads in 1.68 s in a "
        "fresh node with recorded convolution choices) and counts replica-seconds from the "
        "decision.\n";
  md << "- **Serving.** One FIFO queue (troupe's batcher, queue delay 0): a free replica takes "
        "every queued request up to the max batch. Arrivals are Poisson at the trace's rate, drawn "
        "per "
     << fmt("%.0f", p.bin_s * 1e6)
     << " us bin (the same draws for every policy). A request meets the SLO when wait + batch "
        "service + transport <= "
     << fmt("%.0f", p.slo_ms)
     << " ms (serving.md's p99 target). SLO attainment: the share of the requests arriving in the "
        "trace that meet it (those queued at its end are served by the count then).\n";
  md << "- **Traces** (after a " << fmt("%.0f", p.warmup_s)
     << " s warm-up in the trace's own regime that no figure counts):\n";
  for (const trace& t : c.traces)
    md << "  - `" << t.name << "`: " << t.description << "; " << fmt("%.0f", t.duration_s)
       << " s, mean " << thousands(t.mean_rps()) << " req/s, peak " << thousands(t.peak_rps())
       << ".\n";
  md << "- **Policies**, all within [" << c.troupe.min_replicas << ", " << c.troupe.max_replicas
     << "] replicas:\n";
  md << "  - `troupe`: `serving/scaling_policy` as it is, ticked every second with what the scaler "
        "actor will measure (the second's arrival rate, the queue, the p99, busy fraction, ready "
        "and starting replicas, the capacity of the measured profile); `scaling: {min_replicas: "
     << c.troupe.min_replicas << ", max_replicas: " << c.troupe.max_replicas
     << ", slo_p99_ms: " << fmt("%.0f", c.troupe.slo_p99_ms)
     << ", upscale_delay_s: " << fmt("%g", c.troupe.upscale_delay.count() / 1000.0)
     << ", downscale_delay_s: " << fmt("%g", c.troupe.downscale_delay.count() / 1000.0)
     << "}`, default tuning (target utilisation " << fmt("%.2f", c.tuning.target_utilization)
     << ", hysteresis band " << fmt("%.2f", c.tuning.downscale_band) << ").\n";
  md << "  - `ray_serve`: Ray Serve's default autoscaling policy, reimplemented from its "
        "documentation (`bench/scaler_sim/ray_serve_policy.hpp` cites the pages): "
        "target_ongoing_requests "
     << fmt("%g", c.ray.target_ongoing_requests) << ", metrics_interval_s "
     << fmt("%g", c.ray.metrics_interval_s) << ", look_back_period_s "
     << fmt("%g", c.ray.look_back_period_s) << " (time-weighted mean), upscale_delay_s "
     << fmt("%g", c.ray.upscale_delay_s) << ", downscale_delay_s "
     << fmt("%g", c.ray.downscale_delay_s) << ", upscaling/downscaling factors "
     << fmt("%g", c.ray.upscaling_factor) << ", control loop every "
     << fmt("%g", c.ray.control_loop_interval_s)
     << " s. Ongoing requests: queued + in running batches. Its replicas batch as troupe's do "
        "(Ray's `max_ongoing_requests` limit, 5 by default, would cap a batch at 5 and is not "
        "modelled: that favours Ray).\n";
  md << "  - `static_mean`, `static_peak`: a fixed count planned as troupe plans a replica ("
     << thousands(planned) << " req/s) for the trace's mean and peak rate.\n";
  md << "- **Counts.** Replica-seconds: replicas held (starting or ready) over the trace. A scale "
        "action: a change of the count. A flap: a scale action opposite to one less than "
     << fmt("%.0f", p.flap_window_s) << " s before it.\n";
  md << "- **Not modelled.** Replicas sharing a GPU, device memory (the policy's memory, GPU and "
        "PCIe caps see nothing here), failures, Kubernetes adding nodes.\n";
  return md.str();
}

}  // namespace troupe::scaler_sim
