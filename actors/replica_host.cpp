#include "actors/replica_host.hpp"

#include <chrono>
#include <csignal>
#include <thread>
#include <utility>

#include "serving/log_fields.hpp"

namespace troupe::actors {

using serving::bucket_layout;
using serving::log_level;
using serving::model_config;
using serving::model_signature;
using serving::parse_model_config;
using serving::replica;
using serving::weight_residency;

namespace {

/// A hang without a delay in a worker process: until the node kills it (its watchdog).
constexpr std::chrono::milliseconds process_hang = std::chrono::hours(24 * 365);

}  // namespace

replica_host::replica_host(replica_host_options o) : options_(std::move(o)) {
  if (options_.memory_budget_bytes > 0) {
    weight_residency::options ro;
    ro.budget_bytes = options_.memory_budget_bytes;
    ro.worker = options_.worker_index;
    ro.device_label = options_.traits.device_label;
    residency_ = std::make_unique<weight_residency>(std::move(ro));
  }
}

replica_host::~replica_host() {
  stopping_->store(true, std::memory_order_relaxed);
}

size_t replica_host::replicas() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return replicas_.size();
}

status replica_host::handle(worker_message m) {
  if (auto* l = std::get_if<worker_load>(&m))
    return builds_.post([this, l = std::move(*l)] { load(l); });
  if (auto* r = std::get_if<worker_run>(&m)) {
    // A run number seen before is a second copy (a duplicate on the link, fault injection).
    // Running it again would write into an output block the node may already be replying from.
    if (!runs_seen_.insert(r->batch)) {
      log_event(log_level::warn, "duplicate run dropped", {{"batch", r->batch}});
      return status::ok();
    }
    return runs_.post([this, r = std::move(*r)] { run(r); });
  }
  if (auto* u = std::get_if<worker_unload>(&m)) {
    std::shared_ptr<const hosted> gone;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = replicas_.find(u->replica);
      if (it == replicas_.end()) return status::ok();  // unloaded twice, or never loaded
      gone = std::move(it->second);
      replicas_.erase(it);
    }
    // Released on the build thread, as the in-process worker does: the device's frees stay off
    // the run thread (a batch of it still running keeps its own reference). The budget forgets
    // it there too, after the builds before it.
    return builds_.post([this, id = u->replica, gone = std::move(gone)]() mutable {
      if (residency_) residency_->remove(id);
      gone.reset();
    });
  }
  return invalid_argument(std::string("a worker process does not take '") + worker_message_name(m) +
                          "' messages from the node");
}

void replica_host::load(const worker_load& l) {
  if (l.injected)
    (void)carry_out(*l.injected, options_.traits.backend, options_.device_index, process_hang);
  worker_loaded out;
  out.request = l.request;
  const std::string where =
      "loading " + l.path + " on " + options_.traits.device_label + " (worker process)";
  auto fail = [&](const status& s) {
    out.result = s.with_context(where);
    options_.send(std::move(out));
  };
  if (!build_setup_done_) {
    build_setup_done_ = true;
    if (options_.traits.thread_setup) build_setup_ = options_.traits.thread_setup();
  }
  if (!build_setup_.is_ok()) return fail(build_setup_);
  model_config config;
  if (!l.config_text.empty()) {
    auto parsed = parse_model_config(l.config_text, l.model + " config");
    if (!parsed) return fail(parsed.error());
    config = std::move(*parsed);
  }
  auto precision = options_.traits.precision_for(config);
  if (!precision) return fail(precision.error());
  replica::options ro;
  ro.model_name = l.model;
  ro.version = l.version;
  ro.model_path = l.path;
  ro.config = std::move(config);
  ro.warmup_runs = l.warmup_runs;
  ro.where = options_.traits.backend;
  ro.device_index = options_.device_index;
  ro.compute_precision = *precision;
  ro.cancel = stopping_.get();
  ro.external_staging = true;
  ro.evictable_weights = residency_ != nullptr;
  std::shared_ptr<replica> sibling;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [id, h] : replicas_)
      if (h->r->can_share_weights(ro)) {
        sibling = h->r;
        break;
      }
  }
  ro.weights_from = sibling.get();
  // ---- memory budget: the sibling's weights on the device for the build, room made for it
  if (residency_) {
    const std::string reason = "load of " + l.path;
    if (sibling)
      if (status held = residency_->acquire(*sibling, reason); !held.is_ok()) return fail(held);
    residency_->make_room(
        weight_residency::build_estimate(sibling.get(), nullptr, ro.compute_precision, 1), reason);
    // A fresh load's plans take at most what the budget can give them (else: slices).
    if (!sibling)
      ro.max_arena_bytes = residency_->arena_room(
          weight_residency::file_weights_estimate(l.path, ro.compute_precision));
  }
  auto created = replica::create(ro);
  if (residency_ && sibling) residency_->release(*sibling);
  // ----
  if (!created) return fail(created.error());
  auto h = std::make_shared<hosted>();
  h->r = std::shared_ptr<replica>(std::move(*created));
  h->layouts = h->r->layouts();
  const model_signature& sig = *h->r->signature();
  out.inputs = sig.inputs;
  out.outputs = sig.outputs;
  out.max_batch_size = sig.max_batch_size;
  out.bucket_rows = h->r->bucket_rows();
  out.warmup = h->r->warmup_latency();
  out.pool_bytes = h->r->pool_bytes();
  out.buckets = h->layouts;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (replicas_.count(next_id_)) ++next_id_;  // only after a wrap
    out.replica = next_id_++;
  }
  // Memory budget: counted, idle weights evicted to fit, or the load fails (its id unused).
  if (residency_)
    if (status admitted = residency_->admit(out.replica, h->r); !admitted.is_ok())
      return fail(admitted);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    replicas_.emplace(out.replica, std::move(h));
  }
  options_.send(std::move(out));
  if (options_.after_load) options_.after_load();
}

