// The worker side of tensors as frames (cluster/remote_run_staging.hpp): a run's input frames
// are copied into the process's arena and it is given an output block there; a run that names a
// frame it did not bring, or that does not fit, fails typed with nothing left allocated; the
// answer of a run sends its output block as a zero-copy frame that gives the block back once
// freed, and a failed run's answer gives everything back at once.

#include "cluster/remote_run_staging.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/worker_codec.hpp"

namespace troupe::cluster {
namespace {

using namespace troupe::actors;
using namespace troupe::serving;

zmq::message_t frame_of(const std::string& bytes) {
  return zmq::message_t(bytes.data(), bytes.size());
}

std::string bytes_at(const shared_arena& arena, const shm_region& r) {
  return std::string(reinterpret_cast<const char*>(arena.at(r)), r.bytes);
}

std::string pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 13 + seed);
  return s;
}

worker_run run_of(uint64_t batch, std::vector<uint32_t> frames, uint64_t output_bytes) {
  worker_run r;
  r.batch = batch;
  r.rows = 1;
  r.bucket_rows = 1;
  for (uint32_t f : frames) r.inputs.push_back(data_ref{data_ref::kind::frame, {}, f});
  r.outputs = data_ref{data_ref::kind::none, {}, 0};
  r.output_bytes = output_bytes;
  return r;
}

/// A run without slices: staged at once, or refused.
expected<worker_run> stage_now(remote_run_staging& s, worker_run r,
                               const std::vector<zmq::message_t>& frames) {
  auto step = s.stage(std::move(r), frames);
  if (!step) return step.error();
  EXPECT_TRUE(step->has_value()) << "a run without slices waits, or was dropped";
  if (!*step) return internal_error("not staged");
  return std::move(**step);
}

worker_done decode_done(const outgoing_message& m) {
  auto decoded = decode_worker_message(m.envelope.data(), m.envelope.size());
  EXPECT_TRUE(decoded.has_value()) << decoded.error().to_string();
  if (!decoded) return {};
  EXPECT_TRUE(std::holds_alternative<worker_done>(*decoded)) << worker_message_name(*decoded);
  return std::holds_alternative<worker_done>(*decoded) ? std::get<worker_done>(*decoded)
                                                       : worker_done{};
}

class remote_run_staging_test : public ::testing::Test {
 protected:
  void SetUp() override { make_arena(1 << 20); }
  void make_arena(size_t bytes) {
    auto a = shared_arena::create(bytes, "troupe-test-staging");
    ASSERT_TRUE(a.has_value()) << a.error().to_string();
    arena_ = *a;
    // Something of somebody else's, so that the baseline is not zero and a release of what
    // staging does not own would show.
    auto other = arena_->allocate(300);
    ASSERT_TRUE(other.has_value());
    baseline_ = arena_->used_bytes();
    ASSERT_GT(baseline_, 0u);
  }

  std::shared_ptr<shared_arena> arena_;
  size_t baseline_ = 0;
};

TEST_F(remote_run_staging_test, stage_copies_the_frames_into_the_arena_and_gives_an_output_block) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(1000, 1)));
  frames.push_back(frame_of(pattern(333, 2)));
  // The inputs name the frames out of order: input i is the frame it names, not frame i.
  auto staged = stage_now(staging, run_of(7, {1, 0}, 4096), frames);
  ASSERT_TRUE(staged.has_value()) << staged.error().to_string();
  EXPECT_EQ(staged->batch, 7u);
  ASSERT_EQ(staged->inputs.size(), 2u);
  for (const data_ref& in : staged->inputs) {
    EXPECT_EQ(in.where, data_ref::kind::shm);
    EXPECT_TRUE(arena_->contains(in.region));
  }
  EXPECT_EQ(staged->inputs[0].region.bytes, 333u);
  EXPECT_EQ(bytes_at(*arena_, staged->inputs[0].region), pattern(333, 2));
  EXPECT_EQ(staged->inputs[1].region.bytes, 1000u);
  EXPECT_EQ(bytes_at(*arena_, staged->inputs[1].region), pattern(1000, 1));

  EXPECT_EQ(staged->outputs.where, data_ref::kind::shm);
  EXPECT_EQ(staged->outputs.region.bytes, 4096u);
  EXPECT_TRUE(arena_->contains(staged->outputs.region));
  // Three distinct regions: writing the outputs cannot clobber an input.
  EXPECT_NE(staged->outputs.region.offset, staged->inputs[0].region.offset);
  EXPECT_NE(staged->outputs.region.offset, staged->inputs[1].region.offset);
  EXPECT_NE(staged->inputs[0].region.offset, staged->inputs[1].region.offset);
  EXPECT_GE(arena_->used_bytes(), baseline_ + 1000 + 333 + 4096);
}

