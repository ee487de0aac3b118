#include "actors/router.hpp"

#include <utility>
#include <vector>

#include "actors/batcher.hpp"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"

namespace troupe::actors {

using serving::infer_job;
using serving::job_list;
using serving::job_sink;
using serving::model_entry;
using serving::model_signature;
using serving::model_table;
using serving::no_deadline;
using serving::table_ptr;
using serving::time_point;
using serving::version_entry;

namespace {

struct router_state {
  table_ptr table;
  uint64_t round_robin = 0;
  std::vector<std::pair<batcher_actor, job_list>> to_batchers;  // capacity kept between lists
  std::vector<std::pair<std::shared_ptr<job_sink>, job_list>> answers;
  static inline const char* name = "router";

  void answer(infer_job* j, status s) {
    j->result = std::move(s);
    for (auto& [to, list] : answers)
      if (to == j->reply_to) {
        list.push_back(j);
        return;
      }
    job_list list;
    list.push_back(j);
    answers.emplace_back(j->reply_to, list);
  }
  void forward(const batcher_actor& b, infer_job* j) {
    for (auto& [to, list] : to_batchers)
      if (to == b) {
        list.push_back(j);
        return;
      }
    job_list list;
    list.push_back(j);
    to_batchers.emplace_back(b, list);
  }
};

/// Maps the origin's output indices (into the signature it validated against) onto `to`.
status remap_outputs(infer_job& j, const model_signature& from, const model_signature& to) {
  for (int& k : j.requested_outputs) {
    const int mapped = to.find_output(from.outputs[static_cast<size_t>(k)].name);
    if (mapped < 0)
      return invalid_argument("model '" + to.model + "' version " + std::to_string(to.version) +
                              " has no output '" + from.outputs[static_cast<size_t>(k)].name + "'");
    k = mapped;
  }
  return status::ok();
}

status route_one(router_state& st, infer_job& j, time_point now, batcher_actor& target) {
  if (!st.table)
    return make_error(error_code::unavailable, "the node has not loaded its models yet");
  const model_entry* m = st.table->find(j.model);
  if (!m) return st.table->unknown_model(j.model);
  TROUPE_ASSIGN_OR_RETURN(const version_entry* v, model_table::route(*m, j.version, j.routing_key,
                                                                     j.parameters, st.round_robin));
  const auto& sig = v->signature;
  if (j.signature != sig) {
    // The frontend checked the inputs against another version's signature (or none).
    TROUPE_ASSIGN_OR_RETURN(j.rows, sig->validate(j.inputs));
    if (j.signature)
      TROUPE_RETURN_IF_ERROR(remap_outputs(j, *j.signature, *sig));
    else if (!j.requested_outputs.empty())
      return internal_error("requested outputs without a signature");
    j.signature = sig;
  }
  j.metrics = v->metrics.get();
  TROUPE_ASSIGN_OR_RETURN(j.level, sig->priority_level(j.priority));
  const auto timeout = sig->effective_timeout(j.timeout);
  j.deadline = timeout.count() > 0 ? j.arrival + timeout : no_deadline;
  if (j.deadline <= now)
    return make_error(
        error_code::deadline_exceeded,
        "deadline of " + std::to_string(timeout.count()) + " us passed before routing");
  target = v->batcher ? v->batcher->actor : batcher_actor{};  // a routed version has its batcher
  return status::ok();
}

router_actor::behavior_type router(router_actor::stateful_pointer<router_state> self) {
  return {
      [=](submit_atom, job_list jobs) {
        auto& st = self->state;
        const time_point now = self->clock().now();
        while (infer_job* j = jobs.pop_front()) {
          batcher_actor target;
          if (status s = route_one(st, *j, now, target); !s.is_ok())
            st.answer(j, std::move(s));
          else
            st.forward(target, j);
        }
        for (auto& [to, list] : st.to_batchers) self->send(to, submit_atom::value, list);
        for (auto& [to, list] : st.answers) to->replied(list);
        st.to_batchers.clear();
        st.answers.clear();
      },
      [=](table_atom, table_ptr table) { self->state.table = std::move(table); },
      [=](retire_atom, const batcher_actor& b) {
        // After every submit this router sent to `b` (one sender: mailbox order), so once the
        // router holds a table without `b`, the batcher's answer means no job will come again.
        return self->delegate(b, retire_atom::value);
      },
  };
}

}  // namespace

router_actor spawn_router(caf::actor_system& sys) {
  return sys.spawn(router);
}

}  // namespace troupe::actors
