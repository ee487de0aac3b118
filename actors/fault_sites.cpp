#include "actors/fault_sites.hpp"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <thread>

#include "runtime/fault_hooks.hpp"
#include "serving/log_fields.hpp"

namespace troupe::actors {

using serving::fault_kind;
using serving::fault_plan;
using serving::fault_rule;
using serving::log_level;

namespace {

std::optional<injected_fault> take(fault_plan& plan, fault_kind kind, std::string_view site) {
  if (!plan.may_fire(kind)) return std::nullopt;  // no rule of this kind: one relaxed load
  std::optional<fault_rule> r = plan.fire(kind, site);
  if (!r) return std::nullopt;
  return injected_fault{r->kind, r->delay, r->allocations};
}

std::optional<injected_fault> take_first(fault_plan& plan, std::initializer_list<fault_kind> kinds,
                                         std::string_view site) {
  for (fault_kind k : kinds)
    if (auto f = take(plan, k, site)) return f;
  return std::nullopt;
}

}  // namespace

std::string worker_site(uint32_t worker_index) {
  return "worker:" + std::to_string(worker_index);
}

std::string hop_site(std::string_view hop, uint32_t worker_index) {
  return std::string(hop) + ":" + std::to_string(worker_index);
}

std::optional<injected_fault> take_batch_fault(fault_plan& plan, uint32_t worker_index, bool gpu) {
  const std::string site = worker_site(worker_index);
  if (auto f = take_first(plan, {fault_kind::abort, fault_kind::segfault, fault_kind::hang}, site))
    return f;
  if (gpu)
    if (auto f = take(plan, fault_kind::device_trap, site)) return f;
  return take(plan, fault_kind::fail_allocations, site);
}

std::optional<injected_fault> take_load_fault(fault_plan& plan, uint32_t worker_index) {
  return take(plan, fault_kind::fail_allocations, worker_site(worker_index));
}

std::optional<injected_fault> take_message_fault(fault_plan& plan, std::string_view site) {
  return take_first(
      plan, {fault_kind::drop, fault_kind::duplicate, fault_kind::delay, fault_kind::slow_link},
      site);
}

status carry_out(const injected_fault& f, kernels::backend backend, int device_index,
                 std::chrono::milliseconds unbounded_hang) {
  switch (f.kind) {
    case fault_kind::abort:
      log_event(log_level::warn, "fault injection: abort", {{"pid", static_cast<int64_t>(getpid())}});
      std::abort();
    case fault_kind::segfault: {
      log_event(log_level::warn, "fault injection: segfault",
                {{"pid", static_cast<int64_t>(getpid())}});
      // The default action, whatever a library installed: the process dies as a crash in a kernel
      // would kill it.
      std::signal(SIGSEGV, SIG_DFL);
      std::raise(SIGSEGV);
      std::abort();  // not reached
    }
    case fault_kind::hang: {
      const std::chrono::milliseconds d = f.delay.count() > 0 ? f.delay : unbounded_hang;
      log_event(log_level::warn, "fault injection: hang",
                {{"pid", static_cast<int64_t>(getpid())}, {"ms", static_cast<int64_t>(d.count())}});
      std::this_thread::sleep_for(d);
      return status::ok();
    }
    case fault_kind::device_trap:
      log_event(log_level::warn, "fault injection: sticky device error",
                {{"device", device_index}});
      return runtime::raise_sticky_device_error(device_index);
    case fault_kind::fail_allocations:
      runtime::fail_next_allocations(backend, f.allocations);
      return status::ok();
    default:
      return status::ok();  // message faults are carried out by their hops
  }
}

}  // namespace troupe::actors
