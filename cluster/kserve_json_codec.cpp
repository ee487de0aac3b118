#include "cluster/kserve_json_codec.hpp"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "cluster/kserve_types.hpp"

namespace troupe::cluster::kserve {
namespace {

using json = nlohmann::json;

/// Deepest bracket nesting of a JSON text, strings skipped; stops counting past `limit`. Checked
/// before parsing, so that a hostile "[[[[..." never reaches a recursive walk.
size_t nesting_depth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

std::string type_name(const json& v) {
  return v.type_name();
}

expected<uint64_t> get_unsigned(const json& v, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x >= 0) return static_cast<uint64_t>(x);
  }
  return invalid_argument(what + " must be a non-negative integer, got " + v.dump());
}

expected<std::string> get_string(const json& v, const std::string& what) {
  if (!v.is_string()) return invalid_argument(what + " must be a string, got " + type_name(v));
  return v.get<std::string>();
}

expected<bool> get_bool(const json& v, const std::string& what) {
  if (!v.is_boolean()) return invalid_argument(what + " must be true or false, got " + v.dump());
  return v.get<bool>();
}

/// The shared-memory parameters of an input or output, when it names a region.
expected<std::optional<shared_memory_ref>> shared_memory_of(const json& params,
                                                            const std::string& what) {
  auto region = params.find("shared_memory_region");
  if (region == params.end()) {
    for (const char* k : {"shared_memory_byte_size", "shared_memory_offset"})
      if (params.contains(k))
        return invalid_argument(what + " has '" + k + "' without 'shared_memory_region'");
    return std::optional<shared_memory_ref>();
  }
  shared_memory_ref r;
  TROUPE_ASSIGN_OR_RETURN(r.region, get_string(*region, what + " shared_memory_region"));
  auto size = params.find("shared_memory_byte_size");
  if (size == params.end())
    return invalid_argument(what + " names shared-memory region '" + r.region +
                            "' without 'shared_memory_byte_size'");
  TROUPE_ASSIGN_OR_RETURN(r.byte_size, get_unsigned(*size, what + " shared_memory_byte_size"));
  if (auto off = params.find("shared_memory_offset"); off != params.end()) {
    TROUPE_ASSIGN_OR_RETURN(r.offset, get_unsigned(*off, what + " shared_memory_offset"));
  }
  return std::optional<shared_memory_ref>(std::move(r));
}

// ---- JSON "data" -> little-endian elements ---------------------------------------------------

template <class T>
void put(std::vector<std::byte>& out, size_t index, T value) {
  std::memcpy(out.data() + index * sizeof(T), &value, sizeof(T));
}

/// Writes element `index` of type `t` from the JSON scalar `v`.
status put_element(const json& v, dtype t, std::vector<std::byte>& out, size_t index) {
  auto wrong = [&](const char* expected_what) {
    return invalid_argument("expected " + std::string(expected_what) + " for datatype " +
                            std::string(dtype_to_name(t)) + ", got " + v.dump());
  };
  if (t == dtype::boolean) {
    if (v.is_boolean()) {
      put<uint8_t>(out, index, v.get<bool>() ? 1 : 0);
      return status::ok();
    }
    if (v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1)) {
      put<uint8_t>(out, index, static_cast<uint8_t>(v.get<int64_t>()));
      return status::ok();
    }
    return wrong("true or false");
  }
  if (is_floating(t)) {
    if (!v.is_number()) return wrong("a number");
    const double d = v.get<double>();
    switch (t) {
      case dtype::f32:
        put<float>(out, index, static_cast<float>(d));
        break;
      case dtype::f64:
        put<double>(out, index, d);
        break;
      case dtype::f16:
        put<uint16_t>(out, index, float_to_half(static_cast<float>(d)));
        break;
      case dtype::bf16:
        put<uint16_t>(out, index, float_to_bfloat16(static_cast<float>(d)));
        break;
      default:
        return wrong("a number");
    }
    return status::ok();
  }
  // Integers: exact values only (a fraction or an out-of-range value is an error, not a cast).
  if (!v.is_number_integer()) return wrong("an integer");
  const bool negative = !v.is_number_unsigned() && v.get<int64_t>() < 0;
  auto in_range = [&](auto lo, auto hi) -> bool {
    if (negative) return v.get<int64_t>() >= static_cast<int64_t>(lo);
    return v.get<uint64_t>() <= static_cast<uint64_t>(hi);
  };
  switch (t) {
#define TROUPE_PUT_INT(DT, T)                                                                \
  case DT:                                                                                   \
    if (!in_range(std::numeric_limits<T>::min(), std::numeric_limits<T>::max()))             \
      return wrong("an integer in range");                                                   \
    put<T>(out, index,                                                                       \
           negative ? static_cast<T>(v.get<int64_t>()) : static_cast<T>(v.get<uint64_t>())); \
    return status::ok();
    TROUPE_PUT_INT(dtype::i8, int8_t)
    TROUPE_PUT_INT(dtype::u8, uint8_t)
    TROUPE_PUT_INT(dtype::i16, int16_t)
    TROUPE_PUT_INT(dtype::u16, uint16_t)
    TROUPE_PUT_INT(dtype::i32, int32_t)
    TROUPE_PUT_INT(dtype::u32, uint32_t)
    TROUPE_PUT_INT(dtype::i64, int64_t)
    TROUPE_PUT_INT(dtype::u64, uint64_t)
#undef TROUPE_PUT_INT
    default:
      return wrong("a number");
  }
}

