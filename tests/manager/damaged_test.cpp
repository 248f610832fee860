// A damaged or abandoned checkpoint never stops a run: resume moves it aside
// (.damaged.* / .superseded.*), the run saves its step again, and retention
// removes what was moved aside once a checkpoint of a later step commits.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>

#include "common/test_util.h"
#include "dcp/manager/manager.h"
#include "step_state.h"

namespace dcp {
namespace manager {
namespace {

namespace fs = std::filesystem;

using State = StepState;

std::vector<int64_t> steps_in(const std::string& dir) {
  std::vector<int64_t> out;
  for (const auto& c : list_committed(dir)) out.push_back(c.step);
  return out;
}

// The names in `dir` that start with `prefix`, sorted.
std::vector<std::string> names(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string step_dir(const std::string& dir, int64_t step) {
  return dir + "/" + CheckpointManager::step_dir_name(step);
}

// A run of the manager: resumes, trains from the resumed step to `to`
// (periodic saves), waits for its saves; returns the resumed step.
int64_t run(const CheckpointManagerOptions& o, int64_t to, bool* consistent = nullptr) {
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  const int64_t from = m.resume();
  EXPECT_EQ(s->step, from);
  if (consistent) *consistent = from == 0 || s->consistent();
  for (int64_t step = from + 1; step <= to; ++step) {
    s->set(step);
    m.on_step(step);
  }
  m.wait();
  return from;
}

enum class Damage { kFlippedBit, kNoMetadata, kNoRecord, kGarbageRecord };

void damage(const std::string& path, Damage d) {
  switch (d) {
    case Damage::kFlippedBit: {
      auto files = testing::data_files(path);
      ASSERT_FALSE(files.empty());
      std::sort(files.begin(), files.end(),
                [](const auto& a, const auto& b) { return fs::file_size(a) > fs::file_size(b); });
      std::string data = testing::read_file(files[0]);
      data[data.size() / 2] ^= 4;
      testing::write_file(files[0], data);
      break;
    }
    case Damage::kNoMetadata:
      ASSERT_TRUE(fs::remove(path + "/.metadata"));
      break;
    case Damage::kNoRecord:
      ASSERT_TRUE(fs::remove(path + "/dcp_manager.record"));
      break;
    case Damage::kGarbageRecord:
      testing::write_file(path + "/dcp_manager.record", std::string("\x7f garbage\0\n", 11));
      break;
  }
}

const char* damage_name(Damage d) {
  switch (d) {
    case Damage::kFlippedBit:
      return "flipped_bit";
    case Damage::kNoMetadata:
      return "no_metadata";
    case Damage::kNoRecord:
      return "no_record";
    case Damage::kGarbageRecord:
      return "garbage_record";
  }
  return "?";
}

class DamagedNewestTest : public ::testing::TestWithParam<std::tuple<Damage, bool>> {
 protected:
  CheckpointManagerOptions opts() {
    CheckpointManagerOptions o;
    o.dir = dir_.sub("run");
    o.save.every_steps = 10;
    o.save.on_signals = {};
    o.async.enabled = std::get<1>(GetParam());
    o.keep.last = 3;
    o.storage.fsync = false;
    return o;
  }
  testing::TempDir dir_;
};

TEST_P(DamagedNewestTest, ResumeFallsBackMovesItAsideAndTheRunSavesThatStepAgain) {
  const auto o = opts();
  EXPECT_EQ(run(o, 30), 0);
  ASSERT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20, 30}));  // 30 is periodic
  damage(step_dir(o.dir, 30), std::get<0>(GetParam()));
  const std::string aside = ".damaged." + CheckpointManager::step_dir_name(30) + ".0";

  // Strict: no fallback, an error, and nothing is moved.
  if (std::get<0>(GetParam()) == Damage::kFlippedBit) {
    auto strict = o;
    strict.resume.fallback_to_older = false;
    EXPECT_THROW(run(strict, 30), CheckpointError);
    EXPECT_TRUE(fs::exists(step_dir(o.dir, 30)));
    EXPECT_TRUE(names(o.dir, ".damaged.").empty());
  }

  // Resume falls back to 20, moves 30 aside, and saves 30 again.
  bool consistent = false;
  EXPECT_EQ(run(o, 30, &consistent), 20);
  EXPECT_TRUE(consistent);
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(names(o.dir, ".damaged."), std::vector<std::string>{aside});
  StateDict back = load_all(step_dir(o.dir, 30));
  EXPECT_TRUE(at::equal(back["state"].dict()["w"].tensor(), at::full({64, 32}, 30.0f)));

  // A restart resumes from the new 30; the damaged copy survives start-up.
  EXPECT_EQ(run(o, 30, &consistent), 30);
  EXPECT_TRUE(consistent);
  EXPECT_EQ(names(o.dir, ".damaged."), std::vector<std::string>{aside});

  // The commit of a later step removes it (and retention never counted it).
  EXPECT_EQ(run(o, 40), 30);
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{20, 30, 40}));
  EXPECT_TRUE(names(o.dir, ".damaged.").empty());
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, DamagedNewestTest,
    ::testing::Combine(::testing::Values(Damage::kFlippedBit, Damage::kNoMetadata,
                                         Damage::kNoRecord, Damage::kGarbageRecord),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::string(damage_name(std::get<0>(info.param))) +
             (std::get<1>(info.param) ? "_async" : "_sync");
    });

CheckpointManagerOptions sync_opts(const std::string& dir) {
  CheckpointManagerOptions o;
  o.dir = dir;
  o.save.every_steps = 10;
  o.save.on_signals = {};
  o.async.enabled = false;
  o.keep.last = 0;
  o.storage.fsync = false;
  return o;
}

