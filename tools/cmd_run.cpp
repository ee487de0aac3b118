// `troupe run`: one model, inputs from an .npz, outputs to an .npz, latency over repeated runs.

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "runtime/tuning_records_file.hpp"
#include "tools/commands.hpp"
#include "tools/npz.hpp"

namespace troupe::tools {
namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

/// Views of the rows [first, first + rows) of each tensor (batch-major: the rows are contiguous).
std::vector<tensor> row_views(const std::vector<tensor>& full, int64_t first, int64_t rows) {
  std::vector<tensor> out;
  out.reserve(full.size());
  for (const tensor& t : full) {
    shape_t shape = t.shape();
    const size_t row_bytes = t.bytes() / static_cast<size_t>(std::max<int64_t>(shape[0], 1));
    shape[0] = rows;
    out.push_back(tensor::borrow(t.type(), std::move(shape),
                                 static_cast<std::byte*>(const_cast<void*>(t.raw())) +
                                     static_cast<size_t>(first) * row_bytes));
  }
  return out;
}

/// "  top5: 281:0.9120 282:0.0513 …" over the first row of a float output of rank <= 2 (the
/// whole vector for rank 1, the value for rank 0); empty for other outputs.
std::string top5_of_first_row(const tensor& t) {
  if (!is_floating(t.type()) || t.rank() > 2 || t.elements() == 0) return {};
  const int64_t row = t.rank() == 0 ? 1 : t.dim(t.rank() - 1);
  std::vector<std::pair<double, int64_t>> values;
  values.reserve(static_cast<size_t>(row));
  for (int64_t i = 0; i < row; ++i) {
    const double v = t.value_as_double(i);
    values.emplace_back(std::isnan(v) ? -INFINITY : v, i);
  }
  const size_t k = std::min<size_t>(5, values.size());
  std::partial_sort(values.begin(), values.begin() + static_cast<ptrdiff_t>(k), values.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : a.second < b.second;
                    });
  std::string s = "  top" + std::to_string(k) + ":";
  char buf[64];
  for (size_t i = 0; i < k; ++i) {
    std::snprintf(buf, sizeof(buf), " %lld:%.6g", static_cast<long long>(values[i].second),
                  t.value_as_double(values[i].second));
    s += buf;
  }
  return s;
}

status write_latency_json(const std::string& path, const latency_summary& l, double compile_ms,
                          const runtime::session& session, const runtime::plan& plan) {
  const runtime::instance_memory m = session.memory_report();
  const runtime::plan_memory& pm = plan.memory();
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return io_error("cannot create '" + path + "'");
  // device_reserved_bytes: what this one instance holds on the device (its own pool plus the
  // shared weights' pool), the figure compared with PyTorch's memory_reserved().
  const int n = std::fprintf(
      f,
      "{\"median_ms\": %.6f, \"mean_ms\": %.6f, \"min_ms\": %.6f, \"max_ms\": %.6f, "
      "\"runs\": %zu, \"compile_ms\": %.6f, \"device_reserved_bytes\": %zu, "
      "\"weights_bytes\": %zu, \"weights_reserved_bytes\": %zu, \"arena_bytes\": %zu, "
      "\"workspace_bytes\": %zu, \"kernel_owned_bytes\": %zu, \"own_reserved_bytes\": %zu, "
      "\"fragmentation_bytes\": %zu, \"planned_arena_bytes\": %zu, \"sum_of_tensor_bytes\": %zu, "
      "\"peak_live_bytes\": %zu, \"cuda_graph\": %s}\n",
      l.median_ms, l.mean_ms, l.min_ms, l.max_ms, l.runs, compile_ms, m.device_reserved_bytes,
      m.weights_bytes, m.weights_reserved_bytes, m.arena_bytes, m.workspace_bytes,
      m.kernel_owned_bytes, m.own_reserved_bytes, m.fragmentation_bytes, pm.planned_arena_bytes,
      pm.sum_of_tensor_bytes, pm.peak_live_bytes,
      plan.mode() == runtime::plan::launch_mode::graph ? "true" : "false");
  if (std::fclose(f) != 0 || n < 0) return io_error("cannot write '" + path + "'");
  return status::ok();
}

