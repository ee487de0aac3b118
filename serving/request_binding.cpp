#include "serving/request_binding.hpp"

#include <algorithm>
#include <string>

#include "serving/model_table.hpp"

namespace troupe::serving {

status bind_request(const model_table* table, const request_fields& f, infer_job& job) {
  job.model.assign(f.model);
  if (!table) return make_error(error_code::unavailable, "the node is still loading its models");
  const std::string& model = job.model;  // for messages: no copy on the path of a valid request
  const model_entry* m = table->find(f.model);
  if (!m) return table->unknown_model(model);
  if (!m->load_error.is_ok())
    return make_error(error_code::unavailable,
                      "model '" + model + "' failed to load: " + m->load_error.to_string());
  const version_entry* v = f.version > 0 ? m->find(f.version) : m->default_version();
  // No version loaded: the newest one's load error says why.
  if (!v && f.version <= 0 && !m->versions.empty()) v = &m->versions.back();
  if (!v) {
    if (f.version > 0)
      return not_found("model '" + model + "' has no version " + std::to_string(f.version));
    return make_error(error_code::unavailable, "model '" + model + "' has no loaded version");
  }
  job.metrics = v->metrics.get();
  if (!v->signature)
    return make_error(error_code::unavailable, "model '" + model + "' version " +
                                                   std::to_string(v->version) +
                                                   " failed to load: " + v->load_error.to_string());
  const model_signature& sig = *v->signature;
  if (f.inputs.size() != sig.inputs.size())
    return invalid_argument("model '" + sig.model + "' takes " + std::to_string(sig.inputs.size()) +
                            " inputs, the request has " + std::to_string(f.inputs.size()));
  job.inputs.resize(f.inputs.size());
  for (auto& in : job.inputs) in.data = nullptr;
  for (const request_tensor& t : f.inputs) {
    const int index = sig.find_input(t.name);
    if (index < 0)
      return invalid_argument("model '" + sig.model + "' has no input '" + std::string(t.name) +
                              "'");
    input_view& in = job.inputs[static_cast<size_t>(index)];
    if (in.data) return invalid_argument("input '" + std::string(t.name) + "' appears twice");
    in.info.type = t.type;
    in.info.shape.assign(t.shape.begin(), t.shape.end());
    // A zero-byte tensor has no data pointer worth keeping; a non-null one marks the slot as set.
    static const std::byte empty{};
    in.data = t.bytes && t.data ? t.data : &empty;
    in.bytes = t.bytes;
  }
  TROUPE_ASSIGN_OR_RETURN(job.rows, sig.validate(job.inputs));
  job.requested_outputs.clear();
  for (std::string_view name : f.outputs) {
    const int k = sig.find_output(name);
    if (k < 0)
      return invalid_argument("model '" + sig.model + "' has no output '" + std::string(name) +
                              "'");
    if (std::find(job.requested_outputs.begin(), job.requested_outputs.end(), k) !=
        job.requested_outputs.end())
      return invalid_argument("output '" + std::string(name) + "' is requested twice");
    job.requested_outputs.push_back(k);
  }
  if (f.priority > sig.config.priority_levels)
    return invalid_argument("priority " + std::to_string(f.priority) +
                            " exceeds the model's priority_levels " +
                            std::to_string(sig.config.priority_levels));
  job.version = f.version;
  job.priority = f.priority;
  // Bounded: a timeout from the network must not overflow the deadline arithmetic.
  job.timeout = std::min(f.timeout, std::chrono::microseconds(int64_t{1} << 50));
  if (job.timeout.count() < 0) job.timeout = std::chrono::microseconds(0);
  job.routing_key.assign(f.routing_key);
  job.parameters.assign(f.parameters.begin(), f.parameters.end());
  job.signature = v->signature;
  return status::ok();
}

}  // namespace troupe::serving
