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
       {"default.yaml", "frequent_async.yaml", "best_by_loss.yaml", "example.yaml", "budget.yaml"})
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
  async: {enabled: false, max_in_flight: 2, direct_io: false, writer_threads: 3}
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
  EXPECT_FALSE(o.async.direct_io);
  EXPECT_EQ(o.async.writer_threads, 3);
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
      {"negative_steps.yaml",
       {":3", "checkpoint.save.every_steps", "0..9223372036854775807", "-5"}},
      {"bad_mode.yaml", {":3", "checkpoint.keep.best.mode", "min or max", "lowest"}},
      {"best_without_metric.yaml", {":3", "checkpoint.keep.best", "needs a metric"}},
      {"bad_signal.yaml", {":3", "checkpoint.save.on_signals", "SIGKILL"}},
      {"zero_in_flight.yaml", {":3", "checkpoint.async.max_in_flight", "1..64"}},
      {"bad_on_error.yaml", {":2", "checkpoint.on_error", "raise or warn", "ignore"}},
      {"save_not_map.yaml", {":2", "checkpoint.save", "mapping"}},
      {"not_yaml.yaml", {"not_yaml.yaml", "not valid YAML"}},
      {"exclude_not_list.yaml", {":3", "checkpoint.resume.exclude", "a list"}},
      {"zero_threads.yaml", {":3", "checkpoint.storage.threads", "1..1024"}},
      {"bad_seconds.yaml", {":3", "checkpoint.save.every_seconds", "seconds", "soon"}},
      {"bad_top_key.yaml", {":1", "chekpoint", "unknown key"}},
      // Each below was accepted, crashed or named no (or the wrong) line before.
      {"duplicate_key.yaml",
       {"duplicate_key.yaml:4: ", "checkpoint.keep.last", "duplicate key", "line 3"}},
      {"duplicate_section.yaml",
       {"duplicate_section.yaml:4: ", "checkpoint.keep", "duplicate key", "line 2"}},
      {"duplicate_flow_key.yaml",
       {"duplicate_flow_key.yaml:3: ", "checkpoint.keep.best.metric", "duplicate key"}},
      {"duplicate_top_section.yaml",
       {"duplicate_top_section.yaml:3: ", "checkpoint", "duplicate key", "line 1"}},
      {"unterminated_quote.yaml", {"unterminated_quote.yaml:2: ", "checkpoint.dir", "not closed"}},
      {"unterminated_quote_at_eof.yaml",
       {"unterminated_quote_at_eof.yaml:4: ", "checkpoint.resume.from", "not closed"}},
      {"two_documents.yaml", {"two_documents.yaml:3: ", "second YAML document"}},
      {"int_overflow.yaml",
       {"int_overflow.yaml:3: ", "checkpoint.keep.last", "0..2147483647", "2147483648"}},
      {"in_flight_overflow.yaml",
       {"in_flight_overflow.yaml:5: ", "checkpoint.async.max_in_flight", "1..64", "4294967296"}},
      {"too_many_threads.yaml",
       {"too_many_threads.yaml:3: ", "checkpoint.storage.threads", "1..1024", "4096"}},
      {"int64_overflow.yaml",
       {"int64_overflow.yaml:3: ", "checkpoint.save.every_steps", "0..9223372036854775807"}},
      {"at_step_overflow.yaml",
       {"at_step_overflow.yaml:3: ", "checkpoint.save.at_steps[1]", "1..9223372036854775807"}},
      {"resume_step_overflow.yaml",
       {"resume_step_overflow.yaml:3: ", "checkpoint.resume.from", "0..9223372036854775807",
        "12345678901234567890"}},
      {"complex_key.yaml", {"complex_key.yaml:3: ", "checkpoint", "key"}},
      {"infinite_seconds.yaml",
       {"infinite_seconds.yaml:3: ", "checkpoint.keep.every_seconds", "finite", ".inf"}},
      {"nan_seconds.yaml",
       {"nan_seconds.yaml:3: ", "checkpoint.save.every_seconds", "finite", ".nan"}},
      {"yes_boolean.yaml",
       {"yes_boolean.yaml:3: ", "checkpoint.save.at_end", "true or false", "yes"}},
      {"empty_value.yaml", {"empty_value.yaml:3: ", "checkpoint.save.every_steps", "an integer"}},
      {"empty_section.yaml", {"empty_section.yaml:3: ", "checkpoint.save", "mapping"}},
      {"bad_check_replicas.yaml",
       {"bad_check_replicas.yaml:3: ", "checkpoint.storage.check_replicas", "error, warn or off",
        "maybe"}},
      {"quoted_integer.yaml",
       {"quoted_integer.yaml:3: ", "checkpoint.save.every_steps", "an integer", "quoted"}},
      {"bad_storage_format.yaml",
       {"bad_storage_format.yaml:3: ", "checkpoint.storage.format", "dcp++ or pytorch-dcp",
        "pytorch"}},
      {"bad_pytorch_version.yaml",
       {"bad_pytorch_version.yaml:4: ", "checkpoint.storage.pytorch_version", "\"2\" or \"1.13\"",
        "2.4"}},
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