/// Flattens `data` (a scalar, a flat array or nested arrays, row-major) into `out`; `count` is the
/// number of elements written so far. Depth is bounded by decode_limits (checked before parsing).
status flatten(const json& data, dtype t, size_t expected, std::vector<std::byte>& out,
               size_t& count) {
  if (data.is_array()) {
    for (const json& v : data) TROUPE_RETURN_IF_ERROR(flatten(v, t, expected, out, count));
    return status::ok();
  }
  if (count >= expected)
    return invalid_argument("holds more than the " + std::to_string(expected) +
                            " elements its shape says");
  TROUPE_RETURN_IF_ERROR(put_element(data, t, out, count));
  ++count;
  return status::ok();
}

expected<std::vector<int64_t>> parse_shape(const json& v, const std::string& what, size_t max_rank,
                                           size_t& elements) {
  if (!v.is_array()) return invalid_argument(what + " 'shape' must be an array of integers");
  if (v.size() > max_rank)
    return invalid_argument(what + " has rank " + std::to_string(v.size()) + ", more than " +
                            std::to_string(max_rank));
  std::vector<int64_t> shape;
  elements = 1;
  for (const json& d : v) {
    if (!d.is_number_integer() || (!d.is_number_unsigned() && d.get<int64_t>() < 0))
      return invalid_argument(what + " 'shape' must hold non-negative integers, got " + v.dump());
    const uint64_t x = d.get<uint64_t>();
    if (x > (uint64_t{1} << 40)) return invalid_argument(what + " has a dimension too large");
    shape.push_back(static_cast<int64_t>(x));
    if (x != 0 && elements > (uint64_t{1} << 40) / x)
      return invalid_argument(what + " has too many elements");
    elements *= static_cast<size_t>(x);
  }
  return shape;
}

/// One parameter value as text.
expected<std::string> parameter_text(const json& v, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
  if (v.is_number_integer() || v.is_number_float()) return v.dump();
  return invalid_argument("request parameter '" + key +
                          "' must be a string, a number or a boolean, got " + type_name(v));
}

status decode_parameters(const json& params, decoded_infer_request& r) {
  if (!params.is_object()) return invalid_argument("'parameters' must be an object");
  for (const auto& [key, v] : params.items()) {
    if (key == "binary_data_output") {
      TROUPE_ASSIGN_OR_RETURN(r.binary_data_output, get_bool(v, "parameter binary_data_output"));
    } else if (key == "priority") {
      TROUPE_ASSIGN_OR_RETURN(uint64_t p, get_unsigned(v, "parameter priority"));
      if (p > std::numeric_limits<uint32_t>::max())
        return invalid_argument("parameter priority is too large");
      r.priority = static_cast<uint32_t>(p);
    } else if (key == "timeout") {
      TROUPE_ASSIGN_OR_RETURN(r.timeout_us, get_unsigned(v, "parameter timeout"));
    } else if (key == "sequence_id" || key == "sequence_start" || key == "sequence_end") {
      // tritonclient sends these only for a sequence (sequence_id != 0).
      return unsupported("sequence batching ('" + key + "') is not served by troupe");
    } else {
      TROUPE_ASSIGN_OR_RETURN(std::string text, parameter_text(v, key));
      r.parameters.emplace_back(key, std::move(text));
    }
  }
  return status::ok();
}

