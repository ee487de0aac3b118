// A control node's door for remote workers (cluster/worker_listener.hpp), against DEALER sockets
// of the test's own on tcp://127.0.0.1: a hello makes on_join fire with what the worker said; a
// hello the listener cannot take, or any other message from a connection that has not said
// hello, gets a bye; the connection is handed out once; a bound channel first hears the hello of
// its proxy's index, then the worker's messages, with tensors as frames; a worker silent for the
// heartbeat timeout is reported closed. Every wait is for a message or a callback, with a
// deadline.

#include "cluster/worker_listener.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "cluster/content_digest.hpp"
#include "cluster/worker_codec.hpp"

namespace troupe::cluster {
namespace {

using namespace troupe::actors;
using namespace troupe::serving;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// Generous: CI runs this on two busy cores.
constexpr auto deadline = 20s;

struct received {
  worker_message message;
  std::vector<zmq::message_t> frames;  // after the envelope
};

worker_hello hello_of(const std::string& node, const std::string& device, uint64_t incarnation,
                      int64_t pid = 4242, uint32_t lane = 0) {
  worker_hello h;
  h.worker_index = 0;
  h.pid = pid;
  h.device = device;
  h.node = node;
  h.incarnation = incarnation;
  h.memory_total_bytes = 16ULL << 30;
  h.memory_free_bytes = 12ULL << 30;
  h.lane = lane;
  return h;
}

class worker_listener_test : public ::testing::Test {
 protected:
  struct join {
    remote_worker_info info;
    worker_channel_factory accept;
  };

  void TearDown() override {
    channel_.reset();
    listener_.reset();  // no callback runs after this
  }

  void start(std::chrono::milliseconds interval = 1s, std::chrono::milliseconds timeout = 60s) {
    worker_listener_options o;
    o.endpoint = "tcp://127.0.0.1:*";
    o.heartbeat_interval = interval;
    o.heartbeat_timeout = timeout;
    o.lane_min_run_bytes = lane_min_run_bytes_;
    o.on_join = [this](const remote_worker_info& info, worker_channel_factory accept) {
      std::lock_guard<std::mutex> lock(mutex_);
      joins_.push_back({info, std::move(accept)});
      cv_.notify_all();
    };
    o.on_memory = [this](const remote_worker_info& info, uint64_t free_bytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      memory_reports_.emplace_back(info.node, free_bytes);
      cv_.notify_all();
    };
    auto l = worker_listener::create(std::move(o));
    ASSERT_TRUE(l.has_value()) << l.error().to_string();
    listener_ = std::move(*l);
  }

  zmq::socket_t dealer() {
    zmq::socket_t s(context_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(listener_->endpoint());
    return s;
  }

  static void send(zmq::socket_t& s, const worker_message& m,
                   std::vector<zmq::message_t> frames = {}) {
    const std::string envelope = encode_worker_message(m);
    s.send(zmq::buffer(envelope),
           frames.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
    for (size_t i = 0; i < frames.size(); ++i)
      s.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

  /// The next message the listener sent `s` (heartbeats skipped unless asked for), or none by
  /// the deadline.
  static std::optional<received> receive(zmq::socket_t& s, bool heartbeats_too = false) {
    const auto until = clock_type::now() + deadline;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
      if (left <= 0ms) return std::nullopt;
      zmq_pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, left);
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      bool more = true;
      while (more) {
        zmq::message_t part;
        if (!s.recv(part, zmq::recv_flags::none)) return std::nullopt;
        more = part.more();
        parts.push_back(std::move(part));
      }
      auto m = decode_worker_message(parts[0].data(), parts[0].size());
      EXPECT_TRUE(m.has_value()) << m.error().to_string();
      if (!m) return std::nullopt;
      if (std::holds_alternative<worker_heartbeat>(*m) && !heartbeats_too) continue;
      received r{std::move(*m), {}};
      for (size_t i = 1; i < parts.size(); ++i) r.frames.push_back(std::move(parts[i]));
      return r;
    }
  }

  template <class F>
  bool wait_for(F done, std::chrono::milliseconds for_at_most = deadline) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, for_at_most, done);
  }

