#pragma once
/// The node's Prometheus endpoint: `GET /metrics` (and HEAD) in the text exposition format 0.0.4
/// of every collectable (the serving registry and the GPU collector), served by http_server (the
/// same HTTP library as the KServe door; Triton's port 8002 by default). Another path is 404,
/// another method 405.
///
/// Why not prometheus-cpp's Exposer: it runs civetweb, whose Debian build starts every thread with
/// a fixed 100 KiB stack. glibc carves a thread's static TLS out of the stack it was asked for, and
/// libcublasLt alone brings 92 KiB of static TLS, so in any process that links the CUDA backend
/// civetweb's pthread_create fails with EINVAL and the Exposer throws "null context when
/// constructing CivetServer". http_server's threads are std::threads with the default stack.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cluster/http_server.hpp"
#include "core/status.hpp"

namespace prometheus {
class Collectable;
}

namespace troupe::cluster {

struct metrics_http_options {
  std::string address = "0.0.0.0";
  int port = 8002;  // 0: a free port chosen by the system (see port())
  size_t max_connections = 64;
  std::chrono::milliseconds idle_timeout{10'000};
};

class metrics_http {
 public:
  /// Binds and starts one I/O thread. io_error naming the address when it cannot bind;
  /// invalid_argument for a null collectable.
  static expected<std::unique_ptr<metrics_http>> create(
      const metrics_http_options& o,
      std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  ~metrics_http();

  int port() const;
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(2));

 private:
  explicit metrics_http(std::unique_ptr<http_server> s);
  std::unique_ptr<http_server> server_;
};

/// The response to one request: `metrics_text` is called only for a GET or HEAD of /metrics.
/// Pure; exposed for tests.
http_response metrics_response(const http_request& request,
                               const std::function<std::string()>& metrics_text);

/// The exposition text of `collectables` (each collected once).
std::string collect_metrics_text(
    const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables);

}  // namespace troupe::cluster
