#include <gtest/gtest.h>

#include <thread>

#include "common/test_util.h"

namespace dcp {
namespace {

using namespace std::chrono_literals;
using testing::make_tensor;

// A writer that sleeps before writing: a save that takes a while.
class SlowWriter : public StorageWriterWrapper {
 public:
  SlowWriter(std::shared_ptr<StorageWriter> w, std::chrono::milliseconds d)
      : StorageWriterWrapper(std::move(w)), delay_(d) {}
  std::future<std::vector<WriteResult>> write_data(const SavePlan& plan,
                                                   SavePlanner& planner) override {
    std::this_thread::sleep_for(delay_);
    return StorageWriterWrapper::write_data(plan, planner);
  }

 private:
  std::chrono::milliseconds delay_;
};

SaveOptions to(const std::string& path, std::chrono::milliseconds delay = 0ms) {
  SaveOptions o;
  o.storage_writer = std::make_shared<SlowWriter>(make_filesystem_writer(path), delay);
  return o;
}

TEST(AsyncSaveTest, CheckpointHoldsTheValuesAtTheCall) {
  testing::TempDir dir;
  at::Tensor w = make_tensor(at::kFloat, {256, 256}, 1);
  at::Tensor b = make_tensor(at::kBFloat16, {64}, 2);
  at::Tensor view = make_tensor(at::kFloat, {16, 8}, 3).t();
  const at::Tensor w0 = w.clone(), b0 = b.clone(), view0 = view.clone();
  auto counter = std::make_shared<testing::Counter>();
  counter->step = 7;
  StateDict sd{{"w", w}, {"nested", Dict{{"b", b}, {"view", view}}}, {"step", 3}, {"c", counter}};

  AsyncSaver saver;
  AsyncSaveHandle h = saver.save(sd, to(dir.sub("ck"), 200ms));
  // The caller changes everything right away.
  w.fill_(-1);
  b.fill_(5);
  view.fill_(2);
  sd["step"] = 4;
  counter->step = 8;
  counter->weight.fill_(9);
  EXPECT_FALSE(h.ready());
  Metadata md = h.get();
  EXPECT_TRUE(h.ready());
  EXPECT_EQ(md.state_dict_metadata.size(), 7u);

  StateDict back = load_all(dir.sub("ck"));
  EXPECT_TRUE(at::equal(back["w"].tensor(), w0));
  EXPECT_TRUE(at::equal(back["nested"].dict()["b"].tensor(), b0));
  EXPECT_TRUE(at::equal(back["nested"].dict()["view"].tensor(), view0));
  EXPECT_EQ(back["step"].to_int(), 3);
  EXPECT_EQ(back["c"].dict()["step"].to_int(), 7);
  EXPECT_TRUE(at::equal(back["c"].dict()["weight"].tensor(), at::zeros({4, 3})));
}

TEST(AsyncSaveTest, StagingBuffersAreReusedForTheSameShapes) {
  auto stager = make_default_stager();
  StateDict sd{{"a", at::ones({1000})},
               {"b", at::ones({10})},
               {"s", ShardedTensor{{4}, {Shard{at::ones({2}), {2}}}}}};
  StateDict s1 = stager->stage(sd);
  void* a1 = s1["a"].tensor().data_ptr();
  void* sh1 = s1["s"].sharded().local_shards[0].tensor.data_ptr();
  EXPECT_NE(a1, sd["a"].tensor().data_ptr());
  stager->release();
  sd["b"] = at::ones({20});  // a new shape: a new buffer
  StateDict s2 = stager->stage(sd);
  EXPECT_EQ(s2["a"].tensor().data_ptr(), a1);
  EXPECT_EQ(s2["s"].sharded().local_shards[0].tensor.data_ptr(), sh1);
  EXPECT_EQ(s2["b"].tensor().numel(), 20);
  EXPECT_TRUE(at::equal(s2["b"].tensor(), at::ones({20})));
}

TEST(AsyncSaveTest, BackgroundFailureSurfacesAtGetAndOnceAtTheNextSave) {
  testing::TempDir dir;
  StateDict sd{{"w", at::ones({4})}, {"x", 1}};
  AsyncSaver saver;

  // Seen through the handle: not thrown again.
  SaveOptions bad;
  bad.storage_writer =
      std::make_shared<testing::FailingWriter>(make_filesystem_writer(dir.sub("a")), 0);
  AsyncSaveHandle h1 = saver.save(sd, bad);
  EXPECT_THROW(h1.get(), CheckpointError);
  EXPECT_THROW(h1.get(), CheckpointError);  // the handle keeps saying so
  AsyncSaveHandle h2 = saver.save(sd, to(dir.sub("b")));
  EXPECT_NO_THROW(h2.get());

  // Not seen: the next save() throws it, once, and does not start.
  bad.storage_writer =
      std::make_shared<testing::FailingWriter>(make_filesystem_writer(dir.sub("c")), 1);
  AsyncSaveHandle h3 = saver.save(sd, bad);
  h3.wait();
  try {
    AsyncSaveHandle h4 = saver.save(sd, to(dir.sub("d")));
    FAIL() << "the earlier failure should surface here";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(is_committed_checkpoint(dir.sub("d")));
  AsyncSaveHandle h5 = saver.save(sd, to(dir.sub("e")));
  EXPECT_NO_THROW(h5.get());
  EXPECT_TRUE(is_committed_checkpoint(dir.sub("e")));
  EXPECT_FALSE(is_committed_checkpoint(dir.sub("c")));
}

TEST(AsyncSaveTest, OneInFlightByDefault) {
  testing::TempDir dir;
  StateDict sd{{"w", at::ones({4})}};
  AsyncSaver saver;
  AsyncSaveHandle h1 = saver.save(sd, to(dir.sub("1"), 300ms));
  EXPECT_FALSE(h1.wait(10ms));
  EXPECT_EQ(saver.in_flight(), 1);
  AsyncSaveHandle h2 = saver.save(sd, to(dir.sub("2"), 0ms));
  // save() waited for the first before staging the second.
  EXPECT_TRUE(h1.ready());
  h2.get();
  EXPECT_EQ(saver.in_flight(), 0);
}

TEST(AsyncSaveTest, TwoInFlightWhenAsked) {
  testing::TempDir dir;
  StateDict sd{{"w", at::ones({4})}};
  AsyncSaverOptions opt;
  opt.max_in_flight = 2;
  AsyncSaver saver(opt);
  AsyncSaveHandle h1 = saver.save(sd, to(dir.sub("1"), 300ms));
  AsyncSaveHandle h2 = saver.save(sd, to(dir.sub("2"), 0ms));
  EXPECT_FALSE(h1.ready());
  EXPECT_EQ(saver.in_flight(), 2);
  h1.get();
  h2.get();
}

TEST(AsyncSaveTest, DestroyingTheSaverFinishesTheSave) {
  testing::TempDir dir;
  {
    AsyncSaver saver;
    AsyncSaveHandle h = saver.save({{"w", at::ones({1000})}}, to(dir.sub("ck"), 300ms));
    (void)h;
  }
  EXPECT_TRUE(is_committed_checkpoint(dir.sub("ck")));
  StateDict d{{"w", at::zeros({1000})}};
  load(d, dir.sub("ck"));
  EXPECT_TRUE(at::equal(d["w"].tensor(), at::ones({1000})));
}

TEST(AsyncSaveTest, ProcessWideAsyncSave) {
  testing::TempDir dir;
  AsyncSaveHandle h = async_save({{"w", at::ones({3})}}, to(dir.sub("ck")));
  EXPECT_EQ(h.get().state_dict_metadata.size(), 1u);
}

}  // namespace
}  // namespace dcp
