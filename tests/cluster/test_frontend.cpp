// The frontend and the C++ client in one process, over TCP loopback, with a real (threaded) node:
// round trips that match a reference MLP, many requests in flight with ids matched, the
// max_inflight and max_outstanding_per_connection bounds (OVERLOADED), message size limits (a
// frame over the limit drops the connection, a message over it in small frames is
// INVALID_ARGUMENT with its id, an undecodable envelope's reply has an empty id), draining
// (UNAVAILABLE, wait_idle) and stop (CANCELLED).

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "actors/node.hpp"
#include "cluster/client.hpp"
#include "cluster/frontend.hpp"
#include "proto/troupe.pb.h"
#include "serving/model_table.hpp"
#include "tests/actors/actor_test_util.hpp"

namespace troupe::cluster {
namespace {

using namespace std::chrono_literals;

class frontend_test : public ::testing::Test {
 protected:
  static caf::actor_system_config& configure(caf::actor_system_config& cfg) {
    cfg.set("scheduler.max-threads", size_t{1});
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    cfg.set("logger.console-verbosity", caf::atom("quiet"));
    return cfg;
  }

  frontend_test() : sys_(configure(cfg_)) {}

  void start(frontend_options fo = {}, uint32_t workers = 1,
             uint32_t worker_idle_spin_us = actors::default_idle_spin_us()) {
    listen_before_load(fo, workers, worker_idle_spin_us);
    load();
  }

  /// As `troupe serve` does: the node's actors, then the frontend, and no load yet.
  void listen_before_load(frontend_options fo = {}, uint32_t workers = 1,
                          uint32_t worker_idle_spin_us = actors::default_idle_spin_us()) {
    weights_ = testing::make_mlp_weights(4, 3, 11);
    repo_.write("mlp/1/model.onnx", testing::mlp_model_bytes(weights_));
    repo_.write("mlp/config.yaml", "max_batch_size: 4\n");
    actors::node_spawn_options so;
    so.config.cpu_workers = workers;
    so.config.warmup_runs = 1;
    so.config.fault_injection = true;  // troupe.sleep_ms makes requests slow on demand
    so.worker_idle_spin_us = worker_idle_spin_us;
    so.holder = &holder_;
    node_ = actors::spawn_node(sys_, so);
    fo.listen = "tcp://127.0.0.1:*";
    auto fe = frontend::create(sys_, node_, holder_, nullptr, fo);
    ASSERT_TRUE(fe.has_value()) << fe.error().to_string();
    fe_ = std::move(*fe);
    auto c = client::connect(fe_->endpoint());
    ASSERT_TRUE(c.has_value());
    client_ = std::move(*c);
  }

  void load() {
    auto report = actors::load_repository(sys_, node_, repo_.path().string());
    ASSERT_TRUE(report.has_value()) << report.error().to_string();
    ASSERT_EQ(report->versions_ready, 1u);
  }

  void TearDown() override {
    client_.reset();
    if (fe_) fe_->stop();
    actors::stop_node(sys_, node_);
    sys_.await_all_actors_done();
    fe_.reset();
  }

  infer_request request(int64_t rows, const std::string& id, uint32_t seed = 1) {
    infer_request r;
    r.model = "mlp";
    r.id = id;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1, 1);
    tensor x = tensor::allocate(dtype::f32, {rows, 4});
    for (int64_t i = 0; i < x.elements(); ++i) x.data<float>()[i] = dist(rng);
    r.inputs.emplace_back("x", x);
    return r;
  }

