#include "cluster/client.hpp"

#include <cstring>
#include <zmq.hpp>

#include "proto/troupe.pb.h"

namespace troupe::cluster {

namespace pb = troupe::v1;

class client::prepared {
 public:
  pb::ClientMessage envelope;
  std::vector<zmq::message_t> frames;
};

namespace {

status from_proto(const pb::Error& e) {
  const auto code = static_cast<error_code>(e.code());
  if (code == error_code::ok)
    return internal_error("server sent an error with code OK: " + e.message());
  return status(code, e.message());
}

void encode_envelope(const infer_request& r, pb::ClientMessage& env) {
  pb::InferRequest* q = env.mutable_infer();
  q->set_model(r.model);
  q->set_version(r.version);
  q->set_id(r.id);
  q->set_priority(r.priority);
  q->set_timeout_us(r.timeout_us);
  q->set_routing_key(r.routing_key);
  for (const auto& [k, v] : r.parameters) (*q->mutable_parameters())[k] = v;
  for (const auto& name : r.outputs) q->add_outputs(name);
  for (const auto& [name, t] : r.inputs) {
    pb::TensorDesc* d = q->add_inputs();
    d->set_name(name);
    d->set_dtype(static_cast<pb::DataType>(dtype_to_onnx(t.type())));
    for (int64_t x : t.shape()) d->add_shape(x);
  }
}

zmq::message_t serialize(const google::protobuf::MessageLite& m) {
  zmq::message_t out(m.ByteSizeLong());
  m.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(out.data()));
  return out;
}

}  // namespace

class client::impl {
 public:
  zmq::context_t ctx{1};
  zmq::socket_t socket{ctx, zmq::socket_type::dealer};
  std::vector<zmq::message_t> frames;

  status send_frames(zmq::message_t& envelope, std::vector<zmq::message_t>& tensors,
                     bool copy_tensors) {
    try {
      socket.send(envelope, tensors.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
      for (size_t i = 0; i < tensors.size(); ++i) {
        const auto flags =
            i + 1 < tensors.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        if (copy_tensors) {
          zmq::message_t shared;
          shared.copy(tensors[i]);  // shares the bytes (reference counted), no copy of them
          socket.send(shared, flags);
        } else {
          socket.send(tensors[i], flags);
        }
      }
    } catch (const zmq::error_t& e) {
      return io_error(std::string("send failed: ") + e.what());
    }
    return status::ok();
  }

  /// One whole reply, or nullopt after `timeout`.
  expected<bool> receive_frames(std::chrono::milliseconds timeout) {
    zmq_pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, timeout) == 0) return false;
      size_t n = 0;
      bool more = true;
      while (more) {
        if (n == frames.size()) frames.emplace_back();
        if (!socket.recv(frames[n], zmq::recv_flags::none)) return io_error("receive failed");
        more = frames[n].more();
        ++n;
      }
      frames.resize(n);
    } catch (const zmq::error_t& e) {
      return io_error(std::string("receive failed: ") + e.what());
    }
    return true;
  }

  expected<pb::ServerMessage> receive_message(std::chrono::milliseconds timeout) {
    TROUPE_ASSIGN_OR_RETURN(bool got, receive_frames(timeout));
    if (!got)
      return make_error(error_code::deadline_exceeded,
                        "no reply within " + std::to_string(timeout.count()) + " ms");
    pb::ServerMessage m;
    size_t env = frames.size() > 1 && frames[0].size() == 0 ? 1 : 0;
    if (frames.empty() ||
        !m.ParseFromArray(frames[env].data(), static_cast<int>(frames[env].size())))
      return io_error("the server's reply is not a troupe.v1.ServerMessage");
    return m;
  }
};

client::client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
client::~client() = default;

expected<std::unique_ptr<client>> client::connect(const std::string& address) {
  auto p = std::make_unique<impl>();
  try {
    p->socket.set(zmq::sockopt::linger, 0);
    p->socket.set(zmq::sockopt::sndhwm, 0);
    p->socket.set(zmq::sockopt::rcvhwm, 0);
    p->socket.connect(address);
  } catch (const zmq::error_t& e) {
    return invalid_argument("cannot connect to '" + address + "': " + e.what());
  }
  return std::unique_ptr<client>(new client(std::move(p)));
}

status client::send(const infer_request& r) {
  pb::ClientMessage env;
  encode_envelope(r, env);
  zmq::message_t e = serialize(env);
  std::vector<zmq::message_t> tensors;
  for (const auto& [name, t] : r.inputs) tensors.emplace_back(t.raw(), t.bytes());  // copies
  return impl_->send_frames(e, tensors, false);
}

expected<std::shared_ptr<client::prepared>> client::prepare(const infer_request& r) {
  auto p = std::make_shared<prepared>();
  encode_envelope(r, p->envelope);
  for (const auto& [name, t] : r.inputs) p->frames.emplace_back(t.raw(), t.bytes());
  return p;
}

status client::send(const prepared& p, const std::string& id) {
  // The envelope is small: re-encoding it per id is cheaper than keeping one per request.
  thread_local pb::ClientMessage env;
  env.CopyFrom(p.envelope);
  env.mutable_infer()->set_id(id);
  zmq::message_t e = serialize(env);
  return impl_->send_frames(e, const_cast<std::vector<zmq::message_t>&>(p.frames), true);
}

