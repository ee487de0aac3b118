#include "cluster/worker_link.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>
#include <zmq.hpp>

#include "cluster/child_process.hpp"
#include "cluster/message_outbox.hpp"
#include "cluster/worker_codec.hpp"
#include "cluster/worker_process.hpp"
#include "core/thread_name.hpp"
#include "serving/log_fields.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using namespace troupe::serving;
using clock_type = std::chrono::steady_clock;

/// The descriptor number the shared memory has in a worker process (its --shm-fd).
constexpr int worker_shm_fd = 3;
/// A worker process's messages are small (tensors travel in shared memory): a larger one is a
/// broken or hostile process, and ZeroMQ drops its connection.
constexpr int64_t max_worker_message_bytes = int64_t{16} << 20;

struct worker_launcher::shared {
  zmq::context_t context{1};
  std::string directory;
  std::string executable;
  std::string log_level;
  std::atomic<uint64_t> links{0};  // endpoints made: each link binds a fresh one

  ~shared() {
    std::error_code ec;
    if (!directory.empty()) std::filesystem::remove_all(directory, ec);
  }
};

namespace {

/// One worker process and its socket; see worker_link.hpp.
class worker_link final : public worker_channel {
 public:
  worker_link(std::shared_ptr<worker_launcher::shared> shared, worker_process_spec spec,
              worker_channel_events events)
      : shared_(std::move(shared)), spec_(std::move(spec)), events_(std::move(events)) {}

  ~worker_link() override {
    stopping_.store(true);
    outbox_.close();
    outbox_.wake();
    if (thread_.joinable()) thread_.join();
  }

  /// Starts the thread, which binds, starts the process and reports how that went.
  status start() {
    if (!outbox_.ok()) return io_error("eventfd: " + std::string(std::strerror(errno)));
    std::promise<status> started;
    auto result = started.get_future();
    try {
      thread_ = std::thread([this, &started] {
        name_this_thread("worker-link-" + std::to_string(spec_.index));
        run(started);
      });
    } catch (const std::system_error& e) {
      return internal_error(std::string("cannot start the worker link's thread: ") + e.what());
    }
    return result.get();
  }

  status send(worker_message m) override {
    if (!outbox_.post(encode_worker_message(m)))
      return status(error_code::unavailable, "the worker process is gone");
    return status::ok();
  }

  int64_t pid() const override { return pid_.load(); }

 private:
  void run(std::promise<status>& started) {
    zmq::socket_t socket;
    std::string endpoint;
    try {
      socket = zmq::socket_t(shared_->context, zmq::socket_type::router);
      socket.set(zmq::sockopt::linger, 0);
      socket.set(zmq::sockopt::sndhwm, 0);  // runs are bounded by the batchers
      socket.set(zmq::sockopt::rcvhwm, 0);
      socket.set(zmq::sockopt::router_mandatory, 1);
      socket.set(zmq::sockopt::maxmsgsize, max_worker_message_bytes);
      endpoint = "ipc://" + shared_->directory + "/w" + std::to_string(spec_.index) + "-" +
                 std::to_string(++shared_->links);
      socket.bind(endpoint);
    } catch (const zmq::error_t& e) {
      started.set_value(io_error("worker endpoint " + endpoint + ": " + e.what()));
      return;
    }
    worker_main_options w;
    w.endpoint = endpoint;
    w.shm_fd = worker_shm_fd;
    w.shm_bytes = spec_.shm_bytes;
    w.kind = spec_.kind;
    w.index = spec_.index;
    w.device_index = spec_.device_index;
    w.compute_threads = spec_.compute_threads;
    w.fault_injection = spec_.fault_injection;
    w.tuning_records_file = spec_.tuning_records_file;
    w.memory_budget_bytes = spec_.memory_budget_bytes;
    w.heartbeat_interval = spec_.heartbeat_interval;
    w.heartbeat_timeout = spec_.heartbeat_timeout;
    w.log_level = shared_->log_level;
    w.idle_spin_us = spec_.idle_spin_us;
    const std::vector<std::string> argv = worker_command_line(shared_->executable, w);
    auto child = child_process::start(argv, spec_.shm_fd, worker_shm_fd);
    if (!child) {
      started.set_value(child.error());
      return;
    }
    child_ = std::move(*child);
    pid_.store(child_.pid());
    started.set_value(status::ok());  // `started` is gone from here on
    serve(socket);
    // The process goes with its link; a process that exited is only reaped.
    (void)child_.kill_and_reap();
    socket.close();
  }

