// http_server over real TCP on loopback: keep-alive and pipelining (answers in order), answers
// from another thread, the body and header limits (413 and 431 with JSON errors, read by a
// client that sent everything first), malformed requests (400), HEAD, Expect: 100-continue, the
// idle timeout, max_connections (503), a taken port, handler bugs (a throw or a dropped responder
// answer 500), and the graceful stop: idle connections close at once, a request being handled
// still gets its response. Tests wait for events (a response, a closed socket, a counter), never
// for time.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "cluster/http_server.hpp"

namespace troupe::cluster {
namespace {

using namespace std::chrono_literals;

/// A blocking TCP client on 127.0.0.1 with deadlines on every read.
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

  /// Reads more bytes into the buffer; false on EOF, error or the deadline.
  bool fill(std::chrono::steady_clock::time_point end) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        timed_out_ = true;
        return false;
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[65536];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      buffer_.append(buf, static_cast<size_t>(n));
      return true;
    }
  }

  struct response {
    int status = 0;
    std::string head;
    std::string body;
  };

  /// One response (Content-Length framed); status 0 when the connection ended first.
  response read_response(std::chrono::milliseconds timeout = 10s, bool head_only = false) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    response r;
    size_t eoh;
    while ((eoh = buffer_.find("\r\n\r\n")) == std::string::npos)
      if (!fill(end)) return r;
    r.head = buffer_.substr(0, eoh + 2);
    buffer_.erase(0, eoh + 4);
    r.status = std::stoi(r.head.substr(9, 3));
    size_t length = 0;
    if (auto p = lower(r.head).find("content-length:"); p != std::string::npos)
      length = std::stoul(r.head.substr(p + 15));
    if (head_only) length = 0;
    while (buffer_.size() < length)
      if (!fill(end)) return r;
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return r;
  }

  /// True once the server has closed the connection (nothing more arrives).
  bool closed_by_peer(std::chrono::milliseconds timeout = 10s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (fill(end)) {
    }
    return !timed_out_;
  }

  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

 private:
  int fd_;
  bool connected_ = false;
  bool timed_out_ = false;
  std::string buffer_;
};

bool eventually(const std::function<bool()>& f, std::chrono::milliseconds timeout = 10s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::yield();
  }
  return f();
}

/// Responders the handler parked, for the test thread to answer.
class parked_requests {
 public:
  void park(http_request req, http_responder r) {
    std::lock_guard<std::mutex> lock(mutex_);
    items_.emplace_back(std::move(req), std::move(r));
    cv_.notify_all();
  }
  std::pair<http_request, http_responder> take(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return !items_.empty(); }))
      throw std::runtime_error("no request arrived");
    auto item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::pair<http_request, http_responder>> items_;
};

class http_server_test : public ::testing::Test {
 protected:
  void start(http_server_options o = {}) {
    o.address = "127.0.0.1";
    o.port = 0;
    o.threads = 2;
    if (o.max_body_bytes == (256ull << 20)) o.max_body_bytes = 1000;
    if (o.max_header_bytes == (64u << 10)) o.max_header_bytes = 2048;
    auto s = http_server::create(o, [this](http_request req, http_responder respond) {
      handle(std::move(req), std::move(respond));
    });
    ASSERT_TRUE(s.has_value()) << s.error().to_string();
    server_ = std::move(*s);
    ASSERT_GT(server_->port(), 0);
  }

  void handle(http_request req, http_responder respond) {
    if (req.path == "/park") return parked_.park(std::move(req), std::move(respond));
    if (req.path == "/throw") throw std::runtime_error("handler bug");
    if (req.path == "/drop") return;  // the responder dies uncalled
    http_response r;
    r.content_type = "text/plain";
    r.body = req.method + " " + req.target + " " + std::to_string(req.body.size());
    static const char tail[] = "-tail";
    if (req.path == "/tail") {
      r.tail.emplace_back(reinterpret_cast<const std::byte*>(tail), 5);
      r.tail_owner = std::make_shared<int>(0);
    }
    respond(std::move(r));
  }

  parked_requests parked_;
  std::unique_ptr<http_server> server_;
};

