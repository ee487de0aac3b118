#include "cluster/worker_codec.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "proto/worker.pb.h"

namespace troupe::cluster {
namespace {

namespace wpb = troupe::worker::v1;
namespace pb = troupe::v1;
using namespace troupe::actors;
using namespace troupe::serving;

constexpr int64_t max_dim = int64_t{1} << 40;
/// More data files than any model has: a load naming more is refused.
constexpr int max_data_files = 100000;
constexpr uint64_t max_tensor_bytes = uint64_t{1} << 50;

// ---- encoding ----------------------------------------------------------------------------------

void put_status(const status& s, pb::Error* e) {
  if (s.is_ok()) return;
  e->set_code(static_cast<pb::ErrorCode>(s.code()));
  e->set_message(s.message());
}

void put_info(const tensor_info& t, wpb::TensorInfo* out) {
  out->set_dtype(static_cast<pb::DataType>(dtype_to_onnx(t.type)));
  for (int64_t d : t.shape) out->add_shape(d);
}

void put_spec(const tensor_spec& t, pb::TensorSpec* out) {
  out->set_name(t.name);
  out->set_dtype(static_cast<pb::DataType>(dtype_to_onnx(t.type)));
  for (int64_t d : t.shape) out->add_shape(d);
}

void put_fault(const injected_fault& f, wpb::InjectedFault* out) {
  out->set_kind(std::string(to_string(f.kind)));
  out->set_delay_ms(static_cast<uint32_t>(std::min<int64_t>(f.delay.count(), UINT32_MAX)));
  out->set_allocations(f.allocations);
}

void put_ref(const data_ref& r, wpb::DataRef* out) {
  if (r.where == data_ref::kind::none) return;
  if (r.where == data_ref::kind::frame) {
    out->set_frame(r.frame);
    return;
  }
  if (r.where == data_ref::kind::parts) {
    out->set_parts(r.region.bytes);
    return;
  }
  auto* shm = out->mutable_shm();
  shm->set_segment(r.region.segment);
  shm->set_offset(r.region.offset);
  shm->set_bytes(r.region.bytes);
}

struct encoder {
  wpb::WorkerMessage& m;

