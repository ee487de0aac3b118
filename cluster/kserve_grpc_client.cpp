#include "cluster/kserve_grpc_client.hpp"

#include <grpcpp/grpcpp.h>

#include <climits>
#include <cstring>
#include <unordered_set>

#include "cluster/kserve_types.hpp"
#include "proto/kserve/grpc_service.grpc.pb.h"

namespace troupe::cluster {

namespace pb = ::inference;

class kserve_grpc_client::prepared {
 public:
  pb::ModelInferRequest message;
};

namespace {

/// One ModelInfer in flight: its completion-queue tag. Owned by the client's `calls_` set from
/// send() until receive() takes its completion (gRPC writes `response` and `status` until then).
struct pending_call {
  grpc::ClientContext context;
  pb::ModelInferResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<pb::ModelInferResponse>> reader;
  std::string id;
};

std::chrono::system_clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  return std::chrono::system_clock::now() + timeout;
}

status from_grpc(const grpc::Status& s) {
  return kserve::status_from_grpc(static_cast<int>(s.error_code()), s.error_message());
}

expected<named_tensor_list> decode_outputs(const pb::ModelInferResponse& r) {
  named_tensor_list out;
  if (r.raw_output_contents_size() != r.outputs_size())
    return unsupported("the server answered " + std::to_string(r.outputs_size()) + " outputs with " +
                       std::to_string(r.raw_output_contents_size()) +
                       " raw contents: typed contents are not read by this client");
  for (int i = 0; i < r.outputs_size(); ++i) {
    const auto& o = r.outputs(i);
    TROUPE_ASSIGN_OR_RETURN(dtype type, kserve::dtype_from_name(o.datatype()));
    shape_t shape(o.shape().begin(), o.shape().end());
    const std::string& bytes = r.raw_output_contents(i);
    const uint64_t want = static_cast<uint64_t>(element_count(shape)) * dtype_size(type);
    if (bytes.size() != want)
      return invalid_argument("output '" + o.name() + "': " + std::to_string(bytes.size()) +
                              " bytes for " + shape_to_string(shape) + " " + o.datatype());
    tensor t = tensor::allocate(type, std::move(shape));
    if (want) std::memcpy(t.raw(), bytes.data(), bytes.size());
    out.emplace_back(o.name(), std::move(t));
  }
  return out;
}

}  // namespace

class kserve_grpc_client::impl {
 public:
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::GRPCInferenceService::Stub> stub;
  grpc::CompletionQueue cq;
  std::unordered_set<pending_call*> calls;

  ~impl() {
    // Cancel what is still in flight and collect every tag before the queue goes.
    for (pending_call* c : calls) c->context.TryCancel();
    cq.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
      auto* c = static_cast<pending_call*>(tag);
      calls.erase(c);
      delete c;
    }
  }
};

expected<std::unique_ptr<kserve_grpc_client>> kserve_grpc_client::connect(
    const std::string& target, std::chrono::milliseconds timeout, uint64_t max_message_bytes) {
  if (target.empty()) return invalid_argument("gRPC target is empty (want host:port)");
  auto p = std::make_unique<impl>();
  grpc::ChannelArguments args;
  const int max_bytes =
      static_cast<int>(std::min<uint64_t>(max_message_bytes, static_cast<uint64_t>(INT_MAX)));
  args.SetMaxReceiveMessageSize(max_bytes);
  args.SetMaxSendMessageSize(max_bytes);
  // Channels with equal arguments share one connection through gRPC's global subchannel pool:
  // a client of its own is a connection of its own (the load generator opens N of them).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  p->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (!p->channel->WaitForConnected(deadline_after(timeout)))
    return make_error(error_code::unavailable, "cannot reach a gRPC server at " + target +
                                                   " within " + std::to_string(timeout.count()) +
                                                   " ms");
  p->stub = pb::GRPCInferenceService::NewStub(p->channel);
  return std::unique_ptr<kserve_grpc_client>(new kserve_grpc_client(std::move(p)));
}

kserve_grpc_client::kserve_grpc_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
kserve_grpc_client::~kserve_grpc_client() = default;

