// `troupe worker`: a worker process, started by `troupe serve` with worker_processes on
// (cluster/worker_process.hpp, docs/worker-processes.md), or by a worker node (`troupe serve
// --role worker`, docs/cluster.md) with --join. Not for people: hidden from the help.

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "cluster/worker_process.hpp"
#include "tools/commands.hpp"

namespace troupe::tools {

void add_worker_command(CLI::App& app, int& exit_code) {
  struct options {
    cluster::worker_main_options worker;
    std::string kind = "cpu";
    int64_t heartbeat_interval_ms = 1000;
    int64_t heartbeat_timeout_ms = 10000;
  };
  auto o = std::make_shared<options>();
  CLI::App* cmd = app.add_subcommand(
      "worker", "A worker process of `troupe serve` (worker_processes: on); started by the node");
  cmd->group("");  // hidden: the node starts it
  cmd->add_option("--endpoint", o->worker.endpoint, "The node's ipc:// endpoint");
  cmd->add_option("--shm-fd", o->worker.shm_fd, "The inherited shared memory descriptor");
  cmd->add_option("--shm-bytes", o->worker.shm_bytes,
                  "Its size (with --join: the size of the process's own staging memory)");
  cmd->add_option("--join", o->worker.join,
                  "A control node's tcp:// endpoint for workers (instead of --endpoint)");
  cmd->add_option("--node-name", o->worker.node_name, "With --join: the worker node's name");
  cmd->add_option("--curve-secret-key-file", o->worker.curve_secret_key_file,
                  "With --join: this worker's CURVE secret key");
  cmd->add_option("--curve-server-key-file", o->worker.curve_server_key_file,
                  "With --join: the control node's CURVE public key");
  cmd->add_option("--cache-dir", o->worker.cache_dir,
                  "With --join: where model files sent by the control node are kept");
  cmd->add_option("--link-connections", o->worker.link_connections,
                  "With --join: connections to the control node (the first and its data lanes)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--kind", o->kind, "cpu or gpu")->check(CLI::IsMember({"cpu", "gpu"}));
  cmd->add_option("--index", o->worker.index, "The worker's position in the node");
  cmd->add_option("--device", o->worker.device_index, "The CUDA device of a gpu worker");
  cmd->add_option("--compute-threads", o->worker.compute_threads, "OpenMP threads (0: default)");
  cmd->add_flag("--fault-injection", o->worker.fault_injection, "Honour fault injection (tests)");
  cmd->add_option("--tuning-records-file", o->worker.tuning_records_file,
                  "Recorded convolution choices: read at start, rewritten after loads");
  cmd->add_option("--memory-budget-bytes", o->worker.memory_budget_bytes,
                  "Device memory for the replicas; idle weights are evicted beyond it (0: none)");
  cmd->add_option("--heartbeat-interval-ms", o->heartbeat_interval_ms)
      ->check(CLI::Range(1, 3600000));
  cmd->add_option("--heartbeat-timeout-ms", o->heartbeat_timeout_ms)->check(CLI::Range(1, 3600000));
  cmd->add_option("--log-level", o->worker.log_level);
  cmd->add_option("--idle-spin-us", o->worker.idle_spin_us,
                  "After a message, poll without blocking this long before sleeping (0: never)");
  cmd->callback([o, &exit_code] {
    const bool joined = !o->worker.join.empty();
    if (joined ? (o->worker.node_name.empty() || o->worker.cache_dir.empty() ||
                  o->worker.shm_bytes == 0)
               : (o->worker.endpoint.empty() || o->worker.shm_fd < 0 || o->worker.shm_bytes == 0)) {
      exit_code = report_error(invalid_argument(
          joined ? "--join needs --node-name, --cache-dir and --shm-bytes"
                 : "a worker process needs --endpoint, --shm-fd and --shm-bytes (or --join)"));
      return;
    }
    o->worker.kind = o->kind == "gpu" ? actors::worker_kind::gpu : actors::worker_kind::cpu;
    o->worker.heartbeat_interval = std::chrono::milliseconds(o->heartbeat_interval_ms);
    o->worker.heartbeat_timeout = std::chrono::milliseconds(o->heartbeat_timeout_ms);
    const status s = cluster::run_worker_process(o->worker);
    exit_code = s.is_ok() ? exit_ok : report_error(s);
  });
}

}  // namespace troupe::tools
