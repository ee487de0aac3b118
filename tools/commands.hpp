#pragma once
/// The `troupe` subcommands. Each lives in its own file (cmd_<name>.cpp) as an options struct, a
/// function that runs it and returns the process exit code, and an `add_*_command` that declares
/// its flags on the CLI11 app. Exit codes: 0 success, 2 a typed error the user can act on (bad
/// input, unsupported model, missing file), 1 an internal error (a troupe bug).

#include <cstdio>
#include <string>
#include <vector>

#include "core/status.hpp"

namespace CLI {
class App;
}

namespace troupe::tools {

inline constexpr int exit_ok = 0;
inline constexpr int exit_internal = 1;
inline constexpr int exit_user_error = 2;

/// Prints "error: <code>: <message>" to stderr and returns the exit code for that status.
int report_error(const status& s);

// ---- troupe run ---------------------------------------------------------------------------------

struct run_options {
  std::string model_path;
  std::string inputs_path;   // .npz with one array per graph input, by name ("" = no inputs)
  std::string outputs_path;  // .npz to write every graph output to ("" = do not write)
  std::string backend = "cpu";
  std::string precision = "fp32";
  int repeat = 1;  // timed runs
  int warmup = 1;  // untimed runs after plan compilation
  std::string latency_json_path;
  int threads = 0;  // OpenMP threads; 0 = the OpenMP default
  bool compress_outputs = false;
  /// "end-to-end": each timed run copies inputs in and outputs out (session::run); "device": the
  /// plan's steps alone on inputs already on the device (plan::execute), as framework benchmarks time.
  std::string timing = "end-to-end";
  int profile_runs = 0;  // > 0: per-step profile over this many extra runs (plan::profile)
  /// Recorded convolution choices read before the model compiles and written after it
  /// (runtime/tuning_records_file.hpp); "" = none.
  std::string tuning_records_path;
  /// > 0: the batch runs as slices of this many rows through one plan compiled for the slice
  /// (a model's batch_slice_rows, forced): its memory and time, measured. The inputs' batch must
  /// be a multiple of it.
  int64_t slice_rows = 0;
};

/// Loads, compiles, warms up, times `repeat` runs and writes the last run's outputs.
int run_model(const run_options& options);
void add_run_command(CLI::App& app, int& exit_code);

/// "median=… mean=… min=… max=…" over per-run latencies (non-empty), in milliseconds.
struct latency_summary {
  double median_ms = 0, mean_ms = 0, min_ms = 0, max_ms = 0;
  size_t runs = 0;
};
latency_summary summarize_latencies(std::vector<double> latencies_ms);

// ---- troupe inspect -----------------------------------------------------------------------------

struct inspect_options {
  std::string model_path;
  /// "name=1x3x224x224" sets an input's shape; "symbol=8" sets a symbolic dim everywhere.
  std::vector<std::string> shapes;
  std::string backend = "cpu";
};

int inspect_model(const inspect_options& options, std::FILE* out = stdout);
void add_inspect_command(CLI::App& app, int& exit_code);

// ---- troupe version -----------------------------------------------------------------------------

int print_version(std::FILE* out = stdout);
void add_version_command(CLI::App& app, int& exit_code);

}  // namespace troupe::tools