TEST_F(remote_run_staging_test, a_run_naming_a_frame_it_did_not_bring_is_refused_and_releases) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(512, 1)));
  frames.push_back(frame_of(pattern(512, 2)));
  // Input 0 is staged before input 1 turns out to name frame 3.
  auto staged = stage_now(staging, run_of(8, {0, 3}, 1024), frames);
  ASSERT_FALSE(staged.has_value());
  EXPECT_EQ(staged.error().code(), error_code::invalid_argument) << staged.error().to_string();
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, a_run_whose_data_is_not_as_over_tcp_is_refused_and_releases) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(64, 1)));
  worker_run shm_input = run_of(9, {0}, 256);
  shm_input.inputs.push_back(data_ref{data_ref::kind::shm, {0, 0, 64}, 0});
  auto a = stage_now(staging, shm_input, frames);
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), error_code::invalid_argument);
  EXPECT_EQ(arena_->used_bytes(), baseline_);

  worker_run shm_outputs = run_of(10, {0}, 256);
  shm_outputs.outputs = data_ref{data_ref::kind::shm, {0, 0, 256}, 0};
  auto b = stage_now(staging, shm_outputs, frames);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code(), error_code::invalid_argument);
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, a_run_that_does_not_fit_is_out_of_memory_and_leaks_nothing) {
  make_arena(4096);  // 256 of it taken by the fixture's region
  remote_run_staging staging(arena_);
  {
    // The inputs fit, the output block does not.
    std::vector<zmq::message_t> frames;
    frames.push_back(frame_of(pattern(1024, 1)));
    frames.push_back(frame_of(pattern(1024, 2)));
    auto staged = stage_now(staging, run_of(1, {0, 1}, 4096), frames);
    ASSERT_FALSE(staged.has_value());
    EXPECT_EQ(staged.error().code(), error_code::out_of_memory) << staged.error().to_string();
    EXPECT_EQ(arena_->used_bytes(), baseline_);
  }
  {
    // The first input fits, the second does not.
    std::vector<zmq::message_t> frames;
    frames.push_back(frame_of(pattern(3000, 1)));
    frames.push_back(frame_of(pattern(1024, 2)));
    auto staged = stage_now(staging, run_of(2, {0, 1}, 256), frames);
    ASSERT_FALSE(staged.has_value());
    EXPECT_EQ(staged.error().code(), error_code::out_of_memory) << staged.error().to_string();
    EXPECT_EQ(arena_->used_bytes(), baseline_);
  }
  // All of it is still there to be used.
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(1024, 3)));
  auto fits = stage_now(staging, run_of(3, {0}, 2048), frames);
  EXPECT_TRUE(fits.has_value()) << fits.error().to_string();
}

