// Fault injection's allocation failures (runtime/fault_hooks.hpp) on the CPU backend: the next N
// allocations fail out_of_memory, a model load that meets one fails typed, and the ones after
// succeed. The sticky device error is CUDA only: tests/gpu/test_cuda_sticky_fault.cpp.

#include <gtest/gtest.h>

#include "runtime/device.hpp"
#include "runtime/fault_hooks.hpp"

namespace troupe::runtime {
namespace {

TEST(FaultHooks, TheNextAllocationsFailOutOfMemoryThenPass) {
  auto dev = make_device(kernels::backend::cpu, 0);
  ASSERT_TRUE(dev) << dev.error().to_string();
  fail_next_allocations(kernels::backend::cpu, 3);
  EXPECT_EQ(pending_allocation_failures(kernels::backend::cpu), 3u);
  EXPECT_EQ(pending_allocation_failures(kernels::backend::cuda), 0u) << "counted per backend";
  for (int i = 0; i < 3; ++i) {
    auto p = (*dev)->allocate(4096);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code(), error_code::out_of_memory);
    EXPECT_NE(p.error().message().find("fault injection"), std::string::npos);
  }
  auto p = (*dev)->allocate(4096);
  ASSERT_TRUE(p) << p.error().to_string();
  (*dev)->release(*p);
  EXPECT_EQ((*dev)->reserved_bytes(), 0u) << "a refused allocation holds nothing";
}

TEST(FaultHooks, ZeroClearsWhatIsPending) {
  fail_next_allocations(kernels::backend::cpu, 5);
  fail_next_allocations(kernels::backend::cpu, 0);
  EXPECT_FALSE(take_allocation_failure(kernels::backend::cpu));
}

TEST(FaultHooks, TheStickyErrorNeedsCuda) {
#ifndef TROUPE_HAVE_CUDA
  EXPECT_EQ(raise_sticky_device_error(0).code(), error_code::unsupported);
#else
  GTEST_SKIP() << "tests/gpu/test_cuda_sticky_fault.cpp runs it in a child process";
#endif
}

}  // namespace
}  // namespace troupe::runtime
