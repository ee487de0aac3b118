#include "cluster/management_socket.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "cluster/fault_codec.hpp"
#include "proto/troupe.pb.h"

namespace troupe::cluster {

namespace pb = troupe::v1;

namespace {

/// How often the socket's thread looks at the replies the CAF threads queued, when no request
/// arrives meanwhile: a management reply waits at most this long.
constexpr std::chrono::milliseconds kReplyPoll(10);

void set_error(pb::ControlReply& r, const status& s) {
  r.mutable_error()->set_code(static_cast<pb::ErrorCode>(static_cast<int>(s.code())));
  r.mutable_error()->set_message(s.message());
}

}  // namespace

bool is_loopback_endpoint(const std::string& e) {
  for (const char* p : {"ipc://", "inproc://", "tcp://127.", "tcp://localhost:", "tcp://[::1]:"})
    if (e.rfind(p, 0) == 0) return true;
  return false;
}

expected<std::string> read_token_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return not_found("management token file '" + path + "' cannot be opened");
  struct stat st {};
  std::string text;
  status s = status::ok();
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    s = invalid_argument("management token file '" + path + "' is not a regular file");
  } else if ((st.st_mode & 077) != 0) {
    s = invalid_argument("management token file '" + path +
                         "' may be read by others: chmod 600 it");
  } else if (st.st_size > 4096) {
    s = invalid_argument("management token file '" + path + "' is larger than 4 KiB");
  } else {
    text.resize(static_cast<size_t>(st.st_size));
    if (::read(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
      s = io_error("cannot read management token file '" + path + "'");
  }
  ::close(fd);
  if (!s.is_ok()) return s;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos)
    return invalid_argument("management token file '" + path + "' is empty");
  text = text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
  return text;
}

class management_socket::impl {
 public:
  impl(management_options o, const actors::model_control& control,
       const actors::fault_control& faults)
      : options_(std::move(o)), control_(control), faults_(faults) {}