  worker_channel_events events() {
    worker_channel_events e;
    e.on_message = [this](worker_message m) {
      std::lock_guard<std::mutex> lock(mutex_);
      messages_.push_back(std::move(m));
      cv_.notify_all();
    };
    e.on_closed = [this](status why) {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_.push_back(std::move(why));
      cv_.notify_all();
    };
    return e;
  }

  /// Says hello from `s` and waits for the join.
  void join_from(zmq::socket_t& s, const worker_hello& h) {
    size_t before = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      before = joins_.size();
    }
    send(s, h);
    ASSERT_TRUE(wait_for([&] { return joins_.size() > before; })) << "no on_join";
  }

  /// Binds the latest join's connection as a proxy would, with `index` and `arena`.
  void bind(uint32_t index, std::shared_ptr<shared_arena> arena = nullptr) {
    worker_channel_factory accept;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ASSERT_FALSE(joins_.empty());
      accept = joins_.back().accept;
    }
    worker_process_spec spec;
    spec.index = index;
    spec.arena = std::move(arena);
    auto c = accept(spec, events());
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    channel_ = std::move(*c);
  }

  size_t lane_min_run_bytes_ = size_t{256} << 10;
  /// Joins from `w` with `h`, binds the channel as a proxy of index 0 over `arena` would, and
  /// waits for the proxy's hello: the channel is bound from then on.
  void join_bound(zmq::socket_t& w, const worker_hello& h,
                  std::shared_ptr<shared_arena> arena = nullptr) {
    join_from(w, h);
    bind(0, std::move(arena));
    ASSERT_TRUE(wait_for([&] { return !messages_.empty(); })) << "the channel was never bound";
  }

  static std::shared_ptr<shared_arena> arena_of(size_t bytes) {
    auto made = shared_arena::create(bytes, "troupe-test-listener");
    EXPECT_TRUE(made.has_value()) << made.error().to_string();
    return made ? *made : nullptr;
  }

  zmq::context_t context_{1};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<join> joins_;
  std::vector<worker_message> messages_;
  std::vector<status> closed_;
  std::vector<std::pair<std::string, uint64_t>> memory_reports_;  // node, free bytes
  std::unique_ptr<worker_channel> channel_;
  std::unique_ptr<worker_listener> listener_;
};

TEST_F(worker_listener_test, binds_an_ephemeral_port_and_says_which) {
  start();
  const std::string& e = listener_->endpoint();
  const std::string prefix = "tcp://127.0.0.1:";
  ASSERT_EQ(e.rfind(prefix, 0), 0u) << e;
  const std::string port = e.substr(prefix.size());
  ASSERT_FALSE(port.empty()) << e;
  ASSERT_EQ(port.find_first_not_of("0123456789"), std::string::npos) << e;
  EXPECT_GT(std::stoi(port), 0) << e;
}

TEST_F(worker_listener_test, an_endpoint_that_cannot_be_bound_is_an_io_error) {
  start();
  worker_listener_options o;
  o.endpoint = listener_->endpoint();  // taken
  auto second = worker_listener::create(std::move(o));
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), error_code::io_error) << second.error().to_string();
}

TEST_F(worker_listener_test, a_hello_makes_on_join_fire_with_what_the_worker_said) {
  start();
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ASSERT_EQ(joins_.size(), 1u);
    const remote_worker_info& info = joins_[0].info;
    EXPECT_EQ(info.node, "n1");
    EXPECT_EQ(info.device, "cpu");
    EXPECT_EQ(info.kind, worker_kind::cpu);
    EXPECT_EQ(info.incarnation, 1u);
    EXPECT_EQ(info.pid, 4242);
    EXPECT_EQ(info.memory_total_bytes, 16ULL << 30);
    EXPECT_EQ(info.memory_free_bytes, 12ULL << 30);
    EXPECT_TRUE(static_cast<bool>(joins_[0].accept));
  }
  zmq::socket_t gpu = dealer();
  join_from(gpu, hello_of("n2", "cuda:1", 7));
  std::lock_guard<std::mutex> lock(mutex_);
  ASSERT_EQ(joins_.size(), 2u);
  EXPECT_EQ(joins_[1].info.node, "n2");
  EXPECT_EQ(joins_[1].info.kind, worker_kind::gpu);
  EXPECT_EQ(joins_[1].info.device_index, 1);
  EXPECT_EQ(joins_[1].info.incarnation, 7u);
}

