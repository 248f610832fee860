// Errors at the edges of the protocol rounds: a Stateful object's
// state_dict() or load_state_dict() throws on one rank (sync save, async
// save, load, load_all's template), or a rank cannot make its storage
// writer. Every rank, the thrower too, must throw the same CheckpointError
// within seconds, although the collectives would wait two minutes; then
// every rank is still alive and in step (a barrier and a good save follow).
//
// The dead and hung peers of the c10d adapter are told apart here too.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

using Clock = std::chrono::steady_clock;
using testing::run_ranks;
using testing::RunOptions;

constexpr auto kCollectiveTimeout = std::chrono::minutes(2);
// Far below the timeout: ranks share two cores with LibTorch start-up.
constexpr double kPromptSeconds = 30.0;

// state_dict() or load_state_dict() throws on `thrower` (std::runtime_error,
// not a dcp::Error: what a user's object would throw).
class Flaky : public Stateful {
 public:
  Flaky(bool throw_on_save, bool throw_on_load)
      : throw_on_save_(throw_on_save), throw_on_load_(throw_on_load) {}
  StateDict state_dict() override {
    if (throw_on_save_) throw std::runtime_error("boom in state_dict");
    return {{"t", t_}, {"n", 7}};
  }
  void load_state_dict(const StateDict& sd) override {
    if (throw_on_load_) throw std::runtime_error("boom in load_state_dict");
    (void)sd;
  }

