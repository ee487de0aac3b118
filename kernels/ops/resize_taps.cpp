// Resize's tap tables (see resize_taps.hpp).
#include "kernels/ops/resize_taps.hpp"

#include <cmath>

namespace troupe::kernels {
namespace {

double original_coordinate(const resize_params& p, size_t axis, int64_t x, int64_t in_len,
                           int64_t out_len) {
  const double scale = p.scales[axis];
  const double ow = p.out_width[axis];
  const double xr = static_cast<double>(x);
  const double in = static_cast<double>(in_len);
  switch (p.coord) {
    case resize_coord::half_pixel:
      return (xr + 0.5) / scale - 0.5;
    case resize_coord::half_pixel_symmetric: {
      const double adjustment = static_cast<double>(out_len) / ow;
      const double offset = in / 2 * (1 - adjustment);
      return offset + (xr + 0.5) / scale - 0.5;
    }
    case resize_coord::pytorch_half_pixel:
      return out_len > 1 ? (xr + 0.5) / scale - 0.5 : 0.0;
    case resize_coord::align_corners:
      return ow == 1 ? 0.0 : xr * (in - 1) / (ow - 1);
    case resize_coord::asymmetric:
      return xr / scale;
    case resize_coord::tf_half_pixel_for_nn:
      return (xr + 0.5) / scale;
    case resize_coord::tf_crop_and_resize: {
      const double s = p.roi_start[axis], e = p.roi_end[axis];
      const double base = ow == 1 ? (e - s) * (in - 1) / 2 : xr * (e - s) * (in - 1) / (ow - 1);
      return base + s * (in - 1);
    }
  }
  return 0;
}

double cubic_weight(double x, double a) {
  x = std::fabs(x);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

int64_t nearest_index(const resize_params& p, double x, double scale) {
  const double f = std::floor(x);
  const double t = x - f;
  switch (p.rounding) {
    case nearest_rounding::round_prefer_floor:
      return static_cast<int64_t>(t <= 0.5 ? f : f + 1);
    case nearest_rounding::round_prefer_ceil:
      return static_cast<int64_t>(t < 0.5 ? f : f + 1);
    case nearest_rounding::floor:
      return static_cast<int64_t>(f);
    case nearest_rounding::ceil:
      return static_cast<int64_t>(std::ceil(x));
    case nearest_rounding::simple:
      return static_cast<int64_t>(scale < 1 ? std::ceil(x) : f);
  }
  return 0;
}

}  // namespace

axis_taps make_resize_axis(const resize_params& p, size_t axis, int64_t in_len, int64_t out_len,
                           int64_t stride) {
  axis_taps a;
  const double scale = p.scales[axis];
  const bool crop = p.coord == resize_coord::tf_crop_and_resize;
  const bool identity = std::fabs(scale - 1.0) <= 1e-9 && in_len == out_len &&
                        (!crop || (p.roi_start[axis] == 0.0 && p.roi_end[axis] == 1.0));
  a.outside.assign(static_cast<size_t>(out_len), 0);
  if (identity || p.mode == resize_mode::nearest) {
    a.k = 1;
    for (int64_t x = 0; x < out_len; ++x) {
      int64_t i = x;
      if (!identity) {
        const double xo = original_coordinate(p, axis, x, in_len, out_len);
        if (crop && (xo < 0 || xo > static_cast<double>(in_len - 1)))
          a.outside[static_cast<size_t>(x)] = 1;
        i = std::clamp<int64_t>(nearest_index(p, std::clamp(xo, -1e15, 1e15), scale), 0,
                                in_len - 1);
      }
      a.offset.push_back(i * stride);
      a.weight.push_back(1.0f);
    }
  } else {
    const bool cubic = p.mode == resize_mode::cubic;
    const double s = p.antialias ? std::min(scale, 1.0) : 1.0;
    const double support = cubic ? 2.0 : 1.0;
    const int64_t start = static_cast<int64_t>(std::floor(-support / s)) + 1;
    a.k = 2 - 2 * start;
    std::vector<double> w(static_cast<size_t>(a.k));
    for (int64_t x = 0; x < out_len; ++x) {
      const double xo = std::clamp(original_coordinate(p, axis, x, in_len, out_len), -1e15, 1e15);
      if (crop && (xo < 0 || xo > static_cast<double>(in_len - 1)))
        a.outside[static_cast<size_t>(x)] = 1;
      const double f = std::floor(xo);
      const double t = xo - f;
      double sum = 0;
      for (int64_t j = 0; j < a.k; ++j) {
        const double d = (static_cast<double>(start + j) - t) * s;
        w[static_cast<size_t>(j)] =
            cubic ? cubic_weight(d, p.cubic_coeff_a) : std::max(0.0, 1 - std::fabs(d));
        if (p.exclude_outside) {
          const int64_t i = static_cast<int64_t>(f) + start + j;
          if (i < 0 || i >= in_len) w[static_cast<size_t>(j)] = 0;
        }
        sum += w[static_cast<size_t>(j)];
      }
      // Antialias filters are normalized by construction; exclude_outside renormalizes.
      const bool normalize = (p.antialias && s < 1.0) || p.exclude_outside;
      for (int64_t j = 0; j < a.k; ++j) {
        const int64_t i = std::clamp<int64_t>(static_cast<int64_t>(f) + start + j, 0, in_len - 1);
        a.offset.push_back(i * stride);
        a.weight.push_back(static_cast<float>(
            normalize && sum != 0 ? w[static_cast<size_t>(j)] / sum : w[static_cast<size_t>(j)]));
      }
    }
  }
  for (uint8_t o : a.outside) a.any_outside |= o != 0;
  return a;
}

bool resize_axis_is_identity(const axis_taps& a, int64_t in_len, int64_t out_len, int64_t stride) {
  if (in_len != out_len || a.k != 1 || a.any_outside) return false;
  for (int64_t x = 0; x < in_len; ++x) {
    if (a.offset[static_cast<size_t>(x)] != x * stride) return false;
  }
  return true;
}

}  // namespace troupe::kernels
