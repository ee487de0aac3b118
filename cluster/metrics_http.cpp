#include "cluster/metrics_http.hpp"

#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>

#include <iterator>
#include <mutex>

namespace troupe::cluster {

std::string collect_metrics_text(
    const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& c : collectables) {
    auto f = c->Collect();
    families.insert(families.end(), std::make_move_iterator(f.begin()),
                    std::make_move_iterator(f.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

http_response metrics_response(const http_request& request,
                               const std::function<std::string()>& metrics_text) {
  if (request.path != "/metrics")
    return http_error(404, "no such endpoint: " + request.path + " (metrics are at /metrics)");
  if (request.method != "GET" && request.method != "HEAD") {
    http_response r = http_error(405, "method " + request.method + " is not allowed on /metrics");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  http_response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics_text();
  return r;
}

expected<std::unique_ptr<metrics_http>> metrics_http::create(
    const metrics_http_options& o,
    std::vector<std::shared_ptr<prometheus::Collectable>> collectables) {
  for (const auto& c : collectables)
    if (!c) return invalid_argument("metrics endpoint: null collectable");
  http_server_options so;
  so.address = o.address;
  so.port = o.port;
  so.threads = 1;
  so.max_body_bytes = 64 << 10;  // a scrape has no body
  so.max_header_bytes = 8 << 10;
  so.max_connections = o.max_connections;
  so.idle_timeout = o.idle_timeout;
  so.io_timeout = o.idle_timeout;
  so.name = "metrics http";
  // One scrape collects at a time: collectors (the GPU one reads NVML) need not be reentrant.
  auto mutex = std::make_shared<std::mutex>();
  auto text = [collectables = std::move(collectables), mutex] {
    std::lock_guard<std::mutex> lock(*mutex);
    return collect_metrics_text(collectables);
  };
  auto server = http_server::create(so, [text](http_request req, http_responder respond) {
    respond(metrics_response(req, text));
  });
  if (!server) return server.error();
  return std::unique_ptr<metrics_http>(new metrics_http(std::move(*server)));
}

metrics_http::metrics_http(std::unique_ptr<http_server> s) : server_(std::move(s)) {}
metrics_http::~metrics_http() = default;
int metrics_http::port() const {
  return server_->port();
}
void metrics_http::stop(std::chrono::milliseconds grace) {
  server_->stop(grace);
}

}  // namespace troupe::cluster
