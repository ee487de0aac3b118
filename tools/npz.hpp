#pragma once
/// numpy's .npy (one array) and .npz (a zip of .npy files) on host tensors, with zlib only.
///
/// Reading accepts what numpy writes: .npy format versions 1.0-3.0, little-endian or
/// byte-order-free dtypes (core/dtype.hpp dtype_from_numpy), 0-d arrays, and zip archives whose
/// entries are stored or deflate-compressed, with zip64 extra fields (numpy forces them on every
/// entry) and data descriptors. Every offset and size in a file is checked before use: a malformed
/// file is an invalid_argument error, an unreadable one io_error, a valid but unhandled one
/// (big-endian, Fortran order of an N-d array, another compression method) unsupported.
///
/// Writing produces .npy 1.0 (2.0 when the header needs it) and a zip that numpy's np.load reads,
/// switching to zip64 records only where a size or offset needs them.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::tools {

/// Arrays by name, in archive order. Names carry no ".npy" suffix.
using named_tensors = std::vector<std::pair<std::string, tensor>>;

/// One .npy image in memory -> a tensor that owns a copy of the data.
expected<tensor> parse_npy(const void* data, size_t size_bytes);
/// A tensor -> a complete .npy image. bf16 is written as numpy's '<u2' (numpy has no bfloat16).
expected<std::vector<uint8_t>> serialize_npy(const tensor& t);

expected<tensor> read_npy(const std::string& path);
status write_npy(const std::string& path, const tensor& t);

/// A whole .npz image in memory -> its arrays.
expected<named_tensors> parse_npz(const void* data, size_t size_bytes);
expected<named_tensors> read_npz(const std::string& path);
/// Writes every tensor as "<name>.npy"; `compress` deflates each entry (np.savez_compressed).
/// Names must be unique and non-empty.
status write_npz(const std::string& path, const named_tensors& tensors, bool compress = false);

}  // namespace troupe::tools