/// "memory: ..." and "launch: ..." lines: the instance's device memory by kind and how the
/// timed plan runs.
void print_memory(const runtime::session& session, const runtime::plan& plan) {
  const runtime::instance_memory m = session.memory_report();
  const runtime::plan_memory& pm = plan.memory();
  constexpr double mib = 1024.0 * 1024.0;
  std::printf(
      "memory_mib: device_reserved=%.1f weights=%.1f (pool %.1f) arena=%.1f (planned %.1f, live "
      "peak %.1f, "
      "sum of tensors %.1f) workspace=%.1f kernel_owned=%.1f own_pool=%.1f fragmentation=%.1f\n",
      m.device_reserved_bytes / mib, m.weights_bytes / mib, m.weights_reserved_bytes / mib,
      m.arena_bytes / mib, pm.planned_arena_bytes / mib, pm.peak_live_bytes / mib,
      pm.sum_of_tensor_bytes / mib, m.workspace_bytes / mib, m.kernel_owned_bytes / mib,
      m.own_reserved_bytes / mib, m.fragmentation_bytes / mib);
  switch (plan.mode()) {
    case runtime::plan::launch_mode::graph:
      std::printf("launch: CUDA graph (%zu nodes)\n", plan.graph_node_count());
      break;
    case runtime::plan::launch_mode::graph_pending:
      std::printf("launch: eager (the CUDA graph is captured on the second run)\n");
      break;
    case runtime::plan::launch_mode::eager:
      std::printf("launch: eager%s%s\n", plan.eager_reason().empty() ? "" : ": ",
                  plan.eager_reason().c_str());
      break;
  }
}

/// Per-step device time (each step followed by a synchronisation): totals by op type, then the
/// slowest steps. The timed latency above is unaffected (profiling runs after it).
status print_profile(runtime::plan& p, int runs, const std::vector<tensor>& inputs) {
  TROUPE_ASSIGN_OR_RETURN(auto times, p.profile(runs, inputs));
  double total_ms = 0;
  std::map<std::string, std::pair<double, int>> by_op;
  for (const auto& t : times) {
    total_ms += t.total_ms / runs;
    auto& e = by_op[t.op];
    e.first += t.total_ms / runs;
    e.second += 1;
  }
  std::vector<std::pair<double, std::string>> ops;
  for (const auto& [op, e] : by_op) ops.emplace_back(e.first, op);
  std::sort(ops.rbegin(), ops.rend());
  std::printf("profile: %zu steps, %.4f ms per run with a sync after each step (%d runs)\n", times.size(), total_ms, runs);
  for (const auto& [ms, op] : ops) {
    std::printf("  op %-28s %5d steps %10.4f ms %5.1f%%\n", op.c_str(), by_op[op].second, ms, 100 * ms / total_ms);
  }
  std::vector<size_t> order(times.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return times[a].total_ms > times[b].total_ms; });
  for (size_t i = 0; i < std::min<size_t>(40, order.size()); ++i) {
    const auto& t = times[order[i]];
    std::printf("  step %4zu %-24s %9.4f ms  %s %s\n", order[i], t.op.c_str(), t.total_ms / runs, t.output.c_str(), t.shape.c_str());
  }
  return status::ok();
}

