// A worker reads model files off its own thread (actors/worker_core.cpp, runtime/
// background_read.hpp): a read that hangs (a hung network mount; here a reader that blocks until
// the test releases it) fails its load DEADLINE_EXCEEDED at the load timeout while the worker goes
// on running batches and loading other models, and stopping the worker does not wait for it.
//
// Unlike the other actor tests these run on CAF's threaded scheduler with a detached worker, as a
// node does: what is tested is that a thread blocked outside the actors holds nothing up. Waits
// are for events (replies, a down message, the read's thread ending), each with a deadline.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <tuple>

#include "actors/worker.hpp"
#include "runtime/onnx_loader.hpp"
#include "tests/actors/actor_test_util.hpp"
#include "tests/eventually.hpp"

namespace troupe::actors {

using serving::batch;
using serving::batch_ref;
using serving::time_point;

namespace {

using namespace std::chrono_literals;
using testing::owned_job;

constexpr auto reply_deadline = 30s;

/// Reads of files whose name starts with "hung" block until release() (a hung mount that
/// recovers); every read is counted, and counted again once it has parsed the file: the last
/// thing its thread does with the ONNX library, which must be done before the test process exits
/// (a parse racing the library's static destructors crashes).
/// Builds of files whose name starts with "slow" wait on the build thread until release(): a
/// model whose compile and warm-up take long.
struct build_gate {
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  std::atomic<int> started{0};

  void release() { gate.set_value(); }
};

struct hanging_reader {
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  std::atomic<int> reads{0}, hung_started{0}, hung_returned{0}, parsed{0};

  void release() { gate.set_value(); }
};

bool eventually(const std::function<bool()>& done) {
  return testing::eventually(done, reply_deadline);
}

class worker_loads : public ::testing::Test {
 protected:
  static caf::actor_system_config& configure(caf::actor_system_config& cfg) {
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    cfg.set("logger.console-verbosity", caf::atom("quiet"));
    return cfg;
  }

  worker_loads() : sys_(configure(cfg_)) {
    weights_ = testing::make_mlp_weights(4, 3, 31);
    for (const char* name : {"good.onnx", "other.onnx", "hung.onnx", "slow.onnx"})
      dir_.write(name, testing::mlp_model_bytes(weights_));
    worker_options o;
    o.kind = worker_kind::cpu;
    o.compute_threads = 1;
    o.read_model_file = [reader = reader_](const std::string& path) {
      ++reader->reads;
      if (std::filesystem::path(path).filename().string().rfind("hung", 0) == 0) {
        ++reader->hung_started;
        reader->opened.wait();
        ++reader->hung_returned;
      }
      auto graph = runtime::load_onnx_file(path);
      ++reader->parsed;
      return graph;
    };
    o.before_build = [gate = build_gate_](const std::string& path) {
      if (std::filesystem::path(path).filename().string().rfind("slow", 0) != 0) return;
      ++gate->started;
      gate->opened.wait();
    };
    worker_ = spawn_worker(sys_, o, /*detached=*/true);
  }

  ~worker_loads() override {
    // A read or build still blocked is let go, so that its thread ends within the test.
    if (!released_) reader_->release();
    if (!builds_released_) build_gate_->release();
    EXPECT_TRUE(eventually([&] { return reader_->parsed == reader_->reads; }));
    caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
  }

  void release() {
    released_ = true;
    reader_->release();
  }

  replica_spec spec(const std::string& file, std::chrono::milliseconds timeout = 1h) const {
    replica_spec s;
    s.model = file.substr(0, file.find('.'));
    s.version = 1;
    s.path = (dir_.path() / file).string();
    s.config.max_batch_size = 2;
    s.warmup_runs = 1;
    s.load_timeout = timeout;
    return s;
  }

  /// Sends a load and returns a function that waits for its answer.
  std::function<expected<replica_info>()> load(caf::scoped_actor& self, const replica_spec& s) {
    auto h = self->request(worker_, reply_deadline, load_atom::value, s);
    return [this, h]() mutable {
      expected<replica_info> out = internal_error("no answer");
      h.receive([&](replica_info& info) { out = std::move(info); },
                [&](caf::error& e) { out = from_caf_error(sys_, e); });
      return out;
    };
  }

