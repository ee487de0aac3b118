#include "kernels/cpu/dnnl_common.hpp"

#include <cstdlib>
#include <cstring>

namespace troupe::kernels::cpu::dnnl_util {

using dnnl::memory;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

memory::dims to_dims(const shape_t& shape) {
  if (shape.empty()) return {1};
  return memory::dims(shape.begin(), shape.end());
}

memory::desc plain_desc(const shape_t& shape) {
  const memory::dims d = to_dims(shape);
  memory::dims strides(d.size(), 1);
  for (size_t i = d.size(); i-- > 1;) strides[i - 1] = strides[i] * std::max<int64_t>(d[i], 1);
  return memory::desc(d, memory::data_type::f32, strides);
}

memory::desc strided_desc(const shape_t& shape, const shape_t& strides) {
  return memory::desc(to_dims(shape), memory::data_type::f32,
                      memory::dims(strides.begin(), strides.end()));
}

status from_dnnl_error(const dnnl::error& e, const op_node& node, const std::string& what) {
  const bool unsupported_shape =
      e.status == dnnl_unimplemented || e.status == dnnl_invalid_arguments;
  return status(unsupported_shape ? error_code::unsupported : error_code::internal,
                node.describe() + ": oneDNN " + what + ": " + e.what());
}

void append_activation(dnnl::post_ops& ops, const activation_spec& act) {
  using dnnl::algorithm;
  switch (act.kind) {
    case activation_kind::none:
      break;
    case activation_kind::relu:
      ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
      break;
    case activation_kind::leaky_relu:
      ops.append_eltwise(1.0f, algorithm::eltwise_relu, act.alpha, 0.0f);
      break;
    case activation_kind::clip:
      ops.append_eltwise(1.0f, algorithm::eltwise_clip, act.alpha, act.beta);
      break;
    case activation_kind::sigmoid:
      ops.append_eltwise(1.0f, algorithm::eltwise_logistic, 0.0f, 0.0f);
      break;
    case activation_kind::hard_sigmoid:
      ops.append_eltwise(1.0f, algorithm::eltwise_linear, act.alpha, act.beta);
      ops.append_eltwise(1.0f, algorithm::eltwise_clip, 0.0f, 1.0f);
      break;
    case activation_kind::hard_swish:
      ops.append_eltwise(1.0f, algorithm::eltwise_hardswish, 0.0f, 0.0f);
      break;
    case activation_kind::tanh:
      ops.append_eltwise(1.0f, algorithm::eltwise_tanh, 0.0f, 0.0f);
      break;
    case activation_kind::gelu:
      ops.append_eltwise(1.0f, algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
      break;
  }
}

std::string conv_layout_override() {
  const char* v = std::getenv("TROUPE_DNNL_CONV_LAYOUT");
  return v ? std::string(v) : std::string();
}

// ---- dnnl_program ------------------------------------------------------------------------------

dnnl_program::dnnl_program() = default;

size_t dnnl_program::reserve(size_t bytes) {
  const size_t offset = buffers_bytes_;
  buffers_bytes_ += (bytes + 63) / 64 * 64;
  return offset;
}

memory dnnl_program::bind_input(int index, const memory::desc& md) {
  memory m(md, cpu_engine(), DNNL_MEMORY_NONE);
  bindings_.push_back({m, source::input, index, 0});
  return m;
}

memory dnnl_program::bind_output(int index, const memory::desc& md) {
  memory m(md, cpu_engine(), DNNL_MEMORY_NONE);
  bindings_.push_back({m, source::output, index, 0});
  return m;
}

memory dnnl_program::workspace_buffer(const memory::desc& md) {
  memory m(md, cpu_engine(), DNNL_MEMORY_NONE);
  bindings_.push_back({m, source::workspace, 0, reserve(md.get_size())});
  return m;
}

expected<memory> dnnl_program::pack_constant(const tensor& value, const memory::desc& value_md,
                                             const memory::desc& md) {
  memory packed(md, cpu_engine());  // oneDNN-owned, lives as long as the program
  memory user(value_md, cpu_engine(), const_cast<void*>(value.raw()));
  dnnl::reorder(user, packed).execute(cpu_stream(), user, packed);
  cpu_stream().wait();
  constants_.push_back(packed);
  return packed;
}

void dnnl_program::add_step(const dnnl::primitive& p, std::vector<std::pair<int, memory>> args,
                            const memory::desc& scratchpad, bool skip_if_aliased) {
  step s{p, {}, skip_if_aliased};
  for (auto& [arg, mem] : args) s.args.push_back({arg, mem.get()});
  const size_t scratch = scratchpad.get_size();
  if (scratch > 0) {
    memory m(scratchpad, cpu_engine(), DNNL_MEMORY_NONE);
    bindings_.push_back({m, source::scratchpad, 0, 0});
    s.args.push_back({DNNL_ARG_SCRATCHPAD, m.get()});
    scratchpad_bytes_ = std::max(scratchpad_bytes_, scratch);
  }
  // The memories stay alive through bindings_ / constants_; keep any others (none expected) too.
  for (auto& [arg, mem] : args) {
    bool known = false;
    for (const auto& b : bindings_) known |= b.mem.get() == mem.get();
    for (const auto& c : constants_) known |= c.get() == mem.get();
    if (!known) constants_.push_back(mem);
  }
  steps_.push_back(std::move(s));
}

void dnnl_program::add_reorder(const memory& from, const memory& to, bool skip_if_aliased) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::reorder::primitive_desc pd(cpu_engine(), from.get_desc(), cpu_engine(), to.get_desc(),
                                   attr);
  add_step(dnnl::reorder(pd), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}, pd.scratchpad_desc(),
           skip_if_aliased);
}

