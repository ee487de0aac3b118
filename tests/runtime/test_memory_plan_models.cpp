// The memory planner on real models: the lifetime-packed arena never places two buffers that are
// alive at the same step over each other (every pair checked), is never larger than the former
// greedy-by-size packing, and never smaller than the bytes alive at the busiest step. Prints the
// planning figures of ResNet-50 at batch 128 (the GPU memory target's configuration).
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "runtime/device.hpp"
#include "runtime/memory_plan.hpp"
#include "runtime/passes.hpp"
#include "runtime/plan.hpp"
#include "runtime/precision.hpp"
#include "runtime/session.hpp"
#include "runtime/specialize.hpp"
#include "tests/runtime/layout_test_util.hpp"

namespace troupe::runtime {
namespace {

using testing::filled_model;

constexpr double kMiB = 1024.0 * 1024.0;

/// Every pair of buffers alive at one step is disjoint in the arena; every buffer fits in it.
void expect_no_live_overlap(const std::vector<buffer>& b, size_t arena, size_t alignment) {
  size_t violations = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const size_t end_i = b[i].offset + (b[i].bytes + alignment - 1) / alignment * alignment;
    EXPECT_LE(b[i].offset + b[i].bytes, arena) << "buffer " << i;
    EXPECT_EQ(b[i].offset % alignment, 0u) << "buffer " << i;
    for (size_t j = i + 1; j < b.size(); ++j) {
      const bool alive_together =
          b[i].first_step <= b[j].last_step && b[j].first_step <= b[i].last_step;
      if (!alive_together || b[i].bytes == 0 || b[j].bytes == 0) continue;
      const bool disjoint =
          b[i].offset + b[i].bytes <= b[j].offset || b[j].offset + b[j].bytes <= b[i].offset;
      if (!disjoint && ++violations <= 5) {
        ADD_FAILURE() << "buffers " << i << " [" << b[i].offset << ", " << end_i << ") steps "
                      << b[i].first_step << ".." << b[i].last_step << " and " << j << " at "
                      << b[j].offset << " steps " << b[j].first_step << ".." << b[j].last_step
                      << " overlap";
      }
    }
  }
  EXPECT_EQ(violations, 0u);
}

struct figures {
  size_t sum_of_tensor_bytes = 0;
  size_t arena_bytes = 0;
  size_t greedy_arena_bytes = 0;
  size_t peak_live_bytes = 0;
};

/// Checks a layout and returns its figures (the greedy arena re-packed from the same buffers).
figures check_layout(const memory_assignment& m, size_t alignment) {
  figures f;
  f.sum_of_tensor_bytes = m.sum_of_tensor_bytes;
  f.arena_bytes = m.arena_bytes;
  f.peak_live_bytes = m.peak_live_bytes;
  expect_no_live_overlap(m.buffers, m.arena_bytes, alignment);
  std::vector<buffer> greedy = m.buffers;
  f.greedy_arena_bytes = pack_buffers_greedy_by_size(greedy, alignment);
  expect_no_live_overlap(greedy, f.greedy_arena_bytes, alignment);
  EXPECT_LE(f.arena_bytes, f.greedy_arena_bytes) << "lifetime packing lost to greedy by size";
  EXPECT_GE(f.arena_bytes, f.peak_live_bytes)
      << "an arena below the live peak must overlap buffers";
  EXPECT_EQ(f.peak_live_bytes, peak_live_bytes(m.buffers, alignment));
  return f;
}

void print(const std::string& what, const figures& f) {
  std::printf(
      "%-44s sum %9.1f MiB  greedy %8.1f MiB  lifetime-packed %8.1f MiB  live peak %8.1f MiB\n",
      what.c_str(), f.sum_of_tensor_bytes / kMiB, f.greedy_arena_bytes / kMiB, f.arena_bytes / kMiB,
      f.peak_live_bytes / kMiB);
}

/// A real CPU plan (kernels decide views, in-place pairs and workspaces).
expected<figures> cpu_plan_figures(const std::string& model, const shape_t& input_shape) {
  const std::string bytes = filled_model(model);
  if (bytes.empty()) return status(error_code::not_found, model + ".onnx is not on disk");
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(bytes.data(), bytes.size(), ""));
  session_options o;
  TROUPE_ASSIGN_OR_RETURN(auto s, session::create_from_graph(std::move(g), o));
  const value& in = s->model_graph().values[s->model_graph().inputs[0]];
  TROUPE_ASSIGN_OR_RETURN(std::shared_ptr<plan> p, s->prepare({{in.type, input_shape}}));
  figures f = check_layout(p->layout(), p->target().alignment());
  EXPECT_EQ(f.arena_bytes, p->memory().planned_arena_bytes);
  return f;
}

