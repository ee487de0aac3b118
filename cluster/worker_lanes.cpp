#include "cluster/worker_lanes.hpp"

#include <iterator>
#include <zmq_addon.hpp>

#include "cluster/worker_codec.hpp"
#include "core/thread_name.hpp"
#include "serving/log_fields.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using clock_type = std::chrono::steady_clock;

worker_lanes::~worker_lanes() {
  stop();
}

status worker_lanes::start() {
  if (started_) return status::ok();
  started_ = true;
  if (!events_.ok() || !stop_signal_.ok())
    return internal_error("worker lanes: eventfd failed (out of descriptors)");
  for (uint32_t lane = 1; lane <= options_.count; ++lane) {
    try {
      threads_.emplace_back([this, lane] { run(lane); });
    } catch (const std::system_error& e) {
      return internal_error("cannot start the thread of data lane " + std::to_string(lane) + ": " +
                            e.what());
    }
  }
  return status::ok();
}

void worker_lanes::stop() {
  stopping_.store(true);
  stop_signal_.wake();
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void worker_lanes::run(uint32_t lane) {
  name_this_thread("data-lane-" + std::to_string(lane));
  auto end = [this](status why) { (void)events_.post(lane_event{std::nullopt, std::move(why)}); };
  const std::string name = "data lane " + std::to_string(lane);
  zmq::socket_t socket;
  try {
    socket = zmq::socket_t(*options_.context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndhwm, 0);
    socket.set(zmq::sockopt::rcvhwm, 0);
    socket.set(zmq::sockopt::maxmsgsize, options_.max_frame_bytes);
    if (options_.curve) {
      socket.set(zmq::sockopt::curve_serverkey, options_.server_key);
      socket.set(zmq::sockopt::curve_publickey, options_.curve->public_key);
      socket.set(zmq::sockopt::curve_secretkey, options_.curve->secret_key);
    }
    socket.connect(options_.endpoint);
    worker_hello h = options_.hello;
    h.lane = lane;
    socket.send(zmq::buffer(encode_worker_message(h)), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    // The other connections carry on without it: the control node sends runs only over lanes
    // that said hello.
    serving::log_event(serving::log_level::warn, "worker process: a data lane did not open",
                       {{"lane", static_cast<int64_t>(lane)}, {"reason", e.what()}});
    return;
  }
  const auto interval = std::max(options_.heartbeat_interval, std::chrono::milliseconds(1));
  auto next_beat = clock_type::now() + interval;
  uint64_t beats = 0;
  while (!stopping_.load()) {
    zmq_pollitem_t items[2] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, stop_signal_.fd(), ZMQ_POLLIN, 0}};
    const auto wait = std::max(
        std::chrono::duration_cast<std::chrono::milliseconds>(next_beat - clock_type::now()),
        std::chrono::milliseconds(0));
    try {
      zmq::poll(items, 2, wait);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return end(status(error_code::unavailable, name + " poll: " + e.what()));
    }
    if (stopping_.load()) break;
    if ((items[0].revents & ZMQ_POLLIN) && !drain(socket)) break;
    if (clock_type::now() >= next_beat) {
      next_beat = clock_type::now() + interval;
      try {
        socket.send(zmq::buffer(encode_worker_message(worker_heartbeat{++beats, 0})),
                    zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        return end(status(error_code::unavailable, name + " send: " + e.what()));
      }
    }
  }
}

bool worker_lanes::drain(zmq::socket_t& socket) {
  for (;;) {
    std::vector<zmq::message_t> frames;  // the envelope, then the run's tensor frames
    try {
      if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait))
        return true;
    } catch (const zmq::error_t& e) {
      (void)events_.post(lane_event{
          std::nullopt,
          status(error_code::unavailable, std::string("data lane receive: ") + e.what())});
      return false;
    }
    const zmq::message_t envelope = std::move(frames.front());
    frames.erase(frames.begin());
    auto m = decode_worker_message(envelope.data(), envelope.size());
    if (!m) {
      (void)events_.post(lane_event{
          std::nullopt,
          m.error().with_context("the control node sent what is not the worker protocol")});
      return false;
    }
    if (std::holds_alternative<worker_heartbeat>(*m)) continue;
    if (auto* b = std::get_if<worker_bye>(&*m)) {
      (void)events_.post(lane_event{
          std::nullopt, status(error_code::unavailable, "the control node let go: " + b->reason)});
      return false;
    }
    if (!std::holds_alternative<worker_run>(*m) && !std::holds_alternative<worker_run_part>(*m)) {
      (void)events_.post(
          lane_event{std::nullopt, internal_error(std::string("the control node sent a '") +
                                                  worker_message_name(*m) + "' on a data lane")});
      return false;
    }
    // Staged here, on this thread (the copy included); the main thread gets the run once it is
    // complete, or its failed answer.
    if (auto next = staging_.receive(std::move(*m), frames))
      (void)events_.post(lane_event{std::move(next), status::ok()});
  }
}

}  // namespace troupe::cluster
