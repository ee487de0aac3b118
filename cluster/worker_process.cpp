#include "cluster/worker_process.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <thread>
#include <zmq.hpp>

#include "actors/log_fields.hpp"
#include "actors/replica_host.hpp"
#include "actors/shared_arena.hpp"
#include "cluster/logging.hpp"
#include "cluster/message_outbox.hpp"
#include "cluster/worker_codec.hpp"
#include "runtime/host_staging.hpp"
#include "runtime/tuning_records_file.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using clock_type = std::chrono::steady_clock;

status run_worker_process(const worker_main_options& o) {
  TROUPE_RETURN_IF_ERROR(setup_json_logging(o.log_level));
  TROUPE_ASSIGN_OR_RETURN(std::shared_ptr<shared_arena> arena,
                          shared_arena::attach(o.shm_fd, o.shm_bytes));
  const device_traits traits = o.kind == worker_kind::gpu ? gpu_device_traits(o.device_index)
                                                          : cpu_device_traits(o.compute_threads);
  if (o.kind == worker_kind::gpu) {
    // The node gathers the batches' inputs into this memory and sends the replies from it: pinned,
    // the uploads and downloads are DMAs straight from and into it.
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

  zmq::context_t context(1);
  zmq::socket_t socket;
  try {
    socket = zmq::socket_t(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndhwm, 0);
    socket.set(zmq::sockopt::rcvhwm, 0);
    socket.connect(o.endpoint);
  } catch (const zmq::error_t& e) {
    return io_error("worker process: connecting to " + o.endpoint + ": " + e.what());
  }
  message_outbox outbox;
  if (!outbox.ok()) return io_error("worker process: eventfd failed");

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
    ho.send = [&outbox](worker_message m) { (void)outbox.post(encode_worker_message(m)); };
    replica_host host(std::move(ho));
    worker_hello hello;
    hello.worker_index = o.index;
    hello.pid = getpid();
    hello.device = traits.device_label;
    (void)outbox.post(encode_worker_message(hello));

    const auto interval = std::max(o.heartbeat_interval, std::chrono::milliseconds(1));
    auto last_heard = clock_type::now();
    auto next_beat = last_heard + interval;
    uint64_t beats = 0;
    std::string why;
    status ended = status::ok();
    auto send = [&](const std::string& envelope) {
      try {
        socket.send(zmq::buffer(envelope), zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        why = std::string("send: ") + e.what();
      }
    };
    // After a message, poll without sleeping for idle_spin_us: the run's answer (or the next
    // run) that comes within it costs no wake-up of this thread.
    auto spin_until = last_heard;
    while (why.empty()) {
      zmq_pollitem_t items[2] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, outbox.fd(), ZMQ_POLLIN, 0}};
      auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_beat - clock_type::now());
      if (clock_type::now() < spin_until) wait = std::chrono::milliseconds(0);
      try {
        const int ready = zmq::poll(items, 2, std::max(wait, std::chrono::milliseconds(0)));
        if (ready == 0 && wait.count() == 0) {
          std::this_thread::yield();
          if (clock_type::now() < spin_until) continue;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        why = std::string("poll: ") + e.what();
        break;
      }
      if ((items[0].revents | items[1].revents) & ZMQ_POLLIN)
        spin_until = clock_type::now() + std::chrono::microseconds(o.idle_spin_us);
      if (items[1].revents & ZMQ_POLLIN)
        for (const std::string& envelope : outbox.take()) send(envelope);
      if (items[0].revents & ZMQ_POLLIN) {
        for (;;) {
          zmq::message_t envelope;
          try {
            if (!socket.recv(envelope, zmq::recv_flags::dontwait)) break;
          } catch (const zmq::error_t& e) {
            why = std::string("receive: ") + e.what();
            break;
          }
          last_heard = clock_type::now();
          auto m = decode_worker_message(envelope.data(), envelope.size());
          if (!m) {
            ended = m.error().with_context("the node sent what is not the worker protocol");
            why = ended.to_string();
            break;
          }
          if (std::holds_alternative<worker_heartbeat>(*m)) continue;
          if (status s = host.handle(std::move(*m)); !s.is_ok())
            log_event(log_level::warn, "worker process: message refused",
                      {{"reason", s.to_string()}});
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
        send(encode_worker_message(worker_heartbeat{++beats}));
      }
    }
    log_event(log_level::warn, "worker process exits", {{"worker", o.index}, {"reason", why}});
    spdlog::default_logger()->flush();
    // A build may be blocked on a hung file system and a run in a kernel: nobody waits for
    // their answers any more, so the process does not wait for them either.
    std::_Exit(ended.is_ok() ? 0 : 2);
  }
}

}  // namespace troupe::cluster