std::string parse_error(const std::string& yaml) {
  return config_error([&] { parse_manager_options(yaml, "inline"); });
}

TEST(ManagerConfigTest, OnlyARegularReadableFileIsAConfig) {
  const std::string missing = kDir + "/bad_configs/no_such_file.yaml";
  EXPECT_NE(config_error([&] { load_manager_options(missing); }).find(missing), std::string::npos);
  // A directory opens as a stream that reads nothing: it used to give the defaults.
  const std::string dir = config_error([&] { load_manager_options(kDir + "/bad_configs"); });
  EXPECT_NE(dir.find("bad_configs"), std::string::npos) << dir;
  EXPECT_NE(dir.find("directory"), std::string::npos) << dir;
  EXPECT_NE(config_error([&] { load_manager_options("/dev/null"); }).find("not a regular file"),
            std::string::npos);
  testing::TempDir tmp;
  const std::string unreadable = tmp.sub("unreadable.yaml");
  testing::write_file(unreadable, "checkpoint: {dir: x}\n");
  ::chmod(unreadable.c_str(), 0);
  if (::access(unreadable.c_str(), R_OK) != 0) {  // not root
    const std::string e = config_error([&] { load_manager_options(unreadable); });
    EXPECT_NE(e.find(unreadable), std::string::npos) << e;
    EXPECT_NE(e.find("cannot read"), std::string::npos) << e;
  }
}

TEST(ManagerConfigTest, UnterminatedQuotesNameTheirLine) {
  // yaml-cpp alone throws at the end of the text (no final newline) or takes
  // the rest of the file as the string: both are refused at line 2, by key.
  for (const char* yaml :
       {"checkpoint:\n  dir: 'x\n  keep: {last: 1}\n\n",
        "checkpoint:\n  dir: 'x\n  keep: {last: 1}", "checkpoint:\n  dir: \"x\n  keep: {last: 1}\n",
        "checkpoint:\n  dir: \"x\n  keep: {last: 1}"}) {
    const std::string e = parse_error(yaml);
    EXPECT_EQ(e.rfind("inline:2: checkpoint.dir: ", 0), 0u) << yaml << " -> " << e;
    EXPECT_NE(e.find("not closed"), std::string::npos) << e;
  }
  // An open bracket too, where yaml-cpp names the line after it.
  EXPECT_EQ(parse_error("checkpoint:\n  save: {every_steps: 10,\n    at_end: true\n\n# end\n")
                .rfind("inline:2: not valid YAML: end of map flow not found", 0),
            0u);
  // Quoted strings over several lines, with escaped quotes, are fine.
  CheckpointManagerOptions o = parse_manager_options(
      "checkpoint:\n  dir: \"a\\\"b\n    c\"\n  keep: {best: {metric: 'it''s'}}\n", "inline");
  EXPECT_EQ(o.dir, "a\"b c");
  EXPECT_EQ(o.keep.best.metric, "it's");
}

