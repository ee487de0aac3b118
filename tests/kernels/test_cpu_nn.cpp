// CPU kernels for Conv, ConvTranspose, MatMul, Gemm, pooling, normalisation and troupe's fused ops,
// against direct double-precision references written here, on fresh random inputs. Each case runs
// with constant and runtime weights (pre-packed vs per-run paths) and, for convolutions, with both
// activation layouts at the kernel boundary.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/kernel.hpp"
#include "kernels/op_schema.hpp"
#include "tests/kernels/kernel_test_util.hpp"

// Case tables below leave trailing fields (auto_pad, ceil_mode...) at their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace troupe {
namespace {

// The cases run on one OpenMP thread: with ctest running test binaries side by side on a small
// machine, oversubscribed OpenMP barriers turn this file's ~0.2 s into tens of seconds. The
// threaded paths have their own test (CpuThreads) at the configured thread count.
class one_thread_environment : public ::testing::Environment {
 public:
  void SetUp() override {
    configured_threads = omp_get_max_threads();
    omp_set_num_threads(1);
  }
  static inline int configured_threads = 1;
};
const auto* const one_thread_env = ::testing::AddGlobalTestEnvironment(new one_thread_environment);

using testing::make_node;
using testing::random_tensor;
using testing::relative_l2;
using ints = std::vector<int64_t>;

constexpr double tolerance = 2e-5;

// ---- running one node ---------------------------------------------------------------------------

struct run_options {
  std::vector<bool> constant;  // inputs visible to the kernel factory as values
  int alias_output_to = -1;    // run with output 0 stored over this input's bytes
  size_t num_outputs = 1;
};

// Like testing::run_op, plus the option of placing output 0 over an input (the planner's in-place
// reuse), which must be one of the kernel's declared inplace pairs.
expected<std::vector<tensor>> run(const op_node& node, const std::vector<tensor>& inputs,
                                  const run_options& o = {}) {
  std::vector<tensor_info> infos;
  std::vector<const tensor*> all_values;
  for (const auto& t : inputs) {
    infos.push_back(t.info());
    all_values.push_back(t.defined() ? &t : nullptr);
  }
  const auto* schema = kernels::schema_registry::standard().find(node.domain, node.op_type);
  if (!schema) return unsupported("no schema for " + node.describe());
  kernels::infer_context ic{node, infos, all_values, o.num_outputs};
  TROUPE_ASSIGN_OR_RETURN(auto out_infos, schema->infer(ic));
  std::vector<const tensor*> values(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i < o.constant.size() && o.constant[i] && inputs[i].defined()) values[i] = &inputs[i];
  }
  kernels::kernel_create_context cc{node, infos, values, out_infos, nullptr};
  TROUPE_ASSIGN_OR_RETURN(auto k,
                          kernels::kernel_registry::standard().create(kernels::backend::cpu, cc));
  std::vector<tensor> outputs;
  for (const auto& oi : out_infos) outputs.push_back(tensor::allocate(oi.type, oi.shape));
  if (o.alias_output_to >= 0) {
    bool declared = false;
    for (auto [out, in] : k->inplace_pairs()) declared |= out == 0 && in == o.alias_output_to;
    if (!declared) return internal_error("kernel does not declare the in-place pair under test");
    outputs[0] = inputs[static_cast<size_t>(o.alias_output_to)];
  }
  // A constant input the kernel says it no longer reads (packed at create time) is NaN at run time:
  // reading it anyway would show in the result.
  std::vector<tensor> run_inputs = inputs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (values[i] && !k->reads_constant_input(static_cast<int>(i)) &&
        inputs[i].type() == dtype::f32) {
      run_inputs[i] = tensor::allocate(dtype::f32, inputs[i].shape());
      std::memset(run_inputs[i].raw(), 0xff, run_inputs[i].bytes());
    }
  }
  // Two runs, the way a plan reuses its arena: the workspace is deliberately misaligned (kernels
  // align it themselves) and holds NaN garbage (other kernels' leftovers) before each run, and
  // output 0 is poisoned too. Only the second run's outputs are returned.
  std::vector<uint8_t> workspace(k->workspace_bytes() + 64, 0xff);
  kernels::kernel_run_context rc{run_inputs, outputs, workspace.data() + 1, nullptr};
  const tensor saved = o.alias_output_to >= 0 ? outputs[0].clone() : tensor();
  for (int pass = 0; pass < 2; ++pass) {
    std::fill(workspace.begin(), workspace.end(), 0xff);
    if (o.alias_output_to >= 0) {
      std::memcpy(outputs[0].raw(), saved.raw(), saved.bytes());  // the input Y overwrites
    } else {
      std::memset(outputs[0].raw(), 0xff, outputs[0].bytes());
    }
    TROUPE_RETURN_IF_ERROR(k->compute(rc));
  }
  return outputs;
}

std::vector<bool> const_mask(size_t n, std::initializer_list<size_t> constant) {
  std::vector<bool> m(n, false);
  for (size_t i : constant) m[i] = true;
  return m;
}

// Sets TROUPE_DNNL_CONV_LAYOUT for the scope of a test case.
struct layout_scope {
  explicit layout_scope(const char* v) { setenv("TROUPE_DNNL_CONV_LAYOUT", v, 1); }
  ~layout_scope() { unsetenv("TROUPE_DNNL_CONV_LAYOUT"); }
};

// ---- references (double precision) -------------------------------------------------------------

double act_ref(const std::string& name, const std::vector<float>& p, double x) {
  if (name.empty()) return x;
  if (name == "Relu") return x > 0 ? x : 0;
  if (name == "Clip")
    return std::min(std::max(x, static_cast<double>(p[0])), static_cast<double>(p[1]));
  if (name == "LeakyRelu") return x >= 0 ? x : p[0] * x;
  if (name == "Sigmoid") return 1.0 / (1.0 + std::exp(-x));
  if (name == "HardSigmoid") return std::max(0.0, std::min(1.0, p[0] * x + p[1]));
  if (name == "HardSwish") return x * std::max(0.0, std::min(1.0, x / 6.0 + 0.5));
  if (name == "Tanh") return std::tanh(x);
  if (name == "Gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  ADD_FAILURE() << "unknown activation " << name;
  return x;
}

// Spatial vectors padded to three axes with `fill` in front.
ints to3(const ints& v, int64_t fill) {
  ints r(3 - v.size(), fill);
  r.insert(r.end(), v.begin(), v.end());
  return r;
}

struct conv_params {
  ints strides, dilations, pads_begin, pads_end;
  int64_t group = 1;
};

int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe) {
  return (in + pb + pe - ((k - 1) * d + 1)) / s + 1;
}

// Direct convolution: y[n,m,o] = b[m] + sum_{c in m's group, taps} x[n,c,o*s-pb+t*d] * w[m,c',t].
tensor ref_conv(const tensor& x, const tensor& w, const tensor* b, const conv_params& p,
                const tensor* z = nullptr, const std::string& act = "",
                const std::vector<float>& ap = {}) {
  const size_t n_sp = x.rank() - 2;
  const ints in = to3(ints(x.shape().begin() + 2, x.shape().end()), 1);
  const ints k = to3(ints(w.shape().begin() + 2, w.shape().end()), 1);
  const ints s = to3(p.strides, 1), d = to3(p.dilations, 1), pb = to3(p.pads_begin, 0),
             pe = to3(p.pads_end, 0);
  const int64_t N = x.dim(0), C = x.dim(1), M = w.dim(0), G = p.group, Cg = C / G, Mg = M / G;
  ints out(3);
  for (int a = 0; a < 3; ++a) out[a] = conv_out(in[a], k[a], s[a], d[a], pb[a], pe[a]);
  shape_t ys{N, M};
  for (size_t a = 3 - n_sp; a < 3; ++a) ys.push_back(out[a]);
  tensor y = tensor::allocate(dtype::f32, ys);
  const float* xd = x.data<float>();
  const float* wd = w.data<float>();
  float* yd = y.data<float>();
  int64_t yi = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t o0 = 0; o0 < out[0]; ++o0)
        for (int64_t o1 = 0; o1 < out[1]; ++o1)
          for (int64_t o2 = 0; o2 < out[2]; ++o2, ++yi) {
            double acc = b ? b->data<float>()[m] : 0.0;
            const int64_t gi = m / Mg;
            for (int64_t cc = 0; cc < Cg; ++cc) {
              const int64_t c = gi * Cg + cc;
              for (int64_t t0 = 0; t0 < k[0]; ++t0) {
                const int64_t i0 = o0 * s[0] - pb[0] + t0 * d[0];
                if (i0 < 0 || i0 >= in[0]) continue;
                for (int64_t t1 = 0; t1 < k[1]; ++t1) {
                  const int64_t i1 = o1 * s[1] - pb[1] + t1 * d[1];
                  if (i1 < 0 || i1 >= in[1]) continue;
                  for (int64_t t2 = 0; t2 < k[2]; ++t2) {
                    const int64_t i2 = o2 * s[2] - pb[2] + t2 * d[2];
                    if (i2 < 0 || i2 >= in[2]) continue;
                    const double xv = xd[(((n * C + c) * in[0] + i0) * in[1] + i1) * in[2] + i2];
                    const double wv = wd[(((m * Cg + cc) * k[0] + t0) * k[1] + t1) * k[2] + t2];
                    acc += xv * wv;
                  }
                }
              }
            }
            if (z) acc += z->data<float>()[yi];
            yd[yi] = static_cast<float>(act_ref(act, ap, acc));
          }
  return y;
}