expected<std::byte*> replica_host::region_at(const data_ref& ref, size_t need,
                                             const char* what) const {
  if (ref.where != data_ref::kind::shm)
    return unsupported(std::string(what) + ": tensor frames are not taken over ipc");
  if (!options_.arena || !options_.arena->contains(ref.region))
    return invalid_argument(std::string(what) + ": region [" + std::to_string(ref.region.offset) +
                            ", +" + std::to_string(ref.region.bytes) +
                            ") lies outside the shared memory");
  if (ref.region.bytes < need)
    return invalid_argument(std::string(what) + ": region of " + std::to_string(ref.region.bytes) +
                            " bytes for " + std::to_string(need));
  return options_.arena->at(ref.region);
}

status replica_host::run_checked(const worker_run& r, worker_done& done) {
  std::shared_ptr<const hosted> h;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = replicas_.find(r.replica);
    if (it != replicas_.end()) h = it->second;
  }
  if (!h)
    return status(error_code::unavailable,
                  "replica " + std::to_string(r.replica) + " is not loaded");
  const bucket_layout* layout = nullptr;
  for (const auto& l : h->layouts)
    if (l.rows == r.bucket_rows) layout = &l;
  if (!layout)
    return invalid_argument("model '" + h->r->signature()->model + "' has no batch bucket of " +
                            std::to_string(r.bucket_rows) + " rows");
  if (r.inputs.size() != layout->inputs.size())
    return invalid_argument("run names " + std::to_string(r.inputs.size()) +
                            " inputs; the model has " + std::to_string(layout->inputs.size()));
  inputs_.clear();
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    TROUPE_ASSIGN_OR_RETURN(std::byte * p,
                            region_at(r.inputs[i], layout->inputs[i].bytes(), "run input"));
    inputs_.push_back(p);
  }
  TROUPE_ASSIGN_OR_RETURN(std::byte * block,
                          region_at(r.outputs, layout->block_bytes, "run outputs"));
  if (r.injected)
    TROUPE_RETURN_IF_ERROR(
        carry_out(*r.injected, options_.traits.backend, options_.device_index, process_hang));
  if (options_.fault_injection) {
    if (r.fault == "crash") {
      // Dies holding the batch, as hard as a crash in a kernel: the node sees the process go
      // and retries the batch elsewhere. SIGKILL: no core file, no handler runs.
      log_event(log_level::warn, "fault injection: worker process crash", {});
      std::raise(SIGKILL);
    }
    if (r.sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(r.sleep_ms));
    if (r.fault == "device")
      return make_error(error_code::device_error, "fault injection: device error");
    if (h->r->inject_error())
      return internal_error(
          "fault injection: this version is configured to fail (config.yaml "
          "fault_injection.error_ratio)");
  }
  // Memory budget: the weights paged in first (the batch's time includes it), held meanwhile.
  if (residency_) TROUPE_RETURN_IF_ERROR(residency_->acquire(*h->r, "a batch"));
  const status ran = h->r->run_staged(r.bucket_rows, inputs_, block);
  if (residency_) residency_->release(*h->r);
  TROUPE_RETURN_IF_ERROR(ran);
  done.outputs.resize(layout->outputs.size());
  for (size_t k = 0; k < layout->outputs.size(); ++k) {
    done.outputs[k].info = layout->outputs[k];
    done.outputs[k].offset = layout->output_offsets[k];
    done.outputs[k].row_bytes = layout->output_row_bytes[k];
  }
  return status::ok();
}

void replica_host::run(const worker_run& r) {
  const auto start = std::chrono::steady_clock::now();
  worker_done done;
  done.batch = r.batch;
  done.bucket_rows = r.bucket_rows;
  if (!run_setup_done_) {
    run_setup_done_ = true;
    if (options_.traits.thread_setup) run_setup_ = options_.traits.thread_setup();
  }
  done.result = run_setup_.is_ok() ? run_checked(r, done) : run_setup_;
  done.compute_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                              std::chrono::steady_clock::now() - start)
                                              .count());
  options_.send(std::move(done));
}

}  // namespace troupe::actors
