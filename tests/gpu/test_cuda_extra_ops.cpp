// The ops of kernels/cuda/extra_ops.cpp and conv_transpose_ops.cpp against the CPU backend on fresh
// random inputs: float outputs within 1e-4 (f32) / 1e-2 (f16) relative L2, index and integer
// outputs exactly (ties and NaN order included), and out-of-range indices as typed errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "tests/gpu/gpu_test_util.hpp"
#include "tests/kernels/kernel_test_util.hpp"

namespace troupe::testing {
namespace {

tensor i64s(const std::vector<int64_t>& v) {
  return tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}
tensor f32s(const std::vector<float>& v) {
  return tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}
tensor scalar_i64(int64_t v) {
  return tensor::from_vector(std::vector<int64_t>{v}, {});
}

/// Small integers as floats: many exact ties.
tensor tied_floats(shape_t shape, int levels = 4) {
  tensor t = random_tensor(dtype::i64, shape, 0, levels);
  tensor f = tensor::allocate(dtype::f32, shape);
  for (int64_t i = 0; i < t.elements(); ++i)
    f.data<float>()[i] = static_cast<float>(t.data<int64_t>()[i]);
  return f;
}

// ---- Resize / Upsample -------------------------------------------------------------------------

TEST(CudaExtraOps, ResizeNearestEveryRoundingAndCoordinateMode) {
  TROUPE_REQUIRE_GPU();
  const tensor x = random_tensor(dtype::f32, {2, 3, 5, 7});
  const tensor xi = random_tensor(dtype::i64, {2, 3, 5, 7}, -100, 100);
  for (const char* nm : {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}) {
    for (const char* cm : {"half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners",
                           "tf_half_pixel_for_nn"}) {
      SCOPED_TRACE(std::string(nm) + " " + cm);
      op_node n = make_node("Resize", 13);
      n.attrs.set("nearest_mode", std::string(nm));
      n.attrs.set("coordinate_transformation_mode", std::string(cm));
      // Upscale by scales, downscale and odd sizes by sizes.
      expect_parity(n, {x, tensor(), f32s({1, 1, 1.7f, 2.3f})});
      expect_parity(n, {xi, tensor(), f32s({1, 1, 0.6f, 0.45f})});
      expect_parity(n, {x, tensor(), tensor(), i64s({2, 3, 11, 4})});
      expect_parity(n, {x, tensor(), tensor(), i64s({2, 3, 9, 15})}, {.half = true});
    }
  }
}

TEST(CudaExtraOps, ResizeLinearAndCubic) {
  TROUPE_REQUIRE_GPU();
  const tensor x = random_tensor(dtype::f32, {2, 4, 13, 17});
  for (const char* mode : {"linear", "cubic"}) {
    for (const char* cm : {"half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners"}) {
      SCOPED_TRACE(std::string(mode) + " " + cm);
      op_node n = make_node("Resize", 13);
      n.attrs.set("mode", std::string(mode));
      n.attrs.set("coordinate_transformation_mode", std::string(cm));
      expect_parity(n, {x, tensor(), f32s({1, 1, 2, 2})});  // the 2x upsampling of FPN/UNet
      expect_parity(n, {x, tensor(), f32s({1, 1, 0.5f, 0.7f})});
      expect_parity(n, {x, tensor(), tensor(), i64s({2, 4, 1, 30})});
      expect_parity(n, {x, tensor(), tensor(), i64s({2, 4, 26, 34})}, {.half = true});
    }
  }
  // cubic with exclude_outside and another coefficient.
  op_node cubic = make_node("Resize", 13);
  cubic.attrs.set("mode", std::string("cubic"));
  cubic.attrs.set("exclude_outside", int64_t{1});
  cubic.attrs.set("cubic_coeff_a", -0.5f);
  expect_parity(cubic, {x, tensor(), f32s({1, 1, 1.6f, 0.8f})});
}

TEST(CudaExtraOps, ResizeTrilinearAntialiasCropAndUpsample) {
  TROUPE_REQUIRE_GPU();
  // 5-D trilinear (every spatial axis resized) and linear over all axes of a 3-D tensor.
  op_node lin = make_node("Resize", 13);
  lin.attrs.set("mode", std::string("linear"));
  expect_parity(
      lin, {random_tensor(dtype::f32, {1, 2, 4, 6, 5}), tensor(), f32s({1, 1, 2, 1.5f, 0.6f})});
  expect_parity(lin, {random_tensor(dtype::f32, {3, 5, 4}), tensor(), f32s({1.5f, 2, 0.75f})});
  // Antialiased downscaling (opset 18).
  for (const char* mode : {"linear", "cubic"}) {
    op_node aa = make_node("Resize", 18);
    aa.attrs.set("mode", std::string(mode));
    aa.attrs.set("antialias", int64_t{1});
    expect_parity(aa,
                  {random_tensor(dtype::f32, {1, 3, 32, 24}), tensor(), f32s({1, 1, 0.3f, 0.5f})});
  }
  // tf_crop_and_resize with an ROI reaching outside the input: the extrapolation value.
  for (const char* mode : {"nearest", "linear"}) {
    op_node crop = make_node("Resize", 13);
    crop.attrs.set("mode", std::string(mode));
    crop.attrs.set("coordinate_transformation_mode", std::string("tf_crop_and_resize"));
    crop.attrs.set("extrapolation_value", 7.5f);
    expect_parity(
        crop, {random_tensor(dtype::f32, {1, 2, 6, 8}), f32s({0, 0, -0.2f, 0.1f, 1, 1, 0.9f, 1.3f}),
               tensor(), i64s({1, 2, 5, 9})});
  }
  // Upsample: scales as an input (opset 9) and as an attribute (opset 7).
  op_node up9 = make_node("Upsample", 9);
  expect_parity(up9, {random_tensor(dtype::f32, {1, 3, 4, 5}), f32s({1, 1, 2, 3})},
                {.constant_inputs = {false, true}});
  op_node up7 = make_node("Upsample", 7);
  up7.attrs.set("mode", std::string("linear"));
  up7.attrs.set("scales", std::vector<float>{1, 1, 2, 2});
  expect_parity(up7, {random_tensor(dtype::f32, {2, 3, 4, 5})});
}

// ---- ConvTranspose -----------------------------------------------------------------------------

struct conv_t_case {
  shape_t x, w;
  std::vector<int64_t> strides, pads, output_padding, dilations;
  int64_t group = 1;
  bool bias = true;
  std::string auto_pad;
  std::vector<int64_t> output_shape;
};

op_node conv_t_node(const conv_t_case& k) {
  op_node n = make_node("ConvTranspose", 11);
  if (!k.strides.empty()) n.attrs.set("strides", k.strides);
  if (!k.pads.empty()) n.attrs.set("pads", k.pads);
  if (!k.output_padding.empty()) n.attrs.set("output_padding", k.output_padding);
  if (!k.dilations.empty()) n.attrs.set("dilations", k.dilations);
  if (k.group != 1) n.attrs.set("group", k.group);
  if (!k.auto_pad.empty()) n.attrs.set("auto_pad", k.auto_pad);
  if (!k.output_shape.empty()) n.attrs.set("output_shape", k.output_shape);
  return n;
}

TEST(CudaExtraOps, ConvTranspose) {
  TROUPE_REQUIRE_GPU();
  const conv_t_case cases[] = {
      {{2, 8, 7, 9}, {8, 4, 3, 3}, {}, {}, {}, {}},                        // plain
      {{1, 16, 8, 8}, {16, 8, 2, 2}, {2, 2}, {}, {}, {}},                  // UNet 2x up
      {{1, 16, 8, 8}, {16, 8, 4, 4}, {2, 2}, {1, 1, 1, 1}, {}, {}},        // DCGAN-style
      {{2, 6, 5, 7}, {6, 3, 3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, {}},      // output_padding
      {{1, 8, 6, 6}, {8, 2, 3, 3}, {2, 1}, {0, 1, 2, 0}, {}, {}, 4},       // groups, asymmetric
      {{1, 4, 5, 5}, {4, 4, 3, 3}, {1, 1}, {2, 0, 0, 1}, {}, {}},          // begin pad > end pad
      {{1, 4, 6, 5}, {4, 3, 3, 2}, {3, 2}, {1, 0, 1, 0}, {2, 1}, {2, 2}},  // dilations + outpad
      {{2, 4, 9}, {4, 6, 5}, {3}, {1, 2}, {}, {}},                         // 1-D
      {{1, 4, 3, 4, 5}, {4, 2, 2, 3, 3}, {2, 1, 2}, {}, {}, {}},           // 3-D
      {{1, 3, 5, 5}, {3, 2, 3, 3}, {2, 2}, {}, {}, {}, 1, false, "SAME_UPPER"},
      {{1, 3, 5, 5}, {3, 2, 3, 3}, {2, 2}, {}, {}, {}, 1, true, "", {10, 11}},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(shape_to_string(k.x) + " * " + shape_to_string(k.w));
    const op_node n = conv_t_node(k);
    const int64_t m = k.w[1] * k.group;
    std::vector<tensor> in{random_tensor(dtype::f32, k.x), random_tensor(dtype::f32, k.w)};
    if (k.bias) in.push_back(random_tensor(dtype::f32, {m}));
    expect_parity(n, in, {.constant_inputs = {false, true, true}});
    expect_parity(n, in);  // W and B read at run time
    expect_parity(n, in, {.constant_inputs = {false, true, true}, .half = true});
  }
}

// ---- ArgMax / ArgMin / Hardmax -----------------------------------------------------------------

TEST(CudaExtraOps, ArgMaxArgMinTiesAxesAndLastIndex) {
  TROUPE_REQUIRE_GPU();
  const shape_t shape{3, 5, 70};
  for (const char* op : {"ArgMax", "ArgMin"}) {
    for (int64_t axis : {0, 1, 2, -1, -2}) {
      for (int64_t last : {0, 1}) {
        for (int64_t keep : {0, 1}) {
          SCOPED_TRACE(std::string(op) + " axis " + std::to_string(axis) + " last " +
                       std::to_string(last) + " keepdims " + std::to_string(keep));
          op_node n = make_node(op, 13);
          n.attrs.set("axis", axis);
          n.attrs.set("select_last_index", last);
          n.attrs.set("keepdims", keep);
          expect_parity(n, {tied_floats(shape)});  // ties
          expect_parity(n, {random_tensor(dtype::f32, shape)});
          expect_parity(n, {random_tensor(dtype::i64, shape, -3, 3)});
          expect_parity(n, {random_tensor(dtype::i32, shape, -3, 3)});
          expect_parity(n, {tied_floats(shape, 8)}, {.half = true});
        }
      }
    }
  }
  // Long rows (the warp-per-row path) with NaNs, one row starting with NaN.
  tensor x = random_tensor(dtype::f32, {6, 1000});
  for (int64_t i = 0; i < x.elements(); i += 97) x.data<float>()[i] = NAN;
  x.data<float>()[0] = NAN;
  for (const char* op : {"ArgMax", "ArgMin"}) {
    for (int64_t last : {0, 1}) {
      op_node n = make_node(op, 13);
      n.attrs.set("axis", int64_t{1});
      n.attrs.set("select_last_index", last);
      expect_parity(n, {x});
      expect_parity(n, {tied_floats({6, 1000}, 50)});
    }
  }
}

TEST(CudaExtraOps, Hardmax) {
  TROUPE_REQUIRE_GPU();
  for (int64_t axis : {0, 1, -1}) {
    op_node n = make_node("Hardmax", 13);
    n.attrs.set("axis", axis);
    expect_parity(n, {tied_floats({4, 6, 9})});
    expect_parity(n, {random_tensor(dtype::f32, {4, 6, 9})}, {.half = true});
    op_node old = make_node("Hardmax", 11);  // coerced to 2-D at the axis
    old.attrs.set("axis", axis);
    expect_parity(old, {tied_floats({4, 6, 9})});
  }
}

// ---- TopK --------------------------------------------------------------------------------------

void topk_case(const tensor& x, int64_t k, int64_t axis, int64_t largest, bool half = false) {
  SCOPED_TRACE(x.info().to_string() + " k " + std::to_string(k) + " axis " + std::to_string(axis) +
               " largest " + std::to_string(largest));
  op_node n = make_node("TopK", 11);
  n.attrs.set("axis", axis);
  n.attrs.set("largest", largest);
  expect_parity(n, {x, i64s({k})}, {.num_outputs = 2, .half = half});
}

TEST(CudaExtraOps, TopK) {
  TROUPE_REQUIRE_GPU();
  for (int64_t largest : {1, 0}) {
    topk_case(random_tensor(dtype::f32, {4, 100}), 5, -1, largest);
    topk_case(random_tensor(dtype::f32, {4, 100}), 100, -1, largest);  // k = axis size
    topk_case(tied_floats({4, 100}), 37, 1, largest);                  // ties: lower index first
    topk_case(random_tensor(dtype::f32, {3, 50, 7}), 10, 1, largest);  // an inner axis
    topk_case(random_tensor(dtype::f32, {9, 4, 3}), 9, 0, largest);
    topk_case(random_tensor(dtype::i64, {5, 300}, -20, 20), 30, -1, largest);
    topk_case(random_tensor(dtype::i32, {5, 300}, -20, 20), 300, -1, largest);
    topk_case(random_tensor(dtype::f32, {2, 1000}), 1, -1, largest, true);
    // Several rounds: 50257 (a vocabulary) with k = 50, 5000 with k = 1024, ties in both.
    topk_case(random_tensor(dtype::f32, {2, 50257}), 50, -1, largest);
    topk_case(tied_floats({2, 50257}, 30), 50, -1, largest);
    topk_case(tied_floats({3, 5000}, 100), 1024, -1, largest);
    topk_case(random_tensor(dtype::f32, {1, 9000, 2}), 700, 1, largest);
  }
  // NaN ranks above every number (first when largest, last when smallest).
  tensor x = random_tensor(dtype::f32, {3, 40});
  for (int64_t i = 0; i < x.elements(); i += 7) x.data<float>()[i] = NAN;
  topk_case(x, 12, -1, 1);
  topk_case(x, 40, -1, 0);
}

// ---- Tile / DepthToSpace / SpaceToDepth --------------------------------------------------------

TEST(CudaExtraOps, TileDepthToSpaceSpaceToDepth) {
  TROUPE_REQUIRE_GPU();
  op_node tile = make_node("Tile", 13);
  expect_parity(tile, {random_tensor(dtype::f32, {2, 3, 4}), i64s({2, 1, 3})});
  expect_parity(tile, {random_tensor(dtype::i64, {1, 5}, -9, 9), i64s({4, 2})});
  expect_parity(tile, {random_tensor(dtype::boolean, {3, 1, 2}), i64s({1, 5, 1})});
  expect_parity(tile, {random_tensor(dtype::f32, {2, 3}), i64s({1, 1})}, {.half = true});
  for (const char* mode : {"DCR", "CRD"}) {
    op_node d2s = make_node("DepthToSpace", 13);
    d2s.attrs.set("blocksize", int64_t{2});
    d2s.attrs.set("mode", std::string(mode));
    expect_parity(d2s, {random_tensor(dtype::f32, {2, 12, 3, 5})});
    expect_parity(d2s, {random_tensor(dtype::f32, {1, 8, 4, 4})}, {.half = true});
  }
  op_node d2s3 = make_node("DepthToSpace", 13);
  d2s3.attrs.set("blocksize", int64_t{3});
  expect_parity(d2s3, {random_tensor(dtype::i32, {1, 18, 2, 3}, -50, 50)});
  op_node s2d = make_node("SpaceToDepth", 13);
  s2d.attrs.set("blocksize", int64_t{2});
  expect_parity(s2d, {random_tensor(dtype::f32, {2, 3, 6, 8})});
  expect_parity(s2d, {random_tensor(dtype::f32, {1, 5, 4, 4})}, {.half = true});
}

// ---- Sum / Mean / Mod --------------------------------------------------------------------------

TEST(CudaExtraOps, SumAndMeanVariadicBroadcasting) {
  TROUPE_REQUIRE_GPU();
  for (const char* op : {"Sum", "Mean"}) {
    SCOPED_TRACE(op);
    op_node n = make_node(op, 13);
    expect_parity(n, {random_tensor(dtype::f32, {3, 4})});  // one input
    expect_parity(n, {random_tensor(dtype::f32, {2, 3, 4}), random_tensor(dtype::f32, {4}),
                      random_tensor(dtype::f32, {3, 1}), random_tensor(dtype::f32, {})});
    expect_parity(n, {random_tensor(dtype::f32, {5, 1, 6}), random_tensor(dtype::f32, {1, 7, 6})},
                  {.half = true});
    std::vector<tensor> many;  // more inputs than one launch takes
    for (int i = 0; i < 11; ++i) many.push_back(random_tensor(dtype::f32, {i % 2 ? 1 : 4, 5}));
    expect_parity(n, many);
  }
  op_node sum = make_node("Sum", 13);
  expect_parity(sum, {random_tensor(dtype::i64, {3, 4}, -100, 100),
                      random_tensor(dtype::i64, {4}, -100, 100)});
  expect_parity(sum, {random_tensor(dtype::i32, {2, 1}, -100, 100),
                      random_tensor(dtype::i32, {2, 6}, -100, 100)});
}

TEST(CudaExtraOps, Mod) {
  TROUPE_REQUIRE_GPU();
  for (int64_t fmod : {0, 1}) {
    op_node n = make_node("Mod", 13);
    n.attrs.set("fmod", fmod);
    // Integers with zero and -1 divisors, broadcast.
    expect_parity(
        n, {random_tensor(dtype::i64, {4, 50}, -100, 100), random_tensor(dtype::i64, {50}, -6, 6)});
    expect_parity(n, {random_tensor(dtype::i32, {4, 50}, -100, 100),
                      random_tensor(dtype::i32, {4, 1}, -6, 6)});
    tensor b = random_tensor(dtype::f32, {6, 7}, 0.5, 3);
    for (int64_t i = 0; i < b.elements(); i += 2) b.data<float>()[i] *= -1;
    expect_parity(n, {random_tensor(dtype::f32, {6, 7}, -10, 10), b});
    expect_parity(n, {random_tensor(dtype::f32, {2, 6, 7}, -10, 10), b}, {.half = true});
  }
}

// ---- unaries -----------------------------------------------------------------------------------

TEST(CudaExtraOps, TrigFamily) {
  TROUPE_REQUIRE_GPU();
  struct unary_case {
    const char* op;
    double lo, hi;
  };
  const unary_case cases[] = {{"Acos", -1, 1},  {"Asin", -1, 1},  {"Atan", -5, 5},
                              {"Acosh", 1, 10}, {"Asinh", -5, 5}, {"Atanh", -0.99, 0.99},
                              {"Cosh", -4, 4},  {"Sinh", -4, 4},  {"Tan", -1.4, 1.4}};
  for (const auto& k : cases) {
    SCOPED_TRACE(k.op);
    op_node n = make_node(k.op, 13);
    expect_parity(n, {random_tensor(dtype::f32, {7, 33}, k.lo, k.hi)});
    expect_parity(n, {random_tensor(dtype::f32, {1000}, k.lo, k.hi)}, {.half = true});
  }
}

TEST(CudaExtraOps, IsInfIsNaN) {
  TROUPE_REQUIRE_GPU();
  tensor x = random_tensor(dtype::f32, {5, 20});
  for (int64_t i = 0; i < x.elements(); i += 3) {
    x.data<float>()[i] = i % 2 ? INFINITY : (i % 9 == 0 ? NAN : -INFINITY);
  }
  expect_parity(make_node("IsNaN", 13), {x});
  expect_parity(make_node("IsNaN", 13), {x}, {.half = true});
  for (int64_t pos : {0, 1}) {
    for (int64_t neg : {0, 1}) {
      op_node n = make_node("IsInf", 10);
      n.attrs.set("detect_positive", pos);
      n.attrs.set("detect_negative", neg);
      expect_parity(n, {x});
      expect_parity(n, {x}, {.half = true});
    }
  }
}

// ---- InstanceNormalization / LpNormalization / CumSum ------------------------------------------

TEST(CudaExtraOps, InstanceAndLpNormalization) {
  TROUPE_REQUIRE_GPU();
  op_node in = make_node("InstanceNormalization", 6);
  in.attrs.set("epsilon", 1e-3f);
  for (const shape_t& s : {shape_t{2, 3, 17, 19}, shape_t{1, 8, 5000}, shape_t{3, 4, 2, 3, 5}}) {
    SCOPED_TRACE(shape_to_string(s));
    const tensor x = random_tensor(dtype::f32, s, -2, 3);
    const tensor scale = random_tensor(dtype::f32, {s[1]}),
                 bias = random_tensor(dtype::f32, {s[1]});
    expect_parity(in, {x, scale, bias});
    expect_parity(in, {x, scale, bias}, {.half = true});
  }
  for (int64_t p : {1, 2}) {
    for (int64_t axis : {0, 1, -1}) {
      op_node n = make_node("LpNormalization", 1);
      n.attrs.set("p", p);
      n.attrs.set("axis", axis);
      expect_parity(n, {random_tensor(dtype::f32, {4, 6, 9})});
      expect_parity(n, {random_tensor(dtype::f32, {4, 6, 9})}, {.half = true});
    }
  }
}

TEST(CudaExtraOps, CumSum) {
  TROUPE_REQUIRE_GPU();
  for (int64_t axis : {0, 1, -1}) {
    for (int64_t exclusive : {0, 1}) {
      for (int64_t reverse : {0, 1}) {
        op_node n = make_node("CumSum", 14);
        n.attrs.set("exclusive", exclusive);
        n.attrs.set("reverse", reverse);
        const parity_options constant{.constant_inputs = {false, true}};
        expect_parity(n, {random_tensor(dtype::f32, {3, 40, 5}), scalar_i64(axis)}, constant);
        expect_parity(n, {random_tensor(dtype::i64, {3, 40, 5}, -50, 50), scalar_i64(axis)},
                      constant);
        expect_parity(n, {random_tensor(dtype::i32, {3, 40, 5}, -50, 50), scalar_i64(axis)},
                      constant);
        parity_options half = constant;
        half.half = true;
        expect_parity(n, {random_tensor(dtype::f32, {3, 40, 5}), scalar_i64(axis)}, half);
      }
    }
  }
}

// ---- index ops ---------------------------------------------------------------------------------

TEST(CudaExtraOps, GatherElements) {
  TROUPE_REQUIRE_GPU();
  for (int64_t axis : {0, 1, -1}) {
    op_node n = make_node("GatherElements", 13);
    n.attrs.set("axis", axis);
    const int64_t dim = std::vector<int64_t>{4, 5, 6}[static_cast<size_t>((axis + 3) % 3)];
    expect_parity(
        n, {random_tensor(dtype::f32, {4, 5, 6}), random_tensor(dtype::i64, {3, 4, 6}, -dim, dim)});
    expect_parity(n, {random_tensor(dtype::i64, {4, 5, 6}, -99, 99),
                      random_tensor(dtype::i32, {4, 2, 5}, -dim, dim)});
    expect_parity(
        n, {random_tensor(dtype::f32, {4, 5, 6}), random_tensor(dtype::i64, {2, 5, 6}, 0, dim)},
        {.half = true});
  }
}

TEST(CudaExtraOps, GatherND) {
  TROUPE_REQUIRE_GPU();
  op_node n = make_node("GatherND", 13);
  const tensor data = random_tensor(dtype::f32, {4, 5, 6});
  tensor idx = tensor::allocate(dtype::i64, {7, 2});
  for (int64_t t = 0; t < 7; ++t) {
    idx.data<int64_t>()[2 * t] = random_tensor(dtype::i64, {}, -4, 4).data<int64_t>()[0];
    idx.data<int64_t>()[2 * t + 1] = random_tensor(dtype::i64, {}, -5, 5).data<int64_t>()[0];
  }
  expect_parity(n, {data, idx});
  expect_parity(n, {data, idx}, {.half = true});
  expect_parity(n, {random_tensor(dtype::i64, {4, 5, 6}, -9, 9),
                    random_tensor(dtype::i64, {2, 3, 1}, -4, 4)});
  tensor full = tensor::allocate(dtype::i64, {3, 3});  // k = rank: single elements
  for (int64_t t = 0; t < 3; ++t) {
    full.data<int64_t>()[3 * t] = t;
    full.data<int64_t>()[3 * t + 1] = 4 - t;
    full.data<int64_t>()[3 * t + 2] = -1 - t;
  }
  expect_parity(n, {data, full});
  op_node batched = make_node("GatherND", 13);
  batched.attrs.set("batch_dims", int64_t{1});
  expect_parity(batched, {data, random_tensor(dtype::i64, {4, 3, 1}, -5, 5)});
  expect_parity(batched, {data, random_tensor(dtype::i64, {4, 2}, 0, 5)});
}

TEST(CudaExtraOps, ScatterElementsLastWinsAndReductions) {
  TROUPE_REQUIRE_GPU();
  for (int64_t axis : {0, 1, -1}) {
    const int64_t dim = std::vector<int64_t>{4, 5, 6}[static_cast<size_t>((axis + 3) % 3)];
    op_node n = make_node("ScatterElements", 13);
    n.attrs.set("axis", axis);
    // Many repeated targets: the last update in index order wins, as on the CPU.
    const tensor idx = random_tensor(dtype::i64, {4, 5, 6}, -dim, dim);
    expect_parity(
        n, {random_tensor(dtype::f32, {4, 5, 6}), idx, random_tensor(dtype::f32, {4, 5, 6})});
    expect_parity(n, {random_tensor(dtype::i64, {4, 5, 6}, -9, 9),
                      random_tensor(dtype::i32, {2, 3, 4}, -dim, dim),
                      random_tensor(dtype::i64, {2, 3, 4}, -9, 9)});
    expect_parity(n,
                  {random_tensor(dtype::f32, {4, 5, 6}), idx, random_tensor(dtype::f32, {4, 5, 6})},
                  {.half = true});
    for (const char* red : {"add", "mul", "max", "min"}) {
      SCOPED_TRACE(red);
      op_node r = make_node("ScatterElements", 18);
      r.attrs.set("axis", axis);
      r.attrs.set("reduction", std::string(red));
      expect_parity(
          r, {random_tensor(dtype::f32, {4, 5, 6}), idx, random_tensor(dtype::f32, {4, 5, 6})});
      expect_parity(r, {random_tensor(dtype::i64, {4, 5, 6}, -9, 9), idx,
                        random_tensor(dtype::i64, {4, 5, 6}, -3, 3)});
      expect_parity(r, {random_tensor(dtype::i32, {4, 5, 6}, -9, 9), idx,
                        random_tensor(dtype::i32, {4, 5, 6}, -3, 3)});
    }
  }
  op_node old = make_node("Scatter", 9);
  expect_parity(old, {random_tensor(dtype::f32, {3, 4}), random_tensor(dtype::i64, {2, 4}, 0, 3),
                      random_tensor(dtype::f32, {2, 4})});
}

TEST(CudaExtraOps, ScatterND) {
  TROUPE_REQUIRE_GPU();
  const tensor data = random_tensor(dtype::f32, {4, 5, 6});
  op_node n = make_node("ScatterND", 13);
  // Slices of rows (k = 2) with repeats, whole planes (k = 1), single elements (k = 3).
  const tensor rows = random_tensor(dtype::i64, {6, 2}, -4, 4);
  expect_parity(n, {data, rows, random_tensor(dtype::f32, {6, 6})});
  expect_parity(n, {data, rows, random_tensor(dtype::f32, {6, 6})}, {.half = true});
  expect_parity(
      n, {data, random_tensor(dtype::i64, {3, 1}, -4, 4), random_tensor(dtype::f32, {3, 5, 6})});
  expect_parity(
      n, {random_tensor(dtype::i64, {4, 5, 6}, -9, 9), random_tensor(dtype::i64, {2, 5, 3}, 0, 4),
          random_tensor(dtype::i64, {2, 5}, -9, 9)});
  for (const char* red : {"add", "mul", "max", "min"}) {
    SCOPED_TRACE(red);
    op_node r = make_node("ScatterND", 18);
    r.attrs.set("reduction", std::string(red));
    expect_parity(r, {data, rows, random_tensor(dtype::f32, {6, 6})});
    expect_parity(r, {random_tensor(dtype::i32, {4, 5, 6}, -9, 9), rows,
                      random_tensor(dtype::i32, {6, 6}, -3, 3)});
  }
}

TEST(CudaExtraOps, IndexOutOfRangeFailsTheRunWithATypedError) {
  TROUPE_REQUIRE_GPU();
  const tensor data = random_tensor(dtype::f32, {4, 5});
  struct bad_case {
    const char* op;
    std::vector<tensor> inputs;
  };
  const bad_case cases[] = {
      {"GatherElements", {data, tensor::from_vector<int64_t>({0, 1, 9, 2, 3}, {1, 5})}},
      {"GatherND", {data, tensor::from_vector<int64_t>({0, 1, 3, -6}, {2, 2})}},
      {"ScatterElements",
       {data, tensor::from_vector<int64_t>({0, 1, -5, 2, 3}, {1, 5}),
        random_tensor(dtype::f32, {1, 5})}},
      {"ScatterND",
       {data, tensor::from_vector<int64_t>({1, 4}, {2, 1}), random_tensor(dtype::f32, {2, 5})}},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.op);
    op_node n = make_node(k.op, 13);
    auto r = run_op_cuda(n, k.inputs);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument) << r.error().to_string();
    EXPECT_NE(r.error().message().find(k.op), std::string::npos) << r.error().to_string();
    // The fault is cleared: a good run on the same context succeeds.
    expect_parity(make_node("GatherElements", 13),
                  {data, tensor::from_vector<int64_t>({0, 1, 3, 2, 3}, {1, 5})});
  }
}

TEST(CudaExtraOps, OneHot) {
  TROUPE_REQUIRE_GPU();
  for (int64_t axis : {-1, 0, 1}) {
    op_node n = make_node("OneHot", 11);
    n.attrs.set("axis", axis);
    // Indices in and out of [-depth, depth): out-of-range ones give all-off rows.
    expect_parity(
        n, {random_tensor(dtype::i64, {3, 4}, -12, 12), scalar_i64(10), f32s({-1.5f, 2.5f})});
    expect_parity(n, {random_tensor(dtype::i32, {5}, -12, 12), scalar_i64(10),
                      tensor::from_vector<int64_t>({0, 7}, {2})});
    expect_parity(n,
                  {random_tensor(dtype::f32, {2, 3}, -11, 11), scalar_i64(10), f32s({0.f, 1.f})});
  }
}

// ---- fills and shapes --------------------------------------------------------------------------

TEST(CudaExtraOps, RangeConstantOfShapeShapeSize) {
  TROUPE_REQUIRE_GPU();
  op_node range = make_node("Range", 11);
  expect_parity(range,
                {tensor::from_vector<float>({0.5f}, {}), tensor::from_vector<float>({7.3f}, {}),
                 tensor::from_vector<float>({0.3f}, {})});
  expect_parity(range, {scalar_i64(10), scalar_i64(-7), scalar_i64(-3)});
  expect_parity(range,
                {tensor::from_vector<int32_t>({-4}, {}), tensor::from_vector<int32_t>({40}, {}),
                 tensor::from_vector<int32_t>({5}, {})});
  op_node cos = make_node("ConstantOfShape", 9);
  expect_parity(cos, {i64s({2, 3, 4})});
  op_node cos_i = make_node("ConstantOfShape", 9);
  cos_i.attrs.set("value", tensor::from_vector<int64_t>({-7}, {1}));
  expect_parity(cos_i, {i64s({5, 2})});
  op_node cos_f = make_node("ConstantOfShape", 9);
  cos_f.attrs.set("value", tensor::from_vector<float>({2.5f}, {1}));
  expect_parity(cos_f, {i64s({3, 1, 4})});
  const tensor x = random_tensor(dtype::f32, {2, 3, 4, 5});
  expect_parity(make_node("Shape", 13), {x});
  op_node sliced = make_node("Shape", 15);
  sliced.attrs.set("start", int64_t{1});
  sliced.attrs.set("end", int64_t{-1});
  expect_parity(sliced, {x});
  expect_parity(make_node("Size", 13), {x});
  expect_parity(make_node("Size", 13), {random_tensor(dtype::i64, {7, 0, 2})});
}

}  // namespace
}  // namespace troupe::testing