// Transposed convolution as a scatter: x[n,c,i] * w[c,m',t] lands on y[n,m,i*s+t*d-pb].
tensor ref_conv_transpose(const tensor& x, const tensor& w, const tensor* b, const ints& strides,
                          const ints& dilations, const ints& pads_begin, const ints& out_spatial,
                          int64_t group) {
  const size_t n_sp = x.rank() - 2;
  const ints in = to3(ints(x.shape().begin() + 2, x.shape().end()), 1);
  const ints k = to3(ints(w.shape().begin() + 2, w.shape().end()), 1);
  const ints s = to3(strides, 1), d = to3(dilations, 1), pb = to3(pads_begin, 0),
             out = to3(out_spatial, 1);
  const int64_t N = x.dim(0), C = x.dim(1), Mg = w.dim(1), M = Mg * group, Cg = C / group;
  shape_t ys{N, M};
  for (size_t a = 3 - n_sp; a < 3; ++a) ys.push_back(out[a]);
  std::vector<double> acc(static_cast<size_t>(element_count(ys)), 0.0);
  const float* xd = x.data<float>();
  const float* wd = w.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t gi = c / Cg;
      for (int64_t i0 = 0; i0 < in[0]; ++i0)
        for (int64_t i1 = 0; i1 < in[1]; ++i1)
          for (int64_t i2 = 0; i2 < in[2]; ++i2) {
            const double xv = xd[(((n * C + c) * in[0] + i0) * in[1] + i1) * in[2] + i2];
            for (int64_t mm = 0; mm < Mg; ++mm) {
              const int64_t m = gi * Mg + mm;
              for (int64_t t0 = 0; t0 < k[0]; ++t0) {
                const int64_t o0 = i0 * s[0] + t0 * d[0] - pb[0];
                if (o0 < 0 || o0 >= out[0]) continue;
                for (int64_t t1 = 0; t1 < k[1]; ++t1) {
                  const int64_t o1 = i1 * s[1] + t1 * d[1] - pb[1];
                  if (o1 < 0 || o1 >= out[1]) continue;
                  for (int64_t t2 = 0; t2 < k[2]; ++t2) {
                    const int64_t o2 = i2 * s[2] + t2 * d[2] - pb[2];
                    if (o2 < 0 || o2 >= out[2]) continue;
                    const double wv = wd[(((c * Mg + mm) * k[0] + t0) * k[1] + t1) * k[2] + t2];
                    acc[static_cast<size_t>((((n * M + m) * out[0] + o0) * out[1] + o1) * out[2] +
                                            o2)] += xv * wv;
                  }
                }
              }
            }
          }
    }
  tensor y = tensor::allocate(dtype::f32, ys);
  const int64_t plane = out[0] * out[1] * out[2];
  for (int64_t i = 0; i < y.elements(); ++i) {
    const int64_t m = (i / plane) % M;
    y.data<float>()[i] =
        static_cast<float>(acc[static_cast<size_t>(i)] + (b ? b->data<float>()[m] : 0.0));
  }
  return y;
}

// numpy matmul with broadcasting and 1-D promotion.
tensor ref_matmul(const tensor& a, const tensor& b) {
  shape_t as = a.shape(), bs = b.shape();
  const bool av = as.size() == 1, bv = bs.size() == 1;
  if (av) as.insert(as.begin(), 1);
  if (bv) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const size_t r = std::max(as.size(), bs.size()) - 2;
  ints ab(r - (as.size() - 2), 1), bb(r - (bs.size() - 2), 1);
  ab.insert(ab.end(), as.begin(), as.end() - 2);
  bb.insert(bb.end(), bs.begin(), bs.end() - 2);
  ints batch(r);
  for (size_t i = 0; i < r; ++i) batch[i] = std::max(ab[i], bb[i]);
  shape_t ys = batch;
  if (!av) ys.push_back(M);
  if (!bv) ys.push_back(N);
  tensor y = tensor::allocate(dtype::f32, ys);
  const int64_t nb = element_count(batch);
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t rem = bi, aoff = 0, boff = 0, astride = 1, bstride = 1;
    for (size_t i = r; i-- > 0;) {
      const int64_t idx = rem % batch[i];
      rem /= batch[i];
      aoff += (ab[i] == 1 ? 0 : idx) * astride;
      boff += (bb[i] == 1 ? 0 : idx) * bstride;
      astride *= ab[i];
      bstride *= bb[i];
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) {
          acc += static_cast<double>(a.data<float>()[(aoff * M + m) * K + k]) *
                 b.data<float>()[(boff * K + k) * N + n];
        }
        y.data<float>()[(bi * M + m) * N + n] = static_cast<float>(acc);
      }
  }
  return y;
}

enum class pool_ref_kind { max, avg_exclude, avg_include };

struct pool_params {
  ints kernel, strides, dilations, pads_begin, pads_end;
  bool ceil_mode = false;
};

// Output size per ONNX (and the ONNX reference / ORT): ceil mode drops a window starting in the
// end padding.
int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe,
                 bool ceil_mode) {
  const int64_t span = in + pb + pe - ((k - 1) * d + 1);
  if (!ceil_mode) return span / s + 1;
  int64_t o = (span + s - 1) / s + 1;
  if ((o - 1) * s >= in + pb) --o;
  return o;
}

// Returns Y (and the argmax indices for max, row-major over each (n, c) offset).
std::pair<tensor, std::vector<int64_t>> ref_pool(const tensor& x, const pool_params& p,
                                                 pool_ref_kind kind, bool column_major = false) {
  const size_t n_sp = x.rank() - 2;
  const ints in = to3(ints(x.shape().begin() + 2, x.shape().end()), 1);
  const ints k = to3(p.kernel, 1), s = to3(p.strides, 1), d = to3(p.dilations, 1),
             pb = to3(p.pads_begin, 0), pe = to3(p.pads_end, 0);
  ints out(3);
  for (int a = 0; a < 3; ++a) out[a] = pool_out(in[a], k[a], s[a], d[a], pb[a], pe[a], p.ceil_mode);
  shape_t ys{x.dim(0), x.dim(1)};
  for (size_t a = 3 - n_sp; a < 3; ++a) ys.push_back(out[a]);
  tensor y = tensor::allocate(dtype::f32, ys);
  std::vector<int64_t> idx(static_cast<size_t>(y.elements()));
  const int64_t planes = x.dim(0) * x.dim(1), in_plane = in[0] * in[1] * in[2];
  int64_t yi = 0;
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t o0 = 0; o0 < out[0]; ++o0)
      for (int64_t o1 = 0; o1 < out[1]; ++o1)
        for (int64_t o2 = 0; o2 < out[2]; ++o2, ++yi) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          int64_t best_at = -1, valid = 0, declared = 0;
          for (int64_t t0 = 0; t0 < k[0]; ++t0)
            for (int64_t t1 = 0; t1 < k[1]; ++t1)
              for (int64_t t2 = 0; t2 < k[2]; ++t2) {
                const int64_t i0 = o0 * s[0] - pb[0] + t0 * d[0];
                const int64_t i1 = o1 * s[1] - pb[1] + t1 * d[1];
                const int64_t i2 = o2 * s[2] - pb[2] + t2 * d[2];
                const bool in_declared =
                    i0 < in[0] + pe[0] && i1 < in[1] + pe[1] && i2 < in[2] + pe[2];
                declared += in_declared;
                if (i0 < 0 || i0 >= in[0] || i1 < 0 || i1 >= in[1] || i2 < 0 || i2 >= in[2])
                  continue;
                const double v = x.data<float>()[pl * in_plane + (i0 * in[1] + i1) * in[2] + i2];
                ++valid;
                sum += v;
                if (v > best) {
                  best = v;
                  best_at = column_major ? (i2 * in[1] + i1) * in[0] + i0
                                         : (i0 * in[1] + i1) * in[2] + i2;
                }
              }
          double r = 0;
          if (kind == pool_ref_kind::max) r = best;
          if (kind == pool_ref_kind::avg_exclude) r = sum / valid;
          if (kind == pool_ref_kind::avg_include) r = sum / declared;
          y.data<float>()[yi] = static_cast<float>(r);
          idx[static_cast<size_t>(yi)] = pl * in_plane + best_at;
        }
  return {y, idx};
}