TEST_F(remote_run_staging_test, a_done_run_sends_its_output_block_as_a_frame_that_gives_it_back) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(2000, 1)));
  frames.push_back(frame_of(pattern(700, 2)));
  const uint64_t output_bytes = 1500;
  auto staged = stage_now(staging, run_of(42, {0, 1}, output_bytes), frames);
  ASSERT_TRUE(staged.has_value()) << staged.error().to_string();
  const shm_region out_region = staged->outputs.region;
  const std::string results = pattern(output_bytes, 9);
  std::memcpy(arena_->at(out_region), results.data(), results.size());       // the run writes them
  const size_t output_held = arena_->used_bytes() - baseline_ - 2048 - 768;  // rounded inputs

  worker_done d;
  d.batch = 42;
  d.compute_us = 55;
  d.bucket_rows = 1;
  batch::output_layout o;
  o.info = {dtype::f32, {1, 375}};
  o.offset = 0;
  o.row_bytes = output_bytes;
  d.outputs = {o};
  outgoing_message answer = staging.answer(d);

  const worker_done sent = decode_done(answer);
  EXPECT_EQ(sent.batch, 42u);
  EXPECT_TRUE(sent.result.is_ok());
  EXPECT_EQ(sent.compute_us, 55u);
  ASSERT_EQ(sent.outputs.size(), 1u);
  EXPECT_EQ(sent.block.where, data_ref::kind::frame);
  EXPECT_EQ(sent.block.frame, 0u);

  ASSERT_TRUE(answer.frame.has_value());
  ASSERT_EQ(answer.frame->size(), output_bytes);
  EXPECT_EQ(answer.frame->data(), static_cast<void*>(arena_->at(out_region)));  // no copy
  EXPECT_EQ(answer.frame->to_string(), results);
  // The inputs went back at answer time; the output block is the frame's until it is freed.
  EXPECT_EQ(arena_->used_bytes(), baseline_ + output_held);
  EXPECT_GE(output_held, output_bytes);

  answer.frame.reset();  // ZeroMQ has sent it
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, the_frame_outlives_the_staging_and_gives_the_block_back_later) {
  outgoing_message answer;
  {
    remote_run_staging staging(arena_);
    std::vector<zmq::message_t> frames;
    frames.push_back(frame_of(pattern(64, 1)));
    auto staged = stage_now(staging, run_of(5, {0}, 512), frames);
    ASSERT_TRUE(staged.has_value()) << staged.error().to_string();
    worker_done d;
    d.batch = 5;
    answer = staging.answer(d);
  }
  ASSERT_TRUE(answer.frame.has_value());
  EXPECT_GT(arena_->used_bytes(), baseline_);  // the staging's end does not free a frame in flight
  answer.frame.reset();
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, a_failed_run_answers_without_a_frame_and_releases_everything) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(900, 1)));
  auto staged = stage_now(staging, run_of(11, {0}, 2048), frames);
  ASSERT_TRUE(staged.has_value()) << staged.error().to_string();
  ASSERT_GT(arena_->used_bytes(), baseline_);

  worker_done d;
  d.batch = 11;
  d.result = status(error_code::device_error, "cudaErrorIllegalAddress");
  outgoing_message answer = staging.answer(d);
  EXPECT_FALSE(answer.frame.has_value());
  const worker_done sent = decode_done(answer);
  EXPECT_EQ(sent.batch, 11u);
  EXPECT_EQ(sent.result.code(), error_code::device_error);
  EXPECT_EQ(sent.result.message(), "cudaErrorIllegalAddress");
  EXPECT_EQ(sent.block.where, data_ref::kind::none);
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, an_answer_to_a_run_not_staged_here_has_no_frame) {
  remote_run_staging staging(arena_);
  worker_done d;
  d.batch = 99;
  outgoing_message answer = staging.answer(d);
  EXPECT_FALSE(answer.frame.has_value());
  const worker_done sent = decode_done(answer);
  EXPECT_EQ(sent.batch, 99u);
  EXPECT_EQ(sent.block.where, data_ref::kind::none);
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, runs_still_staged_go_back_with_the_staging) {
  {
    remote_run_staging staging(arena_);
    std::vector<zmq::message_t> frames;
    frames.push_back(frame_of(pattern(100, 1)));
    ASSERT_TRUE(stage_now(staging, run_of(1, {0}, 256), frames).has_value());
    ASSERT_TRUE(stage_now(staging, run_of(2, {0}, 256), frames).has_value());
    ASSERT_GT(arena_->used_bytes(), baseline_);
  }
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

// A run without an output block size is refused before anything is allocated (an allocation
// of 0 bytes took one unit that release() never gave back).
TEST_F(remote_run_staging_test, a_run_without_output_bytes_leaks_nothing) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(64, 1)));
  auto staged = stage_now(staging, run_of(1, {0}, 0), frames);
  ASSERT_FALSE(staged.has_value());  // refused: the block's size is part of a run over tcp
  EXPECT_EQ(staged.error().code(), error_code::invalid_argument);
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, a_second_copy_of_a_run_in_flight_is_dropped_and_keeps_the_first) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(64, 1)));
  auto first = stage_now(staging, run_of(7, {0}, 128), frames);
  ASSERT_TRUE(first.has_value());
  const size_t staged_bytes = arena_->used_bytes();
  auto second = staging.stage(run_of(7, {0}, 128), frames);
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  EXPECT_FALSE(second->has_value()) << "a copy is not run again";
  EXPECT_EQ(arena_->used_bytes(), staged_bytes);
  worker_done d;
  d.batch = 7;
  d.result = status(error_code::device_error, "failed");
  (void)staging.answer(d);
  EXPECT_EQ(arena_->used_bytes(), baseline_);
  // Answered: a late copy is still one, and takes nothing.
  auto late = staging.stage(run_of(7, {0}, 128), frames);
  ASSERT_TRUE(late.has_value());
  EXPECT_FALSE(late->has_value());
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

}  // namespace
}  // namespace troupe::cluster