expected<std::optional<infer_reply>> client::receive(std::chrono::milliseconds timeout,
                                                     bool decode_outputs) {
  TROUPE_ASSIGN_OR_RETURN(bool got, impl_->receive_frames(timeout));
  if (!got) return std::optional<infer_reply>();
  auto& frames = impl_->frames;
  const size_t env = frames.size() > 1 && frames[0].size() == 0 ? 1 : 0;
  pb::ServerMessage m;
  if (frames.empty() || !m.ParseFromArray(frames[env].data(), static_cast<int>(frames[env].size())))
    return io_error("the server's reply is not a troupe.v1.ServerMessage");
  infer_reply out;
  out.id = m.id();
  if (m.has_error()) {
    out.result = from_proto(m.error());
    return std::optional<infer_reply>(std::move(out));
  }
  if (!m.has_infer()) return io_error("expected an infer reply, got another kind");
  const pb::InferResponse& r = m.infer();
  out.model = r.model();
  out.version = r.version();
  out.queue_us = r.timings().queue_us();
  out.compute_us = r.timings().compute_us();
  out.total_us = r.timings().total_us();
  out.batch_size = r.batch_size();
  if (static_cast<size_t>(r.outputs_size()) != frames.size() - env - 1)
    return io_error("the reply lists " + std::to_string(r.outputs_size()) +
                    " outputs but carries " + std::to_string(frames.size() - env - 1) +
                    " tensor frames");
  if (decode_outputs) {
    for (int i = 0; i < r.outputs_size(); ++i) {
      const pb::TensorDesc& d = r.outputs(i);
      TROUPE_ASSIGN_OR_RETURN(dtype type, dtype_from_onnx(d.dtype()));
      shape_t shape(d.shape().begin(), d.shape().end());
      const zmq::message_t& f = frames[env + 1 + static_cast<size_t>(i)];
      tensor t = tensor::allocate(type, shape);
      if (t.bytes() != f.size())
        return io_error("output '" + d.name() + "' frame has " + std::to_string(f.size()) +
                        " bytes, expected " + std::to_string(t.bytes()));
      if (f.size()) std::memcpy(t.raw(), f.data(), f.size());
      out.outputs.emplace_back(d.name(), std::move(t));
    }
  }
  return std::optional<infer_reply>(std::move(out));
}

expected<infer_reply> client::infer(const infer_request& r, std::chrono::milliseconds timeout) {
  TROUPE_RETURN_IF_ERROR(send(r));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    TROUPE_ASSIGN_OR_RETURN(auto reply, receive(left, true));
    if (!reply) break;
    if (reply->id == r.id) return std::move(*reply);
  }
  return make_error(error_code::deadline_exceeded,
                    "no reply within " + std::to_string(timeout.count()) + " ms");
}

expected<model_metadata> client::metadata(const std::string& model, int64_t version,
                                          std::chrono::milliseconds timeout) {
  pb::ClientMessage env;
  env.mutable_metadata()->set_model(model);
  env.mutable_metadata()->set_version(version);
  zmq::message_t e = serialize(env);
  std::vector<zmq::message_t> none;
  TROUPE_RETURN_IF_ERROR(impl_->send_frames(e, none, false));
  TROUPE_ASSIGN_OR_RETURN(pb::ServerMessage m, impl_->receive_message(timeout));
  if (m.has_error()) return from_proto(m.error());
  if (!m.has_metadata()) return io_error("expected a metadata reply");
  model_metadata out;
  const auto& md = m.metadata();
  out.name = md.name();
  out.version = md.version();
  out.versions.assign(md.versions().begin(), md.versions().end());
  out.max_batch_size = md.max_batch_size();
  out.state = md.state();
  auto specs = [](const auto& in, std::vector<tensor_spec_info>& to) -> status {
    for (const auto& s : in) {
      TROUPE_ASSIGN_OR_RETURN(dtype t, dtype_from_onnx(s.dtype()));
      to.push_back({s.name(), t, std::vector<int64_t>(s.shape().begin(), s.shape().end())});
    }
    return status::ok();
  };
  TROUPE_RETURN_IF_ERROR(specs(md.inputs(), out.inputs));
  TROUPE_RETURN_IF_ERROR(specs(md.outputs(), out.outputs));
  return out;
}

expected<health_status> client::health(std::chrono::milliseconds timeout) {
  pb::ClientMessage env;
  env.mutable_health();
  zmq::message_t e = serialize(env);
  std::vector<zmq::message_t> none;
  TROUPE_RETURN_IF_ERROR(impl_->send_frames(e, none, false));
  TROUPE_ASSIGN_OR_RETURN(pb::ServerMessage m, impl_->receive_message(timeout));
  if (m.has_error()) return from_proto(m.error());
  if (!m.has_health()) return io_error("expected a health reply");
  health_status h;
  h.live = m.health().live();
  h.ready = m.health().ready();
  h.draining = m.health().draining();
  h.reason = m.health().reason();
  for (const auto& v : m.health().models()) {
    std::string line =
        v.model() + "/" + std::to_string(v.version()) + ": " + pb::ModelState_Name(v.state());
    if (v.has_error() && v.error().code() != pb::OK)
      line += " (" + from_proto(v.error()).to_string() + ")";
    h.models.push_back(std::move(line));
  }
  return h;
}

}  // namespace troupe::cluster