  /// Runs a batch of 2 rows on replica `id` and checks it against the reference.
  void run_batch(caf::scoped_actor& self, uint32_t id) {
    owned_job j("good", {{2, 4}}, caf::actor(), time_point{}, 9);
    auto b = std::make_shared<batch>();
    b->jobs.push_back(&j.job);
    b->rows = 2;
    b->replica_id = id;
    self->send(worker_, run_atom::value, batch_ref{b});
    bool done = false;
    self->receive([&](done_atom, batch_ref r) { done = r.ptr == b; },
                  caf::after(reply_deadline) >> [] {});
    ASSERT_TRUE(done) << "the worker answered the batch";
    testing::expect_mlp_batch(*b, weights_, j);
  }

  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  testing::temp_dir dir_;
  testing::mlp_weights weights_;
  std::shared_ptr<hanging_reader> reader_ = std::make_shared<hanging_reader>();
  bool released_ = false;
  std::shared_ptr<build_gate> build_gate_ = std::make_shared<build_gate>();
  bool builds_released_ = false;

  void release_builds() {
    builds_released_ = true;
    build_gate_->release();
  }
  worker_actor worker_;
};

TEST_F(worker_loads, a_hung_read_fails_at_the_timeout_while_the_worker_serves_on) {
  caf::scoped_actor self{sys_};
  auto good = load(self, spec("good.onnx"))();
  ASSERT_TRUE(good) << good.error().to_string();

  // Two loads of the hung file (one read for both) and, behind them, another model.
  auto hung = load(self, spec("hung.onnx", 300ms));
  auto hung_again = load(self, spec("hung.onnx", 300ms));
  ASSERT_TRUE(eventually([&] { return reader_->hung_started == 1; }));
  auto other = load(self, spec("other.onnx"))();
  ASSERT_TRUE(other) << "another model loads during the hung read: " << other.error().to_string();
  run_batch(self, good->id);  // and batches run

  for (auto* wait : {&hung, &hung_again}) {
    auto r = (*wait)();
    ASSERT_FALSE(r) << "a hung read cannot load";
    EXPECT_EQ(r.error().code(), error_code::deadline_exceeded) << r.error().to_string();
    EXPECT_NE(r.error().message().find("load_timeout_s (0.3 s)"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find("hung.onnx"), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(reader_->hung_started.load(), 1) << "loads of one file share its read";
  EXPECT_EQ(reader_->hung_returned.load(), 0) << "still blocked: abandoned, not waited for";

  // The mount recovers: the abandoned read ends without effect, and a new load reads afresh.
  release();
  ASSERT_TRUE(eventually([&] { return reader_->hung_returned == 1; }));
  auto later = load(self, spec("hung.onnx"))();
  ASSERT_TRUE(later) << later.error().to_string();
  EXPECT_EQ(later->id, other->id + 1) << "the abandoned read added no replica";
  run_batch(self, later->id);
}

TEST_F(worker_loads, reads_with_different_load_timeouts_each_fail_at_their_own) {
  // The worker keeps one wake-up for the earliest timeout: a later read with an earlier timeout
  // arms a new one, and the wake-up re-arms for the reads still running, not failing them early.
  dir_.write("hung_slow.onnx", testing::mlp_model_bytes(weights_));
  caf::scoped_actor self{sys_};
  const auto start = std::chrono::steady_clock::now();
  auto slow = load(self, spec("hung_slow.onnx", 600ms));
  auto fast = load(self, spec("hung.onnx", 200ms));
  ASSERT_TRUE(eventually([&] { return reader_->hung_started == 2; }));
  for (auto [wait, limit, text] :
       {std::tuple{&fast, 200ms, "(0.2 s)"}, std::tuple{&slow, 600ms, "(0.6 s)"}}) {
    auto r = (*wait)();
    const auto waited = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), error_code::deadline_exceeded) << r.error().to_string();
    EXPECT_NE(r.error().message().find(text), std::string::npos) << r.error().message();
    EXPECT_GE(waited, limit) << "not before its own timeout";
  }
  auto good = load(self, spec("good.onnx", 200ms))();
  ASSERT_TRUE(good) << "a load after the timeouts: " << good.error().to_string();
}

TEST_F(worker_loads, the_worker_stops_without_waiting_for_a_hung_read) {
  caf::scoped_actor self{sys_};
  self->monitor(worker_);
  auto hung = load(self, spec("hung.onnx"));  // an hour's timeout: only the exit ends it
  ASSERT_TRUE(eventually([&] { return reader_->hung_started == 1; }));
  caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
  auto r = hung();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), error_code::unavailable) << r.error().to_string();
  bool down = false;
  self->receive([&](caf::down_msg& m) { down = m.source == worker_.address(); },
                caf::after(reply_deadline) >> [] {});
  EXPECT_TRUE(down) << "the worker exited while its read was blocked";
  EXPECT_EQ(reader_->hung_returned.load(), 0);
}

TEST_F(worker_loads, loads_of_one_file_during_its_read_share_the_read_and_the_weights) {
  caf::scoped_actor self{sys_};
  auto first = load(self, spec("hung.onnx"));
  auto second = load(self, spec("hung.onnx"));
  ASSERT_TRUE(eventually([&] { return reader_->hung_started == 1; }));
  release();  // a slow read that finishes
  auto a = first(), b = second();
  ASSERT_TRUE(a) << a.error().to_string();
  ASSERT_TRUE(b) << b.error().to_string();
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(reader_->reads.load(), 1) << "one read for both replicas";
  run_batch(self, a->id);
  run_batch(self, b->id);
}

TEST_F(worker_loads, the_worker_runs_batches_while_another_model_is_built) {
  caf::scoped_actor self{sys_};
  auto good = load(self, spec("good.onnx"))();
  ASSERT_TRUE(good) << good.error().to_string();
  auto slow = load(self, spec("slow.onnx"));
  ASSERT_TRUE(eventually([&] { return build_gate_->started == 1; }));
  // The slow model's compile and warm-up hold the build thread, not the worker's.
  run_batch(self, good->id);
  run_batch(self, good->id);
  release_builds();
  auto built = slow();
  ASSERT_TRUE(built) << built.error().to_string();
  run_batch(self, built->id);
}

TEST_F(worker_loads, a_load_during_a_build_of_its_file_waits_for_it_and_reads_nothing) {
  caf::scoped_actor self{sys_};
  auto first = load(self, spec("slow.onnx"));
  ASSERT_TRUE(eventually([&] { return build_gate_->started == 1; }));
  const int reads = reader_->reads.load();
  auto second = load(self, spec("slow.onnx"));
  release_builds();
  auto a = first(), b = second();
  ASSERT_TRUE(a) << a.error().to_string();
  ASSERT_TRUE(b) << b.error().to_string();
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(reader_->reads.load(), reads) << "the second replica took the first one's weights";
  run_batch(self, a->id);
  run_batch(self, b->id);
}

TEST_F(worker_loads, a_worker_that_stops_during_a_build_answers_the_load) {
  caf::scoped_actor self{sys_};
  auto slow = load(self, spec("slow.onnx"));
  ASSERT_TRUE(eventually([&] { return build_gate_->started == 1; }));
  self->monitor(worker_);
  caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
  auto answer = slow();
  ASSERT_FALSE(answer) << "a worker that stopped loads nothing";
  EXPECT_EQ(answer.error().code(), error_code::unavailable) << answer.error().to_string();
  // The worker's exit waits for the build it was running, which then stops at its next bucket.
  release_builds();
  bool down = false;
  self->receive([&](caf::down_msg& m) { down = m.source == worker_.address(); },
                caf::after(reply_deadline) >> [] {});
  EXPECT_TRUE(down);
}

}  // namespace
}  // namespace troupe::actors
