// The manager on 2 real ranks over Gloo: SIGKILL of a rank at each phase of
// a save, then a fresh 2-rank run resumes from the newest committed
// checkpoint; SIGTERM on one rank makes both save the same step and stop; a
// damaged newest checkpoint is moved aside once and saved again.
// (manager_collective_test.cpp: the manager's own rounds failing together.)
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <random>
#include <thread>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace {

// This rank's half of a sharded tensor and a replicated one, both a function of the step.
class RankState : public Stateful {
 public:
  RankState(int rank, int world) : rank_(rank), world_(world) {}
  at::Tensor mine = at::zeros({64, 32});
  at::Tensor shared = at::zeros({100}, at::kDouble);
  int64_t step = 0;
  void set(int64_t s) {
    step = s;
    mine.fill_(static_cast<float>(s * 10 + rank_));
    shared.fill_(s * 0.5);
  }
  bool consistent() const {
    return at::equal(mine, at::full({64, 32}, static_cast<float>(step * 10 + rank_))) &&
           at::equal(shared, at::full({100}, step * 0.5, at::kDouble));
  }
  StateDict state_dict() override {
    return {{"mine", ShardedTensor{{64 * world_, 32}, {Shard{mine, {64 * rank_, 0}}}}},
            {"shared", shared},
            {"step", step}};
  }
  void load_state_dict(const StateDict& sd) override { step = sd.at("step").to_int(); }

 private:
  int rank_, world_;
};

// args: dir, max_steps, raise_sigterm_at (0: never)
DCP_REGISTER_WORKER(manager_rank) {
  CheckpointManagerOptions o;
  o.dir = args.at(0);
  o.save.every_steps = 2;
  o.keep.last = 2;
  o.storage.fsync = false;
  CheckpointManager m(o, ctx.collectives(std::chrono::seconds(5)),
                      ctx.new_collectives("ckpt_async", std::chrono::seconds(5)));
  m.set_phase_callback([](const char* phase, int64_t) {
    testing::mark(std::string("phase_") + phase);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });
  auto state = std::make_shared<RankState>(ctx.rank(), ctx.world_size());
  m.register_stateful("state", state);
  int64_t step = m.resume();
  EXPECT_EQ(state->step, step);
  if (step > 0) EXPECT_TRUE(state->consistent()) << "resumed state of step " << step;
  std::printf("RESUMED %lld\n", static_cast<long long>(step));
  const int64_t max_steps = std::stoll(args.at(1)), sigterm_at = std::stoll(args.at(2));
  while (step < max_steps) {
    ++step;
    state->set(step);
    if (step == sigterm_at && ctx.rank() == 1) std::raise(SIGTERM);
    std::this_thread::sleep_for(std::chrono::milliseconds(4));
    if (m.on_step(step)) {
      std::printf("STOPPED %lld\n", static_cast<long long>(step));
      return 0;
    }
  }
  m.on_train_end(step);
  return 0;
}

// args: dir. A save budget on two ranks whose step times differ: rank 1's
// loop is slower. The coordinator measures and decides; both save the same
// steps. Prints "SAVED s1 s2 ...".
DCP_REGISTER_WORKER(budget_rank) {
  CheckpointManagerOptions o;
  o.dir = args.at(0);
  o.save.every_steps = 0;
  o.save.max_overhead = 0.25;
  o.save.at_end = false;
  o.save.on_signals = {};
  o.async.enabled = false;
  o.keep.last = 1;
  o.storage.fsync = false;
  CheckpointManager m(o, ctx.collectives(std::chrono::seconds(5)));
  m.add_pre_save_callback(
      [](int64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(30)); });
  auto state = std::make_shared<RankState>(ctx.rank(), ctx.world_size());
  m.register_stateful("state", state);
  for (int64_t step = m.resume() + 1; step <= 150; ++step) {
    state->set(step);
    std::this_thread::sleep_for(std::chrono::milliseconds(ctx.rank() == 0 ? 2 : 4));
    m.on_step(step);
  }
  m.wait();
  std::string saved = "SAVED";
  for (const auto& st : m.statistics()) saved += " " + std::to_string(st.step);
  std::printf("%s\nINTERVAL %lld\nSTEP_US %lld\n", saved.c_str(),
              static_cast<long long>(m.budget_state().interval),
              static_cast<long long>(m.budget_state().step_seconds * 1e6));
  return 0;
}

