#pragma once
// Shared by test_cuda_graphs.cpp and test_cuda_instances.cpp: a small model with a symbolic batch
// that exercises cuDNN (convolutions, one with a residual), cuBLASLt (Gemm, MatMul), own kernels
// (elementwise with constants, pooling) and constants read from the plan's table, plus helpers to
// run it on sessions.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"
#include "tests/gpu/gpu_test_util.hpp"
#include "tests/runtime/layout_test_util.hpp"

namespace troupe::testing {

/// x [batch, 8, 12, 12] -> y [batch, 10]: conv+relu, conv + residual + relu, + a full-shape
/// constant, global average pool, flatten, Gemm + relu, MatMul, * a per-column constant.
inline std::string conv_matmul_model() {
  net n;
  *n.model().mutable_graph()->add_input() = make_value_info("x", 1, {"batch", "8", "12", "12"});
  const std::string t1 = n.op("Relu", {n.conv("x", 8, 16, {3, 3}, 1, 1)});
  const std::string t2 = n.conv(t1, 16, 16, {3, 3}, 1, 1);
  const std::string t3 = n.op("Relu", {n.op("Add", {t2, t1})});
  const std::string t4 = n.op("Add", {t3, n.constant({1, 16, 12, 12}, 0.3f)});
  const std::string t5 = n.op("Flatten", {n.op("GlobalAveragePool", {t4})});
  std::string t6;
  auto* gemm = n.node("Gemm", {t5, n.constant({64, 16}, 0.25f), n.constant({64}, 0.1f)}, &t6);
  set_int(gemm, "transB", 1);
  const std::string t7 = n.op("MatMul", {n.op("Relu", {t6}), n.constant({64, 10}, 0.2f)});
  std::string y;
  n.node("Mul", {t7, n.constant({10}, 1.0f, 1.0f)}, &y);
  *n.model().mutable_graph()->add_output() = make_value_info(y, 1, {"batch", "10"});
  return n.bytes();
}

inline expected<std::unique_ptr<runtime::session>> make_session(
    const std::string& bytes, kernels::backend where, std::vector<int64_t> buckets = {},
    runtime::precision p = runtime::precision::fp32) {
  TROUPE_ASSIGN_OR_RETURN(runtime::graph g,
                          runtime::load_onnx_bytes(bytes.data(), bytes.size(), ""));
  runtime::session_options o;
  o.where = where;
  o.compute_precision = p;
  o.batch_buckets = std::move(buckets);
  return runtime::session::create_from_graph(std::move(g), o);
}

inline bool same_bytes(const tensor& a, const tensor& b) {
  return a.info() == b.info() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

/// The plan a session compiled for input `x` (a lease: in use, never evicted, while held).
inline std::shared_ptr<runtime::plan> plan_for(runtime::session& s, const tensor& x) {
  auto p = s.prepare({x.info()});
  EXPECT_TRUE(p.has_value()) << p.error().to_string();
  return p ? *p : nullptr;
}

}  // namespace troupe::testing
