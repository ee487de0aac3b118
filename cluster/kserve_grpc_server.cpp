#include "cluster/kserve_grpc_server.hpp"

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>

#include "cluster/kserve_grpc_codec.hpp"
#include "cluster/kserve_grpc_status.hpp"
#include "cluster/kserve_grpc_stream.hpp"
#include "cluster/request_gateway.hpp"
#include "cluster/shared_memory_registry.hpp"
#include "serving/model_table.hpp"

namespace troupe::cluster {

namespace pb = ::inference;

namespace {

using kserve::to_grpc;

grpc::ServerUnaryReactor* finish(grpc::CallbackServerContext* ctx, const status& s) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(to_grpc(s));
  return r;
}

grpc::ServerUnaryReactor* unimplemented(grpc::CallbackServerContext* ctx, std::string message) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, std::move(message)));
  return r;
}

const std::string kNoCudaSharedMemory =
    "CUDA shared memory is not served by troupe: register system shared memory "
    "(SystemSharedMemoryRegister) or send the tensors in the request";
const std::string kNoRepositoryControl = "the model repository extension is off on this node";

/// gRPC's own log lines go to the node's JSON log (they would be plain text on stderr).
void log_to_spdlog(gpr_log_func_args* args) {
  const auto level = args->severity == GPR_LOG_SEVERITY_ERROR  ? spdlog::level::err
                     : args->severity == GPR_LOG_SEVERITY_INFO ? spdlog::level::debug
                                                               : spdlog::level::trace;
  spdlog::log(level, "grpc: {} ({}:{})", args->message, args->file, args->line);
}

/// A unary ModelInfer in flight. Owned by its gateway request (input_owner) until the gateway has
/// run on_reply; gRPC keeps `request` and `response` alive until the reactor finishes, which is
/// the last thing on_reply does.
struct unary_infer_call {
  grpc::ServerUnaryReactor* reactor = nullptr;
  const pb::ModelInferRequest* request = nullptr;
  pb::ModelInferResponse* response = nullptr;
  kserve::decoded_infer_request decoded;
};

}  // namespace

uint64_t grpc_memory_quota_bytes(uint64_t max_message_bytes) {
  const uint64_t message = std::min<uint64_t>(max_message_bytes, INT_MAX);  // gRPC's own cap
  return std::max<uint64_t>(4 * message, uint64_t{64} << 20);
}

class kserve_grpc_server::impl final : public pb::GRPCInferenceService::CallbackService {
 public:
  impl(grpc_server_options o, request_gateway& gateway, shared_memory_registry* shm)
      : options_(std::move(o)), gateway_(gateway), shm_(shm) {}

  status start() {
    gpr_set_log_function(log_to_spdlog);
    const std::string address = options_.address + ":" + std::to_string(options_.port);
    const int max_bytes = static_cast<int>(
        std::min<uint64_t>(options_.max_message_bytes, static_cast<uint64_t>(INT_MAX)));
    grpc::ServerBuilder b;
    b.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
    b.SetMaxReceiveMessageSize(max_bytes);
    b.SetMaxSendMessageSize(max_bytes);
    grpc::ResourceQuota quota("troupe-grpc");
    quota.Resize(static_cast<size_t>(grpc_memory_quota_bytes(options_.max_message_bytes)));
    b.SetResourceQuota(quota);
    // gRPC sets SO_REUSEPORT by default: a second node on the same port would bind silently and
    // share the traffic. A port in use must be an error.
    b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    b.RegisterService(this);
    server_ = b.BuildAndStart();
    if (!server_ || port_ == 0) {
      server_.reset();
      return io_error("gRPC: cannot listen on " + address);
    }
    return status::ok();
  }

  int port() const { return port_; }

  void shutdown(std::chrono::milliseconds deadline) {
    std::lock_guard<std::mutex> lock(shutdown_mutex_);
    if (!server_) return;
    server_->Shutdown(std::chrono::system_clock::now() + deadline);
    server_->Wait();
    server_.reset();
  }

