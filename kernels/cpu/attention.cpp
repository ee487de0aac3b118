// CPU troupe.Attention (kernels/ops/attention_schemas.cpp): float32, exact softmax per query row.
//
// Work is split into tasks of (batch, head, block of up to 32 query rows). A task first copies
// its head's keys transposed into the thread's workspace (Kt, D x Skv), so that the scores of a
// query row are D vectorised sweeps s += q[d] * Kt[d, :] over contiguous keys; four rows share
// each sweep's loads. The row's softmax then runs over the contiguous scores, and the output row
// is the sum of value rows weighted by the probabilities, again vectorised along D. Q, K, V and
// Y are read and written in place through the geometry's strides: no transposed copies of the
// operands beyond one head's keys.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/ew_common.hpp"
#include "kernels/cpu/vec_math.hpp"
#include "kernels/ops/attention_params.hpp"

namespace troupe::kernels::cpu {
namespace {

constexpr int64_t kRowsPerTask = 32;
constexpr int kRowsPerSweep = 4;

struct attention_task_args {
  const attention_geometry* g;
  const float* q;  // operand bases, offsets applied
  const float* k;
  const float* v;
  const float* mask;  // null without a mask
  float* y;
  float* kt;      // D x Skv workspace
  float* scores;  // kRowsPerSweep x Skv workspace
};

/// One task: rows [row_begin, row_end) of head h in batch b.
template <class Unused = void>
TROUPE_SIMD_CLONES void attention_task_clones(const attention_task_args& a, int64_t b, int64_t h,
                                              int64_t row_begin, int64_t row_end) {
  const attention_geometry& g = *a.g;
  const int64_t n = g.kv_len, dim = g.head_dim;
  const float* kb = a.k + b * g.k.batch_stride + h * g.k.head_stride;
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = kb + j * g.k.seq_stride;
    for (int64_t d = 0; d < dim; ++d) a.kt[d * n + j] = kj[d];
  }
  const float* vb = a.v + b * g.v.batch_stride + h * g.v.head_stride;
  for (int64_t i0 = row_begin; i0 < row_end; i0 += kRowsPerSweep) {
    const int rows = static_cast<int>(std::min<int64_t>(kRowsPerSweep, row_end - i0));
    const float* qr[kRowsPerSweep];
    float* sr[kRowsPerSweep];
    for (int r = 0; r < kRowsPerSweep; ++r) {
      // Rows past the block repeat its last row: computed, never stored.
      const int64_t i = i0 + std::min(r, rows - 1);
      qr[r] = a.q + b * g.q.batch_stride + i * g.q.seq_stride + h * g.q.head_stride;
      sr[r] = a.scores + r * n;
    }
    float* s0 = sr[0];
    float* s1 = sr[1];
    float* s2 = sr[2];
    float* s3 = sr[3];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) s0[j] = s1[j] = s2[j] = s3[j] = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      const float* kd = a.kt + d * n;
      const float q0 = qr[0][d], q1 = qr[1][d], q2 = qr[2][d], q3 = qr[3][d];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float kv = kd[j];
        s0[j] += q0 * kv;
        s1[j] += q1 * kv;
        s2[j] += q2 * kv;
        s3[j] += q3 * kv;
      }
    }
    for (int r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      float* s = sr[r];
      const float scale = g.scale;
      if (a.mask) {
        const float* m =
            a.mask + b * g.mask_strides[0] + h * g.mask_strides[1] + i * g.mask_strides[2];
        const int64_t mk = g.mask_strides[3];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) s[j] = s[j] * scale + m[j * mk];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) s[j] *= scale;
      }
      float mx = -std::numeric_limits<float>::infinity();
      bool nan = false;
      for (int64_t j = 0; j < n; ++j) {
        nan |= s[j] != s[j];
        mx = std::max(mx, s[j]);
      }
      if (nan) mx = std::numeric_limits<float>::quiet_NaN();  // propagates as Softmax does
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) {
        const float e = vm::exp_neg(s[j] - mx);
        s[j] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
      float* y = a.y + b * g.y.batch_stride + i * g.y.seq_stride + h * g.y.head_stride;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) y[d] = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        const float p = s[j] * inv;
        const float* vj = vb + j * g.v.seq_stride;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) y[d] += p * vj[d];
      }
    }
  }
}

