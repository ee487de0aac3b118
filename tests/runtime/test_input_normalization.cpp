// Input normalisation in the graph (runtime/input_normalization.hpp): a model whose float input
// becomes a uint8 (int8, uint16...) input followed by Cast -> Sub(mean) -> Mul(1/std) gives the
// float model's outputs on the normalised floats; bad settings get invalid_argument naming the
// problem; the precision pass keeps the integer input and converts the chain.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "runtime/input_normalization.hpp"
#include "runtime/onnx_loader.hpp"
#include "runtime/plan.hpp"
#include "runtime/precision.hpp"
#include "runtime/session.hpp"
#include "runtime/specialize.hpp"
#include "tests/runtime/layout_test_util.hpp"
#include "tests/random_integers.hpp"

namespace troupe::runtime {
namespace {

using namespace troupe::testing;

const std::vector<float> kMean{123.675f, 116.28f, 103.53f};
const std::vector<float> kStd{58.395f, 57.12f, 57.375f};

input_normalization imagenet_u8(const std::string& input = "") {
  input_normalization n;
  n.input = input;
  n.client_type = dtype::u8;
  n.mean = kMean;
  n.stddev = kStd;
  return n;
}

/// x [batch, channels, 8, 8] -> Conv(3x3, pad 1, 4 out channels) + bias -> Relu -> Conv(1x1) -> y.
/// The padding makes the border pixels depend on normalisation happening before the convolution's
/// zero pad; two convolutions make a region the layout pass converts (two border transposes).
std::string conv_model(const std::string& channels = "3") {
  auto m = make_model(17);
  *m.mutable_graph()->add_input() = make_value_info("x", 1, {"batch", channels, "8", "8"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"batch", "4", "8", "8"});
  add_float_initializer(m, "W", {4, 3, 3, 3}, normal_values(4 * 3 * 3 * 3, 0.3f, 7));
  add_float_initializer(m, "B", {4}, {0.1f, -0.2f, 0.3f, 0.05f});
  auto* conv = add_node(m, "Conv", {"x", "W", "B"}, {"c"});
  set_ints(conv, "kernel_shape", {3, 3});
  set_ints(conv, "pads", {1, 1, 1, 1});
  add_node(m, "Relu", {"c"}, {"r"});
  add_float_initializer(m, "W2", {4, 4, 1, 1}, normal_values(4 * 4, 0.5f, 8));
  auto* conv2 = add_node(m, "Conv", {"r", "W2"}, {"y"});
  set_ints(conv2, "kernel_shape", {1, 1});
  return serialize(m);
}

/// Identity from `x` of `dims` (float) to `y`: outputs show the normalised values themselves.
std::string identity_model(const std::vector<std::string>& dims, int elem_type = 1) {
  auto m = make_model(17);
  *m.mutable_graph()->add_input() = make_value_info("x", elem_type, dims);
  *m.mutable_graph()->add_output() = make_value_info("y", elem_type, dims);
  add_node(m, "Identity", {"x"}, {"y"});
  return serialize(m);
}

expected<graph> load(const std::string& bytes) {
  return load_onnx_bytes(bytes.data(), bytes.size(), "");
}

expected<std::unique_ptr<session>> make_session(const std::string& bytes, session_options o = {}) {
  TROUPE_ASSIGN_OR_RETURN(graph g, load(bytes));
  return session::create_from_graph(std::move(g), std::move(o));
}

/// (x - mean[c]) / std[c] in double, rounded once to float; c = the index along `axis`.
tensor normalised_reference(const tensor& pixels, const std::vector<float>& mean,
                            const std::vector<float>& stddev, int64_t axis) {
  tensor out = tensor::allocate(dtype::f32, pixels.shape());
  int64_t inner = 1;
  for (int64_t d = axis + 1; d < static_cast<int64_t>(pixels.rank()); ++d) inner *= pixels.dim(d);
  const int64_t channels = pixels.dim(axis);
  for (int64_t i = 0; i < pixels.elements(); ++i) {
    const int64_t c = (i / inner) % channels;
    out.data<float>()[i] = static_cast<float>((pixels.value_as_double(i) - mean[c]) / stddev[c]);
  }
  return out;
}

TEST(input_normalization, conv_matches_the_float_model_on_normalised_floats) {
  const std::string bytes = conv_model();
  auto plain = make_session(bytes);
  ASSERT_TRUE(plain) << plain.error().to_string();
  session_options o;
  o.input_normalizations = {imagenet_u8()};
  auto normalised = make_session(bytes, o);
  ASSERT_TRUE(normalised) << normalised.error().to_string();
  ASSERT_EQ((*normalised)->inputs().size(), 1u);
  EXPECT_EQ((*normalised)->inputs()[0].name, "x");
  EXPECT_EQ((*normalised)->inputs()[0].type, dtype::u8);
  EXPECT_EQ((*normalised)->outputs()[0].type, dtype::f32);
  for (int64_t batch : {1, 3}) {
    const tensor pixels = random_integers(dtype::u8, {batch, 3, 8, 8}, 0, 255, 11 + batch);
    auto want = (*plain)->run(std::vector<tensor>{normalised_reference(pixels, kMean, kStd, 1)});
    ASSERT_TRUE(want) << want.error().to_string();
    auto got = (*normalised)->run(std::vector<tensor>{pixels});
    ASSERT_TRUE(got) << got.error().to_string();
    ASSERT_EQ((*got)[0].shape(), (shape_t{batch, 4, 8, 8}));
    const double err = rel_l2((*got)[0], (*want)[0]);
    EXPECT_LE(err, 1e-6) << "batch " << batch;
  }
  // A second instance shares the rewritten graph: same signature, same results.
  auto sibling = (*normalised)->create_instance();
  ASSERT_TRUE(sibling) << sibling.error().to_string();
  EXPECT_EQ((*sibling)->inputs()[0].type, dtype::u8);
  const tensor pixels = random_integers(dtype::u8, {2, 3, 8, 8}, 0, 255, 5);
  auto a = (*normalised)->run(std::vector<tensor>{pixels});
  auto b = (*sibling)->run(std::vector<tensor>{pixels});
  ASSERT_TRUE(a && b);
  EXPECT_EQ(rel_l2((*a)[0], (*b)[0]), 0.0);
}

TEST(input_normalization, float_requests_and_wrong_channel_counts_are_refused) {
  session_options o;
  o.input_normalizations = {imagenet_u8("x")};
  auto s = make_session(conv_model("C"), o);  // a symbolic channel dim becomes 3
  ASSERT_TRUE(s) << s.error().to_string();
  const auto& shape = (*s)->inputs()[0].shape;
  ASSERT_EQ(shape.size(), 4u);
  EXPECT_FALSE(shape[0].is_static());
  EXPECT_EQ(shape[1].size, 3);
  auto as_float = (*s)->run(std::vector<tensor>{tensor::zeros(dtype::f32, {1, 3, 8, 8})});
  ASSERT_FALSE(as_float);
  EXPECT_EQ(as_float.error().code(), error_code::invalid_argument);
  EXPECT_NE(as_float.error().message().find("uint8"), std::string::npos)
      << as_float.error().message();
  auto one_channel = (*s)->run(std::vector<tensor>{tensor::zeros(dtype::u8, {1, 1, 8, 8})});
  ASSERT_FALSE(one_channel);
  EXPECT_EQ(one_channel.error().code(), error_code::invalid_argument);
}

TEST(input_normalization, channels_last_axis_and_other_client_types) {
  // NHWC input, channel axis -1 (= 3), int8 and uint16 pixels: the exact normalised values.
  struct client_case {
    dtype type;
    int lo, hi;
    std::vector<float> mean, stddev;
  };
  for (const auto& c : std::vector<client_case>{
           {dtype::u8, 0, 255, kMean, kStd},
           {dtype::i8, -128, 127, {-1.5f, 0.0f, 3.0f}, {64.0f, -32.0f, 10.0f}},
           {dtype::u16, 0, 65535, {32768.0f, 1000.0f, 0.0f}, {16384.0f, 500.0f, 65535.0f}},
       }) {
    SCOPED_TRACE(std::string(dtype_name(c.type)));
    session_options o;
    input_normalization n;
    n.client_type = c.type;
    n.mean = c.mean;
    n.stddev = c.stddev;
    n.channel_axis = -1;
    o.input_normalizations = {n};
    auto s = make_session(identity_model({"N", "5", "4", "3"}), o);
    ASSERT_TRUE(s) << s.error().to_string();
    EXPECT_EQ((*s)->inputs()[0].type, c.type);
    const tensor pixels = random_integers(c.type, {2, 5, 4, 3}, c.lo, c.hi, 3);
    auto out = (*s)->run(std::vector<tensor>{pixels});
    ASSERT_TRUE(out) << out.error().to_string();
    const tensor want = normalised_reference(pixels, c.mean, c.stddev, 3);
    ASSERT_EQ((*out)[0].shape(), want.shape());
    for (int64_t i = 0; i < want.elements(); ++i) {
      const float w = want.data<float>()[i];
      ASSERT_NEAR((*out)[0].data<float>()[i], w, 1e-6 * std::max(1.0f, std::fabs(w)))
          << "element " << i;
    }
  }
}

TEST(input_normalization, batch_buckets_and_warm_up_use_the_client_type) {
  session_options o;
  o.input_normalizations = {imagenet_u8()};
  o.batch_buckets = {2, 4};
  auto s = make_session(conv_model(), o);
  ASSERT_TRUE(s) << s.error().to_string();
  ASSERT_TRUE((*s)->warm_up().is_ok());
  // Runs padded to 4 rows.
  const tensor pixels = random_integers(dtype::u8, {3, 3, 8, 8}, 0, 255, 9);
  auto got = (*s)->run(std::vector<tensor>{pixels});
  ASSERT_TRUE(got) << got.error().to_string();
  auto plain = make_session(conv_model());
  ASSERT_TRUE(plain);
  auto want = (*plain)->run(std::vector<tensor>{normalised_reference(pixels, kMean, kStd, 1)});
  ASSERT_TRUE(want);
  EXPECT_LE(rel_l2((*got)[0], (*want)[0]), 1e-6);
}

// The CUDA backend plans channels-last layouts by default; the CPU does it when asked. Sub and Mul
// join the convolution's region (their [C,1,1] constants re-laid out), so the one border
// transpose sits before them, on the Cast's output.
TEST(input_normalization, the_chain_joins_a_channels_last_region) {
  ::setenv("TROUPE_CHANNELS_LAST", "1", 1);
  session_options o;
  o.input_normalizations = {imagenet_u8()};
  auto s = make_session(conv_model(), o);
  ASSERT_TRUE(s) << s.error().to_string();
  const tensor pixels = random_integers(dtype::u8, {2, 3, 8, 8}, 0, 255, 17);
  auto p = (*s)->prepare({pixels.info()});
  auto got = (*s)->run(std::vector<tensor>{pixels});
  ::unsetenv("TROUPE_CHANNELS_LAST");
  ASSERT_TRUE(p) << p.error().to_string();
  ASSERT_TRUE(got) << got.error().to_string();
  int transposes = 0, channels_last = 0;
  std::string first_transposed;
  for (const node& n : (*p)->specialized_graph().nodes) {
    channels_last += n.op.attrs.get_int("channels_last", 0) != 0;
    if (n.op.domain.empty() && n.op.op_type == "Transpose") {
      if (transposes++ == 0) first_transposed = (*p)->specialized_graph().values[n.inputs[0]].name;
    }
  }
  EXPECT_GT(channels_last, 0);
  EXPECT_EQ(first_transposed, "x.normalize.cast");
  EXPECT_EQ(transposes, 2) << "one in, one out";
  auto plain = make_session(conv_model());
  ASSERT_TRUE(plain);
  auto want = (*plain)->run(std::vector<tensor>{normalised_reference(pixels, kMean, kStd, 1)});
  ASSERT_TRUE(want);
  EXPECT_LE(rel_l2((*got)[0], (*want)[0]), 1e-6);
}

TEST(input_normalization, the_precision_pass_keeps_the_integer_input) {
  auto g = load(conv_model());
  ASSERT_TRUE(g) << g.error().to_string();
  ASSERT_TRUE(apply_input_normalization(*g, imagenet_u8()).is_ok());
  ASSERT_TRUE(convert_float_precision(*g, dtype::f16).has_value());
  ASSERT_EQ(g->inputs.size(), 1u);
  const value& x = g->values[g->inputs[0]];
  EXPECT_EQ(x.type, dtype::u8);
  // Exactly one node reads the input: our Cast, now to float16 (no boundary Cast was added).
  int readers = 0;
  for (const node& n : g->nodes) {
    for (int in : n.inputs) {
      if (in != g->inputs[0]) continue;
      ++readers;
      EXPECT_EQ(n.op.op_type, "Cast");
      EXPECT_EQ(n.op.attrs.get_int("to", 0), dtype_to_onnx(dtype::f16));
    }
  }
  EXPECT_EQ(readers, 1);
  // mean and 1/std were converted with the weights; the chain specialises to float16.
  ASSERT_TRUE(specialize(*g, {tensor_info{dtype::u8, {2, 3, 8, 8}}}).is_ok());
  int sub_mul = 0;
  for (const node& n : g->nodes) {
    if (n.op.op_type != "Sub" && n.op.op_type != "Mul") continue;
    ++sub_mul;
    EXPECT_EQ(g->values[n.inputs[0]].type, dtype::f16) << n.op.op_type;
    EXPECT_EQ(g->values[n.inputs[1]].type, dtype::f16) << n.op.op_type;
    EXPECT_EQ(g->values[n.inputs[1]].shape, (shape_t{3, 1, 1})) << n.op.op_type;
  }
  EXPECT_EQ(sub_mul, 2);
}

TEST(input_normalization, two_inputs_each_named) {
  auto m = make_model(17);
  *m.mutable_graph()->add_input() = make_value_info("a", 1, {"N", "3", "2"});
  *m.mutable_graph()->add_input() = make_value_info("b", 1, {"N", "3", "2"});
  *m.mutable_graph()->add_output() = make_value_info("y", 1, {"N", "3", "2"});
  add_node(m, "Add", {"a", "b"}, {"y"});
  const std::string bytes = serialize(m);
  session_options unnamed;
  unnamed.input_normalizations = {imagenet_u8()};
  auto s = make_session(bytes, unnamed);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), error_code::invalid_argument);
  EXPECT_NE(s.error().message().find("name one"), std::string::npos) << s.error().message();

