#pragma once
/// Reading a model file where a read that never returns costs nothing but a thread.
///
/// load_onnx_file refuses a FIFO or a device without waiting on it, but a regular file on a hung
/// network mount blocks open() or read() for as long as the mount hangs, and a thread blocked in
/// the kernel cannot be cancelled. So background_read runs the read on a detached thread that
/// runs nothing else meanwhile (runtime/read_threads.hpp): the caller waits for the completion
/// callback and takes the graph, or gives up at its deadline and abandons the read. An abandoned
/// thread stays blocked until the read returns (for ever, on a mount that never recovers), holding
/// its file descriptor and the memory of the read so far, and then drops the result; it touches
/// nothing the caller owns, so the caller (an actor, the node) may stop and the process may exit
/// while it is blocked.

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/status.hpp"
#include "runtime/graph.hpp"
#include "runtime/read_threads.hpp"

namespace troupe::runtime {

class background_read {
 public:
  using read_function = std::function<expected<graph>()>;

  /// Starts `read` on a thread of `threads` (an idle one, or a new one); `done` runs once on that
  /// thread when the read has finished, unless the read was abandoned first. `done` must be cheap
  /// and must not call this object: it runs under its lock. Fails (a typed error, no exception)
  /// when no thread can be started. `read` is typically load_onnx_file of a path; it must own what
  /// it captures (the thread may outlive the caller).
  static expected<std::shared_ptr<background_read>> start(read_threads& threads, read_function read,
                                                          std::function<void()> done);

  /// The read's result once `done` has run (then once only); internal_error before.
  expected<graph> take();
  /// No `done` runs after this returns (one running now is waited for), and `done` with what it
  /// holds is destroyed here. The thread, if still reading, ends whenever its read returns.
  void abandon();

 private:
  background_read() = default;
  void finish(expected<graph> result);

  std::mutex mutex_;            // guards everything below
  std::function<void()> done_;  // null once run or abandoned
  std::optional<expected<graph>> result_;
  bool abandoned_ = false;
};

}  // namespace troupe::runtime
