#pragma once
// Shared pieces of the actor tests: an actor system on CAF's deterministic test coordinator
// (time is simulated: tests advance it, never sleep), a probe actor standing in for the frontend
// (it records every reply and release), jobs with their own input bytes, and a tiny ONNX MLP
// written to a temporary model repository.

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "actors/actor_job_sink.hpp"
#include "actors/caf_compat.hpp"
#include "actors/job.hpp"
#include "tests/runtime/model_builder.hpp"

namespace troupe::testing {

/// An actor system whose scheduler is CAF's test coordinator.
class actor_fixture : public ::testing::Test {
 protected:
  static caf::actor_system_config& configure(caf::actor_system_config& cfg) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    cfg.set("logger.console-verbosity", caf::atom("quiet"));
    return cfg;
  }

  actor_fixture()
      : sys_(configure(cfg_)),
        sched_(dynamic_cast<caf::scheduler::test_coordinator&>(sys_.scheduler())) {
    sched_.clock().current_time += std::chrono::hours(1);  // time 0 is not special
  }

  ~actor_fixture() override {
    sched_.run();
    // A delayed message still pending (a timer the test did not run out: a batcher's recovery
    // wait, the supervisor's backoff reset) holds its receiver, which then never goes away: the
    // actor system would wait for it forever.
    sched_.clock().cancel_all();
  }

  actors::time_point now() const { return sched_.clock().now(); }
  /// Runs every pending message (no timeouts fire: time does not move).
  void run() { sched_.run(); }
  /// Moves simulated time forward, firing due timeouts, then runs the messages they caused.
  void advance(std::chrono::microseconds d) {
    sched_.clock().advance_time(d);
    sched_.run();
  }

  /// Asks `worker` to load `spec` and runs until it answers: the replica, or its error.
  expected<actors::replica_info> load_replica(const actors::worker_actor& worker,
                                              const actors::replica_spec& spec) {
    caf::scoped_actor self{sys_};
    auto h = self->request(worker, caf::infinite, actors::load_atom::value, spec);
    run();
    expected<actors::replica_info> out = internal_error("no answer");
    h.receive([&](actors::replica_info& info) { out = std::move(info); },
              [&](caf::error& e) { out = actors::from_caf_error(sys_, e); });
    return out;
  }

  /// Asks `manager` to load the repository at `path` and runs until it answers; a failed request
  /// fails the test (and an empty report comes back).
  actors::load_report load_repository_on(const actors::manager_actor& manager,
                                         const std::string& path) {
    caf::scoped_actor self{sys_};
    auto h = self->request(manager, caf::infinite, actors::load_atom::value, path);
    run();
    actors::load_report out;
    h.receive([&](actors::load_report& r) { out = std::move(r); },
              [&](caf::error& e) { ADD_FAILURE() << "loading " << path << ": " << sys_.render(e); });
    return out;
  }

  /// Sends batch `b` to `worker` and runs until it is handled: whether (done) came back for it.
  bool run_batch_on(const actors::worker_actor& worker, const std::shared_ptr<actors::batch>& b) {
    caf::scoped_actor self{sys_};
    self->send(worker, actors::run_atom::value, actors::batch_ref{b});
    run();
    bool done = false;
    self->receive([&](actors::done_atom, actors::batch_ref r) { done = r.ptr == b; },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return done;
  }

  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  caf::scheduler::test_coordinator& sched_;
};

/// What the probe saw.
struct probe_log {
  std::vector<actors::infer_job*> replies;
  std::vector<actors::infer_job*> releases;
  /// Replies of one job (exactly one is the contract).
  size_t replies_of(const actors::infer_job* j) const {
    return static_cast<size_t>(std::count(replies.begin(), replies.end(), j));
  }
  bool released(const actors::infer_job* j) const {
    const bool early = j->early_reply;
    if (early) return std::count(releases.begin(), releases.end(), j) == 1;
    return replies_of(j) == 1;
  }
};

inline caf::actor spawn_probe(caf::actor_system& sys, std::shared_ptr<probe_log> log) {
  return sys.spawn([log](caf::event_based_actor*) -> caf::behavior {
    return {
        [log](actors::reply_atom, actors::job_list l) {
          while (auto* j = l.pop_front()) log->replies.push_back(j);
        },
        [log](actors::release_atom, actors::job_list l) {
          while (auto* j = l.pop_front()) log->releases.push_back(j);
        },
    };
  });
}

/// A job that owns its input bytes.
struct owned_job {
  actors::infer_job job;
  std::vector<std::vector<float>> data;