  void expect_matches(const infer_request& r, const infer_reply& reply) {
    ASSERT_TRUE(reply.result.is_ok()) << reply.result.to_string();
    ASSERT_EQ(reply.outputs.size(), 1u);
    const tensor& x = r.inputs[0].second;
    const tensor& y = reply.outputs[0].second;
    EXPECT_EQ(reply.outputs[0].first, "y");
    ASSERT_EQ(y.shape(), (shape_t{x.dim(0), 3}));
    const auto ref = testing::mlp_reference(weights_, x.data<float>(), x.dim(0));
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(y.data<float>()[i], ref[i], 1e-5);
  }

  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  testing::temp_dir repo_;
  testing::mlp_weights weights_;
  serving::table_holder holder_;
  actors::node_handles node_;
  std::unique_ptr<frontend> fe_;
  std::unique_ptr<client> client_;
};

TEST_F(frontend_test, round_trip_metadata_and_health) {
  start();
  auto r = request(3, "one");
  auto reply = client_->infer(r, 10s);
  ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
  EXPECT_EQ(reply->id, "one");
  EXPECT_EQ(reply->version, 1);
  expect_matches(r, *reply);
  auto md = client_->metadata("mlp", 0, 10s);
  ASSERT_TRUE(md.has_value()) << md.error().to_string();
  EXPECT_EQ(md->max_batch_size, 4u);
  ASSERT_EQ(md->inputs.size(), 1u);
  EXPECT_EQ(md->inputs[0].shape, (std::vector<int64_t>{-1, 4}));
  auto h = client_->health(10s);
  ASSERT_TRUE(h.has_value());
  EXPECT_TRUE(h->live && h->ready && !h->draining);
  auto missing = client_->metadata("nope", 0, 10s);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), error_code::not_found);
}

// Several endpoints: one where nothing listens, then the frontend. Requests, metadata and health
// reach the frontend (the first connected endpoint); an address list with no endpoint is refused.
TEST_F(frontend_test, a_client_over_several_endpoints_uses_the_connected_one) {
  start();
  std::string unused;
  {
    // A port that was free a moment ago: bound, then released with its context (zmq_ctx_term
    // waits until the listener is gone, so nothing accepts connections there any more).
    zmq::context_t ctx;
    zmq::socket_t probe(ctx, zmq::socket_type::router);
    probe.set(zmq::sockopt::linger, 0);
    probe.bind("tcp://127.0.0.1:*");
    unused = probe.get(zmq::sockopt::last_endpoint);
  }
  auto c = client::connect(unused + "," + fe_->endpoint());
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  auto md = (*c)->metadata("mlp", 0, 10s);
  ASSERT_TRUE(md.has_value()) << md.error().to_string();
  EXPECT_EQ(md->max_batch_size, 4u);
  auto r = request(2, "two");
  auto reply = (*c)->infer(r, 10s);
  ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
  expect_matches(r, *reply);
  auto h = (*c)->health(10s);
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  EXPECT_TRUE(h->ready);
  EXPECT_EQ((*c)->failovers(), 0u);
  auto none = client::connect(" , ");
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), error_code::invalid_argument);
}

// The frontend listens before the repository loads: live, not ready ("loading"); requests and
// metadata are answered UNAVAILABLE; after the load the same socket serves.
TEST_F(frontend_test, live_and_not_ready_before_the_load) {
  listen_before_load();
  auto h = client_->health(10s);
  ASSERT_TRUE(h.has_value()) << h.error().to_string();
  EXPECT_TRUE(h->live);
  EXPECT_FALSE(h->ready);
  EXPECT_FALSE(h->draining);
  EXPECT_EQ(h->reason, "loading");
  EXPECT_TRUE(h->models.empty());
  auto early = client_->infer(request(1, "early"), 10s);
  ASSERT_TRUE(early.has_value()) << early.error().to_string();
  EXPECT_EQ(early->result.code(), error_code::unavailable);
  EXPECT_NE(early->result.message().find("loading"), std::string::npos);
  auto md = client_->metadata("mlp", 0, 10s);
  ASSERT_FALSE(md.has_value());
  EXPECT_EQ(md.error().code(), error_code::unavailable);

  load();
  h = client_->health(10s);
  ASSERT_TRUE(h.has_value());
  EXPECT_TRUE(h->live && h->ready && !h->draining);
  EXPECT_EQ(h->reason, "");
  auto r = request(2, "after");
  auto reply = client_->infer(r, 10s);
  ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
  expect_matches(r, *reply);
}

TEST_F(frontend_test, many_requests_in_flight_each_answered_once) {
  start();
  std::vector<infer_request> rs;
  for (int i = 0; i < 64; ++i)
    rs.push_back(request(1 + i % 4, std::to_string(i), static_cast<uint32_t>(i)));
  for (const auto& r : rs) ASSERT_TRUE(client_->send(r).is_ok());
  std::set<std::string> seen;
  for (int i = 0; i < 64; ++i) {
    auto reply = client_->receive(10s);
    ASSERT_TRUE(reply.has_value());
    ASSERT_TRUE(reply->has_value()) << "reply " << i << " missing";
    const auto& rep = **reply;
    EXPECT_TRUE(seen.insert(rep.id).second) << "two replies for " << rep.id;
    expect_matches(rs[static_cast<size_t>(std::stoi(rep.id))], rep);
  }
  auto extra = client_->receive(100ms);
  ASSERT_TRUE(extra.has_value());
  EXPECT_FALSE(extra->has_value()) << "no reply beyond one per request";
}

