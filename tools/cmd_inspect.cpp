// `troupe inspect`: what a model declares, which of its ops troupe runs, and what a plan for given
// shapes would take in memory. Works on models troupe cannot run: the plan part is then skipped.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tools/commands.hpp"

namespace troupe::tools {
namespace {

std::string human_bytes(uint64_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes >= (uint64_t{1} << 30)) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / (1 << 30));
  } else if (bytes >= (uint64_t{1} << 20)) {
    std::snprintf(buf, sizeof(buf), "%.2f MiB", b / (1 << 20));
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof(buf), "%.2f KiB", b / 1024);
  } else {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  }
  return buf;
}

std::string op_key(const std::string& domain, const std::string& op_type) {
  return domain.empty() || domain == "ai.onnx" ? op_type : domain + "." + op_type;
}

/// Parses "1x3x224x224" (or "" for a scalar); every dim a non-negative integer.
expected<shape_t> parse_dims(const std::string& text) {
  shape_t dims;
  if (text.empty() || text == "scalar") return dims;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find_first_of("x,", pos), text.size());
    const std::string part = text.substr(pos, end - pos);
    if (part.empty() || part.size() > 15 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return invalid_argument("--shape: '" + text + "' is not a list of sizes like 1x3x224x224");
    dims.push_back(std::stoll(part));
    pos = end + 1;
  }
  return dims;
}

struct shape_overrides {
  std::map<std::string, shape_t> by_input;
  std::map<std::string, int64_t> by_symbol;
};

expected<shape_overrides> parse_overrides(const std::vector<std::string>& args,
                                          const runtime::graph& g) {
  std::set<std::string> input_names;
  for (int id : g.inputs) input_names.insert(g.values[static_cast<size_t>(id)].name);
  shape_overrides o;
  for (const std::string& arg : args) {
    const size_t eq = arg.rfind('=');
    if (eq == std::string::npos || eq == 0)
      return invalid_argument("--shape '" + arg + "': expected name=1x3x224x224 or symbol=8");
    const std::string name = arg.substr(0, eq);
    TROUPE_ASSIGN_OR_RETURN(shape_t dims, parse_dims(arg.substr(eq + 1)));
    if (input_names.count(name)) {
      o.by_input[name] = std::move(dims);
    } else if (dims.size() == 1) {
      o.by_symbol[name] = dims[0];
    } else {
      return invalid_argument("--shape '" + arg + "': '" + name +
                              "' is neither a graph input nor a single symbolic size");
    }
  }
  return o;
}

/// Concrete input infos for the plan: overrides first, then declared sizes, symbols = 1.
expected<std::vector<tensor_info>> plan_inputs(const runtime::session& s,
                                               const shape_overrides& o) {
  std::vector<tensor_info> infos;
  for (const auto& in : s.inputs()) {
    tensor_info info{in.type, {}};
    if (auto it = o.by_input.find(in.name); it != o.by_input.end()) {
      info.shape = it->second;
    } else {
      for (const auto& d : in.shape) {
        if (d.is_static()) {
          info.shape.push_back(d.size);
        } else if (auto sym = o.by_symbol.find(d.symbol);
                   !d.symbol.empty() && sym != o.by_symbol.end()) {
          info.shape.push_back(sym->second);
        } else {
          info.shape.push_back(1);
        }
      }
    }
    infos.push_back(std::move(info));
  }
  return infos;
}

struct unsupported_op {
  std::string reason;
  std::vector<std::string> nodes;
};

