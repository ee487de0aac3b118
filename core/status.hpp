#pragma once
/// troupe's one error vocabulary. `status` is what runtime code returns; `expected<T>` carries a value
/// or a status. `error_code` is shared with the wire protocol (proto/ mirrors its numbers), so a
/// failure keeps its type from the kernel that saw it to the client that asked.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace troupe {

/// Numbers are part of the wire protocol: never renumber, only append.
enum class error_code : uint8_t {
  ok = 0,
  invalid_argument = 1,   // the caller's input is wrong (shape, dtype, missing tensor, bad flag)
  not_found = 2,          // a model, version, file, input name that does not exist
  unsupported = 3,        // valid ONNX we do not run: op, opset, dtype, attribute value
  invalid_model = 4,      // the model file itself is malformed or inconsistent
  io_error = 5,           // a file could not be read or written
  out_of_memory = 6,      // host or device allocation failed
  internal = 7,           // a bug in troupe: an invariant did not hold
  unavailable = 8,        // not ready, draining, worker failed
  deadline_exceeded = 9,  // the request's timeout passed before it completed
  overloaded = 10,        // a queue is full; retry later
  cancelled = 11,         // the request was cancelled or the node is stopping
  device_error = 12,      // CUDA/cuDNN/cuBLAS failure
};

std::string_view to_string(error_code code);

/// OK costs one null pointer; an error allocates its message once.
class [[nodiscard]] status {
 public:
  status() = default;
  status(error_code code, std::string message);

  static status ok() { return {}; }

  bool is_ok() const { return state_ == nullptr; }
  explicit operator bool() const { return is_ok(); }
  error_code code() const { return state_ ? state_->code : error_code::ok; }
  const std::string& message() const;
  /// "unsupported: op 'Foo' (node 'bar')": code and message, for logs and CLI output.
  std::string to_string() const;

  /// Adds context in front of the message, keeping the code: "loading x.onnx: <message>".
  status with_context(std::string_view context) const;

 private:
  struct state {
    error_code code;
    std::string message;
  };
  std::shared_ptr<const state> state_;
};

inline status make_error(error_code code, std::string message) {
  return status(code, std::move(message));
}
inline status invalid_argument(std::string m) { return {error_code::invalid_argument, std::move(m)}; }
inline status unsupported(std::string m) { return {error_code::unsupported, std::move(m)}; }
inline status invalid_model(std::string m) { return {error_code::invalid_model, std::move(m)}; }
inline status internal_error(std::string m) { return {error_code::internal, std::move(m)}; }
inline status not_found(std::string m) { return {error_code::not_found, std::move(m)}; }
inline status io_error(std::string m) { return {error_code::io_error, std::move(m)}; }

/// A value or the status that explains why there is none. Never holds an OK status.
template <class T>
class [[nodiscard]] expected {
 public:
  expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  expected(status error) : v_(std::in_place_index<1>, std::move(error)) {
    if (std::get<1>(v_).is_ok()) v_.template emplace<1>(error_code::internal, "expected built from OK status");
  }

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const status& error() const { return std::get<1>(v_); }
  status take_status() const { return has_value() ? status::ok() : error(); }

 private:
  std::variant<T, status> v_;
};

}  // namespace troupe

#define TROUPE_CONCAT_INNER(a, b) a##b
#define TROUPE_CONCAT(a, b) TROUPE_CONCAT_INNER(a, b)

/// Returns the status from the enclosing function when `expr` is not OK.
#define TROUPE_RETURN_IF_ERROR(expr)                       \
  do {                                                     \
    ::troupe::status troupe_status_tmp_ = (expr);          \
    if (!troupe_status_tmp_.is_ok()) return troupe_status_tmp_; \
  } while (0)

/// `TROUPE_ASSIGN_OR_RETURN(auto x, f())`: binds the value or returns the error.
#define TROUPE_ASSIGN_OR_RETURN(lhs, rexpr) \
  TROUPE_ASSIGN_OR_RETURN_IMPL(TROUPE_CONCAT(troupe_expected_, __LINE__), lhs, rexpr)
#define TROUPE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                 \
  if (!tmp.has_value()) return tmp.error();           \
  lhs = std::move(tmp).value()
