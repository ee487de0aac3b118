// config.yaml and node.yaml: Triton's key names, defaults, and errors that name the bad key.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>

#include "serving/model_config.hpp"
#include "serving/replica.hpp"
#include "tests/serving/serving_test_util.hpp"

namespace troupe::serving {
namespace {

using namespace std::chrono_literals;

TEST(model_config, defaults_without_a_file) {
  auto c = load_model_config("/nonexistent/config.yaml");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->max_batch_size, -1);
  EXPECT_EQ(c->max_queue_delay, 0us);
  EXPECT_EQ(c->priority_levels, 1u);
  EXPECT_EQ(c->queue.max_queue_size, 1024u);
  EXPECT_EQ(c->instance_count, 1u);
  EXPECT_EQ(c->latest_versions, 1);
}

TEST(model_config, triton_keys) {
  auto c = parse_model_config(
      "max_batch_size: 16\n"
      "dynamic_batching:\n"
      "  max_queue_delay_microseconds: 250\n"
      "  preferred_batch_size: [8, 4, 8]\n"
      "  priority_levels: 3\n"
      "  default_priority_level: 2\n"
      "  default_queue_policy:\n"
      "    default_timeout_microseconds: 5000\n"
      "    allow_timeout_override: false\n"
      "    max_queue_size: 64\n"
      "    timeout_action: REJECT\n"
      "  adaptive: {enabled: true, slo_p99_ms: 20}\n"
      "instance_group: [{count: 2, kind: KIND_CPU}]\n"
      "version_policy: {specific: {versions: [1, 3]}}\n"
      "traffic:\n"
      "  weights: {1: 90, 3: 10}\n"
      "  match: [{parameter: canary, value: 'yes', version: 3}]\n",
      "test");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  EXPECT_EQ(c->max_batch_size, 16);
  EXPECT_EQ(c->max_queue_delay, 250us);
  EXPECT_EQ(c->preferred_batch_sizes, (std::vector<int64_t>{4, 8}));  // sorted, unique
  EXPECT_EQ(c->priority_levels, 3u);
  EXPECT_EQ(c->effective_default_priority(), 2u);
  EXPECT_EQ(c->queue.default_timeout, 5000us);
  EXPECT_FALSE(c->queue.allow_timeout_override);
  EXPECT_EQ(c->queue.max_queue_size, 64u);
  EXPECT_TRUE(c->adaptive.enabled);
  EXPECT_EQ(c->adaptive.slo_p99_ms, 20);
  EXPECT_EQ(c->instance_count, 2u);
  EXPECT_EQ(c->specific_versions, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(c->traffic.weights.at(3), 10u);
  ASSERT_EQ(c->traffic.match.size(), 1u);
  EXPECT_EQ(c->traffic.match[0].value, "yes");
}

TEST(model_config, short_alias_for_the_queue_delay) {
  auto c = parse_model_config("dynamic_batching: {max_queue_delay_us: 42}\n", "test");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->max_queue_delay, 42us);
}

TEST(model_config, errors_name_the_key) {
  struct bad_case {
    const char* yaml;
    const char* fragment;
  };
  for (const auto& [yaml, fragment] : std::vector<bad_case>{
           {"max_batch_sise: 4\n", "max_batch_sise"},
           {"max_batch_size: -3\n", "max_batch_size"},
           {"max_batch_size: four\n", "max_batch_size"},
           {"max_batch_size: 4\ndynamic_batching: {preferred_batch_size: [8]}\n",
            "preferred_batch_size"},
           {"dynamic_batching: {default_queue_policy: {timeout_action: DELAY}}\n", "REJECT"},
           {"dynamic_batching: {default_queue_policy: {max_queue_size: 0}}\n", "max_queue_size"},
           {"dynamic_batching: {priority_levels: 2, default_priority_level: 3}\n",
            "default_priority_level"},
           {"dynamic_batching: {adaptive: {enabled: true}}\n", "slo_p99_ms"},
           {"instance_group: [{count: 1, kind: KIND_TPU}]\n", "KIND_GPU"},
           {"device: tpu\n", "device"},
           {"instance_group: [{kind: KIND_CPU}]\ndevice: gpu\n", "contradicts"},
           {"precision: fp8\n", "precision"},
           {"version_policy: {latest: {num_versions: 1}, all: {}}\n", "exactly one"},
           {"max_batch_size: [1\n", "test"},
           {"shape_cache: {max_plans: 0}\n", "shape_cache.max_plans"},
           {"shape_cache: {max_bytes: 0}\n", "shape_cache.max_bytes"},
           {"shape_cache: {max_plan: 4}\n", "max_plan"},
           {"shape_cache: 4\n", "shape_cache"},
       }) {
    auto c = parse_model_config(yaml, "test");
    ASSERT_FALSE(c.has_value()) << yaml;
    EXPECT_EQ(c.error().code(), error_code::invalid_argument);
    EXPECT_NE(c.error().message().find(fragment), std::string::npos)
        << yaml << " -> " << c.error().message();
  }
}

TEST(node_config, keys_and_errors) {
  auto n = parse_node_config(
      "models: /m\nlisten: tcp://*:6000\nmetrics_port: 0\ncpu_workers: 2\nmax_inflight: 10\n"
      "drain_timeout_ms: 1500\nfault_injection: true\n",
      "node");
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  EXPECT_EQ(n->models_dir, "/m");
  EXPECT_EQ(n->listen, "tcp://*:6000");
  EXPECT_EQ(n->metrics_port, 0);
  EXPECT_EQ(n->cpu_workers, 2u);
  EXPECT_EQ(n->max_inflight, 10u);
  EXPECT_EQ(n->drain_timeout, std::chrono::milliseconds(1500));
  EXPECT_TRUE(n->fault_injection);
  EXPECT_FALSE(n->idle_spin_us.has_value()) << "absent: the machine-dependent default";
  auto spin = parse_node_config("idle_spin_us: 0\n", "node");
  ASSERT_TRUE(spin.has_value()) << spin.error().to_string();
  EXPECT_EQ(spin->idle_spin_us, 0u);
  EXPECT_FALSE(parse_node_config("idle_spin_us: -5\n", "node").has_value());
  EXPECT_EQ(n->http_port, 8000) << "the KServe HTTP default";
  EXPECT_EQ(n->metrics_port, 0);
  auto http = parse_node_config("http_port: 0\nhttp_threads: 3\nshared_memory: false\n", "node");
  ASSERT_TRUE(http.has_value()) << http.error().to_string();
  EXPECT_EQ(http->http_port, 0);
  EXPECT_EQ(http->http_threads, 3u);
  EXPECT_FALSE(http->shared_memory);
  EXPECT_EQ(http->metrics_port, 8002) << "Triton's metrics port by default";
  EXPECT_FALSE(parse_node_config("http_port: 70000\n", "node").has_value());
  EXPECT_EQ(n->max_outstanding_per_connection, 256u) << "the default";
  auto outstanding = parse_node_config("max_outstanding_per_connection: 16\n", "node");
  ASSERT_TRUE(outstanding.has_value()) << outstanding.error().to_string();
  EXPECT_EQ(outstanding->max_outstanding_per_connection, 16u);
  EXPECT_FALSE(parse_node_config("max_outstanding_per_connection: 0\n", "node").has_value());
  auto bad = parse_node_config("cpu_workers: 0\n", "node");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("cpu_workers"), std::string::npos);
  EXPECT_EQ(load_node_config("/nonexistent/node.yaml").error().code(), error_code::not_found);
}

