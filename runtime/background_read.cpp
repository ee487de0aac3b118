#include "runtime/background_read.hpp"

#include <exception>
#include <new>
#include <string>

namespace troupe::runtime {

expected<std::shared_ptr<background_read>> background_read::start(read_threads& threads,
                                                                  read_function read,
                                                                  std::function<void()> done) {
  std::shared_ptr<background_read> self(new background_read());
  self->done_ = std::move(done);
  // The job owns a reference: the object outlives a caller that abandons the read.
  TROUPE_RETURN_IF_ERROR(threads.run([self, read = std::move(read)]() mutable {
    // No exception leaves the job (std::terminate): a throw is the read's error.
    expected<graph> result = internal_error("the model read did not finish");
    try {
      result = read();
    } catch (const std::bad_alloc&) {
      result = status(error_code::out_of_memory, "out of memory reading the model");
    } catch (const std::exception& e) {
      result = internal_error(std::string("reading the model threw: ") + e.what());
    }
    self->finish(std::move(result));
  }));
  return self;
}

void background_read::finish(expected<graph> result) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (abandoned_) return;  // nobody waits: the graph goes with this thread
  result_ = std::move(result);
  auto done = std::move(done_);
  done_ = nullptr;
  if (done) done();
}

expected<graph> background_read::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!result_) return internal_error("the model read has not finished");
  expected<graph> out = std::move(*result_);
  result_.reset();
  return out;
}

void background_read::abandon() {
  std::function<void()> done;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    abandoned_ = true;
    done = std::move(done_);
    done_ = nullptr;
    result_.reset();
  }
  // `done` (and what it captured) is destroyed here, outside the lock.
}

}  // namespace troupe::runtime
