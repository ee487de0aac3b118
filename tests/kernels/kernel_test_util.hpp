#pragma once
/// Runs one op through its schema and a backend's kernel on host tensors: the smallest harness for
/// kernel unit tests (whole-graph checks go through runtime::session and the conformance runner).

#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/op_node.hpp"
#include "core/tensor.hpp"
#include "kernels/kernel.hpp"

namespace troupe::testing {

/// Infers output infos with the standard schema, creates the kernel, allocates outputs, runs it.
/// Inputs given as undefined tensors are absent optional inputs. `constant_inputs` marks which
/// inputs are passed to the kernel factory as known values (weights).
expected<std::vector<tensor>> run_op(const op_node& node, const std::vector<tensor>& inputs,
                                     size_t num_outputs = 1,
                                     kernels::backend where = kernels::backend::cpu,
                                     std::vector<bool> constant_inputs = {});

op_node make_node(std::string op_type, int64_t opset = 17, std::string domain = "");

/// Random values from test_rng(), seeded by test_seed() (tests/test_seed.hpp: fixed unless
/// TROUPE_TEST_SEED says otherwise; the seed is printed so a failure can be replayed).
tensor random_tensor(dtype type, shape_t shape, double lo = -1.0, double hi = 1.0);
std::mt19937_64& test_rng();

/// ||a - b|| / ||b|| over float tensors (inf when shapes differ).
double relative_l2(const tensor& a, const tensor& b);

}  // namespace troupe::testing
