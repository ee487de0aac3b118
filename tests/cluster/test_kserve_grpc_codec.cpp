// The KServe gRPC codec without sockets: ModelInferRequest -> request_fields (raw and typed
// contents for every datatype, zero copy where the layout allows, bad sizes, missing tensors,
// parameters, system shared-memory parameters), the response (raw and shared-memory outputs),
// and metadata, configuration and readiness from a hand-built model table.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "cluster/kserve_grpc_codec.hpp"
#include "proto/kserve/grpc_service.pb.h"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "tests/cluster/shm_test_object.hpp"

namespace troupe::cluster::kserve {
namespace {

namespace pb = ::inference;

pb::ModelInferRequest::InferInputTensor* add_input(pb::ModelInferRequest& m,
                                                   const std::string& name,
                                                   const std::string& datatype,
                                                   std::vector<int64_t> shape) {
  auto* t = m.add_inputs();
  t->set_name(name);
  t->set_datatype(datatype);
  for (int64_t d : shape) t->add_shape(d);
  return t;
}

pb::ModelInferRequest request_for(const std::string& model = "m") {
  pb::ModelInferRequest m;
  m.set_model_name(model);
  return m;
}

status decode(const pb::ModelInferRequest& m, decoded_infer_request& d,
              const shared_memory_registry* shm = nullptr) {
  return decode_infer_request(m, shm, d);
}

// ---- inputs: raw contents -----------------------------------------------------------------------

TEST(kserve_grpc_codec, raw_contents_of_every_datatype_are_viewed_in_place) {
  const std::vector<std::pair<std::string, dtype>> types = {
      {"BOOL", dtype::boolean}, {"UINT8", dtype::u8},   {"UINT16", dtype::u16},
      {"UINT32", dtype::u32},   {"UINT64", dtype::u64}, {"INT8", dtype::i8},
      {"INT16", dtype::i16},    {"INT32", dtype::i32},  {"INT64", dtype::i64},
      {"FP16", dtype::f16},     {"FP32", dtype::f32},   {"FP64", dtype::f64},
      {"BF16", dtype::bf16}};
  for (const auto& [name, type] : types) {
    pb::ModelInferRequest m = request_for();
    m.set_model_version("3");
    m.set_id("req-7");
    add_input(m, "x", name, {2, 3});
    m.add_raw_input_contents(std::string(6 * dtype_size(type), '\1'));
    decoded_infer_request d;
    ASSERT_TRUE(decode(m, d).is_ok()) << name;
    ASSERT_EQ(d.fields.inputs.size(), 1u);
    const serving::request_tensor& t = d.fields.inputs[0];
    EXPECT_EQ(t.name, "x");
    EXPECT_EQ(t.type, type) << name;
    EXPECT_EQ(std::vector<int64_t>(t.shape.begin(), t.shape.end()), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(t.bytes, 6 * dtype_size(type));
    EXPECT_EQ(static_cast<const void*>(t.data), m.raw_input_contents(0).data()) << "zero copy";
    EXPECT_EQ(d.fields.model, "m");
    EXPECT_EQ(d.fields.version, 3);
    EXPECT_EQ(d.id, "req-7");
    EXPECT_TRUE(d.outputs.empty());
  }
}

TEST(kserve_grpc_codec, raw_contents_belong_in_order_to_the_inputs_without_other_data) {
  pb::ModelInferRequest m = request_for();
  add_input(m, "a", "FP32", {1, 2});
  add_input(m, "b", "INT64", {1, 3});
  m.add_raw_input_contents(std::string(8, '\0'));
  m.add_raw_input_contents(std::string(24, '\0'));
  decoded_infer_request d;
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(d.fields.inputs[0].bytes, 8u);
  EXPECT_EQ(d.fields.inputs[1].bytes, 24u);
  EXPECT_EQ(static_cast<const void*>(d.fields.inputs[1].data), m.raw_input_contents(1).data());
}

TEST(kserve_grpc_codec, bad_sizes_and_shapes_are_refused) {
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "FP32", {2, 3});
    m.add_raw_input_contents(std::string(23, '\0'));
    decoded_infer_request d;
    const status s = decode(m, d);
    EXPECT_EQ(s.code(), error_code::invalid_argument);
    EXPECT_NE(s.message().find("23 bytes"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("24"), std::string::npos) << s.message();
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "FP32", {2, -3});
    m.add_raw_input_contents(std::string(24, '\0'));
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "FP32", {int64_t{1} << 40, int64_t{1} << 40});
    m.add_raw_input_contents("");
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument) << "no overflow";
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "FP8", {1});
    m.add_raw_input_contents("x");
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "BYTES", {1});
    m.add_raw_input_contents("abcd");
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::unsupported);
  }
}