namespace troupe::cluster {
namespace {

// Striping (docs/cluster.md): a run whose inputs come in slices over several connections.

/// Input `input` of `bytes` bytes cut into `count` slices: (the part, its frame).
std::vector<std::pair<worker_run_part, std::vector<zmq::message_t>>> slices_of(
    uint64_t batch, uint32_t input, const std::string& bytes, uint32_t count, uint32_t parts) {
  std::vector<std::pair<worker_run_part, std::vector<zmq::message_t>>> out;
  const size_t each = (bytes.size() + count - 1) / count;
  for (size_t offset = 0; offset < bytes.size(); offset += each) {
    worker_run_part p;
    p.batch = batch;
    p.input = input;
    p.input_bytes = bytes.size();
    p.offset = offset;
    p.parts = parts;
    std::vector<zmq::message_t> f;
    f.push_back(frame_of(bytes.substr(offset, each)));
    out.emplace_back(p, std::move(f));
  }
  return out;
}

worker_run sliced_run(uint64_t batch, std::vector<uint64_t> input_bytes, uint32_t parts,
                      uint64_t output_bytes) {
  worker_run r;
  r.batch = batch;
  r.rows = 1;
  r.bucket_rows = 1;
  for (uint64_t b : input_bytes) r.inputs.push_back(data_ref{data_ref::kind::parts, {0, 0, b}, 0});
  r.outputs = data_ref{data_ref::kind::none, {}, 0};
  r.output_bytes = output_bytes;
  r.parts = parts;
  return r;
}

TEST_F(remote_run_staging_test, a_striped_run_is_staged_once_its_envelope_and_every_slice_came) {
  remote_run_staging staging(arena_);
  const std::string a = pattern(10000, 3), b = pattern(5000, 4);
  auto sa = slices_of(21, 0, a, 3, 5);
  auto sb = slices_of(21, 1, b, 2, 5);
  // Slices before and after the envelope, out of order.
  for (auto* s : {&sa[2], &sb[0]}) {
    auto step = staging.add_part(s->first, s->second);
    ASSERT_TRUE(step.has_value()) << step.error().to_string();
    EXPECT_FALSE(step->has_value());
  }
  // A small third input comes whole, as a frame of the envelope.
  worker_run run = sliced_run(21, {a.size(), b.size()}, 5, 512);
  run.inputs.push_back(data_ref{data_ref::kind::frame, {}, 0});
  std::vector<zmq::message_t> small;
  small.push_back(frame_of(pattern(40, 9)));
  auto envelope = staging.stage(run, small);
  ASSERT_TRUE(envelope.has_value()) << envelope.error().to_string();
  EXPECT_FALSE(envelope->has_value()) << "slices are still to come";
  for (auto* s : {&sa[0], &sb[1]}) {
    auto step = staging.add_part(s->first, s->second);
    ASSERT_TRUE(step.has_value());
    EXPECT_FALSE(step->has_value());
  }
  EXPECT_EQ(staging.assembling(), 1u);
  auto last = staging.add_part(sa[1].first, sa[1].second);
  ASSERT_TRUE(last.has_value()) << last.error().to_string();
  ASSERT_TRUE(last->has_value()) << "the last slice completes the run";
  const worker_run& r = **last;
  EXPECT_EQ(r.batch, 21u);
  EXPECT_EQ(r.parts, 0u);
  ASSERT_EQ(r.inputs.size(), 3u);
  ASSERT_EQ(r.inputs[0].where, data_ref::kind::shm);
  EXPECT_EQ(bytes_at(*arena_, r.inputs[0].region), a);
  EXPECT_EQ(bytes_at(*arena_, r.inputs[1].region), b);
  EXPECT_EQ(bytes_at(*arena_, r.inputs[2].region), pattern(40, 9));
  EXPECT_EQ(r.outputs.where, data_ref::kind::shm);
  EXPECT_EQ(r.outputs.region.bytes, 512u);
  EXPECT_EQ(staging.assembling(), 0u);
  // A late copy of a slice takes nothing.
  auto late = staging.add_part(sa[0].first, sa[0].second);
  ASSERT_TRUE(late.has_value());
  EXPECT_FALSE(late->has_value());
  EXPECT_EQ(staging.assembling(), 0u);
  worker_done d;
  d.batch = 21;
  d.result = status(error_code::device_error, "failed");
  (void)staging.answer(d);
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, slices_copied_side_by_side_on_several_threads_make_the_run) {
  remote_run_staging staging(arena_);
  const std::string a = pattern(200000, 5);
  auto slices = slices_of(3, 0, a, 4, 4);
  std::vector<std::optional<worker_run>> done(slices.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < slices.size(); ++i)
    threads.emplace_back([&, i] {
      auto step = staging.add_part(slices[i].first, slices[i].second);
      if (step && *step) done[i] = std::move(**step);
    });
  for (auto& t : threads) t.join();
  auto envelope = staging.stage(sliced_run(3, {a.size()}, 4, 64), {});
  ASSERT_TRUE(envelope.has_value()) << envelope.error().to_string();
  ASSERT_TRUE(envelope->has_value()) << "the envelope came last and completes the run";
  for (const auto& d : done)
    EXPECT_FALSE(d.has_value()) << "a slice completed a run without its envelope";
  EXPECT_EQ(bytes_at(*arena_, (*envelope)->inputs[0].region), a);
}

TEST_F(remote_run_staging_test, a_striped_run_that_fails_answers_once_complete_and_leaks_nothing) {
  make_arena(64 << 10);
  remote_run_staging staging(arena_);
  // Slices that do not fit: the run fails, answered only once every message of it came.
  const std::string a = pattern(100 << 10, 6);
  auto slices = slices_of(4, 0, a, 2, 2);
  auto first = staging.add_part(slices[0].first, slices[0].second);
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(first->has_value());
  auto envelope = staging.stage(sliced_run(4, {a.size()}, 2, 64), {});
  ASSERT_TRUE(envelope.has_value());
  EXPECT_FALSE(envelope->has_value());
  auto last = staging.add_part(slices[1].first, slices[1].second);
  ASSERT_FALSE(last.has_value());
  EXPECT_EQ(last.error().code(), error_code::out_of_memory) << last.error().to_string();
  EXPECT_EQ(staging.assembling(), 0u);
  EXPECT_EQ(arena_->used_bytes(), baseline_);

  // Slices that disagree with their run: a slice count, a size, bytes missing.
  const std::string b = pattern(4000, 7);
  auto two = slices_of(5, 0, b, 2, 2);
  ASSERT_TRUE(staging.add_part(two[0].first, two[0].second).has_value());
  auto wrong_count = staging.stage(sliced_run(5, {b.size()}, 3, 64), {});
  ASSERT_TRUE(wrong_count.has_value());
  EXPECT_FALSE(wrong_count->has_value());
  // The first word counts (two slices): the second completes the run, which failed.
  auto second = staging.add_part(two[1].first, two[1].second);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), error_code::invalid_argument) << second.error().to_string();
  EXPECT_EQ(arena_->used_bytes(), baseline_);
  auto late = staging.add_part(two[0].first, two[0].second);  // the third the envelope said
  ASSERT_TRUE(late.has_value());
  EXPECT_FALSE(late->has_value()) << "dropped: the run was answered";

