#include "cluster/management_client.hpp"

#include <zmq.hpp>

#include "cluster/fault_codec.hpp"
#include "proto/troupe.pb.h"

namespace troupe::cluster {

namespace pb = troupe::v1;

class management_client::impl {
 public:
  zmq::context_t ctx{1};
  zmq::socket_t socket{ctx, zmq::socket_type::dealer};
  std::string endpoint;
  std::string token;

  /// Sends `q` (with the token) and waits for its reply; the reply's error as a status.
  expected<pb::ControlReply> call(pb::ControlRequest& q, std::chrono::milliseconds timeout) {
    q.set_token(token);
    const std::string bytes = q.SerializeAsString();
    try {
      socket.send(zmq::buffer(bytes), zmq::send_flags::none);
      zmq::pollitem_t item{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, timeout);
      if (!(item.revents & ZMQ_POLLIN))
        return make_error(error_code::deadline_exceeded,
                          "no answer from the management socket at " + endpoint + " within " +
                              std::to_string(timeout.count()) +
                              " ms (is management_listen set on the node?)");
      zmq::message_t m;
      if (!socket.recv(m)) return io_error("management socket: receive failed");
      pb::ControlReply r;
      if (!r.ParseFromArray(m.data(), static_cast<int>(m.size())))
        return io_error("management socket: the reply is not a ControlReply");
      if (r.has_error() && r.error().code() != pb::ErrorCode(0))
        return status(static_cast<error_code>(r.error().code()), r.error().message());
      return r;
    } catch (const zmq::error_t& e) {
      return io_error(std::string("management socket: ") + e.what());
    }
  }
};

expected<std::unique_ptr<management_client>> management_client::connect(
    const std::string& endpoint, std::string token) {
  auto p = std::make_unique<impl>();
  p->endpoint = endpoint;
  p->token = std::move(token);
  try {
    p->socket.set(zmq::sockopt::linger, 0);
    p->socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return invalid_argument("cannot connect to '" + endpoint + "': " + e.what());
  }
  return std::unique_ptr<management_client>(new management_client(std::move(p)));
}

management_client::management_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
management_client::~management_client() = default;

expected<std::vector<model_index_line>> management_client::index(
    bool ready_only, std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  q.mutable_index()->set_ready_only(ready_only);
  TROUPE_ASSIGN_OR_RETURN(pb::ControlReply r, impl_->call(q, timeout));
  std::vector<model_index_line> out;
  for (const auto& m : r.models()) out.push_back({m.name(), m.version(), m.state(), m.reason()});
  return out;
}

status management_client::load(const std::string& name, const std::string& config,
                               std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  q.mutable_load()->set_name(name);
  q.mutable_load()->set_config(config);
  auto r = impl_->call(q, timeout);
  return r ? status::ok() : r.error();
}

status management_client::unload(const std::string& name, std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  q.mutable_unload()->set_name(name);
  auto r = impl_->call(q, timeout);
  return r ? status::ok() : r.error();
}

expected<traffic_state> management_client::traffic(const std::string& name, traffic_op op,
                                                   int64_t version,
                                                   const std::map<int64_t, uint32_t>& weights,
                                                   std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  auto* t = q.mutable_traffic();
  t->set_name(name);
  t->set_version(version);
  for (const auto& [v, w] : weights) (*t->mutable_weights())[v] = w;
  switch (op) {
    case traffic_op::show: t->set_kind(pb::Traffic::SHOW); break;
    case traffic_op::set: t->set_kind(pb::Traffic::SET); break;
    case traffic_op::clear: t->set_kind(pb::Traffic::CLEAR); break;
    case traffic_op::promote: t->set_kind(pb::Traffic::PROMOTE); break;
    case traffic_op::rollback: t->set_kind(pb::Traffic::ROLLBACK); break;
  }
  TROUPE_ASSIGN_OR_RETURN(pb::ControlReply r, impl_->call(q, timeout));
  traffic_state out;
  for (const auto& [v, w] : r.traffic().weights()) out.weights[v] = w;
  out.overridden = r.traffic().overridden();
  out.note = r.traffic().note();
  return out;
}

expected<uint64_t> management_client::inject_fault(const serving::fault_rule& rule,
                                                   std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  encode_fault_rule(rule, *q.mutable_inject_fault());
  TROUPE_ASSIGN_OR_RETURN(pb::ControlReply r, impl_->call(q, timeout));
  return r.fault_id();
}

expected<std::vector<serving::fault_rule_state>> management_client::list_faults(
    std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  q.mutable_list_faults();
  TROUPE_ASSIGN_OR_RETURN(pb::ControlReply r, impl_->call(q, timeout));
  std::vector<serving::fault_rule_state> out;
  for (const auto& f : r.faults()) {
    auto s = decode_fault_rule_state(f);
    if (!s) return io_error("management socket: a listed fault rule: " + s.error().message());
    out.push_back(std::move(*s));
  }
  return out;
}

status management_client::remove_fault(uint64_t id, std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  q.mutable_remove_fault()->set_id(id);
  auto r = impl_->call(q, timeout);
  return r ? status::ok() : r.error();
}

expected<uint64_t> management_client::clear_faults(std::chrono::milliseconds timeout) {
  pb::ControlRequest q;
  q.mutable_clear_faults();
  TROUPE_ASSIGN_OR_RETURN(pb::ControlReply r, impl_->call(q, timeout));
  return r.faults_cleared();
}

}  // namespace troupe::cluster
