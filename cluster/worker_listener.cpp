#include "cluster/worker_listener.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "cluster/content_digest.hpp"
#include "cluster/message_outbox.hpp"
#include "cluster/worker_codec.hpp"
#include "core/thread_name.hpp"
#include "runtime/regular_file.hpp"
#include "serving/log_fields.hpp"

namespace troupe::cluster {

using namespace troupe::actors;
using namespace troupe::serving;
using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

/// What a channel (a proxy's thread) or an accept hands to the listener's thread.
struct listener_item {
  enum class what : uint8_t { bind, send, release, file_read };
  what kind = what::send;
  uint64_t peer = 0;
  worker_process_spec spec;       // bind
  worker_channel_events events;   // bind
  std::shared_ptr<std::atomic<bool>> closed;  // bind: set once the worker is gone
  std::optional<worker_message> message;  // send
  // file_read: a model file a worker asked for, read off the listener's thread.
  std::string sha256;
  std::string path;
  std::optional<zmq::message_t> bytes;
  status read;
};

/// Data lanes a worker may have (node_link_connections is at most 64, its first included).
constexpr size_t max_data_lanes = 63;

/// One more connection of a worker (cluster/worker_lanes.hpp).
struct data_lane {
  std::string routing;
  clock_type::time_point last_heard;
};

/// Where a connection leads: a worker and which of its connections (0: the first).
struct route {
  uint64_t peer = 0;
  uint32_t lane = 0;
};

/// A worker that said hello, as the listener's thread keeps it.
struct peer {
  std::string routing;  // its first connection's
  std::vector<data_lane> lanes;
  remote_worker_info info;
  bool bound = false;  // a proxy holds its channel
  worker_channel_events events;
  std::shared_ptr<shared_arena> arena;  // the proxy's
  uint32_t index = 0;                   // the proxy's worker index
  clock_type::time_point last_heard;
  std::map<uint64_t, shm_region> outputs;    // by run number: where its outputs go
  std::map<std::string, std::string> files;  // SHA-256 -> path, of the loads sent
  uint64_t memory_reported_bytes = 0;        // the free memory on_memory was told last
  std::shared_ptr<std::atomic<bool>> closed;  // its channel's: sends refused once set
};

/// A file's digest, kept while its size and modification time stay.
struct known_digest {
  uint64_t bytes = 0;
  int64_t mtime_ns = 0;
  std::string sha256;
};

void release_arena_ref(void*, void* hint) {
  delete static_cast<std::shared_ptr<shared_arena>*>(hint);
}

expected<std::pair<worker_kind, int>> parse_device(const std::string& d) {
  if (d == "cpu") return std::make_pair(worker_kind::cpu, 0);
  if (d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.size() < 10 &&
      d.find_first_not_of("0123456789", 5) == std::string::npos)
    return std::make_pair(worker_kind::gpu, std::stoi(d.substr(5)));
  return invalid_argument("device '" + d + "' is neither cpu nor cuda:N");
}

}  // namespace

struct worker_listener::shared : std::enable_shared_from_this<worker_listener::shared> {
  zmq::context_t context{1};
  worker_listener_options options;
  std::string endpoint;
  basic_outbox<listener_item> outbox;
  std::atomic<bool> stopping{false};
  std::thread thread;
  // The thread's own from start on.
  zmq::socket_t socket;
  zmq::socket_t zap;  // CURVE on: ZeroMQ's authentication requests (inproc://zeromq.zap.01)
  std::map<uint64_t, peer> peers;             // by the listener's id
  std::map<std::string, route> by_routing;    // routing id -> the worker and its connection
  uint64_t last_peer = 0;
  std::mutex digests_mutex;  // digests_ is filled by the proxies' threads too
  std::map<std::string, known_digest> digests;  // by path

