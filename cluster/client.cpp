#include "cluster/client.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <optional>
#include <sstream>
#include <string_view>
#include <unordered_map>
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
  /// One node: its socket and the monitor that says whether it is connected.
  struct endpoint {
    std::string address;
    zmq::socket_t socket;
    zmq::socket_t monitor;  // PAIR on the socket's monitor (inproc); only with several endpoints
    bool connected = false;
    // Heartbeats (several endpoints): whether it answers, when it last did, the probe out.
    bool responsive = true;
    std::chrono::steady_clock::time_point last_heard{};
    std::optional<std::chrono::steady_clock::time_point> probe_sent;
  };
  /// A connected node is probed when it said nothing for this long, and passed over (its
  /// requests sent again elsewhere) when it answered nothing for heartbeat_timeout: hung, or its
  /// host cut off, with the connection still open. The Python client's defaults.
  static constexpr std::chrono::milliseconds heartbeat{1000};
  static constexpr std::chrono::milliseconds heartbeat_timeout{3000};
  static constexpr std::string_view heartbeat_id = "troupe-client.heartbeat.";
  /// An inference request sent and not answered yet (several endpoints only): kept to be sent
  /// again where its endpoint is lost.
  struct in_flight {
    zmq::message_t envelope;
    std::vector<zmq::message_t> tensors;  // share the caller's bytes (reference counted)
    int endpoint = -1;                    // -1: waiting for a connected endpoint
  };

  zmq::context_t ctx{1};
  std::vector<endpoint> endpoints;
  std::vector<zmq::message_t> frames;
  std::unordered_map<std::string, in_flight> pending;
  std::deque<std::string> unsent;  // ids of pending requests without an endpoint, in order
  // The envelope of the reply in `frames`, parsed once (reply_envelope).
  pb::ServerMessage reply;
  bool reply_parsed = false, reply_ok = false;
  uint64_t failovers = 0;
  uint64_t probes = 0;
  std::vector<zmq_pollitem_t> items;  // the sockets, then the monitors (receive_frames)

  bool tracking() const { return endpoints.size() > 1; }

  static status send_on(zmq::socket_t& socket, zmq::message_t& envelope,
                        std::vector<zmq::message_t>& tensors, bool copy_tensors) {
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

  /// The first connected endpoint, in the order given; -1 when none is.
  int target() const {
    for (size_t i = 0; i < endpoints.size(); ++i)
      if (endpoints[i].connected && endpoints[i].responsive) return static_cast<int>(i);
    return -1;
  }

  /// Sends an inference request `id`: on the one socket, or (several endpoints) tracked and sent
  /// to the first connected endpoint, else kept until one connects.
  status send_request(const std::string& id, zmq::message_t& envelope,
                      std::vector<zmq::message_t>& tensors, bool copy_tensors) {
    if (!tracking()) return send_on(endpoints[0].socket, envelope, tensors, copy_tensors);
    in_flight r;
    r.envelope.copy(envelope);
    for (auto& t : tensors) {
      r.tensors.emplace_back();
      r.tensors.back().copy(t);
    }
    pending.insert_or_assign(id, std::move(r));
    unsent.push_back(id);
    poll_monitors();
    return send_unsent();
  }

  /// Sends the requests that wait for an endpoint to the first connected one.
  status send_unsent() {
    const int to = target();
    if (to < 0) return status::ok();
    for (; !unsent.empty(); unsent.pop_front()) {
      auto it = pending.find(unsent.front());
      if (it == pending.end() || it->second.endpoint >= 0) continue;  // answered meanwhile
      in_flight& r = it->second;
      zmq::message_t envelope;
      envelope.copy(r.envelope);
      TROUPE_RETURN_IF_ERROR(send_on(endpoints[static_cast<size_t>(to)].socket, envelope,
                                     r.tensors, true));
      r.endpoint = to;
    }
    return status::ok();
  }

  /// Reads the monitors' events: connections made and lost. A lost endpoint's requests wait for
  /// the next send_unsent.
  void poll_monitors() {
    for (size_t i = 0; i < endpoints.size(); ++i) {
      endpoint& e = endpoints[i];
      if (!e.monitor) continue;
      for (;;) {
        zmq::message_t event, address;
        try {
          if (!e.monitor.recv(event, zmq::recv_flags::dontwait)) break;
          if (event.more()) (void)e.monitor.recv(address, zmq::recv_flags::none);
        } catch (const zmq::error_t&) {
          break;
        }
        if (event.size() < sizeof(uint16_t)) continue;
        uint16_t what = 0;
        std::memcpy(&what, event.data(), sizeof(what));
        if (what == ZMQ_EVENT_CONNECTED) {
          e.connected = e.responsive = true;
          e.last_heard = std::chrono::steady_clock::now();
          e.probe_sent.reset();
        }
        if (what == ZMQ_EVENT_DISCONNECTED) {
          e.connected = false;
          lose(i);
        }
      }
    }
  }

  /// What waited on endpoint `i` waits for the next send_unsent.
  void lose(size_t i) {
    for (auto& [id, r] : pending)
      if (r.endpoint == static_cast<int>(i)) {
        r.endpoint = -1;
        unsent.push_back(id);
        ++failovers;
      }
  }

  /// Probes the connected endpoints that were silent for `heartbeat`; passes over those that
  /// answered nothing for heartbeat_timeout.
  status heartbeats() {
    const auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < endpoints.size(); ++i) {
      endpoint& e = endpoints[i];
      if (!e.connected) continue;
      if (!e.probe_sent && now - e.last_heard >= heartbeat) {
        pb::ClientMessage probe;
        probe.set_id(std::string(heartbeat_id) + std::to_string(i) + "." + std::to_string(++probes));
        probe.mutable_health();
        zmq::message_t m = serialize(probe);
        std::vector<zmq::message_t> none;
        TROUPE_RETURN_IF_ERROR(send_on(e.socket, m, none, false));
        e.probe_sent = now;
      } else if (e.probe_sent && e.responsive &&
                 now - std::max(*e.probe_sent, e.last_heard) >= heartbeat_timeout) {
        e.responsive = false;
        lose(i);
      }
    }
    return status::ok();
  }

  /// One whole reply, or false after `timeout`. Several endpoints: polls them all and their
  /// monitors, sends again what a lost endpoint held, and skips replies to requests answered
  /// already.
  expected<bool> receive_frames(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    if (items.empty()) {  // once: the load generator calls this for every reply
      for (auto& e : endpoints) items.push_back({e.socket.handle(), 0, ZMQ_POLLIN, 0});
      for (auto& e : endpoints)
        if (e.monitor) items.push_back({e.monitor.handle(), 0, ZMQ_POLLIN, 0});
    }
    try {
      for (;;) {
        const auto left = std::max(std::chrono::milliseconds(0),
                                   std::chrono::duration_cast<std::chrono::milliseconds>(
                                       deadline - std::chrono::steady_clock::now()));
        for (auto& item : items) item.revents = 0;
        // Several endpoints: wake at least every 100 ms for the heartbeats.
        const int ready =
            zmq::poll(items.data(), items.size(),
                      tracking() ? std::min(left, std::chrono::milliseconds(100)) : left);
        if (ready == 0 && !tracking()) return false;
        if (tracking()) {
          poll_monitors();
          TROUPE_RETURN_IF_ERROR(heartbeats());
          TROUPE_RETURN_IF_ERROR(send_unsent());
        }
        for (size_t i = 0; i < endpoints.size(); ++i) {
          if (!(items[i].revents & ZMQ_POLLIN)) continue;
          size_t n = 0;
          bool more = true;
          while (more) {
            if (n == frames.size()) frames.emplace_back();
            if (!endpoints[i].socket.recv(frames[n], zmq::recv_flags::none))
              return io_error("receive failed");
            more = frames[n].more();
            ++n;
          }
          frames.resize(n);
          reply_parsed = false;
          if (!tracking() || claim_reply(i)) return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) return false;
      }
    } catch (const zmq::error_t& e) {
      return io_error(std::string("receive failed: ") + e.what());
    }
  }

  /// Several endpoints: true when the reply in `frames` (from endpoint `from`) answers a request
  /// still waiting (it is then no longer), or is not an inference reply; false for a second
  /// answer and for heartbeat replies. Anything from a node says it is alive.
  bool claim_reply(size_t from) {
    endpoint& e = endpoints[from];
    e.last_heard = std::chrono::steady_clock::now();
    e.responsive = true;
    const pb::ServerMessage* m = reply_envelope();
    if (!m) return true;  // the caller reports it
    if (m->id().rfind(heartbeat_id, 0) == 0) {
      e.probe_sent.reset();
      return false;
    }
    if (!m->has_infer() && !m->has_error()) return true;
    return pending.erase(m->id()) > 0 || (m->has_error() && m->id().empty());
  }

  /// The envelope of the reply in `frames`, parsed at its first use; null when it is not a
  /// troupe.v1.ServerMessage.
  const pb::ServerMessage* reply_envelope() {
    if (!reply_parsed) {
      const size_t env = frames.size() > 1 && frames[0].size() == 0 ? 1 : 0;
      reply_ok = !frames.empty() &&
                 reply.ParseFromArray(frames[env].data(), static_cast<int>(frames[env].size()));
      reply_parsed = true;
    }
    return reply_ok ? &reply : nullptr;
  }

  expected<pb::ServerMessage> receive_message(std::chrono::milliseconds timeout) {
    TROUPE_ASSIGN_OR_RETURN(bool got, receive_frames(timeout));
    if (!got)
      return make_error(error_code::deadline_exceeded,
                        "no reply within " + std::to_string(timeout.count()) + " ms");
    const pb::ServerMessage* m = reply_envelope();
    if (!m) return io_error("the server's reply is not a troupe.v1.ServerMessage");
    return *m;
  }

  /// Metadata and health go to one node: the first connected one, waited for up to `timeout`
  /// (several endpoints: the monitors' events); the first given when none connects in time.
  zmq::socket_t& control_socket(std::chrono::milliseconds timeout) {
    if (tracking()) {
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      std::vector<zmq_pollitem_t> monitors;
      for (auto& e : endpoints) monitors.push_back({e.monitor.handle(), 0, ZMQ_POLLIN, 0});
      poll_monitors();
      while (target() < 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        try {
          (void)zmq::poll(monitors.data(), monitors.size(), left);
        } catch (const zmq::error_t&) {
          break;
        }
        poll_monitors();
      }
    }
    const int to = target();
    return endpoints[static_cast<size_t>(std::max(to, 0))].socket;
  }
};

