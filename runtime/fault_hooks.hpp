#pragma once
/// Device faults on demand, for fault injection (issue 12; the node's fault injector calls these
/// only with `fault_injection: true`). Process-wide: a worker process owns one device, and the
/// in-process workers of a node share a counter per backend.
///
/// - Allocation failures: the next `n` device-memory allocations on a backend (plan arenas, a
///   dynamic shape's compile, a replica's load) fail `out_of_memory`, as if the device were full:
///   a non-sticky error that fails the load or the batch without harming the device.
/// - A sticky device error: a kernel that executes a trap on a CUDA device. The context is then
///   unusable for the rest of the process (every later CUDA call on the device fails), which is
///   what an illegal address or an assertion in a real kernel does: only a new process recovers.

#include <cstdint>

#include "core/status.hpp"
#include "kernels/kernel.hpp"

namespace troupe::runtime {

void fail_next_allocations(kernels::backend where, uint32_t n);
/// Failures still to come on `where`.
uint32_t pending_allocation_failures(kernels::backend where);
/// For the devices' allocate(): consumes one pending failure, true when this allocation is to
/// fail. One relaxed load when none is pending (the common case).
bool take_allocation_failure(kernels::backend where);

/// Raises a sticky error on CUDA device `device_index` (see above) and returns what the trap left
/// (`device_error`); `unsupported` in a build without CUDA or with no such device. Never call it in
/// a process whose other work must go on.
status raise_sticky_device_error(int device_index);

}  // namespace troupe::runtime
