// Timings of the CUDA kernels on ResNet-50 / BERT-base shapes. DISABLED_: run with
// --gtest_also_run_disabled_tests --gtest_filter='*Bench*' on a GPU host. Prints microseconds per
// call and the achieved TFLOP/s or GB/s; checks nothing but that the kernels run.
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

void report(const char* what, expected<double> us, double flop, double bytes) {
  ASSERT_TRUE(us.has_value()) << what << ": " << us.error().to_string();
  std::fflush(stdout);
  std::fprintf(stderr, "--- %s\n", what);
  std::printf("%-44s %9.1f us", what, *us);
  if (flop > 0) std::printf("  %7.1f TFLOP/s", flop / (*us * 1e6));
  if (bytes > 0) std::printf("  %7.1f GB/s", bytes / (*us * 1e3));
  std::printf("\n");
  std::fflush(stdout);
}

tensor maybe_half(tensor t, bool half) {
  return half ? to_f16(t) : t;
}

TEST(CudaBench, DISABLED_Conv) {
  TROUPE_REQUIRE_GPU();
  struct conv_shape {
    const char* name;
    shape_t x, w;
    int64_t stride, pad;
  };
  const conv_shape shapes[] = {
      {"stem 7x7/2 3->64 224 b8", {8, 3, 224, 224}, {64, 3, 7, 7}, 2, 3},
      {"3x3 64->64 56 b8", {8, 64, 56, 56}, {64, 64, 3, 3}, 1, 1},
      {"1x1 256->64 56 b8", {8, 256, 56, 56}, {64, 256, 1, 1}, 1, 0},
      {"3x3 256->256 14 b8", {8, 256, 14, 14}, {256, 256, 3, 3}, 1, 1},
      {"1x1 2048->512 7 b8", {8, 2048, 7, 7}, {512, 2048, 1, 1}, 1, 0},
  };
  for (const auto& s : shapes) {
    for (bool half : {false, true}) {
      op_node n = make_node("FusedConv", 1, "troupe");
      n.attrs.set("strides", std::vector<int64_t>{s.stride, s.stride});
      n.attrs.set("pads", std::vector<int64_t>{s.pad, s.pad, s.pad, s.pad});
      n.attrs.set("activation", std::string("Relu"));
      tensor x = maybe_half(random_tensor(dtype::f32, s.x), half);
      tensor w = maybe_half(random_tensor(dtype::f32, s.w), half);
      tensor b = maybe_half(random_tensor(dtype::f32, {s.w[0]}), half);
      const int64_t oh = (s.x[2] + 2 * s.pad - s.w[2]) / s.stride + 1;
      const double flop = 2.0 * s.x[0] * s.w[0] * oh * oh * s.w[1] * s.w[2] * s.w[3];
      const std::string name = std::string(s.name) + (half ? " f16" : " f32");
      report((name + " relu").c_str(), time_op_cuda(n, {x, w, b}, {false, true, true}), flop, 0);
      op_node plain = n;
      plain.attrs.erase("activation");
      report((name + " bias").c_str(), time_op_cuda(plain, {x, w, b}, {false, true, true}), flop,
             0);
      report((name + " conv").c_str(), time_op_cuda(plain, {x, w}, {false, true}), flop, 0);
    }
  }
}