expected<std::shared_ptr<kserve_grpc_client::prepared>> kserve_grpc_client::prepare(
    const infer_request& r) {
  auto p = std::make_shared<prepared>();
  pb::ModelInferRequest& m = p->message;
  m.set_model_name(r.model);
  if (r.version > 0) m.set_model_version(std::to_string(r.version));
  m.set_id(r.id);
  if (r.priority) (*m.mutable_parameters())["priority"].set_uint64_param(r.priority);
  if (r.timeout_us) (*m.mutable_parameters())["timeout"].set_int64_param(
      static_cast<int64_t>(r.timeout_us));
  if (!r.routing_key.empty())
    (*m.mutable_parameters())["routing_key"].set_string_param(r.routing_key);
  for (const auto& [k, v] : r.parameters) (*m.mutable_parameters())[k].set_string_param(v);
  for (const auto& [name, t] : r.inputs) {
    const std::string_view type = kserve::dtype_to_name(t.type());
    if (type.empty()) return invalid_argument("input '" + name + "': no KServe datatype");
    auto* in = m.add_inputs();
    in->set_name(name);
    in->set_datatype(std::string(type));
    for (int64_t d : t.shape()) in->add_shape(d);
    m.add_raw_input_contents(static_cast<const char*>(t.raw()), t.bytes());
  }
  for (const auto& name : r.outputs) m.add_outputs()->set_name(name);
  return p;
}

status kserve_grpc_client::send(prepared& p, const std::string& id) {
  auto* c = new pending_call;
  c->id = id;
  // The message is serialized when the call is prepared, so the id is set in place (a copy would copy
  // every tensor) and the next send may set another.
  p.message.set_id(id);
  c->reader = impl_->stub->PrepareAsyncModelInfer(&c->context, p.message, &impl_->cq);
  c->reader->StartCall();
  c->reader->Finish(&c->response, &c->status, c);
  impl_->calls.insert(c);
  return status::ok();
}

size_t kserve_grpc_client::in_flight() const {
  return impl_->calls.size();
}

expected<std::optional<infer_reply>> kserve_grpc_client::receive(
    std::chrono::milliseconds timeout, bool decode) {
  void* tag = nullptr;
  bool ok = false;
  switch (impl_->cq.AsyncNext(&tag, &ok, deadline_after(timeout))) {
    case grpc::CompletionQueue::TIMEOUT:
      return std::optional<infer_reply>{};
    case grpc::CompletionQueue::SHUTDOWN:
      return internal_error("gRPC completion queue shut down");
    case grpc::CompletionQueue::GOT_EVENT:
      break;
  }
  std::unique_ptr<pending_call> c(static_cast<pending_call*>(tag));
  impl_->calls.erase(c.get());
  infer_reply reply;
  reply.id = c->id;
  // Finish's tag always comes back ok; a failed call carries its status.
  reply.result = ok ? from_grpc(c->status) : internal_error("gRPC call failed without a status");
  if (reply.result.is_ok()) {
    reply.model = c->response.model_name();
    auto version = kserve::parse_version(c->response.model_version());
    reply.version = version ? *version : 0;
    if (decode) {
      auto outputs = decode_outputs(c->response);
      if (!outputs) return outputs.error();
      reply.outputs = std::move(*outputs);
    }
  }
  return std::optional<infer_reply>(std::move(reply));
}

expected<infer_reply> kserve_grpc_client::infer(const infer_request& r,
                                                std::chrono::milliseconds timeout) {
  TROUPE_ASSIGN_OR_RETURN(auto p, prepare(r));
  TROUPE_RETURN_IF_ERROR(send(*p, r.id));
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return make_error(error_code::deadline_exceeded,
                        "no gRPC reply within " + std::to_string(timeout.count()) + " ms");
    TROUPE_ASSIGN_OR_RETURN(auto reply, receive(left, true));
    if (reply && reply->id == r.id) return std::move(*reply);
  }
}

expected<model_metadata> kserve_grpc_client::metadata(const std::string& model, int64_t version,
                                                      std::chrono::milliseconds timeout) {
  pb::ModelMetadataRequest q;
  q.set_name(model);
  if (version > 0) q.set_version(std::to_string(version));
  pb::ModelMetadataResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline_after(timeout));
  const grpc::Status s = impl_->stub->ModelMetadata(&ctx, q, &r);
  if (!s.ok()) return from_grpc(s).with_context("model metadata of '" + model + "'");
  model_metadata md;
  md.name = r.name();
  for (const auto& v : r.versions()) {
    auto n = kserve::parse_version(v);
    if (n) md.versions.push_back(*n);
  }
  md.version = version > 0 ? version : (md.versions.empty() ? 0 : md.versions.back());
  auto specs = [&](const auto& list, std::vector<tensor_spec_info>& out) -> status {
    for (const auto& t : list) {
      tensor_spec_info info;
      info.name = t.name();
      TROUPE_ASSIGN_OR_RETURN(info.type, kserve::dtype_from_name(t.datatype()));
      info.shape.assign(t.shape().begin(), t.shape().end());
      out.push_back(std::move(info));
    }
    return status::ok();
  };
  TROUPE_RETURN_IF_ERROR(specs(r.inputs(), md.inputs));
  TROUPE_RETURN_IF_ERROR(specs(r.outputs(), md.outputs));
  return md;
}

}  // namespace troupe::cluster