void set_ints(op_node& n, const char* name, const ints& v) {
  if (!v.empty()) n.attrs.set(name, v);
}

#define EXPECT_CLOSE(actual, expected)                                                     \
  do {                                                                                     \
    const double err_ = relative_l2((actual), (expected));                                 \
    EXPECT_LT(err_, tolerance) << "shapes " << shape_to_string((actual).shape()) << " vs " \
                               << shape_to_string((expected).shape());                     \
  } while (0)

// ---- Conv ---------------------------------------------------------------------------------------

struct conv_case {
  shape_t x, w;
  conv_params p;
  bool bias = true;
  std::string auto_pad;  // when set, pads in p are the expected resolved ones and are not passed
};

op_node conv_node(const conv_case& c, const char* op = "Conv", const char* domain = "") {
  op_node n = make_node(op, 17, domain);
  set_ints(n, "strides", c.p.strides);
  set_ints(n, "dilations", c.p.dilations);
  if (c.auto_pad.empty()) {
    ints pads = c.p.pads_begin;
    pads.insert(pads.end(), c.p.pads_end.begin(), c.p.pads_end.end());
    set_ints(n, "pads", pads);
  } else {
    n.attrs.set("auto_pad", c.auto_pad);
  }
  if (c.p.group != 1) n.attrs.set("group", c.p.group);
  return n;
}

std::vector<conv_case> conv_cases() {
  std::vector<conv_case> v;
  v.push_back({{2, 3, 7, 6}, {4, 3, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}, 1}});
  v.push_back({{1, 4, 9, 8}, {6, 4, 3, 2}, {{2, 1}, {2, 1}, {1, 0}, {2, 1}, 1}});
  v.push_back({{1, 4, 5, 5}, {6, 2, 3, 3}, {{1, 1}, {1, 1}, {0, 0}, {0, 0}, 2}, false});
  v.push_back({{1, 16, 6, 6}, {16, 1, 3, 3}, {{2, 2}, {1, 1}, {1, 1}, {1, 1}, 16}});  // depthwise
  v.push_back({{1, 4, 6, 7}, {8, 1, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}, 4}});  // multiplier 2
  v.push_back({{2, 3, 10}, {5, 3, 3}, {{2}, {1}, {1}, {1}, 1}});                   // 1-D
  v.push_back(
      {{1, 2, 5, 5, 4}, {3, 2, 3, 3, 2}, {{1, 2, 1}, {1, 1, 2}, {1, 0, 1}, {1, 1, 0}, 1}});  // 3-D
  v.push_back({{1, 16, 5, 5}, {8, 16, 1, 1}, {{1, 1}, {1, 1}, {0, 0}, {0, 0}, 1}});  // pointwise
  v.push_back({{1, 16, 6, 5}, {8, 16, 1, 1}, {{2, 2}, {1, 1}, {0, 0}, {0, 0}, 1}, false});
  v.push_back({{1, 3, 11, 11}, {8, 3, 5, 5}, {{2, 2}, {1, 1}, {2, 2}, {2, 2}, 1}});
  v.push_back(
      {{1, 8, 5, 5}, {8, 4, 3, 3}, {{1, 1}, {2, 2}, {2, 2}, {2, 2}, 2}});  // grouped + dilated
  return v;
}

void check_conv(const conv_case& c, bool constant_w) {
  const tensor x = random_tensor(dtype::f32, c.x);
  const tensor w = random_tensor(dtype::f32, c.w);
  const tensor b = c.bias ? random_tensor(dtype::f32, {c.w[0]}) : tensor();
  const op_node n = conv_node(c);
  std::vector<tensor> inputs{x, w};
  if (c.bias) inputs.push_back(b);
  auto y = run(n, inputs,
               {const_mask(inputs.size(), constant_w ? std::initializer_list<size_t>{1, 2}
                                                     : std::initializer_list<size_t>{})});
  ASSERT_TRUE(y.has_value()) << y.error().to_string();
  EXPECT_CLOSE((*y)[0], ref_conv(x, w, c.bias ? &b : nullptr, c.p));
}

TEST(CpuConv, MatchesDirectConvolution) {
  for (const char* layout : {"plain", "blocked"}) {
    layout_scope scope(layout);
    for (const auto& c : conv_cases()) {
      for (bool constant_w : {true, false}) {
        SCOPED_TRACE(std::string("layout=") + layout + " x=" + shape_to_string(c.x) +
                     " w=" + shape_to_string(c.w) + " constant_w=" + std::to_string(constant_w));
        check_conv(c, constant_w);
      }
    }
  }
}

TEST(CpuConv, AutoPad) {
  // x 7 wide, kernel 4, stride 2: SAME output ceil(7/2) = 4, total pad (4-1)*2+4-7 = 3.
  conv_case same_upper{
      {1, 3, 7, 7}, {4, 3, 4, 4}, {{2, 2}, {1, 1}, {1, 1}, {2, 2}, 1}, true, "SAME_UPPER"};
  conv_case same_lower{
      {1, 3, 7, 7}, {4, 3, 4, 4}, {{2, 2}, {1, 1}, {2, 2}, {1, 1}, 1}, true, "SAME_LOWER"};
  conv_case valid{{1, 3, 7, 8}, {4, 3, 3, 2}, {{2, 3}, {1, 1}, {0, 0}, {0, 0}, 1}, true, "VALID"};
  // Dilated SAME: extent (3-1)*2+1 = 5, in 6, stride 1: total 4.
  conv_case same_dilated{
      {1, 2, 6, 6}, {2, 2, 3, 3}, {{1, 1}, {2, 2}, {2, 2}, {2, 2}, 1}, true, "SAME_UPPER"};
  for (const auto& c : {same_upper, same_lower, valid, same_dilated}) {
    SCOPED_TRACE(c.auto_pad);
    check_conv(c, true);
  }
}

TEST(CpuConv, KernelShapeAttributeAndErrors) {
  const tensor x = random_tensor(dtype::f32, {1, 4, 5, 5});
  const tensor w = random_tensor(dtype::f32, {2, 4, 3, 3});
  op_node n = make_node("Conv");
  n.attrs.set("kernel_shape", ints{3, 3});
  auto y = run(n, {x, w});
  ASSERT_TRUE(y.has_value()) << y.error().to_string();
  EXPECT_CLOSE((*y)[0], ref_conv(x, w, nullptr, {{1, 1}, {1, 1}, {0, 0}, {0, 0}, 1}));
  EXPECT_EQ((*y)[0].shape(), (shape_t{1, 2, 3, 3}));

  n.attrs.set("kernel_shape", ints{2, 3});
  EXPECT_EQ(run(n, {x, w}).error().code(), error_code::invalid_model);

  op_node g = make_node("Conv");
  g.attrs.set("group", int64_t{3});  // 4 channels do not split into 3 groups
  EXPECT_EQ(run(g, {x, w}).error().code(), error_code::invalid_model);

  op_node bad_pad = make_node("Conv");
  bad_pad.attrs.set("auto_pad", std::string("SAME"));
  EXPECT_EQ(run(bad_pad, {x, w}).error().code(), error_code::invalid_model);

  op_node neg = make_node("Conv");
  neg.attrs.set("pads", ints{-1, 0, 0, 0});
  EXPECT_EQ(run(neg, {x, w}).error().code(), error_code::invalid_model);

  op_node plain = make_node("Conv");
  const tensor w_wrong = random_tensor(dtype::f32, {2, 3, 3, 3});
  EXPECT_EQ(run(plain, {x, w_wrong}).error().code(), error_code::invalid_model);
  const tensor x_small = random_tensor(dtype::f32, {1, 4, 2, 2});  // kernel larger than input
  EXPECT_EQ(run(plain, {x_small, w}).error().code(), error_code::invalid_model);
  const tensor bias_wrong = random_tensor(dtype::f32, {3});
  EXPECT_EQ(run(plain, {x, w, bias_wrong}).error().code(), error_code::invalid_model);
}

