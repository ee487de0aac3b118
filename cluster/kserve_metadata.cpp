#include "cluster/kserve_metadata.hpp"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cluster/kserve_types.hpp"
#include "cluster/shared_memory_registry.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/readiness.hpp"

namespace troupe::cluster::kserve {
namespace {

using json = nlohmann::json;

/// Text for the wire: invalid UTF-8 (a model name is a directory name) is replaced, not thrown.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json tensor_metadata(const serving::tensor_spec& s) {
  return {{"name", s.name}, {"datatype", dtype_to_name(s.type)}, {"shape", s.shape}};
}

json tensor_config(const serving::tensor_spec& s, bool batched) {
  std::vector<int64_t> dims(s.shape.begin() + (batched && !s.shape.empty() ? 1 : 0), s.shape.end());
  return {{"name", s.name}, {"data_type", config_type_name(dtype_to_name(s.type))}, {"dims", dims}};
}

std::string_view instance_kind(serving::device_preference d) {
  switch (d) {
    case serving::device_preference::cpu:
      return "KIND_CPU";
    case serving::device_preference::gpu:
      return "KIND_GPU";
    case serving::device_preference::any:
      break;
  }
  return "KIND_AUTO";
}

}  // namespace

std::vector<std::string_view> http_extensions(bool shared_memory) {
  // model_repository: the index always; load and unload where the control mode allows them.
  std::vector<std::string_view> e{"binary_tensor_data", "model_configuration", "model_repository",
                                  "parameters", "statistics"};
  if (shared_memory) e.push_back("system_shared_memory");
  return e;
}

std::string server_metadata_json(std::string_view version,
                                 std::span<const std::string_view> extensions) {
  json ext = json::array();
  for (std::string_view e : extensions) ext.push_back(e);
  return dump({{"name", "troupe"}, {"version", version}, {"extensions", ext}});
}

expected<const serving::version_entry*> find_version(const serving::model_table* table,
                                                     std::string_view model, int64_t version) {
  if (!table) return make_error(error_code::unavailable, "the node is still loading its models");
  const serving::model_entry* m = table->find(model);
  if (!m) return table->unknown_model(model);
  if (version > 0) {
    const serving::version_entry* v = m->find(version);
    if (!v)
      return not_found("model '" + std::string(model) + "' has no version " +
                       std::to_string(version));
    return v;
  }
  if (const serving::version_entry* v = m->default_version()) return v;
  if (!m->load_error.is_ok())
    return make_error(
        error_code::unavailable,
        "model '" + std::string(model) + "' failed to load: " + m->load_error.to_string());
  return make_error(error_code::unavailable,
                    "model '" + std::string(model) + "' has no loaded version");
}

std::string model_metadata_json(const serving::model_entry& m, const serving::version_entry& v) {
  json versions = json::array();
  for (const auto& x : m.versions) versions.push_back(std::to_string(x.version));
  json inputs = json::array(), outputs = json::array();
  if (v.signature) {
    for (const auto& s : v.signature->inputs) inputs.push_back(tensor_metadata(s));
    for (const auto& s : v.signature->outputs) outputs.push_back(tensor_metadata(s));
  }
  return dump({{"name", m.name},
               {"versions", versions},
               {"platform", "troupe_onnx"},
               {"inputs", inputs},
               {"outputs", outputs}});
}

std::string model_config_json(const serving::model_entry& m, const serving::version_entry& v) {
  json c = {{"name", m.name}, {"platform", "troupe_onnx"}, {"backend", "troupe"}};
  if (!v.signature) {
    c["max_batch_size"] = 0;
    return dump(c);
  }
  const serving::model_signature& sig = *v.signature;
  const serving::model_config& cfg = sig.config;
  const bool batched = sig.max_batch_size > 0;
  c["max_batch_size"] = sig.max_batch_size;
  json in = json::array(), out = json::array();
  for (const auto& s : sig.inputs) in.push_back(tensor_config(s, batched));
  for (const auto& s : sig.outputs) out.push_back(tensor_config(s, batched));
  c["input"] = in;
  c["output"] = out;
  if (batched) {
    json db = {{"preferred_batch_size", cfg.preferred_batch_sizes},
               {"max_queue_delay_microseconds", cfg.max_queue_delay.count()},
               {"priority_levels", cfg.priority_levels},
               {"default_priority_level", cfg.effective_default_priority()},
               {"default_queue_policy",
                {{"default_timeout_microseconds", cfg.queue.default_timeout.count()},
                 {"allow_timeout_override", cfg.queue.allow_timeout_override},
                 {"max_queue_size", cfg.queue.max_queue_size}}}};
    c["dynamic_batching"] = db;
  }
  c["instance_group"] = json::array(
      {{{"name", m.name}, {"kind", instance_kind(cfg.device)}, {"count", cfg.instance_count}}});
  if (!cfg.specific_versions.empty())
    c["version_policy"] = {{"specific", {{"versions", cfg.specific_versions}}}};
  else if (cfg.latest_versions == 0)
    c["version_policy"] = {{"all", json::object()}};
  else
    c["version_policy"] = {{"latest", {{"num_versions", cfg.latest_versions}}}};
  return dump(c);
}

