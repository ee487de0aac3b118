#include "tests/conformance/conformance.hpp"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/session.hpp"

namespace troupe::conformance {
namespace {

namespace fs = std::filesystem;

// ORT's tolerance for its ONNX backend tests (np.testing.assert_allclose-style per element).
constexpr double default_atol = 1e-5;
constexpr double default_rtol = 1e-3;
// A case's data above this is not run: it would not fit the ~2 minute budget on 2 cores.
constexpr uintmax_t max_case_data_bytes = uintmax_t{256} << 20;

struct tolerance {
  double atol = default_atol;
  double rtol = default_rtol;
};

/// Cases that need a looser bound than the default, each with the reason.
const std::map<std::string, tolerance>& tolerance_overrides() {
  static const std::map<std::string, tolerance> t = {
      // ONNX 1.12's generator truncates float to bfloat16; troupe rounds to nearest even (as ORT
      // does, and as opset 19 specifies): results may differ by one bfloat16 ulp (2^-7 relative).
      {"test_cast_FLOAT_to_BFLOAT16", {0, 1.0 / 128}},
  };
  return t;
}

/// Cases whose data contradicts their own model: reported as skipped with the reason.
const std::map<std::string, std::string>& known_bad_data() {
  static const std::map<std::string, std::string> m = [] {
    std::map<std::string, std::string> k;
    const char* like_shape =
        "ONNX 1.12 test data: input 'like' is [1] where the model declares [3,4]";
    for (const char* c :
         {"test_castlike_BFLOAT16_to_FLOAT", "test_castlike_BFLOAT16_to_FLOAT_expanded",
          "test_castlike_FLOAT_to_BFLOAT16", "test_castlike_FLOAT_to_BFLOAT16_expanded"})
      k[c] = like_shape;
    return k;
  }();
  return m;
}

std::string op_key(const std::string& domain, const std::string& op_type) {
  return domain.empty() || domain == "ai.onnx" ? op_type : domain + "." + op_type;
}

void collect_ops(const onnx::GraphProto& g, std::set<std::pair<std::string, std::string>>& ops) {
  for (const auto& n : g.node()) {
    ops.emplace(n.domain() == "ai.onnx" ? std::string() : n.domain(), n.op_type());
    for (const auto& a : n.attribute()) {
      if (a.has_g()) collect_ops(a.g(), ops);
      for (const auto& sub : a.graphs()) collect_ops(sub, ops);
    }
  }
}

/// Files named <prefix><N>.pb in `dir`, ordered by N (input_10 after input_9).
std::vector<fs::path> numbered_files(const fs::path& dir, const std::string& prefix) {
  std::vector<std::pair<long, fs::path>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || e.path().extension() != ".pb") continue;
    const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - 3);
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    found.emplace_back(std::stol(digits), e.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::vector<fs::path> data_set_dirs(const fs::path& case_dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(case_dir, ec))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0)
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

uintmax_t directory_bytes(const fs::path& dir) {
  uintmax_t total = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

/// ONNX's generator writes bfloat16 tensors as UINT16 TensorProtos (numpy has no bfloat16): the
/// bits are right, the type is not. Take them as bfloat16 where the model says bfloat16.
tensor as_model_type(tensor t, dtype model_type) {
  if (model_type != dtype::bf16 || t.type() != dtype::u16) return t;
  tensor b = tensor::allocate(dtype::bf16, t.shape());
  if (t.bytes() != 0) std::memcpy(b.raw(), t.raw(), t.bytes());
  return b;
}

void classify(case_result& r, const status& s, const std::string& where) {
  r.result = s.code() == error_code::unsupported ? outcome::unsupported : outcome::failed;
  r.message = where + ": " + s.to_string();
}

/// Per graph input: true when some node's shape function reads it by value (Reshape's shape,
/// ReduceSum's axes...), which troupe requires to be a plan-time constant.
std::vector<bool> inputs_read_by_value(const runtime::graph& g) {
  std::vector<bool> out(g.inputs.size(), false);
  const auto& schemas = kernels::schema_registry::standard();
  for (const auto& n : g.nodes) {
    const kernels::op_schema* schema = schemas.find(n.op.domain, n.op.op_type);
    if (!schema) continue;
    for (int k : schema->value_inputs) {
      if (k < 0 || static_cast<size_t>(k) >= n.inputs.size()) continue;
      for (size_t i = 0; i < g.inputs.size(); ++i)
        if (g.inputs[i] == n.inputs[static_cast<size_t>(k)]) out[i] = true;
    }
  }
  return out;
}

/// The unsupported error a schema gives when an input's value is not known at plan time.
bool needs_plan_time_values(const status& s) {
  return s.code() == error_code::unsupported &&
         (s.message().find("must be known when the plan is built") != std::string::npos ||
          s.message().find("not known when the plan is built") != std::string::npos);
}

/// Runs `g` with the inputs marked in `freeze` turned into constants holding `inputs`' values
/// and the others fed at run time.
expected<std::vector<tensor>> run_frozen(const runtime::graph& g, const std::vector<tensor>& inputs,
                                         const std::vector<bool>& freeze) {
  runtime::graph copy = g;
  std::vector<int> kept;
  std::vector<tensor> fed;
  for (size_t i = 0; i < copy.inputs.size(); ++i) {
    const int id = copy.inputs[i];
    if (freeze[i] && i < inputs.size()) {
      runtime::value& v = copy.values[static_cast<size_t>(id)];
      v.constant = inputs[i];
      v.is_graph_input = false;
    } else {
      kept.push_back(id);
      if (i < inputs.size()) fed.push_back(inputs[i]);
    }
  }
  // Surplus data: passed on so that the session reports the count mismatch.
  for (size_t i = copy.inputs.size(); i < inputs.size(); ++i) fed.push_back(inputs[i]);
  copy.inputs = std::move(kept);
  runtime::session_options options;
  options.where = kernels::backend::cpu;
  auto session = runtime::session::create_from_graph(std::move(copy), options);
  if (!session) return session.error();
  return (*session)->run(fed);
}

void run_case_impl(case_result& r) {
  const fs::path dir(r.tc.dir);
  const std::string model_path = (dir / "model.onnx").string();

  // The op list (for the claim) comes from the protobuf itself, so that a model our loader
  // rejects is still judged by what it contains.
  onnx::ModelProto model;
  {
    std::ifstream f(model_path, std::ios::binary);
    if (!f || !model.ParseFromIstream(&f)) {
      r.result = outcome::failed;
      r.message = "cannot parse model.onnx as an ONNX ModelProto";
      return;
    }
  }
  std::set<std::pair<std::string, std::string>> ops;
  collect_ops(model.graph(), ops);
  const auto& kernels = kernels::kernel_registry::standard();
  r.claimed = !ops.empty();
  for (const auto& [domain, op] : ops) {
    r.ops.push_back(op_key(domain, op));
    r.claimed = r.claimed && kernels.has_op(kernels::backend::cpu, domain, op);
  }
  std::sort(r.ops.begin(), r.ops.end());

  if (auto it = known_bad_data().find(r.tc.name); it != known_bad_data().end()) {
    r.result = outcome::skipped;
    r.message = it->second;
    return;
  }
  const auto sets = data_set_dirs(dir);
  if (sets.empty()) {
    r.result = outcome::skipped;
    r.message = "no test_data_set_* directory";
    return;
  }
  if (const uintmax_t bytes = directory_bytes(dir); bytes > max_case_data_bytes) {
    r.result = outcome::skipped;
    r.message = "data too large for the time budget (" + std::to_string(bytes >> 20) + " MiB)";
    return;
  }

  // session::create is load_onnx_file + create_from_graph; the graph is kept so that inputs can
  // be frozen per data set (below).
  auto loaded = runtime::load_onnx_file(model_path);
  if (!loaded) return classify(r, loaded.error(), "load");
  const runtime::graph& g = *loaded;
  const std::vector<bool> value_feeding = inputs_read_by_value(g);
  const std::vector<bool> all_inputs(g.inputs.size(), true);

  tolerance tol;
  if (auto it = tolerance_overrides().find(r.tc.name); it != tolerance_overrides().end())
    tol = it->second;

  std::set<std::string> frozen_names;
  for (const auto& set : sets) {
    const std::string set_name = set.filename().string();
    std::vector<tensor> inputs;
    for (const auto& p : numbered_files(set, "input_")) {
      auto t = runtime::load_tensor_pb_file(p.string());
      if (!t) return classify(r, t.error(), set_name + " input");
      const size_t i = inputs.size();
      inputs.push_back(i < g.inputs.size()
                           ? as_model_type(std::move(*t), g.values[g.inputs[i]].type)
                           : std::move(*t));
    }
    std::vector<tensor> expected_outputs;
    for (const auto& p : numbered_files(set, "output_")) {
      auto t = runtime::load_tensor_pb_file(p.string());
      if (!t) return classify(r, t.error(), set_name + " expected output");
      const size_t i = expected_outputs.size();
      expected_outputs.push_back(i < g.outputs.size()
                                     ? as_model_type(std::move(*t), g.values[g.outputs[i]].type)
                                     : std::move(*t));
    }
    // ONNX's tests feed shapes, axes, pads... as graph inputs; troupe needs them when the plan is
    // built. Those inputs are frozen into constants with this data set's values; where values are
    // still missing (computed from inputs by other ops), every input is frozen and the whole
    // graph runs at plan time through constant folding (the same CPU kernels).
    const std::vector<bool>* freeze = &value_feeding;
    auto outputs = run_frozen(g, inputs, *freeze);
    if (!outputs && needs_plan_time_values(outputs.error()) && value_feeding != all_inputs) {
      freeze = &all_inputs;
      outputs = run_frozen(g, inputs, *freeze);
    }
    if (!outputs) return classify(r, outputs.error(), set_name + " run");
    for (size_t i = 0; i < freeze->size() && i < inputs.size(); ++i)
      if ((*freeze)[i]) frozen_names.insert(g.values[g.inputs[i]].name);
    if (outputs->size() < expected_outputs.size()) {
      r.result = outcome::failed;
      r.message = set_name + ": " + std::to_string(outputs->size()) + " outputs, expected " +
                  std::to_string(expected_outputs.size());
      return;
    }
    for (size_t i = 0; i < expected_outputs.size(); ++i) {
      const status s = compare_tensors((*outputs)[i], expected_outputs[i], tol.atol, tol.rtol);
      if (!s.is_ok()) {
        r.result = outcome::failed;
        r.message = set_name + " output " + std::to_string(i) + " ('" +
                    g.values[g.outputs[i]].name + "'): " + s.message();
        return;
      }
    }
    ++r.data_sets;
  }
  if (!frozen_names.empty()) {
    r.inputs_frozen = true;
    r.message = "inputs frozen as constants:";
    for (const auto& n : frozen_names) r.message += " " + n;
  }
  r.result = outcome::passed;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n')
      out += ' ';
    else
      out += c;
  }
  return out;
}

struct counts {
  size_t cases = 0, passed = 0, failed = 0, unsupported = 0, skipped = 0, claimed_failed = 0;
  size_t frozen = 0;
  void add(const case_result& r) {
    ++cases;
    frozen += r.result == outcome::passed && r.inputs_frozen;
    switch (r.result) {
      case outcome::passed:
        ++passed;
        break;
      case outcome::failed:
        ++failed;
        claimed_failed += r.claimed;
        break;
      case outcome::unsupported:
        ++unsupported;
        break;
      case outcome::skipped:
        ++skipped;
        break;
    }
  }
};

std::map<std::string, counts> per_op(const std::vector<case_result>& results) {
  std::map<std::string, counts> m;
  for (const auto& r : results)
    for (const auto& op : r.ops) m[op].add(r);
  return m;
}

bool op_has_cpu_kernel(const std::string& key) {
  const size_t dot = key.rfind('.');
  const std::string domain = dot == std::string::npos ? "" : key.substr(0, dot);
  const std::string op = dot == std::string::npos ? key : key.substr(dot + 1);
  return kernels::kernel_registry::standard().has_op(kernels::backend::cpu, domain, op);
}

}  // namespace