TEST(node_config, worker_processes) {
  auto off = parse_node_config("cpu_workers: 1\n", "node");
  ASSERT_TRUE(off.has_value());
  EXPECT_FALSE(off->worker_processes) << "off by default for now";
  EXPECT_EQ(off->worker_heartbeat_interval, std::chrono::milliseconds(1000));
  EXPECT_EQ(off->worker_heartbeat_timeout, std::chrono::milliseconds(10000));
  EXPECT_EQ(off->worker_shared_memory_mb, 1024u);
  auto on = parse_node_config(
      "worker_processes: on\nworker_heartbeat_interval_ms: 200\n"
      "worker_heartbeat_timeout_ms: 1500\nworker_shared_memory_mb: 64\n",
      "node");
  ASSERT_TRUE(on.has_value()) << on.error().to_string();
  EXPECT_TRUE(on->worker_processes) << "YAML's on/off are booleans";
  EXPECT_EQ(on->worker_heartbeat_interval, std::chrono::milliseconds(200));
  EXPECT_EQ(on->worker_heartbeat_timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(on->worker_shared_memory_mb, 64u);
  auto explicit_off = parse_node_config("worker_processes: off\n", "node");
  ASSERT_TRUE(explicit_off.has_value());
  EXPECT_FALSE(explicit_off->worker_processes);
  auto short_timeout = parse_node_config(
      "worker_heartbeat_interval_ms: 500\nworker_heartbeat_timeout_ms: 500\n", "node");
  ASSERT_FALSE(short_timeout.has_value());
  EXPECT_NE(short_timeout.error().message().find("worker_heartbeat_timeout_ms"),
            std::string::npos);
  EXPECT_FALSE(parse_node_config("worker_processes: maybe\n", "node").has_value());
  EXPECT_FALSE(parse_node_config("worker_shared_memory_mb: 0\n", "node").has_value());
}

TEST(node_config, faults) {
  auto none = parse_node_config("fault_injection: true\n", "node");
  ASSERT_TRUE(none.has_value()) << none.error().to_string();
  EXPECT_TRUE(none->faults.empty()) << "no rules unless listed";

  auto n = parse_node_config(
      "fault_injection: true\n"
      "faults:\n"
      "  - {kind: delay, target: frontend_router, delay_ms: 50, times: 0}\n"
      "  - kind: hang\n"
      "    target: worker:1\n"
      "    probability: 0.25\n"
      "    seed: 7\n"
      "  - {kind: fail_allocations, target: worker, allocations: 3, times: 2}\n",
      "node");
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  ASSERT_EQ(n->faults.size(), 3u);
  const fault_rule& delay = n->faults[0];
  EXPECT_EQ(delay.kind, fault_kind::delay);
  EXPECT_EQ(delay.target, "frontend_router");
  EXPECT_EQ(delay.delay, 50ms);
  EXPECT_EQ(delay.times, 0u) << "0: no limit";
  EXPECT_EQ(delay.probability, 1.0) << "the default";
  EXPECT_EQ(delay.seed, 1u) << "the default";
  const fault_rule& hang = n->faults[1];
  EXPECT_EQ(hang.kind, fault_kind::hang);
  EXPECT_EQ(hang.target, "worker:1");
  EXPECT_EQ(hang.times, 1u) << "once by default";
  EXPECT_EQ(hang.probability, 0.25);
  EXPECT_EQ(hang.seed, 7u);
  EXPECT_EQ(hang.delay, 0ms);
  EXPECT_EQ(n->faults[2].allocations, 3u);
  EXPECT_EQ(n->faults[2].times, 2u);

  // Errors name the rule and its field.
  auto refused = [](const std::string& rules, std::string_view where, std::string_view words = "") {
    auto c = parse_node_config("fault_injection: true\nfaults:\n" + rules, "node.yaml");
    ASSERT_FALSE(c.has_value()) << rules;
    EXPECT_EQ(c.error().code(), error_code::invalid_argument);
    const std::string& m = c.error().message();
    EXPECT_NE(m.find("node.yaml: " + std::string(where) + ":"), std::string::npos) << m;
    EXPECT_NE(m.find(words), std::string::npos) << m;
  };
  const std::string ok = "  - {kind: hang, target: worker}\n";
  refused(ok + ok + "  - {kind: hang, target: worker, probability: 0}\n", "faults[2].probability",
          "(0, 1]");
  refused(ok + "  - {kind: hang, target: worker, probability: 1.5}\n", "faults[1].probability");
  refused("  - {kind: meltdown, target: worker}\n", "faults[0].kind", "unknown fault kind");
  refused("  - {target: worker}\n", "faults[0].kind", "required");
  refused("  - {kind: drop, target: worker:1}\n", "faults[0].target", "happens on a hop");
  refused("  - {kind: hang}\n", "faults[0].target");
  refused("  - {kind: hang, target: \"worker:x\"}\n", "faults[0].target", "names no worker");
  refused("  - {kind: delay, target: frontend_router}\n", "faults[0].delay_ms", "above 0");
  refused("  - {kind: delay, target: frontend_router, delay_ms: -5}\n", "faults[0].delay_ms");
  refused("  - {kind: fail_allocations, target: worker, allocations: 0}\n",
          "faults[0].allocations");
  refused("  - {kind: hang, target: worker, times: -1}\n", "faults[0].times");
  refused("  - {kind: hang, target: worker, seed: -1}\n", "faults[0].seed");
  refused("  - {kind: hang, target: worker, probability: often}\n", "faults[0].probability");
  refused("  - {kind: hang, target: worker, when: now}\n", "faults[0]", "unknown key 'when'");
  refused("  - hang\n", "faults[0]", "expected a mapping");
  auto not_a_list = parse_node_config("fault_injection: true\nfaults: {kind: hang}\n", "node");
  ASSERT_FALSE(not_a_list.has_value());
  EXPECT_NE(not_a_list.error().message().find("faults: a list"), std::string::npos);

  // Rules without the switch: the node must not start.
  for (const char* off : {"", "fault_injection: false\n"}) {
    auto c = parse_node_config(std::string(off) + "faults:\n" + ok, "node.yaml");
    ASSERT_FALSE(c.has_value()) << off;
    EXPECT_EQ(c.error().code(), error_code::invalid_argument);
    EXPECT_NE(c.error().message().find("fault_injection: true"), std::string::npos)
        << c.error().message();
  }
  auto empty = parse_node_config("faults: []\n", "node");
  ASSERT_TRUE(empty.has_value()) << "an empty list asks for nothing";
}

TEST(node_config, readiness_and_load_delay) {
  auto absent = parse_node_config("cpu_workers: 1\n", "node");
  ASSERT_TRUE(absent.has_value());
  EXPECT_EQ(absent->readiness, readiness_policy::strict) << "Triton's strict readiness by default";
  EXPECT_EQ(absent->load_delay, std::chrono::milliseconds(0));
  auto any = parse_node_config("readiness: any\nload_delay_ms: 250\n", "node");
  ASSERT_TRUE(any.has_value()) << any.error().to_string();
  EXPECT_EQ(any->readiness, readiness_policy::any);
  EXPECT_EQ(any->load_delay, std::chrono::milliseconds(250));
  auto strict = parse_node_config("readiness: strict\n", "node");
  ASSERT_TRUE(strict.has_value());
  EXPECT_EQ(strict->readiness, readiness_policy::strict);
  auto bad = parse_node_config("readiness: some\n", "node");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("strict or any"), std::string::npos)
      << bad.error().message();
  EXPECT_FALSE(parse_node_config("load_delay_ms: -1\n", "node").has_value());
}