  session_options both;
  input_normalization b = imagenet_u8("b");
  b.mean = {0.0f, 10.0f, 20.0f};
  b.stddev = {1.0f, 2.0f, 4.0f};
  both.input_normalizations = {imagenet_u8("a"), b};
  s = make_session(bytes, both);
  ASSERT_TRUE(s) << s.error().to_string();
  EXPECT_EQ((*s)->inputs()[0].type, dtype::u8);
  EXPECT_EQ((*s)->inputs()[1].type, dtype::u8);
  const tensor pa = random_integers(dtype::u8, {2, 3, 2}, 0, 255, 1),
               pb = random_integers(dtype::u8, {2, 3, 2}, 0, 255, 2);
  auto out = (*s)->run(std::map<std::string, tensor>{{"a", pa}, {"b", pb}});
  ASSERT_TRUE(out) << out.error().to_string();
  const tensor ra = normalised_reference(pa, kMean, kStd, 1),
               rb = normalised_reference(pb, b.mean, b.stddev, 1);
  for (int64_t i = 0; i < ra.elements(); ++i) {
    EXPECT_NEAR((*out)[0].data<float>()[i], ra.data<float>()[i] + rb.data<float>()[i], 1e-5) << i;
  }

  session_options twice;
  twice.input_normalizations = {imagenet_u8("a"), imagenet_u8("a")};
  s = make_session(bytes, twice);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("twice"), std::string::npos) << s.error().message();
}

