// `troupe models list|load|unload`: model control through the node's management socket
// (cluster/management_socket.hpp; docs/serving.md, Model control). The node must be started
// with `management_listen` (node.yaml) or --management-listen.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "cluster/management_client.hpp"
#include "tools/commands.hpp"
#include "tools/management_connection.hpp"

namespace troupe::tools {
namespace {

struct models_options {
  management_connection_options connection;
  std::string name;
  std::string config_path;
  bool ready_only = false;
  std::string weights;  // traffic: "1=90,2=10"
  bool clear = false;
  int64_t version = 0;
};

/// "1=90,2=10" -> {1: 90, 2: 10}.
expected<std::map<int64_t, uint32_t>> parse_weights(const std::string& text) {
  std::map<int64_t, uint32_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    try {
      if (eq == std::string::npos) throw std::invalid_argument(item);
      size_t used = 0;
      const long long v = std::stoll(item.substr(0, eq), &used);
      if (used != eq || v <= 0) throw std::invalid_argument(item);
      const unsigned long w = std::stoul(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1 || w > 1000000) throw std::invalid_argument(item);
      out[v] = static_cast<uint32_t>(w);
    } catch (const std::exception&) {
      return invalid_argument("--weights: '" + item + "' is not VERSION=WEIGHT (e.g. 1=90,2=10)");
    }
  }
  if (out.empty()) return invalid_argument("--weights: no VERSION=WEIGHT given");
  return out;
}

expected<std::unique_ptr<cluster::management_client>> open(const models_options& o) {
  return connect_management(o.connection);
}

std::chrono::milliseconds timeout_of(const models_options& o) {
  return o.connection.timeout();
}

status run_list(const models_options& o) {
  TROUPE_ASSIGN_OR_RETURN(auto c, open(o));
  TROUPE_ASSIGN_OR_RETURN(auto lines, c->index(o.ready_only, timeout_of(o)));
  std::printf("%-32s %8s  %-12s %s\n", "MODEL", "VERSION", "STATE", "REASON");
  for (const auto& l : lines)
    std::printf("%-32s %8s  %-12s %s\n", l.name.c_str(),
                l.version > 0 ? std::to_string(l.version).c_str() : "-",
                l.state.empty() ? "(not loaded)" : l.state.c_str(), l.reason.c_str());
  return status::ok();
}

status run_load(const models_options& o) {
  std::string config;
  if (!o.config_path.empty()) {
    std::ifstream in(o.config_path, std::ios::binary);
    if (!in) return not_found("cannot open '" + o.config_path + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    config = ss.str();
    if (config.empty()) return invalid_argument("'" + o.config_path + "' is empty");
  }
  TROUPE_ASSIGN_OR_RETURN(auto c, open(o));
  TROUPE_RETURN_IF_ERROR(c->load(o.name, config, timeout_of(o)));
  std::printf("loaded %s\n", o.name.c_str());
  return status::ok();
}

status run_unload(const models_options& o) {
  TROUPE_ASSIGN_OR_RETURN(auto c, open(o));
  TROUPE_RETURN_IF_ERROR(c->unload(o.name, timeout_of(o)));
  std::printf("unloaded %s\n", o.name.c_str());
  return status::ok();
}

/// `traffic` shows, sets (--weights) or clears (--clear); promote and rollback take a version.
status run_traffic(const models_options& o, cluster::traffic_op op) {
  std::map<int64_t, uint32_t> weights;
  if (op == cluster::traffic_op::show && !o.weights.empty()) {
    TROUPE_ASSIGN_OR_RETURN(weights, parse_weights(o.weights));
    op = cluster::traffic_op::set;
  } else if (op == cluster::traffic_op::show && o.clear) {
    op = cluster::traffic_op::clear;
  }
  TROUPE_ASSIGN_OR_RETURN(auto c, open(o));
  TROUPE_ASSIGN_OR_RETURN(auto t, c->traffic(o.name, op, o.version, weights, timeout_of(o)));
  std::string w;
  for (const auto& [v, x] : t.weights)
    w += (w.empty() ? "" : ",") + std::to_string(v) + "=" + std::to_string(x);
  std::printf("model %s  weights %s (%s)\n", o.name.c_str(),
              w.empty() ? "none: the newest ready version serves" : w.c_str(),
              t.overridden ? "set at run time" : "config.yaml");
  if (!t.note.empty()) std::printf("last change: %s\n", t.note.c_str());
  return status::ok();
}

}  // namespace

void add_models_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<models_options>();
  CLI::App* cmd = app.add_subcommand(
      "models",
      "Model control through the node's management socket: list, load, unload, traffic, "
      "promote, rollback.");
  cmd->require_subcommand(1);
  auto common = [&](CLI::App* sub) { add_management_connection_options(*sub, o->connection); };
  CLI::App* list = cmd->add_subcommand("list", "Every model of the repository and its state");
  common(list);
  list->add_flag("--ready", o->ready_only, "Only READY versions");
  list->callback([o, &exit_code] {
    const status s = run_list(*o);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
  CLI::App* load = cmd->add_subcommand(
      "load", "Load or reload a model (answers once it is loaded and warmed up)");
  common(load);
  load->add_option("name", o->name, "The model's folder name in the repository")->required();
  load->add_option("--config", o->config_path,
                   "A configuration (YAML or JSON, config.yaml's keys) replacing config.yaml");
  load->callback([o, &exit_code] {
    const status s = run_load(*o);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
  CLI::App* traffic = cmd->add_subcommand(
      "traffic", "Show a model's traffic weights, set them (--weights 1=90,2=10) or --clear them");
  common(traffic);
  traffic->add_option("name", o->name, "The model's name")->required();
  auto* w = traffic->add_option("--weights", o->weights, "VERSION=WEIGHT,... for requests that name no version");
  traffic->add_flag("--clear", o->clear, "Back to config.yaml's weights")->excludes(w);
  traffic->callback([o, &exit_code] {
    const status s = run_traffic(*o, cluster::traffic_op::show);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
  CLI::App* promote = cmd->add_subcommand(
      "promote", "Give all traffic to VERSION and unload the others (explicit mode)");
  common(promote);
  promote->add_option("name", o->name, "The model's name")->required();
  promote->add_option("version", o->version, "The version that takes all traffic")->required();
  promote->callback([o, &exit_code] {
    const status s = run_traffic(*o, cluster::traffic_op::promote);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
  CLI::App* rollback = cmd->add_subcommand(
      "rollback", "Set VERSION's traffic weight to 0 (the others keep theirs)");
  common(rollback);
  rollback->add_option("name", o->name, "The model's name")->required();
  rollback->add_option("version", o->version, "The version that loses its traffic")->required();
  rollback->callback([o, &exit_code] {
    const status s = run_traffic(*o, cluster::traffic_op::rollback);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
  CLI::App* unload = cmd->add_subcommand(
      "unload", "Unload a model (answers once its requests finished and memory is released)");
  common(unload);
  unload->add_option("name", o->name, "The model's name")->required();
  unload->callback([o, &exit_code] {
    const status s = run_unload(*o);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
}

}  // namespace troupe::tools
