#include "runtime/plan.hpp"

#include <chrono>
#include <cstring>

#include "kernels/op_schema.hpp"

namespace troupe::runtime {

plan::~plan() {
  steps_.clear();  // kernels may hold device resources released before the arena
}

void* plan::storage_pointer(const value_storage& s) const {
  switch (s.kind) {
    case storage_kind::arena: return static_cast<char*>(arena_.get()) + layout_.buffers[s.id].offset;
    case storage_kind::constant: return const_cast<void*>(constant_pointers_[s.id]);
    default: return nullptr;
  }
}

expected<std::unique_ptr<plan>> plan::build(graph g, std::shared_ptr<device> dev,
                                            size_t max_arena_bytes) {
  std::unique_ptr<plan> p(new plan());
  p->device_ = std::move(dev);
  const bool on_host = p->device_->kind() == kernels::backend::cpu;
  const auto& registry = kernels::kernel_registry::standard();

  // Kernels first: they decide views, in-place pairs, workspaces and which constants they read.
  // Every unsupported node is reported at once, so a user sees the whole list.
  std::vector<std::unique_ptr<kernels::kernel>> kernels_by_node(g.nodes.size());
  std::string unsupported_list;
  status first_error;
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const node& n = g.nodes[ni];
    std::vector<tensor_info> in_infos(n.inputs.size()), out_infos(n.outputs.size());
    std::vector<const tensor*> in_values(n.inputs.size(), nullptr);
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (n.inputs[i] < 0) continue;
      const value& v = g.values[n.inputs[i]];
      in_infos[i] = v.info();
      if (v.constant) in_values[i] = &*v.constant;
    }
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      if (n.outputs[o] >= 0) out_infos[o] = g.values[n.outputs[o]].info();
    }
    kernels::kernel_create_context cc{n.op, in_infos, in_values, out_infos, p->device_->context()};
    auto k = registry.create(p->device_->kind(), cc);
    if (!k) {
      if (k.error().code() == error_code::unsupported) {
        if (!unsupported_list.empty()) unsupported_list += "; ";
        unsupported_list += k.error().message();
        continue;
      }
      if (first_error.is_ok()) first_error = k.error();
      continue;
    }
    kernels_by_node[ni] = std::move(*k);
  }
  if (!unsupported_list.empty()) return unsupported(unsupported_list);
  if (!first_error.is_ok()) return first_error;

  // Memory layout.
  std::vector<value_desc> vdesc(g.values.size());
  for (size_t v = 0; v < g.values.size(); ++v) {
    vdesc[v].bytes = g.values[v].info().bytes();
    vdesc[v].is_constant = g.values[v].constant.has_value();
    vdesc[v].is_graph_output = g.values[v].is_graph_output;
  }
  for (size_t i = 0; i < g.inputs.size(); ++i) vdesc[g.inputs[i]].graph_input = static_cast<int>(i);
  std::vector<step_desc> sdesc(g.nodes.size());
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const auto& k = kernels_by_node[ni];
    sdesc[ni].inputs = g.nodes[ni].inputs;
    sdesc[ni].outputs = g.nodes[ni].outputs;
    sdesc[ni].is_view = k->is_view();
    sdesc[ni].inplace = k->inplace_pairs();
    sdesc[ni].workspace_bytes = k->workspace_bytes();
  }
  p->layout_ = plan_memory_layout(sdesc, vdesc, !on_host, p->device_->alignment());
  // Invariant: every value a step reads has storage (a pass that drops a producer breaks it).
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    for (int v : g.nodes[ni].inputs) {
      if (v >= 0 && p->layout_.values[v].kind == storage_kind::none) {
        return internal_error(g.nodes[ni].op.describe() + " reads '" + g.values[v].name +
                              "', which nothing produces in the optimised graph");
      }
    }
  }
  if (max_arena_bytes > 0 && p->layout_.arena_bytes > max_arena_bytes)
    return status(error_code::out_of_memory,
                  "the plan's arena of " + std::to_string(p->layout_.arena_bytes) +
                      " bytes exceeds the " + std::to_string(max_arena_bytes) +
                      " bytes its model may take (the worker's memory budget)");
  if (p->layout_.arena_bytes > 0) {
    TROUPE_ASSIGN_OR_RETURN(void* arena, p->device_->allocate_arena(p->layout_.arena_bytes));
    p->arena_ = device_buffer(p->device_, arena);
  }

  // Constants: used in place on the host; copied once to a device, except those no kernel reads.
  p->constant_pointers_.assign(g.values.size(), nullptr);
  std::vector<char> constant_read(g.values.size(), 0);
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    for (size_t i = 0; i < g.nodes[ni].inputs.size(); ++i) {
      const int v = g.nodes[ni].inputs[i];
      if (v >= 0 && g.values[v].constant && kernels_by_node[ni]->reads_constant_input(static_cast<int>(i))) {
        constant_read[v] = 1;
      }
    }
  }
  for (int out : g.outputs) constant_read[out] |= g.values[out].constant.has_value();
  size_t constant_bytes = 0;
  for (size_t v = 0; v < g.values.size(); ++v) {
    if (!g.values[v].constant) continue;
    tensor& c = *g.values[v].constant;
    if (on_host) {
      p->constant_pointers_[v] = c.raw();
      if (constant_read[v]) constant_bytes += c.bytes();
    } else if (constant_read[v]) {
      // From the device's shared store: a constant another plan (batch bucket) or a sibling
      // instance already uploaded is not uploaded again.
      TROUPE_ASSIGN_OR_RETURN(std::shared_ptr<const void> d, p->device_->share_constant(c));
      p->constant_pointers_[v] = d.get();
      p->constant_handles_.push_back(std::move(d));
      constant_bytes += c.bytes();
    }
  }

  // Steps with their tensors bound to arena, constant or (re-pointed per run) input storage.
  const kernels::backend where = p->device_->kind();
  const device_kind tensor_device = where == kernels::backend::cpu ? device_kind::cpu : device_kind::cuda;
  auto bind = [&](int v) {
    if (v < 0) return tensor();
    const value_storage& s = p->layout_.values[v];
    return tensor::borrow(g.values[v].type, g.values[v].shape, p->storage_pointer(s), tensor_device);
  };
  size_t max_workspace = 0;
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    if (kernels_by_node[ni]->is_view()) continue;
    step st;
    st.k = std::move(kernels_by_node[ni]);
    st.node_index = ni;
    for (int v : g.nodes[ni].inputs) st.inputs.push_back(bind(v));
    for (int v : g.nodes[ni].outputs) st.outputs.push_back(bind(v));
    const int wb = p->layout_.workspace_buffer[ni];
    if (wb >= 0) {
      st.workspace = static_cast<char*>(p->arena_.get()) + p->layout_.buffers[wb].offset;
      max_workspace = std::max(max_workspace, p->layout_.buffers[wb].bytes);
    }
    p->steps_.push_back(std::move(st));
  }
  // Input bindings are recorded after steps_ stops growing, so the tensor pointers stay valid.
  size_t si = 0;
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    if (sdesc[ni].is_view) continue;
    step& st = p->steps_[si++];
    for (size_t i = 0; i < g.nodes[ni].inputs.size(); ++i) {
      const int v = g.nodes[ni].inputs[i];
      if (v >= 0 && p->layout_.values[v].kind == storage_kind::graph_input) {
        p->input_bindings_.push_back({&st.inputs[i], p->layout_.values[v].id});
      }
    }
  }
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    const int v = g.inputs[i];
    p->input_infos_.push_back(g.values[v].info());
    if (p->layout_.values[v].kind == storage_kind::arena) {
      p->input_uploads_.emplace_back(p->layout_.buffers[p->layout_.values[v].id].offset, static_cast<int>(i));
    }
  }
  for (int v : g.outputs) {
    p->output_infos_.push_back(g.values[v].info());
    output_source src{p->layout_.values[v], nullptr};
    src.base = p->storage_pointer(src.storage);
    if (src.storage.kind == storage_kind::constant && !on_host) src.base = g.values[v].constant->raw();
    p->outputs_.push_back(src);
  }

  p->memory_.planned_arena_bytes = p->layout_.arena_bytes;
  p->memory_.sum_of_tensor_bytes = p->layout_.sum_of_tensor_bytes;
  p->memory_.peak_live_bytes = p->layout_.peak_live_bytes;
  p->memory_.constant_bytes = constant_bytes;
  p->memory_.workspace_bytes = max_workspace;
  // Kernel factories may have timed candidates on temporary device buffers: the pool keeps what
  // it once reserved (no release between runs), so give those pages back now, once.
  TROUPE_RETURN_IF_ERROR(p->device_->release_unused());

  // Launch mode: a recorded graph where the device records work and every kernel can be recorded.
  if (p->device_->supports_recording()) {
    p->mode_ = launch_mode::graph_pending;
    for (const auto& st : p->steps_) {
      if (!st.k->capturable()) {
        p->mode_ = launch_mode::eager;
        p->eager_reason_ =
            g.nodes[st.node_index].op.describe() + " cannot be recorded into a CUDA graph";
        break;
      }
    }
  } else if (!on_host) {
    p->eager_reason_ = "CUDA graphs are off (TROUPE_CUDA_GRAPHS=0)";
  }
  p->graph_ = std::move(g);
  return p;
}

