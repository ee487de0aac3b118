#pragma once
/// The threads that model reads run on (runtime/background_read.hpp), kept for the next read once
/// a read is done.
///
/// A read on a thread of its own, started for it and ended after it, leaves its allocations to
/// whichever malloc arena glibc gives the new thread: past 8 arenas per core, another thread's,
/// round robin. A node that loads and unloads often then spreads a model's parse over every arena
/// of the process and the freed memory over as many partly used pages (issue 11's cycles: twice
/// the resident growth of reads on one thread). Threads kept here read on and on in their own
/// arenas.
///
/// A read may block for ever (a hung network mount), so a thread is never made to wait for
/// another read: a read goes to a thread that is idle, else to a new one. Up to `max_idle`
/// threads wait for the next read; a thread that finishes a read when that many already wait
/// ends. Threads are detached and share the pool's state, so the owner may go while reads run:
/// close() (or the destructor) ends the idle threads at once and the busy ones when their read
/// returns.

#include <cstddef>
#include <functional>
#include <memory>

#include "core/status.hpp"

namespace troupe::runtime {

class read_threads {
 public:
  explicit read_threads(size_t max_idle = 1);
  ~read_threads();
  read_threads(const read_threads&) = delete;
  read_threads& operator=(const read_threads&) = delete;

  /// Runs `job` on an idle thread, or on a new one. `job` must not throw and must own what it
  /// captures (it may outlive the caller); it is destroyed on its thread right after it ran.
  /// Fails (a typed error) when no thread can be started.
  status run(std::function<void()> job);

  /// Threads waiting for a read now.
  size_t idle() const;

  /// Idle threads end now, busy ones after their read; run() fails from now on.
  void close();

  struct shared;  // the state the threads hold (read_threads.cpp)

 private:
  std::shared_ptr<shared> s_;
};

}  // namespace troupe::runtime