std::string_view outcome_name(outcome o) {
  switch (o) {
    case outcome::passed:
      return "passed";
    case outcome::failed:
      return "failed";
    case outcome::unsupported:
      return "unsupported";
    case outcome::skipped:
      return "skipped";
  }
  return "?";
}

const std::vector<std::string>& default_suites() {
  static const std::vector<std::string> s{"node", "pytorch-converted", "pytorch-operator",
                                          "simple"};
  return s;
}

std::vector<test_case> discover_cases(const std::string& data_dir, const std::string& filter) {
  std::vector<test_case> out;
  const fs::path root(data_dir);
  std::error_code ec;
  auto add_case = [&](const std::string& suite, const fs::path& dir) {
    test_case tc{suite, dir.filename().string(), dir.string()};
    if (filter.empty() || (tc.suite + "/" + tc.name).find(filter) != std::string::npos)
      out.push_back(std::move(tc));
  };
  auto add_suite = [&](const std::string& suite, const fs::path& dir) {
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_directory() && fs::exists(e.path() / "model.onnx")) dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs) add_case(suite, d);
  };
  // DIR may be one case, one suite, or the root holding the suites.
  if (fs::exists(root / "model.onnx", ec)) {
    add_case(root.parent_path().filename().string(), root);
    return out;
  }
  bool any_suite = false;
  for (const auto& suite : default_suites()) {
    if (fs::is_directory(root / suite, ec)) {
      any_suite = true;
      add_suite(suite, root / suite);
    }
  }
  if (!any_suite && fs::is_directory(root, ec)) add_suite(root.filename().string(), root);
  return out;
}