size_t plan::graph_node_count() const {
  return recorded_ ? recorded_->node_count() : 0;
}

status plan::run_steps_eagerly(bool capturing) {
  void* stream = device_->stream();
  for (auto& st : steps_) {
    kernels::kernel_run_context rc{st.inputs, st.outputs, st.workspace, stream, capturing};
    status s = st.k->compute(rc);
    if (!s.is_ok()) return s;
  }
  return status::ok();
}

namespace {

/// A run asked for while the weights are away (device::evict_constants): on a GPU they are not
/// mapped, and a kernel reading them would fault the whole context.
/// The weights or the arenas are away (a worker's memory budget evicted them): not runnable.
status evicted(const device& d) {
  if (!d.constants_resident())
    return make_error(error_code::unavailable,
                      "the model's weights are evicted to host memory: page them in before running");
  if (!d.arenas_resident())
    return make_error(error_code::unavailable,
                      "the model's activation arenas are evicted: restore them before running");
  return status::ok();
}

}  // namespace

status plan::run_steps() {
  // Callers check evicted() first (run before it copies any input, execute here).
  switch (mode_) {
    case launch_mode::graph:
      return recorded_->launch();
    case launch_mode::eager:
      return run_steps_eagerly(false);
    case launch_mode::graph_pending:
      break;
  }
  // The first run is eager: kernels that initialise on their first compute do so outside the
  // capture. The second run captures and replays.
  if (first_run_done_) {
    auto g = device_->capture([this](void*) { return run_steps_eagerly(true); });
    if (g) {
      recorded_ = std::move(*g);
      mode_ = launch_mode::graph;
      return recorded_->launch();
    }
    // Not capturable after all (a kernel synchronised or read the host): stay eager, say why.
    mode_ = launch_mode::eager;
    eager_reason_ = g.error().message();
    return run_steps_eagerly(false);
  }
  first_run_done_ = true;
  return run_steps_eagerly(false);
}