  void run();
  void drain();
  void answer_zap();
  void on_frames(std::vector<zmq::message_t>& frames);
  void on_hello(const std::string& routing, const worker_hello& h);
  void on_lane_hello(const std::string& routing, const worker_hello& h);
  void on_item(listener_item& item);
  void deliver(peer& p, worker_message m);
  void send_to(peer& p, worker_message m);
  /// False when the connection is gone (the frames are then still the caller's).
  bool send_raw(const std::string& routing, const std::string& envelope,
                std::vector<zmq::message_t>& frames);
  bool send_raw(const std::string& routing, const std::string& envelope) {
    std::vector<zmq::message_t> none;
    return send_raw(routing, envelope, none);
  }
  void bye(const std::string& routing, const std::string& reason);
  /// Forgets `id`: its proxy hears `why` (when one holds it), the worker a bye (when asked).
  void drop(uint64_t id, const status& why, bool say_bye);
  void send_file(peer& p, const worker_file_wanted& w);
  void file_read(peer& p, listener_item& item);
  expected<known_digest> digest_of(const std::string& path);
  void memory_report(peer& p, const worker_heartbeat& h);
  /// Names the load's files by content: the model file and the other regular files of its
  /// folder (ONNX external data; the whole version folder goes, as a model repository's version
  /// is its folder), hashed or found hashed.
  status describe_files(worker_load& l);
};

namespace {

/// A proxy's channel to a worker of another host: everything goes through the listener's thread.
class remote_channel final : public worker_channel {
 public:
  remote_channel(std::shared_ptr<worker_listener::shared> s, uint64_t peer, int64_t pid,
                 std::shared_ptr<std::atomic<bool>> closed)
      : shared_(std::move(s)), peer_(peer), pid_(pid), closed_(std::move(closed)) {}
  ~remote_channel() override {
    listener_item item;
    item.kind = listener_item::what::release;
    item.peer = peer_;
    (void)shared_->outbox.post(std::move(item));
  }
  status send(worker_message m) override {
    if (closed_->load()) return status(error_code::unavailable, "the remote worker is gone");
    // A load's file is hashed here, on the proxy's thread, not on the listener's (which then
    // finds the digest known); an error is the listener's to answer.
    if (auto* l = std::get_if<worker_load>(&m)) (void)shared_->describe_files(*l);
    listener_item item;
    item.kind = listener_item::what::send;
    item.peer = peer_;
    item.message = std::move(m);
    if (!shared_->outbox.post(std::move(item)))
      return status(error_code::unavailable, "the control node's worker listener has stopped");
    return status::ok();
  }
  int64_t pid() const override { return pid_; }

 private:
  std::shared_ptr<worker_listener::shared> shared_;
  uint64_t peer_;
  int64_t pid_;
  std::shared_ptr<std::atomic<bool>> closed_;
};

}  // namespace