TEST(kserve_grpc_codec, missing_and_surplus_tensor_data_are_refused) {
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "a", "FP32", {1});
    add_input(m, "b", "FP32", {1});
    m.add_raw_input_contents(std::string(4, '\0'));
    decoded_infer_request d;
    const status s = decode(m, d);
    EXPECT_EQ(s.code(), error_code::invalid_argument);
    EXPECT_NE(s.message().find("'b' has no data"), std::string::npos) << s.message();
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "a", "FP32", {1});
    m.add_raw_input_contents(std::string(4, '\0'));
    m.add_raw_input_contents(std::string(4, '\0'));
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "a", "FP32", {1})->mutable_contents()->add_fp32_contents(1.0f);
    add_input(m, "b", "FP32", {1});
    m.add_raw_input_contents(std::string(4, '\0'));
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument) << "contents and raw do not mix";
  }
  {
    pb::ModelInferRequest m = request_for("");
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
  }
  {
    pb::ModelInferRequest m = request_for();
    m.set_model_version("latest");
    decoded_infer_request d;
    EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
  }
}

// ---- inputs: typed contents ---------------------------------------------------------------------

template <class T>
std::vector<T> read_values(const serving::request_tensor& t) {
  std::vector<T> v(t.bytes / sizeof(T));
  std::memcpy(v.data(), t.data, t.bytes);
  return v;
}

