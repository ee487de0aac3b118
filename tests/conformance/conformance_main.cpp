// troupe_conformance: ONNX's backend node/model tests as GoogleTest cases, one per case
// directory (suite "pytorch-converted" becomes "pytorch_converted": '-' means exclusion in
// --gtest_filter). A claimed case that fails fails its test; unsupported and unclaimed failures
// are skips with the reason. After the run: a per-op summary, and --report writes every case.

#include <gtest/gtest.h>

#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/conformance/conformance.hpp"

namespace {

using namespace troupe::conformance;

constexpr const char* default_data_dir = "/usr/share/libonnx-testdata/data";

struct options {
  std::string data_dir;
  std::string filter;
  std::string report_path;
};

std::vector<case_result>& results() {
  static std::vector<case_result> r;
  return r;
}

// The case running now, for the crash message (written from a signal handler: fixed buffer).
char current_case[512] = "";

extern "C" void on_fatal_signal(int sig) {
  const char prefix[] = "\ntroupe_conformance: fatal signal while running case ";
  (void)!write(2, prefix, sizeof(prefix) - 1);
  (void)!write(2, current_case, strlen(current_case));
  (void)!write(2, "\n", 1);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

class case_test : public ::testing::Test {
 public:
  explicit case_test(test_case tc) : tc_(std::move(tc)) {}
  void TestBody() override {
    std::snprintf(current_case, sizeof(current_case), "%s/%s", tc_.suite.c_str(), tc_.name.c_str());
    case_result r = run_case(tc_);
    current_case[0] = '\0';
    results().push_back(r);
    switch (r.result) {
      case outcome::passed:
        return;
      case outcome::failed:
        if (r.claimed) {
          ADD_FAILURE() << r.message;
        } else {
          GTEST_SKIP() << "failed, not claimed (an op has no CPU kernel): " << r.message;
        }
        return;
      case outcome::unsupported:
        GTEST_SKIP() << "unsupported: " << r.message;
        return;
      case outcome::skipped:
        GTEST_SKIP() << "skipped: " << r.message;
        return;
    }
  }

 private:
  test_case tc_;
};

void print_usage() {
  std::printf(
      "troupe_conformance [--data-dir DIR] [--filter SUBSTR] [--report FILE] [gtest flags]\n\n"
      "Runs ONNX's backend test cases (libonnx-testdata) through troupe's CPU backend.\n"
      "  --data-dir DIR   the data root holding node/, pytorch-converted/, pytorch-operator/,\n"
      "                   simple/ (default %s, or $TROUPE_ONNX_TESTDATA);\n"
      "                   DIR may also be one suite or one case directory\n"
      "  --filter SUBSTR  only cases whose \"suite/name\" contains SUBSTR (e.g. node/test_conv)\n"
      "  --report FILE    write every case's result: JSON if FILE ends in .json, else markdown\n"
      "A claimed case (every op has a CPU kernel) that fails makes the program fail.\n\n",
      default_data_dir);
}

/// Takes our flags out of argv (gtest has removed its own); error on anything unknown.
bool parse_options(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& flag, std::string& out) {
      if (a == flag && i + 1 < argc) {
        out = argv[++i];
        return true;
      }
      if (a.rfind(flag + "=", 0) == 0) {
        out = a.substr(flag.size() + 1);
        return true;
      }
      return false;
    };
    if (value("--data-dir", o.data_dir) || value("--filter", o.filter) ||
        value("--report", o.report_path))
      continue;
    std::fprintf(stderr, "troupe_conformance: unknown argument '%s'\n", a.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) print_usage();
  ::testing::InitGoogleTest(&argc, argv);
  options o;
  if (const char* env = std::getenv("TROUPE_ONNX_TESTDATA")) o.data_dir = env;
  if (o.data_dir.empty()) o.data_dir = default_data_dir;
  if (!parse_options(argc, argv, o)) {
    print_usage();
    return 2;
  }

  std::error_code ec;
  if (!std::filesystem::exists(o.data_dir, ec)) {
    const std::string why = "ONNX test data not found at " + o.data_dir +
                            " (install libonnx-testdata or pass --data-dir)";
    ::testing::RegisterTest("conformance", "data", nullptr, nullptr, __FILE__, __LINE__,
                            [why]() -> ::testing::Test* {
                              struct skip : ::testing::Test {
                                std::string why_;
                                explicit skip(std::string w) : why_(std::move(w)) {}
                                void TestBody() override { GTEST_SKIP() << why_; }
                              };
                              return new skip(why);
                            });
    return RUN_ALL_TESTS();
  }

  const auto cases = discover_cases(o.data_dir, o.filter);
  std::printf("troupe_conformance: %zu cases under %s%s\n", cases.size(), o.data_dir.c_str(),
              o.filter.empty() ? "" : (" matching '" + o.filter + "'").c_str());
  for (const auto& tc : cases) {
    std::string suite = tc.suite;
    for (char& c : suite)
      if (c == '-') c = '_';
    ::testing::RegisterTest(suite.c_str(), tc.name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [tc]() -> ::testing::Test* { return new case_test(tc); });
  }
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, on_fatal_signal);

  const int rc = RUN_ALL_TESTS();
  std::fputs(summary_text(results()).c_str(), stdout);
  if (!o.report_path.empty()) {
    const auto s = write_report(o.report_path, results());
    if (!s.is_ok()) {
      std::fprintf(stderr, "error: %s\n", s.to_string().c_str());
      return rc == 0 ? 2 : rc;
    }
    std::printf("report written to %s\n", o.report_path.c_str());
  }
  return rc;
}
