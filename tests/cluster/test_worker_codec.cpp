// The worker protocol's codec (cluster/worker_codec.hpp): every message survives a round trip,
// and what a faulty or foreign peer sends (garbage, another protocol version, no body, unknown
// dtypes and error codes, dims that would overflow a byte count, inconsistent layouts) is a typed
// error, never a crash.

#include "cluster/worker_codec.hpp"

#include <gtest/gtest.h>

#include <random>

#include "proto/worker.pb.h"

namespace troupe::cluster {
namespace {

using namespace troupe::actors;
using namespace troupe::serving;
namespace wpb = troupe::worker::v1;

template <class T>
T round_trip(const T& in) {
  const std::string bytes = encode_worker_message(worker_message(in));
  auto out = decode_worker_message(bytes.data(), bytes.size());
  EXPECT_TRUE(out.has_value()) << out.error().to_string();
  if (!out) return T{};
  EXPECT_TRUE(std::holds_alternative<T>(*out)) << worker_message_name(*out);
  return std::holds_alternative<T>(*out) ? std::get<T>(*out) : T{};
}

TEST(worker_codec, hello_load_unload_and_heartbeat_round_trip) {
  const auto h = round_trip(worker_hello{3, 4242, "cuda:1", "", 0, 0, 0});
  EXPECT_EQ(h.worker_index, 3u);
  EXPECT_EQ(h.pid, 4242);
  EXPECT_EQ(h.device, "cuda:1");

  worker_load l;
  l.request = 77;
  l.model = "resnet";
  l.version = 2;
  l.path = "/models/resnet/2/model.onnx";
  l.config_text = "max_batch_size: 8\n";
  l.warmup_runs = 5;
  l.load_timeout_ms = 300000;
  const auto l2 = round_trip(l);
  EXPECT_EQ(l2.request, 77u);
  EXPECT_EQ(l2.model, "resnet");
  EXPECT_EQ(l2.version, 2);
  EXPECT_EQ(l2.path, l.path);
  EXPECT_EQ(l2.config_text, l.config_text);
  EXPECT_EQ(l2.warmup_runs, 5u);
  EXPECT_EQ(l2.load_timeout_ms, 300000u);

  EXPECT_EQ(round_trip(worker_unload{9}).replica, 9u);
  EXPECT_EQ(round_trip(worker_heartbeat{123456789}).sequence, 123456789u);
}

TEST(worker_codec, loaded_carries_signature_buckets_and_layouts) {
  worker_loaded l;
  l.request = 5;
  l.replica = 2;
  l.inputs = {{"x", dtype::f32, {-1, 16}}, {"ids", dtype::i64, {-1, 4}}};
  l.outputs = {{"y", dtype::f16, {-1, 8}}};
  l.max_batch_size = 8;
  l.bucket_rows = {1, 2, 4, 8};
  l.warmup = {{1, 10.5}, {8, 40.25}};
  l.pool_bytes = 1 << 20;
  bucket_layout b;
  b.rows = 4;
  b.inputs = {{dtype::f32, {4, 16}}, {dtype::i64, {4, 4}}};
  b.outputs = {{dtype::f16, {4, 8}}};
  b.output_offsets = {0};
  b.output_row_bytes = {16};
  b.block_bytes = 128;
  l.buckets = {b};
  const auto out = round_trip(l);
  EXPECT_TRUE(out.result.is_ok());
  EXPECT_EQ(out.replica, 2u);
  ASSERT_EQ(out.inputs.size(), 2u);
  EXPECT_EQ(out.inputs[1].name, "ids");
  EXPECT_EQ(out.inputs[1].type, dtype::i64);
  EXPECT_EQ(out.inputs[1].shape, (std::vector<int64_t>{-1, 4}));
  EXPECT_EQ(out.outputs[0].type, dtype::f16);
  EXPECT_EQ(out.max_batch_size, 8);
  EXPECT_EQ(out.bucket_rows, (std::vector<int64_t>{1, 2, 4, 8}));
  ASSERT_EQ(out.warmup.size(), 2u);
  EXPECT_DOUBLE_EQ(out.warmup[1].mean_us, 40.25);
  EXPECT_EQ(out.pool_bytes, 1u << 20);
  ASSERT_EQ(out.buckets.size(), 1u);
  EXPECT_EQ(out.buckets[0].rows, 4);
  EXPECT_EQ(out.buckets[0].inputs[1], (tensor_info{dtype::i64, {4, 4}}));
  EXPECT_EQ(out.buckets[0].outputs[0], (tensor_info{dtype::f16, {4, 8}}));
  EXPECT_EQ(out.buckets[0].output_row_bytes[0], 16u);
  EXPECT_EQ(out.buckets[0].block_bytes, 128u);

  worker_loaded failed;
  failed.request = 6;
  failed.result = status(error_code::invalid_model, "bad graph");
  const auto f = round_trip(failed);
  EXPECT_EQ(f.request, 6u);
  EXPECT_EQ(f.result.code(), error_code::invalid_model);
  EXPECT_EQ(f.result.message(), "bad graph");
}

TEST(worker_codec, run_and_done_round_trip) {
  worker_run r;
  r.batch = 1ull << 40;
  r.replica = 1;
  r.rows = 3;
  r.bucket_rows = 4;
  r.inputs = {data_ref{data_ref::kind::shm, {0, 4096, 1024}, 0}};
  r.inputs.push_back(data_ref{data_ref::kind::frame, {}, 2});
  r.outputs = data_ref{data_ref::kind::shm, {0, 8192, 512}, 0};
  r.fault = "device";
  r.sleep_ms = 25;
  const auto r2 = round_trip(r);
  EXPECT_EQ(r2.batch, r.batch);
  EXPECT_EQ(r2.rows, 3);
  EXPECT_EQ(r2.bucket_rows, 4);
  ASSERT_EQ(r2.inputs.size(), 2u);
  EXPECT_EQ(r2.inputs[0].where, data_ref::kind::shm);
  EXPECT_EQ(r2.inputs[0].region.offset, 4096u);
  EXPECT_EQ(r2.inputs[0].region.bytes, 1024u);
  EXPECT_EQ(r2.inputs[1].where, data_ref::kind::frame);
  EXPECT_EQ(r2.inputs[1].frame, 2u);
  EXPECT_EQ(r2.outputs.region.offset, 8192u);
  EXPECT_EQ(r2.fault, "device");
  EXPECT_EQ(r2.sleep_ms, 25u);

  worker_done d;
  d.batch = 9;
  d.compute_us = 1234;
  d.bucket_rows = 4;
  batch::output_layout o;
  o.info = {dtype::f32, {4, 8}};
  o.offset = 64;
  o.row_bytes = 32;
  d.outputs = {o};
  const auto d2 = round_trip(d);
  EXPECT_TRUE(d2.result.is_ok());
  EXPECT_EQ(d2.compute_us, 1234u);
  ASSERT_EQ(d2.outputs.size(), 1u);
  EXPECT_EQ(d2.outputs[0].info, o.info);
  EXPECT_EQ(d2.outputs[0].offset, 64u);
  EXPECT_EQ(d2.outputs[0].row_bytes, 32u);
  d.result = status(error_code::device_error, "cudaErrorIllegalAddress");
  const auto d3 = round_trip(d);
  EXPECT_EQ(d3.result.code(), error_code::device_error);
  EXPECT_EQ(d3.result.message(), "cudaErrorIllegalAddress");
}

status decode_error(const std::string& bytes) {
  auto m = decode_worker_message(bytes.data(), bytes.size());
  EXPECT_FALSE(m.has_value()) << "decoded " << (m ? worker_message_name(*m) : "");
  return m ? status::ok() : m.error();
}

TEST(worker_codec, garbage_is_a_typed_error) {
  EXPECT_EQ(decode_error("\xff\xff\xff\xff garbage").code(), error_code::invalid_argument);
  // Random bytes: never a crash, a message only if they happen to parse into a valid one.
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    (void)decode_worker_message(bytes.data(), bytes.size());
  }
  // A valid envelope cut short.
  const std::string whole = encode_worker_message(worker_message(worker_hello{1, 2, "cpu", "", 0, 0, 0}));
  for (size_t n = 1; n < whole.size(); ++n) (void)decode_worker_message(whole.data(), n);
}

TEST(worker_codec, another_protocol_version_is_refused_typed) {
  wpb::WorkerMessage m;
  m.set_protocol_version(worker_protocol_version + 1);
  m.mutable_heartbeat()->set_sequence(1);
  const status s = decode_error(m.SerializeAsString());
  EXPECT_EQ(s.code(), error_code::unsupported);
  EXPECT_NE(s.message().find("version"), std::string::npos) << s.message();
  m.set_protocol_version(0);  // unset: a peer that is not speaking this protocol at all
  EXPECT_EQ(decode_error(m.SerializeAsString()).code(), error_code::unsupported);
}

TEST(worker_codec, values_out_of_range_are_refused) {
  auto envelope = [] {
    wpb::WorkerMessage m;
    m.set_protocol_version(worker_protocol_version);
    return m;
  };
  {
    auto m = envelope();  // no body
    EXPECT_EQ(decode_error(m.SerializeAsString()).code(), error_code::invalid_argument);
  }
  {
    auto m = envelope();
    m.mutable_done()->mutable_error()->set_code(static_cast<troupe::v1::ErrorCode>(99));
    EXPECT_NE(decode_error(m.SerializeAsString()).message().find("error code"), std::string::npos);
  }
  {
    auto m = envelope();
    auto* b = m.mutable_loaded()->add_buckets();
    b->set_rows(1);
    auto* t = b->add_inputs();
    t->set_dtype(static_cast<troupe::v1::DataType>(8));  // ONNX STRING: not a troupe dtype
    t->add_shape(1);
    EXPECT_NE(decode_error(m.SerializeAsString()).message().find("dtype"), std::string::npos);
  }
  {
    auto m = envelope();  // dims whose product overflows 64 bits
    auto* b = m.mutable_loaded()->add_buckets();
    b->set_rows(1);
    auto* t = b->add_outputs();
    t->set_dtype(troupe::v1::FLOAT);
    for (int i = 0; i < 4; ++i) t->add_shape(int64_t{1} << 39);
    b->add_output_offsets(0);
    b->add_output_row_bytes(4);
    EXPECT_EQ(decode_error(m.SerializeAsString()).code(), error_code::invalid_argument);
  }
  {
    auto m = envelope();  // negative dim in a concrete shape
    auto* o = m.mutable_done()->add_outputs();
    o->mutable_info()->set_dtype(troupe::v1::FLOAT);
    o->mutable_info()->add_shape(-1);
    EXPECT_EQ(decode_error(m.SerializeAsString()).code(), error_code::invalid_argument);
  }
  {
    auto m = envelope();  // a layout with more outputs than offsets
    auto* b = m.mutable_loaded()->add_buckets();
    b->set_rows(2);
    auto* t = b->add_outputs();
    t->set_dtype(troupe::v1::FLOAT);
    t->add_shape(2);
    EXPECT_NE(decode_error(m.SerializeAsString()).message().find("offsets"), std::string::npos);
  }
  {
    auto m = envelope();  // more rows than the bucket holds
    auto* r = m.mutable_run();
    r->set_rows(5);
    r->set_bucket_rows(4);
    r->mutable_outputs()->set_frame(0);
    EXPECT_EQ(decode_error(m.SerializeAsString()).code(), error_code::invalid_argument);
  }
  {
    auto m = envelope();  // a run whose outputs name nothing
    auto* r = m.mutable_run();
    r->set_rows(1);
    r->set_bucket_rows(1);
    EXPECT_NE(decode_error(m.SerializeAsString()).message().find("names no data"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace troupe::cluster

namespace troupe::cluster {
namespace {

// What a worker on another host adds (docs/cluster.md): its place and incarnation in the hello,
// a load's file by content hash, the file's bytes as a frame, runs and answers whose tensors
// travel as frames, and a bye.
TEST(worker_codec, remote_worker_messages_round_trip) {
  worker_hello h{1, 99, "cuda:0", "gpu-node-3", 0xfeedbeefULL, 80ULL << 30, 79ULL << 30};
  const auto h2 = round_trip(h);
  EXPECT_EQ(h2.node, "gpu-node-3");
  EXPECT_EQ(h2.incarnation, 0xfeedbeefULL);
  EXPECT_EQ(h2.memory_total_bytes, 80ULL << 30);
  EXPECT_EQ(h2.memory_free_bytes, 79ULL << 30);

  const std::string sha(64, 'a');
  worker_load l;
  l.request = 4;
  l.path = "resnet/1/model.onnx";
  l.content_sha256 = sha;
  l.file_bytes = 12345;
  l.data_files = {{"weights.bin", std::string(64, 'b'), 1u << 30}, {"data/part-2", sha, 7}};
  const auto l2 = round_trip(l);
  EXPECT_EQ(l2.content_sha256, sha);
  EXPECT_EQ(l2.file_bytes, 12345u);
  ASSERT_EQ(l2.data_files.size(), 2u);
  EXPECT_EQ(l2.data_files[0].name, "weights.bin");
  EXPECT_EQ(l2.data_files[0].content_sha256, std::string(64, 'b'));
  EXPECT_EQ(l2.data_files[0].bytes, 1u << 30);
  EXPECT_EQ(l2.data_files[1].name, "data/part-2");

  const auto w = round_trip(worker_file_wanted{4, sha});
  EXPECT_EQ(w.request, 4u);
  EXPECT_EQ(w.content_sha256, sha);

  worker_file_data f;
  f.content_sha256 = sha;
  f.data = data_ref{data_ref::kind::frame, {}, 0};
  const auto f2 = round_trip(f);
  EXPECT_TRUE(f2.result.is_ok());
  EXPECT_EQ(f2.data.where, data_ref::kind::frame);
  worker_file_data refused;
  refused.content_sha256 = sha;
  refused.result = not_found("gone from the repository");
  const auto r2 = round_trip(refused);
  EXPECT_EQ(r2.result.code(), error_code::not_found);
  EXPECT_EQ(r2.data.where, data_ref::kind::none);

  worker_run run;
  run.batch = 8;
  run.rows = 2;
  run.bucket_rows = 4;
  run.inputs = {data_ref{data_ref::kind::frame, {}, 0}, data_ref{data_ref::kind::frame, {}, 1}};
  run.outputs = data_ref{data_ref::kind::none, {}, 0};
  run.output_bytes = 4096;
  const auto run2 = round_trip(run);
  EXPECT_EQ(run2.outputs.where, data_ref::kind::none);
  EXPECT_EQ(run2.output_bytes, 4096u);
  ASSERT_EQ(run2.inputs.size(), 2u);
  EXPECT_EQ(run2.inputs[1].frame, 1u);

  worker_done d;
  d.batch = 8;
  d.bucket_rows = 4;
  d.block = data_ref{data_ref::kind::frame, {}, 0};
  EXPECT_EQ(round_trip(d).block.where, data_ref::kind::frame);
  worker_done ipc;
  ipc.batch = 9;
  EXPECT_EQ(round_trip(ipc).block.where, data_ref::kind::none);

  EXPECT_EQ(round_trip(worker_bye{"node draining"}).reason, "node draining");
  const auto beat = round_trip(worker_heartbeat{3, 5ULL << 30});
  EXPECT_EQ(beat.sequence, 3u);
  EXPECT_EQ(beat.memory_free_bytes, 5ULL << 30);
}

TEST(worker_codec, remote_worker_messages_are_checked) {
  auto envelope = [] {
    wpb::WorkerMessage m;
    m.set_protocol_version(worker_protocol_version);
    return m;
  };
  auto code_of = [](const wpb::WorkerMessage& m) {
    const std::string bytes = m.SerializeAsString();
    auto out = decode_worker_message(bytes.data(), bytes.size());
    return out ? error_code::ok : out.error().code();
  };
  {
    auto m = envelope();  // a hash that would be a path in the cache
    m.mutable_file_wanted()->set_content_sha256("../../etc/passwd");
    EXPECT_EQ(code_of(m), error_code::invalid_argument);
  }
  {
    auto m = envelope();
    m.mutable_load()->set_content_sha256(std::string(63, 'a') + "G");
    EXPECT_EQ(code_of(m), error_code::invalid_argument);
  }
  // A data file's name is laid out under the worker's cache: nothing that leaves its folder.
  for (const std::string& name : std::vector<std::string>{
           "../x", "/abs", "a/../../x", "a//b", "./a", "model.onnx", "", std::string("a\0b", 3)}) {
    auto m = envelope();
    auto* f = m.mutable_load()->add_data_files();
    f->set_name(name);
    f->set_content_sha256(std::string(64, 'a'));
    EXPECT_EQ(code_of(m), error_code::invalid_argument) << name;
  }
  {
    auto m = envelope();
    auto* f = m.mutable_load()->add_data_files();
    f->set_name("weights.bin");
    f->set_content_sha256("not a hash");
    EXPECT_EQ(code_of(m), error_code::invalid_argument);
  }
  {
    auto m = envelope();  // file data with neither bytes nor an error
    m.mutable_file_data()->set_content_sha256(std::string(64, '0'));
    EXPECT_EQ(code_of(m), error_code::invalid_argument);
  }
  {
    auto m = envelope();  // outputs over tcp need their size
    auto* r = m.mutable_run();
    r->set_rows(1);
    r->set_bucket_rows(1);
    r->set_output_bytes(0);
    EXPECT_EQ(code_of(m), error_code::invalid_argument);
    r->set_output_bytes(64);
    EXPECT_EQ(code_of(m), error_code::ok);
  }
}

}  // namespace
}  // namespace troupe::cluster

namespace troupe::cluster {
namespace {

// Striping (docs/cluster.md): a run whose inputs come in slices names them by size and counts
// them; each slice says where it goes, and nothing that could not be one passes.
TEST(worker_codec, striped_runs_and_their_slices_round_trip_and_are_checked) {
  worker_run run;
  run.batch = 8;
  run.rows = 2;
  run.bucket_rows = 4;
  run.inputs = {data_ref{data_ref::kind::parts, {0, 0, 600000}, 0},
                data_ref{data_ref::kind::frame, {}, 0}};
  run.outputs = data_ref{data_ref::kind::none, {}, 0};
  run.output_bytes = 4096;
  run.parts = 4;
  const auto run2 = round_trip(run);
  EXPECT_EQ(run2.parts, 4u);
  ASSERT_EQ(run2.inputs.size(), 2u);
  EXPECT_EQ(run2.inputs[0].where, data_ref::kind::parts);
  EXPECT_EQ(run2.inputs[0].region.bytes, 600000u);
  EXPECT_EQ(run2.inputs[1].where, data_ref::kind::frame);

  worker_run_part p;
  p.batch = 8;
  p.input = 0;
  p.input_bytes = 600000;
  p.offset = 450000;
  p.parts = 4;
  const auto p2 = round_trip(p);
  EXPECT_EQ(p2.batch, 8u);
  EXPECT_EQ(p2.input_bytes, 600000u);
  EXPECT_EQ(p2.offset, 450000u);
  EXPECT_EQ(p2.parts, 4u);
  EXPECT_EQ(p2.data.where, data_ref::kind::frame);

  auto decodes = [](const worker_message& m) {
    const std::string bytes = encode_worker_message(m);
    return decode_worker_message(bytes.data(), bytes.size()).has_value();
  };
  worker_run no_count = run;  // inputs in slices, and no slice count
  no_count.parts = 0;
  EXPECT_FALSE(decodes(no_count));
  worker_run count_only = run;  // a slice count, and no input in slices
  count_only.inputs[0] = data_ref{data_ref::kind::frame, {}, 1};
  EXPECT_FALSE(decodes(count_only));
  worker_run too_many = run;
  too_many.parts = 1u << 20;
  EXPECT_FALSE(decodes(too_many));
  using breaker = void (*)(worker_run_part&);
  for (breaker broken : std::initializer_list<breaker>{
           [](worker_run_part& x) { x.parts = 0; }, [](worker_run_part& x) { x.input_bytes = 0; },
           [](worker_run_part& x) { x.offset = x.input_bytes; },
           [](worker_run_part& x) {
             x.data = data_ref{data_ref::kind::shm, {0, 0, 8}, 0};
           }}) {
    worker_run_part q = p;
    broken(q);
    EXPECT_FALSE(decodes(q));
  }
}

}  // namespace
}  // namespace troupe::cluster