TEST(memory_plan_models, cpu_plans_pack_no_worse_than_greedy_and_never_overlap) {
  int checked = 0;
  for (const char* model :
       {"resnet18", "resnet50", "mobilenet_v3_large", "densenet121", "googlenet"}) {
    SCOPED_TRACE(model);
    auto f = cpu_plan_figures(model, {2, 3, 224, 224});
    if (!f && f.error().code() == error_code::not_found) continue;
    ASSERT_TRUE(f) << f.error().to_string();
    print(std::string(model) + " b2 fp32 (CPU plan)", *f);
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no model files under tests/models";
}

// The former unit-level in-place rule on a real residual block: y = relu(conv(x) + x) fused into
// one FusedConv whose residual input dies there can write over it when the kernel says so.
TEST(memory_plan_models, declared_inplace_pair_reuses_the_residual_buffer) {
  // Steps as a plan of two convolutions and a fused residual: v0 input, v1 = conv(v0),
  // v2 = fused_conv(v1, z = v0) declaring (output 0, input 1) in place.
  std::vector<value_desc> values(3);
  for (auto& v : values) v.bytes = 4096;
  values[0].graph_input = 0;
  values[2].is_graph_output = true;
  std::vector<step_desc> steps(2);
  steps[0] = {{0}, {1}, false, {}, 512};
  steps[1] = {{1, 0}, {2}, false, {{0, 1}}, 512};
  const auto m = plan_memory_layout(steps, values, true, 256);
  EXPECT_EQ(m.values[2].id, m.values[0].id)
      << "the residual's buffer (dead after step 1) is reused";
  EXPECT_NE(m.values[1].id, m.values[0].id);
  check_layout(m, 256);
  // Without the pair the output needs a buffer of its own.
  steps[1].inplace.clear();
  const auto n = plan_memory_layout(steps, values, true, 256);
  EXPECT_NE(n.values[2].id, n.values[0].id);
  EXPECT_GT(n.peak_live_bytes, m.peak_live_bytes);
}

/// What the CUDA plan of a model looks like to the planner, without a GPU: the CUDA passes (fusion,
/// channels-last layout) on the fp16-converted graph, views and in-place pairs as the CUDA kernels
/// declare them (unary elementwise ops and same-shape binary ops in place over their first
/// input; FusedConv's residual Z in place when `conv_z_in_place`), kernel workspaces left out
/// (cuDNN picks them on the device).
struct modelled_cuda_plan {
  memory_assignment layout;
  size_t weight_bytes = 0;
  size_t input_bytes = 0;
  size_t largest_step_bytes = 0;  // inputs + outputs of the single hungriest step
  std::string largest_step;
};

expected<modelled_cuda_plan> model_cuda_plan(const std::string& model, const shape_t& input_shape,
                                             bool conv_z_in_place) {
  const std::string bytes = filled_model(model);
  if (bytes.empty()) return status(error_code::not_found, model + ".onnx is not on disk");
  TROUPE_ASSIGN_OR_RETURN(graph g, load_onnx_bytes(bytes.data(), bytes.size(), ""));
  TROUPE_RETURN_IF_ERROR(fold_batchnorm_into_conv(g).take_status());
  TROUPE_RETURN_IF_ERROR(convert_float_precision(g, dtype::f16).take_status());
  const value& in = g.values[g.inputs[0]];
  TROUPE_RETURN_IF_ERROR(specialize(g, {{in.type, input_shape}}));
  pass_options po;
  po.where = kernels::backend::cuda;
  TROUPE_RETURN_IF_ERROR(run_graph_passes(g, po));

  static const std::set<std::string> views{"Reshape", "Flatten", "Squeeze", "Unsqueeze",
                                           "Identity"};
  static const std::set<std::string> unary{"Relu",        "Sigmoid",   "Tanh",      "Gelu", "Erf",
                                           "Exp",         "Neg",       "Abs",       "Sqrt", "Clip",
                                           "HardSigmoid", "HardSwish", "LeakyRelu", "Elu"};
  static const std::set<std::string> binary{"Add", "Sub", "Mul", "Div"};
  modelled_cuda_plan r;
  std::vector<value_desc> vdesc(g.values.size());
  for (size_t v = 0; v < g.values.size(); ++v) {
    vdesc[v].bytes = g.values[v].info().bytes();
    vdesc[v].is_constant = g.values[v].constant.has_value();
    vdesc[v].is_graph_output = g.values[v].is_graph_output;
    if (g.values[v].constant) r.weight_bytes += g.values[v].constant->bytes();
  }
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    vdesc[g.inputs[i]].graph_input = static_cast<int>(i);
    r.input_bytes += vdesc[g.inputs[i]].bytes;
  }
  std::vector<step_desc> steps(g.nodes.size());
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const node& n = g.nodes[ni];
    step_desc& st = steps[ni];
    st.inputs = n.inputs;
    st.outputs = n.outputs;
    const std::string& op = n.op.op_type;
    const size_t out_bytes = n.outputs.empty() || n.outputs[0] < 0 ? 0 : vdesc[n.outputs[0]].bytes;
    if (n.op.domain.empty() && views.count(op)) st.is_view = true;
    if (n.op.domain.empty() && unary.count(op)) st.inplace = {{0, 0}};
    if (n.op.domain.empty() && binary.count(op)) {
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        if (n.inputs[k] >= 0 && !vdesc[n.inputs[k]].is_constant &&
            vdesc[n.inputs[k]].bytes == out_bytes) {
          st.inplace.emplace_back(0, static_cast<int>(k));
        }
      }
    }
    if (conv_z_in_place && n.op.domain == "troupe" && op == "FusedConv" && n.inputs.size() > 3 &&
        n.inputs[3] >= 0) {
      st.inplace = {{0, 3}};
    }
  }
  r.layout = plan_memory_layout(steps, vdesc, true, 256);
  // The hungriest step: the distinct arena buffers it reads and writes (in place pairs share one).
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    std::set<int> buffers;
    for (const auto* list : {&g.nodes[ni].inputs, &g.nodes[ni].outputs}) {
      for (int v : *list) {
        if (v >= 0 && r.layout.values[v].kind == storage_kind::arena)
          buffers.insert(r.layout.values[v].id);
      }
    }
    size_t step_bytes = 0;
    for (int b : buffers) step_bytes += r.layout.buffers[b].bytes;
    if (step_bytes > r.largest_step_bytes) {
      r.largest_step_bytes = step_bytes;
      r.largest_step = g.nodes[ni].op.describe();
    }
  }
  return r;
}

