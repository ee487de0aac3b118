#pragma once
/// ONNX's backend test cases (model.onnx + test_data_set_*/{input,output}_N.pb) run through
/// runtime::session on the CPU and classified:
///   passed       every data set's outputs match (floats: |a-b| <= atol + rtol*|b|, NaN == NaN;
///                integers and bools exactly)
///   failed       ran and gave wrong outputs, or failed with an error other than `unsupported`
///   unsupported  load, plan or run said error_code::unsupported (an op, dtype, opset we lack)
///   skipped      not attempted (reason given), e.g. inputs too large for the time budget
/// A case is *claimed* when every op in its model (subgraphs included) has a CPU kernel: a claimed
/// case that fails is a troupe bug and fails the test program.

#include <map>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "core/tensor.hpp"

namespace troupe::conformance {

enum class outcome { passed, failed, unsupported, skipped };
std::string_view outcome_name(outcome o);

struct test_case {
  std::string suite;  // "node", "pytorch-converted", ...
  std::string name;   // "test_add_bcast"
  std::string dir;    // holds model.onnx and test_data_set_*
};

struct case_result {
  test_case tc;
  std::vector<std::string> ops;  // distinct op types ("domain.Op" outside ai.onnx), sorted
  bool claimed = false;
  outcome result = outcome::skipped;
  std::string message;  // why it failed, was unsupported or skipped; frozen inputs if passed
  /// Some graph inputs ran as constants holding the data set's values (see run_case).
  bool inputs_frozen = false;
  int data_sets = 0;
  double elapsed_ms = 0;
};

/// Suites searched under a data directory, in this order.
const std::vector<std::string>& default_suites();
/// Every case directory under `data_dir`/<suite> whose "<suite>/<name>" contains `filter`,
/// sorted by suite then name.
std::vector<test_case> discover_cases(const std::string& data_dir, const std::string& filter);

/// Runs one case; never throws (exceptions become `failed`). Graph inputs that a shape function
/// reads by value (shapes, axes, pads: troupe needs them when the plan is built, ONNX's tests feed
/// them at run time) are turned into constants holding each data set's values.
case_result run_case(const test_case& tc);

/// Element-wise comparison; OK or invalid_argument naming the first mismatch.
status compare_tensors(const tensor& got, const tensor& want, double atol, double rtol);

/// Per-op table, totals and the list of failures, as plain text for the terminal.
std::string summary_text(const std::vector<case_result>& results);
/// The whole run as markdown (default) or JSON (when `path` ends in ".json").
status write_report(const std::string& path, const std::vector<case_result>& results);

}  // namespace troupe::conformance
