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
#include <future>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "actors/caf_compat.hpp"
#include "actors/fault_control.hpp"
#include "actors/gpu_worker.hpp"
#include "actors/node.hpp"
#include "actors/worker.hpp"
#include "cluster/frontend.hpp"
#include "serving/fault_plan.hpp"
#include "serving/log_fields.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/readiness.hpp"
#if TROUPE_HAVE_GRPC
#include "cluster/kserve_grpc_server.hpp"
#endif
#include "cluster/kserve_http.hpp"
#include "cluster/log_rate_limiter.hpp"
#include "cluster/logging.hpp"
#include "cluster/management_socket.hpp"
#include "cluster/metrics_http.hpp"
#include "cluster/request_gateway.hpp"
#include "cluster/shared_memory_registry.hpp"
#include "runtime/tuning_records_file.hpp"
#include "cluster/remote_workers.hpp"
#include "cluster/worker_link.hpp"
#include "cluster/worker_node.hpp"

namespace troupe::cluster {
namespace {

/// The main thread's own wake-up: the load's completion callback sends it (pthread_kill) so that
/// the main thread can wait for "a shutdown signal or the end of the load" in one sigwait.
constexpr int load_done_signal = SIGUSR1;

/// SIGTERM, SIGINT and the load-done signal are blocked in every thread (they inherit the mask
/// from here) and taken synchronously with sigwait by the main thread: no async-signal-safety
/// puzzles.
sigset_t waited_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, load_done_signal);
  return set;
}

/// Blocks until SIGTERM or SIGINT (returned) or, when `load` is given, until the load has
/// finished (returns 0). A stray load-done signal (another process's SIGUSR1) is ignored.
int wait_for_shutdown(const sigset_t& set, const std::future<expected<actors::load_report>>* load) {
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig != load_done_signal) return sig;
    if (load && load->wait_for(std::chrono::seconds(0)) == std::future_status::ready) return 0;
  }
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

/// A JSON string literal (a failure reason may hold any byte below 0x20 too).
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

uint32_t http_io_threads(uint32_t asked) {
  if (asked > 0) return asked;
  return std::clamp(std::thread::hardware_concurrency() / 4, 1u, 4u);
}

