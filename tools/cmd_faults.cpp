// `troupe faults inject|list|remove|clear`: the fault plan of a node started with
// `fault_injection: true`, through its management socket (cluster/management_socket.hpp;
// docs/faults.md). Tests only.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "serving/fault_plan.hpp"
#include "tools/commands.hpp"
#include "tools/management_connection.hpp"

namespace troupe::tools {
namespace {

struct faults_options {
  management_connection_options connection;
  std::string kind;
  serving::fault_rule rule;  // inject: all but the kind, with fault_rule's defaults
  uint32_t delay_ms = 0;
  bool json = false;
  uint64_t id = 0;
};

status run_inject(faults_options& o) {
  auto kind = serving::parse_fault_kind(o.kind);
  if (!kind) return kind.error().with_context("--kind");
  o.rule.kind = *kind;
  o.rule.delay = std::chrono::milliseconds(o.delay_ms);
  TROUPE_ASSIGN_OR_RETURN(auto c, connect_management(o.connection));
  TROUPE_ASSIGN_OR_RETURN(const uint64_t id, c->inject_fault(o.rule, o.connection.timeout()));
  // The id alone: id=$(troupe faults inject ...).
  std::printf("%llu\n", static_cast<unsigned long long>(id));
  return status::ok();
}

nlohmann::json to_json(const serving::fault_rule_state& s) {
  const serving::fault_rule& r = s.rule;
  return {{"id", s.id},
          {"kind", std::string(serving::to_string(r.kind))},
          {"target", r.target},
          {"times", r.times},
          {"probability", r.probability},
          {"seed", r.seed},
          {"delay_ms", r.delay.count()},
          {"allocations", r.allocations},
          {"chances", s.chances},
          {"fired", s.fired},
          {"spent", s.spent()}};
}

status run_list(const faults_options& o) {
  TROUPE_ASSIGN_OR_RETURN(auto c, connect_management(o.connection));
  TROUPE_ASSIGN_OR_RETURN(auto rules, c->list_faults(o.connection.timeout()));
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : rules) out.push_back(to_json(s));
    std::printf("%s\n", out.dump().c_str());
    return status::ok();
  }
  std::printf("%-6s %-16s %-20s %6s %11s %10s %8s %11s %8s %8s  %s\n", "ID", "KIND", "TARGET",
              "TIMES", "PROBABILITY", "SEED", "DELAY_MS", "ALLOCATIONS", "CHANCES", "FIRED",
              "STATE");
  for (const auto& s : rules) {
    const serving::fault_rule& r = s.rule;
    std::printf("%-6llu %-16s %-20s %6s %11g %10llu %8lld %11u %8llu %8llu  %s\n",
                static_cast<unsigned long long>(s.id),
                std::string(serving::to_string(r.kind)).c_str(), r.target.c_str(),
                r.times == 0 ? "-" : std::to_string(r.times).c_str(), r.probability,
                static_cast<unsigned long long>(r.seed), static_cast<long long>(r.delay.count()),
                r.allocations, static_cast<unsigned long long>(s.chances),
                static_cast<unsigned long long>(s.fired), s.spent() ? "spent" : "live");
  }
  return status::ok();
}

status run_remove(const faults_options& o) {
  TROUPE_ASSIGN_OR_RETURN(auto c, connect_management(o.connection));
  TROUPE_RETURN_IF_ERROR(c->remove_fault(o.id, o.connection.timeout()));
  std::printf("removed fault rule %llu\n", static_cast<unsigned long long>(o.id));
  return status::ok();
}

status run_clear(const faults_options& o) {
  TROUPE_ASSIGN_OR_RETURN(auto c, connect_management(o.connection));
  TROUPE_ASSIGN_OR_RETURN(const uint64_t n, c->clear_faults(o.connection.timeout()));
  std::printf("cleared %llu fault rule%s\n", static_cast<unsigned long long>(n), n == 1 ? "" : "s");
  return status::ok();
}

}  // namespace

void add_faults_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<faults_options>();
  o->connection.timeout_s = 30;  // every fault operation answers at once
  CLI::App* cmd = app.add_subcommand(
      "faults",
      "Fault injection (tests only) through the management socket of a node started with "
      "fault_injection: true: inject, list, remove, clear (docs/faults.md).");
  cmd->require_subcommand(1);
  auto finish = [&exit_code](const status& s) {
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  };

  CLI::App* inject = cmd->add_subcommand("inject", "Add a fault rule; prints its id");
  add_management_connection_options(*inject, o->connection);
  inject
      ->add_option("--kind", o->kind,
                   "fail_allocations, device_trap, abort, segfault, hang, delay, drop, duplicate "
                   "or slow_link")
      ->required();
  inject
      ->add_option("--target", o->rule.target,
                   "worker, worker:N, worker:*, frontend_router, batcher_worker[:N], "
                   "worker_link[:N]")
      ->required();
  inject->add_option("--times", o->rule.times, "Firings before the rule is spent; 0: no limit")
      ->capture_default_str();
  inject->add_option("--probability", o->rule.probability, "Of firing at each chance, in (0, 1]")
      ->capture_default_str();
  inject->add_option("--seed", o->rule.seed, "Of the rule's generator (with --probability)")
      ->capture_default_str();
  inject->add_option("--delay-ms", o->delay_ms, "hang, delay, slow_link: how long")
      ->capture_default_str();
  inject
      ->add_option("--allocations", o->rule.allocations,
                   "fail_allocations: device allocations failed per firing")
      ->capture_default_str();
  inject->callback([o, finish] { finish(run_inject(*o)); });

  CLI::App* list = cmd->add_subcommand("list", "The node's fault rules and what each has done");
  add_management_connection_options(*list, o->connection);
  list->add_flag("--json", o->json, "One JSON array instead of a table");
  list->callback([o, finish] { finish(run_list(*o)); });

  CLI::App* remove = cmd->add_subcommand("remove", "Remove one fault rule");
  add_management_connection_options(*remove, o->connection);
  remove->add_option("id", o->id, "The rule's id (as inject printed it, or list shows it)")
      ->required();
  remove->callback([o, finish] { finish(run_remove(*o)); });

  CLI::App* clear = cmd->add_subcommand("clear", "Remove every fault rule");
  add_management_connection_options(*clear, o->connection);
  clear->callback([o, finish] { finish(run_clear(*o)); });
}

}  // namespace troupe::tools
