// The save interval from a budget (save.max_overhead, save.mtbf_seconds),
// its YAML keys and their errors, and the log: one info line per committed
// save, the level from checkpoint.log.level or $DCP_LOG_LEVEL.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <sstream>
#include <thread>

#include "dcp/error.h"
#include "dcp/logging.h"
#include "dcp/manager/manager.h"
#include "dcp/memory_storage.h"
#include "step_state.h"

namespace dcp {
namespace manager {
namespace {

std::string parse_error(const std::string& yaml) {
  try {
    parse_manager_options(yaml, "inline");
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError for " << yaml;
  return "";
}

// What dcp's logger writes while it lives, at `level`; the level is restored after.
class LogCapture {
 public:
  explicit LogCapture(spdlog::level::level_enum level = spdlog::level::info)
      : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)), saved_(logger().level()) {
    sink_->set_pattern("[%l] %v");
    logger().sinks().push_back(sink_);
    logger().set_level(level);
  }
  ~LogCapture() {
    auto& sinks = logger().sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
    logger().set_level(saved_);
  }
  std::string text() const { return out_.str(); }
  // Lines that hold `what`.
  int count(const std::string& what) const {
    std::istringstream in(out_.str());
    int n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(what) != std::string::npos;
    return n;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
  spdlog::level::level_enum saved_;
};

// ---- the formula ------------------------------------------------------------------

TEST(BudgetIntervalTest, OverheadYoungDalyAndBoth) {
  SavePolicy p;
  EXPECT_EQ(interval_from_budget(p, 1, 0.1).steps, 0);  // no budget
  p.max_overhead = 0.05;
  // cost 2 s, step 0.1 s: 2 / (k * 0.1 + 2) <= 0.05  <=>  k >= 380.
  BudgetInterval b = interval_from_budget(p, 2, 0.1);
  EXPECT_EQ(b.overhead_steps, 380);
  EXPECT_EQ(b.steps, 380);
  EXPECT_LE(2 / (b.steps * 0.1 + 2), 0.05 + 1e-12);
  EXPECT_GT(2 / ((b.steps - 1) * 0.1 + 2), 0.05);
  EXPECT_NE(b.reason.find("max_overhead 0.05 needs >= 380 steps"), std::string::npos) << b.reason;
  // Young/Daly: sqrt(2 * 2 s * 3600 s) = 120 s = 1200 steps of 0.1 s.
  p.max_overhead = 0;
  p.mtbf_seconds = 3600;
  b = interval_from_budget(p, 2, 0.1);
  EXPECT_EQ(b.young_daly_steps, 1200);
  EXPECT_EQ(b.steps, 1200);
  // Both: Young/Daly's, never shorter than the overhead allows.
  p.max_overhead = 0.05;
  EXPECT_EQ(interval_from_budget(p, 2, 0.1).steps, 1200);
  p.mtbf_seconds = 60;  // sqrt(2 * 2 * 60) = 15.5 s = 155 steps < 380
  b = interval_from_budget(p, 2, 0.1);
  EXPECT_EQ(b.young_daly_steps, 155);
  EXPECT_EQ(b.steps, 380);
  EXPECT_NE(b.reason.find("the overhead's floor"), std::string::npos) << b.reason;
  // Never below one step; unknown costs choose nothing.
  EXPECT_EQ(interval_from_budget(p, 0, 0.1).steps, 1);
  EXPECT_EQ(interval_from_budget(p, 2, 0).steps, 0);
}

// ---- the YAML keys ------------------------------------------------------------------

TEST(BudgetConfigTest, KeysAndTheDefaultOfEverySteps) {
  CheckpointManagerOptions o = parse_manager_options(
      "checkpoint:\n  save: {max_overhead: 0.05, mtbf_seconds: 3600}\n"
      "  log: {level: debug}\n",
      "inline");
  EXPECT_DOUBLE_EQ(o.save.max_overhead, 0.05);
  EXPECT_DOUBLE_EQ(o.save.mtbf_seconds, 3600);
  EXPECT_EQ(o.save.every_steps, 0);  // the budget replaces it
  EXPECT_EQ(o.log.level, "debug");
  o = parse_manager_options("checkpoint:\n  save: {every_steps: 500, mtbf_seconds: 1e4}\n", "i");
  EXPECT_EQ(o.save.every_steps, 500);  // given: it saves as well
  o = parse_manager_options("checkpoint:\n  save: {every_seconds: 5}\n", "i");
  EXPECT_EQ(o.save.every_steps, 1000);  // no budget: the default
  EXPECT_EQ(o.log.level, "");
  o = parse_manager_options("checkpoint:\n  save: {max_overhead: 0, mtbf_seconds: 0}\n", "i");
  EXPECT_EQ(o.save.every_steps, 1000);  // a budget of 0 is off
  // The shipped configs: default.yaml shows the keys off; budget.yaml uses them.
  o = load_manager_options(std::string(DCP_CONFIGS_DIR) + "/default.yaml");
  EXPECT_EQ(o.save.every_steps, 1000);
  EXPECT_EQ(o.save.max_overhead, 0);
  o = load_manager_options(std::string(DCP_CONFIGS_DIR) + "/budget.yaml");
  EXPECT_EQ(o.save.every_steps, 0);
  EXPECT_DOUBLE_EQ(o.save.max_overhead, 0.05);
  EXPECT_DOUBLE_EQ(o.save.mtbf_seconds, 86400);
  EXPECT_EQ(o.log.level, "info");
}

TEST(BudgetConfigTest, BadValuesNameKeyAndLine) {
  const struct {
    const char* yaml;
    const char* error;
  } cases[] = {
      {"checkpoint:\n  save:\n    max_overhead: 1.5\n",
       "inline:3: checkpoint.save.max_overhead: must be a fraction of wall time in (0, 1)"},
      {"checkpoint:\n  save:\n    max_overhead: 1\n",
       "inline:3: checkpoint.save.max_overhead: must"},
      {"checkpoint:\n  save:\n    max_overhead: -0.1\n", "inline:3: checkpoint.save.max_overhead"},
      {"checkpoint:\n  save:\n    max_overhead: 5%\n",
       "inline:3: checkpoint.save.max_overhead: must be a fraction of wall time in (0, 1), e.g. "
       "0.05 for 5% (0: off), not '5%'"},
      {"checkpoint:\n  save:\n    max_overhead: .nan\n", "inline:3: checkpoint.save.max_overhead"},
      {"checkpoint:\n  save:\n    mtbf_seconds: -60\n",
       "inline:3: checkpoint.save.mtbf_seconds: must be a finite number of seconds > 0 (0: off), "
       "not -60"},
      {"checkpoint:\n  save:\n    mtbf_seconds: .inf\n", "inline:3: checkpoint.save.mtbf_seconds"},
      {"checkpoint:\n  save:\n    mtbf_seconds: \"3600\"\n",
       "inline:3: checkpoint.save.mtbf_seconds"},
      {"checkpoint:\n  log:\n    level: loud\n",
       "inline:3: checkpoint.log.level: must be trace, debug, info, warn, error, critical or off, "
       "not 'loud'"},
      {"checkpoint:\n  log:\n    colour: red\n", "inline:3: checkpoint.log.colour: unknown key"},
  };
  for (const auto& c : cases) {
    const std::string e = parse_error(c.yaml);
    EXPECT_EQ(e.rfind(c.error, 0), 0u) << c.yaml << "\n-> " << e;
  }
  // validate() on a struct built in code: the same checks.
  CheckpointManagerOptions o;
  o.save.max_overhead = 1;
  EXPECT_THROW(validate(o), ConfigError);
  o.save.max_overhead = 0.5;
  o.save.mtbf_seconds = std::nan("");
  EXPECT_THROW(validate(o), ConfigError);
  // $DCP_LOG_LEVEL overrides the YAML, and is checked.
  ::setenv("DCP_LOG_LEVEL", "warn", 1);
  o = parse_manager_options("checkpoint:\n  log: {level: debug}\n", "i");
  apply_environment(o);
  EXPECT_EQ(o.log.level, "warn");
  ::setenv("DCP_LOG_LEVEL", "chatty", 1);
  try {
    apply_environment(o);
    ADD_FAILURE() << "no error for $DCP_LOG_LEVEL=chatty";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("$DCP_LOG_LEVEL: checkpoint.log.level: must be", 0), 0u)
        << e.what();
  }
  ::unsetenv("DCP_LOG_LEVEL");
}

// ---- a stand-in trainer with controlled costs -------------------------------------

class ManagerBudgetTest : public ::testing::Test {
 protected:
  ManagerBudgetTest() {
    static int n = 0;
    path_ = "budget_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++) + "/run";
  }
  ~ManagerBudgetTest() override { clear_memory_checkpoints(path_); }
  CheckpointManagerOptions opts() const {
    CheckpointManagerOptions o;
    o.dir = "memory://" + path_;
    o.save.every_steps = 0;
    o.save.on_signals = {};
    o.save.at_end = false;
    o.async.enabled = false;  // a save costs the loop its whole duration
    o.storage.fsync = false;
    o.keep.last = 2;
    return o;
  }
  // Trains `steps` steps of `step_ms` each with saves costing `save_ms` more
  // than they do (a pre-save callback sleeps); returns the steps saved.
  std::vector<int64_t> train(CheckpointManager& m, int64_t steps, int step_ms, int save_ms) {
    auto s = std::make_shared<StepState>();
    m.register_stateful("state", s);
    m.add_pre_save_callback(
        [save_ms](int64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(save_ms)); });
    for (int64_t step = m.resume() + 1; step <= steps; ++step) {
      std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
      s->set(step);
      m.on_step(step);
    }
    m.wait();
    std::vector<int64_t> saved;
    for (const auto& st : m.statistics()) saved.push_back(st.step);
    return saved;
  }
  std::string path_;
};

TEST_F(ManagerBudgetTest, TheIntervalFollowsTheMeasuredCosts) {
  CheckpointManagerOptions o = opts();
  o.save.max_overhead = 0.2;  // cost 40 ms, step 4 ms: >= 40 steps
  o.save.mtbf_seconds = 1;    // sqrt(2 * 0.04 s * 1 s) = 0.283 s = 71 steps of 4 ms
  const BudgetInterval nominal = interval_from_budget(o.save, 0.040, 0.004);
  ASSERT_EQ(nominal.overhead_steps, 40);
  ASSERT_EQ(nominal.young_daly_steps, 71);
  LogCapture log;
  CheckpointManager m(o);
  const std::vector<int64_t> saved = train(m, 400, 4, 40);
  const BudgetState st = m.budget_state();
  // The estimates are what the trainer costs (sleeps run long on a busy machine).
  EXPECT_NEAR(st.save_cost, 0.040, 0.015) << log.text();
  EXPECT_NEAR(st.step_seconds, 0.004, 0.0015) << log.text();
  // The interval is the formula's for them (within the 20% hysteresis), and
  // the nominal costs' within a tolerance.
  const BudgetInterval want = interval_from_budget(o.save, st.save_cost, st.step_seconds);
  EXPECT_LE(std::abs(st.interval - want.steps), 0.2 * want.steps + 1) << log.text();
  EXPECT_NEAR(st.interval, nominal.steps, 0.35 * nominal.steps) << log.text();
  // A first save after three measured steps, then one per interval.
  ASSERT_GE(saved.size(), 4u) << log.text();
  EXPECT_EQ(saved[0], 4);
  for (size_t i = 2; i < saved.size(); ++i)
    EXPECT_NEAR(saved[i] - saved[i - 1], st.interval, 0.35 * st.interval) << log.text();
  // Each choice is logged with its reason.
  EXPECT_EQ(log.count("save interval: a first save, of step 4, measures what a save costs"), 1)
      << log.text();
  EXPECT_EQ(log.count("save interval: every "), st.changes) << log.text();
  EXPECT_GE(st.changes, 1);
  EXPECT_NE(log.text().find("Young/Daly sqrt(2 * cost * mtbf 1 s)"), std::string::npos)
      << log.text();
  EXPECT_NE(log.text().find("max_overhead 0.2 needs >= "), std::string::npos) << log.text();
}

TEST_F(ManagerBudgetTest, OverheadAloneAndAChangeOfCosts) {
  CheckpointManagerOptions o = opts();
  o.save.max_overhead = 0.5;  // cost 20 ms, step 2 ms: >= 10 steps; then 60 ms: >= 30
  LogCapture log;
  CheckpointManager m(o);
  auto s = std::make_shared<StepState>();
  m.register_stateful("state", s);
  int save_ms = 20;
  m.add_pre_save_callback(
      [&](int64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(save_ms)); });
  int64_t step = 0;
  auto run_to = [&](int64_t to) {
    while (step < to) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      s->set(++step);
      m.on_step(step);
    }
  };
  run_to(80);
  const int64_t first = m.budget_state().interval;
  EXPECT_NEAR(first, 10, 4) << log.text();
  save_ms = 60;  // saves get slower: the interval grows, and the change is logged
  run_to(400);
  const BudgetState st = m.budget_state();
  EXPECT_NEAR(st.interval, 30, 10) << log.text();
  EXPECT_GE(st.changes, 2) << log.text();
  EXPECT_NE(log.text().find("(was " + std::to_string(first) + ")"), std::string::npos)
      << log.text();
}