case_result run_case(const test_case& tc) {
  case_result r;
  r.tc = tc;
  const auto start = std::chrono::steady_clock::now();
  try {
    run_case_impl(r);
  } catch (const std::exception& e) {
    r.result = outcome::failed;
    r.message = std::string("exception: ") + e.what();
  } catch (...) {
    r.result = outcome::failed;
    r.message = "unknown exception";
  }
  r.elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return r;
}

status compare_tensors(const tensor& got, const tensor& want, double atol, double rtol) {
  if (got.type() != want.type())
    return invalid_argument("dtype " + std::string(dtype_name(got.type())) + ", expected " +
                            std::string(dtype_name(want.type())));
  if (got.shape() != want.shape())
    return invalid_argument("shape " + shape_to_string(got.shape()) + ", expected " +
                            shape_to_string(want.shape()));
  const int64_t n = want.elements();
  if (is_floating(want.type())) {
    int64_t bad = 0, first_bad = -1;
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double a = got.value_as_double(i), b = want.value_as_double(i);
      if (std::isnan(a) && std::isnan(b)) continue;
      if (a == b) continue;  // also equal infinities
      const double err = std::fabs(a - b);
      if (!(err <= atol + rtol * std::fabs(b))) {
        if (first_bad < 0) first_bad = i;
        ++bad;
        if (!(err <= worst)) worst = err;
      }
    }
    if (bad == 0) return status::ok();
    char buf[256];
    std::snprintf(buf, sizeof(buf),
                  "%lld of %lld elements off (atol %g, rtol %g); first at %lld: got %.8g, "
                  "expected %.8g; largest error %.3g",
                  static_cast<long long>(bad), static_cast<long long>(n), atol, rtol,
                  static_cast<long long>(first_bad), got.value_as_double(first_bad),
                  want.value_as_double(first_bad), worst);
    return invalid_argument(buf);
  }
  // Integers and bools: exact. Compared as bytes, which also covers 64-bit values beyond double.
  if (n == 0 || std::memcmp(got.raw(), want.raw(), want.bytes()) == 0) return status::ok();
  const size_t width = dtype_size(want.type());
  int64_t first_bad = 0;
  while (std::memcmp(static_cast<const char*>(got.raw()) + first_bad * width,
                     static_cast<const char*>(want.raw()) + first_bad * width, width) == 0)
    ++first_bad;
  return invalid_argument("element " + std::to_string(first_bad) + ": got " +
                          std::to_string(got.value_as_int64(first_bad)) + ", expected " +
                          std::to_string(want.value_as_int64(first_bad)));
}

