#pragma once
/// cpu_worker: the worker of the host CPU (actors/worker.hpp has the protocol and the failure
/// rules). Its replicas are runtime sessions on the CPU backend at fp32; `compute_threads` sets
/// the OpenMP threads of its runs (on its own thread). Staging is plain aligned memory that the
/// plan reads in place: the gather from the request frames is the one host copy.

#include "actors/worker.hpp"

namespace troupe::actors {

worker_actor spawn_cpu_worker(caf::actor_system& sys, const worker_options& o, bool detached);

}  // namespace troupe::actors