  void operator()(const worker_hello& h) {
    auto* o = m.mutable_hello();
    o->set_worker_index(h.worker_index);
    o->set_pid(h.pid);
    o->set_device(h.device);
    o->set_node(h.node);
    o->set_incarnation(h.incarnation);
    o->set_memory_total_bytes(h.memory_total_bytes);
    o->set_memory_free_bytes(h.memory_free_bytes);
    o->set_lane(h.lane);
  }
  void operator()(const worker_load& l) {
    auto* o = m.mutable_load();
    o->set_request(l.request);
    o->set_model(l.model);
    o->set_version(l.version);
    o->set_path(l.path);
    o->set_config_text(l.config_text);
    o->set_warmup_runs(l.warmup_runs);
    o->set_load_timeout_ms(l.load_timeout_ms);
    if (l.injected) put_fault(*l.injected, o->mutable_injected());
    o->set_content_sha256(l.content_sha256);
    for (const model_data_file& f : l.data_files) {
      auto* d = o->add_data_files();
      d->set_name(f.name);
      d->set_content_sha256(f.content_sha256);
      d->set_bytes(f.bytes);
    }
    o->set_file_bytes(l.file_bytes);
  }
  void operator()(const worker_file_wanted& f) {
    auto* o = m.mutable_file_wanted();
    o->set_request(f.request);
    o->set_content_sha256(f.content_sha256);
  }
  void operator()(const worker_file_data& f) {
    auto* o = m.mutable_file_data();
    o->set_content_sha256(f.content_sha256);
    put_ref(f.data, o->mutable_data());
    put_status(f.result, o->mutable_error());
  }
  void operator()(const worker_bye& b) { m.mutable_bye()->set_reason(b.reason); }
  void operator()(const worker_loaded& l) {
    auto* o = m.mutable_loaded();
    o->set_request(l.request);
    put_status(l.result, o->mutable_error());
    o->set_replica(l.replica);
    for (const auto& t : l.inputs) put_spec(t, o->add_inputs());
    for (const auto& t : l.outputs) put_spec(t, o->add_outputs());
    o->set_max_batch_size(l.max_batch_size);
    for (int64_t r : l.bucket_rows) o->add_bucket_rows(r);
    for (const auto& w : l.warmup) {
      auto* x = o->add_warmup();
      x->set_rows(w.rows);
      x->set_mean_us(w.mean_us);
    }
    o->set_pool_bytes(l.pool_bytes);
    for (const auto& b : l.buckets) {
      auto* x = o->add_buckets();
      x->set_rows(b.rows);
      for (const auto& t : b.inputs) put_info(t, x->add_inputs());
      for (const auto& t : b.outputs) put_info(t, x->add_outputs());
      for (size_t v : b.output_offsets) x->add_output_offsets(v);
      for (size_t v : b.output_row_bytes) x->add_output_row_bytes(v);
      x->set_block_bytes(b.block_bytes);
    }
  }
  void operator()(const worker_unload& u) { m.mutable_unload()->set_replica(u.replica); }
  void operator()(const worker_run& r) {
    auto* o = m.mutable_run();
    o->set_batch(r.batch);
    o->set_replica(r.replica);
    o->set_rows(r.rows);
    o->set_bucket_rows(r.bucket_rows);
    for (const auto& in : r.inputs) put_ref(in, o->add_inputs());
    if (r.outputs.where != data_ref::kind::none) put_ref(r.outputs, o->mutable_outputs());
    o->set_fault(r.fault);
    o->set_sleep_ms(r.sleep_ms);
    if (r.injected) put_fault(*r.injected, o->mutable_injected());
    o->set_output_bytes(r.output_bytes);
    o->set_parts(r.parts);
  }
  void operator()(const worker_run_part& p) {
    auto* o = m.mutable_run_part();
    o->set_batch(p.batch);
    o->set_input(p.input);
    o->set_input_bytes(p.input_bytes);
    o->set_offset(p.offset);
    o->set_parts(p.parts);
    put_ref(p.data, o->mutable_data());
  }
  void operator()(const worker_done& d) {
    auto* o = m.mutable_done();
    o->set_batch(d.batch);
    put_status(d.result, o->mutable_error());
    o->set_compute_us(d.compute_us);
    o->set_bucket_rows(d.bucket_rows);
    for (const auto& l : d.outputs) {
      auto* x = o->add_outputs();
      put_info(l.info, x->mutable_info());
      x->set_offset(l.offset);
      x->set_row_bytes(l.row_bytes);
    }
    if (d.block.where != data_ref::kind::none) put_ref(d.block, o->mutable_block());
  }
  void operator()(const worker_heartbeat& h) {
    m.mutable_heartbeat()->set_sequence(h.sequence);
    m.mutable_heartbeat()->set_memory_free_bytes(h.memory_free_bytes);
  }
};

// ---- decoding ----------------------------------------------------------------------------------

status bad(const std::string& what) {
  return invalid_argument("worker message: " + what);
}

/// A status as a peer sent it (expected<status> cannot tell it from a decoding error).
struct sent_status {
  status value;
};

expected<sent_status> get_status(const pb::Error& e) {
  const int code = static_cast<int>(e.code());
  if (code == 0) return sent_status{};
  if (code < 0 || code > static_cast<int>(error_code::device_error))
    return bad("unknown error code " + std::to_string(code));
  return sent_status{status(static_cast<error_code>(code), e.message())};
}

expected<dtype> get_dtype(int onnx_type, const char* where) {
  auto t = dtype_from_onnx(onnx_type);
  if (!t || *t == dtype::undefined)
    return bad(std::string(where) + ": unknown dtype " + std::to_string(onnx_type));
  return *t;
}

expected<tensor_info> get_info(const wpb::TensorInfo& t, const char* where) {
  tensor_info out;
  TROUPE_ASSIGN_OR_RETURN(out.type, get_dtype(t.dtype(), where));
  uint64_t bytes = dtype_size(out.type);
  for (int64_t d : t.shape()) {
    if (d < 0 || d > max_dim) return bad(std::string(where) + ": dim " + std::to_string(d));
    if (d > 0 && bytes > max_tensor_bytes / static_cast<uint64_t>(d))
      return bad(std::string(where) + ": a tensor of more than 2^50 bytes");
    bytes *= static_cast<uint64_t>(d);
    out.shape.push_back(d);
  }
  return out;
}

expected<tensor_spec> get_spec(const pb::TensorSpec& t, const char* where) {
  tensor_spec out;
  out.name = t.name();
  TROUPE_ASSIGN_OR_RETURN(out.type, get_dtype(t.dtype(), where));
  for (int64_t d : t.shape()) {
    if (d < -1 || d > max_dim) return bad(std::string(where) + ": dim " + std::to_string(d));
    out.shape.push_back(d);
  }
  return out;
}

expected<injected_fault> get_fault(const wpb::InjectedFault& f) {
  expected<fault_kind> kind = parse_fault_kind(f.kind());
  if (!kind || is_message_fault(*kind))
    return bad("injected fault '" + f.kind() + "' is not a worker fault");
  return injected_fault{*kind, std::chrono::milliseconds(f.delay_ms()), f.allocations()};
}

expected<data_ref> get_ref(const wpb::DataRef& r, const char* where) {
  data_ref out;
  switch (r.where_case()) {
    case wpb::DataRef::kShm:
      out.where = data_ref::kind::shm;
      out.region = {r.shm().segment(), r.shm().offset(), r.shm().bytes()};
      return out;
    case wpb::DataRef::kFrame:
      out.where = data_ref::kind::frame;
      out.frame = r.frame();
      return out;
    case wpb::DataRef::kParts:
      if (r.parts() == 0 || r.parts() > max_tensor_bytes)
        return bad(std::string(where) + ": parts of " + std::to_string(r.parts()) + " bytes");
      out.where = data_ref::kind::parts;
      out.region.bytes = r.parts();
      return out;
    default:
      return bad(std::string(where) + ": names no data");
  }
}

/// A DataRef that may be unset (kind none then).
expected<data_ref> get_optional_ref(bool present, const wpb::DataRef& r, const char* where) {
  if (!present || r.where_case() == wpb::DataRef::WHERE_NOT_SET)
    return data_ref{data_ref::kind::none, {}, 0};
  return get_ref(r, where);
}

/// A SHA-256 in hex, as the cache names files: 64 lowercase hex digits (a peer's string becomes a
/// file name: nothing else may pass).
bool sha256_hex_ok(const std::string& h) {
  return h.size() == 64 && std::all_of(h.begin(), h.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool rows_ok(int64_t rows) {
  return rows >= 0 && rows <= max_dim;
}

expected<worker_message> decode_loaded(const wpb::Loaded& o) {
  worker_loaded l;
  l.request = o.request();
  TROUPE_ASSIGN_OR_RETURN(sent_status result, get_status(o.error()));
  l.result = std::move(result.value);
  if (!l.result.is_ok()) return worker_message(std::move(l));
  l.replica = o.replica();
  for (const auto& t : o.inputs()) {
    TROUPE_ASSIGN_OR_RETURN(tensor_spec s, get_spec(t, "loaded input"));
    l.inputs.push_back(std::move(s));
  }
  for (const auto& t : o.outputs()) {
    TROUPE_ASSIGN_OR_RETURN(tensor_spec s, get_spec(t, "loaded output"));
    l.outputs.push_back(std::move(s));
  }
  if (!rows_ok(o.max_batch_size()))
    return bad("max_batch_size " + std::to_string(o.max_batch_size()));
  l.max_batch_size = o.max_batch_size();
  for (int64_t r : o.bucket_rows()) {
    if (r < 1 || r > max_dim) return bad("bucket rows " + std::to_string(r));
    l.bucket_rows.push_back(r);
  }
  for (const auto& w : o.warmup()) {
    if (!rows_ok(w.rows())) return bad("warm-up rows " + std::to_string(w.rows()));
    l.warmup.push_back({w.rows(), w.mean_us()});
  }
  l.pool_bytes = o.pool_bytes();
  for (const auto& b : o.buckets()) {
    bucket_layout x;
    if (b.rows() < 1 || b.rows() > max_dim) return bad("layout rows " + std::to_string(b.rows()));
    x.rows = b.rows();
    for (const auto& t : b.inputs()) {
      TROUPE_ASSIGN_OR_RETURN(tensor_info i, get_info(t, "layout input"));
      x.inputs.push_back(std::move(i));
    }
    for (const auto& t : b.outputs()) {
      TROUPE_ASSIGN_OR_RETURN(tensor_info i, get_info(t, "layout output"));
      x.outputs.push_back(std::move(i));
    }
    if (b.output_offsets_size() != b.outputs_size() ||
        b.output_row_bytes_size() != b.outputs_size())
      return bad("a layout lists " + std::to_string(b.outputs_size()) + " outputs, " +
                 std::to_string(b.output_offsets_size()) + " offsets and " +
                 std::to_string(b.output_row_bytes_size()) + " row sizes");
    x.output_offsets.assign(b.output_offsets().begin(), b.output_offsets().end());
    x.output_row_bytes.assign(b.output_row_bytes().begin(), b.output_row_bytes().end());
    x.block_bytes = b.block_bytes();
    l.buckets.push_back(std::move(x));
  }
  return worker_message(std::move(l));
}

expected<worker_message> decode_body(const wpb::WorkerMessage& m) {
  switch (m.body_case()) {
    case wpb::WorkerMessage::kHello: {
      const auto& o = m.hello();
      worker_hello h;
      h.worker_index = o.worker_index();
      h.pid = o.pid();
      h.device = o.device();
      h.node = o.node();
      h.incarnation = o.incarnation();
      h.memory_total_bytes = o.memory_total_bytes();
      h.memory_free_bytes = o.memory_free_bytes();
      h.lane = o.lane();
      return worker_message(std::move(h));
    }
    case wpb::WorkerMessage::kFileWanted: {
      const auto& o = m.file_wanted();
      if (!sha256_hex_ok(o.content_sha256())) return bad("file_wanted: not a SHA-256");
      return worker_message(worker_file_wanted{o.request(), o.content_sha256()});
    }
    case wpb::WorkerMessage::kFileData: {
      const auto& o = m.file_data();
      if (!sha256_hex_ok(o.content_sha256())) return bad("file_data: not a SHA-256");
      worker_file_data f;
      f.content_sha256 = o.content_sha256();
      TROUPE_ASSIGN_OR_RETURN(f.data, get_optional_ref(o.has_data(), o.data(), "file data"));
      TROUPE_ASSIGN_OR_RETURN(sent_status result, get_status(o.error()));
      f.result = std::move(result.value);
      if (f.result.is_ok() && f.data.where != data_ref::kind::frame)
        return bad("file_data: neither a frame nor an error");
      return worker_message(std::move(f));
    }
    case wpb::WorkerMessage::kBye:
      return worker_message(worker_bye{m.bye().reason()});
    case wpb::WorkerMessage::kLoad: {
      const auto& o = m.load();
      worker_load l;
      l.request = o.request();
      l.model = o.model();
      l.version = o.version();
      l.path = o.path();
      l.config_text = o.config_text();
      l.warmup_runs = o.warmup_runs();
      l.load_timeout_ms = o.load_timeout_ms();
      if (o.has_injected()) {
        TROUPE_ASSIGN_OR_RETURN(l.injected, get_fault(o.injected()));
      }
      if (!o.content_sha256().empty() && !sha256_hex_ok(o.content_sha256()))
        return bad("load: content_sha256 is not a SHA-256");
      l.content_sha256 = o.content_sha256();
      l.file_bytes = o.file_bytes();
      if (o.data_files_size() > max_data_files) return bad("load: too many data files");
      for (const auto& d : o.data_files()) {
        if (!data_file_name_ok(d.name()))
          return bad("load: a data file's name is not a relative path inside the model's folder");
        if (!sha256_hex_ok(d.content_sha256()))
          return bad("load: a data file's content_sha256 is not a SHA-256");
        l.data_files.push_back({d.name(), d.content_sha256(), d.bytes()});
      }
      return worker_message(std::move(l));
    }
    case wpb::WorkerMessage::kLoaded:
      return decode_loaded(m.loaded());
    case wpb::WorkerMessage::kUnload:
      return worker_message(worker_unload{m.unload().replica()});
    case wpb::WorkerMessage::kRun: {
      const auto& o = m.run();
      worker_run r;
      r.batch = o.batch();
      r.replica = o.replica();
      if (!rows_ok(o.rows()) || o.bucket_rows() < 1 || o.bucket_rows() > max_dim ||
          o.rows() > o.bucket_rows())
        return bad("run of " + std::to_string(o.rows()) + " rows in a bucket of " +
                   std::to_string(o.bucket_rows()));
      r.rows = o.rows();
      r.bucket_rows = o.bucket_rows();
      for (const auto& in : o.inputs()) {
        TROUPE_ASSIGN_OR_RETURN(data_ref ref, get_ref(in, "run input"));
        r.inputs.push_back(ref);
      }
      TROUPE_ASSIGN_OR_RETURN(r.outputs,
                              get_optional_ref(o.has_outputs(), o.outputs(), "run outputs"));
      r.output_bytes = o.output_bytes();
      if (r.outputs.where == data_ref::kind::none &&
          (r.output_bytes == 0 || r.output_bytes > max_tensor_bytes))
        return bad("run outputs: names no data");
      r.parts = o.parts();
      const bool has_parts = std::any_of(r.inputs.begin(), r.inputs.end(), [](const data_ref& in) {
        return in.where == data_ref::kind::parts;
      });
      if (has_parts != (r.parts > 0) || r.parts > max_run_parts)
        return bad("run of " + std::to_string(r.parts) + " parts" +
                   (has_parts ? "" : " and no input named by parts"));
      r.fault = o.fault();
      r.sleep_ms = o.sleep_ms();
      if (o.has_injected()) {
        TROUPE_ASSIGN_OR_RETURN(r.injected, get_fault(o.injected()));
      }
      return worker_message(std::move(r));
    }
    case wpb::WorkerMessage::kDone: {
      const auto& o = m.done();
      worker_done d;
      d.batch = o.batch();
      TROUPE_ASSIGN_OR_RETURN(sent_status result, get_status(o.error()));
      d.result = std::move(result.value);
      d.compute_us = o.compute_us();
      if (!rows_ok(o.bucket_rows()))
        return bad("done bucket rows " + std::to_string(o.bucket_rows()));
      d.bucket_rows = o.bucket_rows();
      for (const auto& x : o.outputs()) {
        batch::output_layout l;
        TROUPE_ASSIGN_OR_RETURN(l.info, get_info(x.info(), "done output"));
        l.offset = x.offset();
        l.row_bytes = x.row_bytes();
        d.outputs.push_back(std::move(l));
      }
      TROUPE_ASSIGN_OR_RETURN(d.block, get_optional_ref(o.has_block(), o.block(), "done block"));
      return worker_message(std::move(d));
    }
    case wpb::WorkerMessage::kRunPart: {
      const auto& o = m.run_part();
      worker_run_part p;
      p.batch = o.batch();
      p.input = o.input();
      p.input_bytes = o.input_bytes();
      p.offset = o.offset();
      p.parts = o.parts();
      if (p.parts == 0 || p.parts > max_run_parts)
        return bad("run_part of a run of " + std::to_string(p.parts) + " parts");
      if (p.input_bytes == 0 || p.input_bytes > max_tensor_bytes || p.offset >= p.input_bytes)
        return bad("run_part at " + std::to_string(p.offset) + " of an input of " +
                   std::to_string(p.input_bytes) + " bytes");
      if (!o.has_data() || o.data().where_case() != wpb::DataRef::kFrame)
        return bad("run_part: its bytes are not a frame");
      p.data = data_ref{data_ref::kind::frame, {}, o.data().frame()};
      return worker_message(std::move(p));
    }
    case wpb::WorkerMessage::kHeartbeat:
      return worker_message(
          worker_heartbeat{m.heartbeat().sequence(), m.heartbeat().memory_free_bytes()});
    default:
      return bad("no body (an unknown message?)");
  }
}

}  // namespace

std::string encode_worker_message(const worker_message& m) {
  wpb::WorkerMessage out;
  out.set_protocol_version(worker_protocol_version);
  std::visit(encoder{out}, m);
  return out.SerializeAsString();
}

expected<worker_message> decode_worker_message(const void* data, size_t bytes) {
  if (bytes > static_cast<size_t>(std::numeric_limits<int>::max()))
    return bad("an envelope of " + std::to_string(bytes) + " bytes");
  wpb::WorkerMessage m;
  if (!m.ParseFromArray(data, static_cast<int>(bytes))) return bad("not a worker message");
  if (m.protocol_version() != worker_protocol_version)
    return unsupported("worker protocol version " + std::to_string(m.protocol_version()) +
                       "; this troupe speaks version " + std::to_string(worker_protocol_version));
  return decode_body(m);
}

}  // namespace troupe::cluster
