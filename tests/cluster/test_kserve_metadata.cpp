// The HTTP door's non-inference documents from a hand-built routing table: model metadata (batch
// dim -1, datatype names), Triton's model configuration (dims without the batch dim, TYPE_*
// names, dynamic_batching, instance_group, version_policy), version lookup errors, readiness and
// server metadata, shared-memory status.

#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>

#include "cluster/kserve_metadata.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/readiness.hpp"

namespace troupe::cluster::kserve {
namespace {

using json = nlohmann::json;

serving::version_entry version(int64_t v, int64_t max_batch, serving::version_state state) {
  auto sig = std::make_shared<serving::model_signature>();
  sig->model = "mlp";
  sig->version = v;
  sig->max_batch_size = max_batch;
  const int64_t b = max_batch > 0 ? -1 : 1;
  sig->inputs = {{"x", dtype::f32, {b, 16}}, {"ids", dtype::i64, {b, -1}}};
  sig->outputs = {{"y", dtype::f16, {b, 8}}};
  sig->config.max_batch_size = max_batch;
  sig->config.max_queue_delay = std::chrono::microseconds(500);
  sig->config.preferred_batch_sizes = {4, 8};
  sig->config.instance_count = 2;
  sig->config.device = serving::device_preference::cpu;
  sig->config.latest_versions = 0;
  serving::version_entry e;
  e.version = v;
  e.signature = sig;
  e.state = std::make_shared<std::atomic<uint8_t>>(static_cast<uint8_t>(state));
  return e;
}

serving::model_table table() {
  serving::model_table t;
  serving::model_entry m;
  m.name = "mlp";
  m.versions.push_back(version(1, 8, serving::version_state::ready));
  m.versions.push_back(version(2, 8, serving::version_state::ready));
  t.models.emplace("mlp", std::move(m));
  serving::model_entry fixed;
  fixed.name = "fixed";
  fixed.versions.push_back(version(1, 0, serving::version_state::ready));
  t.models.emplace("fixed", std::move(fixed));
  serving::model_entry broken;
  broken.name = "broken";
  broken.load_error = invalid_argument("bad config.yaml");
  t.models.emplace("broken", std::move(broken));
  return t;
}

TEST(kserve_metadata, model_metadata) {
  const auto t = table();
  auto v = find_version(&t, "mlp", 0);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ((*v)->version, 2) << "the newest ready version";
  const json j = json::parse(model_metadata_json(*t.find("mlp"), **v));
  EXPECT_EQ(j["name"], "mlp");
  EXPECT_EQ(j["versions"], json({"1", "2"}));
  EXPECT_EQ(j["platform"], "troupe_onnx");
  EXPECT_EQ(j["inputs"][0], json({{"name", "x"}, {"datatype", "FP32"}, {"shape", {-1, 16}}}));
  EXPECT_EQ(j["inputs"][1]["datatype"], "INT64");
  EXPECT_EQ(j["inputs"][1]["shape"], json({-1, -1}));
  EXPECT_EQ(j["outputs"][0]["datatype"], "FP16");
}

TEST(kserve_metadata, model_config_as_triton_writes_it) {
  const auto t = table();
  const json j = json::parse(model_config_json(*t.find("mlp"), **find_version(&t, "mlp", 1)));
  EXPECT_EQ(j["name"], "mlp");
  EXPECT_EQ(j["max_batch_size"], 8);
  EXPECT_EQ(j["input"][0], json({{"name", "x"}, {"data_type", "TYPE_FP32"}, {"dims", {16}}}));
  EXPECT_EQ(j["input"][1]["dims"], json({-1}));
  EXPECT_EQ(j["output"][0]["data_type"], "TYPE_FP16");
  EXPECT_EQ(j["dynamic_batching"]["preferred_batch_size"], json({4, 8}));
  EXPECT_EQ(j["dynamic_batching"]["max_queue_delay_microseconds"], 500);
  EXPECT_EQ(j["instance_group"][0]["kind"], "KIND_CPU");
  EXPECT_EQ(j["instance_group"][0]["count"], 2);
  EXPECT_TRUE(j["version_policy"].contains("all"));

  const json f = json::parse(model_config_json(*t.find("fixed"), **find_version(&t, "fixed", 0)));
  EXPECT_EQ(f["max_batch_size"], 0);
  EXPECT_EQ(f["input"][0]["dims"], json({1, 16})) << "no batch dim to drop";
  EXPECT_FALSE(f.contains("dynamic_batching"));
  EXPECT_EQ(config_type_name("BOOL"), "TYPE_BOOL");
  EXPECT_EQ(config_type_name("BF16"), "TYPE_BF16");
}

TEST(kserve_metadata, lookup_errors) {
  const auto t = table();
  EXPECT_EQ(find_version(&t, "nope", 0).error().code(), error_code::not_found);
  EXPECT_EQ(find_version(&t, "mlp", 7).error().code(), error_code::not_found);
  auto broken = find_version(&t, "broken", 0);
  ASSERT_FALSE(broken.has_value());
  EXPECT_EQ(broken.error().code(), error_code::unavailable);
  EXPECT_NE(broken.error().message().find("bad config.yaml"), std::string::npos);
  EXPECT_EQ(find_version(nullptr, "mlp", 0).error().code(), error_code::unavailable);
}

TEST(kserve_metadata, server_metadata_and_readiness) {
  const auto ext = http_extensions(true);
  const json j = json::parse(server_metadata_json("0.1.0", ext));
  EXPECT_EQ(j["name"], "troupe");
  EXPECT_EQ(j["version"], "0.1.0");
  const auto& e = j["extensions"];
  EXPECT_NE(std::find(e.begin(), e.end(), "binary_tensor_data"), e.end());
  EXPECT_NE(std::find(e.begin(), e.end(), "system_shared_memory"), e.end());
  EXPECT_NE(std::find(e.begin(), e.end(), "model_repository"), e.end());
  EXPECT_EQ(std::find(e.begin(), e.end(), "cuda_shared_memory"), e.end()) << "not served";
  const auto off = http_extensions(false);
  EXPECT_EQ(std::find(off.begin(), off.end(), "system_shared_memory"), off.end());

  serving::node_readiness r;
  r.ready = false;
  r.reason = "loading";
  EXPECT_EQ(json::parse(readiness_json(r)),
            json({{"live", true}, {"ready", false}, {"reason", "loading"}}));
  r.ready = true;
  EXPECT_EQ(json::parse(readiness_json(r)), json({{"live", true}, {"ready", true}}));
  EXPECT_EQ(shared_memory_status_json({}), "[]");
}

TEST(kserve_metadata, statistics_from_the_version_metrics) {
  auto t = table();
  serving::serving_metrics metrics;
  auto vm = metrics.for_version("mlp", 1);
  t.models.at("mlp").versions[0].metrics = vm;
  vm->record_request(error_code::ok, 0.25);
  vm->record_request(error_code::ok, 0.25);
  vm->record_request(error_code::invalid_argument, 0.125);
  vm->observe_queue(0.25);
  vm->observe_compute(0.125, 1);
  vm->observe_batch(2);
  auto one = model_statistics_json(t, "mlp", 1);
  ASSERT_TRUE(one.has_value()) << one.error().to_string();
  const json j = json::parse(*one);
  ASSERT_EQ(j["model_stats"].size(), 1u);
  const json& s = j["model_stats"][0];
  EXPECT_EQ(s["name"], "mlp");
  EXPECT_EQ(s["version"], "1");
  EXPECT_EQ(s["inference_count"], 2) << "rows";
  EXPECT_EQ(s["execution_count"], 1) << "batches";
  const json& is = s["inference_stats"];
  EXPECT_EQ(is["success"], json({{"count", 2}, {"ns", 500000000}}));
  EXPECT_EQ(is["fail"], json({{"count", 1}, {"ns", 125000000}}));
  EXPECT_GT(s["last_inference"].get<uint64_t>(), 0u);
  EXPECT_EQ(is["queue"], json({{"count", 1}, {"ns", 250000000}}));
  EXPECT_EQ(is["compute_infer"], json({{"count", 1}, {"ns", 125000000}}));
  for (const char* k : {"compute_input", "compute_output", "cache_hit", "cache_miss"})
    EXPECT_TRUE(is[k].contains("count") && is[k].contains("ns")) << k << ": perf_analyzer reads it";
  EXPECT_EQ(json::parse(*model_statistics_json(t, "mlp", 0))["model_stats"].size(), 2u);
  EXPECT_EQ(json::parse(*model_statistics_json(t, "", 0))["model_stats"].size(), 3u);
  EXPECT_EQ(model_statistics_json(t, "nope", 0).error().code(), error_code::not_found);
  EXPECT_EQ(model_statistics_json(t, "mlp", 9).error().code(), error_code::not_found);
}

}  // namespace
}  // namespace troupe::cluster::kserve