client::client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
client::~client() = default;

expected<std::unique_ptr<client>> client::connect(const std::string& address) {
  auto p = std::make_unique<impl>();
  std::vector<std::string> addresses;
  std::istringstream list(address);
  for (std::string a; std::getline(list, a, ',');) {
    const size_t first = a.find_first_not_of(' '), last = a.find_last_not_of(' ');
    if (first != std::string::npos) addresses.push_back(a.substr(first, last - first + 1));
  }
  if (addresses.empty()) return invalid_argument("no endpoint to connect to in '" + address + "'");
  static std::atomic<uint64_t> monitors{0};
  for (const std::string& a : addresses) {
    impl::endpoint e{a, zmq::socket_t(p->ctx, zmq::socket_type::dealer), zmq::socket_t(), false};
    try {
      e.socket.set(zmq::sockopt::linger, 0);
      e.socket.set(zmq::sockopt::sndhwm, 0);
      e.socket.set(zmq::sockopt::rcvhwm, 0);
      if (addresses.size() > 1) {
        // Before connect(): the first connection is an event too.
        const std::string name = "inproc://troupe-client-monitor-" + std::to_string(++monitors);
        if (zmq_socket_monitor(e.socket.handle(), name.c_str(),
                               ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
          return io_error("cannot monitor the connection to '" + a + "'");
        e.monitor = zmq::socket_t(p->ctx, zmq::socket_type::pair);
        e.monitor.connect(name);
      }
      e.socket.connect(a);
    } catch (const zmq::error_t& err) {
      return invalid_argument("cannot connect to '" + a + "': " + err.what());
    }
    p->endpoints.push_back(std::move(e));
  }
  return std::unique_ptr<client>(new client(std::move(p)));
}

uint64_t client::failovers() const {
  return impl_->failovers;
}

status client::send(const infer_request& r) {
  pb::ClientMessage env;
  encode_envelope(r, env);
  zmq::message_t e = serialize(env);
  std::vector<zmq::message_t> tensors;
  for (const auto& [name, t] : r.inputs) tensors.emplace_back(t.raw(), t.bytes());  // copies
  return impl_->send_request(r.id, e, tensors, false);
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
  return impl_->send_request(id, e, const_cast<std::vector<zmq::message_t>&>(p.frames), true);
}

expected<std::optional<infer_reply>> client::receive(std::chrono::milliseconds timeout,
                                                     bool decode_outputs) {
  TROUPE_ASSIGN_OR_RETURN(bool got, impl_->receive_frames(timeout));
  if (!got) return std::optional<infer_reply>();
  auto& frames = impl_->frames;
  const size_t env = frames.size() > 1 && frames[0].size() == 0 ? 1 : 0;
  const pb::ServerMessage* parsed = impl_->reply_envelope();
  if (!parsed) return io_error("the server's reply is not a troupe.v1.ServerMessage");
  const pb::ServerMessage& m = *parsed;
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
  TROUPE_RETURN_IF_ERROR(impl::send_on(impl_->control_socket(timeout), e, none, false));
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
  TROUPE_RETURN_IF_ERROR(impl::send_on(impl_->control_socket(timeout), e, none, false));
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
