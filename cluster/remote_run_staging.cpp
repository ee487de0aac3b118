#include "cluster/remote_run_staging.hpp"

#include <algorithm>
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

/// Inputs a run may have (more is a broken control node).
constexpr uint32_t max_run_inputs = 1024;

remote_run_staging::~remote_run_staging() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [n, s] : runs_) release(s, true);
  for (const auto& [n, a] : assembling_) release(a);
}

void remote_run_staging::release(const staged& s, bool outputs_too) {
  for (const auto& r : s.inputs) arena_->release(r);
  if (outputs_too && s.outputs.bytes > 0) arena_->release(s.outputs);
}

void remote_run_staging::release(const assembly& a) {
  for (const auto& r : a.inputs)
    if (r.bytes > 0) arena_->release(r);
  if (a.outputs.bytes > 0) arena_->release(a.outputs);
}

size_t remote_run_staging::assembling() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return assembling_.size();
}

std::byte* remote_run_staging::input_region(assembly& a, uint32_t index, uint64_t bytes) {
  if (!a.failed.is_ok()) return nullptr;
  if (index >= max_run_inputs) {
    a.failed = invalid_argument("run input " + std::to_string(index) + ": too many inputs");
    return nullptr;
  }
  if (a.inputs.size() <= index) {
    a.inputs.resize(index + 1);
    a.received.resize(index + 1);
  }
  shm_region& r = a.inputs[index];
  if (r.bytes == 0) {
    auto region = arena_->allocate(static_cast<size_t>(bytes));
    if (!region) {
      a.failed = status(error_code::out_of_memory,
                        "the worker's staging memory is full: " + region.error().message());
      return nullptr;
    }
    r = *region;
  } else if (r.bytes != bytes) {
    a.failed =
        invalid_argument("run input " + std::to_string(index) + ": named with " +
                         std::to_string(r.bytes) + " and " + std::to_string(bytes) + " bytes");
    return nullptr;
  }
  return arena_->at(r);
}

remote_run_staging::step remote_run_staging::finish(uint64_t batch, assembly& a) {
  worker_run r = std::move(*a.run);
  if (a.failed.is_ok()) {
    if (a.inputs.size() > r.inputs.size())
      a.failed = invalid_argument("run slices name input " + std::to_string(a.inputs.size() - 1) +
                                  " of " + std::to_string(r.inputs.size()));
    for (size_t i = 0; a.failed.is_ok() && i < r.inputs.size(); ++i)
      if (a.received[i] != a.inputs[i].bytes)
        a.failed = invalid_argument("run input " + std::to_string(i) + ": " +
                                    std::to_string(a.received[i]) + " of its " +
                                    std::to_string(a.inputs[i].bytes) + " bytes came");
  }
  step out = a.failed;
  if (a.failed.is_ok()) {
    staged s;
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      r.inputs[i] = data_ref{data_ref::kind::shm, a.inputs[i], 0};
      s.inputs.push_back(a.inputs[i]);
    }
    r.outputs = data_ref{data_ref::kind::shm, a.outputs, 0};
    r.parts = 0;
    s.outputs = a.outputs;
    runs_[batch] = std::move(s);
    out = std::optional<worker_run>(std::move(r));
  } else {
    release(a);
  }
  assembling_.erase(batch);
  (void)completed_.insert(batch);
  return out;
}

