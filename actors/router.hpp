#pragma once
/// router: the first actor a request meets. For each job of a submitted list it finds the model,
/// picks the version (the model's traffic policy, model_table::route), re-validates the inputs when
/// the chosen version's signature is not the one the frontend checked, resolves the priority level
/// and the deadline (the request's timeout or the model's default, from arrival), and hands the
/// job to that version's batcher: one message per batcher per list. A job it cannot route is
/// answered at once. The table arrives as immutable snapshots from model_manager.

#include "actors/caf_compat.hpp"

namespace troupe::actors {

router_actor spawn_router(caf::actor_system& sys);

}  // namespace troupe::actors
