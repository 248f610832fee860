// Power cuts at every operation of the coordinator, two ranks as real
// processes over Gloo, each with its own FaultInjectionEnv (its own machine:
// what it made is durable only by its own syncs). The series and the checks
// are power_cut_series.h's.
//
// For each k, in one pair of processes (a process per k would cost seconds):
//   1. both ranks run the series; rank 0's Env cuts before its operation k
//      and then creates <base>/cut; rank 1's Env cuts itself at its next
//      operation once that file exists (and at the end if it did none);
//   2. rank 0 reboots, then rank 1 (barriers between);
//   3. rank 0 checks the run directory and resumes (one process, no faults);
//   4. the next k, until a series runs to its end uncut.
// Rank 0 prints `power_cuts=N lost_committed=0 false_committed=0
// distinct_states=M`; a failing cut prints DCP_POWER_CUT_AT=k to rerun it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <set>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/fault_injection_env.h"
#include "power_cut_series.h"

namespace dcp {
namespace manager {
namespace {

namespace fs = std::filesystem;
using namespace power_cut;

DCP_REGISTER_WORKER(power_cut_two_ranks) {
  const std::string base = args.at(0);
  const bool async = args.at(1) == "1";
  const uint64_t first = std::stoull(args.at(2));
  const bool only = args.at(3) == "1";
  const int rank = ctx.rank();
  auto coll = ctx.collectives(std::chrono::seconds(10));
  auto async_coll = ctx.new_collectives("async", std::chrono::seconds(10));
  auto control = ctx.new_collectives("control", std::chrono::seconds(60));
  const std::string marker = base + "/cut";

  uint64_t cuts = 0, lost = 0, false_committed = 0;
  std::set<size_t> states;
  for (uint64_t k = first;; ++k) {
    const std::string dir = base + "/run";
    FaultInjectionEnv env(posix_env(), base + "/trash" + std::to_string(rank));
    env.set_forward_syncs(false);
    if (rank == 0) {
      env.power_cut_at(k);
      env.set_on_cut([&] { ::close(::open(marker.c_str(), O_CREAT | O_WRONLY, 0644)); });
    } else {
      env.set_before_op([&] {
        if (::access(marker.c_str(), F_OK) == 0) env.power_cut();
      });
    }
    auto agree = [&](bool ok) {
      const auto all = control->gather(ok ? "1" : "0", 0);
      std::string verdict = "1";
      for (const auto& v : all) verdict = v == "1" ? verdict : "0";
      return control->broadcast(verdict, 0) == "1";
    };
    const Outcome out = run_series(dir, &env, async, rank, true, coll, async_coll, agree);
    control->barrier();
    const bool cut = ::access(marker.c_str(), F_OK) == 0;
    if (cut && rank == 1) env.power_cut();
    const RebootMode mode = k % 2 == 0 ? RebootMode::kDropAll : RebootMode::kRandom;
    const std::string trace = env.operation(k);
    for (int r = 0; r < 2; ++r) {
      if (r == rank && cut) env.reboot(mode, k);
      control->barrier();
    }
    bool go_on = false;
    if (rank == 0) {
      if (cut) {
        const Check c = check_after_reboot(dir, out, 2);
        cuts++;
        lost += c.lost_committed;
        false_committed += c.false_committed;
        states.insert(c.state_hash);
        const std::string rerun =
            "DCP_POWER_CUT_AT=" + std::to_string(k) + " async=" + (async ? "1" : "0") +
            " mode=" + (mode == RebootMode::kDropAll ? "drop_all" : "random") +
            " seed=" + std::to_string(k) + " cut at: " + trace;
        EXPECT_EQ(c.lost_committed, 0u) << rerun << "\n" << c.report;
        EXPECT_EQ(c.false_committed, 0u) << rerun << "\n" << c.report;
        EXPECT_TRUE(c.resume_ok) << rerun << "\n" << c.report;
        go_on = !only && !::testing::Test::HasFailure();
      } else {
        EXPECT_TRUE(out.error.empty()) << out.error;
      }
      fs::remove_all(dir);
      fs::remove(marker);
    }
    const bool next = control->broadcast(go_on ? "1" : "0", 0) == "1";
    if (!next) break;
  }
  if (rank == 0) {
    std::cout << (async ? "async" : "sync") << " two ranks: power_cuts=" << cuts
              << " lost_committed=" << lost << " false_committed=" << false_committed
              << " distinct_states=" << states.size() << std::endl;
    if (!only) EXPECT_GT(cuts, 100u);
  }
  return 0;
}

class PowerCutTwoRanksTest : public ::testing::TestWithParam<bool> {};

TEST_P(PowerCutTwoRanksTest, EveryCommittedCheckpointSurvivesACutAtEveryCoordinatorOperation) {
  testing::TempDir tmp;
  const char* at = std::getenv("DCP_POWER_CUT_AT");
  testing::RunOptions o;
  o.timeout = std::chrono::seconds(280);
  o.pg_timeout = std::chrono::seconds(20);
  o.args = {tmp.path(), GetParam() ? "1" : "0", at ? at : "0", at ? "1" : "0"};
  const auto run = testing::run_ranks(2, "power_cut_two_ranks", o);
  EXPECT_TRUE(run.ok()) << run.summary();
}

INSTANTIATE_TEST_SUITE_P(Modes, PowerCutTwoRanksTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

}  // namespace
}  // namespace manager
}  // namespace dcp
