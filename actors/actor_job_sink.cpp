#include "actors/actor_job_sink.hpp"

#include <caf/send.hpp>

namespace troupe::actors {
namespace {

class actor_job_sink final : public job_sink {
 public:
  explicit actor_job_sink(caf::actor to) : to_(std::move(to)) {}
  void replied(job_list jobs) override { caf::anon_send(to_, reply_atom::value, jobs); }
  void released(job_list jobs) override {
    jobs.release = true;
    caf::anon_send(to_, release_atom::value, jobs);
  }

 private:
  caf::actor to_;
};

}  // namespace

std::shared_ptr<job_sink> make_actor_job_sink(caf::actor to) {
  return std::make_shared<actor_job_sink>(std::move(to));
}

}  // namespace troupe::actors
