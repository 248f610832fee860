// The CheckpointManager over "memory://": every file operation goes to
// memory_env() (or the Env of CheckpointManagerOptions::env), so periodic
// saves, retention, resume, the fallback from a damaged checkpoint and the
// lock work as on files, with nothing on disk.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "common/counting_env.h"
#include "dcp/env.h"
#include "dcp/error.h"
#include "dcp/manager/manager.h"
#include "dcp/memory_storage.h"
#include "step_state.h"

namespace dcp {
namespace manager {
namespace {

using State = StepState;

// Names in the memory env's directory `path` (no scheme) that start with
// `prefix`, sorted.
std::vector<std::string> names(const std::string& path, const std::string& prefix = "") {
  std::vector<std::string> out;
  for (auto& n : memory_env()->list_dir(path))
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  std::sort(out.begin(), out.end());
  return out;
}

std::string step_name(int64_t step) { return CheckpointManager::step_dir_name(step); }

class ManagerMemoryTest : public ::testing::TestWithParam<bool> {  // async on/off
 protected:
  ManagerMemoryTest() {
    static int n = 0;
    path_ =
        "manager_memory_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++) + "/run";
  }
  ~ManagerMemoryTest() override { clear_memory_checkpoints(path_); }
  CheckpointManagerOptions opts() const {
    CheckpointManagerOptions o;
    o.dir = "memory://" + path_;
    o.save.every_steps = 10;
    o.save.on_signals = {};
    o.async.enabled = GetParam();
    o.keep.last = 2;
    return o;
  }
  // Resumes, trains to `to` with periodic saves, waits; returns the step resumed from.
  int64_t run(const CheckpointManagerOptions& o, int64_t to, bool* consistent = nullptr) {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    const int64_t from = m.resume();
    EXPECT_EQ(s->step, from);
    if (consistent) *consistent = s->consistent();
    for (int64_t step = from + 1; step <= to; ++step) {
      s->set(step);
      m.on_step(step);
    }
    m.wait();
    return from;
  }
  std::vector<int64_t> steps() const {
    std::vector<int64_t> out;
    for (const auto& c : list_committed("memory://" + path_)) out.push_back(c.step);
    return out;
  }
  std::string path_;  // inside memory_env()
};

TEST_P(ManagerMemoryTest, SavesRetainsAndResumes) {
  const auto o = opts();
  EXPECT_EQ(run(o, 40), 0);
  // keep.last 2: 10 and 20 were deleted (the deleter ran before close returned).
  EXPECT_EQ(steps(), (std::vector<int64_t>{30, 40}));
  EXPECT_EQ(names(path_), (std::vector<std::string>{".lock", step_name(30), step_name(40)}));
  EXPECT_TRUE(memory_env()->file_exists(path_ + "/" + step_name(40) + "/.metadata"));
  EXPECT_TRUE(memory_env()->file_exists(path_ + "/" + step_name(40) + "/dcp_manager.record"));
  const auto info = read_checkpoint_record("memory://" + path_ + "/" + step_name(40));
  EXPECT_EQ(info.step, 40);

  // A new manager on the same memory directory resumes from the newest.
  bool consistent = false;
  EXPECT_EQ(run(o, 50, &consistent), 40);
  EXPECT_TRUE(consistent);
  EXPECT_EQ(steps(), (std::vector<int64_t>{40, 50}));
}

TEST_P(ManagerMemoryTest, DamagedNewestFallsBackAndIsMovedAside) {
  auto o = opts();
  o.keep.last = 3;
  EXPECT_EQ(run(o, 30), 0);
  // A flipped byte in the largest data file of step 30, through the memory env.
  const std::string ckpt = "memory://" + path_ + "/" + step_name(30);
  std::string largest;
  for (const auto& n : memory_checkpoint_files(ckpt))
    if (n.size() > 7 && n.compare(n.size() - 7, 7, ".distcp") == 0 &&
        (largest.empty() ||
         memory_checkpoint_file(ckpt, n).size() > memory_checkpoint_file(ckpt, largest).size()))
      largest = n;
  ASSERT_FALSE(largest.empty());
  edit_memory_checkpoint_file(ckpt, largest, [](std::string& data) { data[data.size() / 2] ^= 4; });

  bool consistent = false;
  EXPECT_EQ(run(o, 30, &consistent), 20);  // falls back, saves 30 again
  EXPECT_TRUE(consistent);
  EXPECT_EQ(names(path_, ".damaged."),
            (std::vector<std::string>{".damaged." + step_name(30) + ".0"}));
  EXPECT_EQ(steps(), (std::vector<int64_t>{10, 20, 30}));

  // No .metadata: not committed; resume moves it aside too, and the run
  // saves 30 again.
  memory_env()->remove_file(path_ + "/" + step_name(30) + "/.metadata");
  EXPECT_EQ(steps(), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(run(o, 30), 20);
  EXPECT_EQ(names(path_, ".damaged."),
            (std::vector<std::string>{".damaged." + step_name(30) + ".0",
                                      ".damaged." + step_name(30) + ".1"}));
  // The commit of 40 removes the damaged directories of earlier steps.
  EXPECT_EQ(run(o, 40), 30);
  EXPECT_TRUE(names(path_, ".damaged.").empty());
  EXPECT_TRUE(names(path_, ".old.").empty());
  EXPECT_EQ(steps(), (std::vector<int64_t>{20, 30, 40}));
}

TEST_P(ManagerMemoryTest, OneManagerPerMemoryDirectory) {
  const auto o = opts();
  auto m1 = std::make_unique<CheckpointManager>(o);
  try {
    CheckpointManager m2(o);
    FAIL() << "a second manager on the same memory directory must fail";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.root_code(), ErrorCode::kConfig);
    EXPECT_NE(std::string(e.what()).find("in use by another CheckpointManager"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("(pid " + std::to_string(::getpid()) + ")"),
              std::string::npos)
        << e.what();
  }
  m1.reset();
  EXPECT_NO_THROW(CheckpointManager m3(o));
}

TEST_P(ManagerMemoryTest, StartUpRemovesLeftovers) {
  const auto o = opts();
  memory_env()->create_dirs(path_ + "/.tmp." + step_name(10) + ".0");
  memory_env()->write_file(path_ + "/.tmp." + step_name(10) + ".0/__0_0.distcp", "x", false);
  memory_env()->create_dirs(path_ + "/.old." + step_name(5) + ".r1");
  memory_env()->create_dirs(path_ + "/.damaged." + step_name(7) + ".0");
  { CheckpointManager m(o); }
  EXPECT_EQ(names(path_), (std::vector<std::string>{".damaged." + step_name(7) + ".0", ".lock"}));
}

using testing::CountingEnv;

TEST_P(ManagerMemoryTest, RunsOnTheEnvOfItsOptions) {
  CountingEnv env(memory_env());
  auto o = opts();
  o.env = &env;
  EXPECT_EQ(run(o, 30), 0);
  EXPECT_EQ(env.calls["lock_file"], 1);
  // Per save: data files, .metadata.tmp and the record; .metadata and the commit renames.
  EXPECT_GE(env.calls["new_writable_file"], 3 * 3);
  EXPECT_GE(env.calls["rename_file"], 3 * 2);
  EXPECT_GE(env.calls["list_dir"], 3);
  EXPECT_EQ(env.calls["remove_dir_recursively"], 1);  // step 10, by retention
  EXPECT_EQ(steps(), (std::vector<int64_t>{20, 30}));
}

INSTANTIATE_TEST_SUITE_P(SyncAndAsync, ManagerMemoryTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "async" : "sync"; });

}  // namespace
}  // namespace manager
}  // namespace dcp
