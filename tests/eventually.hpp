#pragma once
// Waiting in a test for an event that sends no signal of its own (a detached thread's end, a
// count another thread moves): poll with a deadline, never sleep for a guessed time.
#include <chrono>
#include <thread>

namespace troupe::testing {

/// Polls `done`, yielding the core, until it holds (true) or `deadline` has passed (false).
template <class F>
bool eventually(F done, std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace troupe::testing