// ---- FusedConv ----------------------------------------------------------------------------------

struct act_case {
  std::string name;
  std::vector<float> params;
};

std::vector<act_case> activations() {
  return {{"", {}},
          {"Relu", {}},
          {"Clip", {-0.5f, 0.7f}},
          {"LeakyRelu", {0.1f}},
          {"Sigmoid", {}},
          {"HardSigmoid", {0.3f, 0.4f}},
          {"HardSwish", {}},
          {"Tanh", {}},
          {"Gelu", {}}};
}

TEST(CpuFusedConv, MatchesConvPlusResidualPlusActivation) {
  const std::vector<conv_case> cases{
      {{1, 8, 6, 6}, {8, 8, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}, 1}},
      {{1, 16, 5, 5}, {16, 16, 1, 1}, {{1, 1}, {1, 1}, {0, 0}, {0, 0}, 1}},
      {{1, 8, 6, 6}, {8, 1, 3, 3}, {{2, 2}, {1, 1}, {1, 1}, {1, 1}, 8}},
  };
  for (const char* layout : {"plain", "blocked"}) {
    layout_scope scope(layout);
    const auto acts = activations();
    for (size_t ai = 0; ai < acts.size(); ++ai) {
      const auto& a = acts[ai];
      const auto& c = cases[ai % cases.size()];  // every activation once, shapes rotating
      {
        for (bool with_z : {false, true}) {
          SCOPED_TRACE(std::string(layout) + " w=" + shape_to_string(c.w) + " act=" + a.name +
                       " z=" + std::to_string(with_z));
          const tensor x = random_tensor(dtype::f32, c.x, -3, 3);
          const tensor w = random_tensor(dtype::f32, c.w);
          const tensor b = random_tensor(dtype::f32, {c.w[0]});
          op_node n = conv_node(c, "FusedConv", "troupe");
          n.attrs.set("activation", a.name);
          if (!a.params.empty()) n.attrs.set("activation_params", a.params);
          const tensor ref_plain = ref_conv(x, w, &b, c.p);
          const tensor z = with_z ? random_tensor(dtype::f32, ref_plain.shape(), -2, 2) : tensor();
          const tensor expected = ref_conv(x, w, &b, c.p, with_z ? &z : nullptr, a.name, a.params);
          std::vector<tensor> inputs{x, w, b};
          if (with_z) inputs.push_back(z);
          auto y = run(n, inputs, {const_mask(inputs.size(), {1, 2})});
          ASSERT_TRUE(y.has_value()) << y.error().to_string();
          EXPECT_CLOSE((*y)[0], expected);
          if (with_z) {
            // Y over Z's storage (the planner's in-place reuse) gives the same result.
            std::vector<tensor> aliased = inputs;
            aliased[3] = z.clone();
            auto y2 = run(n, aliased, {const_mask(inputs.size(), {1, 2}), 3});
            ASSERT_TRUE(y2.has_value()) << y2.error().to_string();
            EXPECT_CLOSE((*y2)[0], expected);
          }
        }
      }
    }
  }
}

// (N, C, D...) <-> (N, D..., C) copies.
tensor permute_channels(const tensor& t, bool to_last) {
  const shape_t& s = t.shape();
  const int64_t n = s[0], c = to_last ? s[1] : s.back();
  const int64_t spatial = t.elements() / (n * c);
  shape_t out = s;
  if (to_last) {
    out.erase(out.begin() + 1);
    out.push_back(c);
  } else {
    out.pop_back();
    out.insert(out.begin() + 1, c);
  }
  tensor r = tensor::allocate(dtype::f32, out);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < spatial; ++p) {
        const int64_t first = (b * c + ch) * spatial + p, last = (b * spatial + p) * c + ch;
        r.data<float>()[to_last ? last : first] = t.data<float>()[to_last ? first : last];
      }
  return r;
}

TEST(CpuFusedConv, ChannelsLastStorage) {
  const std::vector<conv_case> cases{
      {{2, 8, 6, 5}, {16, 8, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}, 1}},
      {{1, 16, 7, 7}, {16, 1, 3, 3}, {{2, 2}, {1, 1}, {1, 1}, {1, 1}, 16}},
      {{1, 16, 5, 5}, {32, 16, 1, 1}, {{1, 1}, {1, 1}, {0, 0}, {0, 0}, 1}},
      {{2, 4, 9}, {6, 4, 3}, {{2}, {1}, {1}, {0}, 1}},
      {{1, 4, 4, 5, 3}, {8, 4, 3, 3, 3}, {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1}},
  };
  for (const char* layout : {"plain", "blocked"}) {
    layout_scope scope(layout);
    for (const auto& c : cases) {
      for (bool with_z : {false, true}) {
        SCOPED_TRACE(std::string(layout) + " x=" + shape_to_string(c.x) +
                     " z=" + std::to_string(with_z));
        const tensor x = random_tensor(dtype::f32, c.x);
        const tensor w = random_tensor(dtype::f32, c.w);
        const tensor b = random_tensor(dtype::f32, {c.w[0]});
        const tensor plain = ref_conv(x, w, &b, c.p);
        const tensor z = random_tensor(dtype::f32, plain.shape());
        const tensor want = ref_conv(x, w, &b, c.p, with_z ? &z : nullptr, "Relu");
        op_node n = conv_node(c, "FusedConv", "troupe");
        n.attrs.set("activation", std::string("Relu"));
        n.attrs.set("channels_last", int64_t{1});
        std::vector<tensor> inputs{permute_channels(x, true), w, b};
        if (with_z) inputs.push_back(permute_channels(z, true));
        auto y = run(n, inputs, {const_mask(inputs.size(), {1, 2})});
        ASSERT_TRUE(y.has_value()) << y.error().to_string();
        ASSERT_EQ((*y)[0].shape(), permute_channels(want, true).shape());
        EXPECT_CLOSE(permute_channels((*y)[0], false), want);
      }
    }
  }
  // A residual stored channels-first does not match a channels-last output.
  const conv_case c = cases[0];
  op_node n = conv_node(c, "FusedConv", "troupe");
  n.attrs.set("channels_last", int64_t{1});
  const tensor x = random_tensor(dtype::f32, {2, 6, 5, 8});
  const tensor w = random_tensor(dtype::f32, c.w);
  EXPECT_EQ(run(n, {x, w, tensor(), random_tensor(dtype::f32, {2, 16, 6, 5})}).error().code(),
            error_code::invalid_model);
}

TEST(CpuFusedConv, ZWithoutBiasAndErrors) {
  const conv_case c{{2, 4, 5, 5}, {6, 4, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}, 1}};
  const tensor x = random_tensor(dtype::f32, c.x);
  const tensor w = random_tensor(dtype::f32, c.w);
  const tensor z = random_tensor(dtype::f32, {2, 6, 5, 5});
  op_node n = conv_node(c, "FusedConv", "troupe");
  auto y = run(n, {x, w, tensor(), z}, {const_mask(4, {})});
  ASSERT_TRUE(y.has_value()) << y.error().to_string();
  EXPECT_CLOSE((*y)[0], ref_conv(x, w, nullptr, c.p, &z));

  const tensor z_wrong = random_tensor(dtype::f32, {2, 6, 5, 4});
  EXPECT_EQ(run(n, {x, w, tensor(), z_wrong}).error().code(), error_code::invalid_model);
  n.attrs.set("activation", std::string("Softplus"));
  EXPECT_EQ(run(n, {x, w}).error().code(), error_code::unsupported);
  n.attrs.set("activation", std::string("Clip"));
  n.attrs.set("activation_params", std::vector<float>{1, 2, 3});
  EXPECT_EQ(run(n, {x, w}).error().code(), error_code::invalid_model);
}

