#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
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

// ---- reserve(), staging memory, O_DIRECT and the background priority ------------

uint64_t rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  return 0;
}

// Large tensors of sizes that are not multiples of 4 KiB, small ones,
// shards, a view, a Stateful object and plain values.
StateDict mixed_state_dict() {
  auto counter = std::make_shared<testing::Counter>();
  counter->step = 5;
  counter->weight.fill_(3);
  return StateDict{
      {"big", make_tensor(at::kFloat, {1024, 1024}, 1)},                      // 4 MiB
      {"odd", make_tensor(at::kFloat, {262147}, 2)},                          // 1 MiB + 12 B
      {"bf16", make_tensor(at::kBFloat16, {3, 700001}, 3)},                   // odd, large
      {"small", make_tensor(at::kFloat, {7}, 4)},                             // coalesced
      {"view", make_tensor(at::kFloat, {600, 1000}, 5).t()},                  // not contiguous
      {"nested", Dict{{"x", make_tensor(at::kInt, {300000}, 6)}, {"n", 9}}},  // 1.2 MiB
      {"s", ShardedTensor{{1 << 19},
                          {Shard{make_tensor(at::kFloat, {1 << 18}, 7), {0}},
                           Shard{make_tensor(at::kFloat, {1 << 18}, 8), {1 << 18}}}}},
      {"c", counter},
  };
}

void expect_loads_as(const std::string& path, const StateDict& want) {
  StateDict back = load_all(path);  // checksums verified
  EXPECT_TRUE(at::equal(back["big"].tensor(), want.at("big").tensor()));
  EXPECT_TRUE(at::equal(back["odd"].tensor(), want.at("odd").tensor()));
  EXPECT_TRUE(at::equal(back["bf16"].tensor(), want.at("bf16").tensor()));
  EXPECT_TRUE(at::equal(back["small"].tensor(), want.at("small").tensor()));
  EXPECT_TRUE(at::equal(back["view"].tensor(), want.at("view").tensor()));
  EXPECT_TRUE(
      at::equal(back["nested"].dict()["x"].tensor(), want.at("nested").dict().at("x").tensor()));
  EXPECT_EQ(back["nested"].dict()["n"].to_int(), 9);
  EXPECT_EQ(back["c"].dict()["step"].to_int(), 5);
  const auto& shards = want.at("s").sharded().local_shards;
  EXPECT_TRUE(at::equal(back["s"].tensor(), at::cat({shards[0].tensor, shards[1].tensor})));
  EXPECT_TRUE(at::equal(back["c"].dict()["weight"].tensor(), at::full({4, 3}, 3.0f)));
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST(AsyncSaveTest, LargeStagingBuffersArePageAligned) {
  if (at::hasCUDA()) GTEST_SKIP() << "pinned memory is used with CUDA";
  auto stager = make_default_stager();
  StateDict sd{{"a", at::ones({262147})}, {"b", at::ones({1 << 20})}, {"c", at::ones({5})}};
  StateDict s = stager->stage(sd);
  for (const char* k : {"a", "b"}) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s[k].tensor().data_ptr()) % 4096, 0u) << k;
    EXPECT_TRUE(at::equal(s[k].tensor(), sd[k].tensor())) << k;
  }
  EXPECT_TRUE(at::equal(s["c"].tensor(), sd["c"].tensor()));
  stager->release();
}

TEST(AsyncSaveTest, ReserveAllocatesWhatTheFirstStageUses) {
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
  GTEST_SKIP() << "ThreadSanitizer maps shadow memory for what the copy touches: RSS grows";
#endif
#endif
  auto stager = make_default_stager();
  StateDict sd{{"w", make_tensor(at::kFloat, {16 << 20}, 1)}, {"b", at::ones({10})}};  // 64 MiB
  const uint64_t before = rss_bytes();
  stager->reserve(sd);
  const uint64_t reserved = rss_bytes();
  // Faulted in now, not at the first copy.
  EXPECT_GE(reserved, before + (uint64_t{56} << 20));
  StateDict s = stager->stage(sd);
  EXPECT_LE(rss_bytes(), reserved + (uint64_t{8} << 20));  // nothing new
  EXPECT_TRUE(at::equal(s["w"].tensor(), sd["w"].tensor()));
  EXPECT_TRUE(at::equal(s["b"].tensor(), sd["b"].tensor()));
  stager->release();
}

