#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>

#include "common/test_util.h"
#include "dcp/error.h"
#include "dcp/manager/manager.h"
#include "dcp/manager/options.h"

namespace dcp {
namespace manager {
namespace {

namespace fs = std::filesystem;

const std::string kDir = DCP_MANAGER_TEST_DIR;

TEST(ManagerConfigTest, DefaultsWithoutAFile) {
  CheckpointManagerOptions o = parse_manager_options("", "empty");
  EXPECT_EQ(o.dir, "checkpoints");
  EXPECT_EQ(o.save.every_steps, 1000);
  EXPECT_TRUE(o.save.at_end);
  EXPECT_EQ(o.save.on_signals, (std::vector<int>{SIGTERM, SIGUSR1}));
  EXPECT_TRUE(o.async.enabled);
  EXPECT_EQ(o.keep.last, 3);
  EXPECT_EQ(o.resume.from, "latest");
  EXPECT_EQ(o.on_error, OnError::kRaise);
}

TEST(ManagerConfigTest, TheShippedConfigsParse) {
  for (const char* name :
       {"default.yaml", "frequent_async.yaml", "best_by_loss.yaml", "example.yaml"})
    EXPECT_NO_THROW(load_manager_options(std::string(DCP_CONFIGS_DIR) + "/" + name)) << name;
  CheckpointManagerOptions b =
      load_manager_options(std::string(DCP_CONFIGS_DIR) + "/best_by_loss.yaml");
  EXPECT_EQ(b.keep.best.metric, "val_loss");
  EXPECT_EQ(b.keep.best.count, 3);
  EXPECT_FALSE(b.keep.best.maximize);
  EXPECT_EQ(b.resume.exclude, std::vector<std::string>{"rng"});
}

TEST(ManagerConfigTest, EveryKey) {
  CheckpointManagerOptions o = parse_manager_options(R"(
checkpoint:
  dir: /ck
  save: {every_steps: 10, every_seconds: 2.5, at_steps: [3, 7], at_end: false, on_signals: [SIGUSR2]}
  async: {enabled: false, max_in_flight: 2}
  keep: {last: 5, every_steps: 100, every_seconds: 60, best: {metric: acc, mode: max, count: 2}}
  resume: {from: "42", strict: false, exclude: [rng, model.head], fallback_to_older: false}
  storage: {threads: 4, fsync: false, verify_checksums: false}
  on_error: warn
)",
                                                     "inline");
  EXPECT_EQ(o.dir, "/ck");
  EXPECT_EQ(o.save.every_steps, 10);
  EXPECT_DOUBLE_EQ(o.save.every_seconds, 2.5);
  EXPECT_EQ(o.save.at_steps, (std::vector<int64_t>{3, 7}));
  EXPECT_FALSE(o.save.at_end);
  EXPECT_EQ(o.save.on_signals, std::vector<int>{SIGUSR2});
  EXPECT_FALSE(o.async.enabled);
  EXPECT_EQ(o.async.max_in_flight, 2);
  EXPECT_EQ(o.keep.last, 5);
  EXPECT_EQ(o.keep.every_steps, 100);
  EXPECT_DOUBLE_EQ(o.keep.every_seconds, 60);
  EXPECT_EQ(o.keep.best.metric, "acc");
  EXPECT_TRUE(o.keep.best.maximize);
  EXPECT_EQ(o.resume.from, "42");
  EXPECT_FALSE(o.resume.strict);
  EXPECT_EQ(o.resume.exclude, (std::vector<std::string>{"rng", "model.head"}));
  EXPECT_FALSE(o.resume.fallback_to_older);
  EXPECT_EQ(o.storage.threads, 4);
  EXPECT_FALSE(o.storage.fsync);
  EXPECT_EQ(o.on_error, OnError::kWarn);
}

TEST(ManagerConfigTest, EnvironmentOverrides) {
  ::setenv("DCP_CHECKPOINT_DIR", "/from/env", 1);
  ::setenv("DCP_RESUME_FROM", "none", 1);
  CheckpointManagerOptions o = load_manager_options(std::string(DCP_CONFIGS_DIR) + "/default.yaml");
  ::unsetenv("DCP_CHECKPOINT_DIR");
  ::unsetenv("DCP_RESUME_FROM");
  EXPECT_EQ(o.dir, "/from/env");
  EXPECT_EQ(o.resume.from, "none");
}

// Each bad file, and what its error must say: the key and the line.
struct BadCase {
  const char* file;
  std::vector<const char*> fragments;
};

TEST(ManagerConfigTest, BadConfigsNameKeyAndLine) {
  const std::vector<BadCase> cases = {
      {"unknown_key.yaml", {"unknown_key.yaml:3", "checkpoint.saev", "unknown key"}},
      {"wrong_type.yaml",
       {"wrong_type.yaml:3", "checkpoint.save.every_steps", "an integer", "often"}},
      {"negative_steps.yaml", {":3", "checkpoint.save.every_steps", ">= 0", "-5"}},
      {"bad_mode.yaml", {":3", "checkpoint.keep.best.mode", "min or max", "lowest"}},
      {"best_without_metric.yaml", {":3", "checkpoint.keep.best", "needs a metric"}},
      {"bad_signal.yaml", {":3", "checkpoint.save.on_signals", "SIGKILL"}},
      {"zero_in_flight.yaml", {":3", "checkpoint.async.max_in_flight", ">= 1"}},
      {"bad_on_error.yaml", {":2", "checkpoint.on_error", "raise or warn", "ignore"}},
      {"save_not_map.yaml", {":2", "checkpoint.save", "mapping"}},
      {"not_yaml.yaml", {"not_yaml.yaml", "not valid YAML"}},
      {"exclude_not_list.yaml", {":3", "checkpoint.resume.exclude", "a list"}},
      {"zero_threads.yaml", {":3", "checkpoint.storage.threads", ">= 1"}},
      {"bad_seconds.yaml", {":3", "checkpoint.save.every_seconds", "seconds", "soon"}},
      {"bad_top_key.yaml", {":1", "chekpoint", "unknown key"}},
  };
  for (const auto& c : cases) {
    try {
      load_manager_options(kDir + "/bad_configs/" + c.file);
      ADD_FAILURE() << c.file << " was accepted";
    } catch (const ConfigError& e) {
      for (const char* f : c.fragments)
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << c.file << ": " << e.what();
    }
  }
  EXPECT_THROW(load_manager_options(kDir + "/bad_configs/no_such_file.yaml"), ConfigError);
}

// The text of the ConfigError `fn` throws ("" and a failure when none).
template <typename Fn>
std::string config_error(Fn fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError";
  return "";
}

// A programmatically built struct is held to the same ranges, naming the field.
TEST(ManagerConfigTest, ValidateNamesTheField) {
  EXPECT_NO_THROW(validate(CheckpointManagerOptions{}));
  struct Case {
    std::function<void(CheckpointManagerOptions&)> change;
    const char* fragment;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o.dir = ""; }, "checkpoint.dir: must not be empty"},
      {[](auto& o) { o.save.every_steps = -1; }, "checkpoint.save.every_steps: must be in 0.."},
      {[](auto& o) { o.save.every_seconds = NAN; }, "checkpoint.save.every_seconds: must be a fin"},
      {[](auto& o) {
         o.save.at_steps = {5, 0};
       },
       "checkpoint.save.at_steps[1]: must be in 1.."},
      {[](auto& o) { o.save.on_signals = {SIGKILL}; }, "checkpoint.save.on_signals[0]: "},
      {[](auto& o) { o.async.max_in_flight = 0; }, "checkpoint.async.max_in_flight: must be in"},
      {[](auto& o) { o.keep.last = -1; }, "checkpoint.keep.last: must be in 0..2147483647"},
      {[](auto& o) { o.keep.every_seconds = INFINITY; }, "checkpoint.keep.every_seconds: must"},
      {[](auto& o) { o.keep.best.count = 2; }, "checkpoint.keep.best.count: count > 0 needs a"},
      {[](auto& o) { o.resume.from = "12345678901234567890"; }, "checkpoint.resume.from: a step"},
      {[](auto& o) { o.resume.from = ""; }, "checkpoint.resume.from: must be latest"},
      {[](auto& o) { o.storage.threads = 2000; }, "checkpoint.storage.threads: must be in 1..1024"},
      {[](auto& o) { o.storage.check_replicas = static_cast<ReplicaCheck>(9); },
       "checkpoint.storage.check_replicas: "},
      {[](auto& o) { o.on_error = static_cast<OnError>(9); }, "checkpoint.on_error: "},
  };
  for (const auto& c : cases) {
    CheckpointManagerOptions o;
    c.change(o);
    const std::string e = config_error([&] { validate(o); });
    EXPECT_EQ(e.rfind(c.fragment, 0), 0u) << e;
  }
}

