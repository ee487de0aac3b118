#include "kernels/ops/nn_geometry.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace troupe::kernels {
namespace {

// Attribute values and dims are bounded far below int64 overflow before any product is formed:
// dims of a real tensor are < 2^40 and sizes/strides/pads from the model are checked against this.
constexpr int64_t max_attr_value = int64_t{1} << 31;

status bad(const op_node& node, const std::string& what) {
  return invalid_model(node.describe() + ": " + what);
}

std::string axis_str(size_t i) {
  return "spatial axis " + std::to_string(i);
}

// Reads a per-spatial-axis int list: absent -> `fallback` repeated; present -> exactly `n` values
// in [lo, max_attr_value].
expected<shape_t> spatial_ints(const op_node& node, const char* name, size_t n, int64_t fallback,
                               int64_t lo) {
  if (!node.attrs.has(name)) return shape_t(n, fallback);
  TROUPE_ASSIGN_OR_RETURN(shape_t v, node.attrs.require_ints(name));
  if (v.size() != n) {
    return bad(node, std::string(name) + " has " + std::to_string(v.size()) + " values, expected " +
                         std::to_string(n));
  }
  for (int64_t x : v) {
    if (x < lo || x > max_attr_value) {
      return bad(node, std::string(name) + " value " + std::to_string(x) + " is out of range");
    }
  }
  return v;
}

// Explicit pads: [b1..bn, e1..en], each >= 0.
expected<std::pair<shape_t, shape_t>> explicit_pads(const op_node& node, size_t n) {
  TROUPE_ASSIGN_OR_RETURN(shape_t pads, spatial_ints(node, "pads", 2 * n, 0, 0));
  return std::pair<shape_t, shape_t>{shape_t(pads.begin(), pads.begin() + n),
                                     shape_t(pads.begin() + n, pads.end())};
}

int64_t ceil_div(int64_t a, int64_t b) {
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}
int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

enum class auto_pad_mode { notset, valid, same_upper, same_lower };

expected<auto_pad_mode> read_auto_pad(const op_node& node) {
  const std::string s = node.attrs.get_string("auto_pad", "NOTSET");
  if (s == "NOTSET" || s.empty()) return auto_pad_mode::notset;
  if (s == "VALID") return auto_pad_mode::valid;
  if (s == "SAME_UPPER") return auto_pad_mode::same_upper;
  if (s == "SAME_LOWER") return auto_pad_mode::same_lower;
  return bad(node, "auto_pad '" + s + "' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER");
}

// Pads for Conv/pooling's SAME modes: output ceil(in / stride), total padding split with the odd
// element at the end (UPPER) or the beginning (LOWER).
void same_pads(auto_pad_mode mode, int64_t in, int64_t stride, int64_t extent, int64_t* begin,
               int64_t* end) {
  const int64_t out = ceil_div(in, stride);
  const int64_t total = std::max<int64_t>(0, (out - 1) * stride + extent - in);
  if (mode == auto_pad_mode::same_upper) {
    *begin = total / 2;
    *end = total - total / 2;
  } else {
    *begin = total - total / 2;
    *end = total / 2;
  }
}

status check_spatial_input(const op_node& node, const tensor_info& x, const char* what) {
  if (!x.present()) return bad(node, std::string(what) + " is required");
  if (x.rank() < 3) {
    return bad(node,
               std::string(what) + " must have rank >= 3 (N, C, spatial...), got " + x.to_string());
  }
  if (x.rank() > 5) {
    return unsupported(node.describe() + ": more than 3 spatial axes (" + x.to_string() + ")");
  }
  for (int64_t d : x.shape) {
    if (d < 0) return bad(node, std::string(what) + " has a negative dim");
  }
  return status::ok();
}

}  // namespace

bool is_channels_last(const op_node& node) {
  return node.domain == "troupe" && node.attrs.get_int("channels_last", 0) != 0;
}

shape_t channels_last_to_logical(const shape_t& stored) {
  if (stored.size() < 3) return stored;
  shape_t l{stored[0], stored.back()};
  l.insert(l.end(), stored.begin() + 1, stored.end() - 1);
  return l;
}

shape_t logical_to_channels_last(const shape_t& logical) {
  if (logical.size() < 3) return logical;
  shape_t s{logical[0]};
  s.insert(s.end(), logical.begin() + 2, logical.end());
  s.push_back(logical[1]);
  return s;
}

