#pragma once
/// The node's /metrics endpoint: the smallest HTTP/1.1 server a Prometheus scrape needs, on one
/// thread with one ZeroMQ STREAM socket (raw TCP; the socket belongs to that thread from the moment
/// the thread starts). `GET /metrics` (and HEAD) gets the text exposition format 0.0.4 of every
/// collectable; another path 404, another method 405, a request line it cannot parse or a request
/// head over `max_request_bytes` 400. Every response closes its connection. Connections that send
/// no complete request within `idle_timeout` are closed, and at most `max_connections` are held:
/// a silent client cannot stop the scrapes.
///
/// Why not prometheus-cpp's Exposer: it runs civetweb, whose Debian build starts every thread with
/// a fixed 100 KiB stack. glibc carves a thread's static TLS out of the stack it was asked for, and
/// libcublasLt alone brings 92 KiB of static TLS, so in any process that links the CUDA backend
/// civetweb's pthread_create fails with EINVAL and the Exposer throws "null context when
/// constructing CivetServer". This thread is a std::thread with the default stack.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"

namespace prometheus {
class Collectable;
}

namespace troupe::cluster {

struct metrics_endpoint_options {
  std::string address = "0.0.0.0";  // an IPv4 or IPv6 address, or "*" for every interface
  int port = 9090;                  // 0: a free port chosen by the system (see port())
  size_t max_connections = 64;      // beyond it a new connection is closed at once
  size_t max_request_bytes = 8192;  // request line and headers
  std::chrono::milliseconds idle_timeout{10'000};
};

class metrics_endpoint {
 public:
  /// Binds and starts the thread. io_error naming the address when it cannot bind.
  static expected<std::unique_ptr<metrics_endpoint>> create(
      const metrics_endpoint_options& o,
      std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  /// Stops the thread and closes the socket (connections in progress are dropped).
  ~metrics_endpoint();

  /// The bound TCP port.
  int port() const;

  class impl;

 private:
  explicit metrics_endpoint(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The complete HTTP response to one request head (request line and headers, without the blank
/// line). `metrics_text` is called only for a valid GET or HEAD of /metrics. Exposed for tests.
std::string http_response(std::string_view request_head,
                          const std::function<std::string()>& metrics_text);

}  // namespace troupe::cluster
