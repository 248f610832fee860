// Async saves over their own process group while the training thread runs
// collectives on the main group: no deadlock, no mixed data.
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

DCP_REGISTER_WORKER(async_with_allreduce) {
  const std::string dir = args.at(0);
  const int rank = ctx.rank(), world = ctx.world_size();
  // The saves' collectives go over a second group; the loop uses the main one.
  auto save_group = ctx.new_collectives("async_save");
  AsyncSaver saver;
  at::Tensor w = at::zeros({world * 64, 128});
  std::vector<AsyncSaveHandle> handles;
  for (int it = 1; it <= 60; ++it) {
    // Training: an all-reduce on the main group every iteration.
    std::vector<at::Tensor> t{at::full({1024}, static_cast<float>(rank + it))};
    ctx.process_group()->allreduce(t)->wait();
    const float want = static_cast<float>(world * it + world * (world - 1) / 2);
    EXPECT_TRUE(at::equal(t[0], at::full({1024}, want))) << "all-reduce mixed at iteration " << it;
    w.fill_(static_cast<float>(it));
    if (it % 6 == 0) {
      ShardedTensor shard{{world * 64, 128}, {Shard{w.narrow(0, rank * 64, 64), {rank * 64, 0}}}};
      SaveOptions so;
      so.checkpoint_id = dir + "/step_" + std::to_string(it);
      so.collectives = save_group;
      handles.push_back(saver.save({{"w", shard}, {"step", it}}, so));
    }
  }
  for (auto& h : handles) h.get();
  // Each checkpoint holds the values of its own iteration.
  for (int it = 6; it <= 60; it += 6) {
    StateDict back{{"w", at::zeros({world * 64, 128})}, {"step", 0}};
    LoadOptions lo;
    lo.checkpoint_id = dir + "/step_" + std::to_string(it);
    lo.collectives = ctx.collectives();
    load(back, lo);
    EXPECT_EQ(back["step"].to_int(), it);
    EXPECT_TRUE(at::equal(back["w"].tensor(), at::full({world * 64, 128}, static_cast<float>(it))))
        << "checkpoint of iteration " << it;
  }
  return 0;
}

TEST(AsyncDistributedTest, SavesOnTheirOwnGroupWhileTrainingRunsAllReduce) {
  testing::TempDir dir;
  testing::RunOptions o;
  o.args = {dir.path()};
  o.timeout = std::chrono::seconds(90);
  auto r = testing::run_ranks(2, "async_with_allreduce", o);
  EXPECT_TRUE(r.ok()) << r.summary();
  EXPECT_FALSE(r.timed_out) << "deadlock?\n" << r.summary();
}

}  // namespace
}  // namespace dcp