// The state of a directory tree: every path with its contents.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    out[e.path().string()] = e.is_regular_file() ? testing::read_file(e.path().string()) : "<dir>";
  return out;
}

// Before the manager takes the lock, removes leftovers or runs retention.
TEST(ManagerConfigTest, AManagerWithBadOptionsTouchesNothing) {
  testing::TempDir tmp;
  const std::string dir = tmp.sub("run");
  fs::create_directories(dir + "/.tmp.x");
  testing::write_file(dir + "/.tmp.x/.metadata", "committed-looking leftover");
  testing::write_file(dir + "/.tmp.x/dcp_manager.record", "step 50");
  fs::create_directories(dir + "/step_0000000010");
  testing::write_file(dir + "/step_0000000010/__0_0.distcp", "data");
  testing::write_file(dir + "/notes.txt", "mine");
  const auto before = snapshot(dir);
  const std::vector<std::function<void(CheckpointManagerOptions&)>> bad = {
      [](auto& o) { o.storage.threads = 0; },
      [](auto& o) { o.keep.last = -1; },
      [](auto& o) { o.async.max_in_flight = 0; },
      [](auto& o) { o.save.on_signals = {SIGKILL}; },
      [](auto& o) { o.resume.from = "99999999999999999999"; },
  };
  for (const auto& change : bad) {
    CheckpointManagerOptions o;
    o.dir = dir;
    o.storage.fsync = false;
    change(o);
    EXPECT_THROW(CheckpointManager m(o), ConfigError);
    EXPECT_FALSE(fs::exists(dir + "/.lock"));
    EXPECT_TRUE(fs::exists(dir + "/.tmp.x"));
    EXPECT_EQ(snapshot(dir), before);
  }
  // Nor is a missing directory created.
  CheckpointManagerOptions o;
  o.dir = tmp.sub("never");
  o.storage.threads = 0;
  EXPECT_THROW(CheckpointManager m(o), ConfigError);
  EXPECT_FALSE(fs::exists(o.dir));
}

}  // namespace
}  // namespace manager
}  // namespace dcp
