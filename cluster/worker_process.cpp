#include "cluster/worker_process.hpp"

#include <spdlog/spdlog.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "actors/replica_host.hpp"
#include "cluster/curve_keys.hpp"
#include "cluster/logging.hpp"
#include "cluster/message_outbox.hpp"
#include "cluster/model_file_cache.hpp"
#include "cluster/remote_run_staging.hpp"
#include "cluster/worker_codec.hpp"
#include "cluster/worker_lanes.hpp"
#include "runtime/device.hpp"
#include "runtime/host_staging.hpp"
#include "runtime/tuning_records_file.hpp"
#include "serving/log_fields.hpp"
#include "serving/shared_arena.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using namespace troupe::serving;
using clock_type = std::chrono::steady_clock;

namespace {

/// A number no earlier start of this worker used: a control node tells a rejoin by it.
uint64_t fresh_incarnation() {
  std::random_device rd;
  const uint64_t r = (uint64_t{rd()} << 32) ^ rd();
  return r ^ static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
}

}  // namespace

std::vector<std::string> worker_command_line(const std::string& executable,
                                             const worker_main_options& o) {
  std::vector<std::string> argv{executable, "worker"};
  auto flag = [&](const char* name, const std::string& value) {
    argv.push_back(name);
    argv.push_back(value);
  };
  if (o.join.empty()) {
    flag("--endpoint", o.endpoint);
    flag("--shm-fd", std::to_string(o.shm_fd));
  } else {
    flag("--join", o.join);
    flag("--node-name", o.node_name);
    flag("--cache-dir", o.cache_dir);
    if (o.link_connections > 1) flag("--link-connections", std::to_string(o.link_connections));
  }
  flag("--shm-bytes", std::to_string(o.shm_bytes));
  flag("--kind", std::string(worker_kind_name(o.kind)));
  flag("--index", std::to_string(o.index));
  flag("--device", std::to_string(o.device_index));
  flag("--compute-threads", std::to_string(o.compute_threads));
  flag("--heartbeat-interval-ms", std::to_string(o.heartbeat_interval.count()));
  flag("--heartbeat-timeout-ms", std::to_string(o.heartbeat_timeout.count()));
  flag("--log-level", o.log_level);
  if (o.fault_injection) argv.push_back("--fault-injection");
  if (o.idle_spin_us > 0) flag("--idle-spin-us", std::to_string(o.idle_spin_us));
  if (!o.tuning_records_file.empty()) flag("--tuning-records-file", o.tuning_records_file);
  if (o.memory_budget_bytes > 0) flag("--memory-budget-bytes", std::to_string(o.memory_budget_bytes));
  if (!o.curve_secret_key_file.empty()) {
    flag("--curve-secret-key-file", o.curve_secret_key_file);
    flag("--curve-server-key-file", o.curve_server_key_file);
  }
  return argv;
}