/// The node's listeners. All of them bind before the repository loads, so the node is live (and
/// not ready: serving::evaluate_readiness, which every door asks) while its models load; they
/// drain together on SIGTERM.
///
/// The KServe doors share one request gateway and one shared-memory registry. Ownership and
/// order: the gateway outlives the actors (they may hold its requests until they stop), so it is a
/// member destroyed with the doors after run_serve has awaited the actors. The doors refer to the
/// gateway and the registry and are destroyed before them (declared after them); stop() has
/// answered every KServe request by then, so no reply closure outlives its door.
class front_doors {
 public:
  status start(caf::actor_system& sys, const actors::node_handles& node,
               serving::table_holder& holder, serving::serving_metrics* metrics,
               const serving::node_config& cfg, uint32_t idle_spin_us,
               std::shared_ptr<serving::fault_plan> faults) {
    frontend_options fo;
    fo.faults = faults;
    fo.listen = cfg.listen;
    fo.max_inflight = cfg.max_inflight;
    fo.max_outstanding_per_connection = cfg.max_outstanding_per_connection;
    fo.max_message_bytes = cfg.max_message_bytes;
    fo.idle_spin_us = idle_spin_us;
    fo.readiness = cfg.readiness;
    TROUPE_ASSIGN_OR_RETURN(zmq_, frontend::create(sys, node, holder, metrics, fo));

    gateway_options gw;
    gw.max_inflight = cfg.max_inflight;
    TROUPE_ASSIGN_OR_RETURN(gateway_, request_gateway::create(sys, node, holder, metrics, gw));
    if (cfg.shared_memory) shm_ = std::make_unique<shared_memory_registry>();
    control_ = std::make_unique<actors::model_control>(sys, node.manager, cfg.control_mode);
    fault_control_ = std::make_unique<actors::fault_control>(std::move(faults));
    if (!cfg.management_token_file.empty()) {
      // One token for the management socket and the HTTP and gRPC repository endpoints.
      TROUPE_ASSIGN_OR_RETURN(std::string token, read_token_file(cfg.management_token_file));
      control_->set_token(std::move(token));
    } else if (cfg.control_mode == serving::model_control_mode::explicit_ &&
               (cfg.http_port > 0 || cfg.grpc_port > 0)) {
      spdlog::warn(
          "model control over HTTP and gRPC is open to whoever reaches their ports (explicit "
          "mode, no management_token_file): set one, or keep the ports on a private network");
    }
    if (!cfg.management_listen.empty()) {
      management_options mo;
      mo.listen = cfg.management_listen;
      TROUPE_ASSIGN_OR_RETURN(management_,
                              management_socket::create(mo, *control_, *fault_control_));
    }
    if (cfg.http_port > 0) {
      kserve_http_options ho;
      ho.server.address = "0.0.0.0";
      ho.server.port = cfg.http_port;
      ho.server.threads = http_io_threads(cfg.http_threads);
      ho.server.max_body_bytes = cfg.max_message_bytes;
      ho.server_version = TROUPE_VERSION;
      ho.readiness = cfg.readiness;
      ho.control = control_.get();
      TROUPE_ASSIGN_OR_RETURN(http_, kserve_http::create(ho, *gateway_, shm_.get()));
      http_port_ = http_->port();
    }
#if TROUPE_HAVE_GRPC
    if (cfg.grpc_port > 0) {
      grpc_server_options go;
      go.port = cfg.grpc_port;
      go.max_message_bytes = cfg.max_message_bytes;
      go.readiness = cfg.readiness;
      go.control = control_.get();
      TROUPE_ASSIGN_OR_RETURN(grpc_, kserve_grpc_server::create(go, *gateway_, shm_.get()));
      grpc_port_ = grpc_->port();
    }
#else
    if (cfg.grpc_port > 0)
      spdlog::warn("built without gRPC (libgrpc++): no KServe gRPC door on port {}", cfg.grpc_port);
#endif
    return status::ok();
  }
  /// The ZeroMQ endpoint as bound.
  const std::string& endpoint() const {
    return zmq_->endpoint();
  }
  /// `"endpoint":...,"grpc_port":N,"http_port":N` for the node's JSON event lines (0: that door
  /// is off).
  std::string json_fields() const {
    return "\"endpoint\":" + json_string(endpoint()) +
           ",\"grpc_port\":" + std::to_string(grpc_port_) +
           ",\"http_port\":" + std::to_string(http_port_) +
           (management_ ? ",\"management\":" + json_string(management_->endpoint()) : "");
  }
  void begin_drain() {
    if (zmq_) zmq_->begin_drain();
    if (gateway_) gateway_->begin_drain();
  }
  uint32_t inflight() const {
    return (zmq_ ? zmq_->inflight() : 0) + (gateway_ ? gateway_->inflight() : 0);
  }
  /// Waits for every door within one deadline.
  bool wait_idle(std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    const auto left = [&] {
      return std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                          end - std::chrono::steady_clock::now()),
                      std::chrono::milliseconds(0));
    };
    const bool zmq_idle = !zmq_ || zmq_->wait_idle(left());
    const bool gateway_idle = !gateway_ || gateway_->wait_idle(left());
    return zmq_idle && gateway_idle;
  }
  /// Before the actors stop: the ZeroMQ door answers what it still has in flight CANCELLED (its
  /// request frames stay allocated until it is destroyed) and closes; the gateway lets its bridge
  /// actors go, so that the actor system can finish.
  void stop_before_actors() {
    management_.reset();  // no model operation starts while the actors stop
    if (zmq_) zmq_->stop();
    if (gateway_) gateway_->release_actors();
  }
  /// After the actors are done: the KServe requests still unanswered get CANCELLED (no worker reads
  /// their inputs any more: a gRPC request message dies with its call), then the KServe listeners
  /// close.
  void stop() {
    stop_before_actors();
    if (gateway_) gateway_->stop();  // every KServe call now has its reply
    // The HTTP door writes those replies, then stops accepting and closes its connections.
    if (http_) http_->stop(std::chrono::seconds(5));
#if TROUPE_HAVE_GRPC
    // Lets the last replies go out; a stream its client keeps open is cancelled at the deadline.
    if (grpc_) grpc_->shutdown(std::chrono::milliseconds(2000));
#endif
  }

 private:
  std::unique_ptr<frontend> zmq_;
  std::unique_ptr<request_gateway> gateway_;
  std::unique_ptr<shared_memory_registry> shm_;
  std::unique_ptr<actors::model_control> control_;  // the repository extension of both doors
  std::unique_ptr<actors::fault_control> fault_control_;  // the management socket's fault ops
  std::unique_ptr<management_socket> management_;  // declared after both controls: goes first
  std::unique_ptr<kserve_http> http_;