bool dnnl_program::binds_input(int index) const {
  for (const auto& b : bindings_) {
    if (b.from == source::input && b.index == index) return true;
  }
  return false;
}

size_t dnnl_program::workspace_bytes() const {
  const size_t total = buffers_bytes_ + scratchpad_bytes_;
  return total == 0 ? 0 : total + 64;
}

status dnnl_program::run(const kernel_run_context& ctx, const std::string& where) const {
  uint8_t* ws = align_workspace(ctx.workspace);
  for (const auto& b : bindings_) {
    void* p = nullptr;
    switch (b.from) {
      case source::input:
        p = const_cast<void*>(ctx.inputs[static_cast<size_t>(b.index)].raw());
        break;
      case source::output:
        p = ctx.outputs[static_cast<size_t>(b.index)].raw();
        break;
      case source::workspace:
        p = ws + b.offset;
        break;
      case source::scratchpad:
        p = ws + buffers_bytes_;
        break;
    }
    if (p == b.current) continue;
    if (dnnl_memory_set_data_handle_v2(b.mem.get(), p, nullptr) != dnnl_success) {
      return internal_error(where + ": oneDNN set_data_handle failed");
    }
    b.current = p;
  }
  dnnl::stream& s = cpu_stream();
  for (const auto& st : steps_) {
    if (st.skip_if_aliased) {
      void* from = nullptr;
      void* to = nullptr;
      for (const auto& a : st.args) {
        if (a.arg == DNNL_ARG_FROM) dnnl_memory_get_data_handle(a.memory, &from);
        if (a.arg == DNNL_ARG_TO) dnnl_memory_get_data_handle(a.memory, &to);
      }
      if (from == to) continue;
    }
    const dnnl_status_t rc = dnnl_primitive_execute(
        st.prim.get(), s.get(), static_cast<int>(st.args.size()), st.args.data());
    if (rc != dnnl_success) {
      return internal_error(where + ": " + "oneDNN primitive execution failed (status " +
                            std::to_string(rc) + ")");
    }
  }
  if (dnnl_stream_wait(s.get()) != dnnl_success) {
    return internal_error(where + ": oneDNN stream wait failed");
  }
  return status::ok();
}

}  // namespace troupe::kernels::cpu::dnnl_util