status run_worker_process(const worker_main_options& o) {
  TROUPE_RETURN_IF_ERROR(setup_json_logging(o.log_level));
  const bool remote = !o.join.empty();
  // Joined over tcp, SIGTERM and SIGINT are read from a descriptor (a bye, then exit): blocked
  // first, so that every thread started from here on (CUDA's, the host's) has them blocked too.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (remote) pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::shared_ptr<shared_arena> arena;
  std::optional<model_file_cache> cache;
  if (remote) {
    // No memory shared with the control node: an arena of the process's own, where the runs'
    // frames are staged and the output blocks sent from.
    TROUPE_ASSIGN_OR_RETURN(arena, shared_arena::create(o.shm_bytes, "troupe-remote-worker"));
    TROUPE_ASSIGN_OR_RETURN(model_file_cache c, model_file_cache::open(o.cache_dir));
    cache.emplace(std::move(c));
  } else {
    TROUPE_ASSIGN_OR_RETURN(arena, shared_arena::attach(o.shm_fd, o.shm_bytes));
  }
  const device_traits traits = o.kind == worker_kind::gpu ? gpu_device_traits(o.device_index)
                                                          : cpu_device_traits(o.compute_threads);
  if (o.kind == worker_kind::gpu) {
    // The node gathers the batches' inputs into this memory and sends the replies from it (over
    // tcp the link copies the frames into it): pinned, the uploads and downloads are DMAs
    // straight from and into it.
    const status pinned = runtime::register_host_memory(traits.backend, o.device_index,
                                                        arena->base(), arena->bytes());
    if (!pinned.is_ok())
      log_event(log_level::warn, "worker process: shared memory not pinned (slower transfers)",
                {{"reason", pinned.to_string()}});
  }

  // The node's recorded convolution choices: adopted before the first load, so that a restarted
  // process builds its replicas without timing again; saved (merged with the other processes')
  // after each load that recorded new ones.
  std::unique_ptr<runtime::tuning_records_file> tuning_records;
  if (!o.tuning_records_file.empty()) {
    tuning_records = std::make_unique<runtime::tuning_records_file>(
        o.tuning_records_file, [](const expected<bool>& saved) {
          if (!saved)
            log_event(log_level::warn, "worker process: tuning records not saved",
                      {{"reason", saved.error().to_string()}});
        });
    const expected<size_t> loaded = tuning_records->load();
    if (!loaded)
      log_event(log_level::warn, "worker process: tuning records not read",
                {{"reason", loaded.error().to_string()}});
    else if (*loaded > 0)
      log_event(log_level::info, "worker process: tuning records adopted",
                {{"records", static_cast<int64_t>(*loaded)}});
  }

  const std::string& peer = remote ? o.join : o.endpoint;
  std::optional<curve_keypair> curve;
  std::string server_key;
  if (remote && !o.curve_secret_key_file.empty()) {
    TROUPE_ASSIGN_OR_RETURN(curve, read_curve_secret_key(o.curve_secret_key_file));
    TROUPE_ASSIGN_OR_RETURN(server_key, read_curve_public_key(o.curve_server_key_file));
  }
  // One ZeroMQ I/O thread per connection to the control node: the lanes' streams side by side.
  zmq::context_t context(remote ? static_cast<int>(std::max<uint32_t>(o.link_connections, 1)) : 1);
  zmq::socket_t socket;
  try {
    socket = zmq::socket_t(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndhwm, 0);
    socket.set(zmq::sockopt::rcvhwm, 0);
    if (remote) socket.set(zmq::sockopt::maxmsgsize, o.max_frame_bytes);
    if (curve) {
      socket.set(zmq::sockopt::curve_serverkey, server_key);
      socket.set(zmq::sockopt::curve_publickey, curve->public_key);
      socket.set(zmq::sockopt::curve_secretkey, curve->secret_key);
    }
    socket.connect(peer);
  } catch (const zmq::error_t& e) {
    return io_error("worker process: connecting to " + peer + ": " + e.what());
  }
  basic_outbox<outgoing_message> outbox;
  if (!outbox.ok()) return io_error("worker process: eventfd failed");
  std::optional<remote_run_staging> staging;
  if (remote) staging.emplace(arena);
  auto post = [&outbox](const worker_message& m) {
    (void)outbox.post(outgoing_message{encode_worker_message(m), std::nullopt});
  };

  {
    replica_host_options ho;
    ho.traits = traits;
    ho.device_index = o.device_index;
    ho.fault_injection = o.fault_injection;
    ho.worker_index = o.index;
    ho.memory_budget_bytes = o.memory_budget_bytes;
    ho.arena = arena;
    if (tuning_records)
      ho.after_load = [records = tuning_records.get()] { records->save_in_background(); };
    // Over tcp an answer takes its output block along as a frame.
    ho.send = [&outbox, &staging, post](worker_message m) {
      if (auto* d = std::get_if<worker_done>(&m); d && staging) {
        (void)outbox.post(staging->answer(std::move(*d)));
        return;
      }
      post(m);
    };
    replica_host host(std::move(ho));
    // What the control node is told of the device's free memory (with a memory budget, no more
    // than it): in the hello, and again with each heartbeat.
    auto free_memory_to_report = [&o](const runtime::device_memory_snapshot& m) -> uint64_t {
      return o.memory_budget_bytes > 0 ? std::min<uint64_t>(m.free_bytes, o.memory_budget_bytes)
                                       : m.free_bytes;
    };
    worker_hello hello;
    hello.worker_index = o.index;
    hello.pid = getpid();
    hello.device = traits.device_label;
    if (remote) {
      hello.node = o.node_name;
      hello.incarnation = fresh_incarnation();
      if (auto m = runtime::device_memory(traits.backend, o.device_index)) {
        hello.memory_total_bytes = m->total_bytes;
        hello.memory_free_bytes = free_memory_to_report(*m);
      }
    }
    post(hello);
    // Joined with more than one connection: the data lanes open once the control node has spoken
    // (it knows this worker then: a lane's hello names a worker it has heard).
    std::optional<worker_lanes> lanes;
    if (remote && o.link_connections > 1) {
      worker_lanes_options lo;
      lo.context = &context;
      lo.endpoint = o.join;
      lo.hello = hello;
      lo.count = o.link_connections - 1;
      lo.heartbeat_interval = o.heartbeat_interval;
      lo.max_frame_bytes = o.max_frame_bytes;
      lo.curve = curve;
      lo.server_key = server_key;
      lanes.emplace(std::move(lo), *staging);
    }

    const auto interval = std::max(o.heartbeat_interval, std::chrono::milliseconds(1));
    auto last_heard = clock_type::now();
    auto next_beat = last_heard + interval;
    uint64_t beats = 0;
    std::string why;
    status ended = status::ok();
    auto send = [&](outgoing_message& m) {
      try {
        socket.send(zmq::buffer(m.envelope),
                    m.frame ? zmq::send_flags::sndmore : zmq::send_flags::none);
        if (m.frame) socket.send(*m.frame, zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        why = std::string("send: ") + e.what();
      }
    };

    // Remote mode: a load whose files (the model file and its data files) the cache holds goes
    // to the host with the cached path; the others wait for their missing files, each asked for
    // once however many loads wait for it.
    struct pending_load {
      worker_load load;
      std::set<std::string> missing;  // SHA-256s
    };
    std::map<uint64_t, pending_load> pending;              // by the load's request
    std::map<std::string, std::vector<uint64_t>> waiting;  // SHA-256 -> loads waiting
    auto fail_load = [&](uint64_t request, status why) {
      worker_loaded failed;
      failed.request = request;
      failed.result = std::move(why);
      post(failed);
    };
    auto load_from_cache = [&](worker_load l) -> status {
      expected<std::string> path =
          l.data_files.empty() ? expected<std::string>(cache->find(l.content_sha256, l.file_bytes))
                               : cache->assemble(l.content_sha256, l.file_bytes, l.data_files);
      if (!path || path->empty()) {
        fail_load(l.request, path ? not_found("the cached model file of " + l.path + " is gone")
                                  : path.error().with_context("laying out " + l.path));
        return status::ok();
      }
      l.path = *path;
      return host.handle(worker_message(std::move(l)));
    };
    auto load_cached = [&](worker_load l) -> status {
      pending_load p;
      if (cache->find(l.content_sha256, l.file_bytes).empty()) p.missing.insert(l.content_sha256);
      for (const model_data_file& f : l.data_files)
        if (cache->find(f.content_sha256, f.bytes).empty()) p.missing.insert(f.content_sha256);
      if (p.missing.empty()) return load_from_cache(std::move(l));
      for (const std::string& sha : p.missing) {
        auto& loads = waiting[sha];
        if (loads.empty()) post(worker_file_wanted{l.request, sha});
        loads.push_back(l.request);
      }
      const uint64_t request = l.request;
      p.load = std::move(l);
      pending[request] = std::move(p);
      return status::ok();
    };
    auto file_arrived = [&](const worker_file_data& f, const std::vector<zmq::message_t>& frames) {
      auto it = waiting.find(f.content_sha256);
      if (it == waiting.end()) return;
      std::vector<uint64_t> requests = std::move(it->second);
      waiting.erase(it);
      expected<std::string> path = f.result;
      if (f.result.is_ok()) {
        if (f.data.frame >= frames.size())
          path = invalid_argument("the control node named a frame it did not send");
        else
          path = cache->store(f.content_sha256, frames[f.data.frame].data(),
                              frames[f.data.frame].size());
      }
      if (path)
        log_event(log_level::info, "worker process: model file cached",
                  {{"path", *path}, {"bytes", static_cast<int64_t>(frames[f.data.frame].size())}});
      for (uint64_t request : requests) {
        auto p = pending.find(request);
        if (p == pending.end()) continue;  // failed already, for another of its files
        if (!path) {
          fail_load(request, path.error().with_context("fetching a file of " + p->second.load.path +
                                                       " from the control node"));
          pending.erase(p);
          continue;
        }
        p->second.missing.erase(f.content_sha256);
        if (!p->second.missing.empty()) continue;
        worker_load l = std::move(p->second.load);
        pending.erase(p);
        (void)load_from_cache(std::move(l));
      }
    };
    // What came of a run's staging (remote_run_staging::receive, here or on a lane's thread): the
    // run goes to the serving loop, a run that could not be staged is answered.
    auto run_staged = [&](worker_message m) -> status {
      if (auto* d = std::get_if<worker_done>(&m)) {
        post(*d);
        return status::ok();
      }
      return host.handle(std::move(m));
    };
    // One message of the peer (its frames after the envelope: tcp only).
    auto handle = [&](worker_message m, const std::vector<zmq::message_t>& frames) -> status {
      if (!remote) {
        if (!frames.empty()) return internal_error("the node sent frames over ipc");
        return host.handle(std::move(m));
      }
      if (auto* f = std::get_if<worker_file_data>(&m)) {
        file_arrived(*f, frames);
        return status::ok();
      }
      if (auto* l = std::get_if<worker_load>(&m)) return load_cached(std::move(*l));
      if (std::holds_alternative<worker_run>(m) || std::holds_alternative<worker_run_part>(m)) {
        auto next = staging->receive(std::move(m), frames);
        return next ? run_staged(std::move(*next)) : status::ok();
      }
      return host.handle(std::move(m));
    };

    // After a message, poll without sleeping for idle_spin_us: the run's answer (or the next
    // run) that comes within it costs no wake-up of this thread.
    auto spin_until = last_heard;
    // Joined over tcp: SIGTERM (its worker node stops) ends the process with a bye.
    const int stop_fd = remote ? signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK) : -1;
    while (why.empty()) {
      // The first connection, the outbox, then the stop signal and the lanes' events when there.
      zmq_pollitem_t items[4] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, outbox.fd(), ZMQ_POLLIN, 0}};
      int count = 2, stop_at = -1, lanes_at = -1;
      if (stop_fd >= 0) items[stop_at = count++] = {nullptr, stop_fd, ZMQ_POLLIN, 0};
      if (lanes && lanes->started() && lanes->fd() >= 0)
        items[lanes_at = count++] = {nullptr, lanes->fd(), ZMQ_POLLIN, 0};
      auto fired = [&](int at) { return at >= 0 && (items[at].revents & ZMQ_POLLIN) != 0; };
      auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_beat - clock_type::now());
      if (clock_type::now() < spin_until) wait = std::chrono::milliseconds(0);
      try {
        const int ready = zmq::poll(items, count, std::max(wait, std::chrono::milliseconds(0)));
        if (ready == 0 && wait.count() == 0) {
          std::this_thread::yield();
          if (clock_type::now() < spin_until) continue;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        why = std::string("poll: ") + e.what();
        break;
      }
      if (fired(stop_at)) {
        why = "its worker node stops";
        break;
      }
      if (fired(0) || fired(1) || fired(lanes_at))
        spin_until = clock_type::now() + std::chrono::microseconds(o.idle_spin_us);
      if (fired(1))
        for (outgoing_message& m : outbox.take()) send(m);
      if (fired(lanes_at)) {
        for (lane_event& e : lanes->take()) {
          if (!e.ended.is_ok()) {
            if (e.ended.code() == error_code::internal) ended = e.ended;
            why = e.ended.message();
            break;
          }
          const status handled = run_staged(std::move(*e.message));
          if (!handled.is_ok())
            log_event(log_level::warn, "worker process: message refused",
                      {{"reason", handled.to_string()}});
        }
        if (!why.empty()) break;
      }
      if (fired(0)) {
        for (;;) {
          std::vector<zmq::message_t> frames;  // the envelope, then tensor frames (tcp only)
          try {
            if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait))
              break;
          } catch (const zmq::error_t& e) {
            why = std::string("receive: ") + e.what();
            break;
          }
          const zmq::message_t envelope = std::move(frames.front());
          frames.erase(frames.begin());
          last_heard = clock_type::now();
          auto m = decode_worker_message(envelope.data(), envelope.size());
          if (!m) {
            ended = m.error().with_context("the node sent what is not the worker protocol");
            why = ended.to_string();
            break;
          }
          if (auto* b = std::get_if<worker_bye>(&*m)) {
            why = "the control node let go: " + b->reason;
            break;
          }
          if (lanes && !lanes->started()) {
            const status opened = lanes->start();
            if (!opened.is_ok())
              log_event(log_level::warn, "worker process: data lanes not all opened",
                        {{"reason", opened.to_string()}});
          }
          if (std::holds_alternative<worker_heartbeat>(*m)) continue;
          const status handled = handle(std::move(*m), frames);
          if (!handled.is_ok() && handled.code() == error_code::internal) {
            ended = handled;
            why = ended.to_string();
            break;
          }
          if (!handled.is_ok())
            log_event(log_level::warn, "worker process: message refused",
                      {{"reason", handled.to_string()}});
        }
      }
      const auto now = clock_type::now();
      if (now - last_heard > o.heartbeat_timeout) {
        why = "the node sent nothing for " + std::to_string(o.heartbeat_timeout.count()) +
              " ms (heartbeat timeout)";
        break;
      }
      if (now >= next_beat) {
        next_beat = now + interval;
        worker_heartbeat hb{++beats, 0};
        if (remote)
          if (auto m = runtime::device_memory(traits.backend, o.device_index))
            hb.memory_free_bytes = std::max<uint64_t>(free_memory_to_report(*m), 1);
        outgoing_message beat{encode_worker_message(hb), std::nullopt};
        send(beat);
      }
    }
    log_event(log_level::warn, "worker process exits", {{"worker", o.index}, {"reason", why}});
    // The lanes' sockets close before the context (closing it waits for every socket).
    if (lanes) lanes->stop();
    if (remote && why.rfind("the control node let go", 0) != 0) {
      // The control node hears it at once rather than by its heartbeat timeout.
      outgoing_message bye{encode_worker_message(worker_bye{why}), std::nullopt};
      send(bye);
      // Up to half a second for it to leave (a closed socket with a linger keeps sending).
      try {
        socket.set(zmq::sockopt::linger, 500);
        socket.close();
        context.close();
      } catch (const zmq::error_t&) {
      }
    }
    spdlog::default_logger()->flush();
    // A build may be blocked on a hung file system and a run in a kernel: nobody waits for
    // their answers any more, so the process does not wait for them either.
    std::_Exit(ended.is_ok() ? 0 : 2);
  }
}

}  // namespace troupe::cluster
