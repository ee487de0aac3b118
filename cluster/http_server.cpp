#include "cluster/http_server.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "cluster/kserve_json_codec.hpp"

namespace troupe::cluster {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

/// A response body of one string followed by spans written without a copy: the gather list goes
/// to the socket as it is.
struct segmented_body {
  struct value_type {
    std::string head;
    std::vector<std::span<const std::byte>> tail;
    std::shared_ptr<void> owner;
  };

  static std::uint64_t size(const value_type& v) {
    std::uint64_t n = v.head.size();
    for (const auto& t : v.tail) n += t.size();
    return n;
  }

  class writer {
   public:
    using const_buffers_type = std::vector<net::const_buffer>;

    template <bool is_request, class Fields>
    writer(const http::header<is_request, Fields>&, const value_type& v) : v_(v) {}

    void init(beast::error_code& ec) { ec = {}; }

    boost::optional<std::pair<const_buffers_type, bool>> get(beast::error_code& ec) {
      ec = {};
      if (done_) return boost::none;
      done_ = true;
      const_buffers_type b;
      b.reserve(1 + v_.tail.size());
      if (!v_.head.empty()) b.emplace_back(v_.head.data(), v_.head.size());
      for (const auto& t : v_.tail)
        if (!t.empty()) b.emplace_back(t.data(), t.size());
      return std::make_pair(std::move(b), false);
    }

   private:
    const value_type& v_;
    bool done_ = false;
  };
};

constexpr std::string_view server_header = "troupe";

}  // namespace

// ---- public helpers --------------------------------------------------------------------------

std::string_view http_request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

bool http_request::has_header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return true;
  return false;
}

size_t http_response::size() const {
  size_t n = body.size();
  for (const auto& t : tail) n += t.size();
  return n;
}

http_response http_error(int status, std::string_view message) {
  http_response r;
  r.status = status;
  r.body = kserve::error_body(message);
  return r;
}

// ---- server ------------------------------------------------------------------------------------

class session;

class http_server::impl {
 public:
  impl(http_server_options o, http_handler h)
      : options_(std::move(o)),
        handler_(std::move(h)),
        acceptor_(net::make_strand(ioc_)),
        work_(net::make_work_guard(ioc_)) {}

  ~impl() {
    stop(std::chrono::milliseconds(0));
    // Queued handlers (and the sessions they hold) die with the io_context below, while the
    // registry they unregister from is still alive (declared before it). Responders still held
    // elsewhere must not post any more.
    destroying_.store(true);
  }

  status listen() {
    beast::error_code ec;
    const std::string host = options_.address == "*" ? "0.0.0.0" : options_.address;
    const auto address = net::ip::make_address(host, ec);
    if (ec)
      return invalid_argument(options_.name + ": '" + options_.address + "' is not an IP address");
    if (options_.port < 0 || options_.port > 65535)
      return invalid_argument(options_.name + ": port " + std::to_string(options_.port) +
                              " is out of range");
    const tcp::endpoint ep(address, static_cast<unsigned short>(options_.port));
    const std::string where = host + ":" + std::to_string(options_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return io_error(options_.name + ": cannot listen on " + where + ": " + ec.message());
    port_ = acceptor_.local_endpoint().port();
    return status::ok();
  }

  void start() {
    net::post(acceptor_.get_executor(), [this] { accept(); });
    const uint32_t n = std::max<uint32_t>(options_.threads, 1);
    for (uint32_t i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
  }

  int port() const { return port_; }
  size_t connections() const { return open_.load(); }

  void stop(std::chrono::milliseconds grace);
  void post(std::function<void()> fn) {
    if (!destroying()) net::post(ioc_, std::move(fn));
  }

  // ---- used by sessions ----
  const http_server_options& options() const { return options_; }
  const http_handler& handler() const { return handler_; }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  bool destroying() const { return destroying_.load(std::memory_order_acquire); }
  void add(session* s, const std::shared_ptr<session>& p) {
    std::lock_guard<std::mutex> lock(mutex_);
    sessions_.emplace(s, p);
    open_.fetch_add(1);
  }
  void remove(session* s) {
    std::lock_guard<std::mutex> lock(mutex_);
    sessions_.erase(s);
    open_.fetch_sub(1);
    if (sessions_.empty()) drained_.notify_all();
  }

 private:
  void run() {
    // No exception leaves the thread: a handler that throws is logged and the loop goes on.
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("{}: unexpected exception on an I/O thread: {}", options_.name, e.what());
      } catch (...) {
        spdlog::error("{}: unexpected exception on an I/O thread", options_.name);
      }
    }
  }

