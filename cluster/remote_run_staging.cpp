#include "cluster/remote_run_staging.hpp"

#include <cstring>

#include "cluster/worker_codec.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using namespace troupe::serving;

namespace {

/// The frame's hold on its block: the region goes back to the arena when ZeroMQ lets go.
struct block_hold {
  std::shared_ptr<shared_arena> arena;
  shm_region region;
};

void release_block(void*, void* hint) {
  auto* h = static_cast<block_hold*>(hint);
  h->arena->release(h->region);
  delete h;
}

}  // namespace

remote_run_staging::~remote_run_staging() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [n, s] : runs_) release(s, true);
}

void remote_run_staging::release(const staged& s, bool outputs_too) {
  for (const auto& r : s.inputs) arena_->release(r);
  if (outputs_too && s.outputs.bytes > 0) arena_->release(s.outputs);
}

expected<worker_run> remote_run_staging::stage(worker_run r,
                                               const std::vector<zmq::message_t>& frames) {
  if (r.output_bytes == 0)
    return invalid_argument("run outputs: a worker over tcp needs the output block's size");
  {
    // A second copy of a run in flight (the link duplicated it): the first one's regions stay.
    std::lock_guard<std::mutex> lock(mutex_);
    if (runs_.count(r.batch))
      return invalid_argument("run " + std::to_string(r.batch) + " is staged already");
  }
  staged s;
  auto undo = [&](status why) {
    release(s, true);
    return why;
  };
  for (data_ref& in : r.inputs) {
    if (in.where != data_ref::kind::frame)
      return undo(invalid_argument("run input: a worker over tcp takes its inputs as frames"));
    if (in.frame >= frames.size())
      return undo(invalid_argument("run input: frame " + std::to_string(in.frame) +
                                   " was not sent (" + std::to_string(frames.size()) + " were)"));
    const zmq::message_t& f = frames[in.frame];
    auto region = arena_->allocate(std::max<size_t>(f.size(), 1));
    if (!region)
      return undo(status(error_code::out_of_memory,
                         "the worker's staging memory is full: " + region.error().message()));
    s.inputs.push_back(*region);
    std::memcpy(arena_->at(*region), f.data(), f.size());
    in = data_ref{data_ref::kind::shm, {0, region->offset, f.size()}, 0};
  }
  if (r.outputs.where != data_ref::kind::none)
    return undo(invalid_argument("run outputs: a worker over tcp allocates its outputs"));
  auto out = arena_->allocate(static_cast<size_t>(r.output_bytes));
  if (!out)
    return undo(status(error_code::out_of_memory,
                       "the worker's staging memory is full: " + out.error().message()));
  s.outputs = *out;
  r.outputs = data_ref{data_ref::kind::shm, *out, 0};
  std::lock_guard<std::mutex> lock(mutex_);
  runs_[r.batch] = std::move(s);
  return r;
}

outgoing_message remote_run_staging::answer(worker_done d) {
  std::optional<staged> s;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = runs_.find(d.batch);
    if (it != runs_.end()) {
      s = std::move(it->second);
      runs_.erase(it);
    }
  }
  outgoing_message out;
  if (s) {
    release(*s, !d.result.is_ok());
    if (d.result.is_ok()) {
      d.block = data_ref{data_ref::kind::frame, {}, 0};
      out.frame.emplace(arena_->at(s->outputs), s->outputs.bytes, release_block,
                        new block_hold{arena_, s->outputs});
    }
  }
  out.envelope = encode_worker_message(d);
  return out;
}

}  // namespace troupe::cluster
