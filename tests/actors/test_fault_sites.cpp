// Where the fault plan's faults happen (actors/fault_sites.hpp): which kinds each site asks for, in
// which order, and what the faults that leave a process alive do there.

#include "actors/fault_sites.hpp"

#include <gtest/gtest.h>

#include "runtime/fault_hooks.hpp"

namespace troupe::actors {

using serving::fault_kind;
using serving::fault_plan;
using serving::fault_rule;

namespace {

using namespace std::chrono_literals;

fault_rule rule(fault_kind k, std::string target, uint32_t times = 1) {
  fault_rule r;
  r.kind = k;
  r.target = std::move(target);
  r.times = times;
  if (k == fault_kind::delay || k == fault_kind::slow_link) r.delay = 5ms;
  return r;
}

TEST(fault_sites, sites_are_named_by_worker_index) {
  EXPECT_EQ(worker_site(3), "worker:3");
  EXPECT_EQ(hop_site("worker_link", 0), "worker_link:0");
}

TEST(fault_sites, a_batch_asks_for_the_process_faults_before_the_others) {
  fault_plan plan;
  ASSERT_TRUE(plan.add(rule(fault_kind::fail_allocations, "worker:0")).has_value());
  ASSERT_TRUE(plan.add(rule(fault_kind::segfault, "worker:0")).has_value());
  auto f = take_batch_fault(plan, 0, false);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->kind, fault_kind::segfault);
  f = take_batch_fault(plan, 0, false);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->kind, fault_kind::fail_allocations);
  EXPECT_FALSE(take_batch_fault(plan, 0, false).has_value()) << "both spent";
}

TEST(fault_sites, device_traps_are_asked_for_by_gpu_workers_only) {
  fault_plan plan;
  ASSERT_TRUE(plan.add(rule(fault_kind::device_trap, "worker")).has_value());
  EXPECT_FALSE(take_batch_fault(plan, 1, false).has_value());
  auto f = take_batch_fault(plan, 1, true);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->kind, fault_kind::device_trap);
}

TEST(fault_sites, other_workers_and_hops_are_not_hit) {
  fault_plan plan;
  ASSERT_TRUE(plan.add(rule(fault_kind::abort, "worker:2")).has_value());
  ASSERT_TRUE(plan.add(rule(fault_kind::drop, "worker_link:1")).has_value());
  EXPECT_FALSE(take_batch_fault(plan, 0, true).has_value());
  EXPECT_FALSE(take_message_fault(plan, "worker_link:0").has_value());
  EXPECT_FALSE(take_message_fault(plan, "batcher_worker:1").has_value());
  auto m = take_message_fault(plan, "worker_link:1");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->kind, fault_kind::drop);
}

TEST(fault_sites, a_load_asks_only_for_failed_allocations) {
  fault_plan plan;
  ASSERT_TRUE(plan.add(rule(fault_kind::hang, "worker:0")).has_value());
  EXPECT_FALSE(take_load_fault(plan, 0).has_value());
  ASSERT_TRUE(plan.add(rule(fault_kind::fail_allocations, "worker:0")).has_value());
  EXPECT_TRUE(take_load_fault(plan, 0).has_value());
}

TEST(fault_sites, message_faults_carry_their_delay) {
  fault_plan plan;
  ASSERT_TRUE(plan.add(rule(fault_kind::slow_link, "batcher_worker", 0)).has_value());
  for (int i = 0; i < 3; ++i) {
    auto f = take_message_fault(plan, "batcher_worker:4");
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->kind, fault_kind::slow_link);
    EXPECT_EQ(f->delay, 5ms);
  }
}

TEST(fault_sites, failed_allocations_are_armed_on_the_backend) {
  runtime::fail_next_allocations(kernels::backend::cpu, 0);
  injected_fault f{fault_kind::fail_allocations, 0ms, 3};
  EXPECT_TRUE(carry_out(f, kernels::backend::cpu, 0, 1ms).is_ok());
  EXPECT_EQ(runtime::pending_allocation_failures(kernels::backend::cpu), 3u);
  runtime::fail_next_allocations(kernels::backend::cpu, 0);
}

TEST(fault_sites, a_hang_lasts_its_delay_or_the_bound) {
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(carry_out({fault_kind::hang, 20ms, 1}, kernels::backend::cpu, 0, 1h).is_ok());
  EXPECT_TRUE(carry_out({fault_kind::hang, 0ms, 1}, kernels::backend::cpu, 0, 10ms).is_ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
}

TEST(fault_sites, a_device_trap_without_cuda_is_unsupported) {
#ifndef TROUPE_HAVE_CUDA
  EXPECT_EQ(carry_out({fault_kind::device_trap, 0ms, 1}, kernels::backend::cpu, 0, 1ms).code(),
            error_code::unsupported);
#else
  GTEST_SKIP() << "a real trap: tests/gpu/test_cuda_sticky_fault.cpp runs it in a child process";
#endif
}

TEST(fault_sites, an_abort_ends_the_process) {
  EXPECT_DEATH((void)carry_out({fault_kind::abort, 0ms, 1}, kernels::backend::cpu, 0, 1ms), "");
  EXPECT_DEATH((void)carry_out({fault_kind::segfault, 0ms, 1}, kernels::backend::cpu, 0, 1ms), "");
}

}  // namespace
}  // namespace troupe::actors