testing::RunOptions run_opts(std::vector<std::string> args) {
  testing::RunOptions o;
  o.args = std::move(args);
  o.timeout = std::chrono::seconds(40);
  o.pg_timeout = std::chrono::milliseconds(5000);
  return o;
}

TEST(ManagerMultiprocTest, TwoRanksSurviveAKilledRankInEveryPhase) {
  testing::TempDir dir;
  const std::string ck = dir.sub("run");
  std::mt19937 rng(7);
  const char* phases[] = {"stage", "write", "metadata", "rename", "retention"};
  int64_t last_committed = 0;
  for (int i = 0; i < 10; ++i) {
    auto o = run_opts({ck, "400", "0"});
    // metadata, rename and retention run on the coordinator (rank 0, also the
    // TCPStore server); stage and write on both: kill either.
    const int phase = i % 5;
    o.kill_rank = phase >= 2 ? 0 : (i / 5) % 2;
    o.kill_at_mark = std::string("phase_") + phases[phase];
    o.kill_delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 8)(rng));
    auto r = testing::run_ranks(2, "manager_rank", o);
    EXPECT_TRUE(r.ranks[o.kill_rank].killed_by_harness) << r.summary();
    EXPECT_FALSE(r.timed_out) << "the surviving rank hung\n" << r.summary();
    // A fresh 2-rank run resumes from the newest committed checkpoint.
    auto committed = list_committed(ck);
    if (committed.empty()) {  // killed before the first commit
      ASSERT_EQ(last_committed, 0) << "kill " << i << ": every commit was lost";
      continue;
    }
    EXPECT_GE(committed.back().step, last_committed) << "a commit was lost";
    last_committed = committed.back().step;
    auto check = testing::run_ranks(2, "manager_rank", run_opts({ck, "0", "0"}));
    ASSERT_TRUE(check.ok()) << check.summary();
    EXPECT_NE(check.ranks[0].output.find("RESUMED " + std::to_string(last_committed)),
              std::string::npos)
        << check.ranks[0].output;
  }
}

TEST(ManagerMultiprocTest, SigtermOnOneRankStopsBothAtTheSameStep) {
  testing::TempDir dir;
  const std::string ck = dir.sub("run");
  auto r = testing::run_ranks(2, "manager_rank", run_opts({ck, "1000", "7"}));
  ASSERT_TRUE(r.ok()) << r.summary();
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_NE(r.ranks[rank].output.find("STOPPED 7"), std::string::npos) << r.ranks[rank].output;
  auto committed = list_committed(ck);
  ASSERT_FALSE(committed.empty());
  EXPECT_EQ(committed.back().step, 7);
  EXPECT_EQ(committed.back().world_size, 2);
  auto next = testing::run_ranks(2, "manager_rank", run_opts({ck, "9", "0"}));
  ASSERT_TRUE(next.ok()) << next.summary();
  EXPECT_NE(next.ranks[1].output.find("RESUMED 7"), std::string::npos) << next.ranks[1].output;
}