#if TROUPE_HAVE_GRPC
  std::unique_ptr<kserve_grpc_server> grpc_;
#endif
  int grpc_port_ = 0;
  int http_port_ = 0;
};

/// SIGTERM/SIGINT: readiness turns false at once, the doors answer new requests UNAVAILABLE and
/// finish those in flight (up to drain_timeout), then every actor stops. A worker in the middle
/// of compiling a replica finishes that compile first (it cannot be interrupted); the manager's
/// other pending loads are abandoned, and so are model files still being read (a read blocked on
/// a hung mount keeps a thread of its own, which holds up neither the actors nor the exit).
void drain_and_stop(int sig, front_doors& doors, serving::table_holder& holder,
                    caf::actor_system& sys, const actors::node_handles& node,
                    std::chrono::milliseconds drain_timeout, remote_workers* joined) {
  if (sig != 0) spdlog::info("signal {}: draining ({} requests in flight)", sig, doors.inflight());
  holder.draining.store(true);
  doors.begin_drain();
  if (!doors.wait_idle(drain_timeout))
    spdlog::warn("drain timeout: {} requests still in flight are cancelled", doors.inflight());
  doors.stop_before_actors();
  if (joined) joined->stop();
  actors::stop_node(sys, node);
  sys.await_all_actors_done();
  doors.stop();
}

/// The node's tuning records file (node_config::tuning_records_file), its records read into the
/// process's; null when the node has none. A file that cannot be used is one warning: the node
/// starts without it (its convolutions are timed) and replaces it once it records new choices.
std::shared_ptr<runtime::tuning_records_file> open_tuning_records(const std::string& path) {
  if (path.empty()) return nullptr;
  auto file = std::make_shared<runtime::tuning_records_file>(path, [path](const expected<bool>& r) {
    if (!r) {
      spdlog::warn("tuning records not saved: {}", r.error().to_string());
    } else if (*r) {
      spdlog::info("tuning records saved to {} ({} choices)", path,
                   kernels::tuning_records::process().size());
    }
  });
  const expected<size_t> loaded = file->load();
  if (!loaded) {
    spdlog::warn("tuning records file ignored, convolutions are timed: {}",
                 loaded.error().to_string());
  } else {
    spdlog::info("tuning records: {} recorded choices read from {}", *loaded, path);
  }
  return file;
}