TEST_F(http_server_test, keep_alive_and_pipelined_requests_answered_in_order) {
  start();
  tcp_client c(server_->port());
  ASSERT_TRUE(c.connected());
  c.send_text(
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?q=1 HTTP/1.1\r\nHost: x\r\n"
      "Content-Length: 3\r\n\r\nxyzGET /tail HTTP/1.1\r\nHost: x\r\n\r\n");
  auto a = c.read_response();
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "GET /a 0");
  auto b = c.read_response();
  EXPECT_EQ(b.status, 200);
  EXPECT_EQ(b.body, "POST /b?q=1 3");
  auto t = c.read_response();
  EXPECT_EQ(t.body, "GET /tail 0-tail") << "the tail follows the body without a copy";
  // Still open: a fourth request on the same connection.
  c.send_text("GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.read_response().body, "GET /d 0");
  EXPECT_EQ(server_->connections(), 1u);
}

TEST_F(http_server_test, an_answer_from_another_thread) {
  start();
  tcp_client c(server_->port());
  c.send_text("POST /park HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  auto [req, respond] = parked_.take();
  EXPECT_EQ(req.body, "hello");
  EXPECT_EQ(req.header("content-length"), "5") << "header lookup ignores case";
  std::thread answerer([respond = respond] {
    http_response r;
    r.body = "{\"ok\":true}";
    respond(r);
    respond(http_error(500, "a second answer is ignored"));
  });
  answerer.join();
  auto r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"ok\":true}");
  EXPECT_NE(tcp_client::lower(r.head).find("content-type: application/json"), std::string::npos);
  c.send_text("GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.read_response().body, "GET /after 0") << "the second call did not break framing";
}

TEST_F(http_server_test, oversized_body_is_413_and_the_client_reads_it) {
  start();
  tcp_client c(server_->port());
  // The whole request is sent before reading (as geventhttpclient does): the server must drain
  // it instead of resetting the connection under the answer.
  c.send_text("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" +
              std::string(200000, 'b'));
  auto r = c.read_response();
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find("\"error\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("1000"), std::string::npos) << "names the limit: " << r.body;
  EXPECT_TRUE(c.closed_by_peer());

  tcp_client chunked(server_->port());
  chunked.send_text(
      "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "400\r\n" +
      std::string(1024, 'c') + "\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.read_response().status, 413) << "a chunked body is counted as it arrives";

  tcp_client small(server_->port());
  small.send_text(
      "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  EXPECT_EQ(small.read_response().body, "POST /x 5") << "chunked bodies within the limit";
}

TEST_F(http_server_test, oversized_head_malformed_and_unknown_expectations) {
  start();
  {
    tcp_client c(server_->port());
    c.send_text("GET / HTTP/1.1\r\nX-Big: " + std::string(4000, 'h') + "\r\n\r\n");
    EXPECT_EQ(c.read_response().status, 431);
  }
  {
    tcp_client c(server_->port());
    c.send_text(std::string("\0\xff\x01\r\n\r\n", 7));
    auto r = c.read_response();
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("\"error\""), std::string::npos);
  }
  {
    tcp_client c(server_->port());
    c.send_text("GET / HTTP/2\r\n\r\n");
    EXPECT_EQ(c.read_response().status, 400);
  }
  {
    tcp_client c(server_->port());
    c.send_text("POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: something\r\n\r\nab");
    EXPECT_EQ(c.read_response().status, 417);
  }
  tcp_client ok(server_->port());
  ok.send_text("GET /still HTTP/1.1\r\n\r\n");
  EXPECT_EQ(ok.read_response().status, 200) << "the server keeps serving";
}

TEST_F(http_server_test, head_and_http10_and_100_continue) {
  start();
  {
    tcp_client c(server_->port());
    c.send_text("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n");
    auto r = c.read_response(10s, /*head_only=*/true);
    EXPECT_EQ(r.status, 200);
    EXPECT_NE(tcp_client::lower(r.head).find("content-length: 9"), std::string::npos) << r.head;
    c.send_text("GET /g HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(c.read_response().body, "GET /g 0") << "HEAD sent no body bytes";
  }
  {
    tcp_client c(server_->port());
    c.send_text("GET /old HTTP/1.0\r\n\r\n");
    EXPECT_EQ(c.read_response().body, "GET /old 0");
    EXPECT_TRUE(c.closed_by_peer()) << "HTTP/1.0 without keep-alive closes";
  }
  {
    tcp_client c(server_->port());
    c.send_text("POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    EXPECT_EQ(c.read_response().status, 100);
    c.send_text("data");
    EXPECT_EQ(c.read_response().body, "POST /c 4");
  }
}

TEST_F(http_server_test, handler_bugs_answer_500) {
  start();
  tcp_client c(server_->port());
  c.send_text("GET /throw HTTP/1.1\r\n\r\n");
  auto t = c.read_response();
  EXPECT_EQ(t.status, 500);
  EXPECT_NE(t.body.find("handler bug"), std::string::npos);
  c.send_text("GET /drop HTTP/1.1\r\n\r\n");
  EXPECT_EQ(c.read_response().status, 500);
  c.send_text("GET /fine HTTP/1.1\r\n\r\n");
  EXPECT_EQ(c.read_response().status, 200);
}

TEST_F(http_server_test, idle_connections_time_out_and_do_not_block_others) {
  http_server_options o;
  o.idle_timeout = 300ms;
  start(o);
  tcp_client silent(server_->port());
  ASSERT_TRUE(silent.connected());
  tcp_client c(server_->port());
  c.send_text("GET /m HTTP/1.1\r\n\r\n");
  EXPECT_EQ(c.read_response().status, 200) << "served meanwhile";
  EXPECT_TRUE(silent.closed_by_peer(10s)) << "closed after the idle timeout";
  EXPECT_TRUE(eventually([&] { return server_->connections() <= 1; }));
}

TEST_F(http_server_test, beyond_max_connections_a_503) {
  http_server_options o;
  o.max_connections = 2;
  start(o);
  for (int i = 0; i < 20; ++i) {  // closed connections free their slots
    tcp_client c(server_->port());
    c.send_text("GET /m HTTP/1.0\r\n\r\n");
    ASSERT_EQ(c.read_response().status, 200) << i;
    ASSERT_TRUE(c.closed_by_peer());
  }
  ASSERT_TRUE(eventually([&] { return server_->connections() == 0; }));
  tcp_client a(server_->port()), b(server_->port());
  ASSERT_TRUE(eventually([&] { return server_->connections() == 2; }));
  tcp_client third(server_->port());
  EXPECT_EQ(third.read_response().status, 503);
}

TEST_F(http_server_test, a_taken_port_is_a_typed_error) {
  start();
  http_server_options o;
  o.address = "127.0.0.1";
  o.port = server_->port();
  auto second = http_server::create(o, [](http_request, http_responder) {});
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), error_code::io_error);
  EXPECT_NE(second.error().message().find(std::to_string(o.port)), std::string::npos);
  o.address = "not-an-address";
  EXPECT_EQ(http_server::create(o, [](http_request, http_responder) {}).error().code(),
            error_code::invalid_argument);
  EXPECT_EQ(http_server::create(http_server_options{}, nullptr).error().code(),
            error_code::invalid_argument);
}

TEST_F(http_server_test, graceful_stop_finishes_the_request_in_hand) {
  start();
  tcp_client idle(server_->port());
  tcp_client busy(server_->port());
  busy.send_text("GET /park HTTP/1.1\r\nHost: x\r\n\r\n");
  auto [req, respond] = parked_.take();
  ASSERT_TRUE(eventually([&] { return server_->connections() == 2; }));
  std::thread stopper([&] { server_->stop(10s); });
  EXPECT_TRUE(idle.closed_by_peer()) << "an idle connection closes at once";
  tcp_client late(server_->port());
  EXPECT_TRUE(!late.connected() || late.closed_by_peer()) << "no new connections";
  http_response r;
  r.body = "{\"late\":1}";
  respond(std::move(r));
  auto got = busy.read_response();
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "{\"late\":1}");
  EXPECT_NE(tcp_client::lower(got.head).find("connection: close"), std::string::npos);
  EXPECT_TRUE(busy.closed_by_peer());
  stopper.join();
  EXPECT_EQ(server_->connections(), 0u);
}

}  // namespace
}  // namespace troupe::cluster
