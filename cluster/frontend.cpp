#include "cluster/frontend.hpp"

#include <google/protobuf/arena.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "actors/actor_job_sink.hpp"
#include "actors/caf_compat.hpp"
#include "actors/fault_sites.hpp"
#include "actors/node.hpp"
#include "cluster/connection_budget.hpp"
#include "core/thread_name.hpp"
#include "proto/troupe.pb.h"
#include "serving/metrics.hpp"
#include "serving/model_table.hpp"
#include "serving/readiness.hpp"
#include "serving/request_binding.hpp"

namespace troupe::cluster {

namespace pb = troupe::v1;
using serving::infer_job;
using serving::job_list;
using clock_type = std::chrono::steady_clock;

namespace {

/// Bytes of protobuf arena each pooled request starts with: envelope, reply and their strings fit
/// here for ordinary requests, so parsing and building them allocates nothing.
constexpr size_t arena_block_bytes = 4096;

/// Where the actors that answer jobs (router, batchers) leave them for the I/O thread, through
/// the frontend's job_sink. Shared (not owned by the frontend) so that an answer arriving after
/// the frontend stopped finds a live queue.
/// The eventfd is written only while the I/O thread sleeps (or is about to): a busy I/O thread
/// picks completions up between reads without a system call on either side.
class completion_queue {
 public:
  completion_queue() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~completion_queue() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