/// Checks shared by Conv and ConvTranspose: X spatial, W present with X's rank; returns `group`.
static expected<int64_t> check_conv_operands(const op_node& node, const tensor_info& x, const tensor_info& w) {
  TROUPE_RETURN_IF_ERROR(check_spatial_input(node, x, "input X"));
  if (!w.present()) return bad(node, "input W is required");
  if (w.rank() != x.rank()) {
    return bad(node, "W " + w.to_string() + " must have the rank of X " + x.to_string());
  }
  const int64_t group = node.attrs.get_int("group", 1);
  if (group < 1 || group > max_attr_value) return bad(node, "group must be >= 1");
  return group;
}

expected<conv_geometry> resolve_conv(const op_node& node, const tensor_info& x,
                                     const tensor_info& w) {
  const size_t n = x.rank() - 2;
  conv_geometry g;
  TROUPE_ASSIGN_OR_RETURN(g.group, check_conv_operands(node, x, w));
  const int64_t c = x.shape[1], m = w.shape[0];
  if (m < 1 || m % g.group != 0) {
    return bad(node, "W's output channels " + std::to_string(m) +
                         " are not a positive multiple of group " + std::to_string(g.group));
  }
  if (w.shape[1] * g.group != c) {
    return bad(node, "X has " + std::to_string(c) + " channels but W " + w.to_string() +
                         " with group " + std::to_string(g.group) + " expects " +
                         std::to_string(w.shape[1] * g.group));
  }
  g.kernel.assign(w.shape.begin() + 2, w.shape.end());
  if (node.attrs.has("kernel_shape")) {
    TROUPE_ASSIGN_OR_RETURN(shape_t ks, node.attrs.require_ints("kernel_shape"));
    if (ks != g.kernel) {
      return bad(node,
                 "kernel_shape " + shape_to_string(ks) + " does not match W " + w.to_string());
    }
  }
  for (int64_t k : g.kernel) {
    if (k < 1) return bad(node, "W has an empty kernel " + w.to_string());
  }
  TROUPE_ASSIGN_OR_RETURN(g.strides, spatial_ints(node, "strides", n, 1, 1));
  TROUPE_ASSIGN_OR_RETURN(g.dilations, spatial_ints(node, "dilations", n, 1, 1));
  TROUPE_ASSIGN_OR_RETURN(auto mode, read_auto_pad(node));
  if (mode == auto_pad_mode::notset) {
    TROUPE_ASSIGN_OR_RETURN(auto pads, explicit_pads(node, n));
    g.pads_begin = std::move(pads.first);
    g.pads_end = std::move(pads.second);
  } else {
    g.pads_begin.assign(n, 0);
    g.pads_end.assign(n, 0);
  }
  g.output_shape = {x.shape[0], m};
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = x.shape[2 + i];
    const int64_t extent = (g.kernel[i] - 1) * g.dilations[i] + 1;
    if (mode == auto_pad_mode::same_upper || mode == auto_pad_mode::same_lower) {
      same_pads(mode, in, g.strides[i], extent, &g.pads_begin[i], &g.pads_end[i]);
    }
    const int64_t span = in + g.pads_begin[i] + g.pads_end[i] - extent;
    if (span < 0) {
      return bad(node, "kernel extent " + std::to_string(extent) +
                           " exceeds the padded input along " + axis_str(i) + " (" + x.to_string() +
                           ")");
    }
    g.output_shape.push_back(span / g.strides[i] + 1);
  }
  return g;
}

