#pragma once
/// The node's management socket: model control (index, load, unload, traffic) and fault injection
/// (inject, list, remove, clear: docs/faults.md) as protobuf ControlRequest / ControlReply
/// messages (proto/troupe.proto) on a ZeroMQ ROUTER bound apart from the inference listeners. Off
/// unless node.yaml sets `management_listen`. Every request carries the node's token when one is
/// configured (model_control holds it: the HTTP and gRPC doors ask for the same one); a socket
/// bound beyond loopback refuses to start without one.
///
/// One thread owns the socket. Model operations go to actors::model_control and answer on CAF
/// threads: their replies are queued and sent by the socket's thread, so a load that takes seconds
/// does not hold up an index asked meanwhile. Fault operations (actors::fault_control) answer at
/// once, on the socket's thread.

#include <memory>
#include <string>

#include "actors/fault_control.hpp"
#include "actors/model_control.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

struct management_options {
  std::string listen;  // a ZeroMQ endpoint (tcp://127.0.0.1:5556, ipc://...)
  uint64_t max_message_bytes = 1 << 20;
};

/// `listen` addresses only this host: tcp://127.0.0.1, tcp://[::1], tcp://localhost, ipc://,
/// inproc://.
bool is_loopback_endpoint(const std::string& endpoint);

/// The token in `path`: the file must be a regular file that only its owner may read or write
/// (mode 0600 or stricter); surrounding whitespace is dropped; an empty token is an error.
expected<std::string> read_token_file(const std::string& path);

class management_socket {
 public:
  /// Binds and starts the thread. invalid_argument without a token beyond loopback; io_error
  /// when the endpoint cannot be bound. `control` and `faults` outlive the socket.
  static expected<std::unique_ptr<management_socket>> create(management_options o,
                                                             const actors::model_control& control,
                                                             const actors::fault_control& faults);
  /// Stops the thread and closes the socket; operations still running answer into nothing.
  ~management_socket();
  /// The endpoint as bound (a tcp port of 0 or * resolved).
  const std::string& endpoint() const;

  class impl;

 private:
  explicit management_socket(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