bool worker_listener::shared::send_raw(const std::string& routing, const std::string& envelope,
                                       std::vector<zmq::message_t>& frames) {
  try {
    socket.send(zmq::buffer(routing), zmq::send_flags::sndmore);
    socket.send(zmq::buffer(envelope),
                frames.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
    for (size_t i = 0; i < frames.size(); ++i)
      socket.send(frames[i],
                  i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH (router_mandatory): the connection is gone; its heartbeats stop, and the
    // timeout ends the peer.
    log_event(log_level::debug, "worker listener: send failed", {{"reason", e.what()}});
    return false;
  }
  return true;
}

void worker_listener::shared::bye(const std::string& routing, const std::string& reason) {
  send_raw(routing, encode_worker_message(worker_bye{reason}));
}

void worker_listener::shared::drop(uint64_t id, const status& why, bool say_bye) {
  auto it = peers.find(id);
  if (it == peers.end()) return;
  peer p = std::move(it->second);
  peers.erase(it);
  by_routing.erase(p.routing);
  for (const data_lane& l : p.lanes) by_routing.erase(l.routing);
  log_event(log_level::warn, "remote worker gone",
            {{"node", p.info.node}, {"device", p.info.device}, {"worker", p.index},
             {"incarnation", static_cast<int64_t>(p.info.incarnation)},
             {"reason", why.message()}});
  if (p.closed) p.closed->store(true);
  if (say_bye) bye(p.routing, why.message());
  if (p.bound && p.events.on_closed) p.events.on_closed(why);
}

expected<known_digest> worker_listener::shared::digest_of(const std::string& path) {
  struct stat s {};
  if (::stat(path.c_str(), &s) != 0)
    return not_found("model file '" + path + "': " + std::strerror(errno));
  const int64_t mtime = int64_t{s.st_mtim.tv_sec} * 1'000'000'000 + s.st_mtim.tv_nsec;
  {
    std::lock_guard<std::mutex> lock(digests_mutex);
    auto it = digests.find(path);
    if (it != digests.end() && it->second.bytes == static_cast<uint64_t>(s.st_size) &&
        it->second.mtime_ns == mtime)
      return it->second;
  }
  // Hashing reads the whole file (about a second per GB): a channel does it on its proxy's
  // thread before the load reaches the listener's, which then finds it here.
  TROUPE_ASSIGN_OR_RETURN(file_digest d, sha256_of_file(path));
  known_digest k{d.bytes, mtime, d.sha256};
  std::lock_guard<std::mutex> lock(digests_mutex);
  digests[path] = k;
  return k;
}

void worker_listener::shared::memory_report(peer& p, const worker_heartbeat& h) {
  constexpr uint64_t material_bytes = uint64_t{16} << 20;
  if (h.memory_free_bytes == 0 || !options.on_memory) return;
  const uint64_t last = p.memory_reported_bytes;
  if ((last > h.memory_free_bytes ? last - h.memory_free_bytes : h.memory_free_bytes - last) <
      material_bytes)
    return;
  p.memory_reported_bytes = h.memory_free_bytes;
  options.on_memory(p.info, h.memory_free_bytes);
}

status worker_listener::shared::describe_files(worker_load& l) {
  TROUPE_ASSIGN_OR_RETURN(known_digest model, digest_of(l.path));
  std::vector<model_data_file> files;
  const fs::path folder = fs::path(l.path).parent_path();
  std::error_code ec;
  // As on a single node (runtime/onnx_loader.hpp), a file whose real path leaves the folder (a
  // symbolic link out of it) is not the model's: it is not sent, and a load that needs it fails.
  const fs::path real_folder = fs::canonical(folder, ec);
  if (ec) return not_found("model folder " + folder.string() + ": " + ec.message());
  auto inside = [&](const fs::path& p) {
    std::error_code e;
    const fs::path real = fs::canonical(p, e);
    if (e) return false;
    auto [a, b] = std::mismatch(real_folder.begin(), real_folder.end(), real.begin(), real.end());
    return a == real_folder.end();
  };
  fs::recursive_directory_iterator it(folder, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code broken;  // a dangling link, say: not a file of the model's
    if (!it->is_regular_file(broken) || it->path() == fs::path(l.path) || !inside(it->path()))
      continue;
    const std::string name = it->path().lexically_relative(folder).generic_string();
    if (!data_file_name_ok(name)) continue;  // none from a folder walk; the protocol's rule
    TROUPE_ASSIGN_OR_RETURN(known_digest d, digest_of(it->path().string()));
    files.push_back({name, d.sha256, d.bytes});
  }
  if (ec) return io_error("listing the model's folder " + folder.string() + ": " + ec.message());
  std::sort(files.begin(), files.end(),
            [](const model_data_file& a, const model_data_file& b) { return a.name < b.name; });
  l.content_sha256 = model.sha256;
  l.file_bytes = model.bytes;
  l.data_files = std::move(files);
  return status::ok();
}

void worker_listener::shared::send_to(peer& p, worker_message m) {
  std::vector<zmq::message_t> frames;
  /// A slice of a striped run (docs/cluster.md): input `input`'s bytes [offset, offset + bytes).
  struct slice {
    uint32_t input;
    shm_region region;  // the whole input's
    uint64_t offset, bytes;
  };
  std::vector<slice> slices;
  // Zero-copy: a region stays the run's until its answer, which comes after ZeroMQ has sent
  // these bytes; a frame holds the arena so that its mapping outlives the send.
  auto frame_of = [&p](const shm_region& r, uint64_t offset, uint64_t bytes) {
    return zmq::message_t(p.arena->at(r) + offset, static_cast<size_t>(bytes), release_arena_ref,
                          new std::shared_ptr<shared_arena>(p.arena));
  };
  if (auto* r = std::get_if<worker_run>(&m)) {
    uint64_t run_bytes = 0;
    for (const data_ref& in : r->inputs) {
      if (in.where != data_ref::kind::shm) continue;
      if (!p.arena || !p.arena->contains(in.region)) {
        log_event(log_level::error, "worker listener: a run names memory outside its arena",
                  {{"worker", p.index}});
        worker_done failed;  // answered, so that the batch does not wait for it
        failed.batch = r->batch;
        failed.result = internal_error("the run names memory outside its worker's arena");
        deliver(p, std::move(failed));
        return;
      }
      run_bytes += in.region.bytes;
    }
    // Striping: a large run's inputs are cut into a slice per connection (the first and the
    // data lanes), sent side by side; the worker's threads copy them in side by side.
    const uint64_t connections = p.lanes.size() + 1;
    // (A run of so many inputs that its slices would pass the protocol's bound goes whole.)
    const bool stripe = connections > 1 && run_bytes >= options.lane_min_run_bytes &&
                        r->inputs.size() * connections <= max_run_parts;
    for (uint32_t i = 0; i < r->inputs.size(); ++i) {
      data_ref& in = r->inputs[i];
      if (in.where != data_ref::kind::shm) continue;
      const uint64_t bytes = in.region.bytes;
      const uint64_t min_slice = std::max<uint64_t>(options.min_slice_bytes, 1);
      const uint64_t count =
          stripe ? std::min(connections, (bytes + min_slice - 1) / min_slice) : 1;
      if (count < 2) {
        frames.push_back(frame_of(in.region, 0, bytes));
        in = data_ref{data_ref::kind::frame, {}, static_cast<uint32_t>(frames.size() - 1)};
        continue;
      }
      constexpr uint64_t page = 4096;  // slices start on page boundaries
      const uint64_t each = ((bytes + count - 1) / count + page - 1) / page * page;
      for (uint64_t offset = 0; offset < bytes; offset += each)
        slices.push_back({i, in.region, offset, std::min(each, bytes - offset)});
      in = data_ref{data_ref::kind::parts, {0, 0, bytes}, 0};
    }
    r->parts = static_cast<uint32_t>(slices.size());
    if (r->outputs.where == data_ref::kind::shm) {
      p.outputs[r->batch] = r->outputs.region;
      r->output_bytes = r->outputs.region.bytes;
      r->outputs = data_ref{data_ref::kind::none, {}, 0};
    }
  } else if (auto* l = std::get_if<worker_load>(&m)) {
    status described = l->content_sha256.empty() ? describe_files(*l) : status::ok();
    if (!described.is_ok()) {
      worker_loaded failed;
      failed.request = l->request;
      failed.result = std::move(described);
      deliver(p, std::move(failed));
      return;
    }
    p.files[l->content_sha256] = l->path;
    const fs::path folder = fs::path(l->path).parent_path();
    for (const model_data_file& f : l->data_files) p.files[f.content_sha256] = folder / f.name;
  }
  (void)send_raw(p.routing, encode_worker_message(m), frames);
  if (slices.empty()) return;
  const auto& run = std::get<worker_run>(m);
  for (size_t j = 0; j < slices.size(); ++j) {
    const slice& s = slices[j];
    worker_run_part part;
    part.batch = run.batch;
    part.input = s.input;
    part.input_bytes = s.region.bytes;
    part.offset = s.offset;
    part.parts = run.parts;
    const std::string envelope = encode_worker_message(part);
    std::vector<zmq::message_t> bytes;
    bytes.push_back(frame_of(s.region, s.offset, s.bytes));
    // Slice j over connection j (0: the first); the lanes may have shrunk meanwhile.
    const size_t lane = j % (p.lanes.size() + 1);
    if (lane > 0) {
      if (send_raw(p.lanes[lane - 1].routing, envelope, bytes)) continue;
      // The lane's connection is gone (its worker's next message from a re-made one gets a
      // bye): this slice and the next go over the first connection.
      log_event(
          log_level::warn, "remote worker: a data lane is gone",
          {{"node", p.info.node}, {"device", p.info.device}, {"lane", static_cast<int64_t>(lane)}});
      by_routing.erase(p.lanes[lane - 1].routing);
      p.lanes.erase(p.lanes.begin() + static_cast<std::ptrdiff_t>(lane - 1));
    }
    (void)send_raw(p.routing, envelope, bytes);
  }
}

void worker_listener::shared::send_file(peer& p, const worker_file_wanted& w) {
  auto it = p.files.find(w.content_sha256);
  if (it == p.files.end()) {
    worker_file_data answer;
    answer.content_sha256 = w.content_sha256;
    answer.result = not_found("no load sent to this worker names a file of SHA-256 " +
                              w.content_sha256);
    send_raw(p.routing, encode_worker_message(answer));
    return;
  }
  // Read on a thread of its own (a large file takes seconds from a cold disk: the heartbeats of
  // every worker go through this thread meanwhile), then sent from here (file_read).
  listener_item item;
  item.kind = listener_item::what::file_read;
  item.peer = by_routing.at(p.routing).peer;
  item.sha256 = w.content_sha256;
  item.path = it->second;
  std::weak_ptr<shared> weak = weak_from_this();
  try {
    std::thread([weak, item = std::move(item)]() mutable {
      auto f = runtime::regular_file::open(item.path, "'" + item.path + "'", error_code::not_found);
      item.read = f ? status::ok() : f.error();
      if (item.read.is_ok()) {
        item.bytes.emplace(static_cast<size_t>(f->size()));
        item.read = f->read_at(0, item.bytes->data(), item.bytes->size());
      }
      if (auto s = weak.lock()) (void)s->outbox.post(std::move(item));
    }).detach();
  } catch (const std::system_error& e) {
    worker_file_data answer;
    answer.content_sha256 = w.content_sha256;
    answer.result = internal_error(std::string("cannot start a thread to read the model file: ") +
                                   e.what());
    send_raw(p.routing, encode_worker_message(answer));
  }
}

void worker_listener::shared::file_read(peer& p, listener_item& item) {
  worker_file_data answer;
  answer.content_sha256 = item.sha256;
  std::vector<zmq::message_t> frames;
  // The file may have changed since the load named it: the worker checks the hash again.
  if (item.read.is_ok() && item.bytes) {
    frames.push_back(std::move(*item.bytes));
    answer.data = data_ref{data_ref::kind::frame, {}, 0};
    log_event(log_level::info, "model file sent to a remote worker",
              {{"node", p.info.node}, {"device", p.info.device}, {"path", item.path},
               {"bytes", static_cast<int64_t>(frames.back().size())}});
  } else {
    answer.result = item.read;
  }
  (void)send_raw(p.routing, encode_worker_message(answer), frames);
}

void worker_listener::shared::deliver(peer& p, worker_message m) {
  if (p.bound && p.events.on_message) p.events.on_message(std::move(m));
}

void worker_listener::shared::on_hello(const std::string& routing, const worker_hello& h) {
  auto device = parse_device(h.device);
  if (!device || h.node.empty()) {
    bye(routing, device ? "a hello without its node's name" : device.error().message());
    return;
  }
  // A new incarnation of a worker (its process restarted) supersedes the old one at once: the
  // old connection is dead or dying, and its proxy's batches go elsewhere now rather than at its
  // heartbeat timeout.
  for (const auto& [other, q] : peers) {
    if (q.info.node == h.node && q.info.device == h.device && q.info.incarnation != h.incarnation) {
      drop(other, status(error_code::unavailable, "superseded by a new incarnation of the worker"),
           true);
      break;
    }
  }
  const uint64_t id = ++last_peer;
  peer p;
  p.routing = routing;
  p.info.node = h.node;
  p.info.device = h.device;
  p.info.kind = device->first;
  p.info.device_index = device->second;
  p.info.incarnation = h.incarnation;
  p.info.pid = h.pid;
  p.info.memory_total_bytes = h.memory_total_bytes;
  p.info.memory_free_bytes = h.memory_free_bytes;
  p.memory_reported_bytes = h.memory_free_bytes;
  p.last_heard = clock_type::now();
  const remote_worker_info info = p.info;
  peers.emplace(id, std::move(p));
  by_routing[routing] = route{id, 0};
  log_event(log_level::info, "remote worker joined",
            {{"node", info.node}, {"device", info.device}, {"pid", info.pid},
             {"incarnation", static_cast<int64_t>(info.incarnation)},
             {"memory_free_bytes", static_cast<int64_t>(info.memory_free_bytes)},
             {"memory_total_bytes", static_cast<int64_t>(info.memory_total_bytes)}});
  if (!options.on_join) return;
  auto used = std::make_shared<std::atomic<bool>>(false);
  std::weak_ptr<shared> weak = weak_from_this();
  options.on_join(info, [weak, id, used, pid = info.pid](
                            const worker_process_spec& spec,
                            worker_channel_events events) -> expected<std::unique_ptr<worker_channel>> {
    auto s = weak.lock();
    if (!s) return status(error_code::unavailable, "the worker listener has stopped");
    if (used->exchange(true))
      return status(error_code::unavailable,
                    "this remote worker's connection is taken: it joins again when it restarts");
    listener_item item;
    item.kind = listener_item::what::bind;
    item.peer = id;
    item.spec = spec;
    item.events = std::move(events);
    item.closed = std::make_shared<std::atomic<bool>>(false);
    auto channel = std::make_unique<remote_channel>(s, id, pid, item.closed);
    if (!s->outbox.post(std::move(item)))
      return status(error_code::unavailable, "the worker listener has stopped");
    return std::unique_ptr<worker_channel>(std::move(channel));
  });
}

void worker_listener::shared::on_lane_hello(const std::string& routing, const worker_hello& h) {
  for (auto& [id, p] : peers) {
    if (p.info.node != h.node || p.info.device != h.device || p.info.incarnation != h.incarnation)
      continue;
    // As many as node_link_connections allows (64 connections): a worker that opens more, or
    // somebody else naming it, is not given more of its runs.
    if (p.lanes.size() >= max_data_lanes) {
      bye(routing, "a worker has at most " + std::to_string(max_data_lanes) + " data lanes");
      return;
    }
    p.lanes.push_back(data_lane{routing, clock_type::now()});
    by_routing[routing] = route{id, h.lane};
    log_event(
        log_level::debug, "remote worker: data lane joined",
        {{"node", p.info.node}, {"device", p.info.device}, {"lane", static_cast<int64_t>(h.lane)}});
    return;
  }
  // Its worker is gone (dropped meanwhile) or was never heard: the process is to start afresh.
  bye(routing, "a data lane of a worker this control node does not know");
}

void worker_listener::shared::on_item(listener_item& item) {
  auto it = peers.find(item.peer);
  switch (item.kind) {
    case listener_item::what::bind: {
      if (it == peers.end()) {
        // Gone between its hello and its proxy's start: the proxy hears it at once.
        item.closed->store(true);
        if (item.events.on_closed)
          item.events.on_closed(status(error_code::unavailable,
                                       "the remote worker left before its proxy started"));
        return;
      }
      peer& p = it->second;
      p.bound = true;
      p.closed = item.closed;
      p.events = std::move(item.events);
      p.arena = item.spec.arena;
      p.index = item.spec.index;
      // The proxy's handshake: the hello it expects names its own index.
      worker_hello h;
      h.worker_index = p.index;
      h.pid = p.info.pid;
      h.device = p.info.device;
      h.node = p.info.node;
      h.incarnation = p.info.incarnation;
      deliver(p, std::move(h));
      return;
    }
    case listener_item::what::send:
      if (it != peers.end() && item.message) send_to(it->second, std::move(*item.message));
      return;
    case listener_item::what::file_read:
      if (it != peers.end()) file_read(it->second, item);  // else: the worker left meanwhile
      return;
    case listener_item::what::release:
      if (it == peers.end()) return;
      it->second.bound = false;  // its proxy is gone: nobody to tell
      drop(item.peer, status(error_code::unavailable, "released by the control node"), true);
      return;
  }
}

void worker_listener::shared::on_frames(std::vector<zmq::message_t>& frames) {
  if (frames.size() < 2) return;
  const std::string routing = frames[0].to_string();
  auto m = decode_worker_message(frames[1].data(), frames[1].size());
  auto known = by_routing.find(routing);
  if (known == by_routing.end()) {
    if (m && std::holds_alternative<worker_hello>(*m)) {
      const auto& h = std::get<worker_hello>(*m);
      return h.lane == 0 ? on_hello(routing, h) : on_lane_hello(routing, h);
    }
    // A worker this listener does not know (forgotten after a timeout, or joined to an earlier
    // life of this control node): it is to start afresh and say hello.
    if (!m || !std::holds_alternative<worker_bye>(*m))
      bye(routing, "unknown worker: this control node does not know this connection");
    return;
  }
  const uint64_t id = known->second.peer;
  peer& p = peers.at(id);
  if (!m) {
    return drop(id,
                internal_error("the remote worker broke the worker protocol: " +
                               m.error().to_string()),
                true);
  }
  if (known->second.lane > 0) {
    // A data lane says nothing but heartbeats (answers go over the first connection).
    if (!std::holds_alternative<worker_heartbeat>(*m) || frames.size() != 2)
      return drop(id,
                  internal_error(std::string("the remote worker sent a '") +
                                 worker_message_name(*m) + "' on a data lane"),
                  true);
    for (data_lane& l : p.lanes)
      if (l.routing == routing) l.last_heard = clock_type::now();
    return;
  }
  p.last_heard = clock_type::now();
  const size_t extra = frames.size() - 2;
  if (auto* h = std::get_if<worker_heartbeat>(&*m)) return memory_report(p, *h);
  if (auto* b = std::get_if<worker_bye>(&*m))
    return drop(id, status(error_code::unavailable, "the remote worker left: " + b->reason), false);
  if (std::holds_alternative<worker_hello>(*m))
    return drop(id, internal_error("the remote worker said hello twice"), true);
  if (auto* w = std::get_if<worker_file_wanted>(&*m)) return send_file(p, *w);
  if (auto* d = std::get_if<worker_done>(&*m)) {
    auto out = p.outputs.find(d->batch);
    if (out != p.outputs.end()) {
      const shm_region region = out->second;
      p.outputs.erase(out);
      if (d->block.where == data_ref::kind::frame) {
        if (d->block.frame >= extra)
          return drop(id, internal_error("the remote worker named a frame it did not send"), true);
        const zmq::message_t& block = frames[2 + d->block.frame];
        if (block.size() > region.bytes)
          return drop(id,
                      internal_error("the remote worker sent an output block of " +
                                     std::to_string(block.size()) + " bytes for " +
                                     std::to_string(region.bytes)),
                      true);
        std::memcpy(p.arena->at(region), block.data(), block.size());
      } else if (d->result.is_ok()) {
        d->result = internal_error("the remote worker answered without its outputs");
      }
    }
    d->block = data_ref{data_ref::kind::none, {}, 0};
  } else if (extra > 0) {
    return drop(id,
                internal_error(std::string("the remote worker sent frames with a '") +
                               worker_message_name(*m) + "'"),
                true);
  }
  deliver(p, std::move(*m));
}

void worker_listener::shared::drain() {
  for (;;) {
    std::vector<zmq::message_t> frames;
    try {
      if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait))
        return;
    } catch (const zmq::error_t& e) {
      log_event(log_level::error, "worker listener: receive failed", {{"reason", e.what()}});
      return;
    }
    on_frames(frames);
  }
}