 private:
  bool throw_on_save_, throw_on_load_;
  at::Tensor t_ = at::arange(6, at::kFloat);
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Checks the error every rank threw: one failure, of the thrower, in `step`,
// naming `what`; no backtrace.
void expect_failure(const CheckpointError& e, int thrower, const std::string& step,
                    const std::string& what, double secs, int rank) {
  std::printf("rank %d: CheckpointError after %.2f s: %s\n", rank, secs, e.what());
  EXPECT_LT(secs, kPromptSeconds) << "rank " << rank << " waited for the collectives' timeout";
  ASSERT_EQ(e.failures().size(), 1u) << e.what();
  EXPECT_EQ(e.failures()[0].rank, thrower) << e.what();
  EXPECT_EQ(e.failures()[0].step, step) << e.what();
  EXPECT_NE(e.failures()[0].message.find(what), std::string::npos) << e.what();
  EXPECT_EQ(std::string(e.what()).find("Exception raised from"), std::string::npos) << e.what();
}

// After the failure every rank is alive and the group still works.
void expect_in_step(dist::DistContext& ctx, const std::shared_ptr<Collectives>& coll,
                    const std::string& dir) {
  coll->barrier();
  SaveOptions so;
  so.checkpoint_id = dir + "/after";
  so.collectives = coll;
  save({{"r" + std::to_string(ctx.rank()), at::ones({4})}, {"shared", 1}}, so);
  EXPECT_TRUE(is_committed_checkpoint(dir + "/after"));
}

// args: dir, thrower, case.
DCP_REGISTER_WORKER(edge_error) {
  const std::string dir = args.at(0);
  const int thrower = std::stoi(args.at(1));
  const std::string what = args.at(2);
  const bool me = ctx.rank() == thrower;
  auto coll = ctx.collectives(kCollectiveTimeout);

  if (what == "save_state_dict" || what == "bad_writer") {
    SaveOptions so;
    so.checkpoint_id = dir + "/ck";
    if (what == "bad_writer" && me) so.checkpoint_id = "nosuchscheme://x";
    so.collectives = coll;
    StateDict sd{{"w", at::ones({8})},
                 {"obj", std::make_shared<Flaky>(what == "save_state_dict" && me, false)}};
    const auto t0 = Clock::now();
    try {
      save(sd, so);
      ADD_FAILURE() << "the save succeeded";
    } catch (const CheckpointError& e) {
      if (what == "save_state_dict")
        expect_failure(e, thrower, "state_dict", "state_dict() of 'obj': boom", seconds_since(t0),
                       ctx.rank());
      else
        expect_failure(e, thrower, "plan:local", "nosuchscheme", seconds_since(t0), ctx.rank());
    }
    EXPECT_FALSE(is_committed_checkpoint(dir + "/ck"));
  } else if (what == "async_state_dict") {
    AsyncSaver saver;
    SaveOptions so;
    so.checkpoint_id = dir + "/ck";
    so.collectives = ctx.new_collectives("async", kCollectiveTimeout);
    StateDict sd{{"w", at::ones({8})}, {"obj", std::make_shared<Flaky>(me, false)}};
    const auto t0 = Clock::now();
    try {
      AsyncSaveHandle h = saver.save(sd, so);
      EXPECT_FALSE(me) << "the thrower's save() returned a handle";
      h.get();
      ADD_FAILURE() << "the async save succeeded";
    } catch (const CheckpointError& e) {
      expect_failure(e, thrower, "state_dict", "state_dict() of 'obj': boom", seconds_since(t0),
                     ctx.rank());
    }
    saver.wait_all();
    EXPECT_FALSE(is_committed_checkpoint(dir + "/ck"));
  } else if (what == "load_state_dict" || what == "load_resolve") {
    SaveOptions so;
    so.checkpoint_id = dir + "/ck";
    so.collectives = coll;
    save({{"w", at::ones({8})}, {"obj", std::make_shared<Flaky>(false, false)}}, so);
    LoadOptions lo;
    lo.checkpoint_id = dir + "/ck";
    lo.collectives = coll;
    StateDict sd{{"w", at::zeros({8})},
                 {"obj", std::make_shared<Flaky>(what == "load_resolve" && me,
                                                 what == "load_state_dict" && me)}};
    const auto t0 = Clock::now();
    try {
      load(sd, lo);
      ADD_FAILURE() << "the load succeeded";
    } catch (const CheckpointError& e) {
      if (what == "load_resolve")
        expect_failure(e, thrower, "state_dict", "state_dict() of 'obj': boom", seconds_since(t0),
                       ctx.rank());
      else
        expect_failure(e, thrower, "load_state_dict", "load_state_dict() of 'obj': boom",
                       seconds_since(t0), ctx.rank());
    }
  } else if (what == "load_all_reader") {
    SaveOptions so;
    so.checkpoint_id = dir + "/ck";
    so.collectives = coll;
    save({{"w", at::ones({8})}}, so);
    LoadOptions lo;
    lo.checkpoint_id = me ? "nosuchscheme://x" : dir + "/ck";
    lo.collectives = coll;
    const auto t0 = Clock::now();
    try {
      load_all(lo);
      ADD_FAILURE() << "load_all succeeded";
    } catch (const CheckpointError& e) {
      expect_failure(e, thrower, "read_metadata:local", "nosuchscheme", seconds_since(t0),
                     ctx.rank());
    }
  } else {
    ADD_FAILURE() << "unknown case " << what;
  }
  expect_in_step(ctx, coll, dir);
  return 0;
}

void run_edge_case(int world, const std::string& what) {
  for (int thrower = 0; thrower < world; ++thrower) {
    SCOPED_TRACE(what + " at " + std::to_string(world) + " ranks, thrower " +
                 std::to_string(thrower));
    testing::TempDir dir;
    RunOptions o;
    o.args = {dir.path(), std::to_string(thrower), what};
    o.pg_timeout = kCollectiveTimeout;
    o.timeout = std::chrono::seconds(100);  // a hang shows as a deadline, well before 2 min
    auto r = run_ranks(world, "edge_error", o);
    EXPECT_TRUE(r.ok()) << r.summary();
    EXPECT_FALSE(r.timed_out) << r.summary();
  }
}

TEST(EdgeErrorsTest, StateDictThrowsInSave2Ranks) { run_edge_case(2, "save_state_dict"); }
TEST(EdgeErrorsTest, StateDictThrowsInSave3Ranks) { run_edge_case(3, "save_state_dict"); }
TEST(EdgeErrorsTest, StateDictThrowsInAsyncSave2Ranks) { run_edge_case(2, "async_state_dict"); }
TEST(EdgeErrorsTest, StateDictThrowsInAsyncSave3Ranks) { run_edge_case(3, "async_state_dict"); }
TEST(EdgeErrorsTest, StateDictThrowsInLoad2Ranks) { run_edge_case(2, "load_resolve"); }
TEST(EdgeErrorsTest, StateDictThrowsInLoad3Ranks) { run_edge_case(3, "load_resolve"); }
TEST(EdgeErrorsTest, LoadStateDictThrows2Ranks) { run_edge_case(2, "load_state_dict"); }
TEST(EdgeErrorsTest, LoadStateDictThrows3Ranks) { run_edge_case(3, "load_state_dict"); }
TEST(EdgeErrorsTest, NoWriterOnOneRank2Ranks) { run_edge_case(2, "bad_writer"); }
TEST(EdgeErrorsTest, NoWriterOnOneRank3Ranks) { run_edge_case(3, "bad_writer"); }
TEST(EdgeErrorsTest, NoReaderInLoadAllOnOneRank3Ranks) { run_edge_case(3, "load_all_reader"); }

// The same in one process: the one error type whatever the world size.
TEST(EdgeErrorsTest, OneProcessThrowsCheckpointErrors) {
  testing::TempDir dir;
  StateDict sd{{"obj", std::make_shared<Flaky>(true, false)}};
  try {
    save(sd, dir.sub("a"));
    ADD_FAILURE() << "saved";
  } catch (const CheckpointError& e) {
    expect_failure(e, 0, "state_dict", "state_dict() of 'obj': boom", 0, 0);
  }
  AsyncSaver saver;
  SaveOptions so;
  so.checkpoint_id = dir.sub("b");
  EXPECT_THROW((void)saver.save(sd, so), CheckpointError);
  save({{"obj", std::make_shared<Flaky>(false, false)}}, dir.sub("c"));
  StateDict back{{"obj", std::make_shared<Flaky>(false, true)}};
  try {
    load(back, dir.sub("c"));
    ADD_FAILURE() << "loaded";
  } catch (const CheckpointError& e) {
    expect_failure(e, 0, "load_state_dict", "load_state_dict() of 'obj': boom", 0, 0);
  }
  EXPECT_THROW(load_all(std::string("nosuchscheme://x")), CheckpointError);
}

// ---- Collectives::barrier()'s default ------------------------------------------

// A user's Collectives written before barrier() existed: only the three
// byte-string operations. Its barrier() is the default (gather, broadcast).
class OldCollectives : public Collectives {
 public:
  explicit OldCollectives(std::shared_ptr<Collectives> c) : c_(std::move(c)) {}
  int rank() const override { return c_->rank(); }
  int world_size() const override { return c_->world_size(); }
  std::vector<std::string> gather(const std::string& mine, int root) override {
    return c_->gather(mine, root);
  }
  std::string scatter(const std::vector<std::string>& parts, int root) override {
    return c_->scatter(parts, root);
  }
  std::string broadcast(const std::string& data, int root) override {
    return c_->broadcast(data, root);
  }

