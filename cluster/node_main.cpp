#include "cluster/node_main.hpp"

#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <pthread.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/gpu_worker.hpp"
#include "actors/metrics.hpp"
#include "actors/model_table.hpp"
#include "actors/node.hpp"
#include "actors/worker.hpp"
#include "cluster/frontend.hpp"
#include "cluster/kserve_http.hpp"
#include "cluster/logging.hpp"
#include "cluster/metrics_http.hpp"
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

/// node.yaml `http_threads`: 0 is a quarter of the hardware threads, 1 to 4.
uint32_t http_io_threads(uint32_t asked) {
  if (asked > 0) return asked;
  return std::clamp(std::thread::hardware_concurrency() / 4, 1u, 4u);
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
  if (o.http_port) cfg.http_port = *o.http_port;
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
  std::unique_ptr<metrics_http> metrics_door;
  int metrics_port = 0;
  if (cfg.metrics_port > 0) {
    metrics_http_options mo;
    mo.address = cfg.metrics_address;
    mo.port = cfg.metrics_port;
    std::vector<std::shared_ptr<prometheus::Collectable>> collectables{metrics.registry()};
    if (auto gpu = metrics.gpu_collector()) collectables.push_back(gpu);
    TROUPE_ASSIGN_OR_RETURN(metrics_door, metrics_http::create(mo, std::move(collectables)));
    metrics_port = metrics_door->port();
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

  // The KServe doors' shared pieces: one gateway onto the router (the same jobs as the ZeroMQ
  // frontend's) and one shared-memory registry, for HTTP and gRPC alike. Destroyed in reverse:
  // the gateway (whose pool may still hold replies' closures) before the HTTP door, and both
  // after the actors are done (they may hold gateway requests until then).
  std::unique_ptr<shared_memory_registry> shm;
  if (cfg.shared_memory) shm = std::make_unique<shared_memory_registry>();
  std::unique_ptr<kserve_http> http_door;
  gateway_options go;
  go.max_inflight = cfg.max_inflight;
  auto gateway = request_gateway::create(sys, node, holder, &metrics, go);
  if (!gateway) {
    (*front)->stop();
    actors::stop_node(sys, node);
    return gateway.error();
  }
  int http_port = 0;
  if (cfg.http_port > 0) {
    kserve_http_options ho;
    ho.server.address = "0.0.0.0";
    ho.server.port = cfg.http_port;
    ho.server.threads = http_io_threads(cfg.http_threads);
    ho.server.max_body_bytes = cfg.max_message_bytes;
    ho.server_version = TROUPE_VERSION;
    auto door = kserve_http::create(ho, **gateway, shm.get());
    if (!door) {
      (*front)->stop();
      (*gateway)->stop();
      actors::stop_node(sys, node);
      return door.error();
    }
    http_door = std::move(*door);
    http_port = http_door->port();
  }

  spdlog::info("serving on {} (KServe HTTP port {}, metrics port {})", (*front)->endpoint(),
               http_port, metrics_port);
  std::printf("{\"event\":\"ready\",\"endpoint\":%s,\"metrics_port\":%d,\"http_port\":%d}\n",
              json_string((*front)->endpoint()).c_str(), metrics_port, http_port);
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  spdlog::info("signal {}: draining ({} requests in flight)", sig,
               (*front)->inflight() + (*gateway)->inflight());
  // Every door answers new requests UNAVAILABLE from here; readiness turns 503.
  (*front)->begin_drain();
  (*gateway)->begin_drain();
  const auto drain_deadline = std::chrono::steady_clock::now() + cfg.drain_timeout;
  auto left = [&] {
    return std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                        drain_deadline - std::chrono::steady_clock::now()),
                    std::chrono::milliseconds(0));
  };
  const bool front_idle = (*front)->wait_idle(left());
  const bool gateway_idle = (*gateway)->wait_idle(left());
  if (!front_idle || !gateway_idle)
    spdlog::warn("drain timeout: {} requests still in flight are cancelled",
                 (*front)->inflight() + (*gateway)->inflight());
  (*front)->stop();
  // The gateway answers what the actors still hold (CANCELLED) before the HTTP door stops, so
  // the door writes those replies; then it stops accepting and closes its connections.
  (*gateway)->stop();
  if (http_door) http_door->stop(std::chrono::seconds(5));
  actors::stop_node(sys, node);
  sys.await_all_actors_done();
  spdlog::info("stopped");
  spdlog::default_logger()->flush();
  return status::ok();
}

}  // namespace troupe::cluster