std::string summary_text(const std::vector<case_result>& results) {
  counts total;
  double total_ms = 0;
  for (const auto& r : results) {
    total.add(r);
    total_ms += r.elapsed_ms;
  }
  std::ostringstream s;
  char line[256];
  s << "\nONNX conformance, per op (a case counts once for each op type in its model; "
       "* = the op has a CPU kernel)\n";
  std::snprintf(line, sizeof(line), "  %-34s %6s %7s %7s %7s %7s\n", "op", "cases", "passed",
                "failed", "unsupp", "skipped");
  s << line;
  for (const auto& [op, c] : per_op(results)) {
    const std::string name = op + (op_has_cpu_kernel(op) ? " *" : "");
    std::snprintf(line, sizeof(line), "  %-34s %6zu %7zu %7zu %7zu %7zu\n", name.c_str(), c.cases,
                  c.passed, c.failed, c.unsupported, c.skipped);
    s << line;
  }
  std::vector<const case_result*> failed;
  for (const auto& r : results)
    if (r.result == outcome::failed) failed.push_back(&r);
  std::stable_sort(failed.begin(), failed.end(), [](const case_result* a, const case_result* b) {
    return a->claimed > b->claimed;
  });
  if (!failed.empty()) s << "\nfailed cases:\n";
  for (const auto* r : failed) {
    s << "  " << r->tc.suite << "/" << r->tc.name << (r->claimed ? " [claimed]" : " [not claimed]")
      << ": " << r->message << "\n";
  }
  std::vector<const case_result*> slowest;
  for (const auto& r : results) slowest.push_back(&r);
  std::sort(slowest.begin(), slowest.end(), [](const case_result* a, const case_result* b) {
    return a->elapsed_ms > b->elapsed_ms;
  });
  if (!slowest.empty()) {
    s << "\nslowest cases:";
    for (size_t i = 0; i < slowest.size() && i < 5; ++i) {
      std::snprintf(line, sizeof(line), " %s/%s %.0f ms%s", slowest[i]->tc.suite.c_str(),
                    slowest[i]->tc.name.c_str(), slowest[i]->elapsed_ms, i + 1 < 5 ? "," : "");
      s << line;
    }
    s << "\n";
  }
  std::snprintf(line, sizeof(line),
                "\nONNX conformance totals: %zu cases: %zu passed (%zu with inputs frozen), %zu "
                "failed (%zu claimed), %zu unsupported, %zu skipped; %.1f s in cases\n",
                total.cases, total.passed, total.frozen, total.failed, total.claimed_failed,
                total.unsupported, total.skipped, total_ms / 1000);
  s << line;
  return s.str();
}