TEST(node_config, tuning_records_file) {
  auto absent = parse_node_config("cpu_workers: 1\n", "node");
  ASSERT_TRUE(absent.has_value());
  EXPECT_EQ(absent->tuning_records_file, "") << "off by default";
  auto set = parse_node_config("tuning_records_file: /var/lib/troupe/tuning.txt\n", "node");
  ASSERT_TRUE(set.has_value()) << set.error().to_string();
  EXPECT_EQ(set->tuning_records_file, "/var/lib/troupe/tuning.txt");
  auto bad = parse_node_config("tuning_records_file: [a, b]\n", "node");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("tuning_records_file"), std::string::npos)
      << bad.error().message();
}

TEST(model_config, node_kserve_grpc_port_and_shared_memory) {
  auto d = parse_node_config("cpu_workers: 1\n", "node");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->grpc_port, 8001);
  EXPECT_TRUE(d->shared_memory);
  auto n = parse_node_config("grpc_port: 0\nshared_memory: false\n", "node");
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  EXPECT_EQ(n->grpc_port, 0);
  EXPECT_FALSE(n->shared_memory);
  EXPECT_FALSE(parse_node_config("grpc_port: 70000\n", "node").has_value());
}

TEST(model_config, device_and_precision) {
  auto plain = parse_model_config("max_batch_size: 4\n", "test");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->device, device_preference::any);
  EXPECT_EQ(plain->gpu_precision, "") << "the worker picks fp16 on a GPU, fp32 on the CPU";
  auto gpu = parse_model_config("device: gpu\nprecision: fp32\n", "test");
  ASSERT_TRUE(gpu.has_value()) << gpu.error().to_string();
  EXPECT_EQ(gpu->device, device_preference::gpu);
  EXPECT_EQ(gpu->gpu_precision, "fp32");
  auto triton = parse_model_config("instance_group: [{count: 1, kind: KIND_GPU}]\n", "test");
  ASSERT_TRUE(triton.has_value()) << triton.error().to_string();
  EXPECT_EQ(triton->device, device_preference::gpu);
  auto cpu = parse_model_config("instance_group: [{kind: KIND_CPU}]\ndevice: cpu\n", "test");
  ASSERT_TRUE(cpu.has_value()) << cpu.error().to_string();
  EXPECT_EQ(cpu->device, device_preference::cpu);
}