  void post(const job_list& l) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pending_.push_back(l);
    }
    // seq_cst pairs with the consumer's store in about_to_sleep(): either it sees the list or we
    // see that it sleeps.
    if (sleeping_.load(std::memory_order_seq_cst)) wake();
  }
  void wake() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof(one));
  }
  /// Swaps the pending lists into `out` (whose capacity is reused).
  void take(std::vector<job_list>& out) {
    std::lock_guard<std::mutex> lock(mutex_);
    out.swap(pending_);
  }
  /// Announces that the consumer will block in poll; false (and no sleep) if work is pending.
  bool about_to_sleep() {
    sleeping_.store(true, std::memory_order_seq_cst);
    std::lock_guard<std::mutex> lock(mutex_);
    if (!pending_.empty()) {
      sleeping_.store(false, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  void woke() {
    sleeping_.store(false, std::memory_order_relaxed);
    uint64_t count;
    [[maybe_unused]] ssize_t n = read(fd_, &count, sizeof(count));
  }

 private:
  int fd_;
  std::mutex mutex_;
  std::vector<job_list> pending_;
  std::atomic<bool> sleeping_{false};
};

/// The frontend's job_sink: answered jobs go straight into the completion queue, from the thread
/// of the actor that answered them (no actor in between).
class queue_sink final : public serving::job_sink {
 public:
  explicit queue_sink(std::shared_ptr<completion_queue> q) : q_(std::move(q)) {}
  void replied(job_list jobs) override { q_->post(jobs); }
  void released(job_list jobs) override { q_->post(jobs); }

 private:
  std::shared_ptr<completion_queue> q_;
};

/// One pooled request: the job the actors see plus everything transport-side.
struct job_slot : infer_job {
  job_slot() : arena(arena_options()) {}

  google::protobuf::ArenaOptions arena_options() {
    google::protobuf::ArenaOptions o;
    o.initial_block = reinterpret_cast<char*>(block);
    o.initial_block_size = sizeof(block);
    return o;
  }

  alignas(64) std::byte block[arena_block_bytes];
  google::protobuf::Arena arena;
  zmq::message_t identity;
  std::vector<zmq::message_t> frames;  // as received, delimiter and envelope included
  size_t frame_count = 0;
  size_t envelope_index = 0;  // 1 when a REQ-style empty delimiter came first
  /// The whole message as it arrived; past the limits only its first two frames were kept.
  uint64_t message_bytes = 0;
  size_t message_frames = 0;
  bool oversize = false;
  /// The connection's count of this request (connection_budget): handed to the reply's envelope,
  /// which gives it back once it has left; null once handed on.
  connection_budget::connection* conn = nullptr;
  bool admitted = false;                 // within the connection's max_outstanding_per_connection
  pb::ClientMessage* request = nullptr;  // null when the envelope did not decode
  bool replied = false;
  bool out = false;  // held by the actors
  /// When a job the actors hold and have not answered counts as lost (see sweep_lost); the
  /// frontend's own copy: the job's deadline is the router's to set. no_deadline: never.
  serving::time_point lost_after = serving::no_deadline;
};

/// The actors answer every job by its deadline (the batcher answers a running one at it); a job
/// still unanswered this long after is taken for lost on the way (a dropped message: fault
/// injection on the frontend_router hop) and answered DEADLINE_EXCEEDED by the frontend.
constexpr std::chrono::milliseconds lost_request_grace{1000};

std::string_view view_of(const std::string& s) {
  return {s.data(), s.size()};
}

pb::ModelState to_proto(serving::version_state s) {
  return static_cast<pb::ModelState>(static_cast<int>(s));
}

void fill_specs(const std::vector<serving::tensor_spec>& specs,
                google::protobuf::RepeatedPtrField<pb::TensorSpec>* out) {
  for (const auto& s : specs) {
    pb::TensorSpec* t = out->Add();
    t->set_name(s.name);
    t->set_dtype(static_cast<pb::DataType>(dtype_to_onnx(s.type)));
    for (int64_t d : s.shape) t->add_shape(d);
  }
}

uint32_t zmq_io_threads(uint32_t asked) {
  if (asked > 0) return asked;
  return std::clamp(std::thread::hardware_concurrency() / 4, 1u, 4u);
}

void free_output_block(void* /*data*/, void* hint) {
  static_cast<serving::output_block*>(hint)->release();
}

/// A reply's envelope: its release (ZeroMQ's I/O thread, once the envelope has left the queue
/// towards the client, or ours when the reply is not sent) gives the connection's count back.
void free_counted_envelope(void* data, void* hint) {
  std::free(data);
  static_cast<connection_budget::connection*>(hint)->reply_left();
}

/// Frames kept of one message, whatever its size: the node's own bound on a message with very
/// many (small) frames; its frames beyond this are dropped as they are read, like bytes beyond
/// max_message_bytes. Far above any request (an envelope plus one frame per model input).
constexpr size_t max_message_frames = 65536;

}  // namespace

class frontend::impl {
 public:
  impl(caf::actor_system& sys, const actors::node_handles& node, serving::table_holder& holder,
       serving::serving_metrics* metrics, frontend_options o)
      : sys_(sys),
        router_(actors::make_router_target(node.router)),
        holder_(holder),
        metrics_(metrics),
        options_(std::move(o)),
        budget_(options_.max_outstanding_per_connection),
        completions_(std::make_shared<completion_queue>()),
        ctx_(static_cast<int>(zmq_io_threads(options_.io_threads))) {}

  ~impl() { stop(); }

  status start() {
    if (!completions_->ok()) return io_error("eventfd failed");
    sink_ = std::make_shared<queue_sink>(completions_);
    std::promise<status> bound;
    auto result = bound.get_future();
    thread_ = std::thread([this, &bound] {
      name_this_thread("frontend");
      loop(bound);
    });
    status s = result.get();
    if (!s.is_ok()) thread_.join();
    return s;
  }

  const std::string& endpoint() const { return endpoint_; }
  void begin_drain() {
    draining_.store(true);
    holder_.draining.store(true);
    completions_->wake();  // the I/O thread reads what is queued now, even if it was asleep
  }
  uint32_t inflight() const { return inflight_.load(std::memory_order_acquire); }

  bool wait_idle(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(idle_mutex_);
    // Idle once nothing is in flight AND the thread has found the socket empty since the drain
    // began: requests that reached the socket before SIGTERM are answered, not dropped unread.
    return idle_cv_.wait_for(lock, timeout, [&] {
      return inflight_.load() == 0 && (!draining_.load() || drained_socket_.load());
    });
  }

  void stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    completions_->wake();
    thread_.join();
  }

 private:
  // ---- the I/O thread ----------------------------------------------------------------------

  void loop(std::promise<status>& bound) {
    zmq::socket_t socket(ctx_, zmq::socket_type::router);
    try {
      // An unknown peer is an error, not a silent drop.
      socket.set(zmq::sockopt::router_mandatory, 1);
      // No high-water mark: what waits for each client is bounded by connection_budget (a full
      // queue could only refuse replies that exist; see connection_budget.hpp).
      socket.set(zmq::sockopt::sndhwm, 0);
      socket.set(zmq::sockopt::linger, 2000);
      // ZeroMQ hands a multipart message over only once its last frame has arrived, so the frames
      // of one message cannot be counted as they come; what it can refuse as they come is one
      // frame: a frame over the limit is refused from its size header, before a byte of it is
      // buffered, and the connection is dropped. A message over the limit in smaller frames gets
      // a typed error (and is freed frame by frame as it is read: receive()).
      socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(std::min<uint64_t>(
                                               options_.max_message_bytes, uint64_t{INT64_MAX})));
      socket.bind(options_.listen);
      endpoint_ = socket.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      bound.set_value(io_error("cannot listen on '" + options_.listen + "': " + e.what()));
      return;
    }
    socket_ = &socket;
    bound.set_value(status::ok());

    std::vector<job_list> done;
    const auto spin = std::chrono::microseconds(options_.idle_spin_us);
    auto last_work = clock_type::now();
    auto last_sweep = last_work;
    while (!stop_.load(std::memory_order_acquire)) {
      // Busy: alternate between replies and requests without blocking. Idle: sleep in poll on the
      // socket and the completion eventfd.
      completions_->take(done);
      bool worked = !done.empty();
      for (job_list& l : done) complete(l);
      done.clear();
      const bool draining = draining_.load(std::memory_order_acquire);
      const uint32_t read = read_requests();
      worked |= read > 0;
      if (draining && read == 0 && !drained_socket_.load(std::memory_order_relaxed)) {
        std::lock_guard<std::mutex> lock(idle_mutex_);
        drained_socket_.store(true);
        idle_cv_.notify_all();
      }
      if (metrics_)
        metrics_->set_inflight(serving::serving_metrics::door::zeromq,
                               inflight_.load(std::memory_order_relaxed));
      if (const auto now = clock_type::now(); now - last_sweep >= lost_request_grace / 4) {
        last_sweep = now;
        sweep_lost(now);
      }
      if (worked) {
        last_work = clock_type::now();
        continue;
      }
      // Spin (yielding the core to anything runnable) for a while after the last work: a reply
      // or the client's next request that comes within it is picked up without the eventfd and
      // poll wake-up (tens of microseconds each; more on a host whose idle cores sleep deeply).
      if (spin.count() > 0 && clock_type::now() - last_work < spin) {
        std::this_thread::yield();
        continue;
      }
      if (!completions_->about_to_sleep()) continue;
      zmq_pollitem_t items[2] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, completions_->fd(), ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, std::chrono::milliseconds(200));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) {
          spdlog::error("frontend poll failed: {}", e.what());
          completions_->woke();
          break;
        }
      }
      completions_->woke();
    }
    cancel_inflight();
    socket_ = nullptr;
    socket.close();  // lingers up to 2 s to flush replies
  }

  job_slot* acquire_slot() {
    if (!free_.empty()) {
      job_slot* s = free_.back();
      free_.pop_back();
      return s;
    }
    if (slots_.size() >= options_.max_inflight) return nullptr;
    slots_.push_back(std::make_unique<job_slot>());
    return slots_.back().get();
  }

  void recycle(job_slot* s) {
    for (size_t i = 0; i < s->frame_count; ++i) s->frames[i].rebuild();  // give the bytes back now
    s->frame_count = 0;
    if (s->frames.size() > 64) {  // a message with very many frames must not pin memory in the pool
      s->frames.clear();
      s->frames.shrink_to_fit();
    }
    if (s->conn) std::exchange(s->conn, nullptr)->reply_left();  // no reply went out
    s->request = nullptr;
    s->arena.Reset();  // keeps the initial block
    s->reset_for_reuse();
    s->replied = false;
    if (s == &overflow_) return;
    if (s->out) {
      s->out = false;
      if (inflight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(idle_mutex_);
        idle_cv_.notify_all();
      }
    }
    free_.push_back(s);
  }

  /// Receives one multipart message into `s`. False when none is waiting. A frame that takes the
  /// message past max_message_bytes or max_message_frames is dropped as soon as it is read (the
  /// first two are kept: the envelope, after a delimiter, gives the error reply its id), so `s`
  /// never holds more than the limit of one message.
  bool receive(job_slot* s) {
    auto& socket = *socket_;
    if (!socket.recv(s->identity, zmq::recv_flags::dontwait)) return false;
    s->frame_count = 0;
    s->message_bytes = 0;
    s->message_frames = 0;
    s->oversize = false;
    bool more = s->identity.more();
    while (more) {
      if (s->frame_count == s->frames.size()) s->frames.emplace_back();
      zmq::message_t& f = s->frames[s->frame_count];
      // The rest of a multipart message is already here: a blocking receive returns at once.
      if (!socket.recv(f, zmq::recv_flags::none)) break;
      more = f.more();
      s->message_bytes += f.size();
      ++s->message_frames;
      s->oversize = s->oversize || s->message_bytes > options_.max_message_bytes ||
                    s->message_frames > max_message_frames;
      if (s->oversize && s->frame_count >= 2)
        f.rebuild();  // dropped: its bytes go back now
      else
        ++s->frame_count;
    }
    s->envelope_index = s->frame_count > 1 && s->frames[0].size() == 0 ? 1 : 0;
    const auto arrival = budget_.arrive(
        std::string_view(static_cast<const char*>(s->identity.data()), s->identity.size()));
    s->conn = arrival.conn;
    s->admitted = arrival.admitted;
    return true;
  }

  /// Reads what is waiting (up to max_read_batch messages); returns how many.
  uint32_t read_requests() {
    job_list submit;
    uint32_t n = 0;
    for (; n < options_.max_read_batch; ++n) {
      job_slot* s = acquire_slot();
      const bool overflow = s == nullptr;
      if (overflow) s = &overflow_;
      bool got = false;
      try {
        got = receive(s);
      } catch (const zmq::error_t& e) {
        spdlog::warn("frontend receive failed: {}", e.what());
      }
      if (!got) {
        if (!overflow) free_.push_back(s);
        break;
      }
      handle(s, overflow, submit);
    }
    if (!submit.empty()) send_to_router(submit);
    return n;
  }

  /// Through the frontend_router hop's faults when a fault plan is set: a dropped list's
  /// requests are answered by sweep_lost. (No duplicate: the plan refuses it on this hop; a job
  /// list is intrusive, one party's at a time, so a copy of the message cannot exist.)
  void send_to_router(job_list& submit) {
    if (options_.faults)
      if (auto f = actors::take_message_fault(*options_.faults, "frontend_router")) {
        if (f->kind == serving::fault_kind::drop) return;
        router_->submit_after(f->delay, submit);
        return;
      }
    router_->submit(submit);
  }

  /// Answers DEADLINE_EXCEEDED the jobs held past lost_after (see lost_request_grace). Their
  /// slots stay out until the job comes back (then it is released without a second reply); one
  /// that never does stays allocated: the cost of a message lost in the node.
  void sweep_lost(serving::time_point now) {
    for (auto& p : slots_) {
      job_slot* s = p.get();
      if (!s->out || s->replied || s->lost_after > now) continue;
      spdlog::warn("request {} unanswered {} ms past its deadline: taken for lost",
                   reply_id(s), lost_request_grace.count());
      // Not counted in the version's metrics: the router may be writing s->metrics.
      send_error(s,
                 make_error(error_code::deadline_exceeded,
                            "no answer from the node within the request's deadline: the request "
                            "was lost between the door and the model's queue"),
                 metrics_ ? &metrics_->unrouted() : nullptr);
    }
  }

  /// Decodes, validates and either queues `s` into `submit` or answers it now.
  void handle(job_slot* s, bool overflow, job_list& submit) {
    s->arrival = clock_type::now();
    if (s->frame_count <= s->envelope_index)
      return answer_now(s, invalid_argument("empty message: expected an envelope frame"));
    const bool decoded = parse_envelope(s);
    if (s->oversize)  // answered with the request's id when its envelope decodes
      return answer_now(
          s, invalid_argument("message of " + std::to_string(s->message_bytes) + " bytes in " +
                              std::to_string(s->message_frames) +
                              " frames exceeds the node's max_message_bytes " +
                              std::to_string(options_.max_message_bytes) +
                              (s->message_frames > max_message_frames
                                   ? " or its " + std::to_string(max_message_frames) + " frames"
                                   : std::string())));
    if (!decoded)
      return answer_now(s, invalid_argument("the envelope frame is not a troupe.v1.ClientMessage"));
    if (!s->admitted)
      return answer_now(
          s, make_error(error_code::overloaded,
                        "this connection has " + std::to_string(budget_.max_outstanding()) +
                            " requests unanswered or replies unread "
                            "(max_outstanding_per_connection); read replies, then retry"));
    refresh_table();
    switch (s->request->kind_case()) {
      case pb::ClientMessage::kHealth:
        return answer_health(s);
      case pb::ClientMessage::kMetadata:
        return answer_metadata(s);
      case pb::ClientMessage::kInfer:
        break;
      default:
        return answer_now(
            s, invalid_argument("the envelope holds no request (infer, metadata or health)"));
    }
    if (overflow)
      return answer_now(s, make_error(error_code::overloaded,
                                      "the node holds " + std::to_string(options_.max_inflight) +
                                          " requests (max_inflight); retry later"));
    if (draining_.load(std::memory_order_relaxed))
      return answer_now(
          s, make_error(error_code::unavailable, "the node is draining (shutting down)"));
    if (status st = build_job(s); !st.is_ok()) return answer_now(s, std::move(st));
    const auto timeout = s->signature ? s->signature->effective_timeout(s->timeout)
                                      : std::chrono::microseconds(0);
    s->lost_after =
        timeout.count() > 0 ? s->arrival + timeout + lost_request_grace : serving::no_deadline;
    s->out = true;
    inflight_.fetch_add(1, std::memory_order_acq_rel);
    submit.push_back(s);
  }

  /// Decodes the envelope frame into s->request; false (and no request: its reply carries an
  /// empty id) when it is not a ClientMessage. A failed parse may have set fields already, an id
  /// that is not UTF-8 among them, and a reply must not echo it: protobuf could not decode it.
  bool parse_envelope(job_slot* s) {
    s->request = google::protobuf::Arena::CreateMessage<pb::ClientMessage>(&s->arena);
    const zmq::message_t& env = s->frames[s->envelope_index];
    if (env.size() <= static_cast<size_t>(INT32_MAX) &&
        s->request->ParseFromArray(env.data(), static_cast<int>(env.size())))
      return true;
    s->request = nullptr;
    return false;
  }

  void refresh_table() {
    const uint64_t g = holder_.generation();
    if (g != table_generation_) {
      table_ = holder_.get();
      table_generation_ = g;
    }
  }

  status build_job(job_slot* s) {
    const pb::InferRequest& r = s->request->infer();
    const size_t tensors = s->frame_count - s->envelope_index - 1;
    if (static_cast<size_t>(r.inputs_size()) != tensors)
      return invalid_argument("the envelope lists " + std::to_string(r.inputs_size()) +
                              " input tensors but " + std::to_string(tensors) +
                              " tensor frames follow it");
    // Scratch vectors of the I/O thread: their capacity is kept between requests.
    request_tensors_.resize(tensors);
    for (size_t i = 0; i < tensors; ++i) {
      const pb::TensorDesc& d = r.inputs(static_cast<int>(i));
      auto type = dtype_from_onnx(d.dtype());
      if (!type) return invalid_argument("input '" + d.name() + "': " + type.error().message());
      const zmq::message_t& frame = s->frames[s->envelope_index + 1 + i];
      serving::request_tensor& t = request_tensors_[i];
      t.name = view_of(d.name());
      t.type = *type;
      t.shape = std::span<const int64_t>(d.shape().data(), static_cast<size_t>(d.shape_size()));
      t.data = static_cast<const std::byte*>(frame.data());
      t.bytes = frame.size();
    }
    output_names_.clear();
    for (const std::string& name : r.outputs()) output_names_.push_back(view_of(name));
    parameters_.clear();
    for (const auto& [k, val] : r.parameters()) parameters_.emplace_back(view_of(k), view_of(val));
    serving::request_fields f;
    f.model = view_of(r.model());
    f.version = r.version();
    f.inputs = request_tensors_;
    f.outputs = output_names_;
    f.priority = r.priority();
    f.timeout = std::chrono::microseconds(
        static_cast<int64_t>(std::min<uint64_t>(r.timeout_us(), uint64_t{1} << 50)));
    f.routing_key = view_of(r.routing_key());
    f.parameters = parameters_;
    TROUPE_RETURN_IF_ERROR(serving::bind_request(table_.get(), f, *s));
    s->reply_to = sink_;
    s->sequence = ++sequence_;
    return status::ok();
  }

  // ---- replies ----------------------------------------------------------------------------

  /// Sends [identity][delimiter?][envelope][frames...]; false when the peer is gone.
  bool send_reply(job_slot* s, const pb::ServerMessage& m, std::vector<zmq::message_t>* tensors) {
    auto& socket = *socket_;
    const size_t size = m.ByteSizeLong();
    zmq::message_t env;
    if (connection_budget::connection* c = std::exchange(s->conn, nullptr)) {
      // The envelope carries the connection's count of this request; it is given back when
      // ZeroMQ releases the envelope (sent on, or dropped with the connection) or, if the reply
      // is not sent, when `env` goes out of scope here.
      void* bytes = std::malloc(std::max<size_t>(size, 1));
      if (!bytes) {
        c->reply_left();
        spdlog::error("reply dropped: no memory for a {}-byte envelope", size);
        return false;
      }
      m.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(bytes));
      env = zmq::message_t(bytes, size, &free_counted_envelope, c);
    } else {
      env.rebuild(size);
      m.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(env.data()));
    }
    const bool has_tensors = tensors && !tensors->empty();
    try {
      if (!socket.send(s->identity, zmq::send_flags::sndmore | zmq::send_flags::dontwait))
        return false;
      if (s->envelope_index == 1) socket.send(zmq::message_t(), zmq::send_flags::sndmore);
      socket.send(env, has_tensors ? zmq::send_flags::sndmore : zmq::send_flags::none);
      if (has_tensors)
        for (size_t i = 0; i < tensors->size(); ++i)
          socket.send((*tensors)[i],
                      i + 1 < tensors->size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      // EHOSTUNREACH: the client disconnected; its reply has nowhere to go.
      spdlog::debug("reply dropped: {}", e.what());
      return false;
    }
    return true;
  }

  const serving::version_metrics* metrics_of(const job_slot* s) const {
    if (s->metrics) return s->metrics;
    return metrics_ ? &metrics_->unrouted() : nullptr;
  }

  void record(const job_slot* s, error_code code) {
    if (const auto* vm = metrics_of(s)) {
      vm->record_request(code,
                         std::chrono::duration<double>(clock_type::now() - s->arrival).count());
    }
  }

  /// The id a reply echoes: ClientMessage.id, else InferRequest.id.
  static const std::string& reply_id(const job_slot* s) {
    static const std::string none;
    if (!s->request) return none;
    if (!s->request->id().empty() || !s->request->has_infer()) return s->request->id();
    return s->request->infer().id();
  }

  void send_error(job_slot* s, const status& st) { send_error(s, st, metrics_of(s)); }

  void send_error(job_slot* s, const status& st, const serving::version_metrics* counted_in) {
    auto* m = google::protobuf::Arena::CreateMessage<pb::ServerMessage>(&s->arena);
    m->set_id(reply_id(s));
    m->mutable_error()->set_code(static_cast<pb::ErrorCode>(static_cast<int>(st.code())));
    m->mutable_error()->set_message(st.message());
    // Counted before it leaves: a client that reads /metrics once it has its reply must find
    // its request there.
    if (counted_in)
      counted_in->record_request(
          st.code(), std::chrono::duration<double>(clock_type::now() - s->arrival).count());
    send_reply(s, *m, nullptr);
    s->replied = true;
  }

  void answer_now(job_slot* s, status st) {
    send_error(s, st);
    recycle(s);
  }

  /// `ready` and `reason` come from serving::evaluate_readiness (the answer every front door
  /// gives); the per-version list is this protocol's own detail.
  void answer_health(job_slot* s) {
    auto* m = google::protobuf::Arena::CreateMessage<pb::ServerMessage>(&s->arena);
    m->set_id(reply_id(s));
    pb::Health* h = m->mutable_health();
    const serving::node_readiness readiness =
        serving::evaluate_readiness(holder_, options_.readiness);
    h->set_live(readiness.live);
    h->set_ready(readiness.ready);
    h->set_reason(readiness.reason);
    h->set_draining(draining_.load() || holder_.draining.load());
    if (table_) {
      for (const auto& [name, model] : table_->models) {
        if (!model.load_error.is_ok()) {
          auto* v = h->add_models();
          v->set_model(name);
          v->set_state(pb::FAILED);
          v->mutable_error()->set_code(
              static_cast<pb::ErrorCode>(static_cast<int>(model.load_error.code())));
          v->mutable_error()->set_message(model.load_error.message());
          continue;
        }
        for (const auto& ver : model.versions) {
          auto* v = h->add_models();
          v->set_model(name);
          v->set_version(ver.version);
          const auto state = ver.current_state();
          v->set_state(to_proto(state));
          if (state == serving::version_state::failed) {
            v->mutable_error()->set_code(
                static_cast<pb::ErrorCode>(static_cast<int>(ver.load_error.code())));
            v->mutable_error()->set_message(ver.load_error.message());
          }
        }
      }
    }
    send_reply(s, *m, nullptr);
    recycle(s);
  }

  void answer_metadata(job_slot* s) {
    const pb::ModelMetadataRequest& r = s->request->metadata();
    if (!table_)
      return answer_now(
          s, make_error(error_code::unavailable, "the node is still loading its models"));
    const serving::model_entry* model = table_->find(r.model());
    if (!model) return answer_now(s, table_->unknown_model(r.model()));
    const serving::version_entry* v =
        r.version() > 0 ? model->find(r.version()) : model->default_version();
    if (!v && !model->versions.empty()) v = &model->versions.back();
    if (!v) return answer_now(s, not_found("model '" + r.model() + "' has no such version"));
    auto* m = google::protobuf::Arena::CreateMessage<pb::ServerMessage>(&s->arena);
    m->set_id(reply_id(s));
    pb::ModelMetadata* md = m->mutable_metadata();
    md->set_name(model->name);
    md->set_version(v->version);
    for (const auto& x : model->versions) md->add_versions(x.version);
    md->set_state(to_proto(v->current_state()));
    if (v->signature) {
      fill_specs(v->signature->inputs, md->mutable_inputs());
      fill_specs(v->signature->outputs, md->mutable_outputs());
      md->set_max_batch_size(static_cast<uint32_t>(v->signature->max_batch_size));
    }
    send_reply(s, *m, nullptr);
    recycle(s);
  }

  /// Jobs back from the actors: a reply list (answer, and take the job back unless it was
  /// answered early) or a release list (take back a job answered earlier).
  void complete(job_list& l) {
    while (infer_job* j = l.pop_front()) {
      auto* s = static_cast<job_slot*>(j);
      if (l.release) {
        recycle(s);
        continue;
      }
      if (!s->replied)
        reply_to_job(s);
      else
        release_slices(s);
      if (!s->early_reply) recycle(s);
    }
  }

  void release_slices(job_slot* s) {
    if (!s->result.is_ok())
      for (auto& o : s->outputs) o.block = nullptr;
    for (auto& o : s->outputs)
      if (o.block) {
        o.block->release();
        o.block = nullptr;
      }
  }

  void reply_to_job(job_slot* s) {
    if (!s->result.is_ok()) {
      send_error(s, s->result);
      return;
    }
    const auto now = clock_type::now();
    auto* m = google::protobuf::Arena::CreateMessage<pb::ServerMessage>(&s->arena);
    m->set_id(reply_id(s));
    pb::InferResponse* r = m->mutable_infer();
    r->set_id(s->request->infer().id());
    r->set_model(s->model);
    r->set_version(s->signature->version);
    r->set_batch_size(s->batch_rows);
    auto* t = r->mutable_timings();
    t->set_queue_us(static_cast<uint64_t>(s->queue_time.count()));
    t->set_compute_us(static_cast<uint64_t>(s->compute_time.count()));
    t->set_total_us(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - s->arrival).count()));
    tensors_.clear();
    for (auto& o : s->outputs) {
      pb::TensorDesc* d = r->add_outputs();
      d->set_name(s->signature->outputs[static_cast<size_t>(o.output_index)].name);
      d->set_dtype(static_cast<pb::DataType>(dtype_to_onnx(o.info.type)));
      for (int64_t x : o.info.shape) d->add_shape(x);
      // Zero copy: the frame points into the batch's output block and holds the slice's
      // reference, dropped by ZeroMQ (on its I/O thread) once the bytes have left.
      tensors_.emplace_back(o.block->data() + o.offset, o.info.bytes(), &free_output_block,
                            o.block);
      o.block = nullptr;
    }
    record(s, error_code::ok);  // before the reply leaves, as in send_error
    send_reply(s, *m, &tensors_);
    tensors_.clear();  // frames not sent (peer gone) release their blocks here
    s->replied = true;
  }

  /// stop(): requests still held by the actors are answered CANCELLED; their slots stay allocated
  /// (the actors may still read them) until the frontend is destroyed.
  void cancel_inflight() {
    // Completions that arrived in the meantime are answered normally first.
    std::vector<job_list> done;
    completions_->take(done);
    for (job_list& l : done) complete(l);
    for (auto& s : slots_)
      if (s->out && !s->replied) {
        send_error(s.get(), make_error(error_code::cancelled,
                                       "the node stopped before the request completed"));
      }
  }

  caf::actor_system& sys_;
  std::shared_ptr<serving::job_target> router_;  // where requests go; answers come to sink_
  serving::table_holder& holder_;
  serving::serving_metrics* metrics_;
  frontend_options options_;
  connection_budget budget_;  // I/O thread only, but for the counts' reply_left
  std::shared_ptr<completion_queue> completions_;
  std::shared_ptr<serving::job_sink> sink_;  // the completion queue's, shared by every job
  zmq::context_t ctx_;               // options_.io_threads I/O threads
  zmq::socket_t* socket_ = nullptr;  // the I/O thread's socket, valid while it runs
  std::string endpoint_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> draining_{false};
  /// The I/O thread read the socket empty after draining_ was set (guarded by idle_mutex_ for the
  /// condition variable).
  std::atomic<bool> drained_socket_{false};
  std::atomic<uint32_t> inflight_{0};
  std::mutex idle_mutex_;
  std::condition_variable idle_cv_;

  // I/O thread only.
  std::vector<std::unique_ptr<job_slot>> slots_;
  std::vector<job_slot*> free_;
  job_slot overflow_;  // reads (and refuses) requests beyond max_inflight
  serving::table_ptr table_;
  uint64_t table_generation_ = ~uint64_t{0};
  uint64_t sequence_ = 0;
  std::vector<zmq::message_t> tensors_;
  std::vector<serving::request_tensor> request_tensors_;
  std::vector<std::string_view> output_names_;
  std::vector<std::pair<std::string_view, std::string_view>> parameters_;
};

expected<std::unique_ptr<frontend>> frontend::create(caf::actor_system& sys,
                                                     const actors::node_handles& node,
                                                     serving::table_holder& holder,
                                                     serving::serving_metrics* metrics,
                                                     frontend_options o) {
  auto p = std::make_unique<impl>(sys, node, holder, metrics, std::move(o));
  TROUPE_RETURN_IF_ERROR(p->start());
  return std::unique_ptr<frontend>(new frontend(std::move(p)));
}

frontend::frontend(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
frontend::~frontend() = default;
const std::string& frontend::endpoint() const {
  return impl_->endpoint();
}
void frontend::begin_drain() {
  impl_->begin_drain();
}
uint32_t frontend::inflight() const {
  return impl_->inflight();
}
bool frontend::wait_idle(std::chrono::milliseconds timeout) {
  return impl_->wait_idle(timeout);
}
void frontend::stop() {
  impl_->stop();
}

}  // namespace troupe::cluster
