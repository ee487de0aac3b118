#pragma once
// troupe.Attention test cases shared by the CPU kernel's tests (against the op's definition) and
// the CUDA kernel's (against the CPU kernel): the geometry, its node and random operands.
#include <cstdio>
#include <string>
#include <vector>

#include "core/op_node.hpp"
#include "core/tensor.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {

struct attention_case {
  int64_t batch, heads, q_len, kv_len, head_dim;
  bool packed = false;     // one [.., 3E] operand holding Q, K and V
  bool seq_first = false;  // operands (S, B, E) ("sbe")
  shape_t mask;            // empty: no mask
  float scale = 0;         // 0: the default 1/sqrt(D)
};

inline std::string describe(const attention_case& c) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "B%lld H%lld Sq%lld Skv%lld D%lld%s%s mask %s",
                static_cast<long long>(c.batch), static_cast<long long>(c.heads),
                static_cast<long long>(c.q_len), static_cast<long long>(c.kv_len),
                static_cast<long long>(c.head_dim), c.packed ? " packed" : "",
                c.seq_first ? " sbe" : "", shape_to_string(c.mask).c_str());
  return buf;
}

inline op_node attention_node(const attention_case& c) {
  op_node n = make_node("Attention", 1, "troupe");
  n.attrs.set("num_heads", c.heads);
  if (c.scale != 0) n.attrs.set("scale", c.scale);
  if (c.seq_first) n.attrs.set("layout", std::string("sbe"));
  return n;
}

inline shape_t operand_shape(const attention_case& c, int64_t seq, int64_t row) {
  return c.seq_first ? shape_t{seq, c.batch, row} : shape_t{c.batch, seq, row};
}

/// Q, K, V uniform in [-2, 2) (packed: one operand and two absent ones), then the mask, uniform in
/// [-3, 1), when the case has one; callers mask out keys in it as their test needs.
inline std::vector<tensor> random_attention_operands(const attention_case& c) {
  const int64_t e = c.heads * c.head_dim;
  std::vector<tensor> in;
  if (c.packed) {
    in.push_back(random_tensor(dtype::f32, operand_shape(c, c.q_len, 3 * e), -2, 2));
    in.emplace_back();
    in.emplace_back();
  } else {
    in.push_back(random_tensor(dtype::f32, operand_shape(c, c.q_len, e), -2, 2));
    in.push_back(random_tensor(dtype::f32, operand_shape(c, c.kv_len, e), -2, 2));
    in.push_back(random_tensor(dtype::f32, operand_shape(c, c.kv_len, e), -2, 2));
  }
  if (!c.mask.empty()) in.push_back(random_tensor(dtype::f32, c.mask, -3, 1));
  return in;
}

}  // namespace troupe::testing
