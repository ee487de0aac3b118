#pragma once
/// A job_sink (actors/job.hpp) that forwards to an actor: each list becomes a (reply_atom, list)
/// or (release_atom, list) message. For origins that handle their jobs on an actor of their own
/// (the KServe doors' bridges, whose work on each reply is spread over several actors) and for
/// tests, whose probes are actors on the test coordinator.

#include <memory>

#include "actors/caf_compat.hpp"
#include "actors/job.hpp"

namespace troupe::actors {

std::shared_ptr<job_sink> make_actor_job_sink(caf::actor to);

}  // namespace troupe::actors
