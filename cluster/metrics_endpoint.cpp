#include "cluster/metrics_endpoint.hpp"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>
#include <unordered_map>
#include <zmq.hpp>

namespace troupe::cluster {
namespace {

using clock_type = std::chrono::steady_clock;

std::string response(std::string_view status_line, std::string_view extra_headers,
                     std::string_view body, bool head_only = false,
                     std::string_view type = "text/plain; charset=utf-8") {
  std::string r;
  r.reserve(160 + (head_only ? 0 : body.size()));
  r.append("HTTP/1.1 ").append(status_line).append("\r\nContent-Type: ").append(type);
  r.append("\r\nContent-Length: ").append(std::to_string(body.size()));
  r.append("\r\nConnection: close\r\n").append(extra_headers).append("\r\n");
  if (!head_only) r.append(body);
  return r;
}

/// Where the request head ends (the blank line), or npos while it is incomplete.
size_t head_end(const std::string& buffer) {
  const size_t crlf = buffer.find("\r\n\r\n");
  const size_t lf = buffer.find("\n\n");
  return std::min(crlf, lf);
}

/// "0.0.0.0" -> tcp://0.0.0.0:PORT, "::" -> tcp://[::]:PORT (ZeroMQ needs IPv6 in brackets).
std::string zmq_endpoint(const std::string& address, int port) {
  std::string host = address.empty() ? "*" : address;
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return "tcp://" + host + ":" + (port == 0 ? std::string("*") : std::to_string(port));
}

}  // namespace

std::string http_response(std::string_view head, const std::function<std::string()>& metrics_text) {
  const std::string_view line = head.substr(0, head.find_first_of("\r\n"));
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || sp1 == 0 ||
      sp2 == sp1 + 1 || line.find(' ', sp2 + 1) != std::string_view::npos)
    return response("400 Bad Request", "", "bad request line\n");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (version.substr(0, 7) != "HTTP/1.") return response("400 Bad Request", "", "not HTTP/1.x\n");
  const bool head_only = method == "HEAD";
  if (method != "GET" && !head_only)
    return response("405 Method Not Allowed", "Allow: GET, HEAD\r\n", "only GET and HEAD\n");
  const std::string_view path = target.substr(0, target.find('?'));
  if (path != "/metrics") return response("404 Not Found", "", "only /metrics is served here\n");
  return response("200 OK", "", metrics_text(), head_only,
                  "text/plain; version=0.0.4; charset=utf-8");
}

class metrics_endpoint::impl {
 public:
  impl(const metrics_endpoint_options& o,
       std::vector<std::shared_ptr<prometheus::Collectable>> collectables)
      : options_(o), collectables_(std::move(collectables)), ctx_(1), socket_(ctx_, ZMQ_STREAM) {}

  ~impl() {
    // Blocking calls on the thread return ETERM; the thread then closes its socket and ends.
    ctx_.shutdown();
    if (thread_.joinable())
      thread_.join();
    else
      socket_.close();  // never handed to a thread (bind failed): closing it lets the context end
    ctx_.close();
  }

  status bind() {
    const std::string endpoint = zmq_endpoint(options_.address, options_.port);
    try {
      socket_.set(zmq::sockopt::linger, 0);
      if (endpoint.find('[') != std::string::npos) socket_.set(zmq::sockopt::ipv6, 1);
      socket_.bind(endpoint);
      const std::string bound = socket_.get(zmq::sockopt::last_endpoint);
      port_ = std::stoi(bound.substr(bound.rfind(':') + 1));
    } catch (const std::exception& e) {
      return io_error("cannot serve /metrics on " + endpoint + ": " + e.what());
    }
    return status::ok();
  }

  void start() {
    thread_ = std::thread([this] { loop(); });
  }
  int port() const { return port_; }

 private:
  struct connection {
    std::string request;  // bytes received so far
    clock_type::time_point since;
  };

  std::string metrics_text() const {
    std::vector<prometheus::MetricFamily> families;
    for (const auto& c : collectables_) {
      auto f = c->Collect();
      families.insert(families.end(), std::make_move_iterator(f.begin()),
                      std::make_move_iterator(f.end()));
    }
    return prometheus::TextSerializer().Serialize(families);
  }