/// Ops with no schema, no kernel on `where`, or a node opset outside the schema's range.
std::map<std::string, unsupported_op> find_unsupported(const runtime::graph& g,
                                                       kernels::backend where) {
  const auto& schemas = kernels::schema_registry::standard();
  const auto& kernels = kernels::kernel_registry::standard();
  std::map<std::string, unsupported_op> out;
  for (const auto& n : g.nodes) {
    const auto& op = n.op;
    std::string reason;
    const kernels::op_schema* schema = schemas.find(op.domain, op.op_type);
    const bool has_kernel = kernels.has_op(where, op.domain, op.op_type);
    if (!schema && !has_kernel) {
      reason = "no schema, no " + std::string(kernels::backend_name(where)) + " kernel";
    } else if (!schema) {
      reason = "no schema";
    } else if (!has_kernel) {
      reason = "no " + std::string(kernels::backend_name(where)) + " kernel";
    } else if (op.opset < schema->min_opset || op.opset > schema->max_opset) {
      reason = "opset " + std::to_string(op.opset) + " outside " +
               std::to_string(schema->min_opset) + "-" + std::to_string(schema->max_opset);
    } else {
      continue;
    }
    auto& entry = out[op_key(op.domain, op.op_type)];
    if (entry.reason.empty()) entry.reason = reason;
    entry.nodes.push_back(op.name);
  }
  return out;
}

void print_io(std::FILE* out, const char* title, const runtime::graph& g,
              const std::vector<int>& ids) {
  std::fprintf(out, "%s (%zu):\n", title, ids.size());
  for (int id : ids) {
    const auto& v = g.values[static_cast<size_t>(id)];
    const std::string shape = v.declared_shape
                                  ? runtime::symbolic_shape_to_string(*v.declared_shape)
                                  : "(shape not declared)";
    std::fprintf(out, "  %-32s %-9s %s\n", v.name.c_str(), std::string(dtype_name(v.type)).c_str(),
                 shape.c_str());
  }
}

void print_plan(std::FILE* out, const runtime::graph& g, const inspect_options& o,
                kernels::backend where) {
  std::fprintf(out, "plan:\n");
  auto overrides = parse_overrides(o.shapes, g);
  if (!overrides) {
    std::fprintf(out, "  not compiled: %s\n", overrides.error().to_string().c_str());
    return;
  }
  runtime::session_options options;
  options.where = where;
  auto session = runtime::session::create_from_graph(g, options);
  if (!session) {
    std::fprintf(out, "  not compiled: %s\n", session.error().to_string().c_str());
    return;
  }
  auto infos = plan_inputs(**session, *overrides);
  if (!infos) {
    std::fprintf(out, "  not compiled: %s\n", infos.error().to_string().c_str());
    return;
  }
  std::string shapes;
  for (size_t i = 0; i < infos->size(); ++i) {
    if (i) shapes += ", ";
    shapes += (*session)->inputs()[i].name + "=" + shape_to_string((*infos)[i].shape);
  }
  std::fprintf(out, "  input shapes:        %s\n", shapes.empty() ? "(none)" : shapes.c_str());
  const auto start = std::chrono::steady_clock::now();
  auto plan = (*session)->prepare(*infos);
  const double compile_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!plan) {
    std::fprintf(out, "  not compiled: %s\n", plan.error().to_string().c_str());
    return;
  }
  const runtime::plan_memory& m = (*plan)->memory();
  std::fprintf(out, "  compile time:        %.1f ms\n", compile_ms);
  std::fprintf(out, "  planned arena:       %s (%zu bytes, workspace %s included)\n",
               human_bytes(m.planned_arena_bytes).c_str(), m.planned_arena_bytes,
               human_bytes(m.workspace_bytes).c_str());
  std::fprintf(out, "  sum of tensor bytes: %s (%zu bytes)",
               human_bytes(m.sum_of_tensor_bytes).c_str(), m.sum_of_tensor_bytes);
  if (m.planned_arena_bytes > 0)
    std::fprintf(
        out, ", %.2fx the arena",
        static_cast<double>(m.sum_of_tensor_bytes) / static_cast<double>(m.planned_arena_bytes));
  std::fprintf(out, "\n  constants:           %s (%zu bytes, weights and folded values)\n",
               human_bytes(m.constant_bytes).c_str(), m.constant_bytes);
}

