// The channels-last layout pass on the real convolutional models of tests/models (CPU backend,
// batch 1, 224x224, deterministic weights from filled_model): the same outputs with and without the
// pass, and the border transposes it inserts.
#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "tests/runtime/layout_test_util.hpp"

namespace troupe::testing {
namespace {

struct model_case {
  const char* name;
  int transposes;  // border transposes the pass inserts; -1: not checked
};

void PrintTo(const model_case& c, std::ostream* os) {
  *os << c.name;
}

class layout_models : public ::testing::TestWithParam<model_case> {};

TEST_P(layout_models, same_outputs_with_channels_last) {
  const model_case& c = GetParam();
  const std::string bytes = filled_model(c.name);
  if (bytes.empty()) GTEST_SKIP() << c.name << ".onnx is not on disk";
  const auto r = expect_same_outputs(bytes, {random_input({1, 3, 224, 224}, 11)});
  EXPECT_GT(r.channels_last.channels_last_nodes, 0);
  if (c.transposes >= 0) {
    EXPECT_EQ(r.transposes(), c.transposes);
  }
  if (c.transposes == 1 && r.nchw.count("Transpose") == 0) {
    EXPECT_EQ(r.channels_last.transposed, std::vector<std::string>{"input"})
        << "the one transpose reads the image";
  }
  std::printf("%s: %d channels-last nodes, %d transposes, %d reshapes inserted\n", c.name,
              r.channels_last.channels_last_nodes, r.transposes(), r.reshapes());
}

// ResNet-50 and the other plain CNNs need one transpose, at the input: everything up to the
// global pool runs channels-last and the pool's [N, C, 1, 1] output crosses for free.
INSTANTIATE_TEST_SUITE_P(
    models, layout_models,
    ::testing::Values(model_case{"resnet50", 1}, model_case{"resnext50_32x4d", 1},
                      model_case{"mobilenet_v3_large", 1}, model_case{"efficientnet_b0", 1},
                      model_case{"googlenet", 1}, model_case{"regnet_y_400mf", 1},
                      model_case{"mnasnet1_0", 1}, model_case{"squeezenet1_1", -1},
                      model_case{"densenet121", -1}, model_case{"shufflenet_v2_x1_0", -1}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace troupe::testing
