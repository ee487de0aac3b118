// `troupe ops`: every op troupe knows, its opsets, and the backends with a kernel for it.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"
#include "tools/commands.hpp"

namespace troupe::tools {

void add_ops_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("ops", "List supported ops with their opsets and backends");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "One JSON object per line");
  cmd->callback([json, &exit_code] {
    const auto& kernels = kernels::kernel_registry::standard();
    for (const auto* s : kernels::schema_registry::standard().all()) {
      const bool cpu = kernels.has_op(kernels::backend::cpu, s->domain, s->op_type);
      const bool cuda = kernels.has_op(kernels::backend::cuda, s->domain, s->op_type);
      const std::string name = (s->domain.empty() ? "" : s->domain + ".") + s->op_type;
      if (*json) {
        std::printf("{\"op\": \"%s\", \"min_opset\": %lld, \"max_opset\": %lld, \"cpu\": %s, \"cuda\": %s}\n",
                    name.c_str(), static_cast<long long>(s->min_opset), static_cast<long long>(s->max_opset),
                    cpu ? "true" : "false", cuda ? "true" : "false");
      } else {
        std::printf("%-28s opsets %2lld-%-2lld cpu %-3s cuda %s\n", name.c_str(), static_cast<long long>(s->min_opset),
                    static_cast<long long>(s->max_opset), cpu ? "yes" : "no", cuda ? "yes" : "no");
      }
    }
    exit_code = 0;
  });
}

}  // namespace troupe::tools
