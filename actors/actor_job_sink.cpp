#include "actors/actor_job_sink.hpp"

#include <caf/send.hpp>

namespace troupe::actors {

using serving::job_list;
using serving::job_sink;
using serving::job_target;

namespace {

class actor_job_sink final : public job_sink {
 public:
  explicit actor_job_sink(caf::actor to) : to_(std::move(to)) {}
  void replied(job_list jobs) override { caf::anon_send(to_, reply_atom::value, jobs); }
  void released(job_list jobs) override { caf::anon_send(to_, release_atom::value, jobs); }

 private:
  caf::actor to_;
};

class router_target final : public job_target {
 public:
  explicit router_target(router_actor r) : router_(std::move(r)) {}
  void submit(job_list jobs) override { caf::anon_send(router_, submit_atom::value, jobs); }
  void submit_after(std::chrono::milliseconds delay, job_list jobs) override {
    caf::delayed_anon_send(router_, delay, submit_atom::value, jobs);
  }

 private:
  router_actor router_;
};

}  // namespace

std::shared_ptr<job_target> make_router_target(router_actor router) {
  return std::make_shared<router_target>(std::move(router));
}

std::shared_ptr<job_sink> make_actor_job_sink(caf::actor to) {
  return std::make_shared<actor_job_sink>(std::move(to));
}

}  // namespace troupe::actors