TEST(input_normalization, bad_settings_get_typed_errors) {
  struct bad_case {
    std::string model;
    input_normalization n;
    const char* fragment;
  };
  auto with = [](auto change) {
    input_normalization n = imagenet_u8();
    change(n);
    return n;
  };
  auto int_input = identity_model({"N", "3", "4", "4"}, 7);  // int64
  auto passthrough = [] {                                    // x is an input and an output
    auto m = make_model(17);
    *m.mutable_graph()->add_input() = make_value_info("x", 1, {"N", "3"});
    *m.mutable_graph()->add_output() = make_value_info("x", 1, {"N", "3"});
    *m.mutable_graph()->add_output() = make_value_info("y", 1, {"N", "3"});
    add_node(m, "Relu", {"x"}, {"y"});
    return serialize(m);
  }();
  const std::string conv = conv_model();
  for (const auto& c : std::vector<bad_case>{
           {conv, with([](auto& n) { n.input = "image"; }), "no input 'image'"},
           {int_input, imagenet_u8(), "not a float type"},
           {conv, with([](auto& n) { n.channel_axis = 4; }), "channel_axis 4"},
           {conv, with([](auto& n) { n.channel_axis = -5; }), "channel_axis -5"},
           {conv, with([](auto& n) { n.channel_axis = 2; }), "8 channels"},
           {conv, with([](auto& n) {
              n.mean = {1, 2};
              n.stddev = {1, 2};
            }),
            "3 channels"},
           {conv, with([](auto& n) {
              n.stddev = {1, 2};
            }),
            "std 2"},
           {conv, with([](auto& n) {
              n.mean.clear();
              n.stddev.clear();
            }),
            "mean is empty"},
           {conv, with([](auto& n) { n.stddev[1] = 0.0f; }), "std[1]"},
           {conv, with([](auto& n) { n.stddev[2] = NAN; }), "std[2]"},
           {conv, with([](auto& n) { n.mean[0] = INFINITY; }), "mean[0]"},
           {conv, with([](auto& n) { n.client_type = dtype::f32; }), "float32"},
           {conv, with([](auto& n) { n.client_type = dtype::i64; }), "int64"},
           {passthrough, imagenet_u8("x"), "graph output"},
       }) {
    session_options o;
    o.input_normalizations = {c.n};
    auto s = make_session(c.model, o);
    ASSERT_FALSE(s) << c.fragment;
    EXPECT_EQ(s.error().code(), error_code::invalid_argument) << c.fragment;
    EXPECT_NE(s.error().message().find(c.fragment), std::string::npos)
        << c.fragment << " -> " << s.error().message();
  }
  // The loader refuses shapeless inputs; a graph built another way may still have one.
  auto g = load(conv);
  ASSERT_TRUE(g);
  g->values[g->inputs[0]].declared_shape.reset();
  const status no_shape = apply_input_normalization(*g, imagenet_u8());
  EXPECT_EQ(no_shape.code(), error_code::invalid_argument);
  EXPECT_NE(no_shape.message().find("declares no shape"), std::string::npos) << no_shape.message();
}

