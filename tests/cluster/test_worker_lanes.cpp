// A remote worker process's data lanes (cluster/worker_lanes.hpp), against a ROUTER of the test's
// own on tcp://127.0.0.1 standing in for the control node: each lane says the process's hello
// with its own lane number; a run sent on a lane comes out staged in the arena (its frame's bytes
// copied there, an output block given), as does a striped run once its last slice came; a run
// that cannot be staged comes out as its failed answer; a bye ends the lanes (unavailable), and
// anything but a run, a heartbeat or a bye on a lane breaks the protocol (internal); lanes
// heartbeat; stop joins them. Every wait is for a message or an event, with a deadline.

#include "cluster/worker_lanes.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq_addon.hpp>

#include "cluster/worker_codec.hpp"

namespace troupe::cluster {
namespace {

using namespace troupe::actors;
using namespace troupe::serving;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr auto deadline = 20s;  // generous: CI runs this on two busy cores

class worker_lanes_test : public ::testing::Test {
 protected:
  void SetUp() override {
    router_ = zmq::socket_t(context_, zmq::socket_type::router);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    auto made = shared_arena::create(1 << 20, "troupe-test-lanes");
    ASSERT_TRUE(made.has_value()) << made.error().to_string();
    arena_ = *made;
    staging_.emplace(arena_);
  }
  void TearDown() override {
    if (lanes_) lanes_->stop();
  }

  void start(uint32_t count, std::chrono::milliseconds interval = 60s) {
    worker_lanes_options o;
    o.context = &context_;
    o.endpoint = router_.get(zmq::sockopt::last_endpoint);
    o.hello.node = "n1";
    o.hello.device = "cuda:0";
    o.hello.incarnation = 77;
    o.hello.pid = 4242;
    o.count = count;
    o.heartbeat_interval = interval;
    lanes_.emplace(std::move(o), *staging_);
    ASSERT_TRUE(lanes_->start().is_ok());
  }

  /// The next message on the router: who sent it and what (frames after the envelope dropped).
  std::optional<std::pair<std::string, worker_message>> receive() {
    zmq_pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline));
    if (!(item.revents & ZMQ_POLLIN)) return std::nullopt;
    std::vector<zmq::message_t> frames;
    (void)zmq::recv_multipart(router_, std::back_inserter(frames));
    if (frames.size() < 2) return std::nullopt;
    auto m = decode_worker_message(frames[1].data(), frames[1].size());
    EXPECT_TRUE(m.has_value()) << m.error().to_string();
    if (!m) return std::nullopt;
    return std::make_pair(frames[0].to_string(), std::move(*m));
  }

  /// Each lane's hello: lane number -> its routing id.
  std::map<uint32_t, std::string> hellos(uint32_t count) {
    std::map<uint32_t, std::string> out;
    while (out.size() < count) {
      auto got = receive();
      if (!got) break;
      auto* h = std::get_if<worker_hello>(&got->second);
      EXPECT_NE(h, nullptr) << worker_message_name(got->second);
      if (!h) break;
      EXPECT_EQ(h->node, "n1");
      EXPECT_EQ(h->device, "cuda:0");
      EXPECT_EQ(h->incarnation, 77u);
      out[h->lane] = got->first;
    }
    return out;
  }