TEST(ManagerConfigTest, OneDocumentWithUniquePlainKeys) {
  EXPECT_EQ(parse_error("checkpoint: {dir: x}\n---\n").rfind("inline:2: ", 0), 0u);
  EXPECT_NE(parse_error("checkpoint: {dir: x}\n...\ncheckpoint: {dir: y}\n").find("document"),
            std::string::npos);
  EXPECT_NO_THROW(parse_manager_options("---\ncheckpoint: {dir: x}\n...\n", "inline"));
  // A UTF-8 byte order mark does not shift where quotes are looked for.
  const std::string bom = "\xEF\xBB\xBF";
  EXPECT_EQ(parse_manager_options(bom + "checkpoint: {dir: \"x\"}", "i").dir, "x");
  EXPECT_EQ(parse_error(bom + "checkpoint:\n  dir: 'x\n").rfind("inline:2: checkpoint.dir", 0), 0u);
  EXPECT_NE(parse_error("checkpoint:\n  save: {at_steps: [1, 2], at_steps: [3]}\n")
                .find("inline:2: checkpoint.save.at_steps: duplicate key"),
            std::string::npos);
  EXPECT_NE(parse_error("checkpoint:\n  dir: x\n  \"dir\": y\n").find("inline:3: checkpoint.dir"),
            std::string::npos);
  EXPECT_NE(parse_error("? [a, b] : 1\n").find("inline:1: "), std::string::npos);
  EXPECT_NE(parse_error("checkpoint:\n  ? {a: 1}\n  : 2\n").find("inline:2: "), std::string::npos);
}

TEST(ManagerConfigTest, BooleansAreTrueOrFalseOnly) {
  for (const char* v : {"yes", "no", "on", "off", "y", "n", "True", "FALSE", "1", "\"true\""}) {
    const std::string e = parse_error(std::string("checkpoint:\n  storage: {fsync: ") + v + "}\n");
    EXPECT_NE(e.find("inline:2: checkpoint.storage.fsync: must be true or false"),
              std::string::npos)
        << v << " -> " << e;
  }
  EXPECT_FALSE(parse_manager_options("checkpoint: {storage: {fsync: false}}", "i").storage.fsync);
}

TEST(ManagerConfigTest, NumbersAreDecimalAndInRange) {
  struct Case {
    const char* yaml;
    const char* fragment;
  };
  const std::vector<Case> cases = {
      {"save: {every_steps: 0x10}", "checkpoint.save.every_steps: must be an integer"},
      {"save: {every_steps: 010}", "checkpoint.save.every_steps: must be an integer"},
      {"save: {every_steps: 1.5}", "checkpoint.save.every_steps: must be an integer"},
      {"save: {every_steps: -1}", "checkpoint.save.every_steps: must be in 0..9223372036854775807"},
      {"save: {at_steps: [0]}", "checkpoint.save.at_steps[0]: must be in 1..9223372036854775807"},
      {"keep: {last: -2147483649}", "checkpoint.keep.last: must be in 0..2147483647"},
      {"keep: {best: {metric: m, count: 4294967297}}", "checkpoint.keep.best.count: must be in 0"},
      {"async: {max_in_flight: 65}", "checkpoint.async.max_in_flight: must be in 1..64, not 65"},
      {"async: {writer_threads: 0}", "checkpoint.async.writer_threads: must be in 1..1024, not 0"},
      {"storage: {threads: 1025}", "checkpoint.storage.threads: must be in 1..1024, not 1025"},
      {"storage: {threads: 0}", "checkpoint.storage.threads: must be in 1..1024, not 0"},
      {"save: {every_seconds: -.inf}", "checkpoint.save.every_seconds: must be a finite"},
      {"save: {every_seconds: 1e999}", "checkpoint.save.every_seconds: must be a finite"},
      {"save: {every_seconds: -0.5}", "checkpoint.save.every_seconds: must be a finite"},
      {"keep: {every_seconds: .NaN}", "checkpoint.keep.every_seconds: must be a finite"},
      {"resume: {from: 99999999999999999999}", "checkpoint.resume.from: a step must be in 0.."},
      {"resume: {from: -3}", "checkpoint.resume.from: a step must be in 0.."},
      {"storage: {check_replicas: false}", "checkpoint.storage.check_replicas: must be error"},
  };
  for (const auto& c : cases) {
    const std::string e = parse_error(std::string("checkpoint:\n  ") + c.yaml + "\n");
    EXPECT_EQ(e.rfind(std::string("inline:2: ") + c.fragment, 0), 0u) << c.yaml << " -> " << e;
  }
  CheckpointManagerOptions o = parse_manager_options(R"(
checkpoint:
  save: {every_steps: +9223372036854775807, every_seconds: 1.5e3}
  keep: {last: 2147483647, every_seconds: .5}
  async: {max_in_flight: 64}
  storage: {threads: 1024, check_replicas: off}
  resume: {from: "9223372036854775807"}
)",
                                                     "inline");
  EXPECT_EQ(o.save.every_steps, INT64_MAX);
  EXPECT_DOUBLE_EQ(o.save.every_seconds, 1500);
  EXPECT_EQ(o.keep.last, INT32_MAX);
  EXPECT_DOUBLE_EQ(o.keep.every_seconds, 0.5);
  EXPECT_EQ(o.async.max_in_flight, 64);
  EXPECT_EQ(o.storage.threads, 1024);
  EXPECT_EQ(o.storage.check_replicas, ReplicaCheck::kOff);
}

