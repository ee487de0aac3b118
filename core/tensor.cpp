#include "core/tensor.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

namespace troupe {

int64_t element_count(const shape_t& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_to_string(const shape_t& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string tensor_info::to_string() const {
  return std::string(dtype_name(type)) + shape_to_string(shape);
}

void* aligned_alloc_bytes(size_t bytes) {
  const size_t rounded = ((bytes == 0 ? 1 : bytes) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  return p;
}

void aligned_free(void* p) { std::free(p); }

tensor tensor::allocate(dtype type, shape_t shape) {
  tensor t;
  t.info_ = {type, std::move(shape)};
  void* p = aligned_alloc_bytes(t.bytes());
  t.owner_ = std::shared_ptr<void>(p, aligned_free);
  t.data_ = p;
  return t;
}

tensor tensor::zeros(dtype type, shape_t shape) {
  tensor t = allocate(type, std::move(shape));
  std::memset(t.data_, 0, t.bytes());
  return t;
}

tensor tensor::borrow(dtype type, shape_t shape, void* data, device_kind device) {
  tensor t;
  t.info_ = {type, std::move(shape)};
  t.data_ = data;
  t.device_ = device;
  return t;
}

tensor tensor::adopt(dtype type, shape_t shape, void* data, std::shared_ptr<void> owner,
                     device_kind device) {
  tensor t = borrow(type, std::move(shape), data, device);
  t.owner_ = std::move(owner);
  return t;
}

tensor tensor::reshaped(shape_t shape) const {
  tensor t = *this;
  t.info_.shape = std::move(shape);
  return t;
}

tensor tensor::clone() const {
  tensor t = allocate(info_.type, info_.shape);
  if (bytes()) std::memcpy(t.data_, data_, bytes());
  return t;
}

double tensor::value_as_double(int64_t i) const {
  switch (info_.type) {
    case dtype::f32: return data<float>()[i];
    case dtype::f64: return data<double>()[i];
    case dtype::f16: return half_to_float(data<uint16_t>()[i]);
    case dtype::bf16: return bfloat16_to_float(data<uint16_t>()[i]);
    case dtype::i8: return data<int8_t>()[i];
    case dtype::u8: return data<uint8_t>()[i];
    case dtype::i16: return data<int16_t>()[i];
    case dtype::u16: return data<uint16_t>()[i];
    case dtype::i32: return data<int32_t>()[i];
    case dtype::u32: return data<uint32_t>()[i];
    case dtype::i64: return static_cast<double>(data<int64_t>()[i]);
    case dtype::u64: return static_cast<double>(data<uint64_t>()[i]);
    case dtype::boolean: return data<uint8_t>()[i] ? 1.0 : 0.0;
    case dtype::undefined: return 0;
  }
  return 0;
}

void tensor::set_value_from_double(int64_t i, double v) {
  switch (info_.type) {
    case dtype::f32: data<float>()[i] = static_cast<float>(v); return;
    case dtype::f64: data<double>()[i] = v; return;
    case dtype::f16: data<uint16_t>()[i] = float_to_half(static_cast<float>(v)); return;
    case dtype::bf16: data<uint16_t>()[i] = float_to_bfloat16(static_cast<float>(v)); return;
    case dtype::i8: data<int8_t>()[i] = static_cast<int8_t>(v); return;
    case dtype::u8: data<uint8_t>()[i] = static_cast<uint8_t>(v); return;
    case dtype::i16: data<int16_t>()[i] = static_cast<int16_t>(v); return;
    case dtype::u16: data<uint16_t>()[i] = static_cast<uint16_t>(v); return;
    case dtype::i32: data<int32_t>()[i] = static_cast<int32_t>(v); return;
    case dtype::u32: data<uint32_t>()[i] = static_cast<uint32_t>(v); return;
    case dtype::i64: data<int64_t>()[i] = static_cast<int64_t>(v); return;
    case dtype::u64: data<uint64_t>()[i] = static_cast<uint64_t>(v); return;
    case dtype::boolean: data<uint8_t>()[i] = v != 0.0 ? 1 : 0; return;
    case dtype::undefined: return;
  }
}

int64_t tensor::value_as_int64(int64_t i) const {
  switch (info_.type) {
    case dtype::i64: return data<int64_t>()[i];
    case dtype::i32: return data<int32_t>()[i];
    case dtype::u64: return static_cast<int64_t>(data<uint64_t>()[i]);
    default: return static_cast<int64_t>(value_as_double(i));
  }
}

std::vector<int64_t> tensor::to_int64_vector() const {
  std::vector<int64_t> v(static_cast<size_t>(elements()));
  for (int64_t i = 0; i < elements(); ++i) v[static_cast<size_t>(i)] = value_as_int64(i);
  return v;
}

}  // namespace troupe
