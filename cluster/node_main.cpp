#include "cluster/node_main.hpp"

#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <pthread.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/gpu_worker.hpp"
#include "actors/metrics.hpp"
#include "actors/model_table.hpp"
#include "actors/node.hpp"
#include "actors/worker.hpp"
#include "cluster/frontend.hpp"
#if TROUPE_HAVE_GRPC
#include "cluster/kserve_grpc_server.hpp"
#endif
#include "cluster/logging.hpp"
#include "cluster/metrics_endpoint.hpp"
#include "cluster/request_gateway.hpp"
#include "cluster/shared_memory_registry.hpp"

namespace troupe::cluster {
namespace {

/// SIGTERM and SIGINT are blocked in every thread (they inherit the mask from here) and taken
/// synchronously with sigwait by the main thread: no async-signal-safety puzzles.
sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

/// --gpus: "all", "none" or CUDA ordinals separated by commas.
expected<std::optional<std::vector<int>>> parse_gpus(const std::string& text) {
  if (text == "all") return std::optional<std::vector<int>>();
  std::vector<int> ids;
  if (text == "none") return std::optional<std::vector<int>>(ids);
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    int id = -1;
    const auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || ec != std::errc() || p != item.data() + item.size() || id < 0 ||
        std::find(ids.begin(), ids.end(), id) != ids.end())
      return invalid_argument(
          "--gpus: expected all, none or distinct device numbers like 0,1; got '" + text + "'");
    ids.push_back(id);
    start = end + 1;
  }
  return std::optional<std::vector<int>>(ids);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

status run_serve(const serve_options& o) {
  actors::node_config cfg;
  if (!o.config_path.empty()) {
    TROUPE_ASSIGN_OR_RETURN(cfg, actors::load_node_config(o.config_path));
  }
  if (!o.models_dir.empty()) cfg.models_dir = o.models_dir;
  if (o.listen) cfg.listen = *o.listen;
  if (o.metrics_port) cfg.metrics_port = *o.metrics_port;
  if (o.grpc_port) cfg.grpc_port = *o.grpc_port;
  if (o.log_level) cfg.log_level = *o.log_level;
  if (o.gpus) {
    TROUPE_ASSIGN_OR_RETURN(cfg.gpus, parse_gpus(*o.gpus));
  }
  if (cfg.models_dir.empty())
    return invalid_argument("no model repository: pass --models DIR or set `models` in the config");
  TROUPE_RETURN_IF_ERROR(setup_json_logging(cfg.log_level));

  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // After the signal mask: asking CUDA for its devices starts the driver, whose threads must
  // inherit the mask too (else SIGTERM could land on one of them and kill the process undrained).
  TROUPE_ASSIGN_OR_RETURN(std::vector<int> gpus, actors::resolve_gpus(cfg.gpus));
  if (gpus.empty()) {
    spdlog::info("no GPU worker: {} CPU worker(s)", cfg.cpu_workers);
  } else {
    std::string list;
    for (int g : gpus) list += (list.empty() ? "" : ",") + std::to_string(g);
    spdlog::info("GPU workers on CUDA devices {}; {} CPU worker(s) for models pinned to the CPU",
                 list, cfg.cpu_workers);
  }

  caf::actor_system_config caf_cfg;
  caf_cfg.set("scheduler.max-threads", static_cast<size_t>(cfg.actor_threads));
  // CAF 0.17's work-stealing workers, once idle, poll with 50 us sleeps for a while before they
  // block on a condition variable: every hop of a lightly loaded request would pay those sleeps.
  // Spin briefly, then block (a new job wakes the worker at once).
  caf_cfg.set("scheduler.policy", caf::atom_from_string(cfg.actor_scheduler));
  caf_cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
  // Where idle threads spin (8 or more hardware threads), the CAF threads spin as long as the
  // frontend and the workers: the frontend's hand-off to the router and a worker's to its batcher
  // then find a CAF thread awake instead of paying a condition-variable wake-up each (tens of
  // microseconds of a batch-1 request's latency on an idle host). An aggressive poll attempt
  // (CAF's queue check, with a steal attempt every 10) takes about 7 ns uncontended.
  const uint32_t idle_spin_us = cfg.idle_spin_us.value_or(actors::default_idle_spin_us());
  constexpr size_t kCafPollAttemptsPerMicrosecond = 100;
  if (idle_spin_us > 0 && cfg.actor_scheduler == "stealing") {
    caf_cfg.set("work-stealing.aggressive-poll-attempts",
                static_cast<size_t>(idle_spin_us) * kCafPollAttemptsPerMicrosecond);
    // A steal attempt locks another thread's queue: every 10th poll (CAF's default, for a spin
    // of 100 polls) would hammer the busy thread's queue for the whole spin. About every 2 us.
    caf_cfg.set("work-stealing.aggressive-steal-interval", size_t{200});
  }
  caf_cfg.set("logger.file-verbosity", caf::atom("quiet"));
  caf_cfg.set("logger.console-verbosity", caf::atom("quiet"));
  caf::actor_system sys{caf_cfg};

  actors::serving_metrics metrics;
  std::unique_ptr<metrics_endpoint> metrics_http;
  int metrics_port = 0;
  if (cfg.metrics_port > 0) {
    metrics_endpoint_options mo;
    mo.address = cfg.metrics_address;
    mo.port = cfg.metrics_port;
    std::vector<std::shared_ptr<prometheus::Collectable>> collectables{metrics.registry()};
    if (auto gpu = metrics.gpu_collector()) collectables.push_back(gpu);
    TROUPE_ASSIGN_OR_RETURN(metrics_http, metrics_endpoint::create(mo, std::move(collectables)));
    metrics_port = metrics_http->port();
  }
  if (!metrics.gpu_collector()) spdlog::info("NVML not available: no GPU metrics");

  actors::table_holder holder;
  actors::node_spawn_options so;
  so.config = cfg;
  so.gpus = gpus;
  so.detached_workers = cfg.detached_workers;
  so.worker_idle_spin_us = idle_spin_us;
  so.holder = &holder;
  so.metrics = &metrics;
  actors::node_handles node = actors::spawn_node(sys, so);

  spdlog::info("loading model repository {}", cfg.models_dir);
  auto report = actors::load_repository(sys, node, cfg.models_dir);
  if (!report) {
    actors::stop_node(sys, node);
    return report.error();
  }
  for (const auto& f : report->failures) spdlog::error("model failed to load: {}", f);
  spdlog::info("{} model versions ready, {} failures", report->versions_ready,
               report->failures.size());

  frontend_options fo;
  fo.listen = cfg.listen;
  fo.max_inflight = cfg.max_inflight;
  fo.max_message_bytes = cfg.max_message_bytes;
  fo.idle_spin_us = idle_spin_us;
  auto front = frontend::create(sys, node, holder, &metrics, fo);
  if (!front) {
    actors::stop_node(sys, node);
    return front.error();
  }

  // The KServe doors (gRPC here) share one request gateway and one shared-memory registry. The
  // gateway outlives the actors (they may hold its requests until they stop): it is destroyed
  // after await_all_actors_done, the doors before it.
  gateway_options gw_options;
  gw_options.max_inflight = cfg.max_inflight;
  auto gateway = request_gateway::create(sys, node, holder, &metrics, gw_options);
  if (!gateway) {
    (*front)->stop();
    actors::stop_node(sys, node);
    return gateway.error();
  }
  std::unique_ptr<shared_memory_registry> shm_registry;
  if (cfg.shared_memory) shm_registry = std::make_unique<shared_memory_registry>();
  int grpc_port = 0;
#if TROUPE_HAVE_GRPC
  std::unique_ptr<kserve_grpc_server> grpc_server;
  if (cfg.grpc_port > 0) {
    grpc_server_options go;
    go.port = cfg.grpc_port;
    go.max_message_bytes = cfg.max_message_bytes;
    auto g = kserve_grpc_server::create(go, **gateway, shm_registry.get());
    if (!g) {
      (*front)->stop();
      (*gateway)->stop();
      actors::stop_node(sys, node);
      return g.error();
    }
    grpc_server = std::move(*g);
    grpc_port = grpc_server->port();
  }
#else
  if (cfg.grpc_port > 0)
    spdlog::warn("built without gRPC (libgrpc++): no KServe gRPC door on port {}", cfg.grpc_port);
#endif

  spdlog::info("serving on {} (metrics port {}, gRPC port {})", (*front)->endpoint(), metrics_port,
               grpc_port);
  std::printf("{\"event\":\"ready\",\"endpoint\":%s,\"metrics_port\":%d,\"grpc_port\":%d}\n",
              json_string((*front)->endpoint()).c_str(), metrics_port, grpc_port);
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  spdlog::info("signal {}: draining ({} requests in flight)", sig,
               (*front)->inflight() + (*gateway)->inflight());
  (*front)->begin_drain();
  (*gateway)->begin_drain();
  const auto drain_end = std::chrono::steady_clock::now() + cfg.drain_timeout;
  const bool front_idle = (*front)->wait_idle(cfg.drain_timeout);
  const auto drain_left = std::chrono::duration_cast<std::chrono::milliseconds>(
      drain_end - std::chrono::steady_clock::now());
  const bool gateway_idle =
      (*gateway)->wait_idle(std::max(drain_left, std::chrono::milliseconds(0)));
  if (!front_idle || !gateway_idle)
    spdlog::warn("drain timeout: {} requests still in flight are cancelled",
                 (*front)->inflight() + (*gateway)->inflight());
  (*front)->stop();
  (*gateway)->stop();  // answers what is left CANCELLED: every KServe call now has its reply
#if TROUPE_HAVE_GRPC
  // Lets the last replies go out; a stream its client keeps open is cancelled at the deadline.
  if (grpc_server) grpc_server->shutdown(std::chrono::milliseconds(2000));
  grpc_server.reset();
#endif
  actors::stop_node(sys, node);
  sys.await_all_actors_done();
  gateway->reset();
  spdlog::info("stopped");
  spdlog::default_logger()->flush();
  return status::ok();
}

}  // namespace troupe::cluster