// ---- ConvTranspose ------------------------------------------------------------------------------

struct deconv_case {
  shape_t x, w;
  ints strides, dilations, pads, output_padding, output_shape;
  int64_t group = 1;
  std::string auto_pad;
  // What the reference uses: resolved begin pads and the output spatial shape.
  ints expect_pads_begin, expect_out;
};

TEST(CpuConvTranspose, MatchesScatterReference) {
  std::vector<deconv_case> cases{
      // out = s*(in-1) + op + ((k-1)*d+1) - pb - pe
      {{1, 3, 4, 4}, {3, 2, 3, 3}, {2, 2}, {}, {}, {}, {}, 1, "", {0, 0}, {9, 9}},
      {{2, 4, 3, 5}, {4, 3, 3, 2}, {2, 1}, {1, 2}, {1, 0, 1, 1}, {1, 0}, {}, 1, "", {1, 0}, {6, 6}},
      {{1, 4, 3, 3},
       {4, 2, 3, 3},
       {2, 2},
       {},
       {1, 1, 1, 1},
       {},
       {},
       2,
       "",
       {1, 1},
       {5, 5}},                                                         // grouped
      {{1, 4, 4}, {4, 1, 3}, {3}, {2}, {}, {2}, {}, 4, "", {0}, {16}},  // 1-D depthwise,
                                                                        // output_padding
      {{1, 2, 2, 3, 2},
       {2, 3, 2, 2, 3},
       {1, 2, 2},
       {},
       {0, 1, 0, 0, 0, 1},
       {},
       {},
       1,
       "",
       {0, 1, 0},
       {3, 5, 4}},
      // output_shape: total = s*(in-1)+op+extent-out = 2*3+0+3-8 = 1 -> NOTSET: begin 1, end 0
      {{1, 2, 4, 4}, {2, 2, 3, 3}, {2, 2}, {}, {}, {}, {8, 8}, 1, "", {1, 1}, {8, 8}},
      // SAME_UPPER: output in*s = 8, total 1 -> begin 0, end 1
      {{1, 2, 4, 4}, {2, 2, 3, 3}, {2, 2}, {}, {}, {}, {}, 1, "SAME_UPPER", {0, 0}, {8, 8}},
      {{1, 2, 4, 4}, {2, 2, 3, 3}, {2, 2}, {}, {}, {}, {}, 1, "SAME_LOWER", {1, 1}, {8, 8}},
  };
  for (const char* layout : {"plain", "blocked"}) {
    layout_scope scope(layout);
    for (const auto& c : cases) {
      for (bool constant_w : {true, false}) {
        SCOPED_TRACE(std::string(layout) + " x=" + shape_to_string(c.x) +
                     " w=" + shape_to_string(c.w) + " " + c.auto_pad +
                     " constant_w=" + std::to_string(constant_w));
        const tensor x = random_tensor(dtype::f32, c.x);
        const tensor w = random_tensor(dtype::f32, c.w);
        const tensor b = random_tensor(dtype::f32, {c.w[1] * c.group});
        op_node n = make_node("ConvTranspose");
        set_ints(n, "strides", c.strides);
        set_ints(n, "dilations", c.dilations);
        set_ints(n, "pads", c.pads);
        set_ints(n, "output_padding", c.output_padding);
        set_ints(n, "output_shape", c.output_shape);
        if (c.group != 1) n.attrs.set("group", c.group);
        if (!c.auto_pad.empty()) n.attrs.set("auto_pad", c.auto_pad);
        const ints dil = c.dilations.empty() ? ints(c.strides.size(), 1) : c.dilations;
        auto y = run(n, {x, w, b},
                     {const_mask(3, constant_w ? std::initializer_list<size_t>{1}
                                               : std::initializer_list<size_t>{})});
        ASSERT_TRUE(y.has_value()) << y.error().to_string();
        EXPECT_CLOSE((*y)[0], ref_conv_transpose(x, w, &b, c.strides, dil, c.expect_pads_begin,
                                                 c.expect_out, c.group));
      }
    }
  }
}

// ---- MatMul / FusedMatMul -----------------------------------------------------------------------

TEST(CpuMatMul, NumpySemantics) {
  const std::vector<std::pair<shape_t, shape_t>> cases{
      {{5, 7}, {7, 3}},
      {{2, 6, 8}, {8, 5}},
      {{1, 12, 9, 16}, {1, 12, 16, 9}},
      {{2, 1, 3, 4}, {1, 5, 4, 6}},
      {{3, 4}, {2, 4, 5}},
      {{7}, {7, 4}},
      {{4, 7}, {7}},
      {{7}, {7}},
      {{6}, {2, 6, 3}},
      {{2, 3, 6}, {6}},
      {{2, 3, 4}, {2, 4, 5}},
      {{1, 64}, {64, 256}},
  };
  for (const auto& [as, bs] : cases) {
    for (bool constant_b : {true, false}) {
      SCOPED_TRACE(shape_to_string(as) + " @ " + shape_to_string(bs) +
                   " constant_b=" + std::to_string(constant_b));
      const tensor a = random_tensor(dtype::f32, as);
      const tensor b = random_tensor(dtype::f32, bs);
      auto y = run(make_node("MatMul"), {a, b},
                   {const_mask(2, constant_b ? std::initializer_list<size_t>{1}
                                             : std::initializer_list<size_t>{})});
      ASSERT_TRUE(y.has_value()) << y.error().to_string();
      EXPECT_CLOSE((*y)[0], ref_matmul(a, b));
    }
  }
  EXPECT_EQ(run(make_node("MatMul"),
                {random_tensor(dtype::f32, {2, 3}), random_tensor(dtype::f32, {4, 2})})
                .error()
                .code(),
            error_code::invalid_model);
  EXPECT_EQ(run(make_node("MatMul"),
                {random_tensor(dtype::f32, {2, 2, 3}), random_tensor(dtype::f32, {3, 3, 2})})
                .error()
                .code(),
            error_code::invalid_model);
}

TEST(CpuMatMul, EmptyInnerDimensionGivesZeros) {
  auto y = run(make_node("MatMul"),
               {tensor::zeros(dtype::f32, {3, 0}), tensor::zeros(dtype::f32, {0, 2})});
  ASSERT_TRUE(y.has_value()) << y.error().to_string();
  ASSERT_EQ((*y)[0].shape(), (shape_t{3, 2}));
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ((*y)[0].data<float>()[i], 0.0f);
}

TEST(CpuFusedMatMul, MatchesMatMulPlusBiasResidualActivation) {
  const std::vector<std::pair<shape_t, shape_t>> cases{
      {{2, 8, 16}, {16, 24}}, {{1, 2, 5, 8}, {1, 2, 8, 6}}, {{5, 8}, {8, 3}}};
  const auto acts = activations();
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const auto& [as, bs] = cases[ci];
    for (size_t ai = ci; ai < acts.size(); ai += cases.size()) {  // shapes x activations, rotating
      const auto& act = acts[ai];
      for (int variant = 0; variant < 4; ++variant) {  // bit 0: bias, bit 1: Z
        const bool with_bias = variant & 1, with_z = variant & 2;
        SCOPED_TRACE(shape_to_string(as) + " @ " + shape_to_string(bs) + " act=" + act.name +
                     " bias=" + std::to_string(with_bias) + " z=" + std::to_string(with_z));
        const tensor a = random_tensor(dtype::f32, as, -2, 2);
        const tensor b = random_tensor(dtype::f32, bs);
        const tensor plain = ref_matmul(a, b);
        const int64_t n_cols = bs.back();
        const tensor bias = random_tensor(dtype::f32, {n_cols});
        const tensor z = random_tensor(dtype::f32, plain.shape());
        tensor expected = tensor::allocate(dtype::f32, plain.shape());
        for (int64_t i = 0; i < plain.elements(); ++i) {
          double v = plain.data<float>()[i];
          if (with_bias) v += bias.data<float>()[i % n_cols];
          if (with_z) v += z.data<float>()[i];
          expected.data<float>()[i] = static_cast<float>(act_ref(act.name, act.params, v));
        }
        op_node n = make_node("FusedMatMul", 1, "troupe");
        n.attrs.set("activation", act.name);
        if (!act.params.empty()) n.attrs.set("activation_params", act.params);
        const std::vector<tensor> inputs{a, b, with_bias ? bias : tensor(), with_z ? z : tensor()};
        for (bool constant_b : {true, false}) {
          auto y = run(n, inputs,
                       {const_mask(4, constant_b ? std::initializer_list<size_t>{1, 2}
                                                 : std::initializer_list<size_t>{})});
          ASSERT_TRUE(y.has_value()) << y.error().to_string();
          EXPECT_CLOSE((*y)[0], expected);
        }
        if (with_z) {
          std::vector<tensor> aliased = inputs;
          aliased[3] = z.clone();
          auto y = run(n, aliased, {const_mask(4, {1}), 3});
          ASSERT_TRUE(y.has_value()) << y.error().to_string();
          EXPECT_CLOSE((*y)[0], expected);
        }
      }
    }
  }
  op_node n = make_node("FusedMatMul", 1, "troupe");
  EXPECT_EQ(run(n, {random_tensor(dtype::f32, {2, 3}), random_tensor(dtype::f32, {3, 4}),
                    random_tensor(dtype::f32, {3})})
                .error()
                .code(),
            error_code::invalid_model);
}

