// The harness itself: exit codes, failed expectations, exceptions, output
// capture, arguments, the deadline, the kill option, and its guards.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "common/multiproc.h"

namespace {

using dcp::testing::RunOptions;
using dcp::testing::RunResult;
using std::chrono::milliseconds;
using std::chrono::seconds;

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// Rank 0 succeeds, rank 1 returns 7, rank 2 fails an EXPECT, rank 3 throws.
DCP_REGISTER_WORKER(report) {
  std::string joined;
  for (const auto& a : args) joined += (joined.empty() ? "" : ",") + a;
  const char* extra = std::getenv("DCP_TEST_EXTRA");
  std::printf("hello from rank %d of %d args=%s extra=%s\n", ctx.rank(), ctx.world_size(),
              joined.c_str(), extra ? extra : "(unset)");
  std::fprintf(stderr, "stderr of rank %d\n", ctx.rank());
  switch (ctx.rank()) {
    case 1:
      return 7;
    case 2:
      EXPECT_EQ(ctx.rank(), 12345) << "an expectation that fails on purpose";
      return 0;
    case 3:
      throw std::runtime_error("boom from rank 3");
    default:
      return 0;
  }
}

TEST(MultiprocHarness, ExitCodesOutputAndArguments) {
  RunOptions options;
  options.args = {"alpha", "beta gamma"};
  options.env = {{"DCP_TEST_EXTRA", "xyz"}};
  const RunResult run = dcp::testing::run_ranks(4, "report", options);
  ASSERT_EQ(run.ranks.size(), 4u);
  EXPECT_FALSE(run.ok());
  EXPECT_FALSE(run.timed_out);
  for (const auto& r : run.ranks) {
    EXPECT_TRUE(contains(r.output, "hello from rank " + std::to_string(r.rank) +
                                       " of 4 args=alpha,beta gamma extra=xyz"))
        << r.output;
    EXPECT_TRUE(contains(r.output, "stderr of rank " + std::to_string(r.rank))) << r.output;
    EXPECT_GT(r.pid, 0);
    EXPECT_EQ(r.term_signal, 0);
  }
  EXPECT_EQ(run.ranks[0].exit_code, 0);
  EXPECT_EQ(run.ranks[1].exit_code, 7);
  EXPECT_EQ(run.ranks[2].exit_code, dcp::testing::kExitExpectFailed);
  EXPECT_TRUE(contains(run.ranks[2].output, "an expectation that fails on purpose"))
      << run.ranks[2].output;
  EXPECT_EQ(run.ranks[3].exit_code, dcp::testing::kExitWorkerThrew);
  EXPECT_TRUE(contains(run.ranks[3].output, "boom from rank 3")) << run.ranks[3].output;
  const std::string summary = run.summary();
  EXPECT_TRUE(contains(summary, "rank 1 (pid ")) << summary;
  EXPECT_TRUE(contains(summary, "exit 7")) << summary;
  EXPECT_TRUE(contains(summary, "boom from rank 3")) << summary;
}

TEST(MultiprocHarness, ShortFormReturnsTheFirstFailure) {
  EXPECT_EQ(dcp::testing::run_ranks(2, "report", seconds(30), {"a"}), 7);
}

TEST(MultiprocHarness, UnknownWorker) {
  const RunResult run = dcp::testing::run_ranks(1, "no_such_worker", RunOptions{});
  ASSERT_EQ(run.ranks.size(), 1u);
  EXPECT_EQ(run.ranks[0].exit_code, dcp::testing::kExitNoSuchWorker);
  EXPECT_TRUE(contains(run.ranks[0].output, "'no_such_worker' is not a registered worker"))
      << run.ranks[0].output;
  EXPECT_TRUE(contains(run.ranks[0].output, " report")) << run.ranks[0].output;
}

DCP_REGISTER_WORKER(sleepy) {
  dcp::testing::mark("asleep");
  std::this_thread::sleep_for(seconds(60));
  return 0;
}

// The deadline kills every rank; kill_rank without a mark kills one early.
TEST(MultiprocHarness, DeadlineAndTimedKill) {
  RunOptions options;
  options.timeout = seconds(2);
  options.kill_rank = 1;
  options.kill_delay = milliseconds(200);
  const auto start = std::chrono::steady_clock::now();
  const RunResult run = dcp::testing::run_ranks(2, "sleepy", options);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(run.timed_out);
  EXPECT_FALSE(run.ok());
  EXPECT_GE(took, seconds(2));
  EXPECT_LT(took, seconds(7));
  ASSERT_EQ(run.ranks.size(), 2u);
  for (const auto& r : run.ranks) {
    EXPECT_EQ(r.term_signal, SIGKILL);
    EXPECT_TRUE(r.killed_by_harness);
  }
  EXPECT_LT(run.ranks[1].elapsed, milliseconds(2000));
  EXPECT_GE(run.ranks[0].elapsed, seconds(2));
  EXPECT_TRUE(contains(run.summary(), "DEADLINE")) << run.summary();
}

// kill_at_mark kills kill_rank when it prints the mark; rank 1 prints the
// same mark and lives on until the deadline.
TEST(MultiprocHarness, KillAtMarkOnlyThatRank) {
  RunOptions options;
  options.timeout = seconds(5);  // both ranks start (load LibTorch) first, on a busy machine too
  options.kill_rank = 0;
  options.kill_at_mark = "asleep";
  options.kill_delay = milliseconds(100);
  const RunResult run = dcp::testing::run_ranks(2, "sleepy", options);
  ASSERT_EQ(run.ranks.size(), 2u);
  EXPECT_EQ(run.ranks[0].term_signal, SIGKILL);
  EXPECT_TRUE(contains(run.ranks[0].output, "DCP_MARK asleep")) << run.ranks[0].output;
  EXPECT_TRUE(contains(run.ranks[1].output, "DCP_MARK asleep")) << run.ranks[1].output;
  EXPECT_LT(run.ranks[0].elapsed, run.ranks[1].elapsed) << run.summary();
  EXPECT_GE(run.ranks[1].elapsed, seconds(5)) << run.summary();  // only the deadline got it
  EXPECT_TRUE(run.timed_out);
}

TEST(MultiprocHarness, RefusesToRunInsideAWorker) {
  ::setenv("DCP_WORKER", "report", 1);
  EXPECT_THROW(dcp::testing::run_ranks(2, "report", RunOptions{}), std::logic_error);
  ::unsetenv("DCP_WORKER");
}

TEST(MultiprocHarness, FreePortIsBindable) {
  const int port = dcp::testing::free_port();
  ASSERT_GT(port, 0);
  ASSERT_LT(port, 65536);
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(s);
}

// Started by scripts/launch.sh in tests/integrations/launch_test.sh (not by
// run_ranks): DCP_WORKER=launch_smoke launch.sh 2 -- <this binary>.
DCP_REGISTER_WORKER(launch_smoke) {
  std::vector<at::Tensor> t{at::full({1}, ctx.rank() + 1, at::kLong)};
  ctx.process_group()->allreduce(t)->wait();
  const int64_t n = ctx.world_size();
  std::printf("launch_smoke rank %d of %d local_rank %d source=%s sum=%lld\n", ctx.rank(),
              ctx.world_size(), ctx.environment().local_rank, ctx.environment().source.c_str(),
              static_cast<long long>(t[0].item<int64_t>()));
  return t[0].item<int64_t>() == n * (n + 1) / 2 ? 0 : 1;
}

}  // namespace