status inspect_impl(const inspect_options& o, std::FILE* out) {
  TROUPE_ASSIGN_OR_RETURN(kernels::backend where, runtime::parse_backend(o.backend));
  TROUPE_ASSIGN_OR_RETURN(runtime::graph g, runtime::load_onnx_file(o.model_path));

  std::fprintf(out, "model:     %s\n", o.model_path.c_str());
  if (!g.name.empty()) std::fprintf(out, "graph:     %s\n", g.name.c_str());
  if (!g.producer.empty()) std::fprintf(out, "producer:  %s\n", g.producer.c_str());
  std::string opsets;
  for (const auto& [domain, version] : g.opsets) {
    if (!opsets.empty()) opsets += ", ";
    opsets += (domain.empty() ? std::string("ai.onnx") : domain) + " " + std::to_string(version);
  }
  std::fprintf(out, "opsets:    %s\n", opsets.c_str());

  size_t initializer_count = 0;
  uint64_t initializer_bytes = 0;
  for (const auto& v : g.values) {
    if (v.producer < 0 && !v.is_graph_input && v.constant) {
      ++initializer_count;
      initializer_bytes += v.constant->bytes();
    }
  }
  std::fprintf(out, "nodes:     %zu\n", g.nodes.size());
  std::fprintf(out, "weights:   %zu initializers, %s\n", initializer_count,
               human_bytes(initializer_bytes).c_str());
  print_io(out, "inputs", g, g.inputs);
  print_io(out, "outputs", g, g.outputs);

  std::map<std::string, size_t> histogram;
  for (const auto& n : g.nodes) ++histogram[op_key(n.op.domain, n.op.op_type)];
  std::vector<std::pair<std::string, size_t>> ops(histogram.begin(), histogram.end());
  std::stable_sort(ops.begin(), ops.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::fprintf(out, "ops (%zu types):\n", ops.size());
  for (const auto& [op, count] : ops) std::fprintf(out, "  %-32s %zu\n", op.c_str(), count);

  const auto missing = find_unsupported(g, where);
  if (missing.empty()) {
    std::fprintf(out, "unsupported ops on %s: none\n",
                 std::string(kernels::backend_name(where)).c_str());
    print_plan(out, g, o, where);
  } else {
    std::fprintf(out, "unsupported ops on %s (%zu):\n",
                 std::string(kernels::backend_name(where)).c_str(), missing.size());
    for (const auto& [op, info] : missing) {
      std::string nodes;
      for (size_t i = 0; i < info.nodes.size() && i < 5; ++i) {
        if (i) nodes += ", ";
        nodes += "'" + info.nodes[i] + "'";
      }
      if (info.nodes.size() > 5) nodes += ", ... (" + std::to_string(info.nodes.size()) + " nodes)";
      std::fprintf(out, "  %-32s %s: %s\n", op.c_str(), info.reason.c_str(), nodes.c_str());
    }
    std::fprintf(out, "plan:\n  not compiled: the model has ops troupe cannot run on %s\n",
                 std::string(kernels::backend_name(where)).c_str());
  }
  return status::ok();
}

}  // namespace

int inspect_model(const inspect_options& options, std::FILE* out) {
  const status s = inspect_impl(options, out);
  return s.is_ok() ? exit_ok : report_error(s);
}

void add_inspect_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<inspect_options>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "Show a model's inputs, outputs, opsets, ops, unsupported ops and planned memory.");
  cmd->add_option("model", o->model_path, "The model (.onnx)")->required();
  cmd->add_option("--shape,-s", o->shapes,
                  "Input shape for the plan, name=1x3x224x224; or symbol=8 to size a symbolic "
                  "dimension everywhere. Repeatable. Other symbolic dimensions are 1");
  cmd->add_option("--backend", o->backend, "Backend whose kernels are checked: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->footer(
      "The plan part compiles the model for the given shapes and reports the planned arena (one\n"
      "buffer for every intermediate tensor and kernel workspace) against the sum of the tensors'\n"
      "sizes, and the bytes held by constants. It is skipped when an op is unsupported.\n\n"
      "Example:\n"
      "  troupe inspect bert.onnx --shape input_ids=4x128 --shape attention_mask=4x128");
  cmd->callback([o, &exit_code] { exit_code = inspect_model(*o); });
}

}  // namespace troupe::tools
