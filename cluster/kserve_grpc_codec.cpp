#include "cluster/kserve_grpc_codec.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "cluster/kserve_types.hpp"
#include "proto/kserve/grpc_service.pb.h"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/readiness.hpp"

#ifndef TROUPE_VERSION
#define TROUPE_VERSION "unknown"
#endif

namespace troupe::cluster::kserve {

namespace pb = ::inference;

namespace {

using parameter_map = google::protobuf::Map<std::string, pb::InferParameter>;

std::string_view view_of(const std::string& s) {
  return {s.data(), s.size()};
}

std::string in_quotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

/// The bytes a tensor of `shape` and `type` holds, or invalid_argument for a negative dim or a
/// count beyond what any request could carry (2^62 bytes: no overflow below).
expected<size_t> tensor_bytes(std::string_view name, dtype type,
                              const google::protobuf::RepeatedField<int64_t>& shape) {
  constexpr uint64_t limit = uint64_t{1} << 62;
  uint64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return invalid_argument("input " + in_quotes(name) + ": shape has a negative dimension " +
                              std::to_string(d));
    if (d != 0 && elements > limit / static_cast<uint64_t>(d))
      return invalid_argument("input " + in_quotes(name) + ": shape is too large");
    elements *= static_cast<uint64_t>(d);
  }
  if (elements > limit / dtype_size(type))
    return invalid_argument("input " + in_quotes(name) + ": shape is too large");
  return static_cast<size_t>(elements * dtype_size(type));
}

/// A parameter as text: strings as they are (a view into the message), other kinds converted
/// into `owned`.
std::string_view parameter_text(const pb::InferParameter& p, std::deque<std::string>& owned) {
  switch (p.parameter_choice_case()) {
    case pb::InferParameter::kStringParam:
      return view_of(p.string_param());
    case pb::InferParameter::kBoolParam:
      return p.bool_param() ? "true" : "false";
    case pb::InferParameter::kInt64Param:
      return owned.emplace_back(std::to_string(p.int64_param()));
    case pb::InferParameter::kUint64Param:
      return owned.emplace_back(std::to_string(p.uint64_param()));
    case pb::InferParameter::kDoubleParam: {
      char buffer[32];
      const auto r = std::to_chars(buffer, buffer + sizeof(buffer), p.double_param());
      return owned.emplace_back(buffer, r.ptr);
    }
    case pb::InferParameter::PARAMETER_CHOICE_NOT_SET:
      break;
  }
  return {};
}

/// An integer parameter (int64_param or uint64_param) in [0, max].
expected<uint64_t> parameter_uint(std::string_view name, const pb::InferParameter& p,
                                  uint64_t max) {
  uint64_t v = 0;
  if (p.parameter_choice_case() == pb::InferParameter::kInt64Param) {
    if (p.int64_param() < 0)
      return invalid_argument("parameter " + in_quotes(name) + " must not be negative, got " +
                              std::to_string(p.int64_param()));
    v = static_cast<uint64_t>(p.int64_param());
  } else if (p.parameter_choice_case() == pb::InferParameter::kUint64Param) {
    v = p.uint64_param();
  } else {
    return invalid_argument("parameter " + in_quotes(name) +
                            " must be an integer (int64_param or "
                            "uint64_param)");
  }
  if (v > max)
    return invalid_argument("parameter " + in_quotes(name) + " is too large: " + std::to_string(v));
  return v;
}

/// The shared-memory range a tensor's parameters name; region null when they name none.
/// `expected_bytes` (inputs): the byte size must equal the tensor's.
expected<shared_memory_span> shared_memory_of(std::string_view what, std::string_view tensor,
                                              const parameter_map& params,
                                              const shared_memory_registry* shm,
                                              std::optional<size_t> expected_bytes) {
  const std::string context = std::string(what) + " " + in_quotes(tensor);
  const auto region = params.find(std::string(shm_region_parameter));
  const auto offset_param = params.find(std::string(shm_offset_parameter));
  const auto size_param = params.find(std::string(shm_byte_size_parameter));
  if (region == params.end()) {
    if (offset_param != params.end() || size_param != params.end())
      return invalid_argument(context +
                              ": shared_memory_offset or shared_memory_byte_size without "
                              "shared_memory_region");
    return shared_memory_span{};
  }
  if (region->second.parameter_choice_case() != pb::InferParameter::kStringParam)
    return invalid_argument(context + ": shared_memory_region must be a string");
  if (!shm)
    return unsupported(context +
                       ": the system shared-memory extension is off on this node "
                       "(node.yaml shared_memory: false)");
  if (size_param == params.end())
    return invalid_argument(context +
                            ": shared_memory_byte_size is required with shared_memory_region");
  constexpr uint64_t max = std::numeric_limits<int64_t>::max();
  auto size = parameter_uint(shm_byte_size_parameter, size_param->second, max);
  if (!size) return size.error().with_context(context);
  uint64_t offset = 0;
  if (offset_param != params.end()) {
    auto o = parameter_uint(shm_offset_parameter, offset_param->second, max);
    if (!o) return o.error().with_context(context);
    offset = *o;
  }
  if (expected_bytes && *size != *expected_bytes)
    return invalid_argument(context + ": shared_memory_byte_size " + std::to_string(*size) +
                            " does not match the " + std::to_string(*expected_bytes) +
                            " bytes of its datatype and shape");
  auto span = shm->find(region->second.string_param(), offset, *size);
  if (!span) return span.error().with_context(context);
  return std::move(*span);
}

/// Typed contents of element type `From` for a tensor of dtype `To`: viewed in place when the
/// layouts agree, else converted (range-checked) into an owned buffer.
template <class To, class From>
status take_contents(std::string_view name, const google::protobuf::RepeatedField<From>& values,
                     size_t expected_bytes, decoded_infer_request& out,
                     serving::request_tensor& t) {
  const size_t count = static_cast<size_t>(values.size());
  if (count * sizeof(To) != expected_bytes)
    return invalid_argument("input " + in_quotes(name) + ": contents hold " +
                            std::to_string(count) + " values, its shape needs " +
                            std::to_string(expected_bytes / sizeof(To)));
  t.bytes = expected_bytes;
  if constexpr (sizeof(To) == sizeof(From) && std::is_same_v<To, From>) {
    t.data = reinterpret_cast<const std::byte*>(values.data());
  } else {
    auto buffer = std::make_unique<std::byte[]>(std::max<size_t>(expected_bytes, 1));
    To* dst = reinterpret_cast<To*>(buffer.get());
    for (size_t i = 0; i < count; ++i) {
      const From v = values.Get(static_cast<int>(i));
      if (!std::in_range<To>(v))
        return invalid_argument("input " + in_quotes(name) + ": value " + std::to_string(v) +
                                " at index " + std::to_string(i) + " is out of range for " +
                                std::string(dtype_to_name(dtype_of<To>::value)));
      dst[i] = static_cast<To>(v);
    }
    t.data = buffer.get();
    out.owned_bytes.push_back(std::move(buffer));
  }
  return status::ok();
}

/// How many of the typed contents' fields hold values (at most one may).
int contents_fields_set(const pb::InferTensorContents& c) {
  return (c.bool_contents_size() > 0) + (c.int_contents_size() > 0) +
         (c.int64_contents_size() > 0) + (c.uint_contents_size() > 0) +
         (c.uint64_contents_size() > 0) + (c.fp32_contents_size() > 0) +
         (c.fp64_contents_size() > 0) + (c.bytes_contents_size() > 0);
}

/// The one field of typed contents a datatype's values travel in (Triton's rule).
std::string_view contents_field_of(dtype t) {
  switch (t) {
    case dtype::boolean:
      return "bool_contents";
    case dtype::i8:
    case dtype::i16:
    case dtype::i32:
      return "int_contents";
    case dtype::i64:
      return "int64_contents";
    case dtype::u8:
    case dtype::u16:
    case dtype::u32:
      return "uint_contents";
    case dtype::u64:
      return "uint64_contents";
    case dtype::f32:
      return "fp32_contents";
    case dtype::f64:
      return "fp64_contents";
    default:
      return {};
  }
}

status decode_contents(std::string_view name, dtype type, const pb::InferTensorContents& c,
                       size_t bytes, decoded_infer_request& out, serving::request_tensor& t) {
  const std::string_view field = contents_field_of(type);
  if (field.empty())
    return invalid_argument("input " + in_quotes(name) + ": " + std::string(dtype_to_name(type)) +
                            " values travel only in raw_input_contents (no typed contents field)");
  if (contents_fields_set(c) > 1)
    return invalid_argument("input " + in_quotes(name) + ": contents set in more than one field");
  const auto wrong_field = [&] {
    return invalid_argument("input " + in_quotes(name) + " is " + std::string(dtype_to_name(type)) +
                            ": its values go in " + std::string(field));
  };
  switch (type) {
    case dtype::boolean:
      if (c.bool_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<bool>(name, c.bool_contents(), bytes, out, t);
    case dtype::i8:
      if (c.int_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<int8_t>(name, c.int_contents(), bytes, out, t);
    case dtype::i16:
      if (c.int_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<int16_t>(name, c.int_contents(), bytes, out, t);
    case dtype::i32:
      if (c.int_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<int32_t>(name, c.int_contents(), bytes, out, t);
    case dtype::i64:
      if (c.int64_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<int64_t>(name, c.int64_contents(), bytes, out, t);
    case dtype::u8:
      if (c.uint_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<uint8_t>(name, c.uint_contents(), bytes, out, t);
    case dtype::u16:
      if (c.uint_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<uint16_t>(name, c.uint_contents(), bytes, out, t);
    case dtype::u32:
      if (c.uint_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<uint32_t>(name, c.uint_contents(), bytes, out, t);
    case dtype::u64:
      if (c.uint64_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<uint64_t>(name, c.uint64_contents(), bytes, out, t);
    case dtype::f32:
      if (c.fp32_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<float>(name, c.fp32_contents(), bytes, out, t);
    case dtype::f64:
      if (c.fp64_contents_size() == 0 && bytes) return wrong_field();
      return take_contents<double>(name, c.fp64_contents(), bytes, out, t);
    default:
      return wrong_field();
  }
}

/// The version of `name` a metadata request means, or why there is none.
expected<const serving::version_entry*> find_version(const serving::model_table* table,
                                                     std::string_view name,
                                                     std::string_view version_text) {
  TROUPE_ASSIGN_OR_RETURN(const int64_t version, parse_version(version_text));
  if (!table) return make_error(error_code::unavailable, "the node is still loading its models");
  const serving::model_entry* m = table->find(name);
  if (!m) return not_found("no model " + in_quotes(name));
  const serving::version_entry* v = version > 0 ? m->find(version) : m->default_version();
  if (!v && version == 0 && !m->versions.empty()) v = &m->versions.back();
  if (!v) {
    if (version > 0)
      return not_found("model " + in_quotes(name) + " has no version " + std::to_string(version));
    if (!m->load_error.is_ok())
      return make_error(error_code::unavailable, "model " + in_quotes(name) + " failed to load: " +
                                                     m->load_error.to_string());
    return not_found("model " + in_quotes(name) + " has no version");
  }
  if (!v->signature)
    return make_error(error_code::unavailable, "model " + in_quotes(name) + " version " +
                                                   std::to_string(v->version) +
                                                   " failed to load: " + v->load_error.to_string());
  return v;
}

pb::DataType config_type(dtype t) {
  switch (t) {
    case dtype::boolean:
      return pb::TYPE_BOOL;
    case dtype::u8:
      return pb::TYPE_UINT8;
    case dtype::u16:
      return pb::TYPE_UINT16;
    case dtype::u32:
      return pb::TYPE_UINT32;
    case dtype::u64:
      return pb::TYPE_UINT64;
    case dtype::i8:
      return pb::TYPE_INT8;
    case dtype::i16:
      return pb::TYPE_INT16;
    case dtype::i32:
      return pb::TYPE_INT32;
    case dtype::i64:
      return pb::TYPE_INT64;
    case dtype::f16:
      return pb::TYPE_FP16;
    case dtype::f32:
      return pb::TYPE_FP32;
    case dtype::f64:
      return pb::TYPE_FP64;
    case dtype::bf16:
      return pb::TYPE_BF16;
    case dtype::undefined:
      break;
  }
  return pb::TYPE_INVALID;
}

template <class Field>
void fill_dims(const serving::tensor_spec& s, bool batched, Field* dims) {
  for (size_t i = batched ? 1 : 0; i < s.shape.size(); ++i) dims->Add(s.shape[i]);
}

}  // namespace

void decoded_infer_request::clear() {
  fields = serving::request_fields{};
  id = {};
  outputs.clear();
  tensors.clear();
  output_names.clear();
  parameters.clear();
  owned_text.clear();
  owned_bytes.clear();
  input_regions.clear();
}

status decode_infer_request(const pb::ModelInferRequest& m, const shared_memory_registry* shm,
                            decoded_infer_request& out) {
  out.clear();
  out.id = view_of(m.id());
  out.fields.model = view_of(m.model_name());
  if (m.model_name().empty()) return invalid_argument("model_name is empty");
  TROUPE_ASSIGN_OR_RETURN(out.fields.version, parse_version(m.model_version()));

  // ---- request parameters ----
  for (const auto& [key, value] : m.parameters()) {
    if (key == "priority") {
      TROUPE_ASSIGN_OR_RETURN(const uint64_t p,
                              parameter_uint(key, value, std::numeric_limits<uint32_t>::max()));
      out.fields.priority = static_cast<uint32_t>(p);
    } else if (key == "timeout") {
      TROUPE_ASSIGN_OR_RETURN(const uint64_t us, parameter_uint(key, value, uint64_t{1} << 50));
      out.fields.timeout = std::chrono::microseconds(static_cast<int64_t>(us));
    } else if (key == "routing_key") {
      if (value.parameter_choice_case() != pb::InferParameter::kStringParam)
        return invalid_argument("parameter 'routing_key' must be a string");
      out.fields.routing_key = view_of(value.string_param());
    } else {
      if (value.parameter_choice_case() == pb::InferParameter::PARAMETER_CHOICE_NOT_SET)
        return invalid_argument("parameter " + in_quotes(key) + " has no value");
      out.parameters.emplace_back(view_of(key), parameter_text(value, out.owned_text));
    }
  }
  // A map's iteration order is unspecified: sort, so that jobs see a stable order.
  std::sort(out.parameters.begin(), out.parameters.end());

  // ---- inputs ----
  const bool any_contents = std::any_of(m.inputs().begin(), m.inputs().end(),
                                        [](const auto& in) { return in.has_contents(); });
  if (any_contents && m.raw_input_contents_size() > 0)
    return invalid_argument(
        "the request uses both typed contents and raw_input_contents: use one of them");
  out.tensors.resize(static_cast<size_t>(m.inputs_size()));
  int raw_index = 0;
  for (int i = 0; i < m.inputs_size(); ++i) {
    const pb::ModelInferRequest::InferInputTensor& in = m.inputs(i);
    serving::request_tensor& t = out.tensors[static_cast<size_t>(i)];
    t.name = view_of(in.name());
    if (in.name().empty()) return invalid_argument("input " + std::to_string(i) + " has no name");
    auto type = dtype_from_name(in.datatype());
    if (!type) return type.error().with_context("input " + in_quotes(in.name()));
    t.type = *type;
    t.shape = std::span<const int64_t>(in.shape().data(), static_cast<size_t>(in.shape_size()));
    TROUPE_ASSIGN_OR_RETURN(const size_t bytes, tensor_bytes(in.name(), t.type, in.shape()));
    TROUPE_ASSIGN_OR_RETURN(shared_memory_span span,
                            shared_memory_of("input", in.name(), in.parameters(), shm, bytes));
    if (span.region) {
      if (in.has_contents())
        return invalid_argument("input " + in_quotes(in.name()) +
                                ": both shared memory and contents are given");
      t.data = span.data;
      t.bytes = span.bytes;
      out.input_regions.push_back(std::move(span));
    } else if (in.has_contents()) {
      TROUPE_RETURN_IF_ERROR(decode_contents(in.name(), t.type, in.contents(), bytes, out, t));
    } else {
      if (raw_index >= m.raw_input_contents_size())
        return invalid_argument("input " + in_quotes(in.name()) +
                                " has no data: no contents, shared memory or raw_input_contents "
                                "entry");
      const std::string& raw = m.raw_input_contents(raw_index++);
      if (raw.size() != bytes)
        return invalid_argument("input " + in_quotes(in.name()) + ": raw_input_contents holds " +
                                std::to_string(raw.size()) +
                                " bytes, its datatype and shape need " + std::to_string(bytes));
      t.data = reinterpret_cast<const std::byte*>(raw.data());
      t.bytes = raw.size();
    }
  }
  if (raw_index != m.raw_input_contents_size())
    return invalid_argument("raw_input_contents has " +
                            std::to_string(m.raw_input_contents_size()) + " entries, but " +
                            std::to_string(raw_index) + " inputs take their bytes from it");

  // ---- requested outputs ----
  for (const auto& o : m.outputs()) {
    if (o.parameters().count("classification"))
      return unsupported("output " + in_quotes(o.name()) +
                         ": the classification extension is not served");
    TROUPE_ASSIGN_OR_RETURN(shared_memory_span span,
                            shared_memory_of("output", o.name(), o.parameters(), shm, {}));
    out.outputs.push_back({view_of(o.name()), std::move(span)});
    out.output_names.push_back(view_of(o.name()));
  }

  out.fields.inputs = out.tensors;
  out.fields.outputs = out.output_names;
  out.fields.parameters = out.parameters;
  return status::ok();
}

status encode_infer_response(const serving::infer_job& job, const decoded_infer_request& d,
                             pb::ModelInferResponse& out) {
  const serving::model_signature& sig = *job.signature;
  out.set_model_name(sig.model);
  out.set_model_version(std::to_string(sig.version));
  out.set_id(std::string(d.id));
  const auto target_of = [&](std::string_view name) -> const requested_output* {
    for (const requested_output& r : d.outputs)
      if (r.name == name) return &r;
    return nullptr;
  };
  // raw_output_contents[i] belongs to outputs[i], as in Triton: an output written to shared
  // memory keeps its (empty) entry. tritonclient's C++ InferResultGrpc (perf_analyzer) indexes
  // raw_output_contents by the output's position without a bounds check.
  for (const serving::output_slice& o : job.outputs) {
    const serving::tensor_spec& spec = sig.outputs[static_cast<size_t>(o.output_index)];
    const requested_output* target = target_of(spec.name);
    const bool in_shm = target && target->shm.region;
    const size_t bytes = o.info.bytes();
    const std::byte* src = o.block ? o.block->data() + o.offset : nullptr;
    pb::ModelInferResponse::InferOutputTensor* t = out.add_outputs();
    t->set_name(spec.name);
    t->set_datatype(std::string(dtype_to_name(o.info.type)));
    for (int64_t x : o.info.shape) t->add_shape(x);
    std::string* contents = out.add_raw_output_contents();
    if (!in_shm) {
      contents->assign(reinterpret_cast<const char*>(src), src ? bytes : 0);
      continue;
    }
    const shared_memory_span& span = target->shm;
    if (bytes > span.bytes)
      return invalid_argument("output " + in_quotes(spec.name) + " has " + std::to_string(bytes) +
                              " bytes; its shared-memory range (region " +
                              in_quotes(span.region->name()) + ") holds " +
                              std::to_string(span.bytes));
    if (bytes) std::memcpy(span.data, src, bytes);
    auto& params = *t->mutable_parameters();
    params[std::string(shm_region_parameter)].set_string_param(span.region->name());
    params[std::string(shm_offset_parameter)].set_int64_param(
        static_cast<int64_t>(span.data - span.region->data()));
    params[std::string(shm_byte_size_parameter)].set_int64_param(static_cast<int64_t>(bytes));
  }
  return status::ok();
}

status encode_model_metadata(const serving::model_table* table, std::string_view name,
                             std::string_view version, pb::ModelMetadataResponse& out) {
  TROUPE_ASSIGN_OR_RETURN(const serving::version_entry* v, find_version(table, name, version));
  const serving::model_entry& m = *table->find(name);
  const serving::model_signature& sig = *v->signature;
  out.set_name(m.name);
  for (const auto& x : m.versions) out.add_versions(std::to_string(x.version));
  out.set_platform(std::string(platform_name));
  const auto fill = [](const std::vector<serving::tensor_spec>& specs, auto* list) {
    for (const serving::tensor_spec& s : specs) {
      auto* t = list->Add();
      t->set_name(s.name);
      t->set_datatype(std::string(dtype_to_name(s.type)));
      for (int64_t d : s.shape) t->add_shape(d);
    }
  };
  fill(sig.inputs, out.mutable_inputs());
  fill(sig.outputs, out.mutable_outputs());
  return status::ok();
}

status encode_model_config(const serving::model_table* table, std::string_view name,
                           std::string_view version, pb::ModelConfigResponse& out) {
  TROUPE_ASSIGN_OR_RETURN(const serving::version_entry* v, find_version(table, name, version));
  const serving::model_signature& sig = *v->signature;
  const serving::model_config& c = sig.config;
  pb::ModelConfig* mc = out.mutable_config();
  mc->set_name(sig.model);
  mc->set_platform(std::string(platform_name));
  mc->set_backend("troupe");
  const bool batched = sig.max_batch_size > 0;
  mc->set_max_batch_size(static_cast<int32_t>(
      std::min<int64_t>(sig.max_batch_size, std::numeric_limits<int32_t>::max())));
  for (const serving::tensor_spec& s : sig.inputs) {
    pb::ModelInput* in = mc->add_input();
    in->set_name(s.name);
    in->set_data_type(config_type(s.type));
    fill_dims(s, batched, in->mutable_dims());
  }
  for (const serving::tensor_spec& s : sig.outputs) {
    pb::ModelOutput* o = mc->add_output();
    o->set_name(s.name);
    o->set_data_type(config_type(s.type));
    fill_dims(s, batched, o->mutable_dims());
  }
  if (batched) {
    pb::ModelDynamicBatching* db = mc->mutable_dynamic_batching();
    for (int64_t b : c.preferred_batch_sizes) db->add_preferred_batch_size(static_cast<int32_t>(b));
    db->set_max_queue_delay_microseconds(static_cast<uint64_t>(c.max_queue_delay.count()));
    db->set_priority_levels(c.priority_levels);
    db->set_default_priority_level(c.effective_default_priority());
    pb::ModelQueuePolicy* q = db->mutable_default_queue_policy();
    q->set_default_timeout_microseconds(static_cast<uint64_t>(c.queue.default_timeout.count()));
    q->set_allow_timeout_override(c.queue.allow_timeout_override);
    q->set_max_queue_size(c.queue.max_queue_size);
  }
  pb::ModelInstanceGroup* g = mc->add_instance_group();
  g->set_name(sig.model);
  g->set_count(static_cast<int32_t>(c.instance_count));
  switch (c.device) {
    case serving::device_preference::cpu:
      g->set_kind(pb::ModelInstanceGroup::KIND_CPU);
      break;
    case serving::device_preference::gpu:
      g->set_kind(pb::ModelInstanceGroup::KIND_GPU);
      break;
    case serving::device_preference::any:
      g->set_kind(pb::ModelInstanceGroup::KIND_AUTO);
      break;
  }
  pb::ModelVersionPolicy* vp = mc->mutable_version_policy();
  if (!c.specific_versions.empty()) {
    for (int64_t x : c.specific_versions) vp->mutable_specific()->add_versions(x);
  } else if (c.latest_versions == 0) {
    vp->mutable_all();
  } else {
    vp->mutable_latest()->set_num_versions(static_cast<uint32_t>(c.latest_versions));
  }
  return status::ok();
}

expected<bool> model_is_ready(const serving::model_table* table, std::string_view name,
                              std::string_view version) {
  TROUPE_ASSIGN_OR_RETURN(const int64_t v, parse_version(version));
  return table && serving::model_ready(*table, name, v);
}

status encode_model_statistics(const serving::model_table* table, std::string_view name,
                               std::string_view version_text, pb::ModelStatisticsResponse& out) {
  TROUPE_ASSIGN_OR_RETURN(const int64_t version, parse_version(version_text));
  if (!table) return make_error(error_code::unavailable, "the node is still loading its models");
  if (!name.empty() && !table->find(name)) return not_found("no model " + in_quotes(name));
  constexpr auto relaxed = std::memory_order_relaxed;
  const auto duration = [](pb::StatisticDuration* d, uint64_t count, uint64_t ns) {
    d->set_count(count);
    d->set_ns(ns);
  };
  for (const auto& [model, m] : table->models) {
    if (!name.empty() && model != name) continue;
    for (const serving::version_entry& v : m.versions) {
      if (version > 0 && v.version != version) continue;
      pb::ModelStatistics* s = out.add_model_stats();
      s->set_name(model);
      s->set_version(std::to_string(v.version));
      // Staging the inputs and reading the outputs back are inside compute_infer, as in the HTTP
      // door's statistics: compute_input and compute_output count the same requests with 0 ns.
      const serving::version_metrics* vm = v.metrics.get();
      if (!vm) continue;
      const serving::version_statistics& st = vm->stats;
      s->set_last_inference(st.last_inference_ms.load(relaxed));
      s->set_inference_count(st.inference_count.load(relaxed));
      s->set_execution_count(st.execution_count.load(relaxed));
      pb::InferStatistics* i = s->mutable_inference_stats();
      duration(i->mutable_success(), st.success_count.load(relaxed), st.success_ns.load(relaxed));
      duration(i->mutable_fail(), st.fail_count.load(relaxed), st.fail_ns.load(relaxed));
      duration(i->mutable_queue(), st.queue_count.load(relaxed), st.queue_ns.load(relaxed));
      const uint64_t computed = st.compute_count.load(relaxed);
      duration(i->mutable_compute_input(), computed, 0);
      duration(i->mutable_compute_infer(), computed, st.compute_ns.load(relaxed));
      duration(i->mutable_compute_output(), computed, 0);
    }
  }
  if (!name.empty() && version > 0 && out.model_stats_size() == 0)
    return not_found("model " + in_quotes(name) + " has no version " + std::to_string(version));
  return status::ok();
}

void encode_server_metadata(bool shared_memory, pb::ServerMetadataResponse& out) {
  out.set_name("troupe");
  out.set_version(TROUPE_VERSION);
  out.add_extensions("model_configuration");
  out.add_extensions("model_repository");
  out.add_extensions("parameters");
  out.add_extensions("statistics");
  if (shared_memory) out.add_extensions("system_shared_memory");
}

void encode_shared_memory_status(
    const std::vector<std::shared_ptr<const shared_memory_region>>& regions,
    pb::SystemSharedMemoryStatusResponse& out) {
  auto& map = *out.mutable_regions();
  for (const auto& r : regions) {
    pb::SystemSharedMemoryStatusResponse::RegionStatus& s = map[r->name()];
    s.set_name(r->name());
    s.set_key(r->key());
    s.set_offset(r->offset());
    s.set_byte_size(r->byte_size());
  }
}

}  // namespace troupe::cluster::kserve