expected<std::vector<plan::step_time>> plan::profile(int runs, std::span<const tensor> inputs) {
  std::vector<step_time> times(steps_.size());
  for (size_t i = 0; i < steps_.size(); ++i) {
    const node& n = graph_.nodes[steps_[i].node_index];
    times[i].op = n.op.op_type;
    if (!n.outputs.empty() && n.outputs[0] >= 0) {
      const value& v = graph_.values[n.outputs[0]];
      times[i].output = v.name;
      times[i].shape = shape_to_string(v.shape);
    }
  }
  void* stream = device_->stream();
  TROUPE_RETURN_IF_ERROR(evicted(*device_));
  TROUPE_RETURN_IF_ERROR(device_->synchronize());
  for (int r = 0; r < runs; ++r) {
    TROUPE_RETURN_IF_ERROR(bind_inputs(inputs));
    for (size_t i = 0; i < steps_.size(); ++i) {
      step& st = steps_[i];
      const auto start = std::chrono::steady_clock::now();
      kernels::kernel_run_context rc{st.inputs, st.outputs, st.workspace, stream, false};
      TROUPE_RETURN_IF_ERROR(st.k->compute(rc));
      TROUPE_RETURN_IF_ERROR(device_->synchronize());
      times[i].total_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    }
  }
  return times;
}