status decode_input(const json& in, size_t index, std::string_view binary, size_t& binary_used,
                    const decode_limits& limits, decoded_infer_request& r) {
  const std::string where = "input " + std::to_string(index);
  if (!in.is_object()) return invalid_argument(where + " must be an object");
  decoded_input d;
  auto name = in.find("name");
  if (name == in.end()) return invalid_argument(where + " has no 'name'");
  TROUPE_ASSIGN_OR_RETURN(d.name, get_string(*name, where + " 'name'"));
  const std::string what = "input '" + d.name + "'";
  auto type = in.find("datatype");
  if (type == in.end()) return invalid_argument(what + " has no 'datatype'");
  TROUPE_ASSIGN_OR_RETURN(std::string type_text, get_string(*type, what + " 'datatype'"));
  auto t = dtype_from_name(type_text);
  if (!t) return make_error(t.error().code(), what + ": " + t.error().message());
  d.type = *t;
  auto shape = in.find("shape");
  if (shape == in.end()) return invalid_argument(what + " has no 'shape'");
  size_t elements = 0;
  TROUPE_ASSIGN_OR_RETURN(d.shape, parse_shape(*shape, what, limits.max_rank, elements));
  const size_t bytes = elements * dtype_size(d.type);

  std::optional<uint64_t> binary_size;
  if (auto p = in.find("parameters"); p != in.end()) {
    if (!p->is_object()) return invalid_argument(what + " 'parameters' must be an object");
    if (auto b = p->find("binary_data_size"); b != p->end()) {
      TROUPE_ASSIGN_OR_RETURN(binary_size, get_unsigned(*b, what + " binary_data_size"));
    }
    TROUPE_ASSIGN_OR_RETURN(d.shared_memory, shared_memory_of(*p, what));
  }
  auto data = in.find("data");
  const int sources = (data != in.end()) + binary_size.has_value() + d.shared_memory.has_value();
  if (sources == 0)
    return invalid_argument(what +
                            " has no data: give 'data', binary_data_size or "
                            "shared_memory_region");
  if (sources > 1)
    return invalid_argument(what +
                            " has more than one of 'data', binary_data_size and "
                            "shared_memory_region");
  if (binary_size) {
    if (*binary_size > binary.size() - binary_used)
      return invalid_argument(what + " has binary_data_size " + std::to_string(*binary_size) +
                              " but only " + std::to_string(binary.size() - binary_used) +
                              " bytes of binary data are left in the body");
    d.data = reinterpret_cast<const std::byte*>(binary.data() + binary_used);
    d.bytes = static_cast<size_t>(*binary_size);
    binary_used += d.bytes;
  } else if (d.shared_memory) {
    d.bytes = static_cast<size_t>(d.shared_memory->byte_size);  // resolved by the door
  } else {
    d.owned.resize(bytes);
    size_t count = 0;
    if (status s = flatten(*data, d.type, elements, d.owned, count); !s.is_ok())
      return invalid_argument(what + " 'data' " + s.message());
    if (count != elements)
      return invalid_argument(what + " 'data' holds " + std::to_string(count) +
                              " elements, its shape says " + std::to_string(elements));
    d.data = d.owned.data();
    d.bytes = d.owned.size();
  }
  r.inputs.push_back(std::move(d));
  return status::ok();
}

status decode_output(const json& out, size_t index, decoded_infer_request& r) {
  const std::string where = "output " + std::to_string(index);
  if (!out.is_object()) return invalid_argument(where + " must be an object");
  requested_output o;
  auto name = out.find("name");
  if (name == out.end()) return invalid_argument(where + " has no 'name'");
  TROUPE_ASSIGN_OR_RETURN(o.name, get_string(*name, where + " 'name'"));
  const std::string what = "output '" + o.name + "'";
  if (auto p = out.find("parameters"); p != out.end()) {
    if (!p->is_object()) return invalid_argument(what + " 'parameters' must be an object");
    if (auto b = p->find("binary_data"); b != p->end()) {
      TROUPE_ASSIGN_OR_RETURN(o.binary, get_bool(*b, what + " binary_data"));
    }
    if (p->contains("classification"))
      return unsupported(what + ": the classification extension is not served by troupe");
    TROUPE_ASSIGN_OR_RETURN(o.shared_memory, shared_memory_of(*p, what));
  }
  r.outputs.push_back(std::move(o));
  return status::ok();
}