TEST_F(worker_listener_test, a_hello_with_an_unknown_device_gets_a_bye_and_no_join) {
  start();
  zmq::socket_t tpu = dealer();
  send(tpu, hello_of("n1", "tpu:0", 1));
  auto answer = receive(tpu);
  ASSERT_TRUE(answer.has_value()) << "no answer to the hello";
  ASSERT_TRUE(std::holds_alternative<worker_bye>(answer->message))
      << worker_message_name(answer->message);
  EXPECT_NE(std::get<worker_bye>(answer->message).reason.find("tpu:0"), std::string::npos)
      << std::get<worker_bye>(answer->message).reason;

  zmq::socket_t nameless = dealer();
  send(nameless, hello_of("", "cpu", 1));
  answer = receive(nameless);
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(std::holds_alternative<worker_bye>(answer->message))
      << worker_message_name(answer->message);

  // Both byes were sent where on_join would have been called; a good hello's join comes after
  // them, and is the only one.
  zmq::socket_t good = dealer();
  join_from(good, hello_of("n2", "cpu", 1));
  std::lock_guard<std::mutex> lock(mutex_);
  ASSERT_EQ(joins_.size(), 1u);
  EXPECT_EQ(joins_[0].info.node, "n2");
}

TEST_F(worker_listener_test, a_message_from_a_connection_without_a_hello_gets_a_bye) {
  start();
  zmq::socket_t w = dealer();
  send(w, worker_heartbeat{1});
  auto answer = receive(w);
  ASSERT_TRUE(answer.has_value()) << "no answer to a stranger";
  ASSERT_TRUE(std::holds_alternative<worker_bye>(answer->message))
      << worker_message_name(answer->message);

  worker_done d;
  d.batch = 3;
  send(w, d);
  answer = receive(w);
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(std::holds_alternative<worker_bye>(answer->message))
      << worker_message_name(answer->message);

  // The worker starts afresh: its hello is heard.
  join_from(w, hello_of("n1", "cpu", 2));
  std::lock_guard<std::mutex> lock(mutex_);
  ASSERT_EQ(joins_.size(), 1u);
  EXPECT_EQ(joins_[0].info.incarnation, 2u);
}

TEST_F(worker_listener_test, the_accept_factory_hands_out_the_connection_once) {
  start();
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1, 777));
  worker_channel_factory accept;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    accept = joins_[0].accept;
  }
  worker_process_spec spec;
  spec.index = 1;
  auto first = accept(spec, events());
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_EQ((*first)->pid(), 777);
  auto second = accept(spec, events());
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), error_code::unavailable) << second.error().to_string();
  channel_ = std::move(*first);
}

TEST_F(worker_listener_test, a_bound_channel_first_hears_a_hello_naming_the_proxys_index) {
  start();
  auto arena = shared_arena::create(1 << 16, "troupe-test-listener");
  ASSERT_TRUE(arena.has_value()) << arena.error().to_string();
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1, 4343));
  bind(5, *arena);
  ASSERT_TRUE(wait_for([&] { return !messages_.empty(); })) << "the channel heard nothing";
  std::lock_guard<std::mutex> lock(mutex_);
  ASSERT_TRUE(std::holds_alternative<worker_hello>(messages_[0]))
      << worker_message_name(messages_[0]);
  const auto& h = std::get<worker_hello>(messages_[0]);
  EXPECT_EQ(h.worker_index, 5u);
  EXPECT_EQ(h.pid, 4343);
  EXPECT_EQ(h.node, "n1");
  EXPECT_EQ(h.device, "cpu");
  EXPECT_EQ(h.incarnation, 1u);
  EXPECT_TRUE(closed_.empty());
}

