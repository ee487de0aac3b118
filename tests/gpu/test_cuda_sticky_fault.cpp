// Fault injection's sticky device error (runtime/fault_hooks.hpp): a trap kernel leaves the
// process's CUDA contexts on the device unusable, which is why a worker that hits one must be a
// process of its own. The trap runs in a forked child (the parent has not touched CUDA: a child
// cannot use a context its parent created), which reports by its exit code. Alone in its binary:
// the trap is an error compute-sanitizer reports, so scripts/gpu-host.sh leaves it out of memcheck.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "kernels/cuda/cuda_backend.hpp"
#include "runtime/device.hpp"
#include "runtime/fault_hooks.hpp"

namespace troupe::runtime {
namespace {

constexpr int kNoDevice = 77;

/// The child: 0 when the trap failed the device as expected and left it failed.
int trap_and_check() {
  if (!kernels::cuda::device_available()) return kNoDevice;
  auto before = make_device(kernels::backend::cuda, 0);
  if (!before) return 10;
  auto p = (*before)->allocate(1 << 20);
  if (!p) return 11;
  (*before)->release(*p);
  const status trapped = raise_sticky_device_error(0);
  if (trapped.code() != error_code::device_error) {
    std::fprintf(stderr, "trap: %s\n", trapped.to_string().c_str());
    return 12;
  }
  // Sticky: the existing context and any new one fail from now on.
  if ((*before)->synchronize().is_ok()) return 13;
  auto after = make_device(kernels::backend::cuda, 0);
  if (after) {
    auto q = (*after)->allocate(1 << 20);
    if (q && (*after)->synchronize().is_ok()) return 14;
  }
  return 0;
}

TEST(CudaStickyFault, ATrapLeavesTheDeviceFailedForTheProcess) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(trap_and_check());
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  if (WEXITSTATUS(status) == kNoDevice) GTEST_SKIP() << "no CUDA device";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see trap_and_check's return codes";
}

}  // namespace
}  // namespace troupe::runtime
