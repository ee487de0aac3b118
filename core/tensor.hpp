#pragma once
/// A tensor: element type, concrete shape and a pointer to row-major (C-contiguous) bytes.
/// Ownership: a tensor either owns its bytes (through a shared handle, so copies of a tensor share
/// them) or borrows them (the caller keeps them alive, e.g. a slot in a plan's arena).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.hpp"

namespace troupe {

using shape_t = std::vector<int64_t>;

/// Product of the dimensions; 1 for a scalar (empty shape).
int64_t element_count(const shape_t& shape);
std::string shape_to_string(const shape_t& shape);

enum class device_kind : uint8_t { cpu = 0, cuda = 1 };

/// What a tensor is without its bytes: used by shape inference, planning and validation.
struct tensor_info {
  dtype type = dtype::undefined;
  shape_t shape;

  int64_t elements() const { return element_count(shape); }
  size_t bytes() const { return static_cast<size_t>(elements()) * dtype_size(type); }
  size_t rank() const { return shape.size(); }
  /// An absent optional input (ONNX's empty name) has an undefined type.
  bool present() const { return type != dtype::undefined; }
  bool operator==(const tensor_info&) const = default;
  std::string to_string() const;
};

class tensor {
 public:
  tensor() = default;

  /// Host tensor with fresh, 64-byte aligned, uninitialised bytes.
  static tensor allocate(dtype type, shape_t shape);
  /// Host tensor filled with zeros.
  static tensor zeros(dtype type, shape_t shape);
  /// A view of bytes someone else owns; they must outlive every copy of this tensor.
  static tensor borrow(dtype type, shape_t shape, void* data, device_kind device = device_kind::cpu);
  /// A tensor that keeps `owner` alive for as long as it (or a copy) lives.
  static tensor adopt(dtype type, shape_t shape, void* data, std::shared_ptr<void> owner,
                      device_kind device = device_kind::cpu);
  /// Host scalar / 1-D helpers for tests and constant folding.
  template <class T>
  static tensor from_vector(const std::vector<T>& values, shape_t shape);

  dtype type() const { return info_.type; }
  const shape_t& shape() const { return info_.shape; }
  const tensor_info& info() const { return info_; }
  int64_t elements() const { return info_.elements(); }
  size_t bytes() const { return info_.bytes(); }
  size_t rank() const { return info_.shape.size(); }
  int64_t dim(size_t axis) const { return info_.shape[axis]; }
  device_kind device() const { return device_; }
  bool defined() const { return info_.type != dtype::undefined; }
  bool owns_data() const { return owner_ != nullptr; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <class T> T* data() { return static_cast<T*>(data_); }
  template <class T> const T* data() const { return static_cast<const T*>(data_); }

  /// Points this (borrowing) tensor at other bytes of the same size; used by plans to bind each
  /// run's inputs without allocating.
  void rebind(void* data) { data_ = data; }
  /// Same bytes, another shape with the same element count (Reshape without a copy).
  tensor reshaped(shape_t shape) const;
  /// A deep host copy that owns its bytes.
  tensor clone() const;

  /// Reads element `i` converted to double/int64 (any numeric dtype); for shape inputs and tests.
  double value_as_double(int64_t i) const;
  /// Writes element `i` from a double (rounded to f16/bf16, truncated to integers): the inverse of
  /// value_as_double, for constants built by graph passes and tests.
  void set_value_from_double(int64_t i, double v);
  int64_t value_as_int64(int64_t i) const;
  /// All elements as int64: for shape-like inputs (Reshape's shape, Slice's starts...).
  std::vector<int64_t> to_int64_vector() const;

 private:
  tensor_info info_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
  device_kind device_ = device_kind::cpu;
};

template <class T>
tensor tensor::from_vector(const std::vector<T>& values, shape_t shape) {
  tensor t = allocate(dtype_of<T>::value, std::move(shape));
  T* out = t.data<T>();
  for (size_t i = 0; i < values.size() && static_cast<int64_t>(i) < t.elements(); ++i) out[i] = values[i];
  return t;
}

/// 64-byte aligned host allocation; freed with aligned_free.
void* aligned_alloc_bytes(size_t bytes);
void aligned_free(void* p);

}  // namespace troupe
