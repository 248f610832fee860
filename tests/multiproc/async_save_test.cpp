// Async saves over their own process group while the training thread runs
// collectives on the main group: no deadlock, no mixed data.
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <thread>

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

// A writer that sleeps before writing: the process exits while it sleeps.
class SlowWriter : public StorageWriterWrapper {
 public:
  using StorageWriterWrapper::StorageWriterWrapper;
  std::future<std::vector<WriteResult>> write_data(const SavePlan& p, SavePlanner& pl) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return StorageWriterWrapper::write_data(p, pl);
  }
};

DCP_REGISTER_WORKER(exit_during_async_save) {
  SaveOptions so;
  so.storage_writer = std::make_shared<SlowWriter>(make_filesystem_writer(args.at(0)));
  AsyncSaveHandle h = async_save({{"w", at::ones({1 << 20})}, {"step", 5}}, so);
  (void)h;       // dropped without waiting
  std::exit(0);  // a normal exit: the process-wide saver finishes first
}

TEST(AsyncExitTest, ExitWaitsForTheProcessWideSaver) {
  testing::TempDir dir;
  testing::RunOptions o;
  o.args = {dir.sub("ck")};
  auto r = testing::run_ranks(1, "exit_during_async_save", o);
  ASSERT_TRUE(r.ok()) << r.summary();
  ASSERT_TRUE(is_committed_checkpoint(dir.sub("ck")));
  StateDict back = load_all(dir.sub("ck"));
  EXPECT_EQ(back["step"].to_int(), 5);
  EXPECT_TRUE(at::equal(back["w"].tensor(), at::ones({1 << 20})));
}

}  // namespace
}  // namespace dcp
