// The KServe v2 JSON/binary codec without sockets: every datatype both ways (JSON "data" in,
// JSON "data" and binary sections out), flat and nested data, the binary tensor data extension's
// sections, shared-memory parameters, request parameters, and malformed bodies, each of which
// must be a typed invalid_argument (or unsupported), never a crash.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/kserve_json_codec.hpp"

namespace troupe::cluster::kserve {
namespace {

using json = nlohmann::json;

template <class T>
std::vector<T> as(const decoded_input& in) {
  std::vector<T> v(in.bytes / sizeof(T));
  std::memcpy(v.data(), in.data, in.bytes);
  return v;
}

expected<decoded_infer_request> decode_json(const json& j) {
  return decode_infer_request(j.dump(), std::nullopt);
}

json one_input(const std::string& type, json shape, json data) {
  return {{"inputs", {{{"name", "x"}, {"datatype", type}, {"shape", shape}, {"data", data}}}}};
}

TEST(kserve_json_codec, floats_flat_and_nested) {
  auto flat = decode_json(one_input("FP32", {2, 2}, {1.5, -2, 3.25, 4}));
  ASSERT_TRUE(flat.has_value()) << flat.error().to_string();
  ASSERT_EQ(flat->inputs.size(), 1u);
  EXPECT_EQ(flat->inputs[0].type, dtype::f32);
  EXPECT_EQ(flat->inputs[0].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(as<float>(flat->inputs[0]), (std::vector<float>{1.5f, -2.f, 3.25f, 4.f}));
  auto nested = decode_json(one_input("FP32", {2, 2}, {{1.5, -2}, {3.25, 4}}));
  ASSERT_TRUE(nested.has_value()) << nested.error().to_string();
  EXPECT_EQ(as<float>(nested->inputs[0]), as<float>(flat->inputs[0]));
  auto f64 = decode_json(one_input("FP64", {1}, {0.1}));
  ASSERT_TRUE(f64.has_value());
  EXPECT_EQ(as<double>(f64->inputs[0])[0], 0.1);
}

TEST(kserve_json_codec, half_and_bfloat16_are_converted) {
  auto h = decode_json(one_input("FP16", {3}, {1.0, -0.5, 65504}));
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  auto hv = as<uint16_t>(h->inputs[0]);
  EXPECT_EQ(hv, (std::vector<uint16_t>{float_to_half(1.f), float_to_half(-0.5f),
                                       float_to_half(65504.f)}));
  auto b = decode_json(one_input("BF16", {2}, {3.0, 1e30}));
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  auto bv = as<uint16_t>(b->inputs[0]);
  EXPECT_EQ(bfloat16_to_float(bv[0]), 3.f);
  EXPECT_NEAR(bfloat16_to_float(bv[1]) / 1e30f, 1.f, 1e-2);
}

TEST(kserve_json_codec, every_integer_type_and_its_range) {
  struct example {
    const char* type;
    json ok;
    json too_big;
  };
  for (const example& e : {example{"INT8", {-128, 127}, {128}},
                           {"UINT8", {0, 255}, {256}},
                           {"INT16", {-32768, 32767}, {32768}},
                           {"UINT16", {0, 65535}, {-1}},
                           {"INT32", {-2147483648LL, 2147483647LL}, {2147483648LL}},
                           {"UINT32", {0, 4294967295LL}, {4294967296LL}},
                           {"INT64", {INT64_MIN, INT64_MAX}, {uint64_t{1} << 63}},
                           {"UINT64", {0, UINT64_MAX}, {-5}}}) {
    auto ok = decode_json(one_input(e.type, {2}, e.ok));
    ASSERT_TRUE(ok.has_value()) << e.type << ": " << ok.error().to_string();
    EXPECT_EQ(ok->inputs[0].bytes, 2 * dtype_size(ok->inputs[0].type)) << e.type;
    auto bad = decode_json(one_input(e.type, {1}, e.too_big));
    ASSERT_FALSE(bad.has_value()) << e.type;
    EXPECT_EQ(bad.error().code(), error_code::invalid_argument);
    auto fraction = decode_json(one_input(e.type, {1}, {1.5}));
    ASSERT_FALSE(fraction.has_value()) << e.type << ": a fraction is not an integer";
  }
  auto i64 = decode_json(one_input("INT64", {2}, {INT64_MIN, INT64_MAX}));
  EXPECT_EQ(as<int64_t>(i64->inputs[0]), (std::vector<int64_t>{INT64_MIN, INT64_MAX}));
  auto u64 = decode_json(one_input("UINT64", {1}, {UINT64_MAX}));
  EXPECT_EQ(as<uint64_t>(u64->inputs[0])[0], UINT64_MAX);
  auto i8 = decode_json(one_input("INT8", {2}, {-128, 127}));
  EXPECT_EQ(as<int8_t>(i8->inputs[0]), (std::vector<int8_t>{-128, 127}));
}

TEST(kserve_json_codec, booleans) {
  auto b = decode_json(one_input("BOOL", {3}, {true, false, 1}));
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EXPECT_EQ(as<uint8_t>(b->inputs[0]), (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_FALSE(decode_json(one_input("BOOL", {1}, {2})).has_value());
  EXPECT_FALSE(decode_json(one_input("BOOL", {1}, {"true"})).has_value());
}

TEST(kserve_json_codec, element_count_must_match_the_shape) {
  auto few = decode_json(one_input("FP32", {2, 2}, {1, 2, 3}));
  ASSERT_FALSE(few.has_value());
  EXPECT_NE(few.error().message().find("holds 3 elements"), std::string::npos)
      << few.error().message();
  auto many = decode_json(one_input("FP32", {1}, {1, 2}));
  ASSERT_FALSE(many.has_value());
  auto empty = decode_json(one_input("FP32", {0, 4}, json::array()));
  ASSERT_TRUE(empty.has_value()) << empty.error().to_string();
  EXPECT_EQ(empty->inputs[0].bytes, 0u);
  auto scalar = decode_json(one_input("INT32", json::array(), 7));
  ASSERT_TRUE(scalar.has_value()) << "a rank-0 tensor's data may be a bare number";
  EXPECT_EQ(as<int32_t>(scalar->inputs[0]), (std::vector<int32_t>{7}));
}

TEST(kserve_json_codec, binary_sections_follow_the_json_header) {
  const float a[3] = {1, 2, 3};
  const int64_t b[2] = {-1, 7};
  json j = {{"id", "req-1"},
            {"inputs",
             {{{"name", "a"},
               {"datatype", "FP32"},
               {"shape", {3}},
               {"parameters", {{"binary_data_size", sizeof(a)}}}},
              {{"name", "b"},
               {"datatype", "INT64"},
               {"shape", {2}},
               {"parameters", {{"binary_data_size", sizeof(b)}}}}}},
            {"outputs",
             {{{"name", "s"}, {"parameters", {{"binary_data", true}}}},
              {{"name", "p"}, {"parameters", {{"binary_data", false}}}}}}};
  const std::string header = j.dump();
  std::string body = header;
  body.append(reinterpret_cast<const char*>(a), sizeof(a));
  body.append(reinterpret_cast<const char*>(b), sizeof(b));
  auto r = decode_infer_request(body, header.size());
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->id, "req-1");
  ASSERT_EQ(r->inputs.size(), 2u);
  EXPECT_EQ(as<float>(r->inputs[0]), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(as<int64_t>(r->inputs[1]), (std::vector<int64_t>{-1, 7}));
  EXPECT_EQ(reinterpret_cast<const char*>(r->inputs[0].data), body.data() + header.size())
      << "binary inputs are views into the body, not copies";
  EXPECT_TRUE(r->output_binary("s"));
  EXPECT_FALSE(r->output_binary("p"));
  EXPECT_FALSE(r->output_binary("other")) << "binary_data_output defaults to false";

  // Truncated, extra bytes, a size without the header, a header past the body.
  auto truncated =
      decode_infer_request(std::string_view(body).substr(0, body.size() - 1), header.size());
  ASSERT_FALSE(truncated.has_value());
  EXPECT_NE(truncated.error().message().find("binary_data_size"), std::string::npos);
  auto extra = decode_infer_request(body + "x", header.size());
  ASSERT_FALSE(extra.has_value());
  EXPECT_FALSE(decode_infer_request(header, std::nullopt).has_value())
      << "binary_data_size without Inference-Header-Content-Length";
  EXPECT_FALSE(decode_infer_request(body, body.size() + 1).has_value());
  EXPECT_FALSE(decode_infer_request(body, std::nullopt).has_value()) << "binary is not JSON";
  EXPECT_FALSE(parse_header_length("12x", 100).has_value());
  EXPECT_FALSE(parse_header_length("", 100).has_value());
  EXPECT_FALSE(parse_header_length("101", 100).has_value());
  EXPECT_EQ(*parse_header_length("100", 100), 100u);
}

TEST(kserve_json_codec, parameters) {
  json j = one_input("FP32", {1}, {1});
  j["parameters"] = {{"binary_data_output", true},
                     {"priority", 2},
                     {"timeout", 1500},
                     {"troupe.sleep_ms", "5"},
                     {"canary", "yes"},
                     {"n", 3},
                     {"flag", false}};
  auto r = decode_json(j);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_TRUE(r->binary_data_output);
  EXPECT_TRUE(r->output_binary("y"));
  EXPECT_EQ(r->priority, 2u);
  EXPECT_EQ(r->timeout_us, 1500u);
  auto find = [&](const std::string& k) -> std::string {
    for (const auto& [key, v] : r->parameters)
      if (key == k) return v;
    return "<absent>";
  };
  EXPECT_EQ(find("troupe.sleep_ms"), "5");
  EXPECT_EQ(find("canary"), "yes");
  EXPECT_EQ(find("n"), "3");
  EXPECT_EQ(find("flag"), "false");
  EXPECT_EQ(find("priority"), "<absent>") << "consumed, not passed on";

  j["parameters"] = {{"sequence_id", 5}};
  auto seq = decode_json(j);
  ASSERT_FALSE(seq.has_value());
  EXPECT_EQ(seq.error().code(), error_code::unsupported);
  for (json bad : {json{{"priority", -1}}, json{{"timeout", "soon"}}, json{{"x", {1, 2}}},
                   json{{"binary_data_output", 1}}, json(5)}) {
    j["parameters"] = bad;
    auto r2 = decode_json(j);
    ASSERT_FALSE(r2.has_value()) << bad.dump();
    EXPECT_EQ(r2.error().code(), error_code::invalid_argument) << bad.dump();
  }
}

TEST(kserve_json_codec, shared_memory_parameters) {
  json j = {{"inputs",
             {{{"name", "x"},
               {"datatype", "FP32"},
               {"shape", {4}},
               {"parameters",
                {{"shared_memory_region", "in"},
                 {"shared_memory_byte_size", 16},
                 {"shared_memory_offset", 32}}}}}},
            {"outputs",
             {{{"name", "y"},
               {"parameters",
                {{"shared_memory_region", "out"},
                 {"shared_memory_byte_size", 8},
                 {"binary_data", false}}}}}}};
  auto r = decode_json(j);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  ASSERT_TRUE(r->inputs[0].shared_memory.has_value());
  EXPECT_EQ(r->inputs[0].shared_memory->region, "in");
  EXPECT_EQ(r->inputs[0].shared_memory->offset, 32u);
  EXPECT_EQ(r->inputs[0].shared_memory->byte_size, 16u);
  EXPECT_EQ(r->inputs[0].data, nullptr) << "the door resolves the region";
  ASSERT_TRUE(r->find_output("y")->shared_memory.has_value());
  EXPECT_EQ(r->find_output("y")->shared_memory->region, "out");
  EXPECT_EQ(r->find_output("y")->shared_memory->offset, 0u);

  j["inputs"][0]["parameters"].erase("shared_memory_byte_size");
  EXPECT_FALSE(decode_json(j).has_value()) << "a region without its byte size";
  j["inputs"][0]["parameters"] = {{"shared_memory_offset", 0}};
  EXPECT_FALSE(decode_json(j).has_value()) << "an offset without a region";
}

TEST(kserve_json_codec, malformed_requests_are_typed_errors) {
  const std::vector<std::string> bodies = {
      "",
      "{",
      "[]",
      "null",
      "{\"inputs\": 5}",
      "{}",
      "{\"inputs\": [5]}",
      "{\"inputs\": [{}]}",
      "{\"inputs\": [{\"name\": 1, \"datatype\": \"FP32\", \"shape\": [1], \"data\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"data\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP99\", \"shape\": [1], \"data\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"data\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1], \"data\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": \"1\", \"data\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1.5], \"data\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1], \"data\": "
      "[\"a\"]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1], \"data\": [{}]}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1], \"data\": [1], "
      "\"parameters\": {\"binary_data_size\": 4}}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1], \"data\": [1], "
      "\"parameters\": 3}]}",
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1099511627776, "
      "1099511627776], \"data\": []}]}",
      "{\"inputs\": [], \"outputs\": 3}",
      "{\"inputs\": [], \"outputs\": [{\"parameters\": {}}]}",
      "{\"inputs\": [], \"outputs\": [{\"name\": \"y\", \"parameters\": {\"binary_data\": 1}}]}",
      "{\"inputs\": [], \"id\": 5}",
      std::string(200, '[') + std::string(200, ']'),
      "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1], \"data\": " +
          std::string(100, '[') + "1" + std::string(100, ']') + "}]}",
      std::string("{\"inputs\": [\0]}", 15),
  };
  for (const std::string& body : bodies) {
    auto r = decode_infer_request(body, std::nullopt);
    ASSERT_FALSE(r.has_value()) << body;
    EXPECT_EQ(r.error().code(), error_code::invalid_argument)
        << body << " -> " << r.error().to_string();
    EXPECT_FALSE(r.error().message().empty());
  }
  auto bytes = decode_json(one_input("BYTES", {1}, {"abc"}));
  ASSERT_FALSE(bytes.has_value());
  EXPECT_EQ(bytes.error().code(), error_code::unsupported);
  auto classify = decode_infer_request(
      "{\"inputs\": [], \"outputs\": [{\"name\": \"y\", \"parameters\": {\"classification\": 3}}]}",
      std::nullopt);
  ASSERT_FALSE(classify.has_value());
  EXPECT_EQ(classify.error().code(), error_code::unsupported);
}

// ---- replies ---------------------------------------------------------------------------------

template <class T>
reply_tensor tensor_of(const char* name, dtype t, const std::vector<int64_t>& shape,
                       const std::vector<T>& values, bool binary = false) {
  reply_tensor r;
  r.name = name;
  r.type = t;
  r.shape = shape;
  r.data = reinterpret_cast<const std::byte*>(values.data());
  r.bytes = values.size() * sizeof(T);
  r.binary = binary;
  return r;
}

TEST(kserve_json_codec, reply_json_for_every_datatype) {
  const std::vector<int64_t> s2{2}, s1{1};
  const std::vector<float> f32{1.5f, -0.1f};
  const std::vector<double> f64{0.1, 1e300};
  const std::vector<uint16_t> f16{float_to_half(0.5f), float_to_half(-2.f)};
  const std::vector<uint16_t> bf16{float_to_bfloat16(3.f), float_to_bfloat16(-1.f)};
  const std::vector<uint8_t> b{1, 0};
  const std::vector<int8_t> i8{-128, 127};
  const std::vector<uint8_t> u8{0, 255};
  const std::vector<int16_t> i16{-32768, 32767};
  const std::vector<uint16_t> u16{0, 65535};
  const std::vector<int32_t> i32{INT32_MIN, INT32_MAX};
  const std::vector<uint32_t> u32{0, UINT32_MAX};
  const std::vector<int64_t> i64{INT64_MIN, INT64_MAX};
  const std::vector<uint64_t> u64{0, UINT64_MAX};
  std::vector<reply_tensor> outs{
      tensor_of("f32", dtype::f32, s2, f32), tensor_of("f64", dtype::f64, s2, f64),
      tensor_of("f16", dtype::f16, s2, f16), tensor_of("bf16", dtype::bf16, s2, bf16),
      tensor_of("b", dtype::boolean, s2, b), tensor_of("i8", dtype::i8, s2, i8),
      tensor_of("u8", dtype::u8, s2, u8),    tensor_of("i16", dtype::i16, s2, i16),
      tensor_of("u16", dtype::u16, s2, u16), tensor_of("i32", dtype::i32, s2, i32),
      tensor_of("u32", dtype::u32, s2, u32), tensor_of("i64", dtype::i64, s2, i64),
      tensor_of("u64", dtype::u64, s2, u64)};
  const encoded_reply r = encode_infer_reply("m", 3, "id-\"7\"", outs);
  EXPECT_FALSE(r.has_binary());
  const json j = json::parse(r.json);
  EXPECT_EQ(j["model_name"], "m");
  EXPECT_EQ(j["model_version"], "3");
  EXPECT_EQ(j["id"], "id-\"7\"");
  ASSERT_EQ(j["outputs"].size(), outs.size());
  auto out = [&](const char* name) -> const json& {
    for (const json& o : j["outputs"])
      if (o["name"] == name) return o;
    throw std::runtime_error(name);
  };
  EXPECT_EQ(out("f32")["datatype"], "FP32");
  EXPECT_EQ(out("f32")["shape"], json({2}));
  EXPECT_EQ(out("f32")["data"][0].get<float>(), 1.5f);
  EXPECT_EQ(out("f32")["data"][1].get<float>(), -0.1f) << "shortest text that reads back exactly";
  EXPECT_EQ(out("f64")["data"][0].get<double>(), 0.1);
  EXPECT_EQ(out("f64")["data"][1].get<double>(), 1e300);
  EXPECT_EQ(out("f16")["data"], json({0.5, -2.0}));
  EXPECT_EQ(out("bf16")["data"], json({3.0, -1.0}));
  EXPECT_EQ(out("b")["data"], json({true, false}));
  EXPECT_EQ(out("i8")["data"], json({-128, 127}));
  EXPECT_EQ(out("u8")["data"], json({0, 255}));
  EXPECT_EQ(out("i16")["data"], json({-32768, 32767}));
  EXPECT_EQ(out("u16")["data"], json({0, 65535}));
  EXPECT_EQ(out("i32")["data"], json({INT32_MIN, INT32_MAX}));
  EXPECT_EQ(out("u32")["data"], json({0u, UINT32_MAX}));
  EXPECT_EQ(out("i64")["data"][0].get<int64_t>(), INT64_MIN);
  EXPECT_EQ(out("i64")["data"][1].get<int64_t>(), INT64_MAX);
  EXPECT_EQ(out("u64")["data"][1].get<uint64_t>(), UINT64_MAX);
  // Every type decodes back from its own reply: the two directions agree.
  for (const json& o : j["outputs"]) {
    json req = one_input(o["datatype"], o["shape"], o["data"]);
    auto back = decode_json(req);
    ASSERT_TRUE(back.has_value()) << o.dump() << ": " << back.error().to_string();
    const reply_tensor* orig = nullptr;
    for (const auto& t : outs)
      if (t.name == o["name"].get<std::string>()) orig = &t;
    ASSERT_EQ(back->inputs[0].bytes, orig->bytes);
    EXPECT_EQ(std::memcmp(back->inputs[0].data, orig->data, orig->bytes), 0) << o["name"];
  }
}

TEST(kserve_json_codec, reply_binary_sections_and_shared_memory) {
  const std::vector<int64_t> shape{1, 2};
  const std::vector<float> a{1, 2}, b{3, 4}, c{5, 6};
  shared_memory_ref ref{"out", 16, 8};
  std::vector<reply_tensor> outs{tensor_of("a", dtype::f32, shape, a, true),
                                 tensor_of("b", dtype::f32, shape, b, false),
                                 tensor_of("c", dtype::f32, shape, c, true)};
  reply_tensor in_shm = tensor_of("d", dtype::f32, shape, c);
  in_shm.shared_memory = &ref;
  outs.push_back(in_shm);
  const encoded_reply r = encode_infer_reply("m", 1, "", outs);
  ASSERT_TRUE(r.has_binary());
  EXPECT_EQ(r.binary_outputs, (std::vector<size_t>{0, 2}));
  const json j = json::parse(r.json);
  EXPECT_FALSE(j.contains("id")) << "no id when the request had none";
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], 8);
  EXPECT_FALSE(j["outputs"][0].contains("data"));
  EXPECT_EQ(j["outputs"][1]["data"], json({3.0, 4.0}));
  EXPECT_EQ(j["outputs"][2]["parameters"]["binary_data_size"], 8);
  EXPECT_EQ(j["outputs"][3]["parameters"]["shared_memory_region"], "out");
  EXPECT_EQ(j["outputs"][3]["parameters"]["shared_memory_byte_size"], 8);
  EXPECT_EQ(j["outputs"][3]["parameters"]["shared_memory_offset"], 16);
  EXPECT_FALSE(j["outputs"][3].contains("data"));
}

TEST(kserve_json_codec, non_finite_floats_and_odd_strings) {
  const std::vector<float> v{NAN, INFINITY, -INFINITY};
  const std::vector<int64_t> shape{3};
  std::vector<reply_tensor> outs{tensor_of("x", dtype::f32, shape, v)};
  const encoded_reply r = encode_infer_reply("m", 1, "", outs);
  EXPECT_NE(r.json.find("[NaN,Infinity,-Infinity]"), std::string::npos) << r.json;

  std::string s;
  append_json_string(s, std::string("a\"b\\c\n\x01\xff\xc3\xa9", 10));
  EXPECT_EQ(s, "\"a\\\"b\\\\c\\n\\u0001\\ufffd\xc3\xa9\"");
  EXPECT_TRUE(json::accept(s));
  EXPECT_EQ(json::parse(error_body("no model 'x'"))["error"], "no model 'x'");
}

}  // namespace
}  // namespace troupe::cluster::kserve
