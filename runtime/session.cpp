#include "runtime/session.hpp"

#include <algorithm>
#include <cstring>

#include "runtime/backend_coverage.hpp"
#include "runtime/device.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/passes.hpp"
#include "runtime/plan.hpp"
#include "runtime/precision.hpp"
#include "runtime/specialize.hpp"

namespace troupe::runtime {

std::string_view precision_name(precision p) {
  switch (p) {
    case precision::fp32:
      return "fp32";
    case precision::fp16:
      return "fp16";
    case precision::bf16:
      return "bf16";
    case precision::tf32:
      return "tf32";
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

session::session(graph g, session_options options)
    : graph_(std::move(g)), options_(options), plans_(options_.shape_cache) {}
session::~session() = default;

expected<std::unique_ptr<session>> session::create(const std::string& model_path,
                                                   session_options options) {
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_file(model_path));
  return create_from_graph(std::move(g), options);
}

expected<std::unique_ptr<session>> session::create_from_graph(graph g, session_options options) {
  std::unique_ptr<session> s(new session(std::move(g), options));
  TROUPE_RETURN_IF_ERROR(s->init());
  return s;
}

status session::init() {
  if (options_.shape_cache.max_plans == 0 || options_.shape_cache.max_bytes == 0) {
    return invalid_argument("the compiled-shape cache needs max_plans and max_bytes above 0");
  }
  if (options_.where == kernels::backend::cpu && options_.compute_precision != precision::fp32) {
    return unsupported("the CPU backend runs fp32 only (asked for " +
                       std::string(precision_name(options_.compute_precision)) + ")");
  }
  // Before the precision pass: it keeps the integer input as it is and converts the chain.
  TROUPE_RETURN_IF_ERROR(apply_input_normalizations(graph_, options_.input_normalizations));
  device_options dopt;
  dopt.evictable_constants = options_.evictable_weights;
  dopt.evictable_arenas = options_.evictable_arenas;
  TROUPE_ASSIGN_OR_RETURN(device_, make_device(options_.where, options_.device_index, dopt));
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
  if (options_.compute_precision == precision::fp16 ||
      options_.compute_precision == precision::bf16) {
    const dtype to = options_.compute_precision == precision::fp16 ? dtype::f16 : dtype::bf16;
    TROUPE_RETURN_IF_ERROR(convert_float_precision(graph_, to).take_status());
  }
  // A node no plan could run fails the session now, not every request later: plans compile
  // lazily (per input shapes), so without this a model with such an op would load and serve
  // errors.
  TROUPE_RETURN_IF_ERROR(check_backend_coverage(graph_, options_.where));
  return check_batch_buckets();
}

status session::check_batch_buckets() {
  if (options_.batch_buckets.empty()) return status::ok();
  std::string symbol;
  auto leads_with_batch = [&](const io_desc& d) -> status {
    if (d.shape.empty() || d.shape[0].is_static() || d.shape[0].symbol.empty()) {
      return invalid_argument(
          "batch buckets need every input and output to lead with one symbolic batch "
          "dimension; '" +
          d.name + "' is " + symbolic_shape_to_string(d.shape));
    }
    if (symbol.empty()) symbol = d.shape[0].symbol;
    if (d.shape[0].symbol != symbol) {
      return invalid_argument("batch buckets need one batch symbol: '" + d.name + "' leads with '" +
                              d.shape[0].symbol + "', another with '" + symbol + "'");
    }
    return status::ok();
  };
  for (const auto& d : inputs_) TROUPE_RETURN_IF_ERROR(leads_with_batch(d));
  for (const auto& d : outputs_) TROUPE_RETURN_IF_ERROR(leads_with_batch(d));
  for (int64_t b : options_.batch_buckets) {
    if (b <= 0) return invalid_argument("batch bucket " + std::to_string(b) + " is not positive");
  }
  buckets_ = options_.batch_buckets;
  std::sort(buckets_.begin(), buckets_.end());
  buckets_.erase(std::unique(buckets_.begin(), buckets_.end()), buckets_.end());
  return status::ok();
}

expected<std::unique_ptr<session>> session::create_instance() const {
  // graph_ is already prepared (BatchNormalization folded, precision converted); the copy shares
  // its constants' host bytes, which is what the device's constant store keys the weights by.
  std::unique_ptr<session> s(new session(graph_, options_));
  TROUPE_ASSIGN_OR_RETURN(s->device_, device_->create_sibling());
  s->inputs_ = inputs_;
  s->outputs_ = outputs_;
  s->buckets_ = buckets_;
  return s;
}

bool session::shares_weights_with(const session& other) const {
  return device_->shares_constants_with(*other.device_);
}

const void* session::weights_identity() const {
  return device_->constants_identity();
}

expected<size_t> session::evict_weights() {
  // Under the lock: no run of this session (and no compile) is in the middle of reading them.
  // Instances have their own locks: the caller keeps their runs apart (the worker's residency).
  std::lock_guard<std::mutex> lock(mutex_);
  return device_->evict_constants();
}

expected<size_t> session::page_in_weights() {
  std::lock_guard<std::mutex> lock(mutex_);
  return device_->page_in_constants();
}

bool session::weights_resident() const {
  return device_->constants_resident();
}

expected<size_t> session::discard_arenas() {
  std::lock_guard<std::mutex> lock(mutex_);  // no run or compile of this instance meanwhile
  return device_->discard_arenas();
}

expected<size_t> session::restore_arenas() {
  std::lock_guard<std::mutex> lock(mutex_);
  return device_->restore_arenas();
}

bool session::arenas_resident() const {
  return device_->arenas_resident();
}

int64_t session::bucket_for(int64_t rows) const {
  if (rows <= 0) return rows;
  auto it = std::lower_bound(buckets_.begin(), buckets_.end(), rows);
  return it == buckets_.end() ? rows : *it;
}

status session::warm_up() {
  if (buckets_.empty())
    return invalid_argument("warm_up needs batch buckets (session_options::batch_buckets)");
  // Largest first: a convolution keeps the configuration (the weights' form) the first batch
  // size that timed it chose (kernels/cuda/conv_ops.cpp), and that should be the batch size
  // throughput depends on.
  for (auto it = buckets_.rbegin(); it != buckets_.rend(); ++it) {
    const int64_t bucket = *it;
    std::vector<tensor> zeros;
    for (const auto& in : inputs_) {
      shape_t shape{bucket};
      for (size_t d = 1; d < in.shape.size(); ++d) {
        if (!in.shape[d].is_static()) {
          return unsupported("warm_up: input '" + in.name + "' dim " + std::to_string(d) + " is '" +
                             in.shape[d].to_string() +
                             "', not fixed: its plans compile at first use");
        }
        shape.push_back(in.shape[d].size);
      }
      zeros.push_back(tensor::zeros(in.type, shape));
    }
    // Two runs: the first initialises the kernels eagerly, the second captures the CUDA graph.
    for (int i = 0; i < 2; ++i) {
      TROUPE_RETURN_IF_ERROR(run_exact(zeros).take_status().with_context(
          "warm-up of batch bucket " + std::to_string(bucket)));
    }
  }
  return status::ok();
}

std::string session::plan_key(const std::vector<tensor_info>& input_infos) {
  std::string key;
  for (const auto& i : input_infos) key += i.to_string() + ";";
  return key;
}

expected<std::shared_ptr<plan>> session::prepare(const std::vector<tensor_info>& input_infos) {
  std::string key = plan_key(input_infos);
  // Compiled under the lock: two callers asking for one new shape compile it once.
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto cached = plans_.find(key)) return cached;
  // Kernel factories read weights (a convolution times its candidates on them): not while away.
  if (!device_->constants_resident())
    return make_error(error_code::unavailable,
                      "the model's weights are evicted to host memory: page them in before "
                      "compiling a plan");
  if (!device_->arenas_resident())
    return make_error(error_code::unavailable,
                      "the model's activation arenas are evicted: restore them before compiling "
                      "a plan");
  graph g = graph_;  // shares the constants' bytes
  TROUPE_RETURN_IF_ERROR(specialize(g, input_infos));
  pass_options po;
  po.where = options_.where;
  po.enable_fusion = options_.enable_fusion;
  TROUPE_RETURN_IF_ERROR(run_graph_passes(g, po));
  TROUPE_ASSIGN_OR_RETURN(auto p, plan::build(std::move(g), device_, options_.max_arena_bytes));
  return plans_.insert(std::move(key), std::move(p));
}

std::shared_ptr<plan> session::cached_plan(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  return plans_.find(key);
}

bool session::caches_plan(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plans_.contains(key);
}

shape_cache_stats session::shape_cache() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return plans_.stats();
}