TEST_F(worker_listener_test, a_run_travels_as_frames_and_its_outputs_land_in_the_arena) {
  start();
  std::shared_ptr<shared_arena> arena = arena_of(1 << 16);
  ASSERT_NE(arena, nullptr);
  zmq::socket_t w = dealer();
  join_bound(w, hello_of("n1", "cpu", 1), arena);

  auto in = arena->allocate(100);
  auto out = arena->allocate(64);
  ASSERT_TRUE(in.has_value() && out.has_value());
  for (int i = 0; i < 100; ++i) arena->at(*in)[i] = static_cast<std::byte>(i + 1);
  std::memset(arena->at(*out), 0, 64);
  worker_run r;
  r.batch = 12;
  r.rows = 1;
  r.bucket_rows = 1;
  r.inputs = {data_ref{data_ref::kind::shm, *in, 0}};
  r.outputs = data_ref{data_ref::kind::shm, *out, 0};
  ASSERT_TRUE(channel_->send(r).is_ok());

  auto got = receive(w);
  ASSERT_TRUE(got.has_value()) << "the run did not come";
  ASSERT_TRUE(std::holds_alternative<worker_run>(got->message))
      << worker_message_name(got->message);
  const auto& sent = std::get<worker_run>(got->message);
  EXPECT_EQ(sent.batch, 12u);
  ASSERT_EQ(sent.inputs.size(), 1u);
  EXPECT_EQ(sent.inputs[0].where, data_ref::kind::frame);
  ASSERT_LT(sent.inputs[0].frame, got->frames.size());
  const zmq::message_t& frame = got->frames[sent.inputs[0].frame];
  ASSERT_EQ(frame.size(), 100u);
  EXPECT_EQ(std::memcmp(frame.data(), arena->at(*in), 100), 0);
  EXPECT_EQ(sent.outputs.where, data_ref::kind::none);
  EXPECT_EQ(sent.output_bytes, 64u);

  worker_done d;
  d.batch = 12;
  d.bucket_rows = 1;
  d.block = data_ref{data_ref::kind::frame, {}, 0};
  std::string results(64, '\0');
  for (size_t i = 0; i < results.size(); ++i) results[i] = static_cast<char>(200 - i);
  std::vector<zmq::message_t> frames;
  frames.emplace_back(results.data(), results.size());
  send(w, d, std::move(frames));
  ASSERT_TRUE(wait_for([&] { return messages_.size() >= 2; })) << "the answer did not come";
  std::lock_guard<std::mutex> lock(mutex_);
  ASSERT_TRUE(std::holds_alternative<worker_done>(messages_[1]))
      << worker_message_name(messages_[1]);
  const auto& done = std::get<worker_done>(messages_[1]);
  EXPECT_EQ(done.batch, 12u);
  EXPECT_TRUE(done.result.is_ok()) << done.result.to_string();
  EXPECT_EQ(done.block.where, data_ref::kind::none);  // the proxy sees it as over ipc
  EXPECT_EQ(std::memcmp(arena->at(*out), results.data(), 64), 0);
}

TEST_F(worker_listener_test, a_load_names_its_file_by_hash_and_a_wanted_file_is_sent) {
  start();
  std::string dir = (std::filesystem::temp_directory_path() / "troupe_listener_XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  const std::string path = dir + "/model.onnx";
  const std::string content = "not really onnx, but bytes all the same";
  std::ofstream(path, std::ios::binary) << content;
  const std::string sha = sha256_hex(content.data(), content.size());

  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1));
  bind(0);
  worker_load l;
  l.request = 3;
  l.model = "m";
  l.version = 1;
  l.path = path;
  ASSERT_TRUE(channel_->send(l).is_ok());
  auto got = receive(w);
  ASSERT_TRUE(got.has_value()) << "the load did not come";
  ASSERT_TRUE(std::holds_alternative<worker_load>(got->message))
      << worker_message_name(got->message);
  EXPECT_EQ(std::get<worker_load>(got->message).content_sha256, sha);
  EXPECT_EQ(std::get<worker_load>(got->message).file_bytes, content.size());

  send(w, worker_file_wanted{3, sha});
  got = receive(w);
  ASSERT_TRUE(got.has_value()) << "the file did not come";
  ASSERT_TRUE(std::holds_alternative<worker_file_data>(got->message))
      << worker_message_name(got->message);
  const auto& data = std::get<worker_file_data>(got->message);
  EXPECT_TRUE(data.result.is_ok()) << data.result.to_string();
  EXPECT_EQ(data.content_sha256, sha);
  ASSERT_EQ(data.data.where, data_ref::kind::frame);
  ASSERT_LT(data.data.frame, got->frames.size());
  EXPECT_EQ(got->frames[data.data.frame].to_string(), content);

  // A file no load named is not sent.
  send(w, worker_file_wanted{4, std::string(64, 'a')});
  got = receive(w);
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(std::holds_alternative<worker_file_data>(got->message));
  EXPECT_EQ(std::get<worker_file_data>(got->message).result.code(), error_code::not_found);
  EXPECT_TRUE(got->frames.empty());
  std::filesystem::remove_all(dir);
}

