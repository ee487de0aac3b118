// `troupe version`: the release, the backends built in and the opsets the loader accepts.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "kernels/kernel.hpp"
#include "runtime/onnx_loader.hpp"
#include "tools/commands.hpp"

#ifndef TROUPE_VERSION
#define TROUPE_VERSION "unknown"
#endif

namespace troupe::tools {

int print_version(std::FILE* out) {
  const auto& registry = kernels::kernel_registry::standard();
  std::string backends;
  for (auto b : {kernels::backend::cpu, kernels::backend::cuda}) {
    const size_t ops = registry.ops(b).size();
    if (ops == 0) continue;
    if (!backends.empty()) backends += ", ";
    backends += std::string(kernels::backend_name(b)) + " (" + std::to_string(ops) + " ops)";
  }
  std::fprintf(out, "troupe %s\n", TROUPE_VERSION);
  std::fprintf(out, "backends: %s\n", backends.empty() ? "none" : backends.c_str());
  std::fprintf(out, "onnx opsets: %lld-%lld (ai.onnx)\n",
               static_cast<long long>(runtime::min_supported_opset),
               static_cast<long long>(runtime::max_supported_opset));
  return exit_ok;
}

void add_version_command(CLI::App& app, int& exit_code) {
  CLI::App* cmd =
      app.add_subcommand("version", "Print the version, backends and supported opsets.");
  cmd->callback([&exit_code] { exit_code = print_version(); });
}

}  // namespace troupe::tools