// ---- Gemm / FusedGemm ---------------------------------------------------------------------------

TEST(CpuGemm, TransposesScalesAndBroadcastC) {
  const int64_t M = 5, K = 7, N = 6;
  const std::vector<shape_t> c_shapes{{}, {N}, {1, N}, {M, 1}, {M, N}, {1, 1}, {1}};
  struct scal {
    float alpha, beta;
  };
  for (int trans = 0; trans < 4; ++trans) {
    const bool ta = trans & 1, tb = trans & 2;
    for (int ci = -1; ci < static_cast<int>(c_shapes.size()); ++ci) {
      for (scal s : {scal{1.0f, 1.0f}, scal{0.5f, 2.0f}, scal{1.0f, -1.5f}, scal{2.0f, 0.0f}}) {
        for (bool constant : {true, false}) {
          const bool with_c = ci >= 0;
          SCOPED_TRACE("transA=" + std::to_string(ta) + " transB=" + std::to_string(tb) +
                       " C=" + (with_c ? shape_to_string(c_shapes[ci]) : std::string("none")) +
                       " alpha=" + std::to_string(s.alpha) + " beta=" + std::to_string(s.beta) +
                       " constant=" + std::to_string(constant));
          const tensor a = random_tensor(dtype::f32, ta ? shape_t{K, M} : shape_t{M, K});
          const tensor b = random_tensor(dtype::f32, tb ? shape_t{N, K} : shape_t{K, N});
          const tensor c = with_c ? random_tensor(dtype::f32, c_shapes[ci]) : tensor();
          op_node n = make_node("Gemm");
          n.attrs.set("transA", int64_t{ta});
          n.attrs.set("transB", int64_t{tb});
          n.attrs.set("alpha", s.alpha);
          n.attrs.set("beta", s.beta);
          tensor expected = tensor::allocate(dtype::f32, {M, N});
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              double acc = 0;
              for (int64_t k = 0; k < K; ++k) {
                const double av = a.data<float>()[ta ? k * M + i : i * K + k];
                const double bv = b.data<float>()[tb ? j * K + k : k * N + j];
                acc += av * bv;
              }
              double cv = 0;
              if (with_c) {
                const shape_t& cs = c.shape();
                const int64_t cm = cs.size() == 2 ? cs[0] : 1, cn = cs.empty() ? 1 : cs.back();
                cv = c.data<float>()[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
              }
              expected.data<float>()[i * N + j] = static_cast<float>(s.alpha * acc + s.beta * cv);
            }
          std::vector<tensor> inputs{a, b};
          if (with_c) inputs.push_back(c);
          auto y = run(n, inputs,
                       {const_mask(inputs.size(), constant ? std::initializer_list<size_t>{1, 2}
                                                           : std::initializer_list<size_t>{})});
          ASSERT_TRUE(y.has_value()) << y.error().to_string();
          EXPECT_CLOSE((*y)[0], expected);
        }
      }
    }
  }
  op_node n = make_node("Gemm");
  EXPECT_EQ(run(n, {random_tensor(dtype::f32, {2, 3}), random_tensor(dtype::f32, {3, 4}),
                    random_tensor(dtype::f32, {3, 4})})
                .error()
                .code(),
            error_code::invalid_model);
  EXPECT_EQ(run(n, {random_tensor(dtype::f32, {2, 3, 1}), random_tensor(dtype::f32, {3, 4})})
                .error()
                .code(),
            error_code::invalid_model);
}

TEST(CpuFusedGemm, ActivationAfterAlphaBeta) {
  const int64_t M = 4, K = 9, N = 8;
  for (const auto& act : activations()) {
    for (float beta : {1.0f, 0.5f}) {
      SCOPED_TRACE(act.name + " beta=" + std::to_string(beta));
      const tensor a = random_tensor(dtype::f32, {M, K}, -2, 2);
      const tensor b = random_tensor(dtype::f32, {N, K});
      const tensor c = random_tensor(dtype::f32, {N});
      op_node n = make_node("FusedGemm", 1, "troupe");
      n.attrs.set("transB", int64_t{1});
      n.attrs.set("beta", beta);
      n.attrs.set("activation", act.name);
      if (!act.params.empty()) n.attrs.set("activation_params", act.params);
      tensor expected = tensor::allocate(dtype::f32, {M, N});
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double acc = beta * static_cast<double>(c.data<float>()[j]);
          for (int64_t k = 0; k < K; ++k)
            acc += static_cast<double>(a.data<float>()[i * K + k]) * b.data<float>()[j * K + k];
          expected.data<float>()[i * N + j] =
              static_cast<float>(act_ref(act.name, act.params, acc));
        }
      for (bool constant : {true, false}) {
        auto y = run(n, {a, b, c},
                     {const_mask(3, constant ? std::initializer_list<size_t>{1, 2}
                                             : std::initializer_list<size_t>{})});
        ASSERT_TRUE(y.has_value()) << y.error().to_string();
        EXPECT_CLOSE((*y)[0], expected);
      }
    }
  }
}

// ---- pooling ------------------------------------------------------------------------------------

struct pool_case {
  shape_t x;
  pool_params p;
  std::string auto_pad;  // when set, p's pads are the expected resolved ones and are not passed
};

op_node pool_node(const char* op, const pool_case& c) {
  op_node n = make_node(op);
  n.attrs.set("kernel_shape", c.p.kernel);
  set_ints(n, "strides", c.p.strides);
  set_ints(n, "dilations", c.p.dilations);
  if (c.auto_pad.empty()) {
    ints pads = c.p.pads_begin;
    pads.insert(pads.end(), c.p.pads_end.begin(), c.p.pads_end.end());
    set_ints(n, "pads", pads);
  } else {
    n.attrs.set("auto_pad", c.auto_pad);
  }
  if (c.p.ceil_mode) n.attrs.set("ceil_mode", int64_t{1});
  return n;
}

std::vector<pool_case> pool_cases() {
  return {
      {{1, 4, 12, 12}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}}},  // ResNet stem
      {{2, 3, 7, 8}, {{2, 3}, {2, 2}, {1, 1}, {0, 1}, {1, 0}}},
      {{1, 2, 6, 6}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, true}},  // ceil, extra window
      {{1, 2, 5, 5}, {{2, 2}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, true}},  // ceil, window dropped
      {{1, 2, 6, 7}, {{3, 3}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, true}},  // ceil, no pads
      {{1, 2, 9, 9}, {{3, 2}, {1, 2}, {2, 2}, {2, 0}, {2, 1}}},        // dilated
      {{2, 3, 11}, {{3}, {2}, {1}, {1}, {1}}},                         // 1-D
      {{1, 2, 5, 6, 4}, {{2, 3, 2}, {2, 2, 1}, {1, 1, 1}, {1, 1, 0}, {0, 1, 1}}},  // 3-D
      {{1, 2, 7, 7}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}}, "SAME_UPPER"},      // total 2
      {{1, 2, 6, 6}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, {0, 0}}, "SAME_LOWER"},  // total 1 -> begin
      {{1, 2, 6, 6}, {{3, 3}, {2, 2}, {1, 1}, {0, 0}, {1, 1}}, "SAME_UPPER"},
      {{1, 2, 7, 6}, {{3, 2}, {2, 3}, {1, 1}, {0, 0}, {0, 0}}, "VALID"},
  };
}