TEST(CudaBench, DISABLED_MatMul) {
  TROUPE_REQUIRE_GPU();
  for (bool half : {false, true}) {
    const char* suffix = half ? " f16" : " f32";
    {
      op_node n = make_node("FusedMatMul", 1, "troupe");
      n.attrs.set("activation", std::string("Gelu"));
      tensor a = maybe_half(random_tensor(dtype::f32, {8, 128, 768}), half);
      tensor b = maybe_half(random_tensor(dtype::f32, {768, 3072}), half);
      tensor bias = maybe_half(random_tensor(dtype::f32, {3072}), half);
      report((std::string("FFN1 1024x768x3072 +bias+gelu") + suffix).c_str(),
             time_op_cuda(n, {a, b, bias}, {false, true, true}), 2.0 * 1024 * 768 * 3072, 0);
    }
    {
      op_node n = make_node("MatMul", 13);
      tensor a = maybe_half(random_tensor(dtype::f32, {8, 12, 128, 64}), half);
      tensor b = maybe_half(random_tensor(dtype::f32, {8, 12, 64, 128}), half);
      report((std::string("QK^T 96x128x64x128") + suffix).c_str(), time_op_cuda(n, {a, b}),
             2.0 * 96 * 128 * 64 * 128, 0);
    }
    {
      op_node n = make_node("MatMul", 13);
      tensor a = maybe_half(random_tensor(dtype::f32, {4096, 4096}), half);
      tensor b = maybe_half(random_tensor(dtype::f32, {4096, 4096}), half);
      report((std::string("square 4096") + suffix).c_str(), time_op_cuda(n, {a, b}, {}, 20),
             2.0 * 4096.0 * 4096 * 4096, 0);
    }
  }
}

TEST(CudaBench, DISABLED_MemoryBound) {
  TROUPE_REQUIRE_GPU();
  for (bool half : {false, true}) {
    const double es = half ? 2 : 4;
    const char* suffix = half ? " f16" : " f32";
    {
      tensor a = maybe_half(random_tensor(dtype::f32, {16, 1024, 1024}), half);
      tensor b = maybe_half(random_tensor(dtype::f32, {16, 1024, 1024}), half);
      report((std::string("Add 16M same shape") + suffix).c_str(),
             time_op_cuda(make_node("Add", 13), {a, b}), 0, 3 * 16.0 * 1024 * 1024 * es);
      tensor row = maybe_half(random_tensor(dtype::f32, {1024}), half);
      report((std::string("Add 16M + row") + suffix).c_str(),
             time_op_cuda(make_node("Add", 13), {a, row}), 0, 2 * 16.0 * 1024 * 1024 * es);
      report((std::string("Erf 16M") + suffix).c_str(), time_op_cuda(make_node("Erf", 13), {a}), 0,
             2 * 16.0 * 1024 * 1024 * es);
    }
    {
      tensor x = maybe_half(random_tensor(dtype::f32, {8, 12, 128, 128}), half);
      report((std::string("Softmax 12288x128") + suffix).c_str(),
             time_op_cuda(make_node("Softmax", 13), {x}), 0, 2 * 8.0 * 12 * 128 * 128 * es);
    }
    {
      op_node n = make_node("LayerNormalization", 17);
      tensor x = maybe_half(random_tensor(dtype::f32, {8, 128, 768}), half);
      tensor s = maybe_half(random_tensor(dtype::f32, {768}), half);
      report((std::string("LayerNorm 1024x768") + suffix).c_str(), time_op_cuda(n, {x, s, s}), 0,
             2 * 1024.0 * 768 * es);
    }
    {
      op_node n = make_node("Transpose", 13);
      n.attrs.set("perm", std::vector<int64_t>{0, 2, 1, 3});
      tensor x = maybe_half(random_tensor(dtype::f32, {8, 128, 12, 64}), half);
      report((std::string("Transpose 0213 8x128x12x64") + suffix).c_str(), time_op_cuda(n, {x}), 0,
             2 * 8.0 * 128 * 12 * 64 * es);
      n.attrs.set("perm", std::vector<int64_t>{0, 1, 3, 2});
      tensor y = maybe_half(random_tensor(dtype::f32, {8, 12, 512, 512}), half);
      report((std::string("Transpose 0132 8x12x512x512") + suffix).c_str(), time_op_cuda(n, {y}), 0,
             2 * 8.0 * 12 * 512 * 512 * es);
    }
    {
      tensor table = maybe_half(random_tensor(dtype::f32, {30522, 768}), half);
      tensor idx = random_tensor(dtype::i64, {8, 128}, 0, 30522);
      report((std::string("Gather embeddings 1024x768") + suffix).c_str(),
             time_op_cuda(make_node("Gather", 13), {table, idx}), 0, 2 * 1024.0 * 768 * es);
    }
  }
}

}  // namespace
}  // namespace troupe::testing
