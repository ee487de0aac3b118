// The `troupe` command line. Subcommands live in tools/cmd_*.cpp; this file only wires them and
// turns CLI11's exceptions (its parse errors) into exit codes: nothing throws past main.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "tools/commands.hpp"

#ifdef TROUPE_HAVE_SERVING
namespace troupe::tools {  // tools/cmd_serve.cpp, cmd_infer.cpp, cmd_bench.cpp
void add_ops_command(CLI::App& app, int& exit_code);
void add_serve_command(CLI::App& app, int& exit_code);
void add_infer_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_models_command(CLI::App& app, int& exit_code);
void add_faults_command(CLI::App& app, int& exit_code);
void add_worker_command(CLI::App& app, int& exit_code);
void add_keygen_command(CLI::App& app, int& exit_code);
}  // namespace troupe::tools
#endif

int main(int argc, char** argv) {
  using namespace troupe::tools;
  CLI::App app{
      "troupe runs ONNX models with its own executor (ONNX -> graph IR -> passes -> memory plan "
      "->\n"
      "kernels) on the CPU or, where built in, CUDA.",
      "troupe"};
  app.require_subcommand(1);
  app.fallthrough(false);
  app.set_version_flag("--version", [] {
    print_version();
    return std::string();
  });

  int exit_code = exit_ok;
  add_run_command(app, exit_code);
  add_inspect_command(app, exit_code);
  add_version_command(app, exit_code);
  add_ops_command(app, exit_code);
#ifdef TROUPE_HAVE_SERVING
  add_serve_command(app, exit_code);
  add_infer_command(app, exit_code);
  add_bench_command(app, exit_code);
  add_models_command(app, exit_code);
  add_faults_command(app, exit_code);
  add_worker_command(app, exit_code);
  add_keygen_command(app, exit_code);
#endif
  // Set after the subcommands: CLI11 copies a parent's footer into subcommands made after it.
  app.footer(
      "Run `troupe <command> --help` for a command's options.\n\n"
      "Examples:\n"
      "  troupe inspect model.onnx --shape input=1x3x224x224\n"
      "  troupe run model.onnx --inputs in.npz --outputs out.npz --repeat 50 --threads 2\n\n"
      "Inputs and outputs are numpy .npz archives keyed by graph input/output names.\n"
      "Exit status: 0 success; 2 an error in the model, inputs or flags (printed as\n"
      "`error: <code>: <message>`); 1 an internal error.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version, or the parse error
    return code == 0 ? exit_ok : exit_user_error;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return exit_internal;
  }
  return exit_code;
}
