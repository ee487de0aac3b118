// Fault injection's allocation failures on the CUDA backend (runtime/fault_hooks.hpp): the next N
// device allocations fail out_of_memory, the ones after succeed, and the device stays usable.

#include <gtest/gtest.h>

#include "runtime/device.hpp"
#include "runtime/fault_hooks.hpp"
#include "tests/gpu/gpu_test_util.hpp"

namespace troupe::runtime {
namespace {

TEST(CudaFaultHooks, InjectedAllocationFailuresAreOutOfMemoryAndPass) {
  TROUPE_REQUIRE_GPU();
  auto dev = make_device(kernels::backend::cuda, 0);
  ASSERT_TRUE(dev) << dev.error().to_string();
  fail_next_allocations(kernels::backend::cuda, 2);
  for (int i = 0; i < 2; ++i) {
    auto p = (*dev)->allocate(1 << 20);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code(), error_code::out_of_memory) << p.error().to_string();
  }
  EXPECT_EQ(pending_allocation_failures(kernels::backend::cuda), 0u);
  auto p = (*dev)->allocate(1 << 20);
  ASSERT_TRUE(p) << p.error().to_string();
  (*dev)->release(*p);
  EXPECT_TRUE((*dev)->synchronize().is_ok()) << "an injected OOM leaves the device usable";
}

}  // namespace
}  // namespace troupe::runtime
