#pragma once
/// A C++ client of the protocol in docs/protocol.md: DEALER sockets, many requests in flight,
/// replies matched by id (they may arrive in any order). Used by `troupe infer` and `troupe bench`.
/// Not thread-safe: one thread owns a client (the sockets belong to it).
///
/// Several endpoints ("tcp://a:5555,tcp://b:5555": nodes serving the same models), as the Python
/// client: inference requests go to the first connected endpoint in the order given; when its
/// connection drops, the requests waiting on it are sent again (same ids) to the next connected
/// one. Each request's reply is delivered once (a late second one is dropped); a request sent
/// again may have run twice. With one endpoint nothing is tracked: requests go straight out.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::cluster {

using named_tensor_list = std::vector<std::pair<std::string, tensor>>;

struct infer_request {
  std::string model;
  int64_t version = 0;
  std::string id;
  named_tensor_list inputs;
  uint32_t priority = 0;
  uint64_t timeout_us = 0;
  std::string routing_key;
  std::vector<std::pair<std::string, std::string>> parameters;
  std::vector<std::string> outputs;  // empty: all
};

struct infer_reply {
  std::string id;
  status result;  // the typed error when the server refused or failed the request
  std::string model;
  int64_t version = 0;
  named_tensor_list outputs;  // decoded only when asked (receive(..., decode_outputs=true))
  uint64_t queue_us = 0, compute_us = 0, total_us = 0;
  uint32_t batch_size = 0;
};

struct tensor_spec_info {
  std::string name;
  dtype type = dtype::undefined;
  std::vector<int64_t> shape;  // -1: dynamic
};

struct model_metadata {
  std::string name;
  int64_t version = 0;
  std::vector<int64_t> versions;
  std::vector<tensor_spec_info> inputs, outputs;
  uint32_t max_batch_size = 0;
  int state = 0;  // proto ModelState
};

struct health_status {
  bool live = false, ready = false, draining = false;
  std::string reason;               // empty when ready; else why not
  std::vector<std::string> models;  // "name/version: STATE", then " (code: error)" when failed
};

class client {
 public:
  /// `address`: one endpoint, or several separated by commas (failover order).
  static expected<std::unique_ptr<client>> connect(const std::string& address);
  /// Inference requests sent again to another endpoint after theirs was lost, so far.
  uint64_t failovers() const;
  ~client();

  /// Encodes and sends one request (tensor bytes copied once into the frames).
  status send(const infer_request& r);

  /// A request encoded once and sent many times (the load generator): the tensor frames are
  /// shared between sends (ZeroMQ reference-counts them); only the envelope changes per id.
  class prepared;
  expected<std::shared_ptr<prepared>> prepare(const infer_request& r);
  status send(const prepared& p, const std::string& id);

  /// Waits up to `timeout` for one reply; nullopt when none arrived in time.
  expected<std::optional<infer_reply>> receive(std::chrono::milliseconds timeout,
                                               bool decode_outputs = true);

  /// Blocking helpers (other replies that arrive meanwhile are dropped: use on an idle client).
  expected<infer_reply> infer(const infer_request& r, std::chrono::milliseconds timeout);
  expected<model_metadata> metadata(const std::string& model, int64_t version,
                                    std::chrono::milliseconds timeout);
  expected<health_status> health(std::chrono::milliseconds timeout);

  class impl;

 private:
  explicit client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
