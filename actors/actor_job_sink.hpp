#pragma once
/// The actors behind the doors' plain C++ interfaces (serving/job.hpp):
/// - a job_sink that forwards to an actor: each list becomes a (reply_atom, list) or
///   (release_atom, list) message. For origins that handle their jobs on an actor of their own
///   (the KServe doors' bridges, whose work on each reply is spread over several actors) and for
///   tests, whose probes are actors on the test coordinator;
/// - the router as a job_target: each list a (submit_atom, list) message.

#include <memory>

#include "actors/caf_compat.hpp"
#include "serving/job.hpp"

namespace troupe::actors {

std::shared_ptr<serving::job_sink> make_actor_job_sink(caf::actor to);
std::shared_ptr<serving::job_target> make_router_target(router_actor router);

}  // namespace troupe::actors