/// One ZAP request (RFC 27): version, request id, domain, address, routing id, mechanism, then
/// the client's public key (32 bytes) for CURVE. 200 lets the worker in, 400 refuses it.
void worker_listener::shared::answer_zap() {
  for (;;) {
    std::vector<zmq::message_t> frames;
    try {
      if (!zmq::recv_multipart(zap, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
    } catch (const zmq::error_t& e) {
      log_event(log_level::error, "worker listener: ZAP receive failed", {{"reason", e.what()}});
      return;
    }
    if (frames.size() < 6) continue;  // not a ZAP request: REP needs no answer to nothing
    std::string key;
    if (frames.size() >= 7 && frames[5].to_string() == "CURVE" && frames[6].size() == 32) {
      char z85[41];
      if (zmq_z85_encode(z85, static_cast<const uint8_t*>(frames[6].data()), 32)) key = z85;
    }
    const bool known = !key.empty() && options.authorized_workers.count(key) > 0;
    if (!known)
      log_event(log_level::warn, "worker refused: its CURVE key is not authorized",
                {{"address", frames[3].to_string()}, {"key", key}});
    try {
      zap.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
      zap.send(frames[1], zmq::send_flags::sndmore);  // the request id
      zap.send(zmq::buffer(std::string(known ? "200" : "400")), zmq::send_flags::sndmore);
      zap.send(zmq::buffer(std::string(known ? "OK" : "unknown worker key")), zmq::send_flags::sndmore);
      zap.send(zmq::buffer(key), zmq::send_flags::sndmore);  // user id
      zap.send(zmq::buffer(std::string()), zmq::send_flags::none);  // metadata
    } catch (const zmq::error_t& e) {
      log_event(log_level::error, "worker listener: ZAP reply failed", {{"reason", e.what()}});
    }
  }
}

void worker_listener::shared::run() {
  const auto interval = std::max(options.heartbeat_interval, std::chrono::milliseconds(1));
  auto next_beat = clock_type::now() + interval;
  uint64_t beats = 0;
  auto spin_until = clock_type::now();
  while (!stopping.load()) {
    zmq_pollitem_t items[3] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, outbox.fd(), ZMQ_POLLIN, 0},
                               {zap ? zap.handle() : nullptr, 0, ZMQ_POLLIN, 0}};
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_beat - clock_type::now());
    if (clock_type::now() < spin_until) wait = std::chrono::milliseconds(0);
    try {
      const int ready = zmq::poll(items, zap ? 3 : 2, std::max(wait, std::chrono::milliseconds(0)));
      if (ready == 0 && wait.count() == 0) {
        std::this_thread::yield();
        if (clock_type::now() < spin_until) continue;
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      log_event(log_level::error, "worker listener: poll failed", {{"reason", e.what()}});
      break;
    }
    if (stopping.load()) break;
    if ((items[0].revents | items[1].revents) & ZMQ_POLLIN)
      spin_until = clock_type::now() + std::chrono::microseconds(options.idle_spin_us);
    if (zap && (items[2].revents & ZMQ_POLLIN)) answer_zap();
    if (items[0].revents & ZMQ_POLLIN) drain();
    if (items[1].revents & ZMQ_POLLIN)
      for (listener_item& item : outbox.take()) on_item(item);
    const auto now = clock_type::now();
    std::vector<std::pair<uint64_t, bool>> silent;  // the worker, whether a lane of it
    for (const auto& [id, p] : peers) {
      if (now - p.last_heard > options.heartbeat_timeout) {
        silent.emplace_back(id, false);
        continue;
      }
      for (const data_lane& l : p.lanes)
        if (now - l.last_heard > options.heartbeat_timeout) {
          silent.emplace_back(id, true);
          break;
        }
    }
    const std::string timeout = std::to_string(options.heartbeat_timeout.count());
    for (const auto& [id, lane] : silent)
      drop(id,
           status(error_code::unavailable,
                  lane ? "a data lane of the remote worker sent nothing for " + timeout +
                             " ms (heartbeat timeout): a run sent on it may be lost"
                       : "the remote worker sent nothing for " + timeout +
                             " ms (heartbeat timeout): its node is down, hung or cut off"),
           true);
    if (now >= next_beat) {
      next_beat = now + interval;
      const std::string beat = encode_worker_message(worker_heartbeat{++beats});
      for (const auto& [id, p] : peers) send_raw(p.routing, beat);
    }
  }
  outbox.close();
  for (const auto& [id, p] : peers) bye(p.routing, "the control node stops");
  peers.clear();
  by_routing.clear();
  socket.close();
  if (zap) zap.close();
}

