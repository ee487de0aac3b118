#pragma once
/// The places where the fault plan's faults happen (issue 12, item 3; docs/faults.md), and what
/// each does there. CAF-free: the actors ask at their chances and carry out what fires.
///
/// - A worker, before each batch it runs ("worker:N"): an in-process worker asks itself; a worker
///   process's proxy asks for its process and sends the fault with the run, and the process carries
///   it out (the plan lives in the node). Faults that end the process end the node with an
///   in-process worker: that is what worker processes are for.
/// - A worker, before each load ("worker:N"): fail_allocations only, so that a load can be made to
///   fail out of memory.
/// - A message on a hop ("frontend_router", "batcher_worker:N", "worker_link:N"): dropped,
///   duplicated or delivered late; the receivers recover (docs/faults.md says how).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.hpp"
#include "kernels/kernel.hpp"
#include "serving/fault_plan.hpp"

namespace troupe::actors {

/// A fault as carried out: what a rule that fired asks of its site.
struct injected_fault {
  serving::fault_kind kind = serving::fault_kind::hang;
  std::chrono::milliseconds delay{0};  // hang, delay, slow_link
  uint32_t allocations = 1;            // fail_allocations
};

std::string worker_site(uint32_t worker_index);
std::string hop_site(std::string_view hop, uint32_t worker_index);

/// A worker's chance before a batch: the first of abort, segfault, hang, device_trap (GPU
/// workers only) and fail_allocations that fires.
std::optional<injected_fault> take_batch_fault(serving::fault_plan& plan, uint32_t worker_index,
                                               bool gpu);
/// A worker's chance before a load: fail_allocations.
std::optional<injected_fault> take_load_fault(serving::fault_plan& plan, uint32_t worker_index);
/// A message's chance on a hop: the first of drop, duplicate, delay and slow_link that fires.
std::optional<injected_fault> take_message_fault(serving::fault_plan& plan, std::string_view site);

/// Carries out a worker fault in this process, on the thread that runs the batch:
/// - abort: SIGABRT; segfault: SIGSEGV (default actions: the process dies, a core if enabled);
/// - hang: blocks this thread for `delay`, or, with none, for `unbounded_hang` (a process: until
///   it is killed; in-process workers pass a bound, since a thread cannot be killed and the node
///   could not stop);
/// - device_trap: a real sticky CUDA error on `device_index` (runtime/fault_hooks.hpp); returns
///   the device_error it left, which the caller makes the batch's result (the worker then
///   fails as on any device error);
/// - fail_allocations: the next `allocations` allocations on `backend` fail out_of_memory.
/// OK for the faults that leave the batch to run.
status carry_out(const injected_fault& f, kernels::backend backend, int device_index,
                 std::chrono::milliseconds unbounded_hang);

/// What an in-process worker's hang without a delay lasts (see carry_out).
inline constexpr std::chrono::milliseconds in_process_hang_limit{60'000};

}  // namespace troupe::actors