  void accept() {
    if (stopping()) return;
    acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
      on_accept(ec, std::move(s));
    });
  }

  void on_accept(beast::error_code ec, tcp::socket socket);
  void refuse(tcp::socket& socket);

  http_server_options options_;
  http_handler handler_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> destroying_{false};
  std::atomic<size_t> open_{0};
  int port_ = 0;

  std::mutex mutex_;  // guards sessions_
  std::condition_variable drained_;
  std::unordered_map<session*, std::weak_ptr<session>> sessions_;

  // Destroyed before the registry above: the sessions the io_context still holds unregister.
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::optional<net::steady_timer> accept_retry_;
  std::vector<std::thread> threads_;
  bool joined_ = false;
};

/// One connection. Lives as long as an operation or a responder holds it; every member is touched
/// only on the connection's strand.
class session : public std::enable_shared_from_this<session> {
 public:
  session(http_server::impl& server, tcp::socket socket)
      : server_(server), stream_(std::move(socket)) {}

  ~session() { server_.remove(this); }

  void start() { read_header(); }

  /// From stop(): closes an idle connection now; a busy one closes after its response.
  void shut_down() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      self->close_after_ = true;
      if (self->phase_ == phase::reading_header || self->phase_ == phase::reading_body ||
          self->phase_ == phase::lingering)
        self->close();
    });
  }

  /// Called by a responder on any thread.
  void post_response(http_response r) {
    if (server_.destroying()) return;
    net::post(stream_.get_executor(), [self = shared_from_this(), r = std::move(r)]() mutable {
      self->write(std::move(r));
    });
  }

 private:
  enum class phase { reading_header, reading_body, handling, writing, lingering, closed };

  /// Shared by every copy of one request's responder: the first call wins; a responder dropped
  /// uncalled answers 500.
  struct reply_slot {
    std::shared_ptr<session> owner;
    std::atomic<bool> sent{false};
    explicit reply_slot(std::shared_ptr<session> s) : owner(std::move(s)) {}
    ~reply_slot() {
      if (!sent.load())
        owner->post_response(http_error(500, "internal: the request was dropped unanswered"));
    }
  };

  void read_header() {
    if (server_.stopping()) return close();
    parser_.emplace();
    parser_->header_limit(server_.options().max_header_bytes);
    parser_->body_limit(server_.options().max_body_bytes);
    phase_ = phase::reading_header;
    stream_.expires_after(server_.options().idle_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    const auto& h = parser_->get();
    if (auto e = h.find(http::field::expect); e != h.end()) {
      if (!iequals(e->value(), "100-continue"))
        return fail(417, "Expect: only 100-continue is supported");
      if (!parser_->is_done()) {
        continue_.emplace(http::status::continue_, h.version());
        stream_.expires_after(server_.options().io_timeout);
        return http::async_write(stream_, *continue_,
                                 [self = shared_from_this()](beast::error_code ec, size_t) {
                                   self->continue_.reset();
                                   if (ec) return self->close();
                                   self->read_body();
                                 });
      }
    }
    if (parser_->is_done()) return dispatch();
    read_body();
  }

  void read_body() {
    phase_ = phase::reading_body;
    stream_.expires_after(server_.options().io_timeout);
    // The read buffer is sized by its capacity (Beast reads max(512, capacity - size) bytes per
    // call): left at the header's 512 bytes, a 150 KB body took ~300 recvmsg calls and ~1 ms.
    // Room for the whole body (up to kMaxReadChunk) reads it in a few calls.
    if (auto length = parser_->content_length()) {
      const uint64_t want = std::min<uint64_t>(*length, kMaxReadChunk);
      if (buffer_.capacity() - buffer_.size() < want)
        buffer_.reserve(buffer_.size() + static_cast<size_t>(want));
    } else if (buffer_.capacity() - buffer_.size() < kChunkedReadChunk) {
      buffer_.reserve(buffer_.size() + kChunkedReadChunk);
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->on_read_error(ec);
                       self->dispatch();
                     });
  }

  void on_read_error(beast::error_code ec) {
    // The peer went away, the idle timer fired, or stop() closed the socket: nothing to answer.
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset ||
        ec == net::error::bad_descriptor || ec == http::error::partial_message)
      return close();
    if (ec == http::error::body_limit)
      return fail(413, "the request body exceeds the node's limit of " +
                           std::to_string(server_.options().max_body_bytes) +
                           " bytes (max_message_bytes)");
    if (ec == http::error::header_limit)
      return fail(431, "the request line and headers exceed " +
                           std::to_string(server_.options().max_header_bytes) + " bytes");
    return fail(400, "malformed HTTP request: " + ec.message());
  }

  /// Answers an error the request itself caused and closes after draining the client's bytes.
  void fail(int status, const std::string& message) {
    http_response r = http_error(status, message);
    r.close = true;
    linger_ = true;
    write(std::move(r));
  }

  void dispatch() {
    auto msg = parser_->release();
    parser_.reset();
    http_request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.path = req.target.substr(0, req.target.find('?'));
    req.version = msg.version();
    req.headers.reserve(16);
    for (const auto& f : msg) req.headers.emplace_back(f.name_string(), f.value());
    req.body = std::move(msg.body());
    keep_alive_ = msg.keep_alive();
    version_ = msg.version();
    head_ = msg.method() == http::verb::head;
    phase_ = phase::handling;
    stream_.expires_never();
    auto slot = std::make_shared<reply_slot>(shared_from_this());
    http_responder respond = [slot](http_response r) {
      // The first call owns the slot's connection reference and lets it go with the post: a
      // responder copy kept after answering must not keep the connection open.
      if (slot->sent.exchange(true)) return;
      const std::shared_ptr<session> s = std::move(slot->owner);
      s->post_response(std::move(r));
    };
    try {
      server_.handler()(std::move(req), respond);
    } catch (const std::exception& e) {
      spdlog::error("{}: handler threw: {}", server_.options().name, e.what());
      respond(http_error(500, std::string("internal: ") + e.what()));
    } catch (...) {
      respond(http_error(500, "internal: the handler threw"));
    }
  }

  void write(http_response r) {
    if (phase_ == phase::closed) return;  // the connection is gone; the response is dropped
    close_after_ = close_after_ || r.close || !keep_alive_ || server_.stopping();
    const auto status = static_cast<http::status>(r.status);
    if (head_) {
      head_res_.emplace(status, version_);
      fill_headers(*head_res_, r);
      head_res_->content_length(r.size());
    } else {
      res_.emplace(status, version_);
      fill_headers(*res_, r);
      auto& b = res_->body();
      b.head = std::move(r.body);
      b.tail = std::move(r.tail);
      b.owner = std::move(r.tail_owner);
      res_->prepare_payload();
    }
    phase_ = phase::writing;
    stream_.expires_after(server_.options().io_timeout);
    auto done = [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); };
    if (head_)
      http::async_write(stream_, *head_res_, std::move(done));
    else
      http::async_write(stream_, *res_, std::move(done));
  }

  template <class Message>
  void fill_headers(Message& m, const http_response& r) {
    m.set(http::field::server, server_header);
    if (!r.content_type.empty()) m.set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) m.set(k, v);
    m.keep_alive(!close_after_);
  }

  void on_write(beast::error_code ec) {
    res_.reset();  // drops the tail's owner: output blocks go back to their pool now
    head_res_.reset();
    head_ = false;
    // An idle keep-alive connection keeps no large read buffer (pipelined bytes stay).
    if (buffer_.capacity() > kIdleReadBuffer) buffer_.shrink_to_fit();
    if (ec) return close();
    if (linger_) return linger();
    if (close_after_) return close();
    read_header();
  }

  /// After an error answer: stop sending, read and drop what the client still sends for a while,
  /// then close. Closing with unread bytes would reset the connection and lose the answer.
  void linger() {
    phase_ = phase::lingering;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(5));
    if (!drain_) drain_ = std::make_unique<std::array<char, 16384>>();
    stream_.async_read_some(net::buffer(*drain_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->linger();
                            });
  }

  void close() {
    if (phase_ == phase::closed) return;
    phase_ = phase::closed;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  /// Read-buffer sizes: at most this much room for a body with a Content-Length; this much for a
  /// chunked one; an idle connection shrinks back once its buffer exceeds kIdleReadBuffer.
  static constexpr uint64_t kMaxReadChunk = 1u << 20;
  static constexpr size_t kChunkedReadChunk = 64u << 10;
  static constexpr size_t kIdleReadBuffer = 64u << 10;

  http_server::impl& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::empty_body>> continue_;
  std::optional<http::response<segmented_body>> res_;
  std::optional<http::response<http::empty_body>> head_res_;
  std::unique_ptr<std::array<char, 16384>> drain_;
  phase phase_ = phase::reading_header;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool head_ = false;
  bool close_after_ = false;
  bool linger_ = false;
};