TEST(CpuPool, MaxPool) {
  for (const auto& c : pool_cases()) {
    SCOPED_TRACE(shape_to_string(c.x) + " k=" + shape_to_string(c.p.kernel) + " " + c.auto_pad);
    const tensor x = random_tensor(dtype::f32, c.x);
    auto y = run(pool_node("MaxPool", c), {x});
    ASSERT_TRUE(y.has_value()) << y.error().to_string();
    EXPECT_CLOSE((*y)[0], ref_pool(x, c.p, pool_ref_kind::max).first);
  }
}

TEST(CpuPool, MaxPoolIndices) {
  for (int order : {0, 1}) {
    for (const auto& c : pool_cases()) {
      if (!c.p.dilations.empty() && c.p.dilations[0] != 1) continue;
      SCOPED_TRACE(shape_to_string(c.x) + " k=" + shape_to_string(c.p.kernel) +
                   " order=" + std::to_string(order));
      const tensor x = random_tensor(dtype::f32, c.x);
      op_node n = pool_node("MaxPool", c);
      n.attrs.set("storage_order", int64_t{order});
      auto y = run(n, {x}, {{}, -1, 2});
      ASSERT_TRUE(y.has_value()) << y.error().to_string();
      const auto [ry, ridx] = ref_pool(x, c.p, pool_ref_kind::max, order == 1);
      EXPECT_CLOSE((*y)[0], ry);
      ASSERT_EQ((*y)[1].type(), dtype::i64);
      for (size_t i = 0; i < ridx.size(); ++i) {
        ASSERT_EQ((*y)[1].data<int64_t>()[i], ridx[i]) << "at " << i;
      }
    }
  }
}

TEST(CpuPool, MaxPoolOnBytes) {
  const pool_case c{{1, 2, 6, 5}, {{3, 2}, {2, 1}, {1, 1}, {1, 0}, {1, 1}, true}};
  const tensor xf = random_tensor(dtype::f32, c.x, 0, 255);
  tensor xu = tensor::allocate(dtype::u8, c.x), xi = tensor::allocate(dtype::i8, c.x);
  tensor xf_rounded = tensor::allocate(dtype::f32, c.x);
  for (int64_t i = 0; i < xf.elements(); ++i) {
    const int v = static_cast<int>(xf.data<float>()[i]);
    xu.data<uint8_t>()[i] = static_cast<uint8_t>(v);
    xi.data<int8_t>()[i] = static_cast<int8_t>(v - 128);
    xf_rounded.data<float>()[i] = static_cast<float>(v);
  }
  const tensor want = ref_pool(xf_rounded, c.p, pool_ref_kind::max).first;
  auto yu = run(pool_node("MaxPool", c), {xu});
  auto yi = run(pool_node("MaxPool", c), {xi});
  ASSERT_TRUE(yu.has_value() && yi.has_value());
  ASSERT_EQ((*yu)[0].type(), dtype::u8);
  ASSERT_EQ((*yu)[0].shape(), want.shape());
  for (int64_t i = 0; i < want.elements(); ++i) {
    EXPECT_EQ((*yu)[0].data<uint8_t>()[i], static_cast<uint8_t>(want.data<float>()[i]));
    EXPECT_EQ((*yi)[0].data<int8_t>()[i], static_cast<int8_t>(want.data<float>()[i] - 128));
  }
}

TEST(CpuPool, AveragePool) {
  for (bool include : {false, true}) {
    for (const auto& c : pool_cases()) {
      if (!c.p.dilations.empty() && c.p.dilations[0] != 1)
        continue;  // AveragePool dilations: opset 19
      SCOPED_TRACE(shape_to_string(c.x) + " k=" + shape_to_string(c.p.kernel) + " " + c.auto_pad +
                   " include_pad=" + std::to_string(include));
      const tensor x = random_tensor(dtype::f32, c.x);
      op_node n = pool_node("AveragePool", c);
      n.attrs.set("count_include_pad", int64_t{include});
      auto y = run(n, {x});
      ASSERT_TRUE(y.has_value()) << y.error().to_string();
      EXPECT_CLOSE(
          (*y)[0],
          ref_pool(x, c.p, include ? pool_ref_kind::avg_include : pool_ref_kind::avg_exclude)
              .first);
    }
  }
}

TEST(CpuPool, HandComputedCeilModeValues) {
  // ONNX reference / ORT: x = 1..6, k=3, s=2, pads 1/1, ceil: windows [-1,1] [1,3] [3,5] [5,7];
  // the last counts input 5 and the declared pad 6 but not 7: (6 + 0) / 2.
  tensor x = tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {1, 1, 6});
  pool_case c{{1, 1, 6}, {{3}, {2}, {1}, {1}, {1}, true}};
  op_node n = pool_node("AveragePool", c);
  n.attrs.set("count_include_pad", int64_t{1});
  auto y = run(n, {x});
  ASSERT_TRUE(y.has_value()) << y.error().to_string();
  const std::vector<float> want{1, 3, 5, 3};
  ASSERT_EQ((*y)[0].shape(), (shape_t{1, 1, 4}));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ((*y)[0].data<float>()[i], want[i]);
  // k=2, s=2, pads 1/1 over 5: the 4th window would start in the end pad and is dropped.
  tensor x5 = tensor::from_vector<float>({1, 2, 3, 4, 5}, {1, 1, 5});
  pool_case c5{{1, 1, 5}, {{2}, {2}, {1}, {1}, {1}, true}};
  auto y5 = run(pool_node("MaxPool", c5), {x5});
  ASSERT_TRUE(y5.has_value()) << y5.error().to_string();
  ASSERT_EQ((*y5)[0].shape(), (shape_t{1, 1, 3}));
  EXPECT_FLOAT_EQ((*y5)[0].data<float>()[2], 5.0f);
}

TEST(CpuPool, GlobalPools) {
  for (const shape_t& s : {shape_t{2, 3, 7, 7}, shape_t{1, 5, 9}, shape_t{1, 2, 3, 4, 5}}) {
    const tensor x = random_tensor(dtype::f32, s);
    const int64_t planes = s[0] * s[1], plane = x.elements() / planes;
    shape_t out{s[0], s[1]};
    out.resize(s.size(), 1);
    tensor want_avg = tensor::allocate(dtype::f32, out),
           want_max = tensor::allocate(dtype::f32, out);
    for (int64_t p = 0; p < planes; ++p) {
      double sum = 0, mx = -1e30;
      for (int64_t i = 0; i < plane; ++i) {
        sum += x.data<float>()[p * plane + i];
        mx = std::max(mx, static_cast<double>(x.data<float>()[p * plane + i]));
      }
      want_avg.data<float>()[p] = static_cast<float>(sum / plane);
      want_max.data<float>()[p] = static_cast<float>(mx);
    }
    auto ya = run(make_node("GlobalAveragePool"), {x});
    auto ym = run(make_node("GlobalMaxPool"), {x});
    ASSERT_TRUE(ya.has_value() && ym.has_value());
    EXPECT_CLOSE((*ya)[0], want_avg);
    EXPECT_CLOSE((*ym)[0], want_max);
  }
}

TEST(CpuPool, Errors) {
  const tensor x = random_tensor(dtype::f32, {1, 2, 4, 4});
  op_node n = make_node("MaxPool");
  EXPECT_EQ(run(n, {x}).error().code(), error_code::invalid_model);  // kernel_shape missing
  n.attrs.set("kernel_shape", ints{5, 5});
  EXPECT_EQ(run(n, {x}).error().code(), error_code::invalid_model);  // larger than input
  n.attrs.set("kernel_shape", ints{2});
  EXPECT_EQ(run(n, {x}).error().code(), error_code::invalid_model);  // wrong arity
  n.attrs.set("kernel_shape", ints{2, 2});
  n.attrs.set("strides", ints{0, 1});
  EXPECT_EQ(run(n, {x}).error().code(), error_code::invalid_model);
}

// ---- normalisation ------------------------------------------------------------------------------