TEST(kserve_grpc_codec, typed_contents_of_every_datatype) {
  const auto one = [](const std::string& datatype, auto fill) {
    pb::ModelInferRequest m = request_for();
    auto* t = add_input(m, "x", datatype, {3});
    fill(t->mutable_contents());
    return m;
  };
  decoded_infer_request d;
  auto m = one("BOOL", [](auto* c) {
    c->add_bool_contents(true);
    c->add_bool_contents(false);
    c->add_bool_contents(true);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<uint8_t>(d.fields.inputs[0]), (std::vector<uint8_t>{1, 0, 1}));
  m = one("INT8", [](auto* c) {
    c->add_int_contents(-128);
    c->add_int_contents(0);
    c->add_int_contents(127);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<int8_t>(d.fields.inputs[0]), (std::vector<int8_t>{-128, 0, 127}));
  m = one("INT16", [](auto* c) {
    c->add_int_contents(-300);
    c->add_int_contents(1);
    c->add_int_contents(32767);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<int16_t>(d.fields.inputs[0]), (std::vector<int16_t>{-300, 1, 32767}));
  m = one("INT32", [](auto* c) {
    c->add_int_contents(-5);
    c->add_int_contents(6);
    c->add_int_contents(7);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<int32_t>(d.fields.inputs[0]), (std::vector<int32_t>{-5, 6, 7}));
  EXPECT_EQ(static_cast<const void*>(d.fields.inputs[0].data),
            m.inputs(0).contents().int_contents().data())
      << "same layout: zero copy";
  m = one("INT64", [](auto* c) {
    c->add_int64_contents(-1);
    c->add_int64_contents(int64_t{1} << 40);
    c->add_int64_contents(3);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<int64_t>(d.fields.inputs[0]),
            (std::vector<int64_t>{-1, int64_t{1} << 40, 3}));
  m = one("UINT8", [](auto* c) {
    c->add_uint_contents(0);
    c->add_uint_contents(200);
    c->add_uint_contents(255);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<uint8_t>(d.fields.inputs[0]), (std::vector<uint8_t>{0, 200, 255}));
  m = one("UINT16", [](auto* c) {
    c->add_uint_contents(0);
    c->add_uint_contents(65535);
    c->add_uint_contents(9);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<uint16_t>(d.fields.inputs[0]), (std::vector<uint16_t>{0, 65535, 9}));
  m = one("UINT32", [](auto* c) {
    c->add_uint_contents(1);
    c->add_uint_contents(4000000000u);
    c->add_uint_contents(2);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<uint32_t>(d.fields.inputs[0]), (std::vector<uint32_t>{1, 4000000000u, 2}));
  m = one("UINT64", [](auto* c) {
    c->add_uint64_contents(1);
    c->add_uint64_contents(~uint64_t{0});
    c->add_uint64_contents(2);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<uint64_t>(d.fields.inputs[0]), (std::vector<uint64_t>{1, ~uint64_t{0}, 2}));
  m = one("FP32", [](auto* c) {
    c->add_fp32_contents(1.5f);
    c->add_fp32_contents(-2);
    c->add_fp32_contents(3);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<float>(d.fields.inputs[0]), (std::vector<float>{1.5f, -2, 3}));
  EXPECT_EQ(static_cast<const void*>(d.fields.inputs[0].data),
            m.inputs(0).contents().fp32_contents().data());
  m = one("FP64", [](auto* c) {
    c->add_fp64_contents(0.25);
    c->add_fp64_contents(-1);
    c->add_fp64_contents(1e300);
  });
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(read_values<double>(d.fields.inputs[0]), (std::vector<double>{0.25, -1, 1e300}));
}

TEST(kserve_grpc_codec, typed_contents_errors_name_the_problem) {
  decoded_infer_request d;
  {
    pb::ModelInferRequest m = request_for();
    auto* c = add_input(m, "x", "INT8", {2})->mutable_contents();
    c->add_int_contents(1);
    c->add_int_contents(128);
    const status s = decode(m, d);
    EXPECT_EQ(s.code(), error_code::invalid_argument);
    EXPECT_NE(s.message().find("out of range for INT8"), std::string::npos) << s.message();
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "INT64", {2})->mutable_contents()->add_fp32_contents(1);
    const status s = decode(m, d);
    EXPECT_EQ(s.code(), error_code::invalid_argument);
    EXPECT_NE(s.message().find("int64_contents"), std::string::npos) << s.message();
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "FP32", {4})->mutable_contents()->add_fp32_contents(1);
    const status s = decode(m, d);
    EXPECT_EQ(s.code(), error_code::invalid_argument);
    EXPECT_NE(s.message().find("1 values"), std::string::npos) << s.message();
  }
  {
    pb::ModelInferRequest m = request_for();
    add_input(m, "x", "FP16", {1})->mutable_contents()->add_fp32_contents(1);
    const status s = decode(m, d);
    EXPECT_EQ(s.code(), error_code::invalid_argument);
    EXPECT_NE(s.message().find("raw_input_contents"), std::string::npos) << s.message();
  }
}

// ---- parameters ---------------------------------------------------------------------------------

TEST(kserve_grpc_codec, parameters_priority_timeout_routing_key_and_the_rest_as_text) {
  pb::ModelInferRequest m = request_for();
  auto& p = *m.mutable_parameters();
  p["priority"].set_uint64_param(2);
  p["timeout"].set_int64_param(1500);
  p["routing_key"].set_string_param("user-9");
  p["troupe.sleep_ms"].set_int64_param(25);
  p["flag"].set_bool_param(true);
  p["ratio"].set_double_param(0.5);
  p["troupe.fault"].set_string_param("crash_once");
  decoded_infer_request d;
  ASSERT_TRUE(decode(m, d).is_ok());
  EXPECT_EQ(d.fields.priority, 2u);
  EXPECT_EQ(d.fields.timeout, std::chrono::microseconds(1500));
  EXPECT_EQ(d.fields.routing_key, "user-9");
  using kv = std::pair<std::string_view, std::string_view>;
  const std::vector<kv> expected = {{"flag", "true"},
                                    {"ratio", "0.5"},
                                    {"troupe.fault", "crash_once"},
                                    {"troupe.sleep_ms", "25"}};
  EXPECT_EQ(std::vector<kv>(d.fields.parameters.begin(), d.fields.parameters.end()), expected);

  p["priority"].set_int64_param(-1);
  EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
  p["priority"].set_string_param("high");
  EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
  p["priority"].set_uint64_param(uint64_t{1} << 40);
  EXPECT_EQ(decode(m, d).code(), error_code::invalid_argument);
}

// ---- system shared memory -----------------------------------------------------------------------

void set_shm(google::protobuf::Map<std::string, pb::InferParameter>& p, const std::string& region,
             int64_t offset, int64_t bytes) {
  p["shared_memory_region"].set_string_param(region);
  p["shared_memory_offset"].set_int64_param(offset);
  p["shared_memory_byte_size"].set_int64_param(bytes);
}

TEST(kserve_grpc_codec, shared_memory_parameters_read_inputs_in_place) {
  shm_test_object object(4096);
  shared_memory_registry registry;
  ASSERT_TRUE(registry.register_region("r", object.key(), 1024, 2048).is_ok());

  pb::ModelInferRequest m = request_for();
  set_shm(*add_input(m, "x", "FP32", {2, 4})->mutable_parameters(), "r", 64, 32);
  add_input(m, "z", "INT64", {1});
  m.add_raw_input_contents(std::string(8, '\0'));  // the raw entry belongs to z
  auto* out = m.add_outputs();
  out->set_name("y");
  set_shm(*out->mutable_parameters(), "r", 512, 128);
  m.add_outputs()->set_name("w");

  const float pattern[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  std::memcpy(object.data() + 1024 + 64, pattern, sizeof(pattern));
  decoded_infer_request d;
  const status s = decode(m, d, &registry);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  ASSERT_EQ(d.input_regions.size(), 1u);
  const std::byte* region = d.input_regions[0].region->data();  // the node's own mapping
  EXPECT_EQ(d.fields.inputs[0].data, region + 64) << "read in place";
  EXPECT_EQ(std::memcmp(d.fields.inputs[0].data, pattern, sizeof(pattern)), 0);
  EXPECT_EQ(d.fields.inputs[0].bytes, 32u);
  EXPECT_EQ(static_cast<const void*>(d.fields.inputs[1].data), m.raw_input_contents(0).data());
  ASSERT_EQ(d.outputs.size(), 2u);
  EXPECT_EQ(d.outputs[0].name, "y");
  EXPECT_EQ(d.outputs[0].shm.data, region + 512);
  EXPECT_EQ(d.outputs[0].shm.bytes, 128u);
  EXPECT_EQ(d.outputs[1].name, "w");
  EXPECT_EQ(d.outputs[1].shm.region, nullptr);
  EXPECT_EQ(std::vector<std::string_view>(d.fields.outputs.begin(), d.fields.outputs.end()),
            (std::vector<std::string_view>{"y", "w"}));
  // The decoded request keeps the mapping alive after the region is unregistered.
  ASSERT_TRUE(registry.unregister_region("r").is_ok());
  EXPECT_EQ(std::memcmp(d.fields.inputs[0].data, pattern, sizeof(pattern)), 0);
}

TEST(kserve_grpc_codec, shared_memory_parameter_errors) {
  shm_test_object object(4096);
  shared_memory_registry registry;
  ASSERT_TRUE(registry.register_region("r", object.key(), 0, 4096).is_ok());
  const auto with_params = [](auto edit) {
    pb::ModelInferRequest m = request_for();
    edit(*add_input(m, "x", "FP32", {2, 4})->mutable_parameters());
    return m;
  };
  decoded_infer_request d;
  // The byte size must match the tensor.
  auto m = with_params([](auto& p) { set_shm(p, "r", 0, 36); });
  EXPECT_EQ(decode(m, d, &registry).code(), error_code::invalid_argument);
  // Beyond the region.
  m = with_params([](auto& p) { set_shm(p, "r", 4090, 32); });
  EXPECT_EQ(decode(m, d, &registry).code(), error_code::invalid_argument);
  // An unregistered region.
  m = with_params([](auto& p) { set_shm(p, "nope", 0, 32); });
  EXPECT_EQ(decode(m, d, &registry).code(), error_code::not_found);
  // No byte size, or offset without a region.
  m = with_params([](auto& p) { p["shared_memory_region"].set_string_param("r"); });
  EXPECT_EQ(decode(m, d, &registry).code(), error_code::invalid_argument);
  m = with_params([](auto& p) { p["shared_memory_offset"].set_int64_param(0); });
  EXPECT_EQ(decode(m, d, &registry).code(), error_code::invalid_argument);
  // A negative offset, a region name that is not a string.
  m = with_params([](auto& p) { set_shm(p, "r", -8, 32); });
  EXPECT_EQ(decode(m, d, &registry).code(), error_code::invalid_argument);
  m = with_params([](auto& p) {
    set_shm(p, "r", 0, 32);
    p["shared_memory_region"].set_int64_param(3);
  });
  EXPECT_EQ(decode(m, d, &registry).code(), error_code::invalid_argument);
  // The extension switched off.
  m = with_params([](auto& p) { set_shm(p, "r", 0, 32); });
  EXPECT_EQ(decode(m, d, nullptr).code(), error_code::unsupported);
  // Valid once more.
  EXPECT_TRUE(decode(m, d, &registry).is_ok());
}

// ---- the response -------------------------------------------------------------------------------

std::shared_ptr<serving::model_signature> two_output_signature() {
  auto sig = std::make_shared<serving::model_signature>();
  sig->model = "m";
  sig->version = 4;
  sig->inputs = {{"x", dtype::f32, {-1, 2}}};
  sig->outputs = {{"y", dtype::f32, {-1, 2}}, {"w", dtype::i64, {-1, 1}}};
  sig->max_batch_size = 8;
  return sig;
}

TEST(kserve_grpc_codec, response_keeps_a_raw_entry_per_output_and_writes_shared_memory) {
  shm_test_object object(4096);
  shared_memory_registry registry;
  ASSERT_TRUE(registry.register_region("r", object.key(), 0, 4096).is_ok());
  pb::ModelInferRequest m = request_for();
  m.set_id("abc");
  add_input(m, "x", "FP32", {1, 2});
  m.add_raw_input_contents(std::string(8, '\0'));
  auto* y = m.add_outputs();
  y->set_name("y");
  set_shm(*y->mutable_parameters(), "r", 256, 8);
  m.add_outputs()->set_name("w");
  decoded_infer_request d;
  ASSERT_TRUE(decode(m, d, &registry).is_ok());

  // The job as the batcher hands it back: two slices of one output block.
  auto* block = new serving::output_block(64);
  const float yv[2] = {1.5f, -2.5f};
  const int64_t wv = 42;
  std::memcpy(block->data(), yv, 8);
  std::memcpy(block->data() + 16, &wv, 8);
  serving::infer_job job;
  job.signature = two_output_signature();
  job.outputs.resize(2);
  job.outputs[0] = {0, {dtype::f32, {1, 2}}, block, 0};
  job.outputs[1] = {1, {dtype::i64, {1, 1}}, block, 16};

  pb::ModelInferResponse r;
  ASSERT_TRUE(encode_infer_response(job, d, r).is_ok());
  EXPECT_EQ(r.model_name(), "m");
  EXPECT_EQ(r.model_version(), "4");
  EXPECT_EQ(r.id(), "abc");
  ASSERT_EQ(r.outputs_size(), 2);
  // One raw_output_contents entry per output, at the output's index (empty for shared memory):
  // tritonclient's C++ reader indexes it by position, as Triton fills it.
  ASSERT_EQ(r.raw_output_contents_size(), 2);
  EXPECT_EQ(r.outputs(0).name(), "y");
  EXPECT_EQ(r.outputs(0).datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(r.outputs(0).shape().begin(), r.outputs(0).shape().end()),
            (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(r.raw_output_contents(0).empty()) << "in shared memory";
  EXPECT_EQ(r.outputs(0).parameters().at("shared_memory_region").string_param(), "r");
  EXPECT_EQ(r.outputs(0).parameters().at("shared_memory_offset").int64_param(), 256);
  EXPECT_EQ(r.outputs(1).name(), "w");
  EXPECT_EQ(r.outputs(1).datatype(), "INT64");
  EXPECT_EQ(r.raw_output_contents(1), std::string(reinterpret_cast<const char*>(&wv), 8));
  EXPECT_EQ(std::memcmp(object.data() + 256, yv, 8), 0) << "written into the region";

  // An output larger than its range is refused.
  y->mutable_parameters()->at("shared_memory_byte_size").set_int64_param(4);
  ASSERT_TRUE(decode(m, d, &registry).is_ok());
  pb::ModelInferResponse small;
  EXPECT_EQ(encode_infer_response(job, d, small).code(), error_code::invalid_argument);
  block->release();
}

// ---- metadata, configuration, readiness ---------------------------------------------------------

serving::model_table make_table() {
  serving::model_table t;
  serving::model_entry& e = t.models["m"];
  e.name = "m";
  for (int64_t v : {1, 2}) {
    serving::version_entry ve;
    ve.version = v;
    auto sig = two_output_signature();
    sig->version = v;
    sig->config.max_batch_size = 8;
    sig->config.preferred_batch_sizes = {4, 8};
    sig->config.max_queue_delay = std::chrono::microseconds(100);
    sig->config.instance_count = 2;
    sig->config.device = serving::device_preference::cpu;
    sig->config.latest_versions = 0;
    ve.signature = sig;
    ve.state = std::make_shared<std::atomic<uint8_t>>(static_cast<uint8_t>(
        v == 2 ? serving::version_state::ready : serving::version_state::unavailable));
    e.versions.push_back(ve);
  }
  return t;
}

TEST(kserve_grpc_codec, model_metadata_from_the_signature) {
  const serving::model_table t = make_table();
  pb::ModelMetadataResponse r;
  ASSERT_TRUE(encode_model_metadata(&t, "m", "", r).is_ok());
  EXPECT_EQ(r.name(), "m");
  EXPECT_EQ(std::vector<std::string>(r.versions().begin(), r.versions().end()),
            (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(r.platform(), "troupe_onnx");
  ASSERT_EQ(r.inputs_size(), 1);
  EXPECT_EQ(r.inputs(0).name(), "x");
  EXPECT_EQ(r.inputs(0).datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(r.inputs(0).shape().begin(), r.inputs(0).shape().end()),
            (std::vector<int64_t>{-1, 2}));
  ASSERT_EQ(r.outputs_size(), 2);
  EXPECT_EQ(r.outputs(1).datatype(), "INT64");

  EXPECT_EQ(encode_model_metadata(&t, "nope", "", r).code(), error_code::not_found);
  EXPECT_EQ(encode_model_metadata(&t, "m", "7", r).code(), error_code::not_found);
  EXPECT_EQ(encode_model_metadata(&t, "m", "x1", r).code(), error_code::invalid_argument);
  EXPECT_EQ(encode_model_metadata(nullptr, "m", "", r).code(), error_code::unavailable);
}

TEST(kserve_grpc_codec, model_config_subset_for_perf_analyzer) {
  const serving::model_table t = make_table();
  pb::ModelConfigResponse r;
  ASSERT_TRUE(encode_model_config(&t, "m", "1", r).is_ok());
  const pb::ModelConfig& c = r.config();
  EXPECT_EQ(c.name(), "m");
  EXPECT_EQ(c.platform(), "troupe_onnx");
  EXPECT_EQ(c.max_batch_size(), 8);
  ASSERT_EQ(c.input_size(), 1);
  EXPECT_EQ(c.input(0).data_type(), pb::TYPE_FP32);
  EXPECT_EQ(std::vector<int64_t>(c.input(0).dims().begin(), c.input(0).dims().end()),
            (std::vector<int64_t>{2}))
      << "dims without the batch dim";
  ASSERT_EQ(c.output_size(), 2);
  EXPECT_EQ(c.output(1).data_type(), pb::TYPE_INT64);
  ASSERT_TRUE(c.has_dynamic_batching());
  EXPECT_EQ(std::vector<int32_t>(c.dynamic_batching().preferred_batch_size().begin(),
                                 c.dynamic_batching().preferred_batch_size().end()),
            (std::vector<int32_t>{4, 8}));
  EXPECT_EQ(c.dynamic_batching().max_queue_delay_microseconds(), 100u);
  ASSERT_EQ(c.instance_group_size(), 1);
  EXPECT_EQ(c.instance_group(0).count(), 2);
  EXPECT_EQ(c.instance_group(0).kind(), pb::ModelInstanceGroup::KIND_CPU);
  EXPECT_TRUE(c.version_policy().has_all());

  // Without batching: full shapes, no dynamic batching.
  serving::model_table fixed = make_table();
  auto sig = std::make_shared<serving::model_signature>(*fixed.models["m"].versions[1].signature);
  sig->max_batch_size = 0;
  sig->inputs = {{"x", dtype::u8, {1, 3}}};
  fixed.models["m"].versions[1].signature = sig;
  pb::ModelConfigResponse f;
  ASSERT_TRUE(encode_model_config(&fixed, "m", "2", f).is_ok());
  EXPECT_EQ(f.config().max_batch_size(), 0);
  EXPECT_EQ(f.config().input(0).data_type(), pb::TYPE_UINT8);
  EXPECT_EQ(f.config().input(0).dims_size(), 2);
  EXPECT_FALSE(f.config().has_dynamic_batching());
}

TEST(kserve_grpc_codec, readiness_and_server_metadata) {
  const serving::model_table t = make_table();
  EXPECT_TRUE(*model_is_ready(&t, "m", ""));
  EXPECT_TRUE(*model_is_ready(&t, "m", "2"));
  EXPECT_FALSE(*model_is_ready(&t, "m", "1"));
  EXPECT_FALSE(*model_is_ready(&t, "m", "9"));
  EXPECT_FALSE(*model_is_ready(&t, "nope", ""));
  EXPECT_FALSE(*model_is_ready(nullptr, "m", ""));
  EXPECT_EQ(model_is_ready(&t, "m", "-1").error().code(), error_code::invalid_argument);

  pb::ServerMetadataResponse s;
  encode_server_metadata(true, s);
  EXPECT_EQ(s.name(), "troupe");
  EXPECT_NE(std::find(s.extensions().begin(), s.extensions().end(), "system_shared_memory"),
            s.extensions().end());
  pb::ServerMetadataResponse off;
  encode_server_metadata(false, off);
  EXPECT_EQ(std::find(off.extensions().begin(), off.extensions().end(), "system_shared_memory"),
            off.extensions().end());
}

}  // namespace
}  // namespace troupe::cluster::kserve

namespace troupe::cluster::kserve {
namespace {

TEST(kserve_grpc_codec, model_statistics_from_the_exact_sums) {
  serving::model_table t = make_table();
  auto vm = std::make_shared<serving::version_metrics>();
  vm->stats.success_count = 3;
  vm->stats.success_ns = 3000;
  vm->stats.fail_count = 1;
  vm->stats.fail_ns = 50;
  vm->stats.queue_count = 3;
  vm->stats.queue_ns = 600;
  vm->stats.compute_count = 3;
  vm->stats.compute_ns = 900;
  vm->stats.execution_count = 2;
  vm->stats.inference_count = 5;
  vm->stats.last_inference_ms = 1234;
  t.models["m"].versions[1].metrics = vm;

  pb::ModelStatisticsResponse all;
  ASSERT_TRUE(encode_model_statistics(&t, "", "", all).is_ok());
  ASSERT_EQ(all.model_stats_size(), 2) << "every version of every model";

  pb::ModelStatisticsResponse r;
  ASSERT_TRUE(encode_model_statistics(&t, "m", "2", r).is_ok());
  ASSERT_EQ(r.model_stats_size(), 1);
  const pb::ModelStatistics& s = r.model_stats(0);
  EXPECT_EQ(s.name(), "m");
  EXPECT_EQ(s.version(), "2");
  EXPECT_EQ(s.last_inference(), 1234u);
  EXPECT_EQ(s.inference_count(), 5u);
  EXPECT_EQ(s.execution_count(), 2u);
  EXPECT_EQ(s.inference_stats().success().count(), 3u);
  EXPECT_EQ(s.inference_stats().success().ns(), 3000u);
  EXPECT_EQ(s.inference_stats().fail().count(), 1u);
  EXPECT_EQ(s.inference_stats().fail().ns(), 50u);
  EXPECT_EQ(s.inference_stats().queue().ns(), 600u);
  EXPECT_EQ(s.inference_stats().compute_infer().count(), 3u);
  EXPECT_EQ(s.inference_stats().compute_infer().ns(), 900u);
  EXPECT_EQ(s.inference_stats().compute_input().count(), 3u);
  EXPECT_EQ(s.inference_stats().compute_input().ns(), 0u);

  pb::ModelStatisticsResponse none;
  EXPECT_EQ(encode_model_statistics(&t, "nope", "", none).code(), error_code::not_found);
  EXPECT_EQ(encode_model_statistics(&t, "m", "7", none).code(), error_code::not_found);
}

}  // namespace
}  // namespace troupe::cluster::kserve
