// Multi-process tests: run a function on N real processes that talk over
// Gloo on loopback.
//
// A test registers workers and runs them:
//
//   #include "common/multiproc.h"
//
//   DCP_REGISTER_WORKER(sum_ranks) {           // in scope: ctx, args
//     auto t = at::full({1}, ctx.rank() + 1, at::kLong);
//     std::vector<at::Tensor> v{t};
//     ctx.process_group()->allreduce(v)->wait();
//     EXPECT_EQ(t.item<int64_t>(), ctx.world_size() * (ctx.world_size() + 1) / 2);
//     return 0;                                 // the process's exit code
//   }
//
//   TEST(Dist, SumRanks) {
//     auto run = dcp::testing::run_ranks(3, "sum_ranks", dcp::testing::RunOptions{});
//     EXPECT_TRUE(run.ok()) << run.summary();
//   }
//
// How it works. run_ranks() starts N processes of this same test binary
// (/proc/self/exe, fork + immediate exec: never a bare fork of a process that
// may already run threads) with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT (a free port) and DCP_WORKER=<name> in their environment. In the
// child, a GoogleTest listener installed by this library sees DCP_WORKER when
// RUN_ALL_TESTS() starts, and instead of running tests it:
//   1. creates a DistContext from the environment (detect_environment()) with
//      RunOptions::pg_timeout,
//   2. calls the worker with it and the RunOptions::args,
//   3. waits (at most pg_timeout) until every rank's worker has returned, so
//      that rank 0, which serves the TCPStore, does not leave early,
//   4. exits with the worker's return value; exit codes below say what else
//      can happen.
// It works with the usual GTest::gtest_main (dcp_add_test); a custom main
// must call RUN_ALL_TESTS() as usual.
//
// Assertions in a worker: EXPECT_* failures make the process exit with
// kExitExpectFailed even if the worker returns 0 (they are printed to the
// captured output). ASSERT_* works only in void helper functions (it returns
// from the function it is in); a worker can also return a non-zero code.
//
// Output: each child's stdout and stderr are captured, printed live to this
// process's stderr prefixed "[rank i] ", and kept in RankResult::output.
//
// Children cannot outlive the test: each gets SIGKILL when the thread that
// started it exits (PR_SET_PDEATHSIG), and all get SIGKILL at the deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dcp/dist/process_group.h"

namespace dcp {
namespace testing {

// Exit codes of a worker process other than the worker's own return value.
constexpr int kExitExpectFailed = 90;  // the worker returned 0 but an EXPECT_* failed
constexpr int kExitWorkerThrew = 91;   // the worker threw (the message is printed)
constexpr int kExitInitFailed = 92;    // DistContext::init threw (the message is printed)
constexpr int kExitNoSuchWorker = 93;  // DCP_WORKER names no registered worker

using WorkerFn = int (*)(dcp::dist::DistContext& ctx, const std::vector<std::string>& args);

// Registers `fn` under `name`; returns true. Aborts on a duplicate name.
// Use DCP_REGISTER_WORKER rather than calling it.
bool register_worker(const char* name, WorkerFn fn);

// Defines a worker: `DCP_REGISTER_WORKER(name) { ... return 0; }`. In the body,
// `ctx` is the process's DistContext and `args` the RunOptions::args.
#define DCP_REGISTER_WORKER(name)                                              \
  static int dcp_worker_##name(::dcp::dist::DistContext& ctx,                  \
                               const std::vector<std::string>& args);          \
  [[maybe_unused]] static const bool dcp_worker_registered_##name =            \
      ::dcp::testing::register_worker(#name, &dcp_worker_##name);              \
  static int dcp_worker_##name([[maybe_unused]] ::dcp::dist::DistContext& ctx, \
                               [[maybe_unused]] const std::vector<std::string>& args)

// In a worker: prints the line "DCP_MARK <tag>" (flushed) that the parent
// watches for; see RunOptions::kill_rank.
void mark(const std::string& tag);

struct RunOptions {
  // Deadline for the whole run. At the deadline every child still running
  // gets SIGKILL and the result says timed_out. Default 30 s.
  std::chrono::seconds timeout{30};
  // ProcessGroupOptions::timeout of the children: rendezvous and each
  // collective. Default 10 s; a test about a dead rank sets a few seconds.
  std::chrono::milliseconds pg_timeout{10000};
  // Passed to every rank's worker as `args`.
  std::vector<std::string> args;
  // Extra environment for every child (set after the harness's own variables,
  // so a test can override e.g. MASTER_ADDR).
  std::map<std::string, std::string> env;
  // Fault injection: SIGKILL rank `kill_rank` (-1: none) `kill_delay` after it
  // printed mark(kill_at_mark) — or after it was started when kill_at_mark is
  // empty. A mark is noticed within milliseconds but asynchronously: the rank
  // runs on meanwhile. To die at an exact point, a worker can raise(SIGKILL).
  int kill_rank = -1;
  std::string kill_at_mark;
  std::chrono::milliseconds kill_delay{0};
  // Start over (once) with another port when rank 0 could not serve the
  // TCPStore because the port was taken between choosing and binding it.
  bool retry_port_conflict = true;
};

struct RankResult {
  int rank = 0;
  pid_t pid = 0;
  int exit_code = -1;                    // when the process exited; -1 when it was killed
  int term_signal = 0;                   // the signal that killed it, 0 when it exited
  bool killed_by_harness = false;        // by kill_rank or at the deadline
  std::string output;                    // stdout and stderr, interleaved as written
  std::chrono::milliseconds elapsed{0};  // from start to exit
  bool ok() const { return exit_code == 0; }
};

struct RunResult {
  std::vector<RankResult> ranks;  // index = rank
  bool timed_out = false;         // the deadline was reached
  int master_port = 0;
  std::chrono::milliseconds elapsed{0};
  // Every rank exited with 0 and the deadline was not reached.
  bool ok() const;
  // One line per rank: pid, how it ended, elapsed; for a failed rank also
  // the tail of its output.
  std::string summary() const;
};

// Runs worker `worker` on `world_size` processes (see the top of this file).
// Blocks until all have ended or the deadline passed. Must not be called from
// a worker process (throws std::logic_error).
RunResult run_ranks(int world_size, const std::string& worker, const RunOptions& options);

// The short form: 0 when every rank exited with 0; otherwise the exit code
// of the lowest failing rank (128 + signal when it was killed, 124 when the
// deadline was reached). Output is in the test log either way.
int run_ranks(int world_size, const std::string& worker, std::chrono::seconds timeout,
              std::vector<std::string> extra_args = {});

// A TCP port that was free a moment ago: a random one below the kernel's
// ephemeral range (so no outgoing connection or bind(0) takes it meanwhile),
// else one the kernel picks. Another harness may still pick the same one:
// RunOptions::retry_port_conflict covers that.
int free_port();

}  // namespace testing
}  // namespace dcp
