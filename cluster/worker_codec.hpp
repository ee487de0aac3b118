#pragma once
/// The worker protocol's codec: actors::worker_message (actors/worker_protocol.hpp) <-> one
/// protobuf WorkerMessage envelope (proto/worker.proto). Pure functions, no sockets: the node's
/// link to a worker process (cluster/worker_link.hpp) and the process's own
/// (cluster/worker_process.hpp) both use them.
///
/// Decoding is where a peer's bytes are judged: anything that is not a well-formed envelope of
/// this protocol version is a typed error, never a crash or an exception. Checked here: the
/// version, that a body is set, dtypes and error codes that exist, dims in range (concrete dims
/// 0 .. 2^40 and tensors below 2^50 bytes: no byte count overflows later). What only the
/// receiver can judge (a region inside its arena, a replica it holds) it checks itself.

#include <cstddef>
#include <string>

#include "actors/worker_protocol.hpp"
#include "core/status.hpp"

namespace troupe::cluster {

/// The envelope of `m`, with the protocol version, as the bytes of one frame.
std::string encode_worker_message(const actors::worker_message& m);

/// The message in `bytes`. invalid_argument: not a worker message, or values out of range;
/// unsupported: another protocol version.
expected<actors::worker_message> decode_worker_message(const void* data, size_t bytes);

}  // namespace troupe::cluster