TEST(model_config, batch_slice_rows) {
  auto plain = parse_model_config("max_batch_size: 4\n", "test");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->batch_slice_rows, 0);
  auto c = parse_model_config("max_batch_size: 128\nbatch_slice_rows: 32\n", "test");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  EXPECT_EQ(c->batch_slice_rows, 32);
  for (const char* yaml : {"max_batch_size: 8\nbatch_slice_rows: 16\n",
                           "max_batch_size: 0\nbatch_slice_rows: 1\n",
                           "max_batch_size: 8\nbatch_slice_rows: -1\n"}) {
    auto bad = parse_model_config(yaml, "test");
    ASSERT_FALSE(bad.has_value()) << yaml;
    EXPECT_NE(bad.error().message().find("batch_slice_rows"), std::string::npos)
        << bad.error().message();
  }
}

TEST(model_config, shape_cache) {
  auto plain = parse_model_config("max_batch_size: 4\n", "test");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->shape_cache.max_plans, runtime::shape_cache_limits{}.max_plans);
  EXPECT_EQ(plain->shape_cache.max_bytes, runtime::shape_cache_limits{}.max_bytes);
  auto c = parse_model_config("shape_cache: {max_plans: 8, max_bytes: 268435456}\n", "test");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  EXPECT_EQ(c->shape_cache.max_plans, 8u);
  EXPECT_EQ(c->shape_cache.max_bytes, size_t{256} << 20);
  auto one = parse_model_config("shape_cache: {max_plans: 2}\n", "test");
  ASSERT_TRUE(one.has_value()) << one.error().to_string();
  EXPECT_EQ(one->shape_cache.max_plans, 2u);
  EXPECT_EQ(one->shape_cache.max_bytes, runtime::shape_cache_limits{}.max_bytes);
  // Bad values: errors_name_the_key.
}

