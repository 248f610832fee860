// Power cuts at every operation of a manager's series of saves.
//
// The series (one rank here; two ranks as processes in
// power_cut_multiproc_test.cpp): run 1 saves steps 1-4 with keep.last = 2
// (retention deletes 1 and 2); then step 4's data is damaged on disk; run 2
// resumes (falls back to 3, moves step_4 aside) and saves 5 and 6
// (retention deletes 3 and the damaged copy). All of it goes through a
// FaultInjectionEnv that cuts the power before operation k, for every k in
// turn until a series runs to its end; then the Env "reboots" (undoes what
// was not durable) and the run directory must hold:
//   - every checkpoint reported committed before the cut (by a post-save
//     callback), loadable and bit-exact, unless keep.last newer ones are
//     there (retention may have deleted it): else lost_committed;
//   - no step directory that list_committed() calls committed but that
//     does not load bit-exact (the damaged step 4 excepted, which resume
//     moves aside): else false_committed;
//   - and resume() picks the newest loadable one.
// Each cut is rebooted twice over: dropping everything not durable, and
// dropping a random part (seed = k). The test prints
// `power_cuts=N lost_committed=0 false_committed=0 distinct_states=M`.
// Background threads (async saves, retention's deletions) make the order of
// operations vary between runs; a failure prints what reruns it:
// DCP_POWER_CUT_AT=k (and the mode and seed).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <set>
#include <sstream>

#include "common/test_util.h"
#include "dcp/checkpoint.h"
#include "dcp/fault_injection_env.h"
#include "dcp/manager/manager.h"
#include "power_cut_series.h"

namespace dcp {
namespace manager {
namespace {

namespace fs = std::filesystem;
using namespace power_cut;

struct Totals {
  uint64_t cuts = 0, lost = 0, false_committed = 0;
  std::set<size_t> states;
};

void run_cuts(bool async, Totals& totals) {
  const char* only = std::getenv("DCP_POWER_CUT_AT");
  const uint64_t first = only ? std::strtoull(only, nullptr, 10) : 0;
  for (uint64_t k = first;; ++k) {
    for (RebootMode mode : {RebootMode::kDropAll, RebootMode::kRandom}) {
      testing::TempDir tmp;
      const std::string dir = tmp.sub("run");
      FaultInjectionEnv env(posix_env(), tmp.sub("trash"));
      env.set_forward_syncs(false);
      env.power_cut_at(k);
      const Outcome out = run_series(dir, &env, async, 0);
      if (!env.is_cut()) {
        ASSERT_TRUE(out.error.empty()) << out.error;
        ASSERT_GT(k, 50u) << "the series has too few operations";
        return;  // the series ran to its end: every k was cut
      }
      const std::string rerun = "DCP_POWER_CUT_AT=" + std::to_string(k) +
                                " async=" + (async ? "1" : "0") +
                                " mode=" + (mode == RebootMode::kDropAll ? "drop_all" : "random") +
                                " seed=" + std::to_string(k) + " cut at: " + env.operation(k);
      std::string trace;
      for (const auto& rec : env.records())
        trace += std::to_string(rec.index) + " " + fault_op_name(rec.op) + " " + rec.path + "\n";
      env.reboot(mode, k);
      const Check c = check_after_reboot(dir, out);
      totals.cuts++;
      totals.lost += c.lost_committed;
      totals.false_committed += c.false_committed;
      totals.states.insert(c.state_hash);
      EXPECT_EQ(c.lost_committed, 0u) << rerun << "\n" << c.report;
      EXPECT_EQ(c.false_committed, 0u) << rerun << "\n" << c.report;
      EXPECT_TRUE(c.resume_ok) << rerun << "\n" << c.report;
      if (::testing::Test::HasFailure()) {
        if (std::getenv("DCP_POWER_CUT_TRACE")) std::cout << trace;
        return;
      }
    }
    if (only) return;
  }
}

class PowerCutTest : public ::testing::TestWithParam<bool> {};

TEST_P(PowerCutTest, EveryCommittedCheckpointSurvivesACutAtEveryOperation) {
  Totals t;
  run_cuts(GetParam(), t);
  std::cout << (GetParam() ? "async" : "sync") << ": power_cuts=" << t.cuts
            << " lost_committed=" << t.lost << " false_committed=" << t.false_committed
            << " distinct_states=" << t.states.size() << std::endl;
  if (!std::getenv("DCP_POWER_CUT_AT")) EXPECT_GT(t.cuts, 100u);
}

INSTANTIATE_TEST_SUITE_P(Modes, PowerCutTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

// The test can fail: without fsync (storage.fsync: false) the same cuts lose
// checkpoints that were reported committed.
TEST(PowerCutWithoutFsync, LosesReportedCheckpoints) {
  uint64_t lost = 0, cuts = 0;
  for (uint64_t k = 0; k < 2000 && lost == 0; k += 7) {
    testing::TempDir tmp;
    const std::string dir = tmp.sub("run");
    FaultInjectionEnv env(posix_env(), tmp.sub("trash"));
    env.power_cut_at(k);
    const Outcome out = run_series(dir, &env, false, 0, /*fsync=*/false);
    if (!env.is_cut()) break;
    env.reboot();
    lost += check_after_reboot(dir, out).lost_committed;
    ++cuts;
  }
  std::cout << "without fsync: power_cuts=" << cuts << " lost_committed=" << lost << std::endl;
  EXPECT_GT(lost, 0u);
}

}  // namespace
}  // namespace manager
}  // namespace dcp
