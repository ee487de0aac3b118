#include "core/dtype.hpp"

#include <cstring>
#include <string>

namespace troupe {

size_t dtype_size(dtype t) {
  switch (t) {
    case dtype::undefined: return 0;
    case dtype::f32: return 4;
    case dtype::f16: return 2;
    case dtype::bf16: return 2;
    case dtype::f64: return 8;
    case dtype::i8: return 1;
    case dtype::u8: return 1;
    case dtype::i16: return 2;
    case dtype::u16: return 2;
    case dtype::i32: return 4;
    case dtype::u32: return 4;
    case dtype::i64: return 8;
    case dtype::u64: return 8;
    case dtype::boolean: return 1;
  }
  return 0;
}

std::string_view dtype_name(dtype t) {
  switch (t) {
    case dtype::undefined: return "undefined";
    case dtype::f32: return "float32";
    case dtype::f16: return "float16";
    case dtype::bf16: return "bfloat16";
    case dtype::f64: return "float64";
    case dtype::i8: return "int8";
    case dtype::u8: return "uint8";
    case dtype::i16: return "int16";
    case dtype::u16: return "uint16";
    case dtype::i32: return "int32";
    case dtype::u32: return "uint32";
    case dtype::i64: return "int64";
    case dtype::u64: return "uint64";
    case dtype::boolean: return "bool";
  }
  return "unknown";
}

bool is_floating(dtype t) {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16 || t == dtype::f64;
}

bool is_compute_float(dtype t) {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16;
}

bool is_integer(dtype t) {
  switch (t) {
    case dtype::i8: case dtype::u8: case dtype::i16: case dtype::u16:
    case dtype::i32: case dtype::u32: case dtype::i64: case dtype::u64: return true;
    default: return false;
  }
}

// ONNX TensorProto.DataType: 1 FLOAT, 2 UINT8, 3 INT8, 4 UINT16, 5 INT16, 6 INT32, 7 INT64,
// 8 STRING, 9 BOOL, 10 FLOAT16, 11 DOUBLE, 12 UINT32, 13 UINT64, 14/15 COMPLEX, 16 BFLOAT16.
expected<dtype> dtype_from_onnx(int32_t onnx_type) {
  switch (onnx_type) {
    case 1: return dtype::f32;
    case 2: return dtype::u8;
    case 3: return dtype::i8;
    case 4: return dtype::u16;
    case 5: return dtype::i16;
    case 6: return dtype::i32;
    case 7: return dtype::i64;
    case 9: return dtype::boolean;
    case 10: return dtype::f16;
    case 11: return dtype::f64;
    case 12: return dtype::u32;
    case 13: return dtype::u64;
    case 16: return dtype::bf16;
    case 8: return unsupported("dtype string is not supported");
    case 14: case 15: return unsupported("complex dtypes are not supported");
    default: return unsupported("ONNX data type " + std::to_string(onnx_type) + " is not supported");
  }
}

int32_t dtype_to_onnx(dtype t) {
  switch (t) {
    case dtype::f32: return 1;
    case dtype::u8: return 2;
    case dtype::i8: return 3;
    case dtype::u16: return 4;
    case dtype::i16: return 5;
    case dtype::i32: return 6;
    case dtype::i64: return 7;
    case dtype::boolean: return 9;
    case dtype::f16: return 10;
    case dtype::f64: return 11;
    case dtype::u32: return 12;
    case dtype::u64: return 13;
    case dtype::bf16: return 16;
    case dtype::undefined: return 0;
  }
  return 0;
}

expected<dtype> dtype_from_numpy(std::string_view d) {
  // Byte order: '<' little, '|' not applicable, '=' native (little on every host we run on).
  if (d.size() >= 2 && (d[0] == '<' || d[0] == '|' || d[0] == '=')) d.remove_prefix(1);
  if (d == "f4") return dtype::f32;
  if (d == "f2") return dtype::f16;
  if (d == "f8") return dtype::f64;
  if (d == "i1") return dtype::i8;
  if (d == "u1") return dtype::u8;
  if (d == "i2") return dtype::i16;
  if (d == "u2") return dtype::u16;
  if (d == "i4") return dtype::i32;
  if (d == "u4") return dtype::u32;
  if (d == "i8") return dtype::i64;
  if (d == "u8") return dtype::u64;
  if (d == "b1") return dtype::boolean;
  return unsupported("numpy dtype '" + std::string(d) + "' is not supported (big-endian or non-numeric?)");
}

std::string_view dtype_to_numpy(dtype t) {
  switch (t) {
    case dtype::f32: return "<f4";
    case dtype::f16: return "<f2";
    case dtype::f64: return "<f8";
    case dtype::i8: return "|i1";
    case dtype::u8: return "|u1";
    case dtype::i16: return "<i2";
    case dtype::u16: return "<u2";
    case dtype::i32: return "<i4";
    case dtype::u32: return "<u4";
    case dtype::i64: return "<i8";
    case dtype::u64: return "<u8";
    case dtype::boolean: return "|b1";
    case dtype::bf16: return "<u2";  // numpy has no bfloat16; raw bits
    case dtype::undefined: return "";
  }
  return "";
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow to inf
  if (abs < 0x38800000u) {                                              // subnormal or zero
    const uint32_t shift = 126 - (abs >> 23);  // subnormal half = mant24 * 2^(e - 126)
    if (shift > 24) return static_cast<uint16_t>(sign);
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // normalise the subnormal
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ffu;
      x = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t float_to_bfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float bfloat16_to_float(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

}  // namespace troupe