  // Slices whose bytes do not cover their input: one slice counted twice.
  auto three = slices_of(7, 0, b, 2, 3);
  ASSERT_TRUE(staging.stage(sliced_run(7, {b.size()}, 3, 64), {}).has_value());
  ASSERT_TRUE(staging.add_part(three[0].first, three[0].second).has_value());
  ASSERT_TRUE(staging.add_part(three[0].first, three[0].second).has_value());
  auto short_of_bytes = staging.add_part(three[1].first, three[1].second);
  ASSERT_FALSE(short_of_bytes.has_value());
  EXPECT_EQ(short_of_bytes.error().code(), error_code::invalid_argument)
      << short_of_bytes.error().to_string();
  EXPECT_EQ(arena_->used_bytes(), baseline_);

  worker_run_part beyond = two[1].first;
  beyond.batch = 6;
  beyond.offset = b.size() - 10;  // its 2000 bytes run past the input's end
  beyond.parts = 1;
  auto bad = staging.add_part(beyond, two[1].second);
  ASSERT_TRUE(bad.has_value());
  EXPECT_FALSE(bad->has_value());
  auto envelope6 = staging.stage(sliced_run(6, {b.size()}, 1, 64), {});
  ASSERT_FALSE(envelope6.has_value());
  EXPECT_EQ(envelope6.error().code(), error_code::invalid_argument);
  EXPECT_EQ(staging.assembling(), 0u);
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

TEST_F(remote_run_staging_test, runs_still_assembling_go_back_with_the_staging) {
  {
    remote_run_staging staging(arena_);
    const std::string a = pattern(3000, 8);
    auto slices = slices_of(9, 0, a, 3, 3);
    ASSERT_TRUE(staging.add_part(slices[0].first, slices[0].second).has_value());
    ASSERT_TRUE(staging.stage(sliced_run(9, {a.size()}, 3, 64), {}).has_value());
    ASSERT_GT(arena_->used_bytes(), baseline_);
  }
  EXPECT_EQ(arena_->used_bytes(), baseline_);
}

}  // namespace
}  // namespace troupe::cluster