TEST(model_config, scaling) {
  auto plain = parse_model_config("max_batch_size: 4\n", "test");
  ASSERT_TRUE(plain.has_value());
  EXPECT_FALSE(plain->scaling.has_value()) << "no block: not scaled";
  auto c = parse_model_config(
      "scaling:\n"
      "  min_replicas: 2\n"
      "  max_replicas: 8\n"
      "  slo_p99_ms: 15\n"
      "  upscale_delay_s: 1.5\n"
      "  downscale_delay_s: 120\n",
      "test");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  ASSERT_TRUE(c->scaling.has_value());
  EXPECT_EQ(c->scaling->min_replicas, 2u);
  EXPECT_EQ(c->scaling->max_replicas, 8u);
  EXPECT_EQ(c->scaling->slo_p99_ms, 15);
  EXPECT_EQ(c->scaling->upscale_delay, 1500ms);
  EXPECT_EQ(c->scaling->downscale_delay, 120s);
  EXPECT_EQ(c->scaling->scale_to_zero_after, 0s);
  // Defaults: max_replicas = min_replicas; the SLO of adaptive batching; the policy's delays.
  auto d = parse_model_config(
      "dynamic_batching: {adaptive: {enabled: true, slo_p99_ms: 20}}\n"
      "scaling: {min_replicas: 3}\n",
      "test");
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  EXPECT_EQ(d->scaling->max_replicas, 3u);
  EXPECT_EQ(d->scaling->slo_p99_ms, 20);
  EXPECT_EQ(d->scaling->upscale_delay, scaling_config{}.upscale_delay);
  EXPECT_EQ(d->scaling->downscale_delay, scaling_config{}.downscale_delay);
  auto z = parse_model_config(
      "scaling: {min_replicas: 0, max_replicas: 4, slo_p99_ms: 50, scale_to_zero_after_s: 300}\n",
      "test");
  ASSERT_TRUE(z.has_value()) << z.error().to_string();
  EXPECT_EQ(z->scaling->min_replicas, 0u);
  EXPECT_EQ(z->scaling->scale_to_zero_after, 300s);

  struct bad_case {
    const char* yaml;
    const char* fragment;
  };
  for (const auto& [yaml, fragment] : std::vector<bad_case>{
           {"scaling: {min_replicas: 5, max_replicas: 2, slo_p99_ms: 10}\n",
            "scaling.min_replicas"},
           {"scaling: {max_replicas: 0, slo_p99_ms: 10}\n", "scaling.max_replicas"},
           {"scaling: {max_replicas: 4}\n", "scaling.slo_p99_ms"},
           {"scaling: {max_replicas: 4, slo_p99_ms: -5}\n", "scaling.slo_p99_ms"},
           {"scaling: {max_replicas: 4, slo_p99_ms: 10, upscale_delay_s: -1}\n",
            "scaling.upscale_delay_s"},
           {"scaling: {max_replicas: 4, slo_p99_ms: 10, downscale_delay_s: soon}\n",
            "scaling.downscale_delay_s"},
           {"scaling: {min_replicas: 0, max_replicas: 4, slo_p99_ms: 10}\n",
            "scale_to_zero_after_s"},
           {"scaling: {min_replicas: 1, max_replicas: 4, slo_p99_ms: 10, "
            "scale_to_zero_after_s: 60}\n",
            "scaling.scale_to_zero_after_s"},
           {"scaling: {max_replica: 4, slo_p99_ms: 10}\n", "max_replica"},
           {"scaling: 4\n", "scaling"},
       }) {
    auto bad = parse_model_config(yaml, "test");
    ASSERT_FALSE(bad.has_value()) << yaml;
    EXPECT_EQ(bad.error().code(), error_code::invalid_argument);
    EXPECT_NE(bad.error().message().find(fragment), std::string::npos)
        << yaml << " -> " << bad.error().message();
  }
}