  /// Ends the link: the process is gone or is killed now. `ended`: how it ended, when known.
  void close(status why, std::string ended = "") {
    if (closed_) return;
    closed_ = true;
    outbox_.close();
    if (ended.empty()) ended = child_.kill_and_reap();
    if (!stopping_.load() && events_.on_closed)
      events_.on_closed(ended.empty() ? why : why.with_context(ended));
  }

  void serve(zmq::socket_t& socket) {
    const auto interval = std::max(spec_.heartbeat_interval, std::chrono::milliseconds(1));
    auto last_heard = clock_type::now();
    auto next_beat = last_heard + interval;
    uint64_t beats = 0;
    auto spin_until = last_heard;  // in the past: no spinning before the first message
    while (!stopping_.load() && !closed_) {
      zmq_pollitem_t items[3] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, outbox_.fd(), ZMQ_POLLIN, 0},
                                 {nullptr, child_.exit_fd(), ZMQ_POLLIN, 0}};
      const int count = child_.exit_fd() >= 0 ? 3 : 2;
      auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_beat - clock_type::now());
      if (child_.exit_fd() < 0) wait = std::min(wait, std::chrono::milliseconds(100));
      // Within the spin window after a message: no sleep, so an answer that comes soon costs
      // no wake-up (worker_process_spec::idle_spin_us).
      if (clock_type::now() < spin_until) wait = std::chrono::milliseconds(0);
      try {
        const int ready = zmq::poll(items, count, std::max(wait, std::chrono::milliseconds(0)));
        if (ready == 0 && wait.count() == 0) {
          std::this_thread::yield();
          if (clock_type::now() < spin_until) continue;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        close(status(error_code::unavailable, std::string("worker link poll: ") + e.what()));
        break;
      }
      if (stopping_.load()) break;
      std::string ended = count == 3 ? "" : child_.reap();
      if (!ended.empty() || (count == 3 && (items[2].revents & ZMQ_POLLIN) != 0)) {
        // Exited: what it sent before it went is read first, then the link closes.
        drain(socket, last_heard);
        close(status(error_code::unavailable, "the worker process ended"), ended);
        break;
      }
      if (items[0].revents & ZMQ_POLLIN) drain(socket, last_heard);
      if (closed_) break;
      if (items[1].revents & ZMQ_POLLIN) flush(socket);
      if ((items[0].revents | items[1].revents) & ZMQ_POLLIN)
        spin_until = clock_type::now() + std::chrono::microseconds(spec_.idle_spin_us);
      const auto now = clock_type::now();
      if (now - last_heard > spec_.heartbeat_timeout) {
        close(status(error_code::unavailable, "the worker process sent nothing for " +
                                                  std::to_string(spec_.heartbeat_timeout.count()) +
                                                  " ms (heartbeat timeout): it is hung or gone"));
        break;
      }
      if (now >= next_beat) {
        next_beat = now + interval;
        if (!peer_.empty()) send_raw(socket, encode_worker_message(worker_heartbeat{++beats}));
      }
    }
  }

  /// Reads every message waiting on the socket.
  void drain(zmq::socket_t& socket, clock_type::time_point& last_heard) {
    for (;;) {
      // All of a message's frames first (multipart is all or nothing), then who sent it.
      zmq::message_t identity, envelope;
      size_t frames = 1;
      try {
        if (!socket.recv(identity, zmq::recv_flags::dontwait)) return;
        bool more = identity.more();
        if (more) {
          (void)socket.recv(envelope, zmq::recv_flags::none);
          ++frames;
          more = envelope.more();
        }
        while (more) {  // tensor frames, which the ipc protocol never sends: read and counted
          zmq::message_t extra;
          (void)socket.recv(extra, zmq::recv_flags::none);
          ++frames;
          more = extra.more();
        }
      } catch (const zmq::error_t& e) {
        close(status(error_code::unavailable, std::string("worker link receive: ") + e.what()));
        return;
      }
      const std::string who = identity.to_string();
      if (peer_.empty()) {
        // Until the process's hello, only that hello is heard: whoever else found the endpoint
        // (the directory is private: another process of the node's user) is ignored.
        auto m = frames == 2 ? decode_worker_message(envelope.data(), envelope.size())
                             : expected<worker_message>(invalid_argument("frames"));
        const auto* hello = m ? std::get_if<worker_hello>(&*m) : nullptr;
        if (!hello || hello->pid != child_.pid()) {
          log_event(log_level::warn, "worker link: a first message not from its process",
                    {{"worker", spec_.index}});
          continue;
        }
        peer_ = who;
        last_heard = clock_type::now();
        if (events_.on_message) events_.on_message(std::move(*m));
        continue;
      }
      if (who != peer_) {
        log_event(log_level::warn, "worker link: a message from a stranger is ignored",
                  {{"worker", spec_.index}});
        continue;
      }
      if (frames != 2) {
        close(protocol_error(std::to_string(frames - 1) + " frames in a message over ipc"));
        return;
      }
      auto m = decode_worker_message(envelope.data(), envelope.size());
      if (!m) {
        close(protocol_error(m.error().to_string()));
        return;
      }
      last_heard = clock_type::now();
      if (std::holds_alternative<worker_heartbeat>(*m)) continue;
      if (events_.on_message) events_.on_message(std::move(*m));
    }
  }

  void flush(zmq::socket_t& socket) {
    for (std::string& envelope : outbox_.take()) {
      if (peer_.empty()) {
        early_.push_back(std::move(envelope));  // the proxy holds its messages until hello
        continue;
      }
      send_raw(socket, envelope);
    }
  }

  void send_raw(zmq::socket_t& socket, const std::string& envelope) {
    if (!early_.empty()) {
      std::deque<std::string> early;
      early.swap(early_);
      for (const auto& e : early) send_raw(socket, e);
    }
    try {
      socket.send(zmq::buffer(peer_), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(envelope), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      // EHOSTUNREACH (router_mandatory): the process's connection is gone; its exit follows.
      close(status(error_code::unavailable, std::string("worker link send: ") + e.what()));
    }
  }

  status protocol_error(const std::string& what) {
    return internal_error("the worker process broke the worker protocol: " + what);
  }

  std::shared_ptr<worker_launcher::shared> shared_;
  worker_process_spec spec_;
  worker_channel_events events_;
  message_outbox outbox_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> pid_{0};
  std::thread thread_;
  // The thread's own, from start() on.
  child_process child_;
  std::string peer_;  // the process's routing id, from its hello
  std::deque<std::string> early_;
  bool closed_ = false;
};

}  // namespace