status run_model_impl(const run_options& o, const std::vector<std::string>& normalize_specs) {
  if (o.repeat < 1) return invalid_argument("--repeat must be at least 1");
  if (o.warmup < 0) return invalid_argument("--warmup must not be negative");
  if (o.threads < 0) return invalid_argument("--threads must not be negative");
  if (o.threads > 0) omp_set_num_threads(o.threads);

  runtime::session_options options;
  TROUPE_ASSIGN_OR_RETURN(options.where, runtime::parse_backend(o.backend));
  TROUPE_ASSIGN_OR_RETURN(options.compute_precision, runtime::parse_precision(o.precision));
  for (const std::string& spec : normalize_specs) {
    TROUPE_ASSIGN_OR_RETURN(runtime::input_normalization n,
                            runtime::parse_input_normalization(spec));
    options.input_normalizations.push_back(std::move(n));
  }

  std::map<std::string, tensor> named_inputs;
  if (!o.inputs_path.empty()) {
    TROUPE_ASSIGN_OR_RETURN(named_tensors arrays, read_npz(o.inputs_path));
    for (auto& [name, t] : arrays) named_inputs.emplace(name, std::move(t));
  }

  // A tuning records file that cannot be used is a warning: the convolutions are then timed.
  std::optional<runtime::tuning_records_file> tuning_records;
  if (!o.tuning_records_path.empty()) {
    tuning_records.emplace(o.tuning_records_path);
    const expected<size_t> loaded = tuning_records->load();
    if (!loaded) {
      std::fprintf(stderr, "warning: tuning records file ignored: %s\n",
                   loaded.error().to_string().c_str());
    }
  }

  TROUPE_ASSIGN_OR_RETURN(std::unique_ptr<runtime::session> session,
                          runtime::session::create(o.model_path, options));
  TROUPE_ASSIGN_OR_RETURN(std::vector<tensor> ordered, session->order_inputs(named_inputs));

  std::vector<tensor_info> infos;
  infos.reserve(ordered.size());
  for (const tensor& t : ordered) infos.push_back(t.info());
  // --slice-rows: the plan is the slice's; each run goes through it once per slice.
  const int64_t batch = ordered.empty() || ordered[0].rank() == 0 ? 0 : ordered[0].dim(0);
  const int64_t slice = o.slice_rows > 0 ? o.slice_rows : batch;
  if (o.slice_rows > 0) {
    for (size_t i = 0; i < ordered.size(); ++i)
      if (ordered[i].rank() == 0 || ordered[i].dim(0) != batch)
        return invalid_argument("--slice-rows: input '" + session->inputs()[i].name +
                                "' does not share the batch dim of the first input (" +
                                std::to_string(batch) + ")");
    if (batch % o.slice_rows != 0)
      return invalid_argument("--slice-rows " + std::to_string(o.slice_rows) +
                              " does not divide the inputs' batch of " + std::to_string(batch));
    for (auto& info : infos) info.shape[0] = o.slice_rows;
  }
  const auto compile_start = clock_type::now();
  auto plan = session->prepare(infos);
  if (!plan) return plan.error();
  const double compile_ms = ms_since(compile_start);
  if (tuning_records) {
    const kernels::tuning_counts counts = kernels::tuning_stats();
    std::printf("tuning: %llu convolution choices searched, %llu adopted from records\n",
                static_cast<unsigned long long>(counts.searched),
                static_cast<unsigned long long>(counts.adopted));
    const expected<bool> saved = tuning_records->save();
    if (!saved) {
      std::fprintf(stderr, "warning: tuning records not saved: %s\n",
                   saved.error().to_string().c_str());
    }
  }

  // One run: whole, or slice by slice through the slice's plan into whole outputs.
  auto run_once = [&]() -> expected<std::vector<tensor>> {
    if (o.slice_rows <= 0) return session->run(ordered);
    std::vector<tensor> out;
    for (const tensor_info& info : (*plan)->output_infos()) {
      shape_t shape = info.shape;
      if (shape.empty() || shape[0] != slice)
        return invalid_argument("--slice-rows: an output of shape " + shape_to_string(shape) +
                                " does not carry the batch dim");
      shape[0] = batch;
      out.push_back(tensor::allocate(info.type, std::move(shape)));
    }
    for (int64_t first = 0; first < batch; first += slice) {
      std::vector<tensor> in = row_views(ordered, first, slice);
      std::vector<tensor> part = row_views(out, first, slice);
      TROUPE_RETURN_IF_ERROR((*plan)->run(in, part));
    }
    return out;
  };
  for (int i = 0; i < o.warmup; ++i) {
    auto r = run_once();
    if (!r) return r.error().with_context("warm-up run");
  }
  std::vector<double> latencies_ms;
  latencies_ms.reserve(static_cast<size_t>(o.repeat));
  std::vector<tensor> outputs;
  if (o.timing == "device") {
    // One full run for the outputs; then only the plan's steps are timed, each on inputs bound
    // (uploaded) beforehand outside the timing: the arena reuses the inputs' bytes during a run.
    auto r = run_once();
    if (!r) return r.error();
    outputs = std::move(*r);
    for (int i = 0; i < o.repeat; ++i) {
      // Sliced: the slices' step times added up, each slice's inputs bound outside the timing.
      double ms = 0;
      for (int64_t first = 0; first < std::max<int64_t>(batch, 1); first += std::max<int64_t>(slice, 1)) {
        TROUPE_RETURN_IF_ERROR((*plan)->bind_inputs(
            o.slice_rows > 0 ? row_views(ordered, first, slice) : ordered));
        const auto start = clock_type::now();
        status s = (*plan)->execute();
        ms += ms_since(start);
        if (!s.is_ok()) return s;
        if (o.slice_rows <= 0) break;
      }
      latencies_ms.push_back(ms);
    }
  } else if (o.timing == "end-to-end") {
    for (int i = 0; i < o.repeat; ++i) {
      const auto start = clock_type::now();
      auto r = run_once();
      latencies_ms.push_back(ms_since(start));
      if (!r) return r.error();
      outputs = std::move(*r);
    }
  } else {
    return invalid_argument("--timing must be end-to-end or device, got '" + o.timing + "'");
  }

  if (o.profile_runs > 0)
    TROUPE_RETURN_IF_ERROR(print_profile(
        **plan, o.profile_runs, o.slice_rows > 0 ? row_views(ordered, 0, slice) : ordered));
  if (o.slice_rows > 0)
    std::printf("slices: %lld of %lld rows per run (the plan and its memory are a slice's)\n",
                static_cast<long long>(batch / slice), static_cast<long long>(slice));

  const auto& descs = session->outputs();
  if (outputs.size() != descs.size())
    return internal_error("session returned " + std::to_string(outputs.size()) + " outputs for " +
                          std::to_string(descs.size()) + " graph outputs");
  named_tensors named_outputs;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const tensor& t = outputs[i];
    std::printf("%s: %s %s%s\n", descs[i].name.c_str(), std::string(dtype_name(t.type())).c_str(),
                shape_to_string(t.shape()).c_str(), top5_of_first_row(t).c_str());
    named_outputs.emplace_back(descs[i].name, t);
  }
  const latency_summary l = summarize_latencies(latencies_ms);
  std::printf(
      "latency_ms: median=%.4g mean=%.4g min=%.4g max=%.4g runs=%zu (plan compile %.4g ms)\n",
      l.median_ms, l.mean_ms, l.min_ms, l.max_ms, l.runs, compile_ms);
  print_memory(*session, **plan);
  std::fflush(stdout);

  if (!o.outputs_path.empty())
    TROUPE_RETURN_IF_ERROR(write_npz(o.outputs_path, named_outputs, o.compress_outputs));
  if (!o.latency_json_path.empty())
    TROUPE_RETURN_IF_ERROR(
        write_latency_json(o.latency_json_path, l, compile_ms, *session, **plan));
  return status::ok();
}

}  // namespace

