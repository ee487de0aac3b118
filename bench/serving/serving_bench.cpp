// The serving benchmark's two halves, so that troupe and the baseline face the same client:
//
//   serving_bench load --server ADDR --model M --width W [--rows R] --concurrency N --duration S
//       A closed-loop client: N requests in flight per connection, each an InferRequest envelope
//       plus one float32 [R, W] tensor frame (encoded once, frames shared between sends). Every
//       reply's envelope is decoded (an error reply counts as an error). Prints one JSON line
//       with the replies per second and the sizes of the reply frames it saw.
//
//   serving_bench echo --listen ADDR --model M --rows R --outputs K [--delay-us D]
//       The baseline: a bare ZeroMQ ROUTER that answers every request at once with a reply of the
//       same shape as troupe's (a prebuilt ServerMessage envelope naming one [R, K] float32 output,
//       and that output frame). No decoding, batching or compute: the cost of the transport alone.
//       --delay-us D holds each reply D microseconds (a busy wait, like a worker waiting for its
//       GPU): the transport's cost when the client and the I/O threads idle that long between
//       messages, as they do around a real model's run (idle cores wake up more slowly).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "proto/troupe.pb.h"

namespace pb = troupe::v1;
using bench_clock = std::chrono::steady_clock;

namespace {

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 2; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return fallback;
}

int run_echo(int argc, char** argv) {
  const std::string listen = arg(argc, argv, "--listen", "tcp://127.0.0.1:5601");
  const int64_t rows = std::stoll(arg(argc, argv, "--rows", "1"));
  const int64_t outputs = std::stoll(arg(argc, argv, "--outputs", "8"));
  const auto delay = std::chrono::microseconds(std::stoll(arg(argc, argv, "--delay-us", "0")));
  pb::ServerMessage reply;
  reply.set_id("b");
  auto* r = reply.mutable_infer();
  r->set_id("b");
  r->set_model(arg(argc, argv, "--model", "mlp"));
  r->set_version(1);
  r->set_batch_size(8);
  auto* t = r->mutable_timings();
  t->set_queue_us(120);
  t->set_compute_us(40);
  t->set_total_us(200);
  auto* d = r->add_outputs();
  d->set_name("y");
  d->set_dtype(pb::FLOAT);
  d->add_shape(rows);
  d->add_shape(outputs);
  const std::string envelope = reply.SerializeAsString();
  zmq::message_t env_template(envelope.data(), envelope.size());
  zmq::message_t out_template(static_cast<size_t>(rows * outputs) * sizeof(float));
  std::memset(out_template.data(), 0, out_template.size());

  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::router);
  sock.set(zmq::sockopt::sndhwm, 0);
  sock.bind(listen);
  std::printf(
      "{\"event\":\"ready\",\"endpoint\":\"%s\",\"envelope_bytes\":%zu,\"output_bytes\":%zu}\n",
      sock.get(zmq::sockopt::last_endpoint).c_str(), envelope.size(), out_template.size());
  std::fflush(stdout);
  zmq::message_t identity, frame;
  for (;;) {
    if (!sock.recv(identity, zmq::recv_flags::none)) continue;
    bool more = identity.more();
    while (more) {
      if (!sock.recv(frame, zmq::recv_flags::none)) break;
      more = frame.more();
    }
    if (delay.count() > 0) {
      const auto until = bench_clock::now() + delay;
      while (bench_clock::now() < until) {
      }
    }
    zmq::message_t env, out;
    env.copy(env_template);
    out.copy(out_template);
    sock.send(identity, zmq::send_flags::sndmore);
    sock.send(env, zmq::send_flags::sndmore);
    sock.send(out, zmq::send_flags::none);
  }
}

struct connection_result {
  uint64_t ok = 0, errors = 0;
  size_t reply_envelope_bytes = 0, reply_tensor_bytes = 0;
  std::string first_error;
};

