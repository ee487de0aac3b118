// `troupe serve`: run a serving node on a model repository (cluster/node_main.hpp).

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "cluster/node_main.hpp"
#include "tools/commands.hpp"

namespace troupe::tools {

void add_serve_command(CLI::App& app, int& exit_code) {
  struct options {
    cluster::serve_options serve;
    std::string listen;
    int metrics_port = -1;
    int grpc_port = -1;
    int http_port = -1;
    std::string log_level;
    std::string gpus;
    std::string control_mode;
    int repository_poll_secs = 0;
    uint32_t max_outstanding_per_connection = 0;
    std::string worker_processes;
    int64_t worker_memory_budget_mb = -1;
    std::string role;
    std::string join;
    std::string join_dns;
    std::string workers_listen;
    std::string node_name;
    std::string model_cache_dir;
  };
  auto o = std::make_shared<options>();
  CLI::App* cmd =
      app.add_subcommand("serve",
                         "Serve a model repository over ZeroMQ (docs/protocol.md) and KServe v2 "
                         "HTTP/REST (docs/serving.md).");
  cmd->add_option(
      "--models,-m", o->serve.models_dir,
      "Model repository: DIR/<name>/<version>/model.onnx, optional DIR/<name>/config.yaml");
  cmd->add_option("--listen,-l", o->listen, "ZeroMQ endpoint to bind (default tcp://*:5555)");
  cmd->add_option("--http-port", o->http_port,
                  "Port of the KServe v2 HTTP/REST endpoint (default 8000; 0: off)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--metrics-port", o->metrics_port,
                  "Port of the Prometheus /metrics endpoint (default 8002; 0: off)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--grpc-port", o->grpc_port,
                  "Port of the KServe v2 gRPC endpoint (default 8001; 0: off)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--config,-c", o->serve.config_path, "Node configuration (node.yaml)");
  cmd->add_option("--gpus", o->gpus,
                  "GPUs that get a gpu_worker: all (default: every visible GPU), none, or 0,1,...");
  cmd->add_option("--log-level", o->log_level, "trace, debug, info, warn, error, critical or off");
  cmd->add_option("--model-control-mode", o->control_mode,
                  "none (load the repository at start; default), explicit (load --load-model "
                  "models, then what the repository API asks) or poll (rescan the repository)")
      ->check(CLI::IsMember({"none", "explicit", "poll"}));
  cmd->add_option("--load-model", o->serve.load_models,
                  "explicit mode: a model to load at start (repeat; '*' for all)");
  cmd->add_option("--management-listen", o->serve.management_listen,
                  "ZeroMQ endpoint of the management socket (`troupe models`); off by default; "
                  "beyond loopback it needs management_token_file in node.yaml");
  cmd->add_option("--tuning-records-file", o->serve.tuning_records_file,
                  "Keep the convolution choices timed at model load in this file, read at start "
                  "and rewritten after loads that timed new ones (node.yaml tuning_records_file)");
  cmd->add_option("--max-outstanding-per-connection", o->max_outstanding_per_connection,
                  "ZeroMQ: requests of one connection running or with replies it has not read; "
                  "beyond it that connection's requests are answered OVERLOADED (default 256)")
      ->check(CLI::Range(1u, 1u << 22));
  cmd->add_option("--worker-processes", o->worker_processes,
                  "on: each worker runs in a process of its own (a crash costs that process, not "
                  "the node); off (default): workers in the node's process")
      ->check(CLI::IsMember({"on", "off"}));
  cmd->add_option("--worker-memory-budget-mb", o->worker_memory_budget_mb,
                  "Device memory each worker may hold for its replicas, in MiB: beyond it, idle "
                  "models' weights are evicted to host memory and paged back in on their next "
                  "request (node.yaml worker_memory_budget_mb; 0: no budget, the default)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--role", o->role,
                  "all (default: one node serves), control (frontends and actors; workers join "
                  "it) or worker (worker processes for this host's devices, joined to --join)")
      ->check(CLI::IsMember({"all", "control", "worker"}));
  cmd->add_option("--join", o->join,
                  "worker role: the control nodes' endpoints for workers, "
                  "tcp://HOST:PORT[,tcp://HOST:PORT...]");
  cmd->add_option("--join-dns", o->join_dns,
                  "worker role: NAME:PORT, every address the name resolves to is a control node "
                  "(re-resolved every 5 s: a Kubernetes headless Service)");
  cmd->add_option("--workers-listen", o->workers_listen,
                  "control role: where workers join (default tcp://*:5600; with role all, off "
                  "unless given)");
  cmd->add_option("--node-name", o->node_name,
                  "worker role: this node's name in the cluster (default: the host name)");
  cmd->add_option("--model-cache-dir", o->model_cache_dir,
                  "worker role: where model files sent by control nodes are kept "
                  "(default ~/.cache/troupe/models)");
  cmd->add_option("--repository-poll-secs", o->repository_poll_secs,
                  "poll mode: seconds between repository scans (default 15)")
      ->check(CLI::Range(1, 86400));
  cmd->footer(
      "Logs are JSON lines on stderr. Once serving, one line goes to stdout:\n"
      "  {\"event\":\"ready\",\"endpoint\":\"tcp://0.0.0.0:5555\",\"grpc_port\":8001,"
      "\"http_port\":8000,\"metrics_port\":8002}\n"
      "SIGTERM or SIGINT: new requests are answered UNAVAILABLE, requests in flight finish, exit "
      "0.\n\n"
      "Example:\n"
      "  troupe serve --models ./models --listen tcp://*:5555 --http-port 8000 \\\n"
      "               --metrics-port 8002\n"
      "Two nodes (docs/cluster.md):\n"
      "  troupe serve --role control --models ./models            # on host a\n"
      "  troupe serve --role worker --join tcp://a:5600            # on host b");
  cmd->callback([o, &exit_code] {
    if (!o->listen.empty()) o->serve.listen = o->listen;
    if (o->metrics_port >= 0) o->serve.metrics_port = o->metrics_port;
    if (o->grpc_port >= 0) o->serve.grpc_port = o->grpc_port;
    if (o->http_port >= 0) o->serve.http_port = o->http_port;
    if (!o->log_level.empty()) o->serve.log_level = o->log_level;
    if (!o->gpus.empty()) o->serve.gpus = o->gpus;
    if (!o->control_mode.empty()) o->serve.control_mode = o->control_mode;
    if (o->repository_poll_secs > 0) o->serve.repository_poll_secs = o->repository_poll_secs;
    if (o->max_outstanding_per_connection > 0)
      o->serve.max_outstanding_per_connection = o->max_outstanding_per_connection;
    if (!o->worker_processes.empty()) o->serve.worker_processes = o->worker_processes == "on";
    if (o->worker_memory_budget_mb >= 0)
      o->serve.worker_memory_budget_mb = static_cast<uint64_t>(o->worker_memory_budget_mb);
    if (!o->role.empty()) o->serve.role = o->role;
    if (!o->join.empty()) {
      std::string rest = o->join;
      for (size_t at = 0; at != std::string::npos;) {
        const size_t comma = rest.find(',', at);
        const std::string one = rest.substr(at, comma == std::string::npos ? comma : comma - at);
        if (!one.empty()) o->serve.join.push_back(one);
        at = comma == std::string::npos ? comma : comma + 1;
      }
    }
    if (!o->join_dns.empty()) o->serve.join_dns = o->join_dns;
    if (!o->workers_listen.empty()) o->serve.workers_listen = o->workers_listen;
    if (!o->node_name.empty()) o->serve.node_name = o->node_name;
    if (!o->model_cache_dir.empty()) o->serve.model_cache_dir = o->model_cache_dir;
    const status s = cluster::run_serve(o->serve);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
}

}  // namespace troupe::tools
