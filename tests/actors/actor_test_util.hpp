#pragma once
// Shared pieces of the actor tests: an actor system on CAF's deterministic test coordinator
// (time is simulated: tests advance it, never sleep), a probe actor standing in for the frontend
// (it records every reply and release), and jobs answered to it. The CAF-free pieces (jobs with
// their own input bytes, the tiny ONNX MLP, a temporary model repository) are in
// tests/serving/serving_test_util.hpp.

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <memory>
#include <string>
#include <vector>

#include "actors/actor_job_sink.hpp"
#include "actors/caf_compat.hpp"
#include "serving/job.hpp"
#include "tests/serving/serving_test_util.hpp"

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

  serving::time_point now() const { return sched_.clock().now(); }
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
  bool run_batch_on(const actors::worker_actor& worker, const std::shared_ptr<serving::batch>& b) {
    caf::scoped_actor self{sys_};
    self->send(worker, actors::run_atom::value, serving::batch_ref{b});
    run();
    bool done = false;
    self->receive([&](actors::done_atom, serving::batch_ref r) { done = r.ptr == b; },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return done;
  }

  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  caf::scheduler::test_coordinator& sched_;
};

/// What the probe saw.
struct probe_log {
  std::vector<serving::infer_job*> replies;
  std::vector<serving::infer_job*> releases;
  /// Replies of one job (exactly one is the contract).
  size_t replies_of(const serving::infer_job* j) const {
    return static_cast<size_t>(std::count(replies.begin(), replies.end(), j));
  }
  bool released(const serving::infer_job* j) const {
    const bool early = j->early_reply;
    if (early) return std::count(releases.begin(), releases.end(), j) == 1;
    return replies_of(j) == 1;
  }
};

inline caf::actor spawn_probe(caf::actor_system& sys, std::shared_ptr<probe_log> log) {
  return sys.spawn([log](caf::event_based_actor*) -> caf::behavior {
    return {
        [log](actors::reply_atom, serving::job_list l) {
          while (auto* j = l.pop_front()) log->replies.push_back(j);
        },
        [log](actors::release_atom, serving::job_list l) {
          while (auto* j = l.pop_front()) log->releases.push_back(j);
        },
    };
  });
}

/// A job that owns its input bytes, answered to actor `reply_to` (a probe).
struct owned_job : job_with_inputs {
  owned_job(const std::string& model, std::vector<shape_t> shapes, caf::actor reply_to,
            serving::time_point arrival, uint32_t seed = 1)
      : job_with_inputs(model, std::move(shapes), actors::make_actor_job_sink(std::move(reply_to)),
                        arrival, seed) {}
};

}  // namespace troupe::testing