TEST(CpuNorm, BatchNormalization) {
  for (const shape_t& s : {shape_t{2, 3, 4, 5}, shape_t{4, 6}, shape_t{1, 3, 7}}) {
    for (bool constant : {true, false}) {
      const int64_t C = s[1];
      const tensor x = random_tensor(dtype::f32, s);
      const tensor scale = random_tensor(dtype::f32, {C});
      const tensor bias = random_tensor(dtype::f32, {C});
      const tensor mean = random_tensor(dtype::f32, {C});
      const tensor var = random_tensor(dtype::f32, {C}, 0.1, 2.0);
      op_node n = make_node("BatchNormalization", 15);
      n.attrs.set("epsilon", 1e-3f);
      auto y = run(n, {x, scale, bias, mean, var},
                   {const_mask(5, constant ? std::initializer_list<size_t>{1, 2, 3, 4}
                                           : std::initializer_list<size_t>{})});
      ASSERT_TRUE(y.has_value()) << y.error().to_string();
      tensor want = tensor::allocate(dtype::f32, s);
      const int64_t inner = x.elements() / (s[0] * C);
      for (int64_t i = 0; i < x.elements(); ++i) {
        const int64_t c = (i / inner) % C;
        want.data<float>()[i] =
            static_cast<float>((x.data<float>()[i] - static_cast<double>(mean.data<float>()[c])) /
                                   std::sqrt(static_cast<double>(var.data<float>()[c]) + 1e-3) *
                                   scale.data<float>()[c] +
                               bias.data<float>()[c]);
      }
      EXPECT_CLOSE((*y)[0], want);
    }
  }
  // Opset 7 spatial=0: one statistic per (C, H, W) element.
  const shape_t s{2, 2, 3};
  const tensor x = random_tensor(dtype::f32, s);
  const tensor scale = random_tensor(dtype::f32, {2, 3}), bias = random_tensor(dtype::f32, {2, 3});
  const tensor mean = random_tensor(dtype::f32, {2, 3}),
               var = random_tensor(dtype::f32, {2, 3}, 0.5, 1.0);
  op_node n7 = make_node("BatchNormalization", 7);
  n7.attrs.set("spatial", int64_t{0});
  auto y7 = run(n7, {x, scale, bias, mean, var});
  ASSERT_TRUE(y7.has_value()) << y7.error().to_string();
  tensor want = tensor::allocate(dtype::f32, s);
  for (int64_t i = 0; i < x.elements(); ++i) {
    const int64_t c = i % 6;
    want.data<float>()[i] =
        static_cast<float>((x.data<float>()[i] - mean.data<float>()[c]) /
                               std::sqrt(var.data<float>()[c] + 1e-5) * scale.data<float>()[c] +
                           bias.data<float>()[c]);
  }
  EXPECT_CLOSE((*y7)[0], want);

  const tensor x4 = random_tensor(dtype::f32, {1, 2, 2});
  const tensor p2 = random_tensor(dtype::f32, {2}, 0.5, 1.0);
  op_node train = make_node("BatchNormalization", 15);
  train.attrs.set("training_mode", int64_t{1});
  EXPECT_EQ(run(train, {x4, p2, p2, p2, p2}).error().code(), error_code::unsupported);
  op_node extra = make_node("BatchNormalization", 15);
  EXPECT_EQ(run(extra, {x4, p2, p2, p2, p2}, {{}, -1, 3}).error().code(), error_code::unsupported);
  const tensor p3 = random_tensor(dtype::f32, {3}, 0.5, 1.0);
  EXPECT_EQ(run(extra, {x4, p2, p3, p2, p2}).error().code(), error_code::invalid_model);
}

TEST(CpuNorm, InstanceNormalization) {
  for (const shape_t& s : {shape_t{2, 3, 4, 5}, shape_t{1, 4, 9}}) {
    const int64_t C = s[1], inner = element_count(s) / (s[0] * C);
    const tensor x = random_tensor(dtype::f32, s, -3, 5);
    const tensor scale = random_tensor(dtype::f32, {C}), bias = random_tensor(dtype::f32, {C});
    op_node n = make_node("InstanceNormalization");
    n.attrs.set("epsilon", 1e-4f);
    auto y = run(n, {x, scale, bias});
    ASSERT_TRUE(y.has_value()) << y.error().to_string();
    tensor want = tensor::allocate(dtype::f32, s);
    for (int64_t p = 0; p < s[0] * C; ++p) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < inner; ++i) mean += x.data<float>()[p * inner + i];
      mean /= inner;
      for (int64_t i = 0; i < inner; ++i) var += std::pow(x.data<float>()[p * inner + i] - mean, 2);
      var /= inner;
      for (int64_t i = 0; i < inner; ++i) {
        want.data<float>()[p * inner + i] =
            static_cast<float>((x.data<float>()[p * inner + i] - mean) / std::sqrt(var + 1e-4) *
                                   scale.data<float>()[p % C] +
                               bias.data<float>()[p % C]);
      }
    }
    EXPECT_CLOSE((*y)[0], want);
  }
}

TEST(CpuNorm, LpNormalization) {
  const shape_t s{3, 4, 5};
  for (int64_t p : {1, 2}) {
    for (int64_t axis : {0, 1, -1}) {
      const tensor x = random_tensor(dtype::f32, s);
      op_node n = make_node("LpNormalization");
      n.attrs.set("p", p);
      n.attrs.set("axis", axis);
      auto y = run(n, {x});
      ASSERT_TRUE(y.has_value()) << y.error().to_string();
      const int64_t a = axis < 0 ? axis + 3 : axis;
      const int64_t len = s[a];
      int64_t inner = 1;
      for (size_t i = a + 1; i < 3; ++i) inner *= s[i];
      tensor want = tensor::allocate(dtype::f32, s);
      for (int64_t i = 0; i < x.elements(); ++i) {
        const int64_t base = (i / (len * inner)) * len * inner + i % inner;
        double norm = 0;
        for (int64_t j = 0; j < len; ++j) {
          const double v = x.data<float>()[base + j * inner];
          norm += p == 1 ? std::fabs(v) : v * v;
        }
        if (p == 2) norm = std::sqrt(norm);
        want.data<float>()[i] = static_cast<float>(x.data<float>()[i] / norm);
      }
      EXPECT_CLOSE((*y)[0], want);
    }
  }
  op_node n = make_node("LpNormalization");
  n.attrs.set("p", int64_t{3});
  EXPECT_EQ(run(n, {random_tensor(dtype::f32, {2, 2})}).error().code(), error_code::invalid_model);
}

TEST(CpuThreads, ThreadedPathsMatchReferences) {
  const int threads = std::max(2, one_thread_environment::configured_threads);
  omp_set_num_threads(threads);
  struct restore {
    ~restore() { omp_set_num_threads(1); }
  } restore_one_thread;
  SCOPED_TRACE("threads=" + std::to_string(threads));
  {
    layout_scope scope("blocked");
    const conv_case c{{2, 16, 9, 9}, {32, 16, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}, 1}};
    check_conv(c, true);
    const conv_case dw{{1, 32, 8, 8}, {32, 1, 3, 3}, {{2, 2}, {1, 1}, {1, 1}, {1, 1}, 32}};
    check_conv(dw, false);
  }
  const tensor a = random_tensor(dtype::f32, {2, 33, 64});
  const tensor b = random_tensor(dtype::f32, {64, 48});
  auto y = run(make_node("MatMul"), {a, b}, {const_mask(2, {1})});
  ASSERT_TRUE(y.has_value()) << y.error().to_string();
  EXPECT_CLOSE((*y)[0], ref_matmul(a, b));
  for (const char* op : {"MaxPool", "AveragePool"}) {
    // ceil mode with include-pad takes the direct loop; Indices also do for MaxPool.
    const pool_case c{{2, 8, 13, 11}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, true}};
    const tensor x = random_tensor(dtype::f32, c.x);
    op_node n = pool_node(op, c);
    const bool is_max = std::string(op) == "MaxPool";
    if (!is_max) n.attrs.set("count_include_pad", int64_t{1});
    auto p = run(n, {x}, {{}, -1, is_max ? size_t{2} : size_t{1}});
    ASSERT_TRUE(p.has_value()) << p.error().to_string();
    EXPECT_CLOSE((*p)[0],
                 ref_pool(x, c.p, is_max ? pool_ref_kind::max : pool_ref_kind::avg_include).first);
  }
}

}  // namespace
}  // namespace troupe