expected<decoded_infer_request> decode(std::string_view body, std::optional<size_t> header_length,
                                       const decode_limits& limits) {
  std::string_view text = body;
  std::string_view binary;
  if (header_length) {
    if (*header_length > body.size())
      return invalid_argument("Inference-Header-Content-Length " + std::to_string(*header_length) +
                              " exceeds the body's " + std::to_string(body.size()) + " bytes");
    text = body.substr(0, *header_length);
    binary = body.substr(*header_length);
  }
  if (nesting_depth(text, limits.max_nesting) > limits.max_nesting)
    return invalid_argument("the request JSON nests deeper than " +
                            std::to_string(limits.max_nesting) + " levels");
  const json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded())
    return invalid_argument(header_length ? "the request's JSON header is not valid JSON"
                                          : "the request body is not valid JSON (a body with "
                                            "binary tensor data needs the "
                                            "Inference-Header-Content-Length header)");
  if (!doc.is_object()) return invalid_argument("the request JSON must be an object");
  decoded_infer_request r;
  if (auto id = doc.find("id"); id != doc.end()) {
    TROUPE_ASSIGN_OR_RETURN(r.id, get_string(*id, "'id'"));
  }
  if (auto p = doc.find("parameters"); p != doc.end())
    TROUPE_RETURN_IF_ERROR(decode_parameters(*p, r));
  auto inputs = doc.find("inputs");
  if (inputs == doc.end()) return invalid_argument("the request has no 'inputs'");
  if (!inputs->is_array()) return invalid_argument("'inputs' must be an array");
  size_t binary_used = 0;
  r.inputs.reserve(inputs->size());
  for (size_t i = 0; i < inputs->size(); ++i)
    TROUPE_RETURN_IF_ERROR(decode_input((*inputs)[i], i, binary, binary_used, limits, r));
  if (binary_used != binary.size())
    return invalid_argument("the body holds " + std::to_string(binary.size()) +
                            " bytes of binary data, the inputs' binary_data_size add up to " +
                            std::to_string(binary_used));
  if (auto outputs = doc.find("outputs"); outputs != doc.end()) {
    if (!outputs->is_array()) return invalid_argument("'outputs' must be an array");
    for (size_t i = 0; i < outputs->size(); ++i)
      TROUPE_RETURN_IF_ERROR(decode_output((*outputs)[i], i, r));
  }
  return r;
}

// ---- reply ----------------------------------------------------------------------------------

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

void append_double(std::string& out, double d, bool single) {
  // JSON has no NaN or infinity; Python's json and rapidjson (tritonclient) read these tokens.
  if (std::isnan(d)) {
    out += "NaN";
    return;
  }
  if (std::isinf(d)) {
    out += d > 0 ? "Infinity" : "-Infinity";
    return;
  }
  char buf[32];
  // Shortest text that reads back as the same value (float for 32-bit and narrower types).
  const auto r = single ? std::to_chars(buf, buf + sizeof(buf), static_cast<float>(d))
                        : std::to_chars(buf, buf + sizeof(buf), d);
  out.append(buf, r.ptr);
}

