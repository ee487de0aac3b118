// The node's link to a worker process (cluster/worker_link.hpp) against stand-in processes
// written in Python: what a faulty process does ends the link with a typed reason and the process
// killed and reaped, never a crash of the node. A process that breaks the protocol after its
// hello, one whose hello names another pid (not heard: a stranger), one that exits at once; and
// a well-behaved one whose messages arrive and which gets the node's. Every wait is for a callback,
// with a deadline.

#include "cluster/worker_link.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "serving/shared_arena.hpp"

namespace troupe::cluster {
namespace {

using namespace troupe::actors;
using namespace troupe::serving;

#ifdef TROUPE_PYTHON

/// A stand-in for `troupe worker`: argv as the link passes it; `behaviour` picks what it does.
/// Envelopes are written by hand (protobuf's wire format): WorkerMessage{1: version, body}.
constexpr const char* stand_in = R"PY(
import os, sys, time, zmq
args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
behaviour = os.environ["TROUPE_TEST_BEHAVIOUR"]
def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
def field(num, payload):  # length-delimited
    return varint(num << 3 | 2) + varint(len(payload)) + payload
def hello(pid):
    body = varint(1 << 3) + varint(int(args["--index"])) + varint(2 << 3) + varint(pid) + field(3, b"cpu")
    return varint(1 << 3) + varint(1) + field(2, body)
heartbeat = varint(1 << 3) + varint(1) + field(8, varint(1 << 3) + varint(1))
if behaviour == "exit":
    sys.exit(3)
s = zmq.Context().socket(zmq.DEALER)
s.connect(args["--endpoint"])
if behaviour == "garbage":
    s.send(hello(os.getpid()))
    s.send(b"\xff\xff not a worker message")
elif behaviour == "stranger":
    s.send(hello(os.getpid() + 1))
elif behaviour == "good":
    s.send(hello(os.getpid()))
    while True:  # reads what the node sends, beats
        if s.poll(50):
            s.recv()
        s.send(heartbeat)
time.sleep(60)
)PY";

class worker_link_test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("troupe_link_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    const auto script = dir_ / "stand_in.py";
    std::ofstream(script) << "#!" << TROUPE_PYTHON << "\n" << stand_in;
    std::filesystem::permissions(script, std::filesystem::perms::owner_all);
    worker_launcher_options o;
    o.executable = script.string();
    o.runtime_parent = dir_.string();
    auto l = worker_launcher::create(o);
    ASSERT_TRUE(l.has_value()) << l.error().to_string();
    launcher_ = std::move(*l);
    auto a = shared_arena::create(4096, "troupe-test");
    ASSERT_TRUE(a.has_value());
    arena_ = *a;
  }
  void TearDown() override {
    link_.reset();
    launcher_.reset();
    std::filesystem::remove_all(dir_);
  }

  void open(const char* behaviour, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    setenv("TROUPE_TEST_BEHAVIOUR", behaviour, 1);
    worker_process_spec spec;
    spec.index = 2;
    spec.shm_fd = arena_->fd();
    spec.shm_bytes = arena_->bytes();
    spec.heartbeat_interval = std::chrono::milliseconds(50);
    spec.heartbeat_timeout = timeout;
    worker_channel_events events;
    events.on_message = [this](worker_message m) {
      std::lock_guard<std::mutex> lock(mutex_);
      messages_.push_back(std::move(m));
      cv_.notify_all();
    };
    events.on_closed = [this](status why) {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_.push_back(std::move(why));
      cv_.notify_all();
    };
    auto link = launcher_->factory()(spec, std::move(events));
    ASSERT_TRUE(link.has_value()) << link.error().to_string();
    link_ = std::move(*link);
    ASSERT_GT(link_->pid(), 0);
  }

  /// Waits (60 s at most) until `done` holds under the lock.
  template <class F>
  bool wait_for(F done) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, std::chrono::seconds(60), done);
  }

  bool reaped(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

  std::filesystem::path dir_;
  std::unique_ptr<worker_launcher> launcher_;
  std::shared_ptr<shared_arena> arena_;
  std::unique_ptr<worker_channel> link_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<worker_message> messages_;
  std::vector<status> closed_;
};

TEST_F(worker_link_test, a_process_that_breaks_the_protocol_is_killed_and_reported) {
  open("garbage");
  const pid_t pid = static_cast<pid_t>(link_->pid());
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); }));
  EXPECT_EQ(closed_[0].code(), error_code::internal) << closed_[0].to_string();
  EXPECT_NE(closed_[0].message().find("broke the worker protocol"), std::string::npos)
      << closed_[0].to_string();
  ASSERT_EQ(messages_.size(), 1u) << "its hello came through";
  EXPECT_TRUE(std::holds_alternative<worker_hello>(messages_[0]));
  EXPECT_TRUE(reaped(pid)) << "killed and reaped: no zombie";
  EXPECT_EQ(link_->send(worker_unload{1}).code(), error_code::unavailable);
}

TEST_F(worker_link_test, a_hello_from_another_pid_is_not_heard) {
  open("stranger", std::chrono::milliseconds(500));
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); }));
  EXPECT_TRUE(messages_.empty()) << "the stranger's hello was not passed on";
  EXPECT_NE(closed_[0].message().find("heartbeat"), std::string::npos) << closed_[0].to_string();
}

TEST_F(worker_link_test, a_process_that_exits_is_reported_with_its_status) {
  open("exit");
  ASSERT_TRUE(wait_for([&] { return !closed_.empty(); }));
  EXPECT_EQ(closed_[0].code(), error_code::unavailable);
  EXPECT_NE(closed_[0].message().find("exited with status 3"), std::string::npos)
      << closed_[0].to_string();
}

TEST_F(worker_link_test, messages_flow_both_ways_and_the_link_ends_its_process) {
  open("good");
  ASSERT_TRUE(wait_for([&] { return !messages_.empty(); }));
  EXPECT_TRUE(std::holds_alternative<worker_hello>(messages_[0]));
  worker_load l;
  l.path = "/m.onnx";
  ASSERT_TRUE(link_->send(l).is_ok());
  // The stand-in's heartbeats stay in the link: nothing but the hello reaches the proxy.
  const pid_t pid = static_cast<pid_t>(link_->pid());
  link_.reset();  // the proxy went: the process goes too
  EXPECT_TRUE(reaped(pid));
  EXPECT_TRUE(closed_.empty()) << "a link closed by its owner reports nothing";
}

#endif  // TROUPE_PYTHON

}  // namespace
}  // namespace troupe::cluster