TEST_F(worker_listener_test, a_silent_worker_is_closed_at_its_heartbeat_timeout) {
  const auto timeout = 200ms;
  start(20ms, timeout);
  auto arena = shared_arena::create(1 << 16, "troupe-test-listener");
  ASSERT_TRUE(arena.has_value()) << arena.error().to_string();
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1));
  bind(3, *arena);
  // Beats until the channel is bound (however slow this machine is), then falls silent.
  auto last_word = clock_type::now();
  const auto until = clock_type::now() + deadline;
  for (;;) {
    last_word = clock_type::now();
    send(w, worker_heartbeat{1});
    if (wait_for([&] { return !messages_.empty() || !closed_.empty(); }, 10ms)) break;
    ASSERT_LT(clock_type::now(), until) << "the channel was never bound";
  }
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); })) << "never reported closed";
  const auto silent_for = clock_type::now() - last_word;
  // The worker is told.
  auto bye = receive(w);
  ASSERT_TRUE(bye.has_value());
  EXPECT_TRUE(std::holds_alternative<worker_bye>(bye->message))
      << worker_message_name(bye->message);
  std::lock_guard<std::mutex> lock(mutex_);
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_EQ(closed_[0].code(), error_code::unavailable) << closed_[0].to_string();
  EXPECT_NE(closed_[0].message().find("heartbeat"), std::string::npos) << closed_[0].to_string();
  EXPECT_GE(silent_for, timeout) << "closed before the timeout";
  ASSERT_FALSE(messages_.empty());
  EXPECT_TRUE(std::holds_alternative<worker_hello>(messages_[0]));
}

TEST_F(worker_listener_test, a_worker_that_answers_heartbeats_stays) {
  const auto timeout = 500ms;
  start(20ms, timeout);
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1));
  bind(0);
  // Answers the listener's beats for three timeouts' worth of them.
  const auto since = clock_type::now();
  int beats = 0;
  while (clock_type::now() - since < 3 * timeout) {
    auto got = receive(w, true);
    ASSERT_TRUE(got.has_value()) << "the listener stopped beating after " << beats;
    ASSERT_TRUE(std::holds_alternative<worker_heartbeat>(got->message))
        << worker_message_name(got->message) << " after " << beats << " beats";
    send(w, worker_heartbeat{static_cast<uint64_t>(++beats)});
  }
  EXPECT_GE(beats, 3);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    EXPECT_TRUE(closed_.empty()) << closed_[0].to_string();
  }
  // Silent from here on: gone.
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); }));
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_EQ(closed_[0].code(), error_code::unavailable);
}

// A worker's heartbeats carry its free memory: on_memory hears a change of 16 MiB or more from what
// it said last (its hello's 12 GiB at first), not the small moves, nor a heartbeat without it.
TEST_F(worker_listener_test, heartbeats_report_free_memory_when_it_changed) {
  start();
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1));
  bind(0);
  constexpr uint64_t gib = uint64_t{1} << 30, mib = uint64_t{1} << 20;
  for (uint64_t free_bytes : {12 * gib + mib, uint64_t{0}, 10 * gib, 10 * gib - 15 * mib, 11 * gib})
    send(w, worker_heartbeat{1, free_bytes});
  ASSERT_TRUE(wait_for([&] { return memory_reports_.size() >= 2; }));
  // A small move, then a bye on the same connection: once the bye closed the channel, every
  // heartbeat before it was handled.
  send(w, worker_heartbeat{2, 11 * gib + mib});
  send(w, worker_message(worker_bye{"done"}));
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); }));
  std::lock_guard<std::mutex> lock(mutex_);
  const std::vector<std::pair<std::string, uint64_t>> expected{{"n1", 10 * gib}, {"n1", 11 * gib}};
  EXPECT_EQ(memory_reports_, expected);
}