TEST(model_config, load_timeout) {
  auto plain = parse_model_config("max_batch_size: 4\n", "test");
  ASSERT_TRUE(plain.has_value());
  EXPECT_FALSE(plain->load_timeout.has_value()) << "the node's applies";
  auto node = parse_node_config("cpu_workers: 1\n", "node");
  ASSERT_TRUE(node.has_value());
  EXPECT_EQ(node->load_timeout, default_load_timeout);
  auto c = parse_model_config("load_timeout_s: 2.5\n", "test");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  EXPECT_EQ(c->load_timeout, 2500ms);
  auto n = parse_node_config("load_timeout_s: 60\n", "node");
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  EXPECT_EQ(n->load_timeout, 60s);
  for (const char* bad : {"load_timeout_s: 0\n", "load_timeout_s: -1\n", "load_timeout_s: soon\n",
                          "load_timeout_s: 100000\n"}) {
    for (const auto& error : {parse_model_config(bad, "test").take_status(),
                              parse_node_config(bad, "node").take_status()}) {
      EXPECT_EQ(error.code(), error_code::invalid_argument) << bad;
      EXPECT_NE(error.message().find("load_timeout_s"), std::string::npos)
          << bad << " -> " << error.message();
    }
  }
}

TEST(model_config, a_config_that_is_not_a_regular_file_is_refused_without_blocking) {
  testing::temp_dir dir;
  const std::filesystem::path fifo = dir.path() / "config.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  // On a thread, awaited with a deadline: a reader that blocked on the FIFO fails the test
  // instead of hanging it (and is then let go by opening the FIFO for writing).
  auto result = std::async(std::launch::async, [&] { return load_model_config(fifo.string()); });
  if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
    FAIL() << "reading a FIFO config.yaml blocked";
  }
  auto c = result.get();
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), error_code::io_error);
  EXPECT_NE(c.error().message().find("FIFO, not a regular file"), std::string::npos)
      << c.error().message();
  EXPECT_TRUE(load_model_config((dir.path() / "absent.yaml").string()).has_value())
      << "a missing config.yaml still means the defaults";
}

