#include "cluster/worker_node.hpp"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <arpa/inet.h>
#include <netdb.h>
#include <optional>
#include <set>

#include "actors/supervisor.hpp"
#include "cluster/child_process.hpp"
#include "cluster/curve_keys.hpp"
#include "cluster/worker_process.hpp"
#include "serving/log_fields.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using namespace troupe::serving;
using clock_type = std::chrono::steady_clock;

namespace {

/// One worker process of the node: a device, joined to one control node.
struct member {
  std::string control;  // the control node's endpoint
  std::vector<std::string> argv;
  std::string label;  // "cuda:0 -> tcp://control:5600"
  std::optional<child_process> child;
  uint32_t failures = 0;                 // in a row
  clock_type::time_point started{};      // of the running process
  clock_type::time_point restart_at{};   // when not running
  bool leaving = false;  // its control node left the DNS name: asked to stop, not restarted
};

struct device_slot {
  worker_kind kind;
  int device;
  uint32_t index;
};

std::string default_cache_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/troupe/models";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/troupe/models";
  return "/tmp/troupe-models-" + std::to_string(getuid());
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "worker";
  return name;
}

std::string json_list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ",\"" : "\"") + v[i] + "\"";
  return out + "]";
}

/// The control nodes' endpoints: `join`, and every IPv4 address `join_dns` (NAME:PORT) resolves
/// to now (an error when the name does not resolve: a Service with no ready pod yet, a typo).
expected<std::set<std::string>> control_endpoints(const node_config& cfg) {
  std::set<std::string> out(cfg.join.begin(), cfg.join.end());
  if (cfg.join_dns.empty()) return out;
  const size_t colon = cfg.join_dns.rfind(':');
  const std::string host = cfg.join_dns.substr(0, colon);
  const std::string port = cfg.join_dns.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return status(error_code::unavailable,
                  "--join-dns " + cfg.join_dns + ": " + std::string(gai_strerror(rc)));
  for (addrinfo* a = found; a; a = a->ai_next) {
    char ip[INET_ADDRSTRLEN] = {};
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    if (inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip))) out.insert("tcp://" + std::string(ip) + ":" + port);
  }
  freeaddrinfo(found);
  return out;
}

}  // namespace

