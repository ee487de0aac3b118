#include "cluster/kserve_grpc_stream.hpp"

#include "cluster/kserve_grpc_codec.hpp"
#include "cluster/kserve_grpc_status.hpp"
#include "cluster/request_gateway.hpp"

namespace troupe::cluster {

namespace pb = ::inference;

/// Owned by its gateway request (input_owner) once submitted: the message and the views into it
/// live until the gateway has run on_reply.
struct kserve_grpc_stream::pending {
  pb::ModelInferRequest request;
  kserve::decoded_infer_request decoded;
};

kserve_grpc_stream::kserve_grpc_stream(request_gateway& gateway, const shared_memory_registry* shm)
    : gateway_(gateway), shm_(shm), next_(std::make_unique<pending>()) {
  StartRead(&next_->request);
}

kserve_grpc_stream::~kserve_grpc_stream() = default;

void kserve_grpc_stream::OnReadDone(bool ok) {
  if (!ok) {  // the client half-closed, or the call is cancelled
    bool finish = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reads_done_ = true;
      finish = take_finish_locked();
    }
    if (finish) Finish(grpc::Status::OK);
    return;
  }
  std::shared_ptr<pending> p(std::move(next_));
  next_ = std::make_unique<pending>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++outstanding_;
  }
  // Read the next request before this one is answered: replies go out in order of completion.
  // The reply below may come at once (on this thread) or from an actor thread.
  StartRead(&next_->request);

  const auto reply_with = [this, p](gateway_request& done) {
    auto reply = std::make_unique<pb::ModelStreamInferResponse>();
    status s = done.result;
    if (s.is_ok())
      s = kserve::encode_infer_response(done, p->decoded, *reply->mutable_infer_response());
    if (!s.is_ok()) {
      reply->Clear();
      reply->set_error_message(kserve::error_message(s));
      pb::ModelInferResponse* r = reply->mutable_infer_response();
      r->set_model_name(p->request.model_name());
      r->set_model_version(p->request.model_version());
      r->set_id(p->request.id());
    }
    on_reply(std::move(reply));
  };
  gateway_request* g = gateway_.acquire();
  if (!g) {
    auto reply = std::make_unique<pb::ModelStreamInferResponse>();
    reply->set_error_message(kserve::error_message(kserve::gateway_overloaded()));
    reply->mutable_infer_response()->set_model_name(p->request.model_name());
    reply->mutable_infer_response()->set_id(p->request.id());
    on_reply(std::move(reply));
    return;
  }
  const status decoded = kserve::decode_infer_request(p->request, shm_, p->decoded);
  g->input_owner = p;
  g->on_reply = reply_with;
  if (!decoded.is_ok()) {
    g->model.assign(p->request.model_name());
    gateway_.answer_now(g, decoded);
  } else {
    gateway_.submit(g, p->decoded.fields);
  }
}

void kserve_grpc_stream::on_reply(std::unique_ptr<pb::ModelStreamInferResponse> reply) {
  const pb::ModelStreamInferResponse* write = nullptr;
  bool finish = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --outstanding_;
    if (!broken_) {
      writes_.push_back(std::move(reply));
      if (!writing_) {
        writing_ = true;
        write = writes_.front().get();
      }
    }
    if (!write) finish = take_finish_locked();
  }
  // Outside the lock: gRPC may run reactions on other threads meanwhile, never this one's again.
  if (write)
    StartWrite(write);
  else if (finish)
    Finish(grpc::Status::OK);
}

void kserve_grpc_stream::OnWriteDone(bool ok) {
  const pb::ModelStreamInferResponse* write = nullptr;
  bool finish = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    writes_.pop_front();
    if (!ok) {
      broken_ = true;
      writes_.clear();
    }
    if (!writes_.empty()) {
      write = writes_.front().get();
    } else {
      writing_ = false;
      finish = take_finish_locked();
    }
  }
  if (write)
    StartWrite(write);
  else if (finish)
    Finish(grpc::Status::OK);
}

void kserve_grpc_stream::OnCancel() {
  // Reads and writes now fail; OnReadDone(false) follows and finishes once the replies are in.
  std::lock_guard<std::mutex> lock(mutex_);
  broken_ = true;
}

void kserve_grpc_stream::OnDone() {
  delete this;
}

bool kserve_grpc_stream::take_finish_locked() {
  if (finished_ || !reads_done_ || outstanding_ > 0 || writing_) return false;
  finished_ = true;
  return true;
}

}  // namespace troupe::cluster