// The request path's threads poll before they block (default_idle_spin_us, forced on here
// whatever the machine): requests one at a time, some inside the spin windows and some after them
// (the blocking path), each answered once and right; a slow run outlasts the worker's window.
TEST_F(frontend_test, spinning_frontend_and_worker_answer_each_request_once) {
  frontend_options fo;
  fo.idle_spin_us = 2000;
  start(fo, 1, /*worker_idle_spin_us=*/2000);
  for (int i = 0; i < 40; ++i) {
    auto r = request(1 + i % 4, std::to_string(i), static_cast<uint32_t>(i));
    if (i == 20) r.parameters.emplace_back("troupe.sleep_ms", "20");
    auto reply = client_->infer(r, 10s);
    ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
    EXPECT_EQ(reply->id, std::to_string(i));
    expect_matches(r, *reply);
    if (i % 10 == 9) std::this_thread::sleep_for(10ms);  // past both windows: both threads block
  }
  auto extra = client_->receive(100ms);
  ASSERT_TRUE(extra.has_value());
  EXPECT_FALSE(extra->has_value()) << "no reply beyond one per request";
  // Many in flight while both spin: none lost or answered twice.
  std::vector<infer_request> rs;
  for (int i = 0; i < 32; ++i) rs.push_back(request(1, "m" + std::to_string(i)));
  for (const auto& r : rs) ASSERT_TRUE(client_->send(r).is_ok());
  std::set<std::string> seen;
  for (int i = 0; i < 32; ++i) {
    auto reply = client_->receive(10s);
    ASSERT_TRUE(reply.has_value() && reply->has_value()) << "reply " << i << " missing";
    EXPECT_TRUE(seen.insert((*reply)->id).second) << "two replies for " << (*reply)->id;
  }
}