/// The node's fault plan (node.yaml fault_injection: true; docs/faults.md) with the rules of
/// `faults:`, each firing counted (troupe_faults_fired_total{kind,site}) and logged ("fault
/// fired"). The observer refers to `metrics`, which outlives every holder of the plan (the
/// actors are awaited and the doors stopped before run_serve returns).
expected<std::shared_ptr<serving::fault_plan>> make_fault_plan(const serving::node_config& cfg,
                                                               serving::serving_metrics& metrics) {
  auto plan = std::make_shared<serving::fault_plan>();
  for (size_t i = 0; i < cfg.faults.size(); ++i)
    if (auto id = plan->add(cfg.faults[i]); !id)  // parse_node_config checked them already
      return id.error().with_context("faults[" + std::to_string(i) + "]");
  // A rule without a limit on a busy hop fires for every message: the counter counts each
  // firing, the log takes about 20 lines a second of them and says how many it left out.
  auto lines = std::make_shared<log_rate_limiter>(20.0, 100.0);
  plan->set_observer(
      [&metrics, lines](const serving::fault_rule& r, uint64_t id, std::string_view site) {
        const std::string_view kind = serving::to_string(r.kind);
        metrics.count_fault_fired(kind, site);
        const log_rate_limiter::decision d = lines->admit(log_rate_limiter::clock::now());
        if (!d.admit) return;
        serving::log_event(serving::log_level::warn, "fault fired",
                           {{"kind", kind},
                            {"target", r.target},
                            {"site", site},
                            {"rule", id},
                            {"suppressed_before", d.suppressed_before}});
      });
  serving::log_event(
      serving::log_level::warn,
      "FAULT INJECTION IS ON: this node fails, delays, drops or duplicates work on purpose when "
      "told to (node.yaml faults:, the management socket, troupe.fault request parameters). For "
      "tests only: never on a node that serves real traffic",
      {{"fault_rules", cfg.faults.size()},
       {"management", cfg.management_listen.empty() ? std::string_view("off")
                                                    : std::string_view(cfg.management_listen)}});
  return plan;
}

}  // namespace