  status start() {
    if (!control_.requires_token() && !is_loopback_endpoint(options_.listen))
      return invalid_argument("management_listen '" + options_.listen +
                              "' reaches beyond this host: set management_token_file (a mode "
                              "0600 file) or listen on tcp://127.0.0.1");
    try {
      socket_.set(zmq::sockopt::linger, 0);
      socket_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.max_message_bytes));
      socket_.set(zmq::sockopt::router_mandatory, 0);
      socket_.bind(options_.listen);
      endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return io_error("management socket: cannot bind '" + options_.listen + "': " + e.what());
    }
    thread_ = std::thread([this] { loop(); });
    return status::ok();
  }

  ~impl() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(outbox_->mutex);
    outbox_->open = false;  // operations still running answer into nothing
  }

  const std::string& endpoint() const { return endpoint_; }

 private:
  /// Replies from CAF threads, sent by the socket's thread. Shared with the callbacks, which may
  /// run after the socket is gone.
  struct outbox {
    std::mutex mutex;
    bool open = true;
    std::deque<std::pair<std::string, std::string>> replies;  // (peer identity, ControlReply)
  };

  void loop() {
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    while (!stop_.load()) {
      try {
        zmq::poll(&item, 1, kReplyPoll);
        if (item.revents & ZMQ_POLLIN) receive_one();
        send_queued();
      } catch (const zmq::error_t& e) {
        spdlog::error("management socket: {}", e.what());
      }
    }
  }

  void receive_one() {
    std::vector<zmq::message_t> frames;
    for (;;) {
      zmq::message_t m;
      if (!socket_.recv(m, zmq::recv_flags::dontwait)) break;
      const bool more = m.more();
      frames.push_back(std::move(m));
      if (!more) break;
    }
    if (frames.empty()) return;
    const std::string peer = frames.front().to_string();
    pb::ControlReply reply;
    pb::ControlRequest q;
    // [identity, payload], or [identity, "", payload] from a REQ socket.
    const zmq::message_t& payload = frames.back();
    if (frames.size() < 2 || frames.size() > 3 ||
        !q.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      set_error(reply, invalid_argument("not a ControlRequest (proto/troupe.proto)"));
      return answer(peer, reply);
    }
    if (!control_.token_matches(q.token())) {
      spdlog::warn("management socket: a request with a wrong or missing token was refused");
      set_error(reply, make_error(error_code::invalid_argument,
                                  "the management token is missing or wrong"));
      return answer(peer, reply);
    }
    auto box = outbox_;
    auto post = [box, peer](const pb::ControlReply& r) {
      std::lock_guard<std::mutex> lock(box->mutex);
      if (box->open) box->replies.emplace_back(peer, r.SerializeAsString());
    };
    switch (q.op_case()) {
      case pb::ControlRequest::kIndex: {
        const bool ready_only = q.index().ready_only();
        control_.index([post, ready_only](expected<actors::model_index> idx) {
          pb::ControlReply r;
          if (!idx) {
            set_error(r, idx.error());
          } else {
            for (const auto& e : *idx) {
              if (ready_only && e.state != "READY") continue;
              auto* m = r.add_models();
              m->set_name(e.name);
              m->set_version(e.version);
              m->set_state(e.state);
              m->set_reason(e.reason);
            }
          }
          post(r);
        });
        return;
      }
      case pb::ControlRequest::kLoad:
        control_.load(q.load().name(), q.load().config(), [post](status s) {
          pb::ControlReply r;
          if (!s.is_ok()) set_error(r, s);
          post(r);
        });
        return;
      case pb::ControlRequest::kUnload:
        control_.unload(q.unload().name(), [post](status s) {
          pb::ControlReply r;
          if (!s.is_ok()) set_error(r, s);
          post(r);
        });
        return;
      case pb::ControlRequest::kTraffic: {
        actors::traffic_change c;
        c.model = q.traffic().name();
        c.version = q.traffic().version();
        for (const auto& [v, w] : q.traffic().weights()) c.weights[v] = w;
        switch (q.traffic().kind()) {
          case pb::Traffic::SET: c.what = actors::traffic_change::kind::set; break;
          case pb::Traffic::CLEAR: c.what = actors::traffic_change::kind::clear; break;
          case pb::Traffic::PROMOTE: c.what = actors::traffic_change::kind::promote; break;
          case pb::Traffic::ROLLBACK: c.what = actors::traffic_change::kind::rollback; break;
          default: c.what = actors::traffic_change::kind::show; break;
        }
        control_.traffic(std::move(c), [post](expected<actors::traffic_report> t) {
          pb::ControlReply r;
          if (!t) {
            set_error(r, t.error());
          } else {
            auto* out = r.mutable_traffic();
            for (const auto& [v, w] : t->weights) (*out->mutable_weights())[v] = w;
            out->set_overridden(t->overridden);
            out->set_note(t->note);
          }
          post(r);
        });
        return;
      }
      case pb::ControlRequest::kInjectFault:
      case pb::ControlRequest::kListFaults:
      case pb::ControlRequest::kRemoveFault:
      case pb::ControlRequest::kClearFaults:
        return answer(peer, fault_operation(q));
      case pb::ControlRequest::OP_NOT_SET:
        break;
    }
    set_error(reply, invalid_argument("a ControlRequest names no operation"));
    answer(peer, reply);
  }

  /// The fault plan's operations answer at once (a locked list), here on the socket's thread.
  pb::ControlReply fault_operation(const pb::ControlRequest& q) const {
    pb::ControlReply r;
    // A node without fault injection says so before judging a rule.
    if (status s = faults_.check_enabled(); !s.is_ok()) {
      set_error(r, s);
      return r;
    }
    switch (q.op_case()) {
      case pb::ControlRequest::kInjectFault: {
        // Errors about the rule start with its field: name it as the request spells it.
        auto named = [](const status& s) {
          return s.code() == error_code::invalid_argument
                     ? invalid_argument("inject_fault." + s.message())
                     : s;
        };
        expected<serving::fault_rule> rule = decode_fault_rule(q.inject_fault());
        if (!rule) {
          set_error(r, named(rule.error()));
        } else if (auto id = faults_.inject(std::move(*rule)); !id) {
          set_error(r, named(id.error()));
        } else {
          r.set_fault_id(*id);
        }
        break;
      }
      case pb::ControlRequest::kListFaults:
        if (auto rules = faults_.list(); !rules) {
          set_error(r, rules.error());
        } else {
          for (const auto& s : *rules) encode_fault_rule_state(s, *r.add_faults());
        }
        break;
      case pb::ControlRequest::kRemoveFault:
        if (status s = faults_.remove(q.remove_fault().id()); !s.is_ok()) set_error(r, s);
        break;
      case pb::ControlRequest::kClearFaults:
        if (auto n = faults_.clear(); !n) {
          set_error(r, n.error());
        } else {
          r.set_faults_cleared(*n);
        }
        break;
      default:
        set_error(r, internal_error("not a fault operation"));
    }
    return r;
  }

  void answer(const std::string& peer, const pb::ControlReply& r) {
    send(peer, r.SerializeAsString());
  }

  void send(const std::string& peer, const std::string& bytes) {
    // A peer that left meanwhile: ROUTER drops the message (router_mandatory off).
    socket_.send(zmq::buffer(peer), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(bytes), zmq::send_flags::none);
  }

  void send_queued() {
    std::deque<std::pair<std::string, std::string>> ready;
    {
      std::lock_guard<std::mutex> lock(outbox_->mutex);
      ready.swap(outbox_->replies);
    }
    for (const auto& [peer, bytes] : ready) send(peer, bytes);
  }

  management_options options_;
  const actors::model_control& control_;
  const actors::fault_control& faults_;
  zmq::context_t ctx_{1};
  zmq::socket_t socket_{ctx_, zmq::socket_type::router};
  std::string endpoint_;
  std::shared_ptr<outbox> outbox_ = std::make_shared<outbox>();
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

expected<std::unique_ptr<management_socket>> management_socket::create(
    management_options o, const actors::model_control& control,
    const actors::fault_control& faults) {
  auto p = std::make_unique<impl>(std::move(o), control, faults);
  TROUPE_RETURN_IF_ERROR(p->start());
  return std::unique_ptr<management_socket>(new management_socket(std::move(p)));
}

management_socket::management_socket(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
management_socket::~management_socket() = default;

const std::string& management_socket::endpoint() const {
  return impl_->endpoint();
}

}  // namespace troupe::cluster