TEST(AsyncSaveTest, ReserveThenSaveLoadsBitExact) {
  testing::TempDir dir;
  StateDict sd = mixed_state_dict();
  AsyncSaverOptions ao;
  ao.stager.checksums = true;  // taken during the copy, used by the writer
  AsyncSaver saver(ao);
  saver.reserve(sd);  // asks the Stateful object for its state_dict() too
  EXPECT_EQ(saver.in_flight(), 0);
  const Metadata md = saver.save(sd, to(dir.sub("ck"))).get();
  expect_loads_as(dir.sub("ck"), sd);  // verifies every checksum
  // The checksums the stager took while copying are the writer's own.
  const Metadata sync_md = save(sd, dir.sub("sync"));
  ASSERT_EQ(md.storage_data.size(), sync_md.storage_data.size());
  for (const auto& [index, info] : sync_md.storage_data) {
    ASSERT_TRUE(md.storage_data.count(index)) << to_string(index);
    EXPECT_EQ(md.storage_data.at(index).checksum, info.checksum) << to_string(index);
    EXPECT_EQ(md.storage_data.at(index).checksum_type, ChecksumType::kXXH3_64);
  }
  // A second reserve of another structure, then a save of it.
  StateDict other{{"only", make_tensor(at::kDouble, {300000}, 8)}};
  saver.reserve(other);
  saver.save(other, to(dir.sub("ck2"))).get();
  EXPECT_TRUE(at::equal(load_all(dir.sub("ck2"))["only"].tensor(), other["only"].tensor()));
}

// The files of a save with direct_io are the same bytes as without, from
// the stager's aligned buffers (async) and from the caller's tensors (sync,
// through the aligned buffer), at every background priority; checksums hold.
class DirectIoTest : public ::testing::TestWithParam<StorageFormat> {};

TEST_P(DirectIoTest, SameFilesAndLoadsBitExact) {
  testing::TempDir dir;
  StateDict sd = mixed_state_dict();
  FileSystemWriterOptions plain;
  plain.format = GetParam();
  plain.threads = 1;
  FileSystemWriterOptions direct = plain;
  direct.direct_io = true;
  auto with = [](const std::string& path, const FileSystemWriterOptions& w) {
    SaveOptions o;
    o.storage_writer = make_filesystem_writer(path, w);
    return o;
  };
  save(sd, with(dir.sub("plain"), plain));
  save(sd, with(dir.sub("sync_direct"), direct));
  std::vector<std::string> saved{"sync_direct"};
  for (auto prio :
       {BackgroundPriority::kNormal, BackgroundPriority::kLow, BackgroundPriority::kIdle}) {
    AsyncSaverOptions ao;
    ao.priority = prio;
    AsyncSaver saver(ao);
    const std::string name = "async_" + std::to_string(static_cast<int>(prio));
    saver.reserve(sd);
    saver.save(sd, with(dir.sub(name), direct)).get();
    saved.push_back(name);
  }
  expect_loads_as(dir.sub("plain"), sd);
  for (const auto& name : saved) {
    SCOPED_TRACE(name);
    expect_loads_as(dir.sub(name), sd);
    for (const char* file : {"__0_0.distcp"})
      EXPECT_TRUE(file_bytes(dir.sub(name) + "/" + file) ==
                  file_bytes(dir.sub("plain") + "/" + file));
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, DirectIoTest,
                         ::testing::Values(StorageFormat::kDcp, StorageFormat::kPyTorchDcp),
                         [](const auto& info) {
                           return info.param == StorageFormat::kDcp ? "dcp" : "pytorch_dcp";
                         });

}  // namespace
}  // namespace dcp