  // ---- health -------------------------------------------------------------------------------

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx,
                                       const pb::ServerLiveRequest*,
                                       pb::ServerLiveResponse* r) override {
    r->set_live(serving::evaluate_readiness(gateway_.holder(), options_.readiness).live);
    return finish(ctx, status::ok());
  }

  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx,
                                        const pb::ServerReadyRequest*,
                                        pb::ServerReadyResponse* r) override {
    r->set_ready(!gateway_.draining() &&
                 serving::evaluate_readiness(gateway_.holder(), options_.readiness).ready);
    return finish(ctx, status::ok());
  }

  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx,
                                       const pb::ModelReadyRequest* q,
                                       pb::ModelReadyResponse* r) override {
    auto ready = kserve::model_is_ready(gateway_.table().get(), q->name(), q->version());
    if (!ready) return finish(ctx, ready.error());
    r->set_ready(*ready && !gateway_.draining());
    return finish(ctx, status::ok());
  }

  // ---- metadata -----------------------------------------------------------------------------

  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx,
                                           const pb::ServerMetadataRequest*,
                                           pb::ServerMetadataResponse* r) override {
    kserve::encode_server_metadata(shm_ != nullptr, *r);
    return finish(ctx, status::ok());
  }

  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx,
                                          const pb::ModelMetadataRequest* q,
                                          pb::ModelMetadataResponse* r) override {
    return finish(
        ctx, kserve::encode_model_metadata(gateway_.table().get(), q->name(), q->version(), *r));
  }

  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* ctx,
                                        const pb::ModelConfigRequest* q,
                                        pb::ModelConfigResponse* r) override {
    return finish(ctx,
                  kserve::encode_model_config(gateway_.table().get(), q->name(), q->version(), *r));
  }

  // ---- inference ----------------------------------------------------------------------------

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx,
                                       const pb::ModelInferRequest* q,
                                       pb::ModelInferResponse* r) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    gateway_request* g = gateway_.acquire();
    if (!g) {
      reactor->Finish(to_grpc(kserve::gateway_overloaded()));
      return reactor;
    }
    auto call = std::make_shared<unary_infer_call>();
    call->reactor = reactor;
    call->request = q;
    call->response = r;
    const status decoded = kserve::decode_infer_request(*q, shm_, call->decoded);
    // A raw pointer: input_owner keeps the call alive until on_reply has returned.
    g->input_owner = call;
    g->on_reply = [c = call.get()](gateway_request& done) {
      status s = done.result;
      if (s.is_ok()) s = kserve::encode_infer_response(done, c->decoded, *c->response);
      c->reactor->Finish(to_grpc(s));  // the last touch of the call's messages
    };
    if (!decoded.is_ok()) {
      g->model.assign(q->model_name());
      gateway_.answer_now(g, decoded);
    } else {
      gateway_.submit(g, call->decoded.fields);
    }
    return reactor;
  }

  grpc::ServerBidiReactor<pb::ModelInferRequest, pb::ModelStreamInferResponse>* ModelStreamInfer(
      grpc::CallbackServerContext*) override {
    return new kserve_grpc_stream(gateway_, shm_);  // deletes itself in OnDone
  }

  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* ctx,
                                            const pb::ModelStatisticsRequest* q,
                                            pb::ModelStatisticsResponse* r) override {
    return finish(
        ctx, kserve::encode_model_statistics(gateway_.table().get(), q->name(), q->version(), *r));
  }

  // ---- model repository extension ------------------------------------------------------------
  // Answered when the manager has done it (a load: loaded and warmed up, or failed): the reactor
  // finishes on a CAF thread.

  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* ctx,
                                            const pb::RepositoryIndexRequest* q,
                                            pb::RepositoryIndexResponse* r) override {
    if (!options_.control) return unimplemented(ctx, kNoRepositoryControl);
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    const bool ready_only = q->ready();
    options_.control->index([reactor, r, ready_only](expected<actors::model_index> idx) {
      if (!idx) return reactor->Finish(to_grpc(idx.error()));
      for (const auto& e : *idx) {
        if (ready_only && e.state != "READY") continue;
        auto* m = r->add_models();
        m->set_name(e.name);
        if (e.version > 0) m->set_version(std::to_string(e.version));
        m->set_state(e.state);
        m->set_reason(e.reason);
      }
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }
  /// Load and unload need the node's management token when it has one ("authorization" metadata,
  /// "Bearer <token>"): null when it is there, else the call finished UNAUTHENTICATED.
  grpc::ServerUnaryReactor* refuse_unauthenticated(grpc::CallbackServerContext* ctx) const {
    std::string_view authorization;
    const auto& md = ctx->client_metadata();
    if (auto it = md.find("authorization"); it != md.end())
      authorization = std::string_view(it->second.data(), it->second.size());
    const status s = options_.control->check_bearer(authorization);
    if (s.is_ok()) return nullptr;
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, s.message()));
    return r;
  }

  grpc::ServerUnaryReactor* RepositoryModelLoad(grpc::CallbackServerContext* ctx,
                                                const pb::RepositoryModelLoadRequest* q,
                                                pb::RepositoryModelLoadResponse*) override {
    if (!options_.control) return unimplemented(ctx, kNoRepositoryControl);
    if (auto* refused = refuse_unauthenticated(ctx)) return refused;
    std::string config;
    for (const auto& [key, p] : q->parameters()) {
      if (key == "config") {
        if (p.parameter_choice_case() != pb::ModelRepositoryParameter::kStringParam)
          return finish(ctx, invalid_argument("load: parameter 'config' must be a string (the "
                                              "configuration as JSON or YAML)"));
        config = p.string_param();
      } else if (key.rfind("file:", 0) == 0) {
        return finish(ctx, unsupported("load: model files in the request ('" + key +
                                       "') are not supported: place them in the repository"));
      }
    }
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    options_.control->load(q->model_name(), std::move(config),
                           [reactor](status s) { reactor->Finish(to_grpc(s)); });
    return reactor;
  }
  grpc::ServerUnaryReactor* RepositoryModelUnload(grpc::CallbackServerContext* ctx,
                                                  const pb::RepositoryModelUnloadRequest* q,
                                                  pb::RepositoryModelUnloadResponse*) override {
    if (!options_.control) return unimplemented(ctx, kNoRepositoryControl);
    if (auto* refused = refuse_unauthenticated(ctx)) return refused;
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    options_.control->unload(q->model_name(), [reactor](status s) { reactor->Finish(to_grpc(s)); });
    return reactor;
  }

  // ---- shared memory ------------------------------------------------------------------------

  grpc::ServerUnaryReactor* SystemSharedMemoryStatus(
      grpc::CallbackServerContext* ctx, const pb::SystemSharedMemoryStatusRequest* q,
      pb::SystemSharedMemoryStatusResponse* r) override {
    if (!shm_) return finish(ctx, shm_off());
    auto regions = shm_->status_of(q->name());
    if (!regions) return finish(ctx, regions.error());
    kserve::encode_shared_memory_status(*regions, *r);
    return finish(ctx, status::ok());
  }
  grpc::ServerUnaryReactor* SystemSharedMemoryRegister(
      grpc::CallbackServerContext* ctx, const pb::SystemSharedMemoryRegisterRequest* q,
      pb::SystemSharedMemoryRegisterResponse*) override {
    if (!shm_) return finish(ctx, shm_off());
    return finish(ctx, shm_->register_region(q->name(), q->key(), q->offset(), q->byte_size()));
  }
  grpc::ServerUnaryReactor* SystemSharedMemoryUnregister(
      grpc::CallbackServerContext* ctx, const pb::SystemSharedMemoryUnregisterRequest* q,
      pb::SystemSharedMemoryUnregisterResponse*) override {
    if (!shm_) return finish(ctx, shm_off());
    return finish(ctx, shm_->unregister_region(q->name()));
  }
  grpc::ServerUnaryReactor* CudaSharedMemoryStatus(grpc::CallbackServerContext* ctx,
                                                   const pb::CudaSharedMemoryStatusRequest*,
                                                   pb::CudaSharedMemoryStatusResponse*) override {
    return unimplemented(ctx, kNoCudaSharedMemory);
  }
  grpc::ServerUnaryReactor* CudaSharedMemoryRegister(
      grpc::CallbackServerContext* ctx, const pb::CudaSharedMemoryRegisterRequest*,
      pb::CudaSharedMemoryRegisterResponse*) override {
    return unimplemented(ctx, kNoCudaSharedMemory);
  }
  grpc::ServerUnaryReactor* CudaSharedMemoryUnregister(
      grpc::CallbackServerContext* ctx, const pb::CudaSharedMemoryUnregisterRequest*,
      pb::CudaSharedMemoryUnregisterResponse*) override {
    return unimplemented(ctx, kNoCudaSharedMemory);
  }

 private:
  static status shm_off() {
    return unsupported(
        "the system shared-memory extension is off on this node "
        "(node.yaml shared_memory: false)");
  }

  grpc_server_options options_;
  request_gateway& gateway_;
  shared_memory_registry* shm_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex shutdown_mutex_;
};

}  // namespace troupe::cluster

namespace troupe::cluster {

expected<std::unique_ptr<kserve_grpc_server>> kserve_grpc_server::create(
    grpc_server_options o, request_gateway& gateway, shared_memory_registry* shm) {
  auto p = std::make_unique<impl>(std::move(o), gateway, shm);
  TROUPE_RETURN_IF_ERROR(p->start());
  return std::unique_ptr<kserve_grpc_server>(new kserve_grpc_server(std::move(p)));
}

kserve_grpc_server::kserve_grpc_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

kserve_grpc_server::~kserve_grpc_server() {
  impl_->shutdown(std::chrono::milliseconds(0));
}

int kserve_grpc_server::port() const {
  return impl_->port();
}

void kserve_grpc_server::shutdown(std::chrono::milliseconds deadline) {
  impl_->shutdown(deadline);
}

}  // namespace troupe::cluster
