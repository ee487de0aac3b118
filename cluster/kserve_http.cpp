#include "cluster/kserve_http.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <vector>

#include "cluster/http_compression.hpp"
#include "cluster/kserve_json_codec.hpp"
#include "cluster/kserve_metadata.hpp"
#include "cluster/kserve_types.hpp"
#include "cluster/request_gateway.hpp"
#include "cluster/shared_memory_registry.hpp"
#include "serving/job.hpp"
#include "serving/model_table.hpp"

namespace troupe::cluster {
namespace {

http_response json_response(int status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

http_response error_response(const status& s) {
  return http_error(kserve::http_status(s.code()), kserve::error_message(s));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// The path's segments after "/v2", percent-decoded. nullopt for a bad escape.
std::optional<std::vector<std::string>> split_path(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    std::string seg;
    for (; i < path.size() && path[i] != '/'; ++i) {
      if (path[i] != '%') {
        seg += path[i];
        continue;
      }
      const int hi = i + 1 < path.size() ? hex_value(path[i + 1]) : -1;
      const int lo = i + 2 < path.size() ? hex_value(path[i + 2]) : -1;
      if (hi < 0 || lo < 0) return std::nullopt;
      seg += static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    out.push_back(std::move(seg));
  }
  return out;
}

/// Holds the output blocks a reply's tail points into; releases them once the bytes have left.
struct output_refs {
  std::vector<serving::output_block*> blocks;
  output_refs() = default;
  output_refs(const output_refs&) = delete;
  output_refs& operator=(const output_refs&) = delete;
  ~output_refs() {
    for (auto* b : blocks) b->release();
  }
};

/// One inference request of the HTTP door, from decoding to the written reply: the request's
/// input_owner (the job's input views point into `request.body`, `inflated`, the decoded JSON
/// data or the mapped regions held here).
struct infer_call {
  http_request request;
  std::string inflated;  // the decompressed body, when the client compressed it
  kserve::decoded_infer_request decoded;
  std::vector<shared_memory_span> input_regions;
  /// Output name -> where it goes in shared memory (resolved when the request arrives).
  std::vector<std::pair<std::string, shared_memory_span>> output_regions;
  std::vector<serving::request_tensor> tensors;
  std::vector<std::string_view> output_names;
  std::vector<std::pair<std::string_view, std::string_view>> parameters;
  std::string model;
  int64_t version = 0;
  content_coding reply_coding = content_coding::identity;
  http_responder respond;

  const shared_memory_span* output_region(std::string_view name) const {
    for (const auto& [n, s] : output_regions)
      if (n == name) return &s;
    return nullptr;
  }
};

/// What the reply needs once the gateway has recycled its request: the outputs' block references
/// (taken from the request), their names (the signature) and the call.
struct infer_reply {
  std::shared_ptr<infer_call> call;
  std::shared_ptr<const serving::model_signature> signature;
  std::string model;
  int64_t version = 0;
  struct output {
    int index = 0;
    tensor_info info;
    const std::byte* data = nullptr;
  };
  std::vector<output> outputs;
  std::shared_ptr<output_refs> refs = std::make_shared<output_refs>();
};

}  // namespace

class kserve_http::router : public std::enable_shared_from_this<kserve_http::router> {
 public:
  router(kserve_http_options o, request_gateway& gateway, shared_memory_registry* shm)
      : options_(std::move(o)), gateway_(gateway), shm_(shm) {}

  void set_server(http_server* s) { server_.store(s, std::memory_order_release); }

  void handle(http_request req, http_responder respond) {
    auto segments = split_path(req.path);
    if (!segments) return respond(http_error(400, "malformed percent-escape in the URL path"));
    auto& seg = *segments;
    const std::string& method = req.method;
    const bool get = method == "GET" || method == "HEAD";
    const bool post = method == "POST";
    if (seg.empty() || seg[0] != "v2")
      return respond(
          http_error(404, "no such endpoint: " + req.path + " (KServe v2 is under /v2)"));
    auto wrong_method = [&](const char* allowed) {
      http_response r = http_error(405, "method " + method + " is not allowed on " + req.path +
                                            " (allowed: " + allowed + ")");
      r.headers.emplace_back("Allow", allowed);
      return respond(std::move(r));
    };
    if (seg.size() == 1) return get ? respond(server_metadata()) : wrong_method("GET, HEAD");
    if (seg[1] == "health" && seg.size() == 3) {
      if (!get) return wrong_method("GET, HEAD");
      if (seg[2] == "live") return respond(json_response(200, "{\"live\":true}"));
      if (seg[2] == "ready") return respond(server_ready());
    }
    if (seg[1] == "models" && seg.size() == 3 && seg[2] == "stats")
      return get ? respond(statistics("", 0)) : wrong_method("GET, HEAD");
    if (seg[1] == "models" && seg.size() >= 3) {
      // /v2/models/{m}[/versions/{v}][/ready|/config|/infer]
      const std::string& model = seg[2];
      size_t next = 3;
      int64_t version = 0;
      if (seg.size() > 4 && seg[3] == "versions") {
        auto v = kserve::parse_version(seg[4]);
        if (!v) return respond(error_response(v.error()));
        version = *v;
        next = 5;
      } else if (seg.size() == 4 && seg[3] == "versions") {
        return respond(http_error(400, "a model version is missing after /versions"));
      }
      if (next == seg.size())
        return get ? respond(model_metadata(model, version)) : wrong_method("GET, HEAD");
      if (next + 1 == seg.size()) {
        const std::string& verb = seg[next];
        if (verb == "ready")
          return get ? respond(model_ready(model, version)) : wrong_method("GET, HEAD");
        if (verb == "config")
          return get ? respond(model_config(model, version)) : wrong_method("GET, HEAD");
        if (verb == "infer")
          return post ? infer(std::move(req), model, version, std::move(respond))
                      : wrong_method("POST");
        if (verb == "stats")
          return get ? respond(statistics(model, version)) : wrong_method("GET, HEAD");
      }
    }
    if (seg[1] == "systemsharedmemory") return shared_memory(req, seg, std::move(respond));
    if (seg[1] == "cudasharedmemory")
      return respond(error_response(
          unsupported("CUDA shared memory is not supported by troupe; use system shared memory "
                      "(/v2/systemsharedmemory)")));
    if (seg[1] == "repository") return repository(req, seg, std::move(respond));
    if (seg[1] == "trace" || seg[1] == "logging")
      return respond(
          error_response(unsupported("the '" + seg[1] + "' extension is not served by troupe")));
    return respond(http_error(404, "no such endpoint: " + method + " " + req.path));
  }

 private:
  // ---- health and metadata ----

  http_response server_metadata() const {
    const auto ext = kserve::http_extensions(shm_ != nullptr);
    return json_response(200, kserve::server_metadata_json(options_.server_version, ext));
  }

  http_response server_ready() const {
    serving::node_readiness r = serving::evaluate_readiness(gateway_.holder(), options_.readiness);
    if (gateway_.draining()) {
      r.ready = false;
      r.reason = "draining";
    }
    return json_response(r.ready ? 200 : 503, kserve::readiness_json(r));
  }

  http_response model_metadata(const std::string& model, int64_t version) const {
    const auto table = gateway_.table();
    auto v = kserve::find_version(table.get(), model, version);
    if (!v) return error_response(v.error());
    if (!(*v)->signature) return error_response(failed_version(model, **v));
    return json_response(200, kserve::model_metadata_json(*table->find(model), **v));
  }

  http_response model_config(const std::string& model, int64_t version) const {
    const auto table = gateway_.table();
    auto v = kserve::find_version(table.get(), model, version);
    if (!v) return error_response(v.error());
    if (!(*v)->signature) return error_response(failed_version(model, **v));
    return json_response(200, kserve::model_config_json(*table->find(model), **v));
  }

  http_response model_ready(const std::string& model, int64_t version) const {
    const auto table = gateway_.table();
    auto v = kserve::find_version(table.get(), model, version);
    if (!v) return error_response(v.error());
    const serving::version_state state = (*v)->current_state();
    nlohmann::json j = {{"name", model},
                        {"version", std::to_string((*v)->version)},
                        {"ready", state == serving::version_state::ready}};
    if (state != serving::version_state::ready) j["state"] = std::string(serving::to_string(state));
    return json_response(state == serving::version_state::ready ? 200 : 503,
                         j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }

  http_response statistics(const std::string& model, int64_t version) const {
    const auto table = gateway_.table();
    if (!table)
      return error_response(make_error(error_code::unavailable, "the node is still loading"));
    auto body = kserve::model_statistics_json(*table, model, version);
    if (!body) return error_response(body.error());
    return json_response(200, std::move(*body));
  }

  static status failed_version(const std::string& model, const serving::version_entry& v) {
    return make_error(error_code::unavailable, "model '" + model + "' version " +
                                                   std::to_string(v.version) +
                                                   " failed to load: " + v.load_error.to_string());
  }

  // ---- model repository extension ----

  /// POST /v2/repository/index {"ready": bool}; POST /v2/repository/models/{m}/load
  /// {"parameters": {"config": "<configuration>"}}; POST /v2/repository/models/{m}/unload.
  /// Answered when the manager has done it (a load: loaded and warmed up, or failed).
  void repository(const http_request& req, const std::vector<std::string>& seg,
                  http_responder respond) {
    const bool index = seg.size() == 3 && seg[2] == "index";
    const bool model_op = seg.size() == 5 && seg[2] == "models" &&
                          (seg[4] == "load" || seg[4] == "unload");
    if (!index && !model_op) return respond(http_error(404, "no such endpoint: " + req.path));
    if (req.method != "POST") return respond(http_error(405, "use POST for " + req.path));
    if (!options_.control)
      return respond(error_response(
          unsupported("the model repository extension is off on this node")));
    nlohmann::json body = nlohmann::json::object();
    if (!req.body.empty()) {
      body = nlohmann::json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object())
        return respond(http_error(400, req.path + ": the body must be a JSON object"));
    }
    if (index) {
      bool ready_only = false;
      if (auto r = body.find("ready"); r != body.end()) {
        if (!r->is_boolean()) return respond(http_error(400, "index: 'ready' must be a boolean"));
        ready_only = r->get<bool>();
      }
      return options_.control->index([respond, ready_only](expected<actors::model_index> idx) {
        if (!idx) return respond(error_response(idx.error()));
        nlohmann::json out = nlohmann::json::array();
        for (const auto& e : *idx) {
          if (ready_only && e.state != "READY") continue;
          nlohmann::json j = {{"name", e.name}, {"state", e.state}};
          if (e.version > 0) j["version"] = std::to_string(e.version);
          if (!e.reason.empty()) j["reason"] = e.reason;
          out.push_back(std::move(j));
        }
        respond(json_response(200, out.dump(-1, ' ', false,
                                            nlohmann::json::error_handler_t::replace)));
      });
    }
    if (status s = options_.control->check_bearer(req.header("authorization")); !s.is_ok()) {
      http_response r = error_response(s);
      r.status = 401;
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      return respond(std::move(r));
    }
    std::string config;
    if (auto p = body.find("parameters"); p != body.end()) {
      if (!p->is_object())
        return respond(http_error(400, seg[4] + ": 'parameters' must be an object"));
      if (auto c = p->find("config"); c != p->end()) {
        if (seg[4] != "load") return respond(http_error(400, "unload takes no 'config'"));
        if (!c->is_string())
          return respond(http_error(400, "load: parameters.config must be a string (the "
                                         "configuration as JSON or YAML)"));
        config = c->get<std::string>();
      }
      for (const auto& [key, value] : p->items())
        if (key.rfind("file:", 0) == 0)
          return respond(error_response(unsupported(
              "load: model files in the request ('" + key + "') are not supported: place "
              "them in the repository")));
    }
    auto done = [respond](status s) {
      respond(s.is_ok() ? json_response(200, "") : error_response(s));
    };
    if (seg[4] == "load")
      options_.control->load(seg[3], std::move(config), std::move(done));
    else
      options_.control->unload(seg[3], std::move(done));
  }

  // ---- system shared memory ----

  void shared_memory(const http_request& req, const std::vector<std::string>& seg,
                     http_responder respond) {
    if (!shm_)
      return respond(error_response(unsupported(
          "system shared memory is off on this node (node.yaml shared_memory: false)")));
    // /v2/systemsharedmemory[/region/{name}]/{register|unregister|status}
    std::string name;
    size_t action = 2;
    if (seg.size() >= 4 && seg[2] == "region") {
      name = seg[3];
      action = 4;
    }
    if (seg.size() != action + 1) return respond(http_error(404, "no such endpoint: " + req.path));
    const std::string& verb = seg[action];
    const bool get = req.method == "GET" || req.method == "HEAD";
    if (verb == "status") {
      if (!get) return respond(http_error(405, "use GET for " + req.path));
      auto regions = shm_->status_of(name);
      if (!regions) return respond(error_response(regions.error()));
      return respond(json_response(200, kserve::shared_memory_status_json(*regions)));
    }
    if (req.method != "POST") return respond(http_error(405, "use POST for " + req.path));
    if (verb == "unregister") {
      if (status s = shm_->unregister_region(name); !s.is_ok()) return respond(error_response(s));
      return respond(json_response(200, ""));
    }
    if (verb == "register" && !name.empty()) {
      const auto j = nlohmann::json::parse(req.body, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return respond(http_error(400,
                                  "register: the body must be a JSON object "
                                  "{\"key\", \"offset\", \"byte_size\"}"));
      auto key = j.find("key");
      auto size = j.find("byte_size");
      auto offset = j.find("offset");
      if (key == j.end() || !key->is_string())
        return respond(http_error(400, "register: 'key' (a string) is required"));
      auto unsigned_of = [](const nlohmann::json& v) -> std::optional<uint64_t> {
        if (v.is_number_unsigned()) return v.get<uint64_t>();
        if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<uint64_t>();
        return std::nullopt;
      };
      if (size == j.end() || !unsigned_of(*size))
        return respond(
            http_error(400, "register: 'byte_size' (a non-negative integer) is required"));
      uint64_t off = 0;
      if (offset != j.end()) {
        if (!unsigned_of(*offset))
          return respond(http_error(400, "register: 'offset' must be a non-negative integer"));
        off = *unsigned_of(*offset);
      }
      if (status s = shm_->register_region(name, key->get<std::string>(), off, *unsigned_of(*size));
          !s.is_ok())
        return respond(error_response(s));
      return respond(json_response(200, ""));
    }
    return respond(http_error(404, "no such endpoint: " + req.path));
  }

  // ---- inference ----

  void infer(http_request req, const std::string& model, int64_t version, http_responder respond) {
    gateway_request* g = gateway_.acquire();
    if (!g)
      return respond(
          error_response(make_error(error_code::overloaded,
                                    "the node holds its maximum of requests (max_inflight); retry "
                                    "later")));
    auto call = std::make_shared<infer_call>();
    call->request = std::move(req);
    call->model = model;
    call->version = version;
    call->respond = std::move(respond);
    g->input_owner = call;
    g->on_reply = [self = shared_from_this(), call](gateway_request& r) {
      self->on_reply(call, r);
    };
    serving::request_fields f;
    bool too_large = false;
    if (status s = prepare(*call, f, too_large); !s.is_ok()) {
      if (too_large) {  // 413 like a body over the limit (http_status has no code for it)
        gateway_.discard(g);
        return call->respond(http_error(413, kserve::error_message(s)));
      }
      g->model = model;
      return gateway_.answer_now(g, std::move(s));
    }
    gateway_.submit(g, f);
  }

  /// Decodes the body into `call` and points `f` at it.
  status prepare(infer_call& call, serving::request_fields& f, bool& too_large) {
    const http_request& req = call.request;
    std::string_view body = req.body;
    TROUPE_ASSIGN_OR_RETURN(content_coding coding,
                            parse_content_encoding(req.header("Content-Encoding")));
    if (coding != content_coding::identity) {
      auto inflated = decompress(body, coding, options_.server.max_body_bytes, &too_large);
      if (!inflated) return inflated.error();
      call.inflated = std::move(*inflated);
      body = call.inflated;
    }
    call.reply_coding = choose_reply_coding(req.header("Accept-Encoding"));
    std::optional<size_t> header_length;
    if (req.has_header("Inference-Header-Content-Length")) {
      TROUPE_ASSIGN_OR_RETURN(
          header_length,
          kserve::parse_header_length(req.header("Inference-Header-Content-Length"), body.size()));
    }
    TROUPE_ASSIGN_OR_RETURN(call.decoded, kserve::decode_infer_request(body, header_length));
    auto& d = call.decoded;
    call.tensors.resize(d.inputs.size());
    for (size_t i = 0; i < d.inputs.size(); ++i) {
      kserve::decoded_input& in = d.inputs[i];
      if (in.shared_memory) {
        TROUPE_ASSIGN_OR_RETURN(shared_memory_span span,
                                find_region(*in.shared_memory, "input '" + in.name + "'"));
        in.data = span.data;  // zero copy: the worker reads the client's mapping
        in.bytes = span.bytes;
        call.input_regions.push_back(std::move(span));
      }
      serving::request_tensor& t = call.tensors[i];
      t.name = in.name;
      t.type = in.type;
      t.shape = in.shape;
      t.data = in.data;
      t.bytes = in.bytes;
    }
    for (const auto& o : d.outputs) {
      call.output_names.push_back(o.name);
      if (o.shared_memory) {
        TROUPE_ASSIGN_OR_RETURN(shared_memory_span span,
                                find_region(*o.shared_memory, "output '" + o.name + "'"));
        call.output_regions.emplace_back(o.name, std::move(span));
      }
    }
    std::string_view routing_key;
    for (const auto& [k, v] : d.parameters) {
      call.parameters.emplace_back(k, v);
      if (k == "routing_key") routing_key = v;
    }
    f.model = call.model;
    f.version = call.version;
    f.inputs = call.tensors;
    f.outputs = call.output_names;
    f.priority = d.priority;
    f.timeout = std::chrono::microseconds(
        static_cast<int64_t>(std::min<uint64_t>(d.timeout_us, uint64_t{1} << 50)));
    f.routing_key = routing_key;
    f.parameters = call.parameters;
    return status::ok();
  }

  expected<shared_memory_span> find_region(const kserve::shared_memory_ref& ref,
                                           const std::string& what) const {
    if (!shm_)
      return unsupported(what + " names shared-memory region '" + ref.region +
                         "', but system shared memory is off on this node");
    auto span = shm_->find(ref.region, ref.offset, ref.byte_size);
    if (!span) return make_error(span.error().code(), what + ": " + span.error().message());
    return span;
  }

  /// On an actor thread (or the I/O thread for a request refused at once): never blocks.
  void on_reply(const std::shared_ptr<infer_call>& call, gateway_request& r) {
    if (!r.result.is_ok()) return call->respond(error_response(r.result));
    auto reply = std::make_shared<infer_reply>();
    reply->call = call;
    reply->signature = r.signature;
    reply->model = r.model;
    reply->version = r.signature ? r.signature->version : call->version;
    reply->outputs.reserve(r.outputs.size());
    bool inline_ok = call->reply_coding == content_coding::identity;
    for (auto& o : r.outputs) {
      // The slice's reference moves to the reply: the bytes leave from the block itself.
      reply->refs->blocks.push_back(o.block);
      reply->outputs.push_back({o.output_index, o.info, o.block->data() + o.offset});
      o.block = nullptr;
      const std::string& name = r.signature->outputs[static_cast<size_t>(o.output_index)].name;
      if (!call->decoded.output_binary(name) || call->output_region(name)) inline_ok = false;
    }
    http_server* server = server_.load(std::memory_order_acquire);
    if (inline_ok || !server) return finish(*reply);
    server->post([reply] { finish(*reply); });
  }

  /// Builds and sends the reply: shared-memory outputs copied into their regions, the others as
  /// JSON data or binary sections.
  static void finish(infer_reply& reply) {
    infer_call& call = *reply.call;
    std::vector<kserve::reply_tensor> tensors(reply.outputs.size());
    std::vector<kserve::shared_memory_ref> shm_refs(reply.outputs.size());
    for (size_t i = 0; i < reply.outputs.size(); ++i) {
      const auto& o = reply.outputs[i];
      const std::string& name = reply.signature->outputs[static_cast<size_t>(o.index)].name;
      kserve::reply_tensor& t = tensors[i];
      t.name = name;
      t.type = o.info.type;
      t.shape = o.info.shape;
      t.data = o.data;
      t.bytes = o.info.bytes();
      t.binary = call.decoded.output_binary(name);
      if (const shared_memory_span* span = call.output_region(name)) {
        if (t.bytes > span->bytes)
          return call.respond(http_error(
              400, "invalid_argument: output '" + name + "' holds " + std::to_string(t.bytes) +
                       " bytes, more than its shared-memory range of " +
                       std::to_string(span->bytes) + " bytes in region '" + span->region->name() +
                       "'"));
        std::memcpy(span->data, t.data, t.bytes);
        const kserve::requested_output* ro = call.decoded.find_output(name);
        shm_refs[i] = *ro->shared_memory;
        t.shared_memory = &shm_refs[i];
      }
    }
    kserve::encoded_reply enc =
        kserve::encode_infer_reply(reply.model, reply.version, call.decoded.id, tensors);
    http_response res;
    res.status = 200;
    if (enc.has_binary()) {
      res.content_type = "application/octet-stream";
      res.headers.emplace_back("Inference-Header-Content-Length", std::to_string(enc.json.size()));
    }
    res.body = std::move(enc.json);
    for (size_t i : enc.binary_outputs) res.tail.emplace_back(tensors[i].data, tensors[i].bytes);
    if (call.reply_coding != content_coding::identity) {
      std::string whole = std::move(res.body);
      for (const auto& t : res.tail)
        whole.append(reinterpret_cast<const char*>(t.data()), t.size());
      res.tail.clear();
      if (auto z = compress(whole, call.reply_coding)) {
        res.body = std::move(*z);
        res.headers.emplace_back("Content-Encoding", std::string(coding_name(call.reply_coding)));
      } else {
        res.body = std::move(whole);
      }
    } else {
      res.tail_owner = reply.refs;
    }
    call.respond(std::move(res));
  }

  kserve_http_options options_;
  request_gateway& gateway_;
  shared_memory_registry* shm_;
  std::atomic<http_server*> server_{nullptr};
};

expected<std::unique_ptr<kserve_http>> kserve_http::create(kserve_http_options o,
                                                           request_gateway& gateway,
                                                           shared_memory_registry* shm) {
  http_server_options so = o.server;
  if (so.name.empty() || so.name == "http") so.name = "kserve http";
  auto r = std::make_shared<router>(std::move(o), gateway, shm);
  auto server = http_server::create(so, [r](http_request req, http_responder respond) {
    r->handle(std::move(req), std::move(respond));
  });
  if (!server) return server.error();
  r->set_server(server->get());
  return std::unique_ptr<kserve_http>(new kserve_http(r, std::move(*server)));
}

kserve_http::kserve_http(std::shared_ptr<router> r, std::unique_ptr<http_server> s)
    : router_(std::move(r)), server_(std::move(s)) {}

kserve_http::~kserve_http() {
  server_->stop(std::chrono::milliseconds(0));
}

int kserve_http::port() const {
  return server_->port();
}

void kserve_http::stop(std::chrono::milliseconds grace) {
  server_->stop(grace);
}

}  // namespace troupe::cluster