TEST_F(frontend_test, max_inflight_bound_answers_overloaded) {
  frontend_options fo;
  fo.max_inflight = 2;
  start(fo);
  std::vector<infer_request> rs;
  for (int i = 0; i < 12; ++i) {
    rs.push_back(request(1, std::to_string(i)));
    rs.back().parameters.emplace_back("troupe.sleep_ms", "30");
  }
  for (const auto& r : rs) ASSERT_TRUE(client_->send(r).is_ok());
  int ok = 0, overloaded = 0;
  for (int i = 0; i < 12; ++i) {
    auto reply = client_->receive(10s);
    ASSERT_TRUE(reply.has_value() && reply->has_value());
    if ((*reply)->result.is_ok())
      ++ok;
    else if ((*reply)->result.code() == error_code::overloaded)
      ++overloaded;
    else
      ADD_FAILURE() << (*reply)->result.to_string();
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(overloaded, 1);
  EXPECT_EQ(ok + overloaded, 12);
}

// One connection at its max_outstanding_per_connection gets OVERLOADED for the rest; another
// connection is served meanwhile; every request has exactly one reply; once its replies are read,
// the first connection is served again.
TEST_F(frontend_test, max_outstanding_per_connection_refuses_that_connection_only) {
  frontend_options fo;
  fo.max_outstanding_per_connection = 3;
  start(fo);
  for (int i = 0; i < 12; ++i) {
    auto r = request(1, std::to_string(i));
    r.parameters.emplace_back("troupe.sleep_ms", "50");
    ASSERT_TRUE(client_->send(r).is_ok());
  }
  auto other = client::connect(fe_->endpoint());
  ASSERT_TRUE(other.has_value());
  auto r = request(2, "other");
  auto reply = (*other)->infer(r, 10s);
  ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
  expect_matches(r, *reply);

  int ok = 0, overloaded = 0;
  std::set<std::string> seen;
  for (int i = 0; i < 12; ++i) {
    auto got = client_->receive(10s);
    ASSERT_TRUE(got.has_value() && got->has_value()) << "reply " << i << " missing";
    EXPECT_TRUE(seen.insert((*got)->id).second) << "two replies for " << (*got)->id;
    if ((*got)->result.is_ok()) {
      ++ok;
    } else {
      EXPECT_EQ((*got)->result.code(), error_code::overloaded) << (*got)->result.to_string();
      EXPECT_NE((*got)->result.message().find("max_outstanding_per_connection"), std::string::npos);
      ++overloaded;
    }
  }
  // The requests arrive together, before any reply leaves: three run (a few more only if the
  // frontend's thread was held off for a whole sleep between two of them).
  EXPECT_GE(ok, 3);
  EXPECT_GE(overloaded, 1);
  EXPECT_EQ(ok + overloaded, 12);
  auto extra = client_->receive(100ms);
  ASSERT_TRUE(extra.has_value());
  EXPECT_FALSE(extra->has_value()) << "no reply beyond one per request";
  // Read up: the replies have left the node, so the connection is served again.
  auto again = request(1, "again");
  auto after = client_->infer(again, 10s);
  ASSERT_TRUE(after.has_value()) << after.error().to_string();
  expect_matches(again, *after);
}

/// A DEALER socket for messages the client class would not send.
class raw_dealer {
 public:
  explicit raw_dealer(const std::string& endpoint)
      : socket_(ctx_, zmq::socket_type::dealer), monitor_(ctx_, zmq::socket_type::pair) {
    socket_.set(zmq::sockopt::linger, 0);
    const std::string monitor_endpoint =
        "inproc://monitor-" + std::to_string(reinterpret_cast<uintptr_t>(this));
    EXPECT_EQ(zmq_socket_monitor(socket_.handle(), monitor_endpoint.c_str(),
                                 ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED),
              0);
    monitor_.connect(monitor_endpoint);
    socket_.connect(endpoint);
  }
  /// Waits for the socket monitor's event `wanted` (ZMQ_EVENT_...); false after `timeout`.
  bool wait_event(uint16_t wanted, std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      zmq::pollitem_t item{monitor_.handle(), 0, ZMQ_POLLIN, 0};
      if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0) return false;
      zmq::message_t event, address;
      EXPECT_TRUE(monitor_.recv(event));
      EXPECT_TRUE(monitor_.recv(address));  // the second frame: the endpoint
      uint16_t id = 0;
      std::memcpy(&id, event.data(), sizeof(id));
      if (id == wanted) return true;
    }
  }
  void send(std::vector<zmq::message_t> frames) {
    for (size_t i = 0; i < frames.size(); ++i)
      socket_.send(frames[i],
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  /// The reply's envelope, or nullopt after `timeout`.
  std::optional<troupe::v1::ServerMessage> receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    std::vector<zmq::message_t> parts;
    do {
      parts.emplace_back();
      EXPECT_TRUE(socket_.recv(parts.back()));
    } while (parts.back().more());
    troupe::v1::ServerMessage m;
    EXPECT_TRUE(m.ParseFromArray(parts[0].data(), static_cast<int>(parts[0].size())))
        << "the reply is not a ServerMessage";
    return m;
  }
  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::context_t ctx_;
  zmq::socket_t socket_;
  zmq::socket_t monitor_;
};

zmq::message_t infer_envelope(const std::string& id, int inputs = 1) {
  troupe::v1::ClientMessage m;
  m.mutable_infer()->set_model("mlp");
  m.mutable_infer()->set_id(id);
  for (int i = 0; i < inputs; ++i) {
    auto* d = m.mutable_infer()->add_inputs();
    d->set_name("x");
    d->set_dtype(troupe::v1::FLOAT);
    d->add_shape(1);
    d->add_shape(4);
  }
  return zmq::message_t(m.SerializeAsString());
}