 private:
  std::shared_ptr<Collectives> c_;
};

// The last rank arrives late; nobody may leave the barrier before it came.
DCP_REGISTER_WORKER(default_barrier) {
  OldCollectives coll(ctx.collectives(std::chrono::seconds(30)));
  const bool late = ctx.rank() == ctx.world_size() - 1;
  if (late) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const auto t0 = Clock::now();
  coll.barrier();
  if (!late) EXPECT_GT(seconds_since(t0), 1.0) << "rank " << ctx.rank() << " left early";
  coll.barrier();
  return 0;
}

TEST(BarrierTest, TheDefaultWaitsForEveryRank) {
  for (int world : {2, 3}) {
    RunOptions o;
    o.timeout = std::chrono::seconds(60);
    auto r = run_ranks(world, "default_barrier", o);
    EXPECT_TRUE(r.ok()) << r.summary();
  }
}

// ---- dead and hung peers --------------------------------------------------------

// args: timeout ms, "dead" | "hung". Rank 1 exits (dead) or sleeps (hung)
// instead of taking part in a broadcast.
DCP_REGISTER_WORKER(lost_peer) {
  const auto timeout = std::chrono::milliseconds(std::stoi(args.at(0)));
  const bool dead = args.at(1) == "dead";
  auto coll = ctx.collectives(timeout);
  coll->barrier();
  if (ctx.rank() == 1) {
    if (dead) std::_Exit(0);
    std::this_thread::sleep_for(timeout + std::chrono::seconds(1));
    std::_Exit(0);
  }
  const auto t0 = Clock::now();
  try {
    coll->broadcast("x", 0);
    coll->broadcast("y", 0);  // rank 0's first send may complete before rank 1 is gone
    ADD_FAILURE() << "the broadcasts succeeded";
  } catch (const Error& e) {
    const double secs = seconds_since(t0);
    std::printf("rank %d after %.2f s: %s (%s, retryable %d)\n", ctx.rank(), secs, e.what(),
                error_code_name(e.code()), e.retryable());
    if (dead) {
      EXPECT_EQ(e.code(), ErrorCode::kPeerLost) << e.what();
      EXPECT_NE(dynamic_cast<const PeerLostError*>(&e), nullptr);
      EXPECT_FALSE(e.retryable());
      EXPECT_LT(secs, timeout.count() / 1000.0 * 0.9);
    } else {
      EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
      EXPECT_NE(dynamic_cast<const TimeoutError*>(&e), nullptr);
      EXPECT_TRUE(e.retryable());
      EXPECT_GE(secs, timeout.count() / 1000.0 * 0.9);
    }
    EXPECT_EQ(std::string(e.what()).find("Exception raised from"), std::string::npos);
  }
  std::_Exit(::testing::Test::HasFailure() ? 1 : 0);  // do not wait for rank 1
}

void run_lost_peer(int world, const std::string& how, int timeout_ms) {
  RunOptions o;
  o.args = {std::to_string(timeout_ms), how};
  o.pg_timeout = std::chrono::milliseconds(timeout_ms);
  o.timeout = std::chrono::seconds(60);
  auto r = run_ranks(world, "lost_peer", o);
  for (const auto& rank : r.ranks)
    if (rank.rank != 1) EXPECT_EQ(rank.exit_code, 0) << r.summary();
}

TEST(LostPeerTest, ADeadPeerIsPeerLostAtOnce) { run_lost_peer(2, "dead", 20000); }
TEST(LostPeerTest, ADeadPeerIsPeerLostAtOnce3Ranks) { run_lost_peer(3, "dead", 20000); }
TEST(LostPeerTest, AHungPeerIsATimeout) { run_lost_peer(2, "hung", 3000); }

}  // namespace
}  // namespace dcp