TEST(model_config, input_normalization) {
  auto plain = parse_model_config("max_batch_size: 4\n", "test");
  ASSERT_TRUE(plain.has_value());
  EXPECT_FALSE(plain->input_normalization.has_value());
  auto c = parse_model_config(
      "input_normalization:\n"
      "  input: input          # optional when the model has exactly one input\n"
      "  dtype: uint8          # what clients send\n"
      "  mean: [123.675, 116.28, 103.53]\n"
      "  std: [58.395, 57.12, 57.375]\n"
      "  channel_axis: 1       # optional, default 1\n",
      "test");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  ASSERT_TRUE(c->input_normalization.has_value());
  const runtime::input_normalization& n = *c->input_normalization;
  EXPECT_EQ(n.input, "input");
  EXPECT_EQ(n.client_type, dtype::u8);
  EXPECT_EQ(n.mean, (std::vector<float>{123.675f, 116.28f, 103.53f}));
  EXPECT_EQ(n.stddev, (std::vector<float>{58.395f, 57.12f, 57.375f}));
  EXPECT_EQ(n.channel_axis, 1);
  auto minimal = parse_model_config(
      "input_normalization: {dtype: uint16, mean: [0], std: [257], channel_axis: -1}\n", "test");
  ASSERT_TRUE(minimal.has_value()) << minimal.error().to_string();
  EXPECT_EQ(minimal->input_normalization->input, "");
  EXPECT_EQ(minimal->input_normalization->client_type, dtype::u16);
  EXPECT_EQ(minimal->input_normalization->channel_axis, -1);
  // The demo's config (scripts/demo.sh serves it) carries the block.
  auto demo =
      load_model_config(std::string(TROUPE_SOURCE_DIR) + "/demo/models/squeezenet/config.yaml");
  ASSERT_TRUE(demo.has_value()) << demo.error().to_string();
  ASSERT_TRUE(demo->input_normalization.has_value());
  EXPECT_EQ(demo->input_normalization->client_type, dtype::u8);
  EXPECT_EQ(demo->input_normalization->mean.size(), 3u);

  struct bad_case {
    const char* yaml;
    const char* fragment;
  };
  for (const auto& [yaml, fragment] : std::vector<bad_case>{
           {"input_normalization: {dtype: uint8, mean: [1, 2, 3], std: [1, 2, 3], scale: 2}\n",
            "unknown key 'scale'"},
           {"input_normalization: {mean: [1, 2, 3], std: [1, 2, 3]}\n", "needs dtype"},
           {"input_normalization: {dtype: uint8, std: [1, 2, 3]}\n", "needs mean"},
           {"input_normalization: {dtype: uint8, mean: [1, 2, 3]}\n", "needs std"},
           {"input_normalization: {dtype: float32, mean: [1], std: [1]}\n",
            "input_normalization.dtype"},
           {"input_normalization: {dtype: [uint8], mean: [1], std: [1]}\n",
            "input_normalization.dtype"},
           {"input_normalization: {dtype: uint8, mean: 1, std: [1]}\n", "input_normalization.mean"},
           {"input_normalization: {dtype: uint8, mean: [1, red], std: [1, 1]}\n",
            "input_normalization.mean[1]"},
           {"input_normalization: {dtype: uint8, mean: [.nan], std: [1]}\n",
            "input_normalization.mean[0]"},
           {"input_normalization: {dtype: uint8, mean: [1, 2], std: [1]}\n", "std 1"},
           {"input_normalization: {dtype: uint8, mean: [], std: []}\n", "mean is empty"},
           {"input_normalization: {dtype: uint8, mean: [1], std: [0]}\n", "std[0]"},
           {"input_normalization: {dtype: uint8, mean: [1], std: [1], channel_axis: x}\n",
            "input_normalization.channel_axis"},
           {"input_normalization: {dtype: uint8, mean: [1], std: [1], channel_axis: 9}\n",
            "input_normalization.channel_axis"},
           {"input_normalization: {dtype: uint8, mean: [1], std: [1], input: [a]}\n",
            "input_normalization.input"},
           {"input_normalization: [uint8]\n", "input_normalization"},
       }) {
    auto bad = parse_model_config(yaml, "test");
    ASSERT_FALSE(bad.has_value()) << yaml;
    EXPECT_EQ(bad.error().code(), error_code::invalid_argument) << yaml;
    EXPECT_NE(bad.error().message().find(fragment), std::string::npos)
        << yaml << " -> " << bad.error().message();
  }
}

TEST(node_config, gpus) {
  auto absent = parse_node_config("cpu_workers: 1\n", "node");
  ASSERT_TRUE(absent.has_value());
  EXPECT_FALSE(absent->gpus.has_value()) << "default: every visible GPU";
  auto all = parse_node_config("gpus: all\n", "node");
  ASSERT_TRUE(all.has_value());
  EXPECT_FALSE(all->gpus.has_value());
  for (const char* none : {"gpus: none\n", "gpus: []\n"}) {
    auto n = parse_node_config(none, "node");
    ASSERT_TRUE(n.has_value()) << none;
    ASSERT_TRUE(n->gpus.has_value()) << none;
    EXPECT_TRUE(n->gpus->empty()) << none;
  }
  auto list = parse_node_config("gpus: [1, 0]\n", "node");
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(*list->gpus, (std::vector<int>{1, 0}));
  auto one = parse_node_config("gpus: 2\n", "node");
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(*one->gpus, (std::vector<int>{2}));
  for (const char* bad : {"gpus: [0, 0]\n", "gpus: [-1]\n", "gpus: some\n", "gpus: {a: 1}\n"}) {
    auto n = parse_node_config(bad, "node");
    ASSERT_FALSE(n.has_value()) << bad;
    EXPECT_EQ(n.error().code(), error_code::invalid_argument) << bad;
    EXPECT_NE(n.error().message().find("gpus"), std::string::npos) << n.error().message();
  }
}

TEST(bucket_rows, powers_of_two_preferred_and_max) {
  model_config c;
  EXPECT_EQ(default_bucket_rows(0, c), (std::vector<int64_t>{1}));
  EXPECT_EQ(default_bucket_rows(8, c), (std::vector<int64_t>{1, 2, 4, 8}));
  c.preferred_batch_sizes = {6};
  EXPECT_EQ(default_bucket_rows(12, c), (std::vector<int64_t>{1, 2, 4, 6, 8, 12}));
  c.batch_buckets = {4};
  EXPECT_EQ(default_bucket_rows(12, c), (std::vector<int64_t>{4, 12}));
}

}  // namespace
}  // namespace troupe::serving

