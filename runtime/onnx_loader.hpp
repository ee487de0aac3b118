#pragma once
/// ONNX -> troupe graph. Reads the protobuf (with size limits), runs libonnx's checker where it
/// knows the opset, resolves external data next to the model file, converts initializers and
/// attributes, and records declared (possibly symbolic) shapes. Every failure is a typed error:
/// io_error (unreadable), invalid_model (corrupt, inconsistent), unsupported (opset, dtype).
///
/// Files: the model file and every external data file must be regular files, checked on the
/// opened descriptor (opened non-blocking: a FIFO or a device is refused, never waited on). An
/// external data file's real path (symbolic links resolved) must lie inside the real path of the
/// model file's folder: a link beside model.onnx cannot make the node read, and send to clients,
/// a file from elsewhere. A read can still block where the file system does (a hung network
/// mount): callers that must not stall run it where it can be abandoned
/// (runtime/background_read.hpp).

#include <string>

#include "core/status.hpp"
#include "core/tensor.hpp"
#include "runtime/graph.hpp"

namespace troupe::runtime {

/// Opsets of the default domain troupe runs.
inline constexpr int64_t min_supported_opset = 7;
inline constexpr int64_t max_supported_opset = 18;
/// Largest model file (protobuf part) accepted: protobuf's own hard limit is 2 GiB.
inline constexpr size_t max_model_bytes = size_t{2} << 30;

expected<graph> load_onnx_file(const std::string& path);
/// `base_dir` resolves external data files ("" = external data not allowed).
expected<graph> load_onnx_bytes(const void* data, size_t size, const std::string& base_dir);

/// A serialized onnx TensorProto (the .pb files of ONNX's backend tests) -> host tensor.
expected<tensor> load_tensor_pb_file(const std::string& path);
expected<tensor> parse_tensor_pb(const void* data, size_t size);

}  // namespace troupe::runtime
