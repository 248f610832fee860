// A forced save (save(N, /*force=*/true)) replaces the committed step_N. The
// checkpoint it replaces must survive every way that save can fail:
//   - every write operation of the forced save failed in turn (ENOSPC, EIO):
//     the old step_N is committed and bit-exact afterwards, and a retry
//     without the fault commits the new values;
//   - a power cut at every operation of the forced save, both reboot modes,
//     then a new manager's start-up: step_N is committed and holds either
//     the old values or (only if the cut came late enough) the new ones, and
//     the new ones whenever save() had returned before the cut.
// Prints `forced_save_faults=N` and `forced_save_power_cuts=N lost=0`.
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>

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

constexpr FaultOp kWriteOps =
    FaultOp::kWrites | FaultOp::kMkdir | FaultOp::kRename | FaultOp::kSyncDir;
constexpr float kNewOffset = 1000.0f;  // the forced save's w: step 2's plus this

// What step_2 holds: "old", "new", or why it is neither.
std::string step2_holds(const std::string& dir) {
  std::string why;
  if (loads_exact(step_dir(dir, 2), 2, 1, why)) return "old";
  try {
    StateDict sd = load_all(step_dir(dir, 2));
    if (at::equal(sd.at("state").dict().at("w").tensor(), SeriesState::w_of(2) + kNewOffset))
      return "new";
    return "neither old nor new values";
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::vector<int64_t> committed_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  for (const auto& c : list_committed(dir)) steps.push_back(c.step);
  return steps;
}

struct ForcedRun {
  testing::TempDir tmp;
  std::string dir = tmp.sub("run");
  FaultInjectionEnv env{posix_env(), tmp.sub("trash")};
  std::shared_ptr<SeriesState> state = std::make_shared<SeriesState>(0);
  std::unique_ptr<CheckpointManager> m;

  explicit ForcedRun(bool async) {
    env.set_forward_syncs(false);
    auto o = series_options(dir, &env, async);
    o.keep.last = 100;
    m = std::make_unique<CheckpointManager>(o);
    m->register_stateful("state", state);
    for (int64_t step : {1, 2}) {
      state->set(step);
      m->save(step);
      m->wait();
    }
    state->set(2);
    state->w = state->w + kNewOffset;
  }
  // The forced save; true when it reported success.
  bool force_save() {
    try {
      m->save(2, /*force=*/true);
      m->wait();
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }
};

class ForcedSaveTest : public ::testing::TestWithParam<bool> {};

TEST_P(ForcedSaveTest, EveryWriteFaultKeepsTheCheckpointItReplaces) {
  const bool async = GetParam();
  uint64_t count = 0;
  {
    ForcedRun r(async);
    r.env.clear_records();
    ASSERT_TRUE(r.force_save());
    for (const auto& rec : r.env.records()) count += any_of(kWriteOps, rec.op);
  }
  ASSERT_GT(count, 10u);
  uint64_t faults = 0;
  for (int err : {ENOSPC, EIO})
    for (uint64_t n = 0; n < count; ++n) {
      ForcedRun r(async);
      r.env.fail_nth(kWriteOps, n, err);
      const bool ok = r.force_save();
      r.env.disarm();
      ++faults;
      const std::string what = std::string(async ? "async" : "sync") + " " + errno_text(err) +
                               " at write op " + std::to_string(n);
      EXPECT_FALSE(ok) << what << ": the forced save did not fail";
      EXPECT_EQ(committed_steps(r.dir), (std::vector<int64_t>{1, 2})) << what;
      EXPECT_EQ(step2_holds(r.dir), "old") << what;
      std::string why;
      EXPECT_TRUE(loads_exact(step_dir(r.dir, 1), 1, 1, why)) << what << ": " << why;
      EXPECT_TRUE(r.force_save()) << what << ": the retry";
      EXPECT_EQ(step2_holds(r.dir), "new") << what << ": after the retry";
      if (::testing::Test::HasFailure()) return;
    }
  std::cout << (async ? "async" : "sync") << ": forced_save_faults=" << faults << std::endl;
}

TEST_P(ForcedSaveTest, APowerCutAtEveryOperationKeepsOneOfTheTwo) {
  const bool async = GetParam();
  uint64_t cuts = 0, lost = 0, olds = 0, news = 0;
  for (uint64_t k = 0;; ++k) {
    bool done = false;
    for (RebootMode mode : {RebootMode::kDropAll, RebootMode::kRandom}) {
      ForcedRun r(async);
      const uint64_t at = r.env.operations() + k;
      r.env.power_cut_at(at);
      const bool ok = r.force_save();
      if (!r.env.is_cut()) {
        done = true;
        break;
      }
      const std::string what = std::string(async ? "async" : "sync") + " cut at +" +
                               std::to_string(k) + " (" + r.env.operation(at) + "), " +
                               (mode == RebootMode::kDropAll ? "drop_all" : "random");
      r.m.reset();  // the process is gone
      r.env.reboot(mode, k);
      {
        auto o = series_options(r.dir, nullptr, async);
        o.keep.last = 100;
        CheckpointManager fresh(o);  // start-up: leftovers, .replaced.*
      }
      ++cuts;
      const std::string holds = step2_holds(r.dir);
      const bool fine = committed_steps(r.dir) == std::vector<int64_t>{1, 2} &&
                        (holds == "new" || (holds == "old" && !ok));
      lost += !fine;
      olds += holds == "old";
      news += holds == "new";
      EXPECT_TRUE(fine) << what << ": step 2 holds: " << holds
                        << (ok ? " (the save had returned)" : "");
      for (const auto& e : fs::directory_iterator(r.dir))
        EXPECT_NE(e.path().filename().string().rfind(".replaced.", 0), 0u)
            << what << ": " << e.path() << " left after start-up";
      if (::testing::Test::HasFailure()) return;
    }
    if (done) break;
  }
  std::cout << (async ? "async" : "sync") << ": forced_save_power_cuts=" << cuts << " lost=" << lost
            << " old=" << olds << " new=" << news << std::endl;
  EXPECT_GT(cuts, 20u);
  EXPECT_GT(olds, 0u);
  EXPECT_GT(news, 0u);
}

INSTANTIATE_TEST_SUITE_P(Modes, ForcedSaveTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

}  // namespace
}  // namespace manager
}  // namespace dcp
