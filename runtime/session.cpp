#include "runtime/session.hpp"

#include "runtime/onnx_loader.hpp"
#include "runtime/passes.hpp"
#include "runtime/plan.hpp"
#include "runtime/precision.hpp"
#include "runtime/specialize.hpp"

namespace troupe::runtime {

std::string_view precision_name(precision p) {
  switch (p) {
    case precision::fp32: return "fp32";
    case precision::fp16: return "fp16";
    case precision::bf16: return "bf16";
    case precision::tf32: return "tf32";
  }
  return "?";
}

expected<precision> parse_precision(std::string_view s) {
  if (s == "fp32") return precision::fp32;
  if (s == "fp16") return precision::fp16;
  if (s == "bf16") return precision::bf16;
  if (s == "tf32") return precision::tf32;
  return invalid_argument("unknown precision '" + std::string(s) + "' (fp32, fp16, bf16, tf32)");
}

expected<kernels::backend> parse_backend(std::string_view s) {
  if (s == "cpu") return kernels::backend::cpu;
  if (s == "cuda") return kernels::backend::cuda;
  return invalid_argument("unknown backend '" + std::string(s) + "' (cpu, cuda)");
}

session::session(graph g, session_options options) : graph_(std::move(g)), options_(options) {}
session::~session() = default;

expected<std::unique_ptr<session>> session::create(const std::string& model_path, session_options options) {
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_file(model_path));
  return create_from_graph(std::move(g), options);
}

expected<std::unique_ptr<session>> session::create_from_graph(graph g, session_options options) {
  std::unique_ptr<session> s(new session(std::move(g), options));
  TROUPE_RETURN_IF_ERROR(s->init());
  return s;
}

status session::init() {
  if (options_.where == kernels::backend::cpu && options_.compute_precision != precision::fp32) {
    return unsupported("the CPU backend runs fp32 only (asked for " + std::string(precision_name(options_.compute_precision)) + ")");
  }
  TROUPE_ASSIGN_OR_RETURN(device_, make_device(options_.where, options_.device_index));
  // Callers keep seeing the model's own input/output types: the boundary casts live inside.
  for (int v : graph_.inputs) {
    const value& x = graph_.values[v];
    inputs_.push_back({x.name, x.type, x.declared_shape.value_or(symbolic_shape{})});
  }
  for (int v : graph_.outputs) {
    const value& x = graph_.values[v];
    outputs_.push_back({x.name, x.type, x.declared_shape.value_or(symbolic_shape{})});
  }
  if (options_.enable_fusion) {
    // BatchNormalization folds into the convolution's weights in float32, before any precision
    // conversion rounds the weights and the statistics separately (the other fusions run per plan).
    TROUPE_RETURN_IF_ERROR(fold_batchnorm_into_conv(graph_).take_status());
  }
  if (options_.compute_precision == precision::fp16 || options_.compute_precision == precision::bf16) {
    const dtype to = options_.compute_precision == precision::fp16 ? dtype::f16 : dtype::bf16;
    TROUPE_RETURN_IF_ERROR(convert_float_precision(graph_, to).take_status());
  }
  return status::ok();
}

expected<plan*> session::prepare(const std::vector<tensor_info>& input_infos) {
  std::string key;
  for (const auto& i : input_infos) key += i.to_string() + ";";
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  graph g = graph_;  // shares the constants' bytes
  TROUPE_RETURN_IF_ERROR(specialize(g, input_infos));
  pass_options po;
  po.where = options_.where;
  po.enable_fusion = options_.enable_fusion;
  TROUPE_RETURN_IF_ERROR(run_graph_passes(g, po));
  TROUPE_ASSIGN_OR_RETURN(auto p, plan::build(std::move(g), device_));
  plan* raw = p.get();
  plans_.emplace(std::move(key), std::move(p));
  return raw;
}

size_t session::device_reserved_bytes() const { return device_->reserved_bytes(); }

expected<std::vector<tensor>> session::order_inputs(const std::map<std::string, tensor>& named) const {
  std::vector<tensor> ordered;
  ordered.reserve(inputs_.size());
  for (const auto& in : inputs_) {
    auto it = named.find(in.name);
    if (it == named.end()) return invalid_argument("input '" + in.name + "' is missing");
    ordered.push_back(it->second);
  }
  for (const auto& [name, t] : named) {
    bool known = false;
    for (const auto& in : inputs_) known |= in.name == name;
    if (!known) {
      std::string names;
      for (const auto& in : inputs_) names += (names.empty() ? "" : ", ") + in.name;
      return invalid_argument("the model has no input '" + name + "' (inputs: " + names + ")");
    }
  }
  return ordered;
}

expected<std::vector<tensor>> session::run(const std::map<std::string, tensor>& named_inputs) {
  TROUPE_ASSIGN_OR_RETURN(auto ordered, order_inputs(named_inputs));
  return run(ordered);
}

expected<std::vector<tensor>> session::run(const std::vector<tensor>& ordered_inputs) {
  if (ordered_inputs.size() != inputs_.size()) {
    return invalid_argument("the model takes " + std::to_string(inputs_.size()) + " inputs, got " +
                            std::to_string(ordered_inputs.size()));
  }
  std::vector<tensor_info> infos;
  for (size_t i = 0; i < ordered_inputs.size(); ++i) {
    const tensor& t = ordered_inputs[i];
    if (t.device() != device_kind::cpu) return invalid_argument("input '" + inputs_[i].name + "' must be in host memory");
    TROUPE_RETURN_IF_ERROR(check_input(graph_.values[graph_.inputs[i]], t.info()));
    infos.push_back(t.info());
  }
  TROUPE_ASSIGN_OR_RETURN(plan * p, prepare(infos));
  std::vector<tensor> outputs;
  for (const auto& oi : p->output_infos()) outputs.push_back(tensor::allocate(oi.type, oi.shape));
  std::lock_guard<std::mutex> lock(mutex_);
  TROUPE_RETURN_IF_ERROR(p->run(ordered_inputs, outputs));
  return outputs;
}

}  // namespace troupe::runtime
