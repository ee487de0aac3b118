// The CUDA context and memory API: pool statistics, copies, errors.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_backend.hpp"
#include "tests/gpu/gpu_test_util.hpp"

namespace troupe::testing {
namespace {

namespace cuda = kernels::cuda;

TEST(CudaBackend, DeviceAvailableIsStable) {
  // Never crashes, with or without a driver, and gives the same answer twice.
  const bool a = cuda::device_available();
  EXPECT_EQ(a, cuda::device_available());
}

TEST(CudaBackend, BadDeviceIndexIsAnError) {
  TROUPE_REQUIRE_GPU();
  auto c = cuda::create_context(1 << 20);
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message().find("does not exist"), std::string::npos) << c.error().to_string();
}

TEST(CudaBackend, CopiesRoundTripAndPoolCounts) {
  TROUPE_REQUIRE_GPU();
  auto made = cuda::create_context(0);
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  auto& ctx = **made;
  EXPECT_EQ(ctx.kind(), kernels::backend::cuda);
  EXPECT_NE(cuda::stream(ctx), nullptr);
  const size_t n = (size_t{1} << 20) + 3;
  std::vector<uint8_t> host(n), back(n, 0);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<uint8_t>(i * 7 + 1);

  const cuda::pool_stats before = cuda::stats(ctx);
  auto p = cuda::device_malloc(ctx, n);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  ASSERT_NE(*p, nullptr);
  const cuda::pool_stats during = cuda::stats(ctx);
  EXPECT_GE(during.in_use_bytes, before.in_use_bytes + n);
  EXPECT_GE(during.reserved_bytes, during.in_use_bytes);
  EXPECT_GE(during.peak_bytes, during.in_use_bytes);

  ASSERT_TRUE(cuda::copy_to_device(ctx, *p, host.data(), n).is_ok());
  ASSERT_TRUE(cuda::copy_to_host(ctx, back.data(), *p, n).is_ok());
  ASSERT_TRUE(cuda::synchronize(ctx).is_ok());
  EXPECT_EQ(std::memcmp(host.data(), back.data(), n), 0);

  cuda::device_free(ctx, *p);
  ASSERT_TRUE(cuda::synchronize(ctx).is_ok());
  const cuda::pool_stats after = cuda::stats(ctx);
  EXPECT_EQ(after.in_use_bytes, before.in_use_bytes);
  EXPECT_GE(after.peak_bytes, before.in_use_bytes + n);
  // The pool keeps what it reserved (release threshold: everything).
  EXPECT_GE(after.reserved_bytes, n);
}

TEST(CudaBackend, ZeroBytesGiveNull) {
  TROUPE_REQUIRE_GPU();
  auto p = cuda::device_malloc(gpu_context(), 0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(*p, nullptr);
  cuda::device_free(gpu_context(), nullptr);
}

TEST(CudaBackend, ImpossibleAllocationIsOutOfMemory) {
  TROUPE_REQUIRE_GPU();
  auto p = cuda::device_malloc(gpu_context(), size_t{1} << 50);  // 1 PiB
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code(), error_code::out_of_memory) << p.error().to_string();
  EXPECT_TRUE(cuda::synchronize(gpu_context()).is_ok());
}

TEST(CudaBackend, RegistryHasTheCoreOps) {
  const auto& r = kernels::kernel_registry::standard();
  for (const char* op : {"Conv", "MatMul", "Gemm", "Add", "Softmax", "LayerNormalization", "Gather",
                         "Transpose", "MaxPool", "BatchNormalization"}) {
    EXPECT_TRUE(r.has_op(kernels::backend::cuda, "", op)) << op;
  }
  for (const char* op : {"FusedConv", "FusedMatMul", "FusedGemm"}) {
    EXPECT_TRUE(r.has_op(kernels::backend::cuda, "troupe", op)) << op;
  }
}

}  // namespace
}  // namespace troupe::testing