expected<conv_transpose_geometry> resolve_conv_transpose(const op_node& node, const tensor_info& x,
                                                         const tensor_info& w) {
  const size_t n = x.rank() - 2;
  conv_transpose_geometry g;
  TROUPE_ASSIGN_OR_RETURN(g.group, check_conv_operands(node, x, w));
  const int64_t c = x.shape[1];
  if (w.shape[0] != c || c % g.group != 0) {
    return bad(node, "W " + w.to_string() + " must have X's " + std::to_string(c) +
                         " input channels, divisible by group " + std::to_string(g.group));
  }
  const int64_t m = w.shape[1] * g.group;
  if (m < 1) return bad(node, "W has no output channels");
  g.kernel.assign(w.shape.begin() + 2, w.shape.end());
  if (node.attrs.has("kernel_shape")) {
    TROUPE_ASSIGN_OR_RETURN(shape_t ks, node.attrs.require_ints("kernel_shape"));
    if (ks != g.kernel) {
      return bad(node,
                 "kernel_shape " + shape_to_string(ks) + " does not match W " + w.to_string());
    }
  }
  for (int64_t k : g.kernel) {
    if (k < 1) return bad(node, "W has an empty kernel " + w.to_string());
  }
  TROUPE_ASSIGN_OR_RETURN(g.strides, spatial_ints(node, "strides", n, 1, 1));
  TROUPE_ASSIGN_OR_RETURN(g.dilations, spatial_ints(node, "dilations", n, 1, 1));
  TROUPE_ASSIGN_OR_RETURN(g.output_padding, spatial_ints(node, "output_padding", n, 0, 0));
  TROUPE_ASSIGN_OR_RETURN(auto mode, read_auto_pad(node));

  // Requested output spatial shape: explicit output_shape (spatial dims, or N, C and spatial dims
  // as some exporters write it), or in * stride for the SAME modes.
  shape_t requested;
  if (node.attrs.has("output_shape")) {
    TROUPE_ASSIGN_OR_RETURN(requested, node.attrs.require_ints("output_shape"));
    if (requested.size() == n + 2) requested.erase(requested.begin(), requested.begin() + 2);
    if (requested.size() != n) {
      return bad(node, "output_shape has " + std::to_string(requested.size()) + " values for " +
                           std::to_string(n) + " spatial axes");
    }
    for (int64_t v : requested) {
      if (v < 1 || v > max_attr_value) return bad(node, "output_shape value out of range");
    }
  } else if (mode == auto_pad_mode::same_upper || mode == auto_pad_mode::same_lower) {
    for (size_t i = 0; i < n; ++i) requested.push_back(x.shape[2 + i] * g.strides[i]);
  }

  if (!requested.empty()) {
    g.pads_begin.assign(n, 0);
    g.pads_end.assign(n, 0);
  } else if (mode == auto_pad_mode::notset) {
    TROUPE_ASSIGN_OR_RETURN(auto pads, explicit_pads(node, n));
    g.pads_begin = std::move(pads.first);
    g.pads_end = std::move(pads.second);
  } else {  // VALID
    g.pads_begin.assign(n, 0);
    g.pads_end.assign(n, 0);
  }

  g.output_shape = {x.shape[0], m};
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = x.shape[2 + i];
    const int64_t extent = (g.kernel[i] - 1) * g.dilations[i] + 1;
    const int64_t full = g.strides[i] * (in - 1) + g.output_padding[i] + extent;
    if (!requested.empty()) {
      const int64_t total = full - requested[i];
      // ONNX's rule; a negative total (output larger than the full result) gives a negative end.
      if (mode == auto_pad_mode::same_upper) {
        g.pads_begin[i] = total / 2;
        g.pads_end[i] = total - total / 2;
      } else {
        g.pads_begin[i] = total - total / 2;
        g.pads_end[i] = total / 2;
      }
      if (g.pads_begin[i] < 0) {
        g.pads_end[i] += g.pads_begin[i];
        g.pads_begin[i] = 0;
      }
    }
    const int64_t out = full - g.pads_begin[i] - g.pads_end[i];
    if (in < 1 || out < 1) {
      return bad(node, "output size along " + axis_str(i) + " is " + std::to_string(out));
    }
    g.output_shape.push_back(out);
  }
  return g;
}

int64_t pool_geometry::reach_end(size_t i) const {
  const int64_t in = input_shape[2 + i], out = output_shape[2 + i], s = strides[i];
  const int64_t extent = (kernel[i] - 1) * dilations[i] + 1;
  if (floor_div(in + pads_begin[i] + pads_end[i] - extent, s) + 1 == out) return pads_end[i];
  return (out - 1) * s + extent - in - pads_begin[i];
}