TEST_F(frontend_test, a_message_over_the_limit_in_small_frames_is_refused_with_its_id) {
  frontend_options fo;
  fo.max_message_bytes = 64 << 10;
  start(fo);
  raw_dealer d(fe_->endpoint());
  std::vector<zmq::message_t> frames;
  frames.push_back(infer_envelope("big", 40));
  for (int i = 0; i < 40; ++i) frames.emplace_back(size_t{32} << 10);  // 1.25 MiB in all
  d.send(std::move(frames));
  auto reply = d.receive(10s);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->id(), "big");
  EXPECT_EQ(reply->error().code(), troupe::v1::INVALID_ARGUMENT);
  EXPECT_NE(reply->error().message().find("max_message_bytes 65536"), std::string::npos)
      << reply->error().message();
  EXPECT_NE(reply->error().message().find("41 frames"), std::string::npos);
  // Within the limit, the same socket is served.
  std::vector<zmq::message_t> ok;
  ok.push_back(infer_envelope("small"));
  ok.emplace_back(4 * sizeof(float));
  d.send(std::move(ok));
  reply = d.receive(10s);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->id(), "small");
  EXPECT_TRUE(reply->has_infer()) << reply->error().message();
}

TEST_F(frontend_test, a_frame_over_the_limit_drops_the_connection_unanswered) {
  frontend_options fo;
  fo.max_message_bytes = 64 << 10;
  start(fo);
  raw_dealer d(fe_->endpoint());
  ASSERT_TRUE(d.wait_event(ZMQ_EVENT_HANDSHAKE_SUCCEEDED, 10s));
  std::vector<zmq::message_t> frames;
  frames.push_back(infer_envelope("huge"));
  frames.emplace_back((size_t{64} << 10) + 1);
  d.send(std::move(frames));
  // ZeroMQ refuses the frame from its header and drops the connection: no reply. The DEALER
  // reconnects, and its next request is answered (and only that one).
  ASSERT_TRUE(d.wait_event(ZMQ_EVENT_DISCONNECTED, 10s));
  std::vector<zmq::message_t> ok;
  ok.push_back(infer_envelope("next"));
  ok.emplace_back(4 * sizeof(float));
  d.send(std::move(ok));
  auto reply = d.receive(10s);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->id(), "next");
  EXPECT_TRUE(reply->has_infer()) << reply->error().message();
  EXPECT_FALSE(d.receive(100ms).has_value());
}

TEST_F(frontend_test, an_undecodable_envelope_is_answered_with_an_empty_id) {
  start();
  raw_dealer d(fe_->endpoint());
  std::string bytes = infer_envelope("IDIDID").to_string();
  bytes.replace(bytes.find("IDIDID"), 6, "\xff\xfe\xfd\xfc\xfb\xfa");  // not UTF-8
  std::vector<zmq::message_t> frames;
  frames.emplace_back(bytes);
  frames.emplace_back(4 * sizeof(float));
  d.send(std::move(frames));
  auto reply = d.receive(10s);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->id(), "");
  EXPECT_EQ(reply->error().code(), troupe::v1::INVALID_ARGUMENT);
}

TEST_F(frontend_test, draining_refuses_new_work_and_finishes_old) {
  start();
  auto slow = request(1, "slow");
  slow.parameters.emplace_back("troupe.sleep_ms", "100");
  ASSERT_TRUE(client_->send(slow).is_ok());
  std::this_thread::sleep_for(30ms);  // the slow request has reached the node
  EXPECT_EQ(fe_->inflight(), 1u);
  fe_->begin_drain();
  auto late = client_->infer(request(1, "late"), 10s);
  ASSERT_TRUE(late.has_value());
  EXPECT_EQ(late->result.code(), error_code::unavailable);
  EXPECT_TRUE(fe_->wait_idle(10s));
  auto reply = client_->receive(10s);
  ASSERT_TRUE(reply.has_value() && reply->has_value());
  EXPECT_EQ((*reply)->id, "slow");
  EXPECT_TRUE((*reply)->result.is_ok());
  auto h = client_->health(10s);
  ASSERT_TRUE(h.has_value());
  EXPECT_TRUE(h->draining);
  EXPECT_FALSE(h->ready);
  EXPECT_EQ(h->reason, "draining");
}

TEST_F(frontend_test, stop_cancels_what_is_still_running) {
  start();
  auto slow = request(1, "slow");
  slow.parameters.emplace_back("troupe.sleep_ms", "300");
  ASSERT_TRUE(client_->send(slow).is_ok());
  std::this_thread::sleep_for(50ms);
  fe_->stop();
  auto reply = client_->receive(5s);
  ASSERT_TRUE(reply.has_value() && reply->has_value());
  EXPECT_EQ((*reply)->result.code(), error_code::cancelled);
}

}  // namespace
}  // namespace troupe::cluster
