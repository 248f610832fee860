// The manager's own collective rounds fail fast and together, on 2 and 3 real
// ranks over Gloo: when the constructor fails on the coordinator, the resume
// listing fails, a pre-save callback or a state_dict() throws on one rank, or
// a data write fails on one rank (ENOSPC: then the .tmp directory goes too),
// every rank throws the same CheckpointError long before the collective
// timeout (120 s here), the failing rank included; afterwards every rank
// meets the others at a barrier of the process group, still in step.
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <thread>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/fault_injection_env.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr auto kCollectiveTimeout = std::chrono::seconds(120);
// A liveness bound, not a speed figure: without the checked rounds the ranks
// that did not fail would wait for the whole collective timeout.
constexpr double kPromptSeconds = 30;

// A state whose state_dict() throws on this rank while `fail` is set.
class State : public Stateful {
 public:
  explicit State(int rank) : rank_(rank) {}
  at::Tensor w = at::ones({16, 8});
  bool fail = false;
  StateDict state_dict() override {
    if (fail) throw std::runtime_error("state_dict() failed on rank " + std::to_string(rank_));
    return {{"w", w}, {"rank" + std::to_string(rank_), rank_}};  // per-rank values, per-rank keys
  }
  void load_state_dict(const StateDict&) override {}

 private:
  int64_t rank_;
};

CheckpointManagerOptions options(const std::string& dir, bool async) {
  CheckpointManagerOptions o;
  o.dir = dir;
  o.save.every_steps = 0;
  o.save.on_signals = {};
  o.async.enabled = async;
  o.keep.last = 0;
  o.storage.fsync = false;
  return o;
}

void barrier(dist::DistContext& ctx) { ctx.process_group()->barrier()->wait(); }

// Every rank: `fn` must throw a CheckpointError whose text holds `expect`,
// within kPromptSeconds; then all ranks meet at a barrier of the process group.
void expect_fails_together(dist::DistContext& ctx, const std::string& what,
                           const std::function<void()>& fn, const std::string& expect) {
  const auto start = Clock::now();
  try {
    fn();
    ADD_FAILURE() << what << ": no error on rank " << ctx.rank();
  } catch (const CheckpointError& e) {
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_LT(secs, kPromptSeconds) << what << ": rank " << ctx.rank() << " waited";
    EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << what << ": " << e.what();
    std::printf("FAILED TOGETHER %s after %.2f s\n", what.c_str(), secs);
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": rank " << ctx.rank() << " threw another error: " << e.what();
  }
  barrier(ctx);  // still in step
}

// args: dir. The coordinator cannot open the directory: another manager holds
// its lock, then the path is a regular file.
DCP_REGISTER_WORKER(ctor_fails) {
  const std::string dir = args.at(0);
  auto coll = ctx.collectives(kCollectiveTimeout);
  std::unique_ptr<CheckpointManager> holder;
  if (ctx.rank() == 0) holder = std::make_unique<CheckpointManager>(options(dir, false));
  barrier(ctx);
  expect_fails_together(
      ctx, "lock held", [&] { CheckpointManager m(options(dir, false), coll); },
      "in use by another CheckpointManager");
  holder.reset();  // released: now every rank opens it
  { CheckpointManager m(options(dir, false), coll); }
  barrier(ctx);

  const std::string file = dir + ".file";
  if (ctx.rank() == 0) testing::write_file(file, "not a directory");
  barrier(ctx);
  expect_fails_together(
      ctx, "path is a file", [&] { CheckpointManager m(options(file, false), coll); },
      "cannot create checkpoint directory '" + file + "'");
  return 0;
}

// args: dir, how ("file" | "symlink"). The directory cannot be listed when
// resume() runs: it was replaced by a regular file or a dangling symlink.
DCP_REGISTER_WORKER(listing_fails) {
  const std::string dir = args.at(0), how = args.at(1);
  CheckpointManager m(options(dir, false), ctx.collectives(kCollectiveTimeout));
  m.register_stateful("state", std::make_shared<State>(ctx.rank()));
  barrier(ctx);
  if (ctx.rank() == 0) {
    fs::rename(dir, dir + ".moved");
    if (how == "file")
      testing::write_file(dir, "not a directory");
    else
      fs::create_directory_symlink(dir + ".nowhere", dir);
  }
  barrier(ctx);
  const std::string errno_text = how == "file" ? "Not a directory" : "No such file or directory";
  expect_fails_together(
      ctx, "listing (" + how + ")", [&] { m.resume(); },
      "cannot list checkpoint directory '" + dir + "': " + errno_text);
  return 0;
}