expected<std::unique_ptr<worker_listener>> worker_listener::create(worker_listener_options o) {
  auto s = std::make_shared<shared>();
  if (!s->outbox.ok()) return io_error("worker listener: eventfd: " + std::string(std::strerror(errno)));
  s->options = std::move(o);
  try {
    s->context.set(zmq::ctxopt::io_threads,
                   static_cast<int>(std::max<uint32_t>(s->options.io_threads, 1)));
    if (s->options.curve) {
      // The handler is bound before the socket that asks it: no connection is let in unchecked.
      s->zap = zmq::socket_t(s->context, zmq::socket_type::rep);
      s->zap.set(zmq::sockopt::linger, 0);
      s->zap.bind("inproc://zeromq.zap.01");
    }
    s->socket = zmq::socket_t(s->context, zmq::socket_type::router);
    if (s->options.curve) {
      s->socket.set(zmq::sockopt::curve_server, true);
      s->socket.set(zmq::sockopt::curve_secretkey, s->options.curve->secret_key);
      s->socket.set(zmq::sockopt::zap_domain, "troupe-workers");
    }
    s->socket.set(zmq::sockopt::linger, 0);
    s->socket.set(zmq::sockopt::sndhwm, 0);  // runs are bounded by the batchers
    s->socket.set(zmq::sockopt::rcvhwm, 0);
    s->socket.set(zmq::sockopt::router_mandatory, 1);
    s->socket.set(zmq::sockopt::maxmsgsize, s->options.max_frame_bytes);
    s->socket.bind(s->options.endpoint);
    s->endpoint = s->socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return io_error("--workers-listen " + s->options.endpoint + ": " + e.what());
  }
  try {
    s->thread = std::thread([raw = s.get()] {
      name_this_thread("workers-listen");
      raw->run();
    });
  } catch (const std::system_error& e) {
    return internal_error(std::string("cannot start the worker listener's thread: ") + e.what());
  }
  return std::unique_ptr<worker_listener>(new worker_listener(std::move(s)));
}

worker_listener::~worker_listener() {
  shared_->stopping.store(true);
  shared_->outbox.wake();
  if (shared_->thread.joinable()) shared_->thread.join();
}

const std::string& worker_listener::endpoint() const {
  return shared_->endpoint;
}

}  // namespace troupe::cluster
