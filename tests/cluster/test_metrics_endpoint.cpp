// The /metrics endpoint over real TCP on loopback: a scrape gets the registry in the text format,
// bad requests get HTTP errors and the endpoint keeps serving, silent connections are closed, a
// taken port is a typed error. In a CUDA build this executable links libcublasLt (92 KiB of static
// TLS), the condition under which prometheus-cpp's civetweb Exposer could not start its threads:
// the endpoint must start here all the same.

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
#include <thread>

#include "cluster/metrics_endpoint.hpp"

namespace troupe::cluster {
namespace {

using namespace std::chrono_literals;

// ---- the HTTP answer, without sockets
// ------------------------------------------------------------

std::string body_text() {
  return "# TYPE x counter\nx 1\n";
}

TEST(http_response, metrics_get_and_head) {
  const std::string get = http_response("GET /metrics HTTP/1.1\r\nHost: a", body_text);
  EXPECT_EQ(get.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << get;
  EXPECT_NE(get.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(get.find("Content-Length: " + std::to_string(body_text().size())), std::string::npos);
  EXPECT_NE(get.find("Connection: close"), std::string::npos);
  EXPECT_EQ(get.substr(get.size() - body_text().size()), body_text());
  const std::string head = http_response("HEAD /metrics?debug=1 HTTP/1.0", body_text);
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << "HEAD: headers only";
}

TEST(http_response, errors_never_collect) {
  bool collected = false;
  auto body = [&] {
    collected = true;
    return body_text();
  };
  struct example {
    const char* head;
    const char* status;
  };
  for (const example& e : {example{"POST /metrics HTTP/1.1", "405"},
                           {"GET / HTTP/1.1", "404"},
                           {"GET /metricsx HTTP/1.1", "404"},
                           {"garbage", "400"},
                           {"GET /metrics HTTP/2", "400"},
                           {"GET  /metrics HTTP/1.1", "400"},
                           {"GET /metrics HTTP/1.1 extra", "400"},
                           {"", "400"}}) {
    const std::string r = http_response(e.head, body);
    EXPECT_EQ(r.rfind(std::string("HTTP/1.1 ") + e.status, 0), 0u) << e.head << " -> " << r;
  }
  EXPECT_FALSE(collected);
  EXPECT_NE(http_response("PUT /metrics HTTP/1.1", body).find("Allow: GET, HEAD"),
            std::string::npos);
}

// ---- over TCP
// ------------------------------------------------------------------------------------

/// A blocking TCP client on 127.0.0.1 with a receive timeout.
class tcp_client {
 public:
  explicit tcp_client(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~tcp_client() { close(fd_); }
  bool connected() const { return connected_; }
  void send_text(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  /// Everything until the server closes the connection (or `timeout` passes: then "<timeout>").
  std::string read_all(std::chrono::milliseconds timeout = 10s) {
    std::string out;
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return out + "<timeout>";
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  bool connected_ = false;
};

class metrics_endpoint_test : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::make_shared<prometheus::Registry>();
    prometheus::BuildCounter()
        .Name("troupe_test_total")
        .Help("h")
        .Register(*registry_)
        .Add({})
        .Increment(3);
    metrics_endpoint_options o;
    o.address = "127.0.0.1";
    o.port = 0;
    o.idle_timeout = 300ms;
    o.max_request_bytes = 1024;
    auto e = metrics_endpoint::create(o, {registry_});
    ASSERT_TRUE(e.has_value()) << e.error().to_string();
    endpoint_ = std::move(*e);
    ASSERT_GT(endpoint_->port(), 0);
  }

  std::string scrape() {
    tcp_client c(endpoint_->port());
    EXPECT_TRUE(c.connected());
    c.send_text("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    return c.read_all();
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<metrics_endpoint> endpoint_;
};

TEST_F(metrics_endpoint_test, serves_the_registry_and_closes) {
  const std::string r = scrape();
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("troupe_test_total 3"), std::string::npos) << r;
  EXPECT_EQ(r.find("<timeout>"), std::string::npos) << "the server closes after the response";
}

TEST_F(metrics_endpoint_test, a_request_in_pieces_is_assembled) {
  tcp_client c(endpoint_->port());
  ASSERT_TRUE(c.connected());
  c.send_text("GET /met");
  std::this_thread::sleep_for(20ms);  // a second TCP segment
  c.send_text("rics HTTP/1.0\n\n");
  const std::string r = c.read_all();
  EXPECT_NE(r.find("troupe_test_total 3"), std::string::npos) << r;
}

TEST_F(metrics_endpoint_test, bad_requests_get_errors_and_the_endpoint_keeps_serving) {
  {
    tcp_client c(endpoint_->port());
    c.send_text("DELETE /metrics HTTP/1.1\r\n\r\n");
    EXPECT_EQ(c.read_all().rfind("HTTP/1.1 405", 0), 0u);
  }
  {
    tcp_client c(endpoint_->port());
    c.send_text(std::string(2000, 'A'));  // no end of head within max_request_bytes
    EXPECT_EQ(c.read_all().rfind("HTTP/1.1 400", 0), 0u);
  }
  {
    tcp_client c(endpoint_->port());
    c.send_text(std::string("\0\xff\x01\r\n\r\n", 7));
    EXPECT_EQ(c.read_all().rfind("HTTP/1.1 400", 0), 0u);
  }
  EXPECT_NE(scrape().find("troupe_test_total 3"), std::string::npos);
}

TEST_F(metrics_endpoint_test, a_silent_connection_is_closed_and_does_not_block_scrapes) {
  tcp_client silent(endpoint_->port());
  ASSERT_TRUE(silent.connected());
  EXPECT_NE(scrape().find("troupe_test_total 3"), std::string::npos) << "served meanwhile";
  EXPECT_EQ(silent.read_all(5s), "") << "closed after the idle timeout, without a response";
}

TEST_F(metrics_endpoint_test, closed_connections_free_their_slots) {
  metrics_endpoint_options o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.max_connections = 2;
  auto small = metrics_endpoint::create(o, {registry_});
  ASSERT_TRUE(small.has_value()) << small.error().to_string();
  for (int i = 0; i < 40; ++i) {
    tcp_client c((*small)->port());
    c.send_text("GET /metrics HTTP/1.1\r\n\r\n");
    ASSERT_EQ(c.read_all().rfind("HTTP/1.1 200", 0), 0u) << "scrape " << i;
  }
  tcp_client a((*small)->port()), b((*small)->port());
  std::this_thread::sleep_for(50ms);  // both connects are seen
  tcp_client third((*small)->port());
  EXPECT_EQ(third.read_all().rfind("HTTP/1.1 503", 0), 0u) << "beyond max_connections";
}

TEST_F(metrics_endpoint_test, a_taken_port_is_a_typed_error) {
  metrics_endpoint_options o;
  o.address = "127.0.0.1";
  o.port = endpoint_->port();
  auto second = metrics_endpoint::create(o, {registry_});
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), error_code::io_error);
  EXPECT_NE(second.error().message().find(std::to_string(o.port)), std::string::npos);
  auto null = metrics_endpoint::create(metrics_endpoint_options{}, {nullptr});
  ASSERT_FALSE(null.has_value());
  EXPECT_EQ(null.error().code(), error_code::invalid_argument);
}

}  // namespace
}  // namespace troupe::cluster