  owned_job(const std::string& model, std::vector<shape_t> shapes, caf::actor reply_to,
            actors::time_point arrival, uint32_t seed = 1) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1, 1);
    job.model = model;
    job.reply_to = actors::make_actor_job_sink(std::move(reply_to));
    job.arrival = arrival;
    for (auto& s : shapes) {
      std::vector<float> v(static_cast<size_t>(element_count(s)));
      for (auto& x : v) x = dist(rng);
      data.push_back(std::move(v));
      actors::input_view in;
      in.info = {dtype::f32, s};
      in.data = reinterpret_cast<const std::byte*>(data.back().data());
      in.bytes = data.back().size() * sizeof(float);
      job.inputs.push_back(in);
    }
    job.rows = shapes.empty() || shapes[0].empty() ? 1 : shapes[0][0];
  }
};

inline actors::job_list list_of(std::initializer_list<actors::infer_job*> jobs) {
  actors::job_list l;
  for (auto* j : jobs) l.push_back(j);
  return l;
}

/// A MatMul + Add + Relu MLP: x[N,in] -> y[N,out] = relu(x W + b), with a dynamic batch dim N.
struct mlp_weights {
  int64_t in = 4, out = 3;
  std::vector<float> w, b;
};

inline mlp_weights make_mlp_weights(int64_t in, int64_t out, uint32_t seed) {
  mlp_weights m;
  m.in = in;
  m.out = out;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  m.w.resize(static_cast<size_t>(in * out));
  m.b.resize(static_cast<size_t>(out));
  for (auto& x : m.w) x = dist(rng);
  for (auto& x : m.b) x = dist(rng);
  return m;
}

inline std::string mlp_model_bytes(const mlp_weights& m, bool dynamic_batch = true) {
  auto model = make_model(13);
  auto* g = model.mutable_graph();
  *g->add_input() = make_value_info("x", 1, {dynamic_batch ? "N" : "1", std::to_string(m.in)});
  *g->add_output() = make_value_info("y", 1, {dynamic_batch ? "N" : "1", std::to_string(m.out)});
  add_float_initializer(model, "W", {m.in, m.out}, m.w);
  add_float_initializer(model, "B", {m.out}, m.b);
  add_node(model, "MatMul", {"x", "W"}, {"xw"});
  add_node(model, "Add", {"xw", "B"}, {"xwb"});
  add_node(model, "Relu", {"xwb"}, {"y"});
  return serialize(model);
}

/// relu(x W + b) for `rows` rows, in double.
inline std::vector<double> mlp_reference(const mlp_weights& m, const float* x, int64_t rows) {
  std::vector<double> y(static_cast<size_t>(rows * m.out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < m.out; ++o) {
      double acc = m.b[static_cast<size_t>(o)];
      for (int64_t i = 0; i < m.in; ++i)
        acc += static_cast<double>(x[r * m.in + i]) * m.w[static_cast<size_t>(i * m.out + o)];
      y[static_cast<size_t>(r * m.out + o)] = acc > 0 ? acc : 0;
    }
  return y;
}

/// Checks the outputs of a batch that ran the MLP `w` on job `j` alone, then releases the batch's
/// output block (as the reply would).
inline void expect_mlp_batch(actors::batch& b, const mlp_weights& w, const owned_job& j) {
  ASSERT_TRUE(b.result.is_ok()) << b.result.to_string();
  const auto ref = mlp_reference(w, j.data[0].data(), j.job.rows);
  const auto* y = reinterpret_cast<const float*>(b.block->data() + b.outputs[0].offset);
  for (size_t k = 0; k < ref.size(); ++k) EXPECT_NEAR(y[k], ref[k], 1e-5) << "element " << k;
  b.block->release();
  b.block = nullptr;
}

/// Checks the reply of job `j` (the MLP `w` on `src`'s input: its one output [rows, 3]), then
/// releases the output slice (as a frontend would).
inline void expect_mlp_reply(actors::infer_job& j, const mlp_weights& w, const owned_job& src) {
  ASSERT_TRUE(j.result.is_ok()) << j.result.to_string();
  ASSERT_EQ(j.outputs.size(), 1u);
  const actors::output_slice& y = j.outputs[0];
  EXPECT_EQ(y.info.shape, (shape_t{j.rows, 3}));
  const auto ref = mlp_reference(w, src.data[0].data(), j.rows);
  const auto* got = reinterpret_cast<const float*>(y.block->data() + y.offset);
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-5) << "element " << i;
  y.block->release();
  j.outputs.clear();
}

/// A fresh directory under the system temp dir, removed with the object.
class temp_dir {
 public:
  temp_dir() {
    static std::mt19937_64 rng(std::random_device{}());
    path_ = std::filesystem::temp_directory_path() / ("troupe_test_" + std::to_string(rng()));
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

  void write(const std::filesystem::path& rel, const std::string& bytes) const {
    std::filesystem::create_directories((path_ / rel).parent_path());
    std::ofstream(path_ / rel, std::ios::binary) << bytes;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace troupe::testing
