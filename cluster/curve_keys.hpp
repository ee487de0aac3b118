#pragma once
/// CURVE keys between control and worker nodes (libzmq's CurveZMQ; docs/cluster.md, Security):
/// Z85 text, as `troupe keygen` writes them and a Kubernetes Secret mounts them.
///
///   secret key file      one line: the node's secret key (40 Z85 characters); the public key is
///                        derived from it
///   public key file      one line: a public key (the control node's, on a worker node)
///   authorized keys file one public key per line, optionally followed by a space and a note (the
///                        worker's name); empty lines and lines starting with "# " are ignored
///
/// Every key is checked when read (length and alphabet): a mistyped file is a clear error at
/// start, never a node that silently refuses everyone.

#include <set>
#include <string>

#include "core/status.hpp"

namespace troupe::cluster {

struct curve_keypair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;
};

/// A fresh pair (libzmq's zmq_curve_keypair); unsupported when libzmq lacks CURVE.
expected<curve_keypair> generate_curve_keypair();
/// The pair whose secret key `path` holds.
expected<curve_keypair> read_curve_secret_key(const std::string& path);
/// The public key `path` holds.
expected<std::string> read_curve_public_key(const std::string& path);
/// The public keys `path` lists (at least one).
expected<std::set<std::string>> read_curve_authorized_keys(const std::string& path);
/// Whether `key` is 40 Z85 characters that decode to 32 bytes.
bool is_curve_key(const std::string& key);

/// Where a node's CURVE settings come from (node.yaml curve_*); all empty: CURVE off.
struct curve_files {
  std::string secret_key_file;       // this node's secret key (both roles)
  std::string server_key_file;       // worker: the control node's public key
  std::string authorized_keys_file;  // control: the workers' public keys
  bool on() const { return !secret_key_file.empty(); }
};

}  // namespace troupe::cluster
