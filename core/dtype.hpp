#pragma once
/// Element types troupe knows, with their sizes and their ONNX TensorProto numbers.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/status.hpp"

namespace troupe {

enum class dtype : uint8_t {
  undefined = 0,
  f32,
  f16,
  bf16,
  f64,
  i8,
  u8,
  i16,
  u16,
  i32,
  u32,
  i64,
  u64,
  boolean,  // one byte, 0 or 1
};

size_t dtype_size(dtype t);
std::string_view dtype_name(dtype t);
bool is_floating(dtype t);
/// The float types kernels compute in: f32, f16, bf16 (f64 is only stored).
bool is_compute_float(dtype t);
bool is_integer(dtype t);

/// ONNX TensorProto.DataType number <-> dtype. Strings and complex numbers are unsupported.
expected<dtype> dtype_from_onnx(int32_t onnx_type);
int32_t dtype_to_onnx(dtype t);
/// numpy's type string ("<f4", "|b1", ...) <-> dtype, for .npy/.npz files.
expected<dtype> dtype_from_numpy(std::string_view descr);
std::string_view dtype_to_numpy(dtype t);

/// Maps a C++ type to its dtype: dtype_of<float>::value == dtype::f32.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr dtype value = dtype::f32; };
template <> struct dtype_of<double> { static constexpr dtype value = dtype::f64; };
template <> struct dtype_of<int8_t> { static constexpr dtype value = dtype::i8; };
template <> struct dtype_of<uint8_t> { static constexpr dtype value = dtype::u8; };
template <> struct dtype_of<int16_t> { static constexpr dtype value = dtype::i16; };
template <> struct dtype_of<uint16_t> { static constexpr dtype value = dtype::u16; };
template <> struct dtype_of<int32_t> { static constexpr dtype value = dtype::i32; };
template <> struct dtype_of<uint32_t> { static constexpr dtype value = dtype::u32; };
template <> struct dtype_of<int64_t> { static constexpr dtype value = dtype::i64; };
template <> struct dtype_of<uint64_t> { static constexpr dtype value = dtype::u64; };
template <> struct dtype_of<bool> { static constexpr dtype value = dtype::boolean; };

/// IEEE half and bfloat16 conversions on the host (round to nearest even).
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
uint16_t float_to_bfloat16(float f);
float bfloat16_to_float(uint16_t b);

}  // namespace troupe