status run_serve(const serve_options& o) {
  serving::node_config cfg;
  if (!o.config_path.empty()) {
    TROUPE_ASSIGN_OR_RETURN(cfg, serving::load_node_config(o.config_path));
  }
  if (!o.models_dir.empty()) cfg.models_dir = o.models_dir;
  if (o.listen) cfg.listen = *o.listen;
  if (o.metrics_port) cfg.metrics_port = *o.metrics_port;
  if (o.grpc_port) cfg.grpc_port = *o.grpc_port;
  if (o.http_port) cfg.http_port = *o.http_port;
  if (o.log_level) cfg.log_level = *o.log_level;
  if (o.control_mode) {
    TROUPE_ASSIGN_OR_RETURN(cfg.control_mode, serving::parse_model_control_mode(*o.control_mode));
  }
  if (!o.load_models.empty()) cfg.load_models = o.load_models;
  if (o.repository_poll_secs) cfg.repository_poll = std::chrono::seconds(*o.repository_poll_secs);
  if (o.management_listen) cfg.management_listen = *o.management_listen;
  if (o.tuning_records_file) cfg.tuning_records_file = *o.tuning_records_file;
  if (o.max_outstanding_per_connection)
    cfg.max_outstanding_per_connection = *o.max_outstanding_per_connection;
  if (o.worker_processes) cfg.worker_processes = *o.worker_processes;
  if (o.worker_memory_budget_mb) cfg.worker_memory_budget_mb = *o.worker_memory_budget_mb;
  if (o.role) {
    TROUPE_ASSIGN_OR_RETURN(cfg.role, serving::parse_node_role(*o.role));
  }
  if (!o.join.empty()) cfg.join = o.join;
  if (o.join_dns) cfg.join_dns = *o.join_dns;
  if (o.workers_listen) cfg.workers_listen = *o.workers_listen;
  if (o.node_name) cfg.node_name = *o.node_name;
  if (o.model_cache_dir) cfg.model_cache_dir = *o.model_cache_dir;
  if (cfg.role == serving::node_role::worker) {
    if (o.gpus) {
      TROUPE_ASSIGN_OR_RETURN(cfg.gpus, parse_gpus(*o.gpus));
    }
    TROUPE_RETURN_IF_ERROR(setup_json_logging(cfg.log_level));
    const sigset_t signals = waited_signals();
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    worker_node_options wo;
    TROUPE_ASSIGN_OR_RETURN(wo.gpus, actors::resolve_gpus(cfg.gpus));
    wo.config = cfg;
    return run_worker_node(wo);
  }
  if (!cfg.join.empty() || !cfg.join_dns.empty())
    return invalid_argument("--join and --join-dns are for worker nodes (--role worker)");
  // A control node serves through workers of worker nodes only; `all` may take them too.
  std::optional<std::string> workers_listen = cfg.workers_listen;
  if (cfg.role == serving::node_role::control) {
    cfg.gpus = std::vector<int>{};
    cfg.cpu_workers = 0;
    if (!workers_listen) workers_listen = "tcp://*:5600";
  }
  if (workers_listen && workers_listen->empty()) workers_listen.reset();
  if (!cfg.load_models.empty() && cfg.control_mode != serving::model_control_mode::explicit_)
    return invalid_argument("--load-model (load_models) needs --model-control-mode explicit");
  if (o.gpus) {
    TROUPE_ASSIGN_OR_RETURN(cfg.gpus, parse_gpus(*o.gpus));
  }
  if (cfg.models_dir.empty())
    return invalid_argument("no model repository: pass --models DIR or set `models` in the config");
  TROUPE_RETURN_IF_ERROR(setup_json_logging(cfg.log_level));

  const sigset_t signals = waited_signals();
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

  // Before the actors: the model manager saves through it until every actor is done.
  const std::shared_ptr<runtime::tuning_records_file> tuning_records =
      open_tuning_records(cfg.tuning_records_file);

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

  serving::serving_metrics metrics;
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

  // Declared after `metrics`, which its observer refers to. Null: fault injection off (then
  // node.yaml has no `faults:`: parse_node_config refuses them without fault_injection).
  std::shared_ptr<serving::fault_plan> faults;
  if (cfg.fault_injection) {
    TROUPE_ASSIGN_OR_RETURN(faults, make_fault_plan(cfg, metrics));
  }

  // Worker processes (docs/worker-processes.md): the launcher outlives the actors (declared
  // before the actor system's users stop: the links it made are gone once the workers are).
  std::unique_ptr<worker_launcher> launcher;
  std::shared_ptr<actors::worker_process_options> processes;
  if (cfg.worker_processes) {
    worker_launcher_options lo;
    lo.log_level = cfg.log_level;
    TROUPE_ASSIGN_OR_RETURN(launcher, worker_launcher::create(lo));
    processes = std::make_shared<actors::worker_process_options>();
    processes->channels = launcher->factory();
    processes->heartbeat_interval = cfg.worker_heartbeat_interval;
    processes->heartbeat_timeout = cfg.worker_heartbeat_timeout;
    processes->shared_memory_bytes = size_t{cfg.worker_shared_memory_mb} << 20;
    // Without a file of the operator's, the node keeps the processes' choices in its private
    // directory for as long as it runs: a process restarted after a crash adopts them.
    processes->tuning_records_file = cfg.tuning_records_file.empty()
                                         ? launcher->directory() + "/tuning-records"
                                         : cfg.tuning_records_file;
    spdlog::info("worker processes on: one per worker, endpoints in {}", launcher->directory());
  }

  serving::table_holder holder;
  actors::node_spawn_options so;
  so.config = cfg;
  so.gpus = gpus;
  so.detached_workers = cfg.detached_workers;
  so.worker_idle_spin_us = idle_spin_us;
  so.holder = &holder;
  so.metrics = &metrics;
  if (tuning_records)
    so.after_model_load = [tuning_records] { tuning_records->save_in_background(); };
  so.worker_processes = processes;
  so.faults = faults;
  so.cluster_control = workers_listen.has_value();
  actors::node_handles node = actors::spawn_node(sys, so);

  // Workers of worker nodes join here (docs/cluster.md); stopped before the actors.
  std::unique_ptr<remote_workers> joined;
  if (workers_listen) {
    auto r = remote_workers::start(sys, node, so, *workers_listen);
    if (!r) {
      actors::stop_node(sys, node);
      sys.await_all_actors_done();
      return r.error();
    }
    joined = std::move(*r);
    spdlog::info("control node: workers join at {}", joined->endpoint());
  }

  front_doors doors;
  if (status s = doors.start(sys, node, holder, &metrics, cfg, idle_spin_us, faults); !s.is_ok()) {
    // The actors use `metrics` and `holder`, which go before `sys` on return: wait for them here
    // (returning at once crashed a node that failed to start, in 6 of 60 starts), after the doors
    // that did start have let go of the actors (as drain_and_stop does).
    doors.stop_before_actors();
    if (joined) joined->stop();
    actors::stop_node(sys, node);
    sys.await_all_actors_done();
    doors.stop();
    return s;
  }
  spdlog::info("listening on {} (metrics port {}); loading model repository {}", doors.endpoint(),
               metrics_port, cfg.models_dir);
  const std::string workers_field =
      joined ? ",\"workers_endpoint\":" + json_string(joined->endpoint()) : std::string();
  std::printf("{\"event\":\"listening\",%s,\"metrics_port\":%d%s}\n", doors.json_fields().c_str(),
              metrics_port, workers_field.c_str());
  std::fflush(stdout);

  // The load runs on the actors; this thread waits for it or for a signal, whichever comes first.
  auto outcome = std::make_shared<std::promise<expected<actors::load_report>>>();
  std::future<expected<actors::load_report>> loaded = outcome->get_future();
  const pthread_t main_thread = pthread_self();
  actors::load_repository_async(sys, node, cfg.models_dir, cfg.load_delay,
                                [outcome, main_thread](expected<actors::load_report> r) {
                                  outcome->set_value(std::move(r));
                                  pthread_kill(main_thread, load_done_signal);
                                });
  if (const int sig = wait_for_shutdown(signals, &loaded); sig != 0) {
    spdlog::info("signal {} while loading the model repository: stopping", sig);
    drain_and_stop(sig, doors, holder, sys, node, cfg.drain_timeout, joined.get());
    spdlog::info("stopped");
    spdlog::default_logger()->flush();
    return status::ok();
  }
  expected<actors::load_report> report = loaded.get();
  if (!report) {
    drain_and_stop(0, doors, holder, sys, node, cfg.drain_timeout, joined.get());
    return report.error();
  }
  for (const auto& f : report->failures) spdlog::error("model failed to load: {}", f);
  spdlog::info("{} model versions ready, {} failures", report->versions_ready,
               report->failures.size());
  if (report->versions_waiting > 0)
    spdlog::info("{} model versions wait for a worker of their kind to join", report->versions_waiting);

  const serving::node_readiness readiness = serving::evaluate_readiness(holder, cfg.readiness);
  if (readiness.ready) {
    spdlog::info("ready: serving on {} (metrics port {})", doors.endpoint(), metrics_port);
    std::printf("{\"event\":\"ready\",%s,\"metrics_port\":%d%s}\n", doors.json_fields().c_str(),
                metrics_port, workers_field.c_str());
  } else {
    // Triton keeps serving the models that loaded; so does troupe, reporting not ready.
    spdlog::warn("not ready (readiness {}): {}; serving the models that loaded on {}",
                 serving::readiness_policy_name(cfg.readiness), readiness.reason, doors.endpoint());
    std::printf("{\"event\":\"loaded\",\"ready\":false,%s,\"metrics_port\":%d%s,\"reason\":%s}\n",
                doors.json_fields().c_str(), metrics_port, workers_field.c_str(),
                json_string(readiness.reason).c_str());
  }
  std::fflush(stdout);

  const int sig = wait_for_shutdown(signals, nullptr);
  drain_and_stop(sig, doors, holder, sys, node, cfg.drain_timeout, joined.get());
  spdlog::info("stopped");
  spdlog::default_logger()->flush();
  return status::ok();
}

}  // namespace troupe::cluster