status plan::execute() {
  TROUPE_RETURN_IF_ERROR(evicted(*device_));
  TROUPE_RETURN_IF_ERROR(run_steps());
  return device_->synchronize();
}

status plan::check_inputs(std::span<const tensor> inputs) const {
  if (inputs.size() != input_infos_.size()) {
    return invalid_argument("plan run: expected " + std::to_string(input_infos_.size()) + " inputs, got " +
                            std::to_string(inputs.size()));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].info() != input_infos_[i]) {
      return invalid_argument("plan run: input " + std::to_string(i) + " is " + inputs[i].info().to_string() +
                              ", the plan was built for " + input_infos_[i].to_string());
    }
  }
  return status::ok();
}

status plan::place_inputs(std::span<const tensor> inputs) {
  for (const auto& b : input_bindings_) b.target->rebind(const_cast<void*>(inputs[b.input_index].raw()));
  for (const auto& [offset, i] : input_uploads_) {
    TROUPE_RETURN_IF_ERROR(device_->upload(static_cast<char*>(arena_.get()) + offset, inputs[i].raw(), inputs[i].bytes()));
  }
  return status::ok();
}

status plan::bind_inputs(std::span<const tensor> inputs) {
  TROUPE_RETURN_IF_ERROR(check_inputs(inputs));
  TROUPE_RETURN_IF_ERROR(evicted(*device_));
  TROUPE_RETURN_IF_ERROR(place_inputs(inputs));
  return device_->synchronize();
}

status plan::run(std::span<const tensor> inputs, std::span<tensor> outputs) {
  TROUPE_RETURN_IF_ERROR(check_inputs(inputs));
  if (outputs.size() != output_infos_.size()) {
    return invalid_argument("plan run: expected " + std::to_string(output_infos_.size()) + " outputs, got " +
                            std::to_string(outputs.size()));
  }
  for (size_t o = 0; o < outputs.size(); ++o) {
    if (outputs[o].info() != output_infos_[o]) {
      return invalid_argument("plan run: output " + std::to_string(o) + " buffer is " + outputs[o].info().to_string() +
                              ", the plan produces " + output_infos_[o].to_string());
    }
  }
  const bool on_host = device_->kind() == kernels::backend::cpu;
  // Before any input is copied into the arena: a copy to discarded arena addresses would fault.
  TROUPE_RETURN_IF_ERROR(evicted(*device_));
  TROUPE_RETURN_IF_ERROR(place_inputs(inputs));
  TROUPE_RETURN_IF_ERROR(run_steps());
  for (size_t o = 0; o < outputs.size(); ++o) {
    const output_source& src = outputs_[o];
    const size_t bytes = output_infos_[o].bytes();
    if (bytes == 0) continue;
    if (src.storage.kind == storage_kind::graph_input) {
      std::memcpy(outputs[o].raw(), inputs[src.storage.id].raw(), bytes);
    } else if (src.storage.kind == storage_kind::constant && !on_host) {
      std::memcpy(outputs[o].raw(), src.base, bytes);  // host copy of the constant
    } else {
      TROUPE_RETURN_IF_ERROR(device_->download(outputs[o].raw(), src.base, bytes));
    }
  }
  return device_->synchronize();
}

}  // namespace troupe::runtime
