#include "runtime/input_normalization.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

namespace troupe::runtime {
namespace {

std::string input_names(const graph& g) {
  std::string names;
  for (int v : g.inputs) names += (names.empty() ? "" : ", ") + g.values[v].name;
  return names;
}

/// A graph value name not taken yet: `base`, else base.1, base.2, ...
std::string unique_name(const graph& g, const std::string& base) {
  if (g.find(base) < 0) return base;
  for (int i = 1;; ++i) {
    std::string name = base + "." + std::to_string(i);
    if (g.find(name) < 0) return name;
  }
}

/// A constant of float type `type` (the input's former type) holding `values` in `shape`.
tensor float_constant(dtype type, const shape_t& shape, const std::vector<double>& values) {
  tensor t = tensor::allocate(type, shape);
  for (size_t i = 0; i < values.size(); ++i)
    t.set_value_from_double(static_cast<int64_t>(i), values[i]);
  return t;
}

int add_intermediate(graph& g, const std::string& name, dtype type) {
  value v;
  v.name = unique_name(g, name);
  v.type = type;
  return g.add_value(std::move(v));
}

node make_node(const graph& g, const char* op, const std::string& name, std::vector<int> inputs,
               int output) {
  node n;
  n.op.op_type = op;
  n.op.name = name;
  n.op.opset = g.opset("");
  n.inputs = std::move(inputs);
  n.outputs = {output};
  return n;
}

expected<std::vector<float>> parse_float_list(std::string_view text, const std::string& key) {
  std::vector<float> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item(text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    char* end = nullptr;
    errno = 0;
    const double v = item.empty() ? 0.0 : std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || errno == ERANGE) {
      return invalid_argument("input normalization: " + key +
                              " must be a comma-separated list of numbers, got '" +
                              std::string(text) + "'");
    }
    out.push_back(static_cast<float>(v));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

bool is_normalizable_client_type(dtype t) {
  return t == dtype::u8 || t == dtype::i8 || t == dtype::u16 || t == dtype::i16;
}

expected<dtype> parse_client_type(std::string_view name) {
  for (dtype t : {dtype::u8, dtype::i8, dtype::u16, dtype::i16}) {
    if (name == dtype_name(t)) return t;
  }
  return invalid_argument("input normalization: dtype '" + std::string(name) +
                          "' is not one clients may send (uint8, int8, uint16, int16)");
}

status validate_input_normalization(const input_normalization& n) {
  if (!is_normalizable_client_type(n.client_type)) {
    return invalid_argument("input normalization: dtype " + std::string(dtype_name(n.client_type)) +
                            " is not one clients may send (uint8, int8, uint16, int16)");
  }
  if (n.mean.empty())
    return invalid_argument("input normalization: mean is empty (one value per channel)");
  if (n.mean.size() != n.stddev.size()) {
    return invalid_argument("input normalization: mean has " + std::to_string(n.mean.size()) +
                            " values, std " + std::to_string(n.stddev.size()) +
                            " (one per channel each)");
  }
  for (size_t c = 0; c < n.mean.size(); ++c) {
    if (!std::isfinite(n.mean[c])) {
      return invalid_argument("input normalization: mean[" + std::to_string(c) + "] is not finite");
    }
    if (!std::isfinite(n.stddev[c]) || n.stddev[c] == 0.0f) {
      return invalid_argument("input normalization: std[" + std::to_string(c) + "] is " +
                              std::to_string(n.stddev[c]) + "; it must be finite and non-zero");
    }
  }
  return status::ok();
}

status apply_input_normalization(graph& g, const input_normalization& n) {
  TROUPE_RETURN_IF_ERROR(validate_input_normalization(n));
  int in = -1;
  if (n.input.empty()) {
    if (g.inputs.size() != 1) {
      return invalid_argument("input normalization names no input and the model has " +
                              std::to_string(g.inputs.size()) + " (" + input_names(g) +
                              "): name one");
    }
    in = g.inputs[0];
  } else {
    for (int v : g.inputs) {
      if (g.values[v].name == n.input) in = v;
    }
    if (in < 0) {
      return invalid_argument("input normalization: the model has no input '" + n.input +
                              "' (inputs: " + input_names(g) + ")");
    }
  }
  const std::string where = "input normalization of '" + g.values[in].name + "': ";
  const dtype float_type = g.values[in].type;
  if (!is_floating(float_type)) {
    return invalid_argument(where + "the input is " + std::string(dtype_name(float_type)) +
                            ", not a float type: only float inputs are normalised");
  }
  if (g.values[in].is_graph_output) {
    return invalid_argument(
        where +
        "the input is also a graph output: its name cannot be both the client's "
        "integer input and the normalised output");
  }
  if (!g.values[in].declared_shape) {
    return invalid_argument(where +
                            "the model declares no shape for it: the channel axis needs its rank");
  }
  symbolic_shape shape = *g.values[in].declared_shape;
  const auto rank = static_cast<int64_t>(shape.size());
  const int64_t axis = n.channel_axis < 0 ? n.channel_axis + rank : n.channel_axis;
  if (axis < 0 || axis >= rank) {
    return invalid_argument(where + "channel_axis " + std::to_string(n.channel_axis) +
                            " is outside the input's rank " + std::to_string(rank) + " " +
                            symbolic_shape_to_string(shape));
  }
  const auto channels = static_cast<int64_t>(n.mean.size());
  dim& channel_dim = shape[static_cast<size_t>(axis)];
  if (channel_dim.is_static() && channel_dim.size != channels) {
    return invalid_argument(where + "dim " + std::to_string(axis) + " of " +
                            symbolic_shape_to_string(shape) + " is " +
                            std::to_string(channel_dim.size) + " channels, mean and std give " +
                            std::to_string(channels));
  }
  // A symbolic channel dim is fixed: a request with another channel count would otherwise
  // broadcast against the constants (1 channel -> C) instead of failing.
  channel_dim = dim{channels, ""};

  shape_t constant_shape(static_cast<size_t>(rank - axis), 1);
  constant_shape[0] = channels;
  std::vector<double> mean(n.mean.begin(), n.mean.end());
  std::vector<double> inv_std(n.stddev.size());
  for (size_t c = 0; c < inv_std.size(); ++c) inv_std[c] = 1.0 / static_cast<double>(n.stddev[c]);

  const std::string base = g.values[in].name + ".normalize";
  const int cast_out = add_intermediate(g, base + ".cast", float_type);
  const int mean_id = g.add_constant(unique_name(g, base + ".mean"),
                                     float_constant(float_type, constant_shape, mean));
  const int centered = add_intermediate(g, base + ".centered", float_type);
  const int inv_std_id = g.add_constant(unique_name(g, base + ".inv_std"),
                                        float_constant(float_type, constant_shape, inv_std));
  const int normalized = add_intermediate(g, base + ".out", float_type);

  for (node& nd : g.nodes) {
    for (int& x : nd.inputs) {
      if (x == in) x = normalized;
    }
  }
  node cast = make_node(g, "Cast", base + ".cast", {in}, cast_out);
  cast.op.attrs.set("to", int64_t{dtype_to_onnx(float_type)});
  std::vector<node> prologue;
  prologue.push_back(std::move(cast));
  prologue.push_back(make_node(g, "Sub", base + ".sub", {cast_out, mean_id}, centered));
  prologue.push_back(make_node(g, "Mul", base + ".mul", {centered, inv_std_id}, normalized));
  g.nodes.insert(g.nodes.begin(), std::make_move_iterator(prologue.begin()),
                 std::make_move_iterator(prologue.end()));

  value& x = g.values[in];
  x.type = n.client_type;
  x.declared_shape = std::move(shape);
  return g.sort_topologically();
}

status apply_input_normalizations(graph& g, const std::vector<input_normalization>& list) {
  std::set<std::string> done;
  for (const auto& n : list) {
    // The resolved name: an unnamed entry means the only input.
    const std::string name =
        n.input.empty() && g.inputs.size() == 1 ? g.values[g.inputs[0]].name : n.input;
    if (!done.insert(name).second) {
      return invalid_argument("input normalization: input '" + name + "' is normalised twice");
    }
    TROUPE_RETURN_IF_ERROR(apply_input_normalization(g, n));
  }
  return status::ok();
}

expected<input_normalization> parse_input_normalization(std::string_view spec) {
  input_normalization n;
  bool have_dtype = false, have_mean = false, have_std = false;
  std::set<std::string> seen;
  size_t pos = 0;
  while (pos < spec.size()) {
    if (spec[pos] == ' ') {
      ++pos;
      continue;
    }
    const size_t end = std::min(spec.find(' ', pos), spec.size());
    const std::string_view item = spec.substr(pos, end - pos);
    pos = end;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return invalid_argument("input normalization: expected key=value, got '" + std::string(item) +
                              "'");
    }
    const std::string key(item.substr(0, eq));
    const std::string_view text = item.substr(eq + 1);
    if (!seen.insert(key).second)
      return invalid_argument("input normalization: " + key + " is given twice");
    if (key == "dtype") {
      TROUPE_ASSIGN_OR_RETURN(n.client_type, parse_client_type(text));
      have_dtype = true;
    } else if (key == "mean") {
      TROUPE_ASSIGN_OR_RETURN(n.mean, parse_float_list(text, key));
      have_mean = true;
    } else if (key == "std") {
      TROUPE_ASSIGN_OR_RETURN(n.stddev, parse_float_list(text, key));
      have_std = true;
    } else if (key == "input") {
      n.input = std::string(text);
    } else if (key == "channel_axis") {
      const std::string s(text);
      char* stop = nullptr;
      errno = 0;
      const long long axis = s.empty() ? 0 : std::strtoll(s.c_str(), &stop, 10);
      if (s.empty() || stop != s.c_str() + s.size() || errno == ERANGE || axis < -64 || axis > 64) {
        return invalid_argument("input normalization: channel_axis must be an integer, got '" + s +
                                "'");
      }
      n.channel_axis = axis;
    } else {
      return invalid_argument("input normalization: unknown key '" + key +
                              "' (dtype, mean, std, input, channel_axis)");
    }
  }
  if (!have_dtype || !have_mean || !have_std) {
    return invalid_argument(
        "input normalization needs dtype, mean and std, e.g. 'dtype=uint8 "
        "mean=123.675,116.28,103.53 std=58.395,57.12,57.375'");
  }
  TROUPE_RETURN_IF_ERROR(validate_input_normalization(n));
  return n;
}

}  // namespace troupe::runtime