expected<std::unique_ptr<worker_launcher>> worker_launcher::create(worker_launcher_options o) {
  auto s = std::make_shared<shared>();
  s->log_level = o.log_level;
  if (o.executable.empty()) {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return io_error("cannot find the troupe binary (/proc/self/exe): " + ec.message());
    s->executable = self.string();
  } else {
    s->executable = o.executable;
  }
  std::string parent = o.runtime_parent;
  if (parent.empty()) {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    parent = xdg && *xdg && access(xdg, W_OK) == 0 ? xdg : "/tmp";
  }
  std::string pattern = parent + "/troupe-workers-XXXXXX";
  if (!mkdtemp(pattern.data()))  // mode 0700: only this user reaches the endpoints
    return io_error("cannot make a directory for the worker endpoints under " + parent + ": " +
                    std::strerror(errno));
  s->directory = pattern;
  // ipc:// paths are limited to sun_path (108 bytes): the endpoints add about 16.
  if (s->directory.size() > 80)
    return invalid_argument("the worker endpoint directory " + s->directory +
                            " is too long for ipc:// (set XDG_RUNTIME_DIR to a shorter path)");
  return std::unique_ptr<worker_launcher>(new worker_launcher(std::move(s)));
}

worker_launcher::~worker_launcher() = default;

const std::string& worker_launcher::directory() const {
  return shared_->directory;
}

worker_channel_factory worker_launcher::factory() {
  return [s = shared_](const worker_process_spec& spec,
                       worker_channel_events events) -> expected<std::unique_ptr<worker_channel>> {
    auto link = std::make_unique<worker_link>(s, spec, std::move(events));
    TROUPE_RETURN_IF_ERROR(link->start());
    return std::unique_ptr<worker_channel>(std::move(link));
  };
}

}  // namespace troupe::cluster
