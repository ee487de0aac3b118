#include <algorithm>
#include <mutex>

#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"

namespace troupe::kernels {

std::string_view backend_name(backend b) { return b == backend::cpu ? "cpu" : "cuda"; }

// ---- schemas ---------------------------------------------------------------------------------

status infer_context::needs_constant(size_t i) const {
  return fail(error_code::unsupported,
              "input " + std::to_string(i) +
                  " must be known when the plan is built (a constant or computed from shapes)");
}

const schema_registry& schema_registry::standard() {
  static const schema_registry r = [] {
    schema_registry s;
    register_elementwise_schemas(s);
    register_nn_schemas(s);
    register_tensor_schemas(s);
    register_reduction_schemas(s);
    register_fused_schemas(s);
    register_attention_schemas(s);
    return s;
  }();
  return r;
}

void schema_registry::add(op_schema schema) {
  std::string key = schema.domain + ":" + schema.op_type;
  by_key_[key] = std::move(schema);
}

const op_schema* schema_registry::find(std::string_view domain, std::string_view op_type) const {
  std::string key;
  key.reserve(domain.size() + op_type.size() + 1);
  key.append(domain == "ai.onnx" ? std::string_view() : domain).append(":").append(op_type);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : &it->second;
}

std::vector<const op_schema*> schema_registry::all() const {
  std::vector<const op_schema*> v;
  for (const auto& [k, s] : by_key_) v.push_back(&s);
  std::sort(v.begin(), v.end(), [](auto* a, auto* b) {
    return std::tie(a->domain, a->op_type) < std::tie(b->domain, b->op_type);
  });
  return v;
}

expected<shape_t> broadcast_shapes(const shape_t& a, const shape_t& b) {
  const size_t rank = std::max(a.size(), b.size());
  shape_t out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db || db == 1) {
      out[i] = da;
    } else if (da == 1) {
      out[i] = db;
    } else {
      return invalid_argument("shapes " + shape_to_string(a) + " and " + shape_to_string(b) +
                              " do not broadcast");
    }
  }
  return out;
}

expected<shape_t> broadcast_all(std::span<const tensor_info> inputs) {
  shape_t out;
  bool first = true;
  for (const auto& in : inputs) {
    if (!in.present()) continue;
    if (first) {
      out = in.shape;
      first = false;
      continue;
    }
    TROUPE_ASSIGN_OR_RETURN(out, broadcast_shapes(out, in.shape));
  }
  return out;
}

expected<int64_t> normalize_axis(int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) {
    return invalid_model("axis " + std::to_string(axis) + " is out of range for rank " +
                         std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

// ---- kernels ---------------------------------------------------------------------------------

const kernel_registry& kernel_registry::standard() {
  static const kernel_registry r = [] {
    kernel_registry k;
    register_cpu_kernels(k);
#ifdef TROUPE_HAVE_CUDA
    register_cuda_kernels(k);
#endif
    return k;
  }();
  return r;
}

void kernel_registry::add(kernel_def def) {
  if (def.domain == "ai.onnx") def.domain.clear();
  defs_.push_back(std::move(def));
}

const kernel_def* kernel_registry::match(backend where, const kernel_create_context& ctx,
                                         status* why) const {
  const std::string_view domain =
      ctx.node.domain == "ai.onnx" ? std::string_view() : std::string_view(ctx.node.domain);
  bool op_known = false;
  status last;
  for (const auto& d : defs_) {
    if (d.where != where || d.op_type != ctx.node.op_type || d.domain != domain) continue;
    op_known = true;
    if (!d.types.empty()) {
      const size_t ti = static_cast<size_t>(d.type_input);
      const dtype t = ti < ctx.inputs.size() ? ctx.inputs[ti].type : dtype::undefined;
      if (std::find(d.types.begin(), d.types.end(), t) == d.types.end()) {
        last = ctx.fail(error_code::unsupported,
                        "dtype " + std::string(dtype_name(t)) + " of input " + std::to_string(ti) +
                            " is not supported on the " + std::string(backend_name(where)) +
                            " backend");
        continue;
      }
    }
    if (d.supports) {
      status s = d.supports(ctx);
      if (!s.is_ok()) {
        last = s;
        continue;
      }
    }
    return &d;
  }
  if (why) {
    *why = op_known ? last
                    : ctx.fail(error_code::unsupported, "no " + std::string(backend_name(where)) +
                                                            " kernel for this op");
  }
  return nullptr;
}

status kernel_registry::supports(backend where, const kernel_create_context& ctx) const {
  status why;
  return match(where, ctx, &why) ? status::ok() : why;
}

expected<std::unique_ptr<kernel>> kernel_registry::create(backend where,
                                                          const kernel_create_context& ctx) const {
  status why;
  const kernel_def* d = match(where, ctx, &why);
  if (!d) return why;
  return d->create(ctx);
}

std::vector<std::pair<std::string, std::string>> kernel_registry::ops(backend where) const {
  std::vector<std::pair<std::string, std::string>> v;
  for (const auto& d : defs_) {
    if (d.where == where) v.emplace_back(d.domain, d.op_type);
  }
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

bool kernel_registry::has_op(backend where, std::string_view domain, std::string_view op) const {
  if (domain == "ai.onnx") domain = "";
  for (const auto& d : defs_) {
    if (d.where == where && d.op_type == op && d.domain == domain) return true;
  }
  return false;
}

bool kernel_registry::has_op_for(backend where, std::string_view domain, std::string_view op, dtype type) const {
  if (domain == "ai.onnx") domain = "";
  for (const auto& d : defs_) {
    if (d.where != where || d.op_type != op || d.domain != domain) continue;
    if (d.types.empty() || std::find(d.types.begin(), d.types.end(), type) != d.types.end()) return true;
  }
  return false;
}

}  // namespace troupe::kernels