namespace troupe::serving {
namespace {

TEST(node_config, the_deployed_node_yaml_parses) {
  auto n = load_node_config(std::string(TROUPE_SOURCE_DIR) + "/deploy/node.yaml");
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  EXPECT_EQ(n->listen, "tcp://*:5555");
  EXPECT_EQ(n->metrics_port, 8002);
  EXPECT_EQ(n->http_port, 8000);
  EXPECT_TRUE(n->shared_memory);
  EXPECT_EQ(n->load_timeout, default_load_timeout);
}


// The cluster keys (docs/cluster.md): roles, joining, heartbeats, CURVE files.
TEST(node_config, cluster_keys_parse_and_are_checked) {
  auto n = parse_node_config(
      "role: worker\njoin: [tcp://a:5600, tcp://b:5600]\njoin_dns: control:5600\n"
      "node_name: gpu-7\nmodel_cache_dir: /var/cache/troupe\nnode_heartbeat_interval_ms: 200\n"
      "node_heartbeat_timeout_ms: 900\ncurve_secret_key_file: w.key\ncurve_server_key_file: c.pub\n"
      "node_link_connections: 8\nmax_batches_per_replica: 3\n",
      "node.yaml");
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  EXPECT_EQ(n->role, node_role::worker);
  EXPECT_EQ(n->join, (std::vector<std::string>{"tcp://a:5600", "tcp://b:5600"}));
  EXPECT_EQ(n->join_dns, "control:5600");
  EXPECT_EQ(n->node_name, "gpu-7");
  EXPECT_EQ(n->model_cache_dir, "/var/cache/troupe");
  EXPECT_EQ(n->node_heartbeat_interval, std::chrono::milliseconds(200));
  EXPECT_EQ(n->node_heartbeat_timeout, std::chrono::milliseconds(900));
  EXPECT_EQ(n->curve_secret_key_file, "w.key");
  EXPECT_EQ(n->curve_server_key_file, "c.pub");
  EXPECT_EQ(n->node_link_connections, 8u);
  EXPECT_EQ(n->max_batches_per_replica, std::optional<uint32_t>(3));

  auto one = parse_node_config("role: control\nworkers_listen: tcp://*:5700\njoin: tcp://x:1\n", "n");
  ASSERT_TRUE(one.has_value()) << one.error().to_string();
  EXPECT_EQ(one->role, node_role::control);
  EXPECT_EQ(one->workers_listen, std::optional<std::string>("tcp://*:5700"));
  EXPECT_EQ(one->join, std::vector<std::string>{"tcp://x:1"});  // a single endpoint, not a list

  auto defaults = parse_node_config("{}", "n");
  ASSERT_TRUE(defaults.has_value());
  EXPECT_EQ(defaults->role, node_role::all);
  EXPECT_FALSE(defaults->workers_listen.has_value());
  EXPECT_EQ(defaults->node_heartbeat_timeout, std::chrono::milliseconds(3000));
  EXPECT_EQ(defaults->node_link_connections, 4u);
  EXPECT_FALSE(defaults->max_batches_per_replica.has_value()) << "2, or 3 on a control node";

  for (const char* bad :
       {"role: leader\n", "node_heartbeat_interval_ms: 1000\nnode_heartbeat_timeout_ms: 500\n",
        "node_heartbeat_interval_ms: 1\n", "join: {a: 1}\n", "node_link_connections: 0\n",
        "node_link_connections: 65\n", "max_batches_per_replica: 0\n",
        "max_batches_per_replica: 9\n"}) {
    auto r = parse_node_config(bad, "node.yaml");
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), error_code::invalid_argument) << bad;
  }
}

// The Kubernetes cluster overlay's node.yaml of each role parses with the node's own parser.
TEST(node_config, the_cluster_overlays_node_yamls_parse) {
  const std::string dir = std::string(TROUPE_SOURCE_DIR) + "/deploy/kubernetes/overlays/cluster/";
  auto control = load_node_config(dir + "control-node.yaml");
  ASSERT_TRUE(control.has_value()) << control.error().to_string();
  EXPECT_EQ(control->role, node_role::control);
  EXPECT_EQ(control->workers_listen, std::optional<std::string>("tcp://*:5600"));
  EXPECT_FALSE(control->curve_authorized_keys_file.empty());
  auto worker = load_node_config(dir + "worker-node.yaml");
  ASSERT_TRUE(worker.has_value()) << worker.error().to_string();
  EXPECT_EQ(worker->role, node_role::worker);
  EXPECT_EQ(worker->join_dns, "troupe-control-workers:5600");
  EXPECT_FALSE(worker->curve_server_key_file.empty());
}

}  // namespace
}  // namespace troupe::serving
