#pragma once
/// What a batch's requests ask of the worker that runs it, with fault injection on (node
/// fault_injection: tests only): the in-process worker (actors/worker_core.cpp) and a worker
/// process's proxy (actors/worker_proxy.cpp), which passes it on to its process, read them alike.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <string_view>

#include "serving/job.hpp"

namespace troupe::actors {

/// troupe.sleep_ms=N (the largest N in the batch, at most a minute): the worker takes that much
/// longer, simulating a slow model, so that tests of queueing, timeouts and draining do not
/// depend on how fast the kernels are.
inline std::chrono::milliseconds requested_sleep(const serving::batch& b) {
  long ms = 0;
  for (const serving::infer_job* j : b.jobs)
    for (const auto& [name, value] : j->parameters)
      if (name == "troupe.sleep_ms")
        ms = std::max(ms, std::strtol(std::string(value).c_str(), nullptr, 10));
  return std::chrono::milliseconds(std::clamp(ms, 0L, 60'000L));
}

/// troupe.fault: "crash" ends the worker (a worker process: the process) while it holds the
/// batch, "device" fails the run as a device error (the worker answers the batch, then exits);
/// "crash_once" and "device_once" do so on the request's first attempt only (its retry then
/// succeeds, elsewhere or on the replacement). Empty: none.
inline std::string_view requested_fault(const serving::batch& b) {
  for (const serving::infer_job* j : b.jobs)
    for (const auto& [name, value] : j->parameters)
      if (name == "troupe.fault") {
        if (value == "crash_once" || value == "device_once")
          return j->attempts > 1 ? std::string_view() : value.substr(0, value.size() - 5);
        return value;
      }
  return {};
}

}  // namespace troupe::actors