namespace troupe::cluster {
namespace {

// receive: a run's envelope or slice as it came, as what comes of it for the worker process.
TEST_F(remote_run_staging_test, receive_gives_the_staged_run_its_failed_answer_or_nothing_yet) {
  remote_run_staging staging(arena_);
  std::vector<zmq::message_t> frames;
  frames.push_back(frame_of(pattern(100, 1)));
  auto staged = staging.receive(run_of(1, {0}, 64), frames);
  ASSERT_TRUE(staged.has_value());
  ASSERT_TRUE(std::holds_alternative<worker_run>(*staged)) << worker_message_name(*staged);
  EXPECT_EQ(std::get<worker_run>(*staged).inputs[0].where, data_ref::kind::shm);

  auto refused = staging.receive(run_of(2, {3}, 64), frames);  // names a frame not sent
  ASSERT_TRUE(refused.has_value());
  ASSERT_TRUE(std::holds_alternative<worker_done>(*refused)) << worker_message_name(*refused);
  EXPECT_EQ(std::get<worker_done>(*refused).batch, 2u);
  EXPECT_EQ(std::get<worker_done>(*refused).result.code(), error_code::invalid_argument);

  worker_run_part part;
  part.batch = 3;
  part.input_bytes = 200;
  part.parts = 2;
  EXPECT_FALSE(staging.receive(part, frames).has_value()) << "its run has more to come";
}

}  // namespace
}  // namespace troupe::cluster