TEST(input_normalization, command_line_form) {
  auto n =
      parse_input_normalization("dtype=uint8 mean=123.675,116.28,103.53  std=58.395,57.12,57.375");
  ASSERT_TRUE(n) << n.error().to_string();
  EXPECT_EQ(n->client_type, dtype::u8);
  EXPECT_EQ(n->mean, kMean);
  EXPECT_EQ(n->stddev, kStd);
  EXPECT_EQ(n->input, "");
  EXPECT_EQ(n->channel_axis, 1);
  auto full = parse_input_normalization("input=pixels channel_axis=-1 dtype=int16 mean=0 std=2.5");
  ASSERT_TRUE(full) << full.error().to_string();
  EXPECT_EQ(full->input, "pixels");
  EXPECT_EQ(full->channel_axis, -1);
  EXPECT_EQ(full->client_type, dtype::i16);
  EXPECT_EQ(full->stddev, (std::vector<float>{2.5f}));
  for (const char* bad :
       {"", "dtype=uint8 mean=1", "dtype=uint8 mean=1 std=0", "dtype=float32 mean=1 std=1",
        "dtype=uint8 mean=1,x std=1,1", "dtype=uint8 mean=1,,2 std=1,1,1",
        "dtype=uint8 mean=1 std=1 colour=rgb", "dtype=uint8 mean=1 std=1 mean=2",
        "dtype=uint8 mean=1 std=1 channel_axis=one", "dtype uint8", "=uint8"}) {
    auto r = parse_input_normalization(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), error_code::invalid_argument) << bad;
  }
}

}  // namespace
}  // namespace troupe::runtime