// A step_N that is not committed is moved aside by the save that would
// collide with it (here no resume() ran); "already committed" is said only
// of a committed checkpoint.
TEST(DamagedTest, AnUncommittedStepDirectoryIsMovedAsideByTheCommit) {
  testing::TempDir dir;
  const auto o = sync_opts(dir.sub("run"));
  fs::create_directories(step_dir(o.dir, 10));
  testing::write_file(step_dir(o.dir, 10) + "/__0_0.distcp", "left by someone");
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    s->set(10);
    EXPECT_NO_THROW(m.on_step(10));
    EXPECT_EQ(steps_in(o.dir), std::vector<int64_t>{10});
    EXPECT_EQ(names(o.dir, ".damaged."),
              std::vector<std::string>{".damaged." + CheckpointManager::step_dir_name(10) + ".0"});
  }
  // A committed step_10 is kept: the save of 10 by another run fails, naming it.
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  s->set(10);
  try {
    m.on_step(10);
    FAIL() << "a committed checkpoint was overwritten";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.root_code(), ErrorCode::kAlreadyExists) << e.what();
    EXPECT_NE(std::string(e.what()).find("is already committed"), std::string::npos) << e.what();
  }
  EXPECT_EQ(names(o.dir, ".damaged.").size(), 1u);
}

// resume.from names an older step: the newer checkpoints are superseded,
// moved aside until the run commits past them; resume latest after a crash
// resumes the new line of steps, never the abandoned one.
TEST(DamagedTest, ResumeFromAnOlderStepSupersedesTheNewerCheckpoints) {
  testing::TempDir dir;
  const auto o = sync_opts(dir.sub("run"));
  run(o, 50);
  ASSERT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20, 30, 40, 50}));
  auto from20 = o;
  from20.resume.from = "20";
  bool consistent = false;
  EXPECT_EQ(run(from20, 20, &consistent), 20);
  EXPECT_TRUE(consistent);
  auto superseded = [&] { return names(o.dir, ".superseded."); };
  const auto name = [](int64_t s) {
    return ".superseded." + CheckpointManager::step_dir_name(s) + ".0";
  };
  EXPECT_EQ(superseded(), (std::vector<std::string>{name(30), name(40), name(50)}));
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20}));
  // The run goes on (a crash after 40): 30 and 40 are saved again.
  EXPECT_EQ(run(o, 40), 20);
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20, 30, 40}));
  EXPECT_EQ(superseded(), (std::vector<std::string>{name(40), name(50)}));  // 30 < 40
  // Latest is the new 40, not the abandoned 50.
  EXPECT_EQ(run(o, 60, &consistent), 40);
  EXPECT_TRUE(consistent);
  EXPECT_TRUE(superseded().empty());
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20, 30, 40, 50, 60}));
}

TEST(DamagedTest, ResumeFromNoneSupersedesEveryCheckpoint) {
  testing::TempDir dir;
  const auto o = sync_opts(dir.sub("run"));
  run(o, 20);
  auto none = o;
  none.resume.from = "none";
  EXPECT_EQ(run(none, 20), 0);  // saves 10 and 20 again
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(names(o.dir, ".superseded."),
            std::vector<std::string>{".superseded." + CheckpointManager::step_dir_name(20) + ".0"});
}

// Moved twice (two runs damaged at the same step): the second gets .1.
TEST(DamagedTest, AsideNamesNeverCollide) {
  testing::TempDir dir;
  auto o = sync_opts(dir.sub("run"));
  o.keep.last = 3;
  run(o, 20);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(fs::remove(step_dir(o.dir, 20) + "/.metadata"));
    EXPECT_EQ(run(o, 20), 10);
  }
  const std::string base = ".damaged." + CheckpointManager::step_dir_name(20);
  EXPECT_EQ(names(o.dir, ".damaged."), (std::vector<std::string>{base + ".0", base + ".1"}));
}

TEST(DamagedTest, RecordsAreCheckedStrictly) {
  testing::TempDir dir;
  const auto o = sync_opts(dir.sub("run"));
  run(o, 10);
  const std::string ck = step_dir(o.dir, 10), rec = ck + "/dcp_manager.record";
  const std::string good = testing::read_file(rec);
  EXPECT_EQ(read_checkpoint_record(ck).step, 10);
  auto expect_bad = [&](const std::string& text, const std::string& fragment) {
    testing::write_file(rec, text);
    try {
      read_checkpoint_record(ck);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const CorruptionError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(ck), std::string::npos) << e.what();
    }
    EXPECT_TRUE(list_committed(o.dir).empty()) << text;  // not committed
  };
  expect_bad("", "empty");
  expect_bad("garbage\n", "line 1 is not key=value");
  expect_bad("format_version=2\nstep=10\nwall_time=1\nworld_size=1\n", "format_version 2");
  expect_bad("format_version=1\nstep=11\nwall_time=1\nworld_size=1\n", "of step 11");
  expect_bad("format_version=1\nstep=10x\nwall_time=1\nworld_size=1\n", "bad value '10x'");
  expect_bad("format_version=1\nstep=10\nworld_size=1\n", "no 'wall_time'");
  expect_bad("format_version=1\nstep=10\nwall_time=1\nworld_size=1\ncolor=red\n", "unknown key");
  testing::write_file(rec, good);
  EXPECT_EQ(steps_in(o.dir), std::vector<int64_t>{10});
  fs::remove(rec);
  EXPECT_THROW(read_checkpoint_record(ck), NotFoundError);
}

}  // namespace
}  // namespace manager
}  // namespace dcp
