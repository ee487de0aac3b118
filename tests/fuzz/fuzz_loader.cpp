// libFuzzer target: model bytes -> load_onnx_bytes -> session -> one run on zero inputs.
// Every failure must be a status; a crash, a sanitizer report or a leak is a bug. Inputs and
// plans are bounded so that the fuzzer spends its time on parsing and validation rather than on
// legitimately huge (but valid) models.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/session.hpp"

namespace {

constexpr size_t max_model_bytes = size_t{1} << 20;
constexpr size_t max_nodes = 256;
constexpr int64_t max_input_elements = int64_t{1} << 16;
constexpr size_t max_arena_bytes = size_t{64} << 20;

int fuzz_one(const uint8_t* data, size_t size) {
  using namespace troupe;
  if (size > max_model_bytes) return 0;
  auto g = runtime::load_onnx_bytes(data, size, "");
  if (!g || g->nodes.size() > max_nodes) return 0;

  runtime::session_options options;
  options.where = kernels::backend::cpu;
  auto s = runtime::session::create_from_graph(std::move(*g), options);
  if (!s) return 0;

  // Zero inputs of the declared shapes; symbolic or unknown dims are 1.
  std::vector<tensor> inputs;
  std::vector<tensor_info> infos;
  for (const auto& in : (*s)->inputs()) {
    if (in.type == dtype::undefined) return 0;
    shape_t shape;
    int64_t elements = 1;
    for (const auto& d : in.shape) {
      const int64_t n = d.is_static() ? d.size : 1;
      if (n > max_input_elements) return 0;
      elements *= n;
      if (elements > max_input_elements) return 0;
      shape.push_back(n);
    }
    infos.push_back({in.type, shape});
    inputs.push_back(tensor::zeros(in.type, std::move(shape)));
  }
  auto plan = (*s)->prepare(infos);
  if (!plan) return 0;
  if ((*plan)->memory().planned_arena_bytes > max_arena_bytes) return 0;
  size_t output_bytes = 0;
  for (const auto& o : (*plan)->output_infos()) output_bytes += o.bytes();
  if (output_bytes > max_arena_bytes) return 0;
  (void)(*s)->run(inputs);
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz_one(data, size);
}