status write_report(const std::string& path, const std::vector<case_result>& results) {
  std::ofstream f(path);
  if (!f) return io_error("cannot create report '" + path + "'");
  counts total;
  for (const auto& r : results) total.add(r);
  const bool json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  if (json) {
    f << "{\n  \"totals\": {\"cases\": " << total.cases << ", \"passed\": " << total.passed
      << ", \"failed\": " << total.failed << ", \"claimed_failed\": " << total.claimed_failed
      << ", \"passed_with_inputs_frozen\": " << total.frozen
      << ", \"unsupported\": " << total.unsupported << ", \"skipped\": " << total.skipped
      << "},\n  \"cases\": [\n";
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      f << "    {\"suite\": \"" << json_escape(r.tc.suite) << "\", \"name\": \""
        << json_escape(r.tc.name) << "\", \"result\": \"" << outcome_name(r.result)
        << "\", \"claimed\": " << (r.claimed ? "true" : "false")
        << ", \"inputs_frozen\": " << (r.inputs_frozen ? "true" : "false") << ", \"ops\": [";
      for (size_t k = 0; k < r.ops.size(); ++k)
        f << (k ? ", " : "") << "\"" << json_escape(r.ops[k]) << "\"";
      char ms[32];
      std::snprintf(ms, sizeof(ms), "%.3f", r.elapsed_ms);
      f << "], \"data_sets\": " << r.data_sets << ", \"elapsed_ms\": " << ms << ", \"message\": \""
        << json_escape(r.message) << "\"}" << (i + 1 < results.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
  } else {
    f << "# ONNX conformance\n\n"
      << total.cases << " cases: " << total.passed << " passed (" << total.frozen
      << " with inputs frozen), " << total.failed << " failed (" << total.claimed_failed
      << " claimed), " << total.unsupported << " unsupported, " << total.skipped << " skipped.\n\n"
      << "A case is claimed when every op in its model has a CPU kernel. Floats compare with "
         "|a-b| <= atol + rtol*|b| (atol "
      << default_atol << ", rtol " << default_rtol << ", NaN equals NaN); integers and bools "
      << "exactly. Graph inputs read by value at plan time (shapes, axes, pads) run as "
         "constants holding each data set's values (\"inputs frozen\").\n\n## Per op\n\n| op | CPU "
         "kernel | cases | passed | failed | unsupported | skipped |\n"
      << "|---|---|---|---|---|---|---|\n";
    for (const auto& [op, c] : per_op(results))
      f << "| " << op << " | " << (op_has_cpu_kernel(op) ? "yes" : "no") << " | " << c.cases
        << " | " << c.passed << " | " << c.failed << " | " << c.unsupported << " | " << c.skipped
        << " |\n";
    f << "\n## Cases\n\n| suite | case | result | claimed | ops | ms | message |\n"
      << "|---|---|---|---|---|---|---|\n";
    for (const auto& r : results) {
      std::string ops;
      for (size_t k = 0; k < r.ops.size(); ++k) ops += (k ? ", " : "") + r.ops[k];
      char ms[32];
      std::snprintf(ms, sizeof(ms), "%.1f", r.elapsed_ms);
      f << "| " << r.tc.suite << " | " << r.tc.name << " | " << outcome_name(r.result) << " | "
        << (r.claimed ? "yes" : "no") << " | " << md_escape(ops) << " | " << ms << " | "
        << md_escape(r.message) << " |\n";
    }
  }
  if (!f) return io_error("cannot write report '" + path + "'");
  return status::ok();
}

}  // namespace troupe::conformance