void http_server::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || stopping()) return;
  if (ec) {
    // Out of file descriptors (or a transient error): try again shortly instead of spinning.
    spdlog::warn("{}: accept failed: {}", options_.name, ec.message());
    accept_retry_.emplace(acceptor_.get_executor(), std::chrono::milliseconds(100));
    accept_retry_->async_wait([this](beast::error_code e) {
      if (!e) accept();
    });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);  // responses are written whole: no Nagle wait
  if (open_.load() >= options_.max_connections) {
    refuse(socket);
  } else {
    auto s = std::make_shared<session>(*this, std::move(socket));
    add(s.get(), s);
    s->start();
  }
  accept();
}

void http_server::impl::refuse(tcp::socket& socket) {
  static const std::string response = [] {
    const std::string body = kserve::error_body("too many connections; retry later");
    return "HTTP/1.1 503 Service Unavailable\r\nServer: troupe\r\nContent-Type: "
           "application/json\r\n"
           "Connection: close\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  beast::error_code ignored;
  socket.non_blocking(true, ignored);  // a fresh socket's send buffer takes it; never wait here
  socket.write_some(net::buffer(response), ignored);
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
}

void http_server::impl::stop(std::chrono::milliseconds grace) {
  if (joined_) return;
  if (!stopping_.exchange(true)) {
    net::post(acceptor_.get_executor(), [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
      if (accept_retry_) accept_retry_->cancel();
    });
    std::vector<std::shared_ptr<session>> open;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& [p, w] : sessions_)
        if (auto s = w.lock()) open.push_back(std::move(s));
    }
    for (auto& s : open) s->shut_down();
  }
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!drained_.wait_for(lock, grace, [&] { return sessions_.empty(); }) && grace.count() > 0)
      spdlog::warn("{}: {} connection(s) still open after the grace period are closed",
                   options_.name, sessions_.size());
  }
  work_.reset();
  ioc_.stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  joined_ = true;
}

expected<std::unique_ptr<http_server>> http_server::create(http_server_options o, http_handler h) {
  if (!h) return invalid_argument("http_server needs a handler");
  auto p = std::make_unique<impl>(std::move(o), std::move(h));
  TROUPE_RETURN_IF_ERROR(p->listen());
  p->start();
  return std::unique_ptr<http_server>(new http_server(std::move(p)));
}

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
http_server::~http_server() = default;
int http_server::port() const {
  return impl_->port();
}
size_t http_server::connections() const {
  return impl_->connections();
}
void http_server::stop(std::chrono::milliseconds grace) {
  impl_->stop(grace);
}
void http_server::post(std::function<void()> fn) {
  impl_->post(std::move(fn));
}

}  // namespace troupe::cluster