  /// Sends `bytes` (if any) and closes the connection. A peer that stopped reading (its pipe is
  /// full) loses the response: the thread never blocks on one client.
  void answer_and_close(const std::string& id, const std::string& bytes) {
    auto send = [&](const std::string& data) {
      zmq::message_t idm(id.data(), id.size());
      if (!socket_.send(idm, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
      zmq::message_t dm(data.data(), data.size());
      return socket_.send(dm, zmq::send_flags::dontwait).has_value();
    };
    if (!bytes.empty()) (void)send(bytes);
    (void)send(std::string());  // an empty frame closes the connection (ZMQ_STREAM)
    connections_.erase(id);
  }

  void on_frame(std::string id, const zmq::message_t& data) {
    auto it = connections_.find(id);
    if (data.size() == 0) {
      // ZMQ_STREAM: an empty frame is a connect (unknown id) or a disconnect (known id).
      if (it != connections_.end()) {
        connections_.erase(it);
      } else if (connections_.size() >= options_.max_connections) {
        answer_and_close(id, response("503 Service Unavailable", "", "too many connections\n"));
      } else {
        connections_.emplace(std::move(id), connection{std::string(), clock_type::now()});
      }
      return;
    }
    if (it == connections_.end())  // data before the connect notice: take it as a connect
      it = connections_.emplace(id, connection{std::string(), clock_type::now()}).first;
    std::string& request = it->second.request;
    request.append(data.data<char>(), data.size());
    const size_t end = head_end(request);
    if (end == std::string::npos) {
      if (request.size() > options_.max_request_bytes)
        answer_and_close(id, response("400 Bad Request", "", "request head too large\n"));
      return;
    }
    std::string reply;
    try {
      reply = http_response(std::string_view(request).substr(0, end),
                            [this] { return metrics_text(); });
    } catch (const std::exception& e) {
      spdlog::error("/metrics: {}", e.what());
      reply = response("500 Internal Server Error", "", "cannot collect metrics\n");
    }
    answer_and_close(id, reply);
  }

  void close_idle() {
    const auto now = clock_type::now();
    std::vector<std::string> idle;
    for (const auto& [id, c] : connections_)
      if (now - c.since > options_.idle_timeout) idle.push_back(id);
    for (const auto& id : idle) answer_and_close(id, std::string());
  }

  void loop() {
    const long tick_ms = std::clamp<long>(options_.idle_timeout.count() / 4, 10, 1000);
    for (;;) {
      try {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(tick_ms));
        while (true) {
          zmq::message_t id, data;
          if (!socket_.recv(id, zmq::recv_flags::dontwait)) break;
          if (!id.more()) continue;  // malformed: a STREAM message is [id][data]
          if (!socket_.recv(data, zmq::recv_flags::dontwait)) break;
          on_frame(id.to_string(), data);
        }
        close_idle();
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) break;
        spdlog::warn("/metrics socket: {}", e.what());
      }
    }
    socket_.close();
  }

  metrics_endpoint_options options_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  zmq::context_t ctx_;
  zmq::socket_t socket_;  // bound here, then used only by thread_
  std::thread thread_;
  int port_ = 0;
  std::unordered_map<std::string, connection> connections_;  // thread_ only
};

expected<std::unique_ptr<metrics_endpoint>> metrics_endpoint::create(
    const metrics_endpoint_options& o,
    std::vector<std::shared_ptr<prometheus::Collectable>> collectables) {
  for (const auto& c : collectables)
    if (!c) return invalid_argument("metrics endpoint: null collectable");
  std::unique_ptr<impl> p;
  try {
    p = std::make_unique<impl>(o, std::move(collectables));
    TROUPE_RETURN_IF_ERROR(p->bind());
    p->start();
  } catch (const std::exception& e) {  // a ZeroMQ context or a thread that cannot be created
    return io_error(std::string("cannot start the /metrics endpoint: ") + e.what());
  }
  return std::unique_ptr<metrics_endpoint>(new metrics_endpoint(std::move(p)));
}

metrics_endpoint::metrics_endpoint(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
metrics_endpoint::~metrics_endpoint() = default;

int metrics_endpoint::port() const {
  return impl_->port();
}

}  // namespace troupe::cluster
