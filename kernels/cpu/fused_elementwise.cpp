// CPU kernel of troupe.FusedElementwise (kernels/ops/fused_elementwise_params.hpp): the chain runs
// over blocks of up to `block` elements along the innermost merged dim; each step sweeps the block
// held in a stack buffer, so every step is a vectorisable loop and the tensor is read and written
// once. Constants are converted to float at create and owned by the kernel.
#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <vector>

#include "kernels/cpu/ew_common.hpp"
#include "kernels/cpu/vec_math.hpp"
#include "kernels/ops/fused_elementwise_params.hpp"

namespace troupe::kernels::cpu {
namespace {

constexpr int64_t block = 256;  // elements per sweep: 1 KiB of floats, stays in L1

/// v[0, n) = float(x[0, n)); the storage type and its meaning come from `type`.
void load_block(dtype type, const void* x, int64_t n, float* v) {
  switch (type) {
    case dtype::f16: {
      const auto* p = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < n; ++i) v[i] = half_to_float(p[i]);
      return;
    }
    case dtype::bf16: {
      const auto* p = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < n; ++i) v[i] = bfloat16_to_float(p[i]);
      return;
    }
    default:
      visit_numeric<int>(type, 0, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const auto* p = static_cast<const T*>(x);
        for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(p[i]);
        return 0;
      });
  }
}

void store_block(dtype type, const float* v, int64_t n, void* y) {
  switch (type) {
    case dtype::f16: {
      auto* p = static_cast<uint16_t*>(y);
      for (int64_t i = 0; i < n; ++i) p[i] = float_to_half(v[i]);
      return;
    }
    case dtype::bf16: {
      auto* p = static_cast<uint16_t*>(y);
      for (int64_t i = 0; i < n; ++i) p[i] = float_to_bfloat16(v[i]);
      return;
    }
    default:
      std::copy(v, v + n, static_cast<float*>(y));
  }
}

/// One step over v[0, n); c is the constant at the block start, advancing by c_stride (0 or 1).
TROUPE_SIMD_CLONES
void run_step(const ew_step& s, float* v, int64_t n, const float* c, int64_t c_stride) {
  switch (s.op) {
    case ew_op::cast:
      return;
    case ew_op::add:
      for (int64_t i = 0; i < n; ++i) v[i] += c[i * c_stride];
      return;
    case ew_op::sub:
      for (int64_t i = 0; i < n; ++i) v[i] -= c[i * c_stride];
      return;
    case ew_op::rsub:
      for (int64_t i = 0; i < n; ++i) v[i] = c[i * c_stride] - v[i];
      return;
    case ew_op::mul:
      for (int64_t i = 0; i < n; ++i) v[i] *= c[i * c_stride];
      return;
    case ew_op::div:
      for (int64_t i = 0; i < n; ++i) v[i] /= c[i * c_stride];
      return;
    case ew_op::rdiv:
      for (int64_t i = 0; i < n; ++i) v[i] = c[i * c_stride] / v[i];
      return;
    case ew_op::relu:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) v[i] = pick(v[i] > 0.0f, v[i], 0.0f);
      return;
    case ew_op::sigmoid:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) v[i] = vm::sigmoid(v[i]);
      return;
    case ew_op::tanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) v[i] = vm::tanh(v[i]);
      return;
    case ew_op::clip:
      // NaN stays NaN, as in the Clip kernel: the comparisons are false for it.
      for (int64_t i = 0; i < n; ++i) {
        const float x = v[i];
        v[i] = x < s.lo ? s.lo : (x > s.hi ? s.hi : x);
      }
      return;
  }
}