// args: dir, what ("pre_save" | "state_dict"). For each rank k in turn, sync
// and async: a pre-save callback or a state_dict() throws on rank k only;
// then the same manager saves again, successfully.
DCP_REGISTER_WORKER(save_fails_on_one_rank) {
  const std::string dir = args.at(0), what = args.at(1);
  int64_t step = 0;
  for (bool async : {false, true}) {
    int failing = -1;  // the rank whose pre-save callback throws
    CheckpointManager m(options(dir + (async ? "/async" : "/sync"), async),
                        ctx.collectives(kCollectiveTimeout),
                        async ? ctx.new_collectives("ckpt_async", kCollectiveTimeout) : nullptr);
    auto state = std::make_shared<State>(ctx.rank());
    m.register_stateful("state", state);
    m.add_pre_save_callback([&](int64_t s) {
      if (what == "pre_save" && failing == ctx.rank())
        throw std::runtime_error("pre-save callback of step " + std::to_string(s) +
                                 " failed on rank " + std::to_string(ctx.rank()));
    });
    for (int k = 0; k < ctx.world_size(); ++k) {
      failing = k;
      state->fail = what == "state_dict" && k == ctx.rank();
      ++step;
      const std::string expect = what == "pre_save"
                                     ? "pre-save callback of step " + std::to_string(step) +
                                           " failed on rank " + std::to_string(k)
                                     : "state_dict() failed on rank " + std::to_string(k);
      expect_fails_together(
          ctx, what + " on rank " + std::to_string(k) + (async ? " (async)" : " (sync)"),
          [&] {
            m.save(step);
            m.wait();
          },
          expect);
      failing = -1;
      state->fail = false;
      ++step;
      m.save(step);  // the manager and its groups are still in step
      m.wait();
      EXPECT_EQ(m.committed().back().step, step);
    }
  }
  return 0;
}

// args: dir. For each rank k in turn, sync and async: the first data write
// of rank k's save fails with ENOSPC (its own FaultInjectionEnv); every rank
// throws the same CheckpointError, the failed save's .tmp directory (all
// ranks' files in it) is deleted, the earlier checkpoint stays committed, and
// the next save commits.
DCP_REGISTER_WORKER(write_fails_on_one_rank) {
  const std::string dir = args.at(0);
  int64_t step = 0;
  for (bool async : {false, true}) {
    testing::TempDir trash;
    FaultInjectionEnv env(posix_env(), trash.sub("trash"));
    env.set_forward_syncs(false);
    auto o = options(dir + (async ? "/async" : "/sync"), async);
    o.env = &env;
    CheckpointManager m(o, ctx.collectives(kCollectiveTimeout),
                        async ? ctx.new_collectives("ckpt_async", kCollectiveTimeout) : nullptr);
    m.register_stateful("state", std::make_shared<State>(ctx.rank()));
    m.save(++step);
    m.wait();
    for (int k = 0; k < ctx.world_size(); ++k) {
      if (k == ctx.rank()) env.fail_nth(FaultOp::kAppend, 0, ENOSPC);
      ++step;
      expect_fails_together(
          ctx, "ENOSPC on rank " + std::to_string(k) + (async ? " (async)" : " (sync)"),
          [&] {
            m.save(step);
            m.wait();
          },
          "No space left on device");
      env.disarm();
      if (ctx.rank() == 0) {
        const auto deadline = Clock::now() + std::chrono::seconds(10);
        bool left = true;
        while (left && Clock::now() < deadline) {
          left = false;
          for (const auto& e : fs::directory_iterator(o.dir))
            left = left || e.path().filename().string().rfind(".tmp.", 0) == 0;
          if (left) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        EXPECT_FALSE(left) << "the failed save's .tmp directory is still in " << o.dir << " (rank "
                           << k << " failed)";
        EXPECT_EQ(m.committed().back().step, step - 1);
      }
      barrier(ctx);
      m.save(++step);  // with the space back
      m.wait();
      EXPECT_EQ(m.committed().back().step, step);
    }
  }
  return 0;
}

testing::RunOptions run_opts(std::vector<std::string> args) {
  testing::RunOptions o;
  o.args = std::move(args);
  o.timeout = std::chrono::seconds(100);  // below the collective timeout: a hang fails here
  o.pg_timeout = kCollectiveTimeout;
  return o;
}

class ManagerCollectiveTest : public ::testing::TestWithParam<int> {};  // world size

TEST_P(ManagerCollectiveTest, ConstructorFailureOnTheCoordinator) {
  testing::TempDir dir;
  auto r = testing::run_ranks(GetParam(), "ctor_fails", run_opts({dir.sub("run")}));
  ASSERT_TRUE(r.ok()) << r.summary();
}

TEST_P(ManagerCollectiveTest, ResumeListingFailure) {
  for (const char* how : {"file", "symlink"}) {
    testing::TempDir dir;
    auto r = testing::run_ranks(GetParam(), "listing_fails", run_opts({dir.sub("run"), how}));
    ASSERT_TRUE(r.ok()) << how << "\n" << r.summary();
  }
}

TEST_P(ManagerCollectiveTest, PreSaveCallbackThrowsOnEachRank) {
  testing::TempDir dir;
  auto r = testing::run_ranks(GetParam(), "save_fails_on_one_rank",
                              run_opts({dir.sub("run"), "pre_save"}));
  ASSERT_TRUE(r.ok()) << r.summary();
}

TEST_P(ManagerCollectiveTest, StateDictThrowsOnEachRank) {
  testing::TempDir dir;
  auto r = testing::run_ranks(GetParam(), "save_fails_on_one_rank",
                              run_opts({dir.sub("run"), "state_dict"}));
  ASSERT_TRUE(r.ok()) << r.summary();
}

TEST_P(ManagerCollectiveTest, AWriteFailsOnEachRankAndItsTmpIsDeleted) {
  testing::TempDir dir;
  auto r = testing::run_ranks(GetParam(), "write_fails_on_one_rank", run_opts({dir.sub("run")}));
  ASSERT_TRUE(r.ok()) << r.summary();
}

INSTANTIATE_TEST_SUITE_P(Ranks, ManagerCollectiveTest, ::testing::Values(2, 3),
                         [](const auto& info) { return std::to_string(info.param) + "_ranks"; });

}  // namespace
}  // namespace manager
}  // namespace dcp
