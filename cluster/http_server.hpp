#pragma once
/// An HTTP/1.1 server on Boost.Beast/Asio: one acceptor, one session per connection, a small pool
/// of I/O threads running one io_context. It knows nothing of KServe or metrics: a handler gets
/// each complete request and answers it once through a responder, from any thread, at any time
/// (the KServe door answers from an actor thread when the batch is done). docs/architecture.md
/// says why Beast.
///
/// Per connection: requests are read one at a time; the next one is read only after the previous
/// response has been written, so pipelined requests are answered in order (their bytes wait in
/// the session's buffer). Keep-alive per HTTP/1.1 (HTTP/1.0 closes unless it asks otherwise).
/// `Expect: 100-continue` is answered before the body is read.
///
/// Limits: request head (line and headers) `max_header_bytes` -> 431; body `max_body_bytes`
/// (Content-Length checked before the body is read, chunked bodies as they arrive) -> 413; an
/// unparsable request -> 400. Each error has a JSON body {"error": "..."} and closes the
/// connection after draining what the client still sends (so it reads the answer instead of a
/// reset). A connection idle for `idle_timeout` between requests is closed; a request body or a
/// response that does not move for `io_timeout` closes it too. While a request is being handled
/// no timer runs (the handler's own deadline governs). Beyond `max_connections` a new connection
/// gets a 503 and is closed.
///
/// Threads: handlers run on the connection's strand (an I/O thread): they must not block. The
/// responder posts the write to that strand. No exception leaves a handler or an I/O thread: a
/// handler that throws answers 500.
///
/// Lifetime: responders hold their connection. Drop or call every responder before the server is
/// destroyed (node_main stops the request gateway, which answers what it holds, first).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.hpp"

namespace troupe::cluster {

struct http_request {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // as sent, query included
  std::string path;    // target up to '?'
  unsigned version = 11;
  std::vector<std::pair<std::string, std::string>> headers;  // in order, names as sent
  std::string body;  // decoded from chunked transfer coding when it was chunked

  /// The first header named `name` (case-insensitive); "" when absent.
  std::string_view header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Sent after `body` without a copy (a reply's output tensors where the workers wrote them).
  std::vector<std::span<const std::byte>> tail;
  /// Keeps `tail`'s memory alive until the response has been written (or dropped).
  std::shared_ptr<void> tail_owner;
  bool close = false;  // close the connection after this response

  size_t size() const;
};

/// A response with a JSON body {"error": message}.
http_response http_error(int status, std::string_view message);

/// Answers one request. Call it once, from any thread; later calls are ignored. A responder
/// destroyed without being called answers 500 (a handler bug must not hang a connection).
using http_responder = std::function<void(http_response)>;
using http_handler = std::function<void(http_request request, http_responder respond)>;

struct http_server_options {
  std::string address = "0.0.0.0";  // an IPv4 or IPv6 address; "*" for every IPv4 interface
  int port = 0;                     // 0: a free port chosen by the system (see port())
  uint32_t threads = 1;             // I/O threads (at least 1)
  uint64_t max_body_bytes = 256ull << 20;
  uint32_t max_header_bytes = 64 << 10;
  size_t max_connections = 4096;
  std::chrono::milliseconds idle_timeout{60'000};  // between requests of one connection
  std::chrono::milliseconds io_timeout{60'000};    // a body read or a response write that stalls
  std::string name = "http";                       // in logs
};

class http_server {
 public:
  /// Binds, listens and starts the I/O threads. io_error naming the address and port when it
  /// cannot bind; invalid_argument for a bad address or an empty handler.
  static expected<std::unique_ptr<http_server>> create(http_server_options o, http_handler h);
  /// stop() with no grace period.
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// The bound TCP port.
  int port() const;
  /// Open connections now.
  size_t connections() const;
  /// Runs `fn` on one of the I/O threads: work that must leave the caller's thread (an actor
  /// thread must not encode a large reply). Never run once the server has stopped.
  void post(std::function<void()> fn);

  /// Graceful stop: stops accepting, closes idle connections, lets every connection whose request
  /// is being handled write its response and then close; after `grace` closes what is left and
  /// joins the I/O threads. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

  class impl;

 private:
  explicit http_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