remote_run_staging::step remote_run_staging::stage(worker_run r,
                                                   const std::vector<zmq::message_t>& frames) {
  std::unique_lock<std::mutex> lock(mutex_);
  // A second copy of a run (the link duplicated it): dropped, the first one's regions stay.
  if (completed_.seen(r.batch)) return std::optional<worker_run>();
  assembly& a = assembling_[r.batch];
  if (a.run) return std::optional<worker_run>();
  // A run that cannot be staged fails once all of it came (slices may be in flight to it, and
  // are then dropped as they come): without slices, at once.
  auto fail = [&a](status why) {
    if (a.failed.is_ok()) a.failed = std::move(why);
  };
  if (r.output_bytes == 0)
    fail(invalid_argument("run outputs: a worker over tcp needs the output block's size"));
  if (r.outputs.where != data_ref::kind::none)
    fail(invalid_argument("run outputs: a worker over tcp allocates its outputs"));
  if (r.inputs.size() > max_run_inputs) fail(invalid_argument("a run of too many inputs"));
  for (const data_ref& in : r.inputs) {
    if (in.where != data_ref::kind::frame && in.where != data_ref::kind::parts)
      fail(invalid_argument("run input: a worker over tcp takes its inputs as frames or slices"));
    else if (in.where == data_ref::kind::frame && in.frame >= frames.size())
      fail(invalid_argument("run input: frame " + std::to_string(in.frame) + " was not sent (" +
                            std::to_string(frames.size()) + " were)"));
  }
  if (a.parts != 0 && a.parts != r.parts)
    fail(invalid_argument("run of " + std::to_string(r.parts) + " slices, " +
                          std::to_string(a.parts) + " said a slice"));
  if (a.parts == 0) a.parts = r.parts;
  std::vector<std::pair<std::byte*, const zmq::message_t*>> copies;
  for (uint32_t i = 0; a.failed.is_ok() && i < r.inputs.size(); ++i) {
    const data_ref& in = r.inputs[i];
    if (in.where == data_ref::kind::parts) {
      (void)input_region(a, i, in.region.bytes);
      continue;
    }
    const zmq::message_t& f = frames[in.frame];
    if (a.inputs.size() > i && a.inputs[i].bytes > 0) {
      fail(invalid_argument("run input " + std::to_string(i) + " came as a frame and slices"));
      continue;
    }
    std::byte* to = input_region(a, i, std::max<size_t>(f.size(), 1));
    if (to) {
      copies.emplace_back(to, &f);
      a.received[i] = std::max<size_t>(f.size(), 1);
    }
  }
  if (a.failed.is_ok()) {
    auto out = arena_->allocate(static_cast<size_t>(r.output_bytes));
    if (out)
      a.outputs = *out;
    else
      fail(status(error_code::out_of_memory,
                  "the worker's staging memory is full: " + out.error().message()));
  }
  const uint64_t batch = r.batch;
  a.run = std::move(r);
  // The frames are copied outside the lock; the run cannot complete meanwhile: it needs its
  // envelope counted in, which this thread does only after.
  lock.unlock();
  for (const auto& [to, f] : copies) std::memcpy(to, f->data(), f->size());
  lock.lock();
  assembly& b = assembling_.at(batch);  // only this thread's count can complete it
  b.envelope_in = true;
  if (b.parts_in < b.parts) return std::optional<worker_run>();
  return finish(batch, b);
}

remote_run_staging::step remote_run_staging::add_part(const worker_run_part& p,
                                                      const std::vector<zmq::message_t>& frames) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (completed_.seen(p.batch)) return std::optional<worker_run>();  // a late copy of a slice
  assembly& a = assembling_[p.batch];
  if (a.parts != 0 && a.parts != p.parts && a.failed.is_ok())
    a.failed = invalid_argument("run slices say " + std::to_string(p.parts) + " and " +
                                std::to_string(a.parts) + " slices");
  if (a.parts == 0) a.parts = p.parts;
  std::byte* to = nullptr;
  const zmq::message_t* f = nullptr;
  if (p.data.frame >= frames.size()) {
    if (a.failed.is_ok()) a.failed = invalid_argument("run slice: its frame was not sent");
  } else {
    f = &frames[p.data.frame];
    if (p.offset + f->size() > p.input_bytes || f->size() == 0) {
      if (a.failed.is_ok())
        a.failed = invalid_argument("run slice of " + std::to_string(f->size()) + " bytes at " +
                                    std::to_string(p.offset) + " of an input of " +
                                    std::to_string(p.input_bytes));
    } else if (std::byte* base = input_region(a, p.input, p.input_bytes)) {
      to = base + p.offset;
      a.received[p.input] += f->size();
    }
  }
  if (to) {
    // Outside the lock: slices of one run are copied side by side. The run cannot complete
    // meanwhile: this slice is counted in only after.
    lock.unlock();
    std::memcpy(to, f->data(), f->size());
    lock.lock();
  }
  auto it = assembling_.find(p.batch);
  if (it == assembling_.end()) return std::optional<worker_run>();
  assembly& b = it->second;
  ++b.parts_in;
  if (!b.envelope_in || b.parts_in < b.parts) return std::optional<worker_run>();
  return finish(p.batch, b);
}

std::optional<worker_message> remote_run_staging::receive(
    worker_message m, const std::vector<zmq::message_t>& frames) {
  auto* r = std::get_if<worker_run>(&m);
  const uint64_t batch = r ? r->batch : std::get<worker_run_part>(m).batch;
  step s = r ? stage(std::move(*r), frames) : add_part(std::get<worker_run_part>(m), frames);
  if (s) return *s ? std::optional<worker_message>(std::move(**s)) : std::nullopt;
  worker_done failed;
  failed.batch = batch;
  failed.result = s.error();
  return worker_message(std::move(failed));
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