  void send(const std::string& routing, const worker_message& m,
            std::vector<zmq::message_t> frames = {}) {
    router_.send(zmq::buffer(routing), zmq::send_flags::sndmore);
    const std::string envelope = encode_worker_message(m);
    router_.send(zmq::buffer(envelope),
                 frames.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
    for (size_t i = 0; i < frames.size(); ++i)
      router_.send(frames[i],
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

  /// The next lane event, or none by the deadline.
  std::optional<lane_event> next_event() {
    const auto until = clock_type::now() + deadline;
    while (clock_type::now() < until) {
      if (!pending_.empty()) {
        lane_event e = std::move(pending_.front());
        pending_.pop_front();
        return e;
      }
      zmq_pollitem_t item{nullptr, lanes_->fd(), ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 1000ms);
      if (item.revents & ZMQ_POLLIN)
        for (lane_event& e : lanes_->take()) pending_.push_back(std::move(e));
    }
    return std::nullopt;
  }

  static worker_run run_of(uint64_t batch, uint64_t output_bytes) {
    worker_run r;
    r.batch = batch;
    r.rows = 1;
    r.bucket_rows = 1;
    r.inputs = {data_ref{data_ref::kind::frame, {}, 0}};
    r.outputs = data_ref{data_ref::kind::none, {}, 0};
    r.output_bytes = output_bytes;
    return r;
  }

  zmq::context_t context_{2};
  zmq::socket_t router_;
  std::shared_ptr<shared_arena> arena_;
  std::optional<remote_run_staging> staging_;
  std::optional<worker_lanes> lanes_;
  std::deque<lane_event> pending_;
};

TEST_F(worker_lanes_test, each_lane_says_the_processs_hello_with_its_number) {
  start(3);
  const auto lanes = hellos(3);
  ASSERT_EQ(lanes.size(), 3u);
  EXPECT_EQ(lanes.begin()->first, 1u);
  EXPECT_EQ(lanes.rbegin()->first, 3u);
}

TEST_F(worker_lanes_test, a_run_on_a_lane_comes_out_staged_in_the_arena) {
  start(2);
  const auto lanes = hellos(2);
  ASSERT_EQ(lanes.size(), 2u);
  std::string bytes(5000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 3);
  for (const auto& [lane, routing] : lanes) {
    std::vector<zmq::message_t> frames;
    frames.emplace_back(bytes.data(), bytes.size());
    send(routing, run_of(100 + lane, 64), std::move(frames));
    auto e = next_event();
    ASSERT_TRUE(e.has_value()) << "no event for the run on lane " << lane;
    ASSERT_TRUE(e->ended.is_ok()) << e->ended.to_string();
    ASSERT_TRUE(e->message.has_value());
    auto* r = std::get_if<worker_run>(&*e->message);
    ASSERT_NE(r, nullptr) << worker_message_name(*e->message);
    EXPECT_EQ(r->batch, 100 + lane);
    ASSERT_EQ(r->inputs.size(), 1u);
    ASSERT_EQ(r->inputs[0].where, data_ref::kind::shm);
    ASSERT_EQ(r->inputs[0].region.bytes, bytes.size());
    EXPECT_EQ(std::memcmp(arena_->at(r->inputs[0].region), bytes.data(), bytes.size()), 0);
    EXPECT_EQ(r->outputs.where, data_ref::kind::shm);
    EXPECT_EQ(r->outputs.region.bytes, 64u);
    // The answer gives the regions back.
    worker_done d;
    d.batch = r->batch;
    (void)staging_->answer(d);
  }
}

TEST_F(worker_lanes_test, a_run_that_cannot_be_staged_comes_out_as_its_failed_answer) {
  start(1);
  const auto lanes = hellos(1);
  ASSERT_EQ(lanes.size(), 1u);
  send(lanes.at(1), run_of(5, 64));  // names frame 0, sends none
  auto e = next_event();
  ASSERT_TRUE(e.has_value());
  ASSERT_TRUE(e->ended.is_ok()) << e->ended.to_string();
  ASSERT_TRUE(e->message.has_value());
  auto* d = std::get_if<worker_done>(&*e->message);
  ASSERT_NE(d, nullptr) << worker_message_name(*e->message);
  EXPECT_EQ(d->batch, 5u);
  EXPECT_EQ(d->result.code(), error_code::invalid_argument) << d->result.to_string();
}

TEST_F(worker_lanes_test, the_slice_that_completes_a_striped_run_brings_it_out) {
  start(2);
  const auto lanes = hellos(2);
  ASSERT_EQ(lanes.size(), 2u);
  const std::string bytes(9000, 'x');
  // The envelope came over the first connection (staged by the main thread); one slice per lane.
  worker_run r = run_of(30, 64);
  r.inputs = {data_ref{data_ref::kind::parts, {0, 0, bytes.size()}, 0}};
  r.parts = 2;
  auto envelope = staging_->stage(r, {});
  ASSERT_TRUE(envelope.has_value()) << envelope.error().to_string();
  ASSERT_FALSE(envelope->has_value());
  uint64_t offset = 0;
  for (const auto& [lane, routing] : lanes) {
    worker_run_part p;
    p.batch = 30;
    p.input_bytes = bytes.size();
    p.offset = offset;
    p.parts = 2;
    std::vector<zmq::message_t> frames;
    frames.emplace_back(bytes.data() + offset, 4500);
    offset += 4500;
    send(routing, p, std::move(frames));
  }
  auto e = next_event();
  ASSERT_TRUE(e.has_value()) << "the run did not come out";
  ASSERT_TRUE(e->ended.is_ok()) << e->ended.to_string();
  auto* staged = std::get_if<worker_run>(&*e->message);
  ASSERT_NE(staged, nullptr) << worker_message_name(*e->message);
  EXPECT_EQ(staged->batch, 30u);
  EXPECT_EQ(std::memcmp(arena_->at(staged->inputs[0].region), bytes.data(), bytes.size()), 0);
}

TEST_F(worker_lanes_test, a_bye_on_a_lane_ends_it_unavailable) {
  start(1);
  const auto lanes = hellos(1);
  ASSERT_EQ(lanes.size(), 1u);
  send(lanes.at(1), worker_bye{"released"});
  auto e = next_event();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->ended.code(), error_code::unavailable) << e->ended.to_string();
  EXPECT_NE(e->ended.message().find("released"), std::string::npos) << e->ended.to_string();
}

TEST_F(worker_lanes_test, anything_but_a_run_on_a_lane_breaks_the_protocol) {
  start(1);
  const auto lanes = hellos(1);
  ASSERT_EQ(lanes.size(), 1u);
  worker_unload u;
  u.replica = 1;
  send(lanes.at(1), u);
  auto e = next_event();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->ended.code(), error_code::internal) << e->ended.to_string();
}

TEST_F(worker_lanes_test, lanes_send_heartbeats_and_stop_joins_them) {
  start(2, 50ms);
  const auto lanes = hellos(2);
  ASSERT_EQ(lanes.size(), 2u);
  std::map<std::string, int> beats;
  while (beats.size() < 2) {
    auto got = receive();
    ASSERT_TRUE(got.has_value()) << "no heartbeats from both lanes";
    ASSERT_TRUE(std::holds_alternative<worker_heartbeat>(got->second))
        << worker_message_name(got->second);
    ++beats[got->first];
  }
  lanes_->stop();
  lanes_->stop();  // idempotent
}

}  // namespace
}  // namespace troupe::cluster