void drive(const std::string& server, const std::string& model, int64_t rows, int64_t width,
           int concurrency, bench_clock::time_point measure_from, bench_clock::time_point end,
           connection_result& out) {
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::sndhwm, 0);
  sock.set(zmq::sockopt::rcvhwm, 0);
  sock.connect(server);
  pb::ClientMessage request;
  auto* r = request.mutable_infer();
  r->set_model(model);
  r->set_id("b");
  auto* d = r->add_inputs();
  d->set_name("x");
  d->set_dtype(pb::FLOAT);
  d->add_shape(rows);
  d->add_shape(width);
  const std::string envelope = request.SerializeAsString();
  zmq::message_t env_template(envelope.data(), envelope.size());
  std::vector<float> x(static_cast<size_t>(rows * width), 0.5f);
  zmq::message_t x_template(x.data(), x.size() * sizeof(float));

  auto send_one = [&] {
    zmq::message_t env, tensor;
    env.copy(env_template);
    tensor.copy(x_template);
    sock.send(env, zmq::send_flags::sndmore);
    sock.send(tensor, zmq::send_flags::none);
  };
  for (int i = 0; i < concurrency; ++i) send_one();
  int in_flight = concurrency;
  std::vector<zmq::message_t> frames;
  pb::ServerMessage reply;
  while (in_flight > 0) {
    frames.clear();
    const auto got = zmq::recv_multipart(sock, std::back_inserter(frames));
    if (!got) continue;
    --in_flight;
    const auto now = bench_clock::now();
    reply.ParseFromArray(frames[0].data(), static_cast<int>(frames[0].size()));
    const bool ok = !reply.has_error();
    if (now >= measure_from && now < end) {
      if (ok)
        ++out.ok;
      else
        ++out.errors;
    }
    if (!ok && out.first_error.empty()) out.first_error = reply.error().message();
    if (out.reply_envelope_bytes == 0) {
      out.reply_envelope_bytes = frames[0].size();
      for (size_t i = 1; i < frames.size(); ++i) out.reply_tensor_bytes += frames[i].size();
    }
    if (now < end) {
      send_one();
      ++in_flight;
    }
  }
}

int run_load(int argc, char** argv) {
  const std::string server = arg(argc, argv, "--server", "tcp://127.0.0.1:5555");
  const std::string model = arg(argc, argv, "--model", "mlp");
  const int64_t rows = std::stoll(arg(argc, argv, "--rows", "1"));
  const int64_t width = std::stoll(arg(argc, argv, "--width", "16"));
  const int concurrency = std::stoi(arg(argc, argv, "--concurrency", "16"));
  const int connections = std::stoi(arg(argc, argv, "--connections", "1"));
  const double duration_s = std::stod(arg(argc, argv, "--duration", "5"));
  const double warmup_s = std::stod(arg(argc, argv, "--warmup", "1"));
  const auto start = bench_clock::now();
  const auto measure_from = start + std::chrono::microseconds(static_cast<int64_t>(warmup_s * 1e6));
  const auto end = measure_from + std::chrono::microseconds(static_cast<int64_t>(duration_s * 1e6));
  std::vector<connection_result> results(static_cast<size_t>(connections));
  std::vector<std::thread> threads;
  for (int i = 0; i < connections; ++i)
    threads.emplace_back([&, i] {
      drive(server, model, rows, width,
            concurrency / connections + (i < concurrency % connections ? 1 : 0), measure_from, end,
            results[static_cast<size_t>(i)]);
    });
  for (auto& t : threads) t.join();
  connection_result all;
  for (const auto& r : results) {
    all.ok += r.ok;
    all.errors += r.errors;
    if (all.first_error.empty()) all.first_error = r.first_error;
    all.reply_envelope_bytes = std::max(all.reply_envelope_bytes, r.reply_envelope_bytes);
    all.reply_tensor_bytes = std::max(all.reply_tensor_bytes, r.reply_tensor_bytes);
  }
  std::printf(
      "{\"server\":\"%s\",\"concurrency\":%d,\"connections\":%d,\"duration_s\":%.3f,\"ok\":%llu,"
      "\"errors\":%llu,"
      "\"rps\":%.1f,\"reply_envelope_bytes\":%zu,\"reply_tensor_bytes\":%zu,\"first_error\":\"%s\"}"
      "\n",
      server.c_str(), concurrency, connections, duration_s, static_cast<unsigned long long>(all.ok),
      static_cast<unsigned long long>(all.errors), static_cast<double>(all.ok) / duration_s,
      all.reply_envelope_bytes, all.reply_tensor_bytes, all.first_error.c_str());
  return all.errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "echo") return run_echo(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "load") return run_load(argc, argv);
  std::fprintf(stderr,
               "usage: serving_bench echo|load [options] (see the comment at the top of "
               "serving_bench.cpp)\n");
  return 2;
}