TEST_F(ManagerBudgetTest, EverySecondsAndAtStepsStillSave) {
  CheckpointManagerOptions o = opts();
  o.save.mtbf_seconds = 1e6;  // sqrt(2 * 5 ms * 1e6 s) = 100 s: no budget save after the first
  o.save.at_steps = {7, 13};
  o.save.every_seconds = 0.15;
  CheckpointManager m(o);
  const std::vector<int64_t> saved = train(m, 100, 5, 5);  // 0.5 s of steps
  auto has = [&](int64_t s) { return std::find(saved.begin(), saved.end(), s) != saved.end(); };
  EXPECT_TRUE(has(4));  // the budget's first save, to measure the cost
  EXPECT_TRUE(has(7));
  EXPECT_TRUE(has(13));
  // every_seconds: about one save per 0.15 s besides those.
  EXPECT_GE(saved.size(), 5u);
  EXPECT_GT(m.budget_state().interval, 1000);
}

// ---- the log ------------------------------------------------------------------------

TEST_F(ManagerBudgetTest, OneInfoLinePerCommittedSave) {
  CheckpointManagerOptions o = opts();
  o.save.every_steps = 5;
  o.keep.last = 1;  // retention removes a checkpoint at every save: at debug
  {
    LogCapture log;
    CheckpointManager m(o);
    train(m, 20, 0, 0);
    EXPECT_EQ(log.count("[info]"), 5) << log.text();  // the resume line + 4 saves
    EXPECT_EQ(log.count("[info] checkpoint of step "), 4) << log.text();
    EXPECT_EQ(log.count("[info] checkpoint of step 20 committed: "), 1) << log.text();
    EXPECT_EQ(log.count("GB/s"), 0) << log.text();  // 8 KiB: no rate
  }
  {
    LogCapture log(spdlog::level::debug);
    o.dir += "2";
    CheckpointManager m(o);
    train(m, 10, 0, 0);
    EXPECT_EQ(log.count("[debug] saved checkpoint "), 2) << log.text();
    EXPECT_EQ(log.count("[debug] retention: removing checkpoint of step 5"), 1) << log.text();
    clear_memory_checkpoints(path_ + "2");
  }
}

TEST_F(ManagerBudgetTest, TheLevelFromTheOptions) {
  LogCapture log;
  CheckpointManagerOptions o = opts();
  o.save.every_steps = 5;
  o.log.level = "warn";
  CheckpointManager m(o);
  EXPECT_EQ(logger().level(), spdlog::level::warn);
  train(m, 10, 0, 0);
  EXPECT_EQ(log.count("[info]"), 0) << log.text();
  EXPECT_EQ(m.statistics().size(), 2u);
}

}  // namespace
}  // namespace manager
}  // namespace dcp