namespace {

json duration(uint64_t count, uint64_t ns) {
  return {{"count", count}, {"ns", ns}};
}

json version_statistics(const std::string& model, const serving::version_entry& v) {
  // Exact sums kept beside the histograms (serving::version_statistics). Staging the inputs and
  // reading the outputs back are inside compute_infer: compute_input and compute_output count the
  // same requests with 0 ns.
  uint64_t ok = 0, ok_ns = 0, failed = 0, failed_ns = 0, queued = 0, queue_ns = 0, computed = 0,
           compute_ns = 0, executions = 0, inferences = 0, last_ms = 0;
  if (const serving::version_metrics* m = v.metrics.get()) {
    constexpr auto relaxed = std::memory_order_relaxed;
    const serving::version_statistics& st = m->stats;
    ok = st.success_count.load(relaxed);
    ok_ns = st.success_ns.load(relaxed);
    failed = st.fail_count.load(relaxed);
    failed_ns = st.fail_ns.load(relaxed);
    queued = st.queue_count.load(relaxed);
    queue_ns = st.queue_ns.load(relaxed);
    computed = st.compute_count.load(relaxed);
    compute_ns = st.compute_ns.load(relaxed);
    executions = st.execution_count.load(relaxed);
    inferences = st.inference_count.load(relaxed);
    last_ms = st.last_inference_ms.load(relaxed);
  }
  return {{"name", model},
          {"version", std::to_string(v.version)},
          {"last_inference", last_ms},
          {"inference_count", inferences},
          {"execution_count", executions},
          {"inference_stats",
           {{"success", duration(ok, ok_ns)},
            {"fail", duration(failed, failed_ns)},
            {"queue", duration(queued, queue_ns)},
            {"compute_input", duration(computed, 0)},
            {"compute_infer", duration(computed, compute_ns)},
            {"compute_output", duration(computed, 0)},
            {"cache_hit", duration(0, 0)},
            {"cache_miss", duration(0, 0)}}},
          {"batch_stats", json::array()}};
}

}  // namespace

expected<std::string> model_statistics_json(const serving::model_table& table,
                                            std::string_view model, int64_t version) {
  json stats = json::array();
  for (const auto& [name, m] : table.models) {
    if (!model.empty() && name != model) continue;
    for (const auto& v : m.versions)
      if (version == 0 || v.version == version) stats.push_back(version_statistics(name, v));
  }
  if (!model.empty() && !table.find(model)) return table.unknown_model(model);
  if (!model.empty() && version > 0 && stats.empty())
    return not_found("model '" + std::string(model) + "' has no version " +
                     std::to_string(version));
  return dump({{"model_stats", stats}});
}

std::string_view config_type_name(std::string_view datatype) {
  static constexpr std::pair<std::string_view, std::string_view> names[] = {
      {"BOOL", "TYPE_BOOL"},     {"UINT8", "TYPE_UINT8"},   {"UINT16", "TYPE_UINT16"},
      {"UINT32", "TYPE_UINT32"}, {"UINT64", "TYPE_UINT64"}, {"INT8", "TYPE_INT8"},
      {"INT16", "TYPE_INT16"},   {"INT32", "TYPE_INT32"},   {"INT64", "TYPE_INT64"},
      {"FP16", "TYPE_FP16"},     {"FP32", "TYPE_FP32"},     {"FP64", "TYPE_FP64"},
      {"BF16", "TYPE_BF16"},     {"BYTES", "TYPE_STRING"},
  };
  for (const auto& [k, v] : names)
    if (k == datatype) return v;
  return "TYPE_INVALID";
}

std::string readiness_json(const serving::node_readiness& r) {
  json j = {{"live", r.live}, {"ready", r.ready}};
  if (!r.ready) j["reason"] = r.reason;
  return dump(j);
}

std::string shared_memory_status_json(
    std::span<const std::shared_ptr<const shared_memory_region>> regions) {
  json a = json::array();
  for (const auto& r : regions)
    a.push_back({{"name", r->name()},
                 {"key", r->key()},
                 {"offset", r->offset()},
                 {"byte_size", r->byte_size()}});
  return dump(a);
}

}  // namespace troupe::cluster::kserve