latency_summary summarize_latencies(std::vector<double> ms) {
  latency_summary s;
  s.runs = ms.size();
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  s.median_ms = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;
  s.mean_ms = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(n);
  s.min_ms = ms.front();
  s.max_ms = ms.back();
  return s;
}

int report_error(const status& s) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", s.to_string().c_str());
  return s.code() == error_code::internal ? exit_internal : exit_user_error;
}

namespace {

/// `normalize_specs`: the --normalize-input values (runtime::parse_input_normalization's form).
int run_model_normalized(const run_options& options,
                         const std::vector<std::string>& normalize_specs) {
  const status s = run_model_impl(options, normalize_specs);
  return s.is_ok() ? exit_ok : report_error(s);
}

}  // namespace

int run_model(const run_options& options) { return run_model_normalized(options, {}); }

void add_run_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<run_options>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a model on inputs from an .npz file, write its outputs, report latency.");
  cmd->add_option("model", o->model_path, "The model (.onnx)")->required();
  cmd->add_option("--inputs,-i", o->inputs_path,
                  "A numpy .npz holding one array per graph input, under the input's name");
  cmd->add_option("--outputs,-o", o->outputs_path,
                  "Write every graph output, under its own name, to this .npz");
  cmd->add_flag("--compress", o->compress_outputs, "Deflate the output .npz (np.savez_compressed)");
  cmd->add_option("--backend", o->backend, "Where to run: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--precision", o->precision, "Compute precision (the CPU backend runs fp32)")
      ->check(CLI::IsMember({"fp32", "fp16", "bf16", "tf32"}))
      ->capture_default_str();
  cmd->add_option("--repeat,-n", o->repeat, "Timed runs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed runs after plan compilation")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--timing", o->timing,
                  "end-to-end (default: each run copies inputs in and outputs out) or device "
                  "(the plan's steps alone on inputs already bound, as framework benchmarks time)");
  cmd->add_option("--latency-json", o->latency_json_path,
                  "Also write the latency figures to this file as JSON");
  cmd->add_option("--profile", o->profile_runs,
                  "After timing, run the plan N more times with a synchronisation after every step "
                  "and print the time per op type and the slowest steps")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--tuning-records-file", o->tuning_records_path,
                  "Read recorded convolution choices from this file before compiling (a missing "
                  "file: none yet) and write them back after; prints a `tuning:` line");
  cmd->add_option("--slice-rows", o->slice_rows,
                  "Run the batch as slices of N rows through one plan compiled for N rows (less "
                  "memory: a model's batch_slice_rows); N must divide the inputs' batch")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads,-t", o->threads, "OpenMP threads (0: OpenMP's default)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  // Kept beside run_options (tools/commands.hpp) so that struct stays as other commands use it.
  auto normalize_specs = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--normalize-input", *normalize_specs,
                  "Take an input as integer pixels and normalise it in the graph, as a model's "
                  "config.yaml input_normalization does: 'dtype=uint8 mean=M0,M1,.. std=S0,S1,.. "
                  "[input=NAME] [channel_axis=1]' (repeat for more inputs)")
      ->allow_extra_args(false)  // one spec per --normalize-input; the model path stays positional
      ->take_all();
  cmd->footer(
      "Prints one line per output (name, dtype, shape; for float outputs of rank <= 2 the top-5\n"
      "values of the first row as index:value) and\n"
      "  latency_ms: median=... mean=... min=... max=... runs=N (plan compile ... ms)\n"
      "Timing covers the runs only: loading, plan compilation and warm-up are excluded.\n"
      "  memory_mib: device_reserved=... weights=... arena=... workspace=... kernel_owned=...\n"
      "  launch: CUDA graph (N nodes) | eager[: why]\n"
      "--latency-json writes {\"median_ms\", \"mean_ms\", \"min_ms\", \"max_ms\", \"runs\",\n"
      "\"compile_ms\", \"device_reserved_bytes\" (this instance: own pool + the shared weights' "
      "pool),\n"
      "\"weights_bytes\", \"weights_reserved_bytes\", \"arena_bytes\", \"workspace_bytes\",\n"
      "\"kernel_owned_bytes\", \"own_reserved_bytes\", \"fragmentation_bytes\", "
      "\"planned_arena_bytes\",\n"
      "\"sum_of_tensor_bytes\", \"peak_live_bytes\", \"cuda_graph\"}. TROUPE_CUDA_GRAPHS=0 runs "
      "eagerly.\n"
      "Errors print `error: <code>: <message>` and exit with 2 (1: internal).\n\n"
      "Example:\n"
      "  troupe run resnet50.onnx --inputs in.npz --outputs out.npz --repeat 20 --threads 2");
  cmd->callback(
      [o, normalize_specs, &exit_code] { exit_code = run_model_normalized(*o, *normalize_specs); });
}

}  // namespace troupe::tools