// The newest checkpoint (periodic, step 8) is damaged: both ranks fall back
// to step 6 together, only the coordinator moves step 8 aside (once), the run
// saves step 8 again, and a later commit removes the damaged copy.
TEST(ManagerMultiprocTest, ADamagedNewestIsMovedAsideOnceAndSavedAgain) {
  testing::TempDir dir;
  const std::string ck = dir.sub("run");
  auto steps = [&] {
    std::vector<int64_t> out;
    for (const auto& c : list_committed(ck)) out.push_back(c.step);
    return out;
  };
  auto first = testing::run_ranks(2, "manager_rank", run_opts({ck, "8", "0"}));
  ASSERT_TRUE(first.ok()) << first.summary();
  ASSERT_EQ(steps(), (std::vector<int64_t>{6, 8}));
  const std::string step8 = ck + "/" + CheckpointManager::step_dir_name(8);
  const std::string aside = ck + "/.damaged." + CheckpointManager::step_dir_name(8) + ".0";
  for (const auto& f : testing::data_files(step8)) {  // a bit of every rank's data
    std::string data = testing::read_file(f);
    data[data.size() / 2] ^= 1;
    testing::write_file(f, data);
  }
  auto second = testing::run_ranks(2, "manager_rank", run_opts({ck, "8", "0"}));
  ASSERT_TRUE(second.ok()) << second.summary();
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_NE(second.ranks[rank].output.find("RESUMED 6"), std::string::npos)
        << second.ranks[rank].output;
  EXPECT_NE(second.ranks[0].output.find("moved '" + step8 + "' aside to '" + aside + "'"),
            std::string::npos)
      << second.ranks[0].output;
  EXPECT_EQ(second.ranks[1].output.find("moved '"), std::string::npos) << second.ranks[1].output;
  EXPECT_EQ(steps(), (std::vector<int64_t>{6, 8}));
  EXPECT_TRUE(std::filesystem::exists(aside));
  auto third = testing::run_ranks(2, "manager_rank", run_opts({ck, "8", "0"}));
  ASSERT_TRUE(third.ok()) << third.summary();
  EXPECT_NE(third.ranks[1].output.find("RESUMED 8"), std::string::npos) << third.ranks[1].output;
  EXPECT_TRUE(std::filesystem::exists(aside));
  auto fourth = testing::run_ranks(2, "manager_rank", run_opts({ck, "10", "0"}));
  ASSERT_TRUE(fourth.ok()) << fourth.summary();
  EXPECT_EQ(steps(), (std::vector<int64_t>{8, 10}));
  EXPECT_FALSE(std::filesystem::exists(aside));
}

// The budget's decision is the coordinator's, broadcast: both ranks save
// the same steps; only the coordinator logs the interval and the per-save
// lines at info.
TEST(ManagerMultiprocTest, ABudgetDecidesTheSameStepsOnEveryRank) {
  testing::TempDir dir;
  auto r = testing::run_ranks(2, "budget_rank", run_opts({dir.sub("run")}));
  ASSERT_TRUE(r.ok()) << r.summary();
  auto line = [&](int rank, const std::string& head) {
    const std::string& out = r.ranks[rank].output;
    const size_t at = out.find(head);
    return at == std::string::npos ? std::string() : out.substr(at, out.find('\n', at) - at);
  };
  const std::string saved = line(0, "SAVED ");
  EXPECT_EQ(saved, line(1, "SAVED ")) << r.summary();
  EXPECT_NE(saved.find("SAVED 4 "), std::string::npos) << r.summary();
  // The coordinator's step time is the slower rank's (4 ms of sleep, not its
  // own 2 ms): both wait for each other in each step's decision round.
  EXPECT_GE(std::stoll(line(0, "STEP_US ").substr(8)), 4000) << r.summary();
  EXPECT_GE(std::stoll(line(0, "INTERVAL ").substr(9)), 1) << r.summary();
  EXPECT_EQ(line(1, "INTERVAL "), "INTERVAL 0") << r.summary();  // rank 1 only follows
  EXPECT_NE(r.ranks[0].output.find("save interval: every "), std::string::npos) << r.summary();
  EXPECT_NE(r.ranks[0].output.find("[info] checkpoint of step 4 committed"), std::string::npos)
      << r.summary();
  EXPECT_EQ(r.ranks[1].output.find("save interval: every "), std::string::npos) << r.summary();
  EXPECT_EQ(r.ranks[1].output.find("committed"), std::string::npos) << r.summary();
}

}  // namespace
}  // namespace manager
}  // namespace dcp