size_t session::device_reserved_bytes() const {
  const device_memory_stats d = device_->memory_stats();
  return d.reserved_bytes + d.shared_constant_reserved_bytes;
}

instance_memory session::memory_report() const {
  instance_memory m;
  const device_memory_stats d = device_->memory_stats();
  m.own_reserved_bytes = d.reserved_bytes;
  m.own_in_use_bytes = d.in_use_bytes;
  m.own_peak_bytes = d.peak_bytes;
  m.fragmentation_bytes = d.fragmentation_bytes;
  m.weights_reserved_bytes = d.shared_constant_reserved_bytes;
  m.device_reserved_bytes = d.reserved_bytes + d.shared_constant_reserved_bytes;
  if (device_->kind() == kernels::backend::cpu) {
    for (const auto& v : graph_.values) {
      if (v.constant) m.weights_bytes += v.constant->bytes();
    }
    m.weights_footprint_bytes = m.weights_bytes;
  } else {
    m.weights_bytes = d.shared_constant_bytes;
    m.weights_footprint_bytes = d.shared_constant_footprint_bytes;
  }
  m.weights_host_bytes = d.shared_constant_host_bytes;
  m.weights_resident = d.constants_resident;
  m.arena_footprint_bytes = d.arena_footprint_bytes;
  m.arena_reserved_bytes = d.arena_reserved_bytes;
  m.arenas_resident = d.arenas_resident;
  std::lock_guard<std::mutex> lock(mutex_);
  plans_.for_each([&m](const plan& p) {
    m.arena_bytes += p.memory().planned_arena_bytes;
    m.workspace_bytes = std::max(m.workspace_bytes, p.memory().workspace_bytes);
    ++m.plans;
    m.graph_plans += p.mode() == plan::launch_mode::graph ? 1 : 0;
  });
  m.kernel_owned_bytes =
      m.own_in_use_bytes > m.arena_bytes ? m.own_in_use_bytes - m.arena_bytes : 0;
  return m;
}