TEST(ManagerConfigTest, CheckReplicas) {
  EXPECT_EQ(parse_manager_options("", "i").storage.check_replicas, ReplicaCheck::kError);
  for (ReplicaCheck c : {ReplicaCheck::kError, ReplicaCheck::kWarn, ReplicaCheck::kOff})
    EXPECT_EQ(parse_manager_options(std::string("checkpoint: {storage: {check_replicas: ") +
                                        replica_check_name(c) + "}}",
                                    "i")
                  .storage.check_replicas,
              c);
}

TEST(ManagerConfigTest, StorageFormat) {
  const CheckpointManagerOptions d = parse_manager_options("", "i");
  EXPECT_EQ(d.storage.format, StorageFormat::kDcp);
  EXPECT_EQ(d.storage.pytorch_version, "2");
  // 1.13 unquoted is a YAML number: taken as its text.
  for (const char* v : {"1.13", "\"1.13\"", "'2'", "2"}) {
    const CheckpointManagerOptions o = parse_manager_options(
        std::string("checkpoint: {storage: {format: pytorch-dcp, pytorch_version: ") + v + "}}",
        "i");
    EXPECT_EQ(o.storage.format, StorageFormat::kPyTorchDcp) << v;
    EXPECT_EQ(o.storage.pytorch_version,
              std::string(v).find('1') != std::string::npos ? "1.13" : "2")
        << v;
  }
  EXPECT_EQ(parse_manager_options("checkpoint: {storage: {format: dcp++}}", "i").storage.format,
            StorageFormat::kDcp);
  for (StorageFormat f : {StorageFormat::kDcp, StorageFormat::kPyTorchDcp})
    EXPECT_EQ(storage_format_from_name(storage_format_name(f)), f);
  EXPECT_THROW(storage_format_from_name("torch"), InvalidArgumentError);
  const std::string e = parse_error("checkpoint:\n  storage:\n    format: [dcp++]\n");
  EXPECT_EQ(e.rfind("inline:3: checkpoint.storage.format: must be a string", 0), 0u) << e;
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
      {[](auto& o) { o.storage.format = static_cast<StorageFormat>(7); },
       "checkpoint.storage.format: must be dcp++ or pytorch-dcp, not 7"},
      {[](auto& o) { o.storage.pytorch_version = "3"; },
       "checkpoint.storage.pytorch_version: must be \"2\" or \"1.13\", not '3'"},
  };
  for (const auto& c : cases) {
    CheckpointManagerOptions o;
    c.change(o);
    const std::string e = config_error([&] { validate(o); });
    EXPECT_EQ(e.rfind(c.fragment, 0), 0u) << e;
  }
}

TEST(ManagerConfigTest, EnvironmentOverridesAreValidated) {
  const std::string config = std::string(DCP_CONFIGS_DIR) + "/default.yaml";
  ::setenv("DCP_RESUME_FROM", "12345678901234567890", 1);
  std::string e = config_error([&] { load_manager_options(config); });
  ::setenv("DCP_RESUME_FROM", "-4", 1);
  std::string e2 = config_error([&] {
    CheckpointManagerOptions o;
    apply_environment(o);
  });
  ::unsetenv("DCP_RESUME_FROM");
  EXPECT_EQ(e.rfind("$DCP_RESUME_FROM: checkpoint.resume.from: a step must be in 0..", 0), 0u) << e;
  EXPECT_EQ(e2.rfind("$DCP_RESUME_FROM: checkpoint.resume.from: a step", 0), 0u) << e2;
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