class attention_kernel final : public kernel {
 public:
  static expected<std::unique_ptr<kernel>> create(const kernel_create_context& c) {
    TROUPE_ASSIGN_OR_RETURN(attention_geometry g, resolve_attention(c.node, c.inputs));
    if (g.type != dtype::f32) {
      return c.fail(error_code::unsupported, "the cpu backend runs troupe.Attention in float32");
    }
    auto k = std::unique_ptr<attention_kernel>(new attention_kernel());
    k->g_ = g;
    // The team size is fixed here so that the workspace has one slice per thread.
    k->threads_ = std::max(1, omp_get_max_threads());
    k->per_thread_floats_ = (g.head_dim + kRowsPerSweep) * g.kv_len + 16;  // + 64 bytes apart
    return std::unique_ptr<kernel>(std::move(k));
  }

  size_t workspace_bytes() const override {
    return static_cast<size_t>(threads_) * static_cast<size_t>(per_thread_floats_) * sizeof(float);
  }

  status compute(kernel_run_context& ctx) override {
    const attention_geometry& g = g_;
    if (g.batch == 0 || g.q_len == 0 || g.heads == 0) return status::ok();
    const float* base_q = ctx.inputs[0].data<float>();
    attention_task_args args{};
    args.g = &g_;
    args.q = base_q + g.q.offset;
    args.k = (g.packed ? base_q : ctx.inputs[1].data<float>()) + g.k.offset;
    args.v = (g.packed ? base_q : ctx.inputs[2].data<float>()) + g.v.offset;
    args.mask = g.has_mask ? ctx.inputs[3].data<float>() : nullptr;
    args.y = ctx.outputs[0].data<float>();
    if (g.kv_len == 0) {
      // Softmax over no keys and a product with no values: Y is all zeros, as the unfused graph.
      std::fill(args.y, args.y + ctx.outputs[0].elements(), 0.0f);
      return status::ok();
    }
    const int64_t blocks = (g.q_len + kRowsPerTask - 1) / kRowsPerTask;
    const int64_t tasks = g.batch * g.heads * blocks;
    const int64_t flops_per_task = 4 * std::min(kRowsPerTask, g.q_len) * g.kv_len * g.head_dim;
    int team = omp_in_parallel() ? 1 : threads_;
    team = static_cast<int>(std::min<int64_t>(team, tasks));
    if (flops_per_task * tasks < 200000) team = 1;  // waking the team costs more
    float* workspace = static_cast<float*>(ctx.workspace);
#pragma omp parallel num_threads(team)
    {
      attention_task_args mine = args;
      mine.kt = workspace + static_cast<int64_t>(omp_get_thread_num()) * per_thread_floats_;
      mine.scores = mine.kt + g.head_dim * g.kv_len;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t blk = t % blocks;
        const int64_t bh = t / blocks;
        const int64_t row_begin = blk * kRowsPerTask;
        attention_task_clones(mine, bh / g.heads, bh % g.heads, row_begin,
                              std::min(g.q_len, row_begin + kRowsPerTask));
      }
    }
    return status::ok();
  }

 private:
  attention_kernel() = default;
  attention_geometry g_;
  int threads_ = 1;
  int64_t per_thread_floats_ = 0;
};

}  // namespace

void register_attention(kernel_registry& r) {
  r.add({"troupe", "Attention", backend::cpu, {dtype::f32}, 0, {}, &attention_kernel::create});
}

}  // namespace troupe::kernels::cpu
