// The replica check (dcp/replicas.h) on real ranks: an item that several
// ranks save under one key is written once, and copies that differ fail the
// save on every rank (naming the key and the ranks), or are logged (warn),
// or are not compared (off).
#include <gtest/gtest.h>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

using testing::run_ranks;
using testing::RunOptions;

// args: dir, the rank whose copies differ (-1: none), check, what differs
// ("tensor", "value", "shard", "many").
DCP_REGISTER_WORKER(replicas) {
  const std::string dir = args.at(0);
  const int odd = std::stoi(args.at(1));
  const ReplicaCheck check = replica_check_from_name(args.at(2));
  const std::string what = args.at(3);
  const bool me = ctx.rank() == odd;

  // Every rank holds the replicated items; the odd rank's differ in one place.
  StateDict sd;
  sd["own" + std::to_string(ctx.rank())] = at::full({4}, ctx.rank());
  at::Tensor w = at::arange(12, at::kFloat).reshape({3, 4});
  if (me && what == "tensor") w[2][3] = 100;
  sd["w"] = w;
  sd["step"] = me && what == "value" ? 8 : 7;
  // Rows [0, 2) of `s` on every rank (replicated shard); rank r also holds
  // row 2 + r alone.
  const int world = ctx.world_size();
  ShardedTensor st;
  st.global_size = {2 + world, 3};
  at::Tensor head = at::ones({2, 3});
  if (me && what == "shard") head[1][1] = -1;
  st.local_shards.push_back(Shard{head, {0, 0}});
  st.local_shards.push_back(
      Shard{at::full({1, 3}, static_cast<float>(ctx.rank())), {2 + ctx.rank(), 0}});
  sd["s"] = st;
  if (what == "many")
    for (int i = 0; i < 12; ++i) sd["m" + std::to_string(i)] = at::full({2}, me ? -i : i);

  SaveOptions so;
  so.checkpoint_id = dir + "/ck";
  so.collectives = ctx.collectives(std::chrono::seconds(60));
  SavePlannerOptions po;
  po.check_replicas = check;
  so.planner = std::make_shared<DefaultSavePlanner>(po);
  const bool should_fail = odd >= 0 && check == ReplicaCheck::kError;
  try {
    save(sd, so);
    EXPECT_FALSE(should_fail) << "the save committed although rank " << odd << "'s copies differ";
  } catch (const CheckpointError& e) {
    std::printf("rank %d: %s\n", ctx.rank(), e.what());
    EXPECT_TRUE(should_fail) << e.what();
    EXPECT_EQ(e.root_code(), ErrorCode::kPlanMismatch) << e.what();
    const std::string m = e.what();
    const std::string key = what == "tensor"  ? "'w'"
                            : what == "value" ? "'step'"
                            : what == "shard" ? "'s' chunk at [0, 0]"
                                              : "'m1'";
    EXPECT_NE(m.find(key), std::string::npos) << m;
    EXPECT_NE(m.find("of rank " + std::to_string(odd)), std::string::npos) << m;  // alone
    if (what == "many") {
      EXPECT_NE(m.find("11 replicated items differ"), std::string::npos) << m;  // m0 is equal
      EXPECT_NE(m.find("and 1 more"), std::string::npos) << m;
    } else {
      EXPECT_NE(m.find("1 replicated item differs"), std::string::npos) << m;
    }
  }
  so.collectives->barrier();
  EXPECT_EQ(is_committed_checkpoint(dir + "/ck"), !should_fail);
  if (!should_fail && ctx.rank() == 0) {
    // Written once, loadable, and whole.
    StateDict back = load_all(dir + "/ck");
    EXPECT_EQ(back.at("s").tensor().sizes(), (at::IntArrayRef{2 + world, 3}));
    for (int r = 0; r < world; ++r) EXPECT_TRUE(back.count("own" + std::to_string(r)));
  }
  return 0;
}

void run_case(int world, int odd, const std::string& check, const std::string& what) {
  SCOPED_TRACE(std::to_string(world) + " ranks, rank " + std::to_string(odd) + " differs in " +
               what + ", check " + check);
  testing::TempDir dir;
  RunOptions o;
  o.args = {dir.path(), std::to_string(odd), check, what};
  o.timeout = std::chrono::seconds(60);
  auto r = run_ranks(world, "replicas", o);
  EXPECT_TRUE(r.ok()) << r.summary();
}

TEST(ReplicaCheckTest, EqualReplicasCommit) {
  run_case(2, -1, "error", "tensor");
  run_case(3, -1, "error", "many");
}

// Each rank in turn: the writer's copy or a dropped one differs.
TEST(ReplicaCheckTest, ADifferentTensorFailsOnEveryRank) {
  for (int odd = 0; odd < 2; ++odd) run_case(2, odd, "error", "tensor");
  for (int odd = 0; odd < 3; ++odd) run_case(3, odd, "error", "tensor");
}

TEST(ReplicaCheckTest, ADifferentValueOrShardFails) {
  run_case(2, 1, "error", "value");
  run_case(3, 0, "error", "value");
  run_case(2, 0, "error", "shard");
  run_case(3, 2, "error", "shard");
}

TEST(ReplicaCheckTest, ManyDifferencesAreCountedAndCut) { run_case(3, 1, "error", "many"); }

TEST(ReplicaCheckTest, WarnAndOffCommit) {
  run_case(2, 1, "warn", "tensor");
  run_case(3, 2, "off", "shard");
}

}  // namespace
}  // namespace dcp