TEST_F(worker_listener_test, a_worker_that_says_bye_is_closed) {
  start();
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1));
  bind(0);
  ASSERT_TRUE(wait_for([&] { return !messages_.empty(); }));
  send(w, worker_bye{"node draining"});
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); })) << "never reported closed";
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_EQ(closed_[0].code(), error_code::unavailable) << closed_[0].to_string();
  EXPECT_NE(closed_[0].message().find("node draining"), std::string::npos)
      << closed_[0].to_string();
  EXPECT_EQ(messages_.size(), 1u) << "the bye is not passed on as a message";
}

TEST_F(worker_listener_test, a_new_incarnation_supersedes_the_old_connection) {
  start();
  zmq::socket_t old_life = dealer();
  join_from(old_life, hello_of("n1", "cuda:0", 1));
  bind(0);
  ASSERT_TRUE(wait_for([&] { return !messages_.empty(); })) << "never bound";
  zmq::socket_t new_life = dealer();
  join_from(new_life, hello_of("n1", "cuda:0", 2));
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); })) << "the old life was not closed";
  {
    std::lock_guard<std::mutex> lock(mutex_);
    EXPECT_EQ(closed_[0].code(), error_code::unavailable) << closed_[0].to_string();
    EXPECT_NE(closed_[0].message().find("incarnation"), std::string::npos)
        << closed_[0].to_string();
    ASSERT_EQ(joins_.size(), 2u);
    EXPECT_EQ(joins_[1].info.incarnation, 2u);
  }
  auto bye = receive(old_life);
  ASSERT_TRUE(bye.has_value());
  EXPECT_TRUE(std::holds_alternative<worker_bye>(bye->message))
      << worker_message_name(bye->message);
}

// worker_channel::send's contract (actors/worker_channel.hpp): unavailable once the channel
// closed, as the ipc link's (test_worker_link checks it).
TEST_F(worker_listener_test, a_closed_channel_refuses_sends) {
  start(20ms, 200ms);
  zmq::socket_t w = dealer();
  join_from(w, hello_of("n1", "cpu", 1));
  bind(0);
  ASSERT_TRUE(wait_for([&] { return !messages_.empty(); })) << "never bound";
  send(w, worker_bye{"leaving"});
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); })) << "never reported closed";
  const status sent = channel_->send(worker_unload{1});
  EXPECT_EQ(sent.code(), error_code::unavailable) << "sent: " << sent.to_string();
}

TEST_F(worker_listener_test, a_released_channel_and_a_stopping_listener_say_bye) {
  start();
  zmq::socket_t a = dealer();
  join_from(a, hello_of("n1", "cpu", 1));
  bind(0);
  channel_.reset();  // the proxy let go
  auto bye = receive(a);
  ASSERT_TRUE(bye.has_value());
  EXPECT_TRUE(std::holds_alternative<worker_bye>(bye->message))
      << worker_message_name(bye->message);

  zmq::socket_t b = dealer();
  join_from(b, hello_of("n2", "cpu", 1));
  bind(1);
  listener_.reset();
  bye = receive(b);
  ASSERT_TRUE(bye.has_value());
  EXPECT_TRUE(std::holds_alternative<worker_bye>(bye->message))
      << worker_message_name(bye->message);
  // The channel the proxy still holds refuses sends and reports closed no more.
  EXPECT_EQ(channel_->send(worker_unload{1}).code(), error_code::unavailable);
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_TRUE(closed_.empty()) << "a channel let go of, or of a stopped listener, reports nothing";
}

}  // namespace
}  // namespace troupe::cluster

