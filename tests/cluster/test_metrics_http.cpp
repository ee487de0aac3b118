// The /metrics endpoint: the response to each request without sockets (GET and HEAD of /metrics
// collect; other paths 404, other methods 405, nothing collected for them), then a scrape over
// TCP on loopback through http_server (the text format, bad requests answered while the endpoint
// keeps serving, a taken port a typed error). In a CUDA build this executable links libcublasLt
// (92 KiB of static TLS), the condition under which prometheus-cpp's civetweb Exposer could not
// start its threads: the endpoint must start here all the same.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "cluster/metrics_http.hpp"

namespace troupe::cluster {
namespace {

using namespace std::chrono_literals;

http_request request(const std::string& method, const std::string& path) {
  http_request r;
  r.method = method;
  r.target = r.path = path;
  return r;
}

TEST(metrics_response, get_and_head_collect_the_rest_do_not) {
  int collected = 0;
  auto text = [&] {
    ++collected;
    return std::string("# TYPE x counter\nx 1\n");
  };
  const http_response get = metrics_response(request("GET", "/metrics"), text);
  EXPECT_EQ(get.status, 200);
  EXPECT_EQ(get.content_type.rfind("text/plain; version=0.0.4", 0), 0u);
  EXPECT_EQ(get.body, "# TYPE x counter\nx 1\n");
  EXPECT_EQ(metrics_response(request("HEAD", "/metrics"), text).status, 200);
  EXPECT_EQ(collected, 2);
  EXPECT_EQ(metrics_response(request("GET", "/"), text).status, 404);
  EXPECT_EQ(metrics_response(request("GET", "/metricsx"), text).status, 404);
  const http_response post = metrics_response(request("POST", "/metrics"), text);
  EXPECT_EQ(post.status, 405);
  ASSERT_EQ(post.headers.size(), 1u);
  EXPECT_EQ(post.headers[0].second, "GET, HEAD");
  EXPECT_EQ(collected, 2);
}

/// Sends `text` and reads until the server closes (or 10 s pass).
std::string http_exchange(int port, const std::string& text) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

TEST(metrics_http, scrapes_over_tcp) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("troupe_test_total")
      .Help("h")
      .Register(*registry)
      .Add({})
      .Increment(3);
  metrics_http_options o;
  o.address = "127.0.0.1";
  o.port = 0;
  auto m = metrics_http::create(o, {registry});
  ASSERT_TRUE(m.has_value()) << m.error().to_string();
  const int port = (*m)->port();
  const std::string r = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("troupe_test_total 3"), std::string::npos) << r;
  EXPECT_NE(r.find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_EQ(http_exchange(port, "DELETE /metrics HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 405", 0), 0u);
  EXPECT_EQ(http_exchange(port, std::string("\0\xff\x01\r\n\r\n", 7)).rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(http_exchange(port, std::string(20000, 'A')).rfind("HTTP/1.1 431", 0), 0u);
  EXPECT_NE(http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n").find("troupe_test_total 3"),
            std::string::npos)
      << "still serving";

  o.port = port;
  auto second = metrics_http::create(o, {registry});
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), error_code::io_error);
  EXPECT_NE(second.error().message().find(std::to_string(port)), std::string::npos);
  EXPECT_EQ(metrics_http::create(o, {nullptr}).error().code(), error_code::invalid_argument);
}

}  // namespace
}  // namespace troupe::cluster