class fused_elementwise_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& ctx) {
    TROUPE_ASSIGN_OR_RETURN(auto p, resolve_fused_elementwise(ctx.node, ctx.inputs));
    auto k = std::unique_ptr<fused_elementwise_kernel>(new fused_elementwise_kernel());
    std::vector<shape_t> shapes;
    for (int i = 1; i <= p.num_constants; ++i) {
      const tensor* t = ctx.value(static_cast<size_t>(i));
      if (!t)
        return ctx.fail(error_code::unsupported,
                        "input " + std::to_string(i) + " is not a constant");
      std::vector<float> f(static_cast<size_t>(t->elements()));
      for (int64_t e = 0; e < t->elements(); ++e)
        f[static_cast<size_t>(e)] = static_cast<float>(t->value_as_double(e));
      k->constants_.push_back(std::move(f));
      shapes.push_back(t->shape());
    }
    k->layout_ = merge_fused_elementwise_layout(p.shape, shapes);
    k->total_ = 1;
    for (int64_t d : p.shape) k->total_ *= d;
    k->in_size_ = static_cast<int64_t>(dtype_size(p.input_type));
    k->out_size_ = static_cast<int64_t>(dtype_size(p.output_type));
    k->program_ = std::move(p);
    return std::unique_ptr<kernel>(std::move(k));
  }

  status compute(kernel_run_context& ctx) override {
    const auto* x = static_cast<const char*>(ctx.inputs[0].raw());
    auto* y = static_cast<char*>(ctx.outputs[0].raw());
    const bool costly =
        std::any_of(program_.steps.begin(), program_.steps.end(),
                    [](const ew_step& s) { return s.op == ew_op::sigmoid || s.op == ew_op::tanh; });
    parallel_for(total_, costly ? costly_grain : cheap_grain,
                 [&](int64_t begin, int64_t end) { run_range(x, y, begin, end); });
    return status::ok();
  }

  /// Same shape and one read per element before its write: Y may take X's storage when the
  /// element sizes agree.
  std::vector<std::pair<int, int>> inplace_pairs() const override {
    if (in_size_ == out_size_) return {{0, 0}};
    return {};
  }
  bool reads_constant_input(int i) const override { return i == 0; }

 private:
  fused_elementwise_kernel() = default;

  void run_range(const char* x, char* y, int64_t begin, int64_t end) const {
    const int rank = static_cast<int>(layout_.dims.size());
    const size_t nc = constants_.size();
    const int64_t inner = layout_.dims.back();
    std::array<int64_t, fused_elementwise_max_constants> row{};
    std::array<int64_t, fused_elementwise_max_rank> index{};  // merged rank <= Y's rank
    std::array<float, block> v;
    int64_t rest = begin / inner;
    int64_t col = begin % inner;
    for (int d = rank - 2; d >= 0; --d) {
      index[static_cast<size_t>(d)] = rest % layout_.dims[static_cast<size_t>(d)];
      rest /= layout_.dims[static_cast<size_t>(d)];
      for (size_t c = 0; c < nc; ++c)
        row[c] += index[static_cast<size_t>(d)] * layout_.strides[c][static_cast<size_t>(d)];
    }
    int64_t pos = begin;
    while (pos < end) {
      const int64_t len = std::min(inner - col, end - pos);
      for (int64_t done = 0; done < len; done += block) {
        const int64_t n = std::min(block, len - done);
        load_block(program_.input_type, x + (pos + done) * in_size_, n, v.data());
        for (const ew_step& s : program_.steps) {
          const float* c = nullptr;
          int64_t cs = 0;
          if (s.operand > 0) {
            const size_t ci = static_cast<size_t>(s.operand - 1);
            cs = layout_.strides[ci].back();
            c = constants_[ci].data() + row[ci] + (col + done) * cs;
          }
          run_step(s, v.data(), n, c, cs);
        }
        store_block(program_.output_type, v.data(), n, y + (pos + done) * out_size_);
      }
      pos += len;
      col = 0;
      for (int d = rank - 2; d >= 0; --d) {  // odometer over the outer dims
        const auto du = static_cast<size_t>(d);
        for (size_t c = 0; c < nc; ++c) row[c] += layout_.strides[c][du];
        if (++index[du] < layout_.dims[du]) break;
        for (size_t c = 0; c < nc; ++c) row[c] -= layout_.strides[c][du] * layout_.dims[du];
        index[du] = 0;
      }
    }
  }

  fused_elementwise_program program_;
  std::vector<std::vector<float>> constants_;  // inputs 1..n as float, row-major in their shapes
  fused_elementwise_layout layout_;
  int64_t total_ = 0;
  int64_t in_size_ = 0;   // bytes per X element
  int64_t out_size_ = 0;  // bytes per Y element
};

}  // namespace

void register_fused_elementwise(kernel_registry& r) {
  r.add({"troupe",
         "FusedElementwise",
         backend::cpu,
         {dtype::f32, dtype::f16, dtype::bf16, dtype::u8, dtype::i8, dtype::u16, dtype::i16},
         0,
         {},
         &fused_elementwise_kernel::create});
}

}  // namespace troupe::kernels::cpu