namespace troupe::cluster {
namespace {

/// The next message on either of two sockets: which (0 or 1), what, and its frames; none by the
/// deadline.
struct arrival {
  int socket;
  worker_message message;
  std::vector<zmq::message_t> frames;
};
std::optional<arrival> receive_either(zmq::socket_t& a, zmq::socket_t& b) {
  zmq_pollitem_t items[2] = {{a.handle(), 0, ZMQ_POLLIN, 0}, {b.handle(), 0, ZMQ_POLLIN, 0}};
  const auto until = clock_type::now() + deadline;
  while (clock_type::now() < until) {
    zmq::poll(items, 2, 1000ms);
    for (int i = 0; i < 2; ++i) {
      if (!(items[i].revents & ZMQ_POLLIN)) continue;
      zmq::socket_t& s = i == 0 ? a : b;
      std::vector<zmq::message_t> parts;
      bool more = true;
      while (more) {
        zmq::message_t part;
        (void)s.recv(part, zmq::recv_flags::none);
        more = part.more();
        parts.push_back(std::move(part));
      }
      auto m = decode_worker_message(parts[0].data(), parts[0].size());
      if (!m) return std::nullopt;
      if (std::holds_alternative<worker_heartbeat>(*m)) continue;
      arrival out{i, std::move(*m), {}};
      for (size_t k = 1; k < parts.size(); ++k) out.frames.push_back(std::move(parts[k]));
      return out;
    }
  }
  return std::nullopt;
}

// Striping (docs/cluster.md): once a lane of the worker said hello, a run of at least
// lane_min_run_bytes goes as its envelope over the first connection and its input in slices,
// one over the first connection and one over the lane; a small run goes whole over the first.
TEST_F(worker_listener_test, a_large_run_is_striped_over_the_first_connection_and_its_lanes) {
  lane_min_run_bytes_ = 1000;
  start();
  std::shared_ptr<shared_arena> arena = arena_of(1 << 20);
  ASSERT_NE(arena, nullptr);
  zmq::socket_t w = dealer();
  join_bound(w, hello_of("n1", "cuda:0", 5), arena);
  zmq::socket_t lane = dealer();
  send(lane, hello_of("n1", "cuda:0", 5, 4242, 1));

  constexpr size_t large_bytes = 200000;  // slices of at least 64 KiB: two
  auto large = arena->allocate(large_bytes), small = arena->allocate(100),
       out = arena->allocate(64);
  ASSERT_TRUE(large && small && out);
  for (size_t i = 0; i < large_bytes; ++i)
    arena->at(*large)[i] = static_cast<std::byte>(i * 31 + 7);
  uint64_t batch = 0;
  auto run_of = [&](const shm_region& in) {
    worker_run r;
    r.batch = ++batch;
    r.rows = 1;
    r.bucket_rows = 1;
    r.inputs = {data_ref{data_ref::kind::shm, in, 0}};
    r.outputs = data_ref{data_ref::kind::shm, *out, 0};
    return r;
  };
  // Until the lane is filed, a large run goes whole over the first connection.
  for (;;) {
    ASSERT_TRUE(channel_->send(run_of(*large)).is_ok());
    auto got = receive_either(w, lane);
    ASSERT_TRUE(got.has_value()) << "run " << batch << " did not come";
    ASSERT_EQ(got->socket, 0);
    const auto* r = std::get_if<worker_run>(&got->message);
    ASSERT_NE(r, nullptr) << worker_message_name(got->message);
    if (r->parts == 0) {
      EXPECT_EQ(r->inputs[0].where, data_ref::kind::frame);
      continue;
    }
    // Striped: the envelope names the input by its size, and two slices follow, one per
    // connection, that together are the input's bytes.
    EXPECT_EQ(r->parts, 2u);
    ASSERT_EQ(r->inputs[0].where, data_ref::kind::parts);
    EXPECT_EQ(r->inputs[0].region.bytes, large_bytes);
    EXPECT_TRUE(got->frames.empty());
    std::string assembled(large_bytes, '\0');
    std::vector<int> sockets;
    for (int k = 0; k < 2; ++k) {
      auto s = receive_either(w, lane);
      ASSERT_TRUE(s.has_value()) << "slice " << k << " did not come";
      const auto* part = std::get_if<worker_run_part>(&s->message);
      ASSERT_NE(part, nullptr) << worker_message_name(s->message);
      EXPECT_EQ(part->batch, r->batch);
      EXPECT_EQ(part->parts, 2u);
      EXPECT_EQ(part->input_bytes, large_bytes);
      ASSERT_EQ(s->frames.size(), 1u);
      ASSERT_LE(part->offset + s->frames[0].size(), large_bytes);
      std::memcpy(assembled.data() + part->offset, s->frames[0].data(), s->frames[0].size());
      sockets.push_back(s->socket);
    }
    std::sort(sockets.begin(), sockets.end());
    EXPECT_EQ(sockets, (std::vector<int>{0, 1})) << "one slice per connection";
    EXPECT_EQ(std::memcmp(assembled.data(), arena->at(*large), large_bytes), 0);
    break;
  }
  // A small run goes whole over the first connection.
  ASSERT_TRUE(channel_->send(run_of(*small)).is_ok());
  auto got = receive_either(w, lane);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->socket, 0);
  const auto* r = std::get_if<worker_run>(&got->message);
  ASSERT_NE(r, nullptr) << worker_message_name(got->message);
  EXPECT_EQ(r->parts, 0u);
  EXPECT_EQ(r->inputs[0].where, data_ref::kind::frame);
}

TEST_F(worker_listener_test, a_lane_of_a_worker_not_known_gets_a_bye) {
  start();
  zmq::socket_t lane = dealer();
  send(lane, hello_of("n1", "cuda:0", 5, 4242, 1));
  auto got = receive(lane);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(std::holds_alternative<worker_bye>(got->message))
      << worker_message_name(got->message);
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_TRUE(joins_.empty());
}

TEST_F(worker_listener_test, a_worker_gets_at_most_63_data_lanes) {
  start();
  zmq::socket_t w = dealer();
  join_bound(w, hello_of("n1", "cuda:0", 5));
  std::vector<zmq::socket_t> lanes;
  for (uint32_t i = 1; i <= 64; ++i) {
    lanes.push_back(dealer());
    send(lanes.back(), hello_of("n1", "cuda:0", 5, 4242, i));
  }
  // Filed in the order they came, which need not be the order sent: one of them gets a bye.
  std::vector<zmq_pollitem_t> items;
  for (auto& l : lanes) items.push_back({l.handle(), 0, ZMQ_POLLIN, 0});
  ASSERT_GT(zmq::poll(items.data(), items.size(), std::chrono::milliseconds(deadline)), 0)
      << "no lane was refused";
  int byes = 0;
  for (size_t i = 0; i < lanes.size(); ++i) {
    if (!(items[i].revents & ZMQ_POLLIN)) continue;
    auto got = receive(lanes[i]);
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(std::holds_alternative<worker_bye>(got->message))
        << worker_message_name(got->message);
    ++byes;
  }
  EXPECT_EQ(byes, 1);
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_TRUE(closed_.empty()) << "the worker itself stays";
}

TEST_F(worker_listener_test, a_silent_data_lane_ends_its_worker) {
  start(20ms, 300ms);
  zmq::socket_t w = dealer();
  join_bound(w, hello_of("n1", "cuda:0", 5));
  zmq::socket_t lane = dealer();
  send(lane, hello_of("n1", "cuda:0", 5, 4242, 1));
  // The first connection beats on; the lane says nothing after its hello.
  const auto until = clock_type::now() + deadline;
  while (!wait_for([&] { return !closed_.empty(); }, 10ms)) {
    ASSERT_LT(clock_type::now(), until) << "never reported closed";
    send(w, worker_heartbeat{1});
  }
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_EQ(closed_[0].code(), error_code::unavailable) << closed_[0].to_string();
  EXPECT_NE(closed_[0].message().find("data lane"), std::string::npos) << closed_[0].to_string();
}

TEST_F(worker_listener_test, a_lane_that_says_more_than_heartbeats_breaks_the_protocol) {
  start();
  zmq::socket_t w = dealer();
  join_bound(w, hello_of("n1", "cuda:0", 5));
  zmq::socket_t lane = dealer();
  send(lane, hello_of("n1", "cuda:0", 5, 4242, 1));
  worker_loaded l;
  l.request = 1;
  send(lane, l);
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); }));
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_EQ(closed_[0].code(), error_code::internal) << closed_[0].to_string();
  EXPECT_NE(closed_[0].message().find("data lane"), std::string::npos) << closed_[0].to_string();
}

}  // namespace
}  // namespace troupe::cluster