status run_worker_node(const worker_node_options& o) {
  const node_config& cfg = o.config;
  if (cfg.join.empty() && cfg.join_dns.empty())
    return invalid_argument(
        "a worker node needs --join tcp://CONTROL:5600 or --join-dns NAME:PORT (its control nodes)");
  for (const auto& j : cfg.join)
    if (j.rfind("tcp://", 0) != 0)
      return invalid_argument("--join " + j + ": a control node's tcp://HOST:PORT endpoint");
  if (!cfg.join_dns.empty()) {
    const size_t colon = cfg.join_dns.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == cfg.join_dns.size() ||
        cfg.join_dns.find_first_not_of("0123456789", colon + 1) != std::string::npos)
      return invalid_argument("--join-dns " + cfg.join_dns + ": NAME:PORT (a DNS name and a port)");
  }
  if (cfg.curve_secret_key_file.empty() != cfg.curve_server_key_file.empty())
    return invalid_argument(
        "CURVE on a worker node needs both curve_secret_key_file (its key) and "
        "curve_server_key_file (the control node's public key)");
  if (!cfg.curve_secret_key_file.empty()) {
    // Read once here, so that a wrong file is an error at start, not a restart loop.
    TROUPE_RETURN_IF_ERROR(read_curve_secret_key(cfg.curve_secret_key_file).take_status());
    TROUPE_RETURN_IF_ERROR(read_curve_public_key(cfg.curve_server_key_file).take_status());
  }
  if (o.gpus.empty() && cfg.cpu_workers == 0)
    return invalid_argument("a worker node with no GPU and cpu_workers 0 has nothing to offer");
  std::string executable = o.executable;
  if (executable.empty()) {
    std::error_code ec;
    executable = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec) return io_error("cannot find the troupe binary (/proc/self/exe): " + ec.message());
  }
  const std::string name = cfg.node_name.empty() ? host_name() : cfg.node_name;
  const std::string cache = cfg.model_cache_dir.empty() ? default_cache_dir() : cfg.model_cache_dir;

  // The caller blocked SIGTERM and SIGINT in every thread: they are read here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  const int stop_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (stop_fd < 0) return io_error(std::string("signalfd: ") + std::strerror(errno));

  std::vector<device_slot> devices;
  for (int g : o.gpus) devices.push_back({worker_kind::gpu, g, static_cast<uint32_t>(devices.size())});
  for (uint32_t i = 0; i < cfg.cpu_workers; ++i)
    devices.push_back({worker_kind::cpu, 0, static_cast<uint32_t>(devices.size())});

  auto make_member = [&](const device_slot& d, const std::string& control) {
    member m;
    m.control = control;
    const std::string device_label =
        d.kind == worker_kind::gpu ? "cuda:" + std::to_string(d.device) : "cpu";
    m.label = device_label + " -> " + control;
    worker_main_options w;
    w.join = control;
    // Several CPU workers of one node: each its own place in the cluster.
    w.node_name = d.kind == worker_kind::cpu && cfg.cpu_workers > 1
                      ? name + "/cpu" + std::to_string(d.index)
                      : name;
    w.cache_dir = cache;
    w.shm_bytes = size_t{cfg.worker_shared_memory_mb} << 20;
    w.kind = d.kind;
    w.index = d.index;
    w.device_index = d.device;
    w.compute_threads = cfg.compute_threads;
    w.fault_injection = cfg.fault_injection;
    w.tuning_records_file = cfg.tuning_records_file;
    w.memory_budget_bytes = static_cast<size_t>(cfg.worker_memory_budget_mb) << 20;
    w.heartbeat_interval = cfg.node_heartbeat_interval;
    w.heartbeat_timeout = cfg.node_heartbeat_timeout;
    w.link_connections = cfg.node_link_connections;
    w.log_level = cfg.log_level;
    // As a local worker process's: polls this long after a message before it sleeps.
    w.idle_spin_us = cfg.idle_spin_us.value_or(default_idle_spin_us());
    w.curve_secret_key_file = cfg.curve_secret_key_file;
    w.curve_server_key_file = cfg.curve_server_key_file;
    m.argv = worker_command_line(executable, w);
    return m;
  };

  std::vector<member> members;
  const restart_backoff backoff;
  auto start = [&](member& m) {
    auto child = child_process::start(m.argv, -1, -1);
    if (!child) {
      ++m.failures;
      m.restart_at = clock_type::now() + restart_delay(backoff, m.failures);
      log_event(log_level::error, "worker node: cannot start a worker process",
                {{"worker", m.label}, {"reason", child.error().to_string()}});
      return;
    }
    m.child.emplace(std::move(*child));
    m.started = clock_type::now();
    log_event(log_level::info, "worker node: worker process started",
              {{"worker", m.label}, {"pid", static_cast<int64_t>(m.child->pid())}});
  };
  std::set<std::string> joined;  // the control endpoints the members are for
  // Members for control nodes that appeared; those of control nodes that went are asked to stop.
  auto follow = [&](const std::set<std::string>& controls) {
    for (const std::string& c : controls) {
      if (joined.count(c)) continue;
      log_event(log_level::info, "worker node: joining a control node", {{"control", c}});
      for (const device_slot& d : devices) {
        members.push_back(make_member(d, c));
        start(members.back());
      }
    }
    for (member& m : members)
      if (!controls.count(m.control) && !m.leaving) {
        log_event(log_level::info, "worker node: a control node left the DNS name",
                  {{"control", m.control}});
        m.leaving = true;
        if (m.child) m.child->send_signal(SIGTERM);
      }
    joined = controls;
  };
  const auto dns_refresh = std::chrono::seconds(5);
  auto next_resolve = clock_type::now();
  auto resolve = [&] {
    next_resolve = clock_type::now() + dns_refresh;
    auto controls = control_endpoints(cfg);
    if (!controls) {
      log_event(log_level::warn, "worker node: control nodes not resolved",
                {{"reason", controls.error().to_string()}});
      return;  // the members keep what they had
    }
    follow(*controls);
  };
  resolve();
  std::vector<std::string> listed(joined.begin(), joined.end());
  spdlog::info("worker node {}: {} worker process(es) joining {}", name, members.size(),
               json_list(listed));
  std::printf("{\"event\":\"joining\",\"node\":\"%s\",\"join\":%s,\"workers\":%zu}\n", name.c_str(),
              json_list(listed).c_str(), members.size());
  std::fflush(stdout);

  for (;;) {
    std::vector<pollfd> fds{{stop_fd, POLLIN, 0}};
    auto next = clock_type::now() + std::chrono::seconds(1);
    if (!cfg.join_dns.empty()) next = std::min(next, next_resolve);
    for (member& m : members) {
      if (m.child && m.child->exit_fd() >= 0)
        fds.push_back({m.child->exit_fd(), POLLIN, 0});
      else if (!m.child && !m.leaving)
        next = std::min(next, m.restart_at);
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock_type::now());
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(wait.count(), 0)));
    if (ready < 0 && errno != EINTR) return io_error(std::string("poll: ") + std::strerror(errno));
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      [[maybe_unused]] ssize_t n = read(stop_fd, &info, sizeof(info));
      spdlog::info("worker node: signal {}: stopping", info.ssi_signo);
      break;
    }
    const auto now = clock_type::now();
    for (member& m : members) {
      if (m.child) {
        const std::string ended = m.child->reap();
        if (ended.empty()) continue;
        m.child.reset();
        if (m.leaving) continue;
        // Up long enough: healthy again, its next failure waits the initial delay.
        if (now - m.started >= backoff.reset_after) m.failures = 0;
        ++m.failures;
        const auto delay = restart_delay(backoff, m.failures);
        m.restart_at = now + delay;
        log_event(log_level::warn, "worker node: worker process ended",
                  {{"worker", m.label}, {"how", ended}, {"attempt", m.failures},
                   {"restart_in_ms", static_cast<int64_t>(delay.count())}});
      } else if (!m.leaving && now >= m.restart_at) {
        start(m);
      }
    }
    members.erase(std::remove_if(members.begin(), members.end(),
                                 [](const member& m) { return m.leaving && !m.child; }),
                  members.end());
    if (!cfg.join_dns.empty() && now >= next_resolve) resolve();
  }
  // Each process says bye to its control node on SIGTERM; what is still there after the grace
  // period is killed.
  for (member& m : members)
    if (m.child) m.child->send_signal(SIGTERM);
  const auto deadline = clock_type::now() + o.stop_grace;
  for (member& m : members) {
    while (m.child && clock_type::now() < deadline) {
      if (!m.child->reap().empty()) m.child.reset();
      else ::poll(nullptr, 0, 20);
    }
    if (m.child) (void)m.child->kill_and_reap();
  }
  ::close(stop_fd);
  spdlog::info("worker node {}: stopped", name);
  spdlog::default_logger()->flush();
  return status::ok();
}

}  // namespace troupe::cluster