expected<pool_geometry> resolve_pool(const op_node& node, const tensor_info& x) {
  TROUPE_RETURN_IF_ERROR(check_spatial_input(node, x, "input X"));
  const size_t n = x.rank() - 2;
  pool_geometry g;
  TROUPE_ASSIGN_OR_RETURN(g.kernel, node.attrs.require_ints("kernel_shape"));
  if (g.kernel.size() != n) {
    return bad(node, "kernel_shape has " + std::to_string(g.kernel.size()) + " values for " +
                         std::to_string(n) + " spatial axes");
  }
  for (int64_t k : g.kernel) {
    if (k < 1 || k > max_attr_value) return bad(node, "kernel_shape value out of range");
  }
  TROUPE_ASSIGN_OR_RETURN(g.strides, spatial_ints(node, "strides", n, 1, 1));
  TROUPE_ASSIGN_OR_RETURN(g.dilations, spatial_ints(node, "dilations", n, 1, 1));
  g.ceil_mode = node.attrs.get_int("ceil_mode", 0) != 0;
  TROUPE_ASSIGN_OR_RETURN(auto mode, read_auto_pad(node));
  if (mode == auto_pad_mode::notset) {
    TROUPE_ASSIGN_OR_RETURN(auto pads, explicit_pads(node, n));
    g.pads_begin = std::move(pads.first);
    g.pads_end = std::move(pads.second);
  } else {
    g.pads_begin.assign(n, 0);
    g.pads_end.assign(n, 0);
  }
  g.input_shape = x.shape;
  g.output_shape = {x.shape[0], x.shape[1]};
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = x.shape[2 + i];
    const int64_t s = g.strides[i];
    const int64_t extent = (g.kernel[i] - 1) * g.dilations[i] + 1;
    int64_t out;
    if (mode == auto_pad_mode::same_upper || mode == auto_pad_mode::same_lower) {
      same_pads(mode, in, s, extent, &g.pads_begin[i], &g.pads_end[i]);
      out = ceil_div(in, s);
    } else {
      const int64_t span = in + g.pads_begin[i] + g.pads_end[i] - extent;
      if (span < 0) {
        return bad(node, "kernel extent " + std::to_string(extent) +
                             " exceeds the padded input along " + axis_str(i) + " (" +
                             x.to_string() + ")");
      }
      if (g.ceil_mode) {
        out = ceil_div(span, s) + 1;
        // A last window that would start in the end padding is dropped (ONNX reference, ORT,
        // PyTorch agree on this).
        if ((out - 1) * s >= in + g.pads_begin[i]) --out;
      } else {
        out = floor_div(span, s) + 1;
      }
    }
    if (out < 1)
      return bad(node, "output size along " + axis_str(i) + " is " + std::to_string(out));
    g.output_shape.push_back(out);
  }
  return g;
}

expected<matmul_geometry> resolve_matmul(const op_node& node, const tensor_info& a,
                                         const tensor_info& b) {
  if (!a.present() || !b.present()) return bad(node, "inputs A and B are required");
  if (a.rank() < 1 || b.rank() < 1) {
    return bad(node, "MatMul operands must have rank >= 1, got " + a.to_string() + " and " +
                         b.to_string());
  }
  matmul_geometry g;
  shape_t as = a.shape, bs = b.shape;
  const bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
  if (a_vec) as.insert(as.begin(), 1);
  if (b_vec) bs.push_back(1);
  g.m = as[as.size() - 2];
  g.k = as.back();
  g.n = bs.back();
  if (bs[bs.size() - 2] != g.k) {
    return bad(node, "inner dims differ: A " + a.to_string() + ", B " + b.to_string());
  }
  const shape_t ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const size_t r = std::max(ab.size(), bb.size());
  g.a_batch.assign(r - ab.size(), 1);
  g.a_batch.insert(g.a_batch.end(), ab.begin(), ab.end());
  g.b_batch.assign(r - bb.size(), 1);
  g.b_batch.insert(g.b_batch.end(), bb.begin(), bb.end());
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = g.a_batch[i], db = g.b_batch[i];
    if (da != db && da != 1 && db != 1) {
      return bad(node, "batch dims do not broadcast: A " + a.to_string() + ", B " + b.to_string());
    }
    g.batch.push_back(da == 1 ? db : da);
  }
  g.output_shape = g.batch;
  if (!a_vec) g.output_shape.push_back(g.m);
  if (!b_vec) g.output_shape.push_back(g.n);
  return g;
}

