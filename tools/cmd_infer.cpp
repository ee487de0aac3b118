// `troupe infer`: one request to a serving node, inputs from an .npz, outputs to an .npz.

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "cluster/client.hpp"
#include "tools/commands.hpp"
#include "tools/npz.hpp"

namespace troupe::tools {
namespace {

struct infer_options {
  std::string model;
  std::string inputs_path;
  std::string outputs_path;
  std::string server = "tcp://127.0.0.1:5555";
  int64_t version = 0;
  std::string id = "troupe-infer";
  uint32_t priority = 0;
  uint64_t timeout_ms = 0;
  double wait_s = 60;
  std::string routing_key;
  std::vector<std::string> parameters;  // key=value
  std::vector<std::string> outputs;
  bool metadata = false;
  bool health = false;
};

status run_infer(const infer_options& o) {
  TROUPE_ASSIGN_OR_RETURN(auto c, cluster::client::connect(o.server));
  const auto wait = std::chrono::milliseconds(static_cast<int64_t>(o.wait_s * 1000));
  if (o.health) {
    TROUPE_ASSIGN_OR_RETURN(auto h, c->health(wait));
    std::printf("live: %s\nready: %s\ndraining: %s\n", h.live ? "yes" : "no",
                h.ready ? "yes" : "no", h.draining ? "yes" : "no");
    if (!h.ready) std::printf("reason: %s\n", h.reason.c_str());
    for (const auto& m : h.models) std::printf("  %s\n", m.c_str());
    std::fflush(stdout);
    return h.ready ? status::ok()
                   : make_error(error_code::unavailable,
                                "the node is not ready: " +
                                    (h.reason.empty() ? std::string("no reason given") : h.reason));
  }
  if (o.metadata) {
    TROUPE_ASSIGN_OR_RETURN(auto md, c->metadata(o.model, o.version, wait));
    std::printf("model: %s version %lld (max_batch_size %u)\n", md.name.c_str(),
                static_cast<long long>(md.version), md.max_batch_size);
    auto dims = [](const std::vector<int64_t>& s) {
      std::string r = "[";
      for (size_t i = 0; i < s.size(); ++i)
        r += (i ? "," : "") + (s[i] < 0 ? std::string("?") : std::to_string(s[i]));
      return r + "]";
    };
    for (const auto& t : md.inputs)
      std::printf("  input  %s: %s %s\n", t.name.c_str(), std::string(dtype_name(t.type)).c_str(),
                  dims(t.shape).c_str());
    for (const auto& t : md.outputs)
      std::printf("  output %s: %s %s\n", t.name.c_str(), std::string(dtype_name(t.type)).c_str(),
                  dims(t.shape).c_str());
    return status::ok();
  }

  cluster::infer_request r;
  r.model = o.model;
  r.version = o.version;
  r.id = o.id;
  r.priority = o.priority;
  r.timeout_us = o.timeout_ms * 1000;
  r.routing_key = o.routing_key;
  r.outputs = o.outputs;
  for (const auto& p : o.parameters) {
    const auto eq = p.find('=');
    if (eq == std::string::npos)
      return invalid_argument("--param expects key=value, got '" + p + "'");
    r.parameters.emplace_back(p.substr(0, eq), p.substr(eq + 1));
  }
  if (!o.inputs_path.empty()) {
    TROUPE_ASSIGN_OR_RETURN(named_tensors inputs, read_npz(o.inputs_path));
    for (auto& [name, t] : inputs) r.inputs.emplace_back(name, std::move(t));
  }
  TROUPE_ASSIGN_OR_RETURN(cluster::infer_reply reply, c->infer(r, wait));
  if (!reply.result.is_ok()) return reply.result;
  named_tensors outputs;
  for (auto& [name, t] : reply.outputs) {
    std::printf("%s: %s %s\n", name.c_str(), std::string(dtype_name(t.type())).c_str(),
                shape_to_string(t.shape()).c_str());
    outputs.emplace_back(name, t);
  }
  std::printf(
      "served by %s version %lld, batch %u: queue %llu us, compute %llu us, total %llu us\n",
      reply.model.c_str(), static_cast<long long>(reply.version), reply.batch_size,
      static_cast<unsigned long long>(reply.queue_us),
      static_cast<unsigned long long>(reply.compute_us),
      static_cast<unsigned long long>(reply.total_us));
  std::fflush(stdout);
  if (!o.outputs_path.empty()) TROUPE_RETURN_IF_ERROR(write_npz(o.outputs_path, outputs));
  return status::ok();
}

}  // namespace

void add_infer_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<infer_options>();
  CLI::App* cmd = app.add_subcommand("infer", "Send one inference request to a serving node.");
  cmd->add_option("model", o->model, "The model's name in the node's repository");
  cmd->add_option("--inputs,-i", o->inputs_path,
                  "Inputs as a numpy .npz, one array per model input, by name");
  cmd->add_option("--outputs,-o", o->outputs_path, "Write the returned outputs to this .npz");
  cmd->add_option("--server,-s", o->server, "The node's endpoint")->capture_default_str();
  cmd->add_option("--version", o->version, "Model version (0: the model's traffic policy)")
      ->capture_default_str();
  cmd->add_option("--id", o->id, "Request id")->capture_default_str();
  cmd->add_option("--priority", o->priority,
                  "Priority level (1 = highest; 0: the model's default)");
  cmd->add_option("--timeout-ms", o->timeout_ms, "Server-side deadline (0: the model's default)");
  cmd->add_option("--wait", o->wait_s, "Seconds to wait for the reply")->capture_default_str();
  cmd->add_option("--routing-key", o->routing_key,
                  "Requests with the same key stick to one version");
  cmd->add_option("--param", o->parameters, "Request parameter key=value (repeatable)");
  cmd->add_option("--output-name", o->outputs, "Return only this output (repeatable)");
  cmd->add_flag("--metadata", o->metadata,
                "Print the model's inputs and outputs instead of running it");
  cmd->add_flag("--health", o->health,
                "Print the node's health (per-model states and errors; why it is not ready); "
                "exit 0 only when it is ready, else 2");
  cmd->footer(
      "Exit status: 0 success; 2 a typed error (printed as `error: <code>: <message>`).\n\n"
      "Example:\n"
      "  troupe infer resnet50 --inputs in.npz --outputs out.npz --server tcp://127.0.0.1:5555");
  cmd->callback([o, cmd, &exit_code] {
    if (o->model.empty() && !o->health) {
      exit_code = report_error(invalid_argument("a model name is required (or --health)"));
      return;
    }
    const status s = run_infer(*o);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
}

}  // namespace troupe::tools