expected<std::vector<tensor>> session::order_inputs(
    const std::map<std::string, tensor>& named) const {
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
  if (buckets_.empty() || ordered_inputs.size() != inputs_.size()) return run_exact(ordered_inputs);
  // Batch buckets: every input leads with the batch (checked at create), all of one size.
  for (size_t i = 0; i < ordered_inputs.size(); ++i) {
    if (ordered_inputs[i].rank() == 0)
      return run_exact(ordered_inputs);  // run_exact names the error
    if (ordered_inputs[i].dim(0) != ordered_inputs[0].dim(0)) {
      return invalid_argument("input '" + inputs_[i].name + "' has " +
                              std::to_string(ordered_inputs[i].dim(0)) + " rows, input '" +
                              inputs_[0].name + "' " + std::to_string(ordered_inputs[0].dim(0)) +
                              ": they share the batch dimension");
    }
  }
  const int64_t rows = ordered_inputs[0].dim(0);
  const int64_t bucket = bucket_for(rows);
  if (bucket == rows) return run_exact(ordered_inputs);
  // Zero rows after the caller's: finite values through every op, discarded below.
  std::vector<tensor> padded;
  padded.reserve(ordered_inputs.size());
  for (const tensor& t : ordered_inputs) {
    if (t.device() != device_kind::cpu)
      return run_exact(ordered_inputs);  // run_exact names the error
    shape_t shape = t.shape();
    shape[0] = bucket;
    tensor p = tensor::zeros(t.type(), shape);
    if (t.bytes() > 0) std::memcpy(p.raw(), t.raw(), t.bytes());
    padded.push_back(std::move(p));
  }
  TROUPE_ASSIGN_OR_RETURN(std::vector<tensor> full, run_exact(padded));
  std::vector<tensor> outputs;
  outputs.reserve(full.size());
  for (size_t o = 0; o < full.size(); ++o) {
    const tensor& f = full[o];
    if (f.rank() == 0 || f.dim(0) != bucket) {
      return internal_error("output '" + outputs_[o].name + "' is " + f.info().to_string() +
                            " for a batch of " + std::to_string(bucket) +
                            ": the model declares it batch-leading");
    }
    shape_t shape = f.shape();
    shape[0] = rows;
    tensor out = tensor::allocate(f.type(), shape);
    if (out.bytes() > 0) std::memcpy(out.raw(), f.raw(), out.bytes());
    outputs.push_back(std::move(out));
  }
  return outputs;
}

expected<std::vector<tensor>> session::run_exact(const std::vector<tensor>& ordered_inputs) {
  if (ordered_inputs.size() != inputs_.size()) {
    return invalid_argument("the model takes " + std::to_string(inputs_.size()) + " inputs, got " +
                            std::to_string(ordered_inputs.size()));
  }
  std::vector<tensor_info> infos;
  for (size_t i = 0; i < ordered_inputs.size(); ++i) {
    const tensor& t = ordered_inputs[i];
    if (t.device() != device_kind::cpu)
      return invalid_argument("input '" + inputs_[i].name + "' must be in host memory");
    TROUPE_RETURN_IF_ERROR(check_input(graph_.values[graph_.inputs[i]], t.info()));
    infos.push_back(t.info());
  }
  // The lease keeps the plan from being evicted (by another caller's new shape) until the run
  // has finished with it.
  TROUPE_ASSIGN_OR_RETURN(std::shared_ptr<plan> p, prepare(infos));
  std::vector<tensor> outputs;
  for (const auto& oi : p->output_infos()) outputs.push_back(tensor::allocate(oi.type, oi.shape));
  std::lock_guard<std::mutex> lock(mutex_);
  const status ran = p->run(ordered_inputs, outputs);
  // Runs of other threads may have kept plans over the bounds (in use at their insert): this
  // run's plan is no longer in use, and the cache is brought within its bounds again.
  p.reset();
  plans_.trim();
  TROUPE_RETURN_IF_ERROR(ran);
  return outputs;
}

}  // namespace troupe::runtime