template <class T>
void append_integer(std::string& out, T v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

void append_elements(std::string& out, const reply_tensor& t) {
  const size_t size = dtype_size(t.type);
  const size_t n = size ? t.bytes / size : 0;
  out += '[';
  for (size_t i = 0; i < n; ++i) {
    if (i) out += ',';
    const std::byte* p = t.data + i * size;
    switch (t.type) {
      case dtype::f32:
        append_double(out, load<float>(p), true);
        break;
      case dtype::f64:
        append_double(out, load<double>(p), false);
        break;
      case dtype::f16:
        append_double(out, half_to_float(load<uint16_t>(p)), true);
        break;
      case dtype::bf16:
        append_double(out, bfloat16_to_float(load<uint16_t>(p)), true);
        break;
      case dtype::boolean:
        out += load<uint8_t>(p) ? "true" : "false";
        break;
      case dtype::i8:
        append_integer(out, load<int8_t>(p));
        break;
      case dtype::u8:
        append_integer(out, load<uint8_t>(p));
        break;
      case dtype::i16:
        append_integer(out, load<int16_t>(p));
        break;
      case dtype::u16:
        append_integer(out, load<uint16_t>(p));
        break;
      case dtype::i32:
        append_integer(out, load<int32_t>(p));
        break;
      case dtype::u32:
        append_integer(out, load<uint32_t>(p));
        break;
      case dtype::i64:
        append_integer(out, load<int64_t>(p));
        break;
      case dtype::u64:
        append_integer(out, load<uint64_t>(p));
        break;
      case dtype::undefined:
        break;
    }
  }
  out += ']';
}

/// Length of the valid UTF-8 sequence at `s[i]`, or 0.
size_t utf8_sequence(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

}  // namespace

bool decoded_infer_request::output_binary(std::string_view name) const {
  if (const requested_output* o = find_output(name); o && o->binary) return *o->binary;
  return binary_data_output;
}

const requested_output* decoded_infer_request::find_output(std::string_view name) const {
  for (const auto& o : outputs)
    if (o.name == name) return &o;
  return nullptr;
}

expected<decoded_infer_request> decode_infer_request(std::string_view body,
                                                     std::optional<size_t> header_length,
                                                     const decode_limits& limits) {
  // Every access above checks the JSON type first; this catch is the edge for whatever a
  // library call may still throw (allocation failure on a huge "data" array, ...).
  try {
    return decode(body, header_length, limits);
  } catch (const std::bad_alloc&) {
    return make_error(error_code::out_of_memory, "no memory to decode the request");
  } catch (const std::exception& e) {
    return invalid_argument(std::string("cannot decode the request: ") + e.what());
  }
}

expected<size_t> parse_header_length(std::string_view text, size_t body_bytes) {
  size_t n = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size())
    return invalid_argument("Inference-Header-Content-Length must be a byte count, got '" +
                            std::string(text) + "'");
  if (n > body_bytes)
    return invalid_argument("Inference-Header-Content-Length " + std::to_string(n) +
                            " exceeds the body's " + std::to_string(body_bytes) + " bytes");
  return n;
}

void append_json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      default:
        break;
    }
    if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (const size_t n = utf8_sequence(text, i); n > 0) {
      out.append(text.substr(i, n));
      i += n - 1;
    } else {
      out += "\\ufffd";  // not UTF-8: the replacement character keeps the document valid
    }
  }
  out += '"';
}

std::string error_body(std::string_view message) {
  std::string out = "{\"error\":";
  append_json_string(out, message);
  out += '}';
  return out;
}

encoded_reply encode_infer_reply(std::string_view model, int64_t version, std::string_view id,
                                 std::span<const reply_tensor> outputs) {
  encoded_reply r;
  std::string& out = r.json;
  size_t data_bytes = 0;
  for (const auto& o : outputs)
    if (!o.binary && !o.shared_memory) data_bytes += o.bytes;
  out.reserve(128 + outputs.size() * 96 + data_bytes * 3);
  out += "{\"model_name\":";
  append_json_string(out, model);
  out += ",\"model_version\":\"";
  append_integer(out, version);
  out += '"';
  if (!id.empty()) {
    out += ",\"id\":";
    append_json_string(out, id);
  }
  out += ",\"outputs\":[";
  for (size_t i = 0; i < outputs.size(); ++i) {
    const reply_tensor& o = outputs[i];
    if (i) out += ',';
    out += "{\"name\":";
    append_json_string(out, o.name);
    out += ",\"datatype\":\"";
    out += dtype_to_name(o.type);
    out += "\",\"shape\":[";
    for (size_t k = 0; k < o.shape.size(); ++k) {
      if (k) out += ',';
      append_integer(out, o.shape[k]);
    }
    out += ']';
    if (o.shared_memory) {
      out += ",\"parameters\":{\"shared_memory_region\":";
      append_json_string(out, o.shared_memory->region);
      out += ",\"shared_memory_byte_size\":";
      append_integer(out, o.bytes);
      if (o.shared_memory->offset) {
        out += ",\"shared_memory_offset\":";
        append_integer(out, o.shared_memory->offset);
      }
      out += '}';
    } else if (o.binary) {
      out += ",\"parameters\":{\"binary_data_size\":";
      append_integer(out, o.bytes);
      out += '}';
      r.binary_outputs.push_back(i);
    } else {
      out += ",\"data\":";
      append_elements(out, o);
    }
    out += '}';
  }
  out += "]}";
  return r;
}

}  // namespace troupe::cluster::kserve