expected<gemm_geometry> resolve_gemm(const op_node& node, const tensor_info& a,
                                     const tensor_info& b, const tensor_info& c) {
  if (!a.present() || !b.present()) return bad(node, "inputs A and B are required");
  if (a.rank() != 2 || b.rank() != 2) {
    return bad(node, "A and B must be 2-D, got " + a.to_string() + " and " + b.to_string());
  }
  gemm_geometry g;
  g.trans_a = node.attrs.get_int("transA", 0) != 0;
  g.trans_b = node.attrs.get_int("transB", 0) != 0;
  g.alpha = node.attrs.get_float("alpha", 1.0f);
  g.beta = node.attrs.get_float("beta", 1.0f);
  g.m = g.trans_a ? a.shape[1] : a.shape[0];
  g.k = g.trans_a ? a.shape[0] : a.shape[1];
  const int64_t kb = g.trans_b ? b.shape[1] : b.shape[0];
  g.n = g.trans_b ? b.shape[0] : b.shape[1];
  if (kb != g.k) {
    return bad(node, "inner dims differ: A " + a.to_string() + (g.trans_a ? "^T" : "") + ", B " +
                         b.to_string() + (g.trans_b ? "^T" : ""));
  }
  if (c.present()) {
    if (c.rank() > 2) return bad(node, "C must have rank <= 2, got " + c.to_string());
    const int64_t cm = c.rank() == 2 ? c.shape[0] : 1;
    const int64_t cn = c.rank() >= 1 ? c.shape.back() : 1;
    if ((cm != 1 && cm != g.m) || (cn != 1 && cn != g.n)) {
      return bad(node, "C " + c.to_string() + " does not broadcast to (" + std::to_string(g.m) +
                           ", " + std::to_string(g.n) + ")");
    }
  }
  return g;
}

expected<activation_spec> resolve_activation(const op_node& node) {
  activation_spec a;
  const std::string name = node.attrs.get_string("activation", "");
  const std::vector<float> p = node.attrs.get_floats("activation_params");
  auto want = [&](size_t lo, size_t hi) -> status {
    if (p.size() < lo || p.size() > hi) {
      return bad(node, "activation '" + name + "' takes " + std::to_string(lo) + ".." +
                           std::to_string(hi) + " activation_params, got " +
                           std::to_string(p.size()));
    }
    return status::ok();
  };
  if (name.empty()) {
    a.kind = activation_kind::none;
  } else if (name == "Relu") {
    a.kind = activation_kind::relu;
  } else if (name == "Clip") {
    TROUPE_RETURN_IF_ERROR(want(0, 2));
    a.kind = activation_kind::clip;
    a.alpha = p.size() > 0 ? p[0] : -std::numeric_limits<float>::max();
    a.beta = p.size() > 1 ? p[1] : std::numeric_limits<float>::max();
  } else if (name == "LeakyRelu") {
    TROUPE_RETURN_IF_ERROR(want(0, 1));
    a.kind = activation_kind::leaky_relu;
    a.alpha = p.empty() ? 0.01f : p[0];
  } else if (name == "Sigmoid") {
    a.kind = activation_kind::sigmoid;
  } else if (name == "HardSigmoid") {
    TROUPE_RETURN_IF_ERROR(want(0, 2));
    a.kind = activation_kind::hard_sigmoid;
    a.alpha = p.size() > 0 ? p[0] : 0.2f;
    a.beta = p.size() > 1 ? p[1] : 0.5f;
  } else if (name == "HardSwish") {
    a.kind = activation_kind::hard_swish;
  } else if (name == "Tanh") {
    a.kind = activation_kind::tanh;
  } else if (name == "Gelu") {
    a.kind = activation_kind::gelu;
  } else {
    return unsupported(node.describe() + ": fused activation '" + name + "'");
  }
  return a;
}

float apply_activation(const activation_spec& act, float x) {
  switch (act.kind) {
    case activation_kind::none:
      return x;
    case activation_kind::relu:
      return x > 0 ? x : 0.0f;
    case activation_kind::clip:
      return std::min(std::max(x, act.alpha), act.beta);
    case activation_kind::leaky_relu:
      return x >= 0 ? x : act.alpha * x;
    case activation_kind::sigmoid:
      return 1.0f / (1.0f + std::exp(-x));
    case activation_kind::hard_sigmoid:
      return std::clamp(act.alpha * x + act.beta, 0.0f, 1.0f);
    case activation_kind::hard_swish:
      return x * std::clamp(x / 6.0f + 0.5f, 0.0f, 1.0f);
    case activation_kind::tanh:
      return std::tanh(x);
    case activation_kind::gelu:
      return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
  }
  return x;
}

}  // namespace troupe::kernels
