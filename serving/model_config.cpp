#include "serving/model_config.hpp"

#include <yaml-cpp/yaml.h>

#include "runtime/regular_file.hpp"
#include "runtime/session.hpp"

#include <algorithm>
#include <cmath>
#include <set>

namespace troupe::serving {
namespace {

/// A config larger than this is a mistake (a model file named config.yaml?), not a config.
constexpr size_t max_config_bytes = size_t{16} << 20;

// yaml-cpp reports errors by throwing; every entry point below catches and returns a status, so no
// exception leaves this file.
struct config_error {
  std::string message;
};

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw config_error{where + ": " + what};
}

void check_keys(const YAML::Node& n, const std::string& where,
                std::initializer_list<const char*> known) {
  if (!n.IsMap()) fail(where, "expected a mapping");
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    if (std::none_of(known.begin(), known.end(), [&](const char* k) { return key == k; }))
      fail(where, "unknown key '" + key + "'");
  }
}

template <class T>
T get(const YAML::Node& n, const std::string& where) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail(where, "cannot read '" + YAML::Dump(n) + "' as the expected type");
  }
}

int64_t get_int(const YAML::Node& n, const std::string& where, int64_t lo, int64_t hi) {
  const auto v = get<int64_t>(n, where);
  if (v < lo || v > hi)
    fail(where, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
  return v;
}

/// `load_timeout_s`: positive seconds (fractions allowed), at most a day.
std::chrono::milliseconds get_load_timeout(const YAML::Node& n, const std::string& where) {
  const auto seconds = get<double>(n, where);
  if (!(seconds > 0) || seconds > 86'400)
    fail(where, "expected seconds above 0 and at most 86400, got " + YAML::Dump(n));
  return std::max(std::chrono::milliseconds(1),
                  std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
}

std::vector<int64_t> get_int_list(const YAML::Node& n, const std::string& where, int64_t lo,
                                  int64_t hi) {
  std::vector<int64_t> out;
  if (n.IsScalar()) {
    out.push_back(get_int(n, where, lo, hi));
    return out;
  }
  if (!n.IsSequence()) fail(where, "expected a list of integers");
  for (size_t i = 0; i < n.size(); ++i) out.push_back(get_int(n[i], where, lo, hi));
  return out;
}

void parse_queue_policy(const YAML::Node& n, const std::string& where, queue_policy& q) {
  check_keys(n, where,
             {"default_timeout_microseconds", "allow_timeout_override", "max_queue_size",
              "timeout_action"});
  if (n["default_timeout_microseconds"])
    q.default_timeout = std::chrono::microseconds(get_int(n["default_timeout_microseconds"],
                                                          where + ".default_timeout_microseconds",
                                                          0, int64_t{1} << 40));
  if (n["allow_timeout_override"])
    q.allow_timeout_override =
        get<bool>(n["allow_timeout_override"], where + ".allow_timeout_override");
  if (n["max_queue_size"])
    q.max_queue_size = static_cast<uint32_t>(
        get_int(n["max_queue_size"], where + ".max_queue_size", 1, int64_t{1} << 24));
  if (n["timeout_action"]) {
    const auto action = get<std::string>(n["timeout_action"], where + ".timeout_action");
    // DELAY (Triton: keep a timed-out request at lower priority) is not implemented: refusing the
    // config is better than silently rejecting requests the user expected to be delayed.
    if (action != "REJECT")
      fail(where + ".timeout_action", "only REJECT is supported, got '" + action + "'");
  }
}

void parse_dynamic_batching(const YAML::Node& n, model_config& c) {
  const std::string w = "dynamic_batching";
  check_keys(n, w,
             {"max_queue_delay_microseconds", "max_queue_delay_us", "preferred_batch_size",
              "priority_levels", "default_priority_level", "default_queue_policy", "adaptive"});
  for (const char* key : {"max_queue_delay_microseconds", "max_queue_delay_us"})
    if (n[key])
      c.max_queue_delay =
          std::chrono::microseconds(get_int(n[key], w + "." + key, 0, int64_t{60'000'000}));
  if (n["preferred_batch_size"])
    c.preferred_batch_sizes =
        get_int_list(n["preferred_batch_size"], w + ".preferred_batch_size", 1, 1 << 20);
  if (n["priority_levels"])
    c.priority_levels =
        static_cast<uint32_t>(get_int(n["priority_levels"], w + ".priority_levels", 1, 64));
  if (n["default_priority_level"])
    c.default_priority_level = static_cast<uint32_t>(
        get_int(n["default_priority_level"], w + ".default_priority_level", 1, 64));
  if (n["default_queue_policy"])
    parse_queue_policy(n["default_queue_policy"], w + ".default_queue_policy", c.queue);
  if (n["adaptive"]) {
    const YAML::Node a = n["adaptive"];
    check_keys(a, w + ".adaptive", {"enabled", "slo_p99_ms"});
    if (a["enabled"]) c.adaptive.enabled = get<bool>(a["enabled"], w + ".adaptive.enabled");
    if (a["slo_p99_ms"])
      c.adaptive.slo_p99_ms = get<double>(a["slo_p99_ms"], w + ".adaptive.slo_p99_ms");
  }
}

/// `scaling:`; slo_p99_ms defaults to adaptive batching's, so parse it after dynamic_batching.
scaling_config parse_scaling(const YAML::Node& n, const model_config& c) {
  const std::string w = "scaling";
  check_keys(n, w,
             {"min_replicas", "max_replicas", "slo_p99_ms", "upscale_delay_s", "downscale_delay_s",
              "scale_to_zero_after_s"});
  scaling_config s;
  if (n["min_replicas"])
    s.min_replicas =
        static_cast<uint32_t>(get_int(n["min_replicas"], w + ".min_replicas", 0, 1024));
  s.max_replicas =
      n["max_replicas"]
          ? static_cast<uint32_t>(get_int(n["max_replicas"], w + ".max_replicas", 1, 1024))
          : std::max<uint32_t>(s.min_replicas, 1);
  s.slo_p99_ms =
      n["slo_p99_ms"] ? get<double>(n["slo_p99_ms"], w + ".slo_p99_ms") : c.adaptive.slo_p99_ms;
  const auto seconds = [&](const char* key, std::chrono::milliseconds& out) {
    if (!n[key]) return;
    const double v = get<double>(n[key], w + "." + key);
    if (!(v >= 0) || v > 86'400)
      fail(w + "." + key, "0 to 86400 seconds, got " + YAML::Dump(n[key]));
    out = std::chrono::milliseconds(static_cast<int64_t>(std::llround(v * 1000)));
  };
  seconds("upscale_delay_s", s.upscale_delay);
  seconds("downscale_delay_s", s.downscale_delay);
  seconds("scale_to_zero_after_s", s.scale_to_zero_after);
  if (status st = check_scaling_config(s); !st.is_ok()) throw config_error{st.message()};
  return s;
}

void parse_version_policy(const YAML::Node& n, model_config& c) {
  const std::string w = "version_policy";
  check_keys(n, w, {"latest", "all", "specific"});
  if (n.size() != 1) fail(w, "exactly one of latest, all, specific");
  if (n["latest"]) {
    check_keys(n["latest"], w + ".latest", {"num_versions"});
    c.latest_versions =
        n["latest"]["num_versions"]
            ? get_int(n["latest"]["num_versions"], w + ".latest.num_versions", 1, 1 << 20)
            : 1;
  } else if (n["all"]) {
    c.latest_versions = 0;
  } else {
    check_keys(n["specific"], w + ".specific", {"versions"});
    if (!n["specific"]["versions"]) fail(w + ".specific", "needs versions");
    c.latest_versions = 0;
    c.specific_versions =
        get_int_list(n["specific"]["versions"], w + ".specific.versions", 1, int64_t{1} << 62);
  }
}

void parse_traffic(const YAML::Node& n, model_config& c) {
  const std::string w = "traffic";
  check_keys(n, w, {"weights", "match"});
  if (n["weights"]) {
    if (!n["weights"].IsMap()) fail(w + ".weights", "expected version: weight pairs");
    for (const auto& kv : n["weights"]) {
      const int64_t version = get_int(kv.first, w + ".weights", 1, int64_t{1} << 62);
      c.traffic.weights[version] =
          static_cast<uint32_t>(get_int(kv.second, w + ".weights", 0, 1 << 20));
    }
  }
  if (n["match"]) {
    if (!n["match"].IsSequence()) fail(w + ".match", "expected a list");
    for (size_t i = 0; i < n["match"].size(); ++i) {
      const YAML::Node m = n["match"][i];
      const std::string mw = w + ".match[" + std::to_string(i) + "]";
      check_keys(m, mw, {"parameter", "node_label", "value", "version"});
      if (!m["parameter"] == !m["node_label"] || !m["version"])
        fail(mw, "needs one of parameter and node_label, and version");
      traffic_match t;
      if (m["parameter"]) t.parameter = get<std::string>(m["parameter"], mw + ".parameter");
      if (m["node_label"]) t.node_label = get<std::string>(m["node_label"], mw + ".node_label");
      if (t.parameter.empty() && t.node_label.empty()) fail(mw, "an empty name");
      t.value = m["value"] ? get<std::string>(m["value"], mw + ".value") : "";
      t.version = get_int(m["version"], mw + ".version", 1, int64_t{1} << 62);
      c.traffic.match.push_back(std::move(t));
    }
  }
}

std::vector<float> get_float_list(const YAML::Node& n, const std::string& where) {
  if (!n.IsSequence()) fail(where, "expected a list of numbers, one per channel");
  std::vector<float> out;
  for (size_t i = 0; i < n.size(); ++i) {
    const auto v = get<double>(n[i], where + "[" + std::to_string(i) + "]");
    if (!std::isfinite(v) || std::fabs(v) > 3.0e38)
      fail(where + "[" + std::to_string(i) + "]", "must be a finite float");
    out.push_back(static_cast<float>(v));
  }
  return out;
}

/// The runtime's message without its own "input normalization: " lead (fail() names the key).
std::string without_lead(const status& s) {
  const std::string lead = "input normalization: ";
  const std::string& m = s.message();
  return m.rfind(lead, 0) == 0 ? m.substr(lead.size()) : m;
}

runtime::input_normalization parse_input_normalization(const YAML::Node& n) {
  const std::string w = "input_normalization";
  check_keys(n, w, {"input", "dtype", "mean", "std", "channel_axis"});
  for (const char* key : {"dtype", "mean", "std"})
    if (!n[key]) fail(w, std::string("needs ") + key);
  runtime::input_normalization r;
  if (n["input"]) r.input = get<std::string>(n["input"], w + ".input");
  const auto type_name = get<std::string>(n["dtype"], w + ".dtype");
  auto type = runtime::parse_client_type(type_name);
  if (!type) fail(w + ".dtype", without_lead(type.error()));
  r.client_type = *type;
  r.mean = get_float_list(n["mean"], w + ".mean");
  r.stddev = get_float_list(n["std"], w + ".std");
  if (n["channel_axis"]) r.channel_axis = get_int(n["channel_axis"], w + ".channel_axis", -8, 7);
  if (status s = runtime::validate_input_normalization(r); !s.is_ok()) fail(w, without_lead(s));
  return r;
}

device_preference parse_device(const std::string& s, const std::string& where) {
  if (s == "any" || s == "KIND_AUTO") return device_preference::any;
  if (s == "cpu" || s == "KIND_CPU") return device_preference::cpu;
  if (s == "gpu" || s == "KIND_GPU") return device_preference::gpu;
  fail(where, "expected any, cpu or gpu (Triton: KIND_AUTO, KIND_CPU, KIND_GPU), got '" + s + "'");
}

model_config parse_model_node(const YAML::Node& root) {
  model_config c;
  if (!root || root.IsNull()) return c;
  check_keys(root, "config",
             {"name", "max_batch_size", "dynamic_batching", "instance_group", "instance_count",
              "batch_buckets", "batch_slice_rows", "version_policy", "traffic", "backend", "platform", "device",
              "precision", "input_normalization", "shape_cache", "load_timeout_s", "rollback",
              "fault_injection", "scaling"});
  if (root["max_batch_size"])
    c.max_batch_size = get_int(root["max_batch_size"], "max_batch_size", 0, 1 << 20);
  if (root["dynamic_batching"]) parse_dynamic_batching(root["dynamic_batching"], c);
  if (root["instance_count"])
    c.instance_count =
        static_cast<uint32_t>(get_int(root["instance_count"], "instance_count", 1, 64));
  if (root["instance_group"]) {
    const YAML::Node g = root["instance_group"];
    if (!g.IsSequence() || g.size() != 1) fail("instance_group", "expected a list with one group");
    check_keys(g[0], "instance_group[0]", {"count", "kind"});
    if (g[0]["count"])
      c.instance_count =
          static_cast<uint32_t>(get_int(g[0]["count"], "instance_group[0].count", 1, 64));
    if (g[0]["kind"])
      c.device = parse_device(get<std::string>(g[0]["kind"], "instance_group[0].kind"),
                              "instance_group[0].kind");
  }
  if (root["device"]) {
    const device_preference d = parse_device(get<std::string>(root["device"], "device"), "device");
    if (root["instance_group"] && root["instance_group"][0]["kind"] && d != c.device)
      fail("device", "contradicts instance_group[0].kind");
    c.device = d;
  }
  if (root["precision"]) {
    c.gpu_precision = get<std::string>(root["precision"], "precision");
    if (auto p = runtime::parse_precision(c.gpu_precision); !p)
      fail("precision", p.error().message());
  }
  if (root["input_normalization"])
    c.input_normalization = parse_input_normalization(root["input_normalization"]);
  if (root["batch_buckets"])
    c.batch_buckets = get_int_list(root["batch_buckets"], "batch_buckets", 1, 1 << 20);
  if (root["batch_slice_rows"])
    c.batch_slice_rows = get_int(root["batch_slice_rows"], "batch_slice_rows", 0, 1 << 20);
  if (root["version_policy"]) parse_version_policy(root["version_policy"], c);
  if (root["traffic"]) parse_traffic(root["traffic"], c);
  if (root["rollback"]) {
    const YAML::Node n = root["rollback"];
    check_keys(n, "rollback", {"max_error_ratio", "max_p99_ratio", "window_s", "min_requests"});
    model_config::rollback_rule r;
    if (n["max_error_ratio"]) r.max_error_ratio = get<double>(n["max_error_ratio"], "rollback.max_error_ratio");
    if (n["max_p99_ratio"]) r.max_p99_ratio = get<double>(n["max_p99_ratio"], "rollback.max_p99_ratio");
    if (r.max_error_ratio < 0 || r.max_p99_ratio < 0)
      fail("rollback", "ratios must not be negative");
    if (r.max_error_ratio == 0 && r.max_p99_ratio == 0)
      fail("rollback", "set max_error_ratio or max_p99_ratio (or both)");
    if (n["window_s"]) {
      const double w = get<double>(n["window_s"], "rollback.window_s");
      if (!(w >= 0.1) || w > 86'400) fail("rollback.window_s", "0.1 to 86400 seconds");
      r.window = std::chrono::milliseconds(static_cast<int64_t>(w * 1000));
    }
    if (n["min_requests"])
      r.min_requests = static_cast<uint64_t>(get_int(n["min_requests"], "rollback.min_requests", 1, 1'000'000'000));
    c.rollback = r;
  }
  if (root["fault_injection"]) {
    const YAML::Node n = root["fault_injection"];
    check_keys(n, "fault_injection", {"error_ratio", "versions"});
    if (n["versions"]) c.fault_versions = get_int_list(n["versions"], "fault_injection.versions", 1, int64_t{1} << 50);
    if (n["error_ratio"]) {
      c.fault_error_ratio = get<double>(n["error_ratio"], "fault_injection.error_ratio");
      if (!(c.fault_error_ratio >= 0 && c.fault_error_ratio <= 1))
        fail("fault_injection.error_ratio", "a fraction from 0 to 1");
    }
  }
  if (root["load_timeout_s"])
    c.load_timeout = get_load_timeout(root["load_timeout_s"], "load_timeout_s");
  if (root["scaling"]) c.scaling = parse_scaling(root["scaling"], c);
  if (root["shape_cache"]) {
    const YAML::Node n = root["shape_cache"];
    check_keys(n, "shape_cache", {"max_plans", "max_bytes"});
    if (n["max_plans"])
      c.shape_cache.max_plans =
          static_cast<size_t>(get_int(n["max_plans"], "shape_cache.max_plans", 1, 1 << 20));
    if (n["max_bytes"])
      c.shape_cache.max_bytes = static_cast<size_t>(
          get_int(n["max_bytes"], "shape_cache.max_bytes", 1, int64_t{1} << 50));
  }
  if (root["backend"]) {
    const auto b = get<std::string>(root["backend"], "backend");
    if (b != "cpu" && b != "troupe" && b != "onnxruntime")
      fail("backend", "unknown backend '" + b + "'");
  }

  // Consistency, checked here so that a bad config fails at load with the key named.
  if (c.default_priority_level > c.priority_levels)
    fail("dynamic_batching.default_priority_level", std::to_string(c.default_priority_level) +
                                                        " exceeds priority_levels " +
                                                        std::to_string(c.priority_levels));
  if (c.max_batch_size >= 0) {
    for (int64_t p : c.preferred_batch_sizes)
      if (p > std::max<int64_t>(c.max_batch_size, 1))
        fail("dynamic_batching.preferred_batch_size",
             std::to_string(p) + " exceeds max_batch_size " + std::to_string(c.max_batch_size));
    for (int64_t b : c.batch_buckets)
      if (b > std::max<int64_t>(c.max_batch_size, 1))
        fail("batch_buckets",
             std::to_string(b) + " exceeds max_batch_size " + std::to_string(c.max_batch_size));
    if (c.batch_slice_rows > 0 && c.max_batch_size == 0)
      fail("batch_slice_rows", "needs batching (max_batch_size above 0): slices are of the batch");
    if (c.batch_slice_rows > std::max<int64_t>(c.max_batch_size, 1))
      fail("batch_slice_rows", std::to_string(c.batch_slice_rows) + " exceeds max_batch_size " +
                                   std::to_string(c.max_batch_size));
  }
  if (c.adaptive.enabled && !(c.adaptive.slo_p99_ms > 0))
    fail("dynamic_batching.adaptive", "enabled needs slo_p99_ms > 0");
  std::sort(c.preferred_batch_sizes.begin(), c.preferred_batch_sizes.end());
  c.preferred_batch_sizes.erase(
      std::unique(c.preferred_batch_sizes.begin(), c.preferred_batch_sizes.end()),
      c.preferred_batch_sizes.end());
  return c;
}

/// One rule of `faults:` (`where` is "faults[i]"). Keys as the management socket's FaultRule;
/// what a rule must satisfy is fault_plan's validate(), whose errors start with the field.
fault_rule parse_fault_rule(const YAML::Node& n, const std::string& where) {
  check_keys(n, where,
             {"kind", "target", "times", "probability", "seed", "delay_ms", "allocations"});
  fault_rule r;
  if (!n["kind"])
    fail(where + ".kind", "required (a fault kind such as hang, delay or drop: docs/faults.md)");
  auto kind = parse_fault_kind(get<std::string>(n["kind"], where + ".kind"));
  if (!kind) fail(where + ".kind", kind.error().message());
  r.kind = *kind;
  if (n["target"]) r.target = get<std::string>(n["target"], where + ".target");
  if (n["times"])
    r.times = static_cast<uint32_t>(get_int(n["times"], where + ".times", 0, UINT32_MAX));
  if (n["probability"]) r.probability = get<double>(n["probability"], where + ".probability");
  if (n["seed"]) r.seed = get<uint64_t>(n["seed"], where + ".seed");
  if (n["delay_ms"])
    r.delay = std::chrono::milliseconds(get_int(n["delay_ms"], where + ".delay_ms", 0, 3'600'000));
  if (n["allocations"])
    r.allocations =
        static_cast<uint32_t>(get_int(n["allocations"], where + ".allocations", 0, UINT32_MAX));
  if (status s = validate(r); !s.is_ok()) {
    // "probability: must be ..." -> "faults[2].probability: must be ..."
    const std::string& m = s.message();
    const size_t colon = m.find(": ");
    if (colon == std::string::npos) fail(where, m);
    fail(where + "." + m.substr(0, colon), m.substr(colon + 2));
  }
  return r;
}

node_config parse_node_node(const YAML::Node& root) {
  node_config c;
  if (!root || root.IsNull()) return c;
  check_keys(root, "node",
             {"models",
              "listen",
              "metrics_port",
              "metrics_address",
              "cpu_workers",
              "actor_threads",
              "actor_scheduler",
              "detached_workers",
              "idle_spin_us",
              "compute_threads",
              "max_inflight",
              "max_outstanding_per_connection",
              "max_message_bytes",
              "drain_timeout_ms",
              "warmup_runs",
              "load_timeout_s",
              "fault_injection",
              "faults",
              "log_level",
              "gpus",
              "readiness",
              "load_delay_ms",
              "grpc_port",
              "http_port",
              "http_threads",
              "shared_memory",
              "model_control_mode",
              "labels",
              "load_models",
              "repository_poll_secs",
              "management_listen",
              "management_token_file",
              "tuning_records_file",
              "worker_processes",
              "worker_heartbeat_interval_ms",
              "worker_heartbeat_timeout_ms",
              "worker_shared_memory_mb",
              "scaler_interval_ms",
              "worker_watchdog_multiple",
              "worker_watchdog_min_ms",
              "worker_memory_budget_mb",
              "role",
              "join",
              "join_dns",
              "workers_listen",
              "node_name",
              "model_cache_dir",
              "node_heartbeat_interval_ms",
              "node_heartbeat_timeout_ms",
              "node_link_connections",
              "max_batches_per_replica",
              "curve_secret_key_file",
              "curve_server_key_file",
              "curve_authorized_keys_file"});
  if (root["models"]) c.models_dir = get<std::string>(root["models"], "models");
  if (root["listen"]) c.listen = get<std::string>(root["listen"], "listen");
  if (root["metrics_port"])
    c.metrics_port = static_cast<int>(get_int(root["metrics_port"], "metrics_port", 0, 65535));
  if (root["metrics_address"])
    c.metrics_address = get<std::string>(root["metrics_address"], "metrics_address");
  if (root["http_port"])
    c.http_port = static_cast<int>(get_int(root["http_port"], "http_port", 0, 65535));
  if (root["http_threads"])
    c.http_threads = static_cast<uint32_t>(get_int(root["http_threads"], "http_threads", 0, 64));
  if (root["shared_memory"]) c.shared_memory = get<bool>(root["shared_memory"], "shared_memory");
  if (root["cpu_workers"])
    c.cpu_workers = static_cast<uint32_t>(get_int(root["cpu_workers"], "cpu_workers", 1, 256));
  if (root["actor_threads"])
    c.actor_threads =
        static_cast<uint32_t>(get_int(root["actor_threads"], "actor_threads", 1, 256));
  if (root["actor_scheduler"]) {
    c.actor_scheduler = get<std::string>(root["actor_scheduler"], "actor_scheduler");
    if (c.actor_scheduler != "stealing" && c.actor_scheduler != "sharing")
      fail("actor_scheduler", "stealing or sharing, got '" + c.actor_scheduler + "'");
  }
  if (root["detached_workers"])
    c.detached_workers = get<bool>(root["detached_workers"], "detached_workers");
  if (root["idle_spin_us"])
    c.idle_spin_us =
        static_cast<uint32_t>(get_int(root["idle_spin_us"], "idle_spin_us", 0, 1'000'000));
  if (root["compute_threads"])
    c.compute_threads =
        static_cast<int>(get_int(root["compute_threads"], "compute_threads", 0, 4096));
  if (root["max_inflight"])
    c.max_inflight =
        static_cast<uint32_t>(get_int(root["max_inflight"], "max_inflight", 1, 1 << 22));
  if (root["max_outstanding_per_connection"])
    c.max_outstanding_per_connection = static_cast<uint32_t>(get_int(
        root["max_outstanding_per_connection"], "max_outstanding_per_connection", 1, 1 << 22));
  if (root["max_message_bytes"])
    c.max_message_bytes = static_cast<uint64_t>(
        get_int(root["max_message_bytes"], "max_message_bytes", 1024, int64_t{1} << 40));
  if (root["drain_timeout_ms"])
    c.drain_timeout = std::chrono::milliseconds(
        get_int(root["drain_timeout_ms"], "drain_timeout_ms", 0, 3'600'000));
  if (root["warmup_runs"])
    c.warmup_runs = static_cast<uint32_t>(get_int(root["warmup_runs"], "warmup_runs", 0, 1000));
  if (root["load_timeout_s"])
    c.load_timeout = get_load_timeout(root["load_timeout_s"], "load_timeout_s");
  if (root["fault_injection"])
    c.fault_injection = get<bool>(root["fault_injection"], "fault_injection");
  if (root["faults"]) {
    const YAML::Node f = root["faults"];
    if (!f.IsSequence()) fail("faults", "a list of fault rules ({kind: ..., target: ...})");
    for (size_t i = 0; i < f.size(); ++i)
      c.faults.push_back(parse_fault_rule(f[i], "faults[" + std::to_string(i) + "]"));
    // Faults are for tests: a node.yaml that names some without the switch is a mistake (a test
    // config copied into production?), not something to ignore.
    if (!c.faults.empty() && !c.fault_injection)
      fail("faults",
           "fault rules given while fault injection is off: set `fault_injection: "
           "true` (tests only) or remove `faults:`");
  }
  if (root["worker_processes"])
    c.worker_processes = get<bool>(root["worker_processes"], "worker_processes");
  if (root["worker_heartbeat_interval_ms"])
    c.worker_heartbeat_interval = std::chrono::milliseconds(
        get_int(root["worker_heartbeat_interval_ms"], "worker_heartbeat_interval_ms", 10, 600'000));
  if (root["worker_heartbeat_timeout_ms"])
    c.worker_heartbeat_timeout = std::chrono::milliseconds(
        get_int(root["worker_heartbeat_timeout_ms"], "worker_heartbeat_timeout_ms", 10, 3'600'000));
  if (c.worker_heartbeat_timeout <= c.worker_heartbeat_interval)
    fail("worker_heartbeat_timeout_ms", "longer than worker_heartbeat_interval_ms");
  if (root["worker_shared_memory_mb"])
    c.worker_shared_memory_mb = static_cast<uint32_t>(
        get_int(root["worker_shared_memory_mb"], "worker_shared_memory_mb", 1, 1 << 20));
  if (root["worker_watchdog_multiple"]) {
    c.worker_watchdog_multiple = get<double>(root["worker_watchdog_multiple"], "worker_watchdog_multiple");
    if (!(c.worker_watchdog_multiple == 0 ||
          (c.worker_watchdog_multiple >= 2 && c.worker_watchdog_multiple <= 1000)))
      fail("worker_watchdog_multiple", "0 (no watchdog) or from 2 to 1000");
  }
  if (root["worker_watchdog_min_ms"])
    c.worker_watchdog_min = std::chrono::milliseconds(
        get_int(root["worker_watchdog_min_ms"], "worker_watchdog_min_ms", 10, 3'600'000));
  if (root["worker_memory_budget_mb"])
    c.worker_memory_budget_mb = static_cast<uint64_t>(
        get_int(root["worker_memory_budget_mb"], "worker_memory_budget_mb", 0, int64_t{1} << 30));
  if (root["role"]) {
    auto r = parse_node_role(get<std::string>(root["role"], "role"));
    if (!r) fail("role", "all, control or worker");
    c.role = *r;
  }
  if (root["join"]) {
    if (root["join"].IsSequence()) {
      for (const auto& e : root["join"]) c.join.push_back(get<std::string>(e, "join"));
    } else {
      c.join.push_back(get<std::string>(root["join"], "join"));
    }
  }
  if (root["join_dns"]) c.join_dns = get<std::string>(root["join_dns"], "join_dns");
  if (root["workers_listen"])
    c.workers_listen = get<std::string>(root["workers_listen"], "workers_listen");
  if (root["node_name"]) c.node_name = get<std::string>(root["node_name"], "node_name");
  if (root["model_cache_dir"])
    c.model_cache_dir = get<std::string>(root["model_cache_dir"], "model_cache_dir");
  if (root["node_heartbeat_interval_ms"])
    c.node_heartbeat_interval = std::chrono::milliseconds(
        get_int(root["node_heartbeat_interval_ms"], "node_heartbeat_interval_ms", 10, 600'000));
  if (root["node_heartbeat_timeout_ms"])
    c.node_heartbeat_timeout = std::chrono::milliseconds(
        get_int(root["node_heartbeat_timeout_ms"], "node_heartbeat_timeout_ms", 10, 3'600'000));
  if (root["max_batches_per_replica"])
    c.max_batches_per_replica = static_cast<uint32_t>(
        get_int(root["max_batches_per_replica"], "max_batches_per_replica", 1, 8));
  if (root["node_link_connections"])
    c.node_link_connections = static_cast<uint32_t>(
        get_int(root["node_link_connections"], "node_link_connections", 1, 64));
  for (auto [key, field] : {std::pair{"curve_secret_key_file", &c.curve_secret_key_file},
                            std::pair{"curve_server_key_file", &c.curve_server_key_file},
                            std::pair{"curve_authorized_keys_file", &c.curve_authorized_keys_file}})
    if (root[key]) *field = get<std::string>(root[key], key);
  if (c.node_heartbeat_timeout <= c.node_heartbeat_interval)
    fail("node_heartbeat_timeout_ms", "longer than node_heartbeat_interval_ms");
  if (root["log_level"]) c.log_level = get<std::string>(root["log_level"], "log_level");
  if (root["readiness"]) {
    const auto word = get<std::string>(root["readiness"], "readiness");
    if (word == "strict")
      c.readiness = readiness_policy::strict;
    else if (word == "any")
      c.readiness = readiness_policy::any;
    else
      fail("readiness", "strict or any, got '" + word + "'");
  }
  if (root["labels"]) {
    const YAML::Node l = root["labels"];
    if (!l.IsMap()) fail("labels", "expected name: value pairs");
    for (const auto& kv : l)
      c.labels[get<std::string>(kv.first, "labels")] = get<std::string>(kv.second, "labels");
  }
  if (root["model_control_mode"]) {
    const auto word = get<std::string>(root["model_control_mode"], "model_control_mode");
    auto mode = parse_model_control_mode(word);
    if (!mode) fail("model_control_mode", mode.error().message());
    c.control_mode = *mode;
  }
  if (root["load_models"]) {
    const YAML::Node l = root["load_models"];
    if (!l.IsSequence()) fail("load_models", "a list of model names");
    for (const auto& n : l) c.load_models.push_back(get<std::string>(n, "load_models"));
  }
  if (root["management_listen"])
    c.management_listen = get<std::string>(root["management_listen"], "management_listen");
  if (root["management_token_file"])
    c.management_token_file =
        get<std::string>(root["management_token_file"], "management_token_file");
  if (root["tuning_records_file"])
    c.tuning_records_file = get<std::string>(root["tuning_records_file"], "tuning_records_file");
  if (root["repository_poll_secs"])
    c.repository_poll = std::chrono::milliseconds(
        1000 * get_int(root["repository_poll_secs"], "repository_poll_secs", 1, 86'400));
  if (root["scaler_interval_ms"])
    c.scaler_interval = std::chrono::milliseconds(
        get_int(root["scaler_interval_ms"], "scaler_interval_ms", 10, 600'000));
  if (root["load_delay_ms"])
    c.load_delay =
        std::chrono::milliseconds(get_int(root["load_delay_ms"], "load_delay_ms", 0, 3'600'000));
  if (root["grpc_port"])
    c.grpc_port = static_cast<int>(get_int(root["grpc_port"], "grpc_port", 0, 65535));
  if (root["gpus"]) {
    const YAML::Node g = root["gpus"];
    const std::string word = g.IsScalar() ? g.Scalar() : std::string();
    if (word == "all") {
      c.gpus.reset();
    } else if (word == "none") {
      c.gpus = std::vector<int>();
    } else {
      std::vector<int> ids;
      for (int64_t d : get_int_list(g, "gpus", 0, 1023)) {
        if (std::find(ids.begin(), ids.end(), static_cast<int>(d)) != ids.end())
          fail("gpus", "device " + std::to_string(d) + " is listed twice");
        ids.push_back(static_cast<int>(d));
      }
      c.gpus = std::move(ids);
    }
  }
  return c;
}

template <class T, class F>
expected<T> parse_with(const std::string& text, const std::string& source, F parse_node) {
  try {
    return parse_node(YAML::Load(text));
  } catch (const config_error& e) {
    return invalid_argument(source + ": " + e.message);
  } catch (const YAML::Exception& e) {
    return invalid_argument(source + ": " + e.what());
  } catch (const std::exception& e) {
    return invalid_argument(source + ": " + e.what());
  }
}

/// A config file's text. Opened as runtime::regular_file: a FIFO named config.yaml is refused
/// instead of blocking the model manager's scan (and with it the node's load and shutdown).
expected<std::string> read_text(const std::string& path) {
  TROUPE_ASSIGN_OR_RETURN(runtime::regular_file f,
                          runtime::regular_file::open(path, "'" + path + "'"));
  return f.read_all(max_config_bytes, error_code::invalid_argument);
}

}  // namespace

std::string_view device_preference_name(device_preference d) {
  switch (d) {
    case device_preference::any:
      return "any";
    case device_preference::cpu:
      return "cpu";
    case device_preference::gpu:
      return "gpu";
  }
  return "?";
}

std::string_view model_control_mode_name(model_control_mode m) {
  switch (m) {
    case model_control_mode::none:
      return "none";
    case model_control_mode::explicit_:
      return "explicit";
    case model_control_mode::poll:
      return "poll";
  }
  return "?";
}

expected<model_control_mode> parse_model_control_mode(std::string_view word) {
  if (word == "none") return model_control_mode::none;
  if (word == "explicit") return model_control_mode::explicit_;
  if (word == "poll") return model_control_mode::poll;
  return invalid_argument("model control mode: none, explicit or poll, got '" + std::string(word) +
                          "'");
}

expected<model_config> parse_model_config(const std::string& yaml_text, const std::string& source) {
  return parse_with<model_config>(yaml_text, source, parse_model_node);
}

expected<model_config> load_model_config(const std::string& path) {
  auto text = read_text(path);
  if (!text && text.error().code() == error_code::not_found) return model_config{};
  if (!text) return text.error();
  return parse_model_config(*text, path);
}

expected<node_config> parse_node_config(const std::string& yaml_text, const std::string& source) {
  return parse_with<node_config>(yaml_text, source, parse_node_node);
}

expected<node_config> load_node_config(const std::string& path) {
  TROUPE_ASSIGN_OR_RETURN(std::string text, read_text(path));
  return parse_node_config(text, path);
}

expected<node_role> parse_node_role(const std::string& word) {
  if (word == "all") return node_role::all;
  if (word == "control") return node_role::control;
  if (word == "worker") return node_role::worker;
  return invalid_argument("role '" + word + "': all, control or worker");
}

}  // namespace troupe::serving