// ResNet-50 at batch 128 in fp16 as the CUDA backend plans it: the figures behind the GPU memory
// target (236 MiB for one instance) and the floor below which full-batch execution cannot go.
TEST(memory_plan_models, resnet50_b128_fp16_cuda_figures) {
#ifndef TROUPE_HAVE_CUDA
  GTEST_SKIP() << "the CUDA passes are not built here";
#else
  for (bool z_in_place : {false, true}) {
    auto r = model_cuda_plan("resnet50", {128, 3, 224, 224}, z_in_place);
    if (!r && r.error().code() == error_code::not_found) GTEST_SKIP() << r.error().to_string();
    ASSERT_TRUE(r) << r.error().to_string();
    const figures f = check_layout(r->layout, 256);
    print(std::string("resnet50 b128 fp16 (CUDA passes)") + (z_in_place ? ", Z in place" : ""), f);
    std::printf("  weights %.1f MiB, input %.1f MiB, hungriest step %.1f MiB (%s)\n",
                r->weight_bytes / kMiB, r->input_bytes / kMiB, r->largest_step_bytes / kMiB,
                r->largest_step.c_str());
    std::printf("  floor (weights + live peak, no workspace): %.1f MiB; target 236 MiB\n",
                (r->weight_bytes + f.peak_live_bytes) / kMiB);
    // The live peak can never be below the hungriest single step.
    EXPECT_GE(f.peak_live_bytes, r->largest_step_bytes);
  }
#endif
}

}  // namespace
}  // namespace troupe::runtime
