// The CheckpointManager end to end on a real directory.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <csignal>
#include <filesystem>
#include <sstream>
#include <thread>

#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/logging.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace {

namespace fs = std::filesystem;

// A training state: two tensors and a counter, all a function of the step.
class State : public Stateful {
 public:
  at::Tensor w = at::zeros({64, 32});
  at::Tensor b = at::zeros({16}, at::kDouble);
  int64_t step = 0;
  void set(int64_t s) {
    step = s;
    w.fill_(static_cast<float>(s));
    b.fill_(s * 0.5);
  }
  bool consistent() const {
    return at::equal(w, at::full({64, 32}, static_cast<float>(step))) &&
           at::equal(b, at::full({16}, step * 0.5, at::kDouble));
  }
  StateDict state_dict() override { return {{"w", w}, {"b", b}, {"step", step}}; }
  void load_state_dict(const StateDict& sd) override { step = sd.at("step").to_int(); }
};

CheckpointManagerOptions base(const std::string& dir) {
  CheckpointManagerOptions o;
  o.dir = dir;
  o.save.every_steps = 10;
  o.save.on_signals = {SIGUSR2};
  o.storage.fsync = false;  // faster tests; the commit order is the same
  return o;
}

std::vector<int64_t> steps_in(const std::string& dir) {
  std::vector<int64_t> out;
  for (const auto& c : list_committed(dir)) out.push_back(c.step);
  return out;
}

// Runs steps [from, to] with the manager, setting the state each step.
void train(CheckpointManager& m, State& s, int64_t from, int64_t to,
           std::function<std::map<std::string, double>(int64_t)> metrics = nullptr) {
  for (int64_t step = from; step <= to; ++step) {
    s.set(step);
    m.on_step(step, metrics ? metrics(step) : std::map<std::string, double>{});
  }
}

class ManagerTest : public ::testing::TestWithParam<bool> {  // async on/off
 protected:
  CheckpointManagerOptions opts() {
    auto o = base(dir_.sub("run"));
    o.async.enabled = GetParam();
    return o;
  }
  testing::TempDir dir_;
};

// resume() reserves the staging buffers of async saves (AsyncSaver::reserve),
// whether it loads a checkpoint or starts fresh; the saves after it (O_DIRECT
// by default) load back.
TEST_P(ManagerTest, ResumeReservesTheStagingBuffersOfAsyncSaves) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  logger().sinks().push_back(sink);
  const auto level = logger().level();
  logger().set_level(spdlog::level::debug);
  auto o = opts();
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    EXPECT_EQ(m.resume(), 0);
    train(m, *s, 1, 10);
    m.on_train_end(10);
  }
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  EXPECT_EQ(m.resume(), 10);
  EXPECT_TRUE(s->consistent());
  logger().sinks().pop_back();
  logger().set_level(level);
  const std::string text = log.str();
  size_t n = 0;
  for (size_t p = text.find("staging buffers reserved"); p != std::string::npos;
       p = text.find("staging buffers reserved", p + 1))
    ++n;
  EXPECT_EQ(n, GetParam() ? 2u : 0u) << text;
}

TEST_P(ManagerTest, PeriodicSavesRetentionAndResume) {
  auto o = opts();
  o.keep.last = 2;
  o.keep.every_steps = 20;
  o.save.at_steps = {15};
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    EXPECT_EQ(m.resume(), 0);
    train(m, *s, 1, 45);
    s->set(47);
    m.on_train_end(47);
    // Saved 10, 15, 20, 30, 40, 47; kept: last two (40, 47) + multiples of 20.
    EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{20, 40, 47}));
    EXPECT_EQ(m.statistics().size(), 6u);
    for (const auto& st : m.statistics()) {
      EXPECT_GT(st.bytes, 0u);
      EXPECT_LE(st.blocking_seconds, st.durable_seconds + 1e-9);
      EXPECT_EQ(st.async, GetParam() && st.step != 47);
    }
  }
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  EXPECT_EQ(m.resume(), 47);
  EXPECT_EQ(s->step, 47);
  EXPECT_TRUE(s->consistent());
}

TEST_P(ManagerTest, BestByMetricKeepsTheBestAndTheNewest) {
  auto o = opts();
  o.keep.last = 1;
  o.keep.best = {"loss", false, 2};
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  const std::map<int64_t, double> loss = {{10, 0.5}, {20, 0.1}, {30, 0.9}, {40, 0.2}, {50, 0.7}};
  train(m, *s, 1, 50, [&](int64_t step) {
    auto it = loss.find(step);
    return it == loss.end() ? std::map<std::string, double>{}
                            : std::map<std::string, double>{{"loss", it->second}};
  });
  m.wait();
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{20, 40, 50}));
  EXPECT_DOUBLE_EQ(list_committed(o.dir)[0].metrics.at("loss"), 0.1);
}

TEST_P(ManagerTest, SavesEveryTSeconds) {
  auto o = opts();
  o.save.every_steps = 0;
  o.save.every_seconds = 0.15;
  o.keep.last = 0;
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  for (int64_t step = 1; step <= 20; ++step) {
    s->set(step);
    m.on_step(step);
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
  }
  m.wait();
  const auto saved = steps_in(o.dir);
  EXPECT_GE(saved.size(), 2u);
  EXPECT_LE(saved.size(), 7u);  // 20 steps x 40 ms: about 5 saves
}

TEST_P(ManagerTest, ResumeChoices) {
  auto o = opts();
  o.keep.last = 0;
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    train(m, *s, 1, 30);
    m.wait();
  }
  auto resume_with = [&](const std::string& from, int64_t expect_step) {
    auto o2 = o;
    o2.resume.from = from;
    CheckpointManager m(o2);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    EXPECT_EQ(m.resume(), expect_step) << from;
    EXPECT_EQ(s->step, expect_step) << from;
    EXPECT_TRUE(s->consistent());
  };
  {
    auto o3 = o;
    o3.resume.from = "25";
    CheckpointManager m(o3);
    m.register_stateful("state", std::make_shared<State>());
    try {
      m.resume();
      FAIL() << "a step that does not exist must be an error";
    } catch (const NotFoundError& e) {
      EXPECT_NE(std::string(e.what()).find("step 25"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("10, 20, 30"), std::string::npos) << e.what();
    }
  }
  resume_with("latest", 30);
  // An older step: the newer checkpoints are superseded (damaged_test.cpp).
  resume_with("20", 20);
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20}));
  resume_with("latest", 20);
  resume_with("none", 0);
  EXPECT_TRUE(steps_in(o.dir).empty());
}

TEST_P(ManagerTest, CorruptNewestFallsBackToOlderAndNeverStartsFreshSilently) {
  auto o = opts();
  o.keep.last = 0;
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    train(m, *s, 1, 30);
    m.wait();
  }
  // Damage step 30: flip a byte of its data.
  const std::string step30 = o.dir + "/" + CheckpointManager::step_dir_name(30);
  auto files = testing::data_files(step30);
  std::string data = testing::read_file(files[0]);
  data[data.size() / 2] ^= 1;
  testing::write_file(files[0], data);
  {
    auto strict = o;
    strict.resume.fallback_to_older = false;
    CheckpointManager m(strict);
    m.register_stateful("state", std::make_shared<State>());
    EXPECT_THROW(m.resume(), CheckpointError);
  }
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    EXPECT_EQ(m.resume(), 20);
    EXPECT_TRUE(s->consistent());
  }
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20}));  // 30 moved aside
  // Every checkpoint damaged: an error, not a fresh start, and nothing moved.
  for (int64_t step : {10, 20}) {
    auto f = testing::data_files(o.dir + "/" + CheckpointManager::step_dir_name(step));
    std::remove(f[0].c_str());
  }
  CheckpointManager m(o);
  m.register_stateful("state", std::make_shared<State>());
  try {
    m.resume();
    FAIL();
  } catch (const CorruptionError& e) {
    EXPECT_NE(std::string(e.what()).find("none of the 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 20}));
}

TEST_P(ManagerTest, ExcludeAndWarmStartFromAPath) {
  auto o = opts();
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    auto extra = std::make_shared<State>();
    m.register_stateful("state", s);
    m.register_stateful("extra", extra);
    train(m, *s, 1, 10);
    m.wait();
  }
  // Another run warm-starts from that checkpoint; "extra" is excluded.
  auto o2 = base(dir_.sub("other_run"));
  o2.resume.from = o.dir + "/" + CheckpointManager::step_dir_name(10);
  o2.resume.exclude = {"extra"};
  CheckpointManager m(o2);
  auto s = std::make_shared<State>();
  auto extra = std::make_shared<State>();
  extra->set(99);
  m.register_stateful("state", s);
  m.register_stateful("extra", extra);
  EXPECT_EQ(m.resume(), 0);  // a warm start begins at step 0
  EXPECT_EQ(s->step, 10);
  EXPECT_TRUE(s->consistent());
  EXPECT_EQ(extra->step, 99);  // not loaded
  EXPECT_TRUE(extra->consistent());
}

TEST_P(ManagerTest, OneManagerPerDirectory) {
  auto o = opts();
  auto m1 = std::make_unique<CheckpointManager>(o);
  try {
    CheckpointManager m2(o);
    FAIL() << "a second manager on the same directory must fail";
  } catch (const CheckpointError& e) {  // as on many ranks (manager_collective_test.cpp)
    EXPECT_EQ(e.root_code(), ErrorCode::kConfig);
    EXPECT_NE(std::string(e.what()).find("in use by another CheckpointManager"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(".lock"), std::string::npos);
  }
  m1.reset();
  EXPECT_NO_THROW(CheckpointManager m3(o));
}

// A writer that fails after some items, or with ENOSPC.
class Failing : public StorageWriterWrapper {
 public:
  Failing(std::shared_ptr<StorageWriter> w, int err)
      : StorageWriterWrapper(std::move(w)), err_(err) {}
  std::future<std::vector<WriteResult>> write_data(const SavePlan& p, SavePlanner& pl) override {
    throw StorageError("injected: " + errno_text(err_), err_);
  }

 private:
  int err_;
};

TEST_P(ManagerTest, FailedSavesKeepEarlierCheckpointsAndSurfaceAsConfigured) {
  for (int err : {EIO, ENOSPC}) {
    for (OnError mode : {OnError::kRaise, OnError::kWarn}) {
      testing::TempDir dir;
      auto o = opts();
      o.dir = dir.sub("run");
      o.on_error = mode;
      CheckpointManager m(o);
      auto s = std::make_shared<State>();
      m.register_stateful("state", s);
      train(m, *s, 1, 10);
      m.wait();
      ASSERT_EQ(steps_in(o.dir), std::vector<int64_t>{10});
      bool fail = true;
      m.set_writer_wrapper([&](std::shared_ptr<StorageWriter> w) -> std::shared_ptr<StorageWriter> {
        return fail ? std::make_shared<Failing>(w, err) : w;
      });
      bool raised = false;
      try {
        train(m, *s, 11, 21);  // the save of 20 fails (seen at 20 when sync, 21 when async)
        m.wait();
      } catch (const Error& e) {
        raised = true;
        EXPECT_NE(std::string(e.what()).find(errno_text(err)), std::string::npos) << e.what();
      }
      EXPECT_EQ(raised, mode == OnError::kRaise);
      EXPECT_EQ(steps_in(o.dir), std::vector<int64_t>{10});  // intact
      fail = false;
      train(m, *s, 22, 30);
      m.wait();
      EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 30}));
    }
  }
}

TEST_P(ManagerTest, LeftoversOfACrashAreRemovedAtStartUp) {
  auto o = opts();
  fs::create_directories(o.dir + "/.tmp.step_0000000050.0");
  testing::write_file(o.dir + "/.tmp.step_0000000050.0/__0_0.distcp", "partial");
  fs::create_directories(o.dir + "/.old.step_0000000010.3");
  fs::create_directories(o.dir + "/step_0000000060");  // no metadata, no record: not committed
  // Moved aside by an earlier resume: kept for inspection, not a leftover.
  fs::create_directories(o.dir + "/.damaged.step_0000000040.0");
  fs::create_directories(o.dir + "/.superseded.step_0000000030.0");
  CheckpointManager m(o);
  EXPECT_FALSE(fs::exists(o.dir + "/.tmp.step_0000000050.0"));
  EXPECT_FALSE(fs::exists(o.dir + "/.old.step_0000000010.3"));
  EXPECT_TRUE(fs::exists(o.dir + "/.damaged.step_0000000040.0"));
  EXPECT_TRUE(fs::exists(o.dir + "/.superseded.step_0000000030.0"));
  m.register_stateful("state", std::make_shared<State>());
  EXPECT_EQ(m.resume(), 0);  // no committed checkpoint; step_60 is moved aside
  EXPECT_FALSE(fs::exists(o.dir + "/step_0000000060"));
  EXPECT_TRUE(fs::exists(o.dir + "/.damaged.step_0000000060.0"));
}

TEST_P(ManagerTest, ASignalSavesSynchronouslyAndStops) {
  auto o = opts();
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  bool stopped = false;
  int64_t step = 1;
  for (; step <= 100 && !stopped; ++step) {
    s->set(step);
    if (step == 13) std::raise(SIGUSR2);
    stopped = m.on_step(step);
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(step - 1, 13);
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{10, 13}));
}

TEST_P(ManagerTest, CallbacksAndForce) {
  auto o = opts();
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  std::vector<int64_t> pre, post;
  m.add_pre_save_callback([&](int64_t step) { pre.push_back(step); });
  m.add_post_save_callback([&](const SaveStatistics& st) { post.push_back(st.step); });
  s->set(5);
  m.save(5);
  m.save(5);  // already saved: skipped
  m.wait();
  s->set(6);
  s->step = 5;  // same step, new values
  m.save(5, /*force=*/true);
  m.wait();
  EXPECT_EQ(pre, (std::vector<int64_t>{5, 5}));
  EXPECT_EQ(post, (std::vector<int64_t>{5, 5}));
  EXPECT_EQ(steps_in(o.dir), std::vector<int64_t>{5});
  StateDict back = load_all(o.dir + "/" + CheckpointManager::step_dir_name(5));
  EXPECT_TRUE(at::equal(back["state"].dict()["w"].tensor(), at::full({64, 32}, 6.0f)));
}

INSTANTIATE_TEST_SUITE_P(SyncAndAsync, ManagerTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "async" : "sync"; });

// The run's checkpoints in the pytorch-dcp format (storage.format): commit,
// retention, resume, the fallback past a damaged checkpoint, and a run that
// changes format between its checkpoints. Param: async, and the PyTorch
// version the format is written for.
class ManagerPyTorchFormatTest : public ::testing::TestWithParam<std::tuple<bool, const char*>> {
 protected:
  CheckpointManagerOptions opts() {
    auto o = base(dir_.sub("run"));
    o.async.enabled = std::get<0>(GetParam());
    o.storage.format = StorageFormat::kPyTorchDcp;
    o.storage.pytorch_version = std::get<1>(GetParam());
    return o;
  }
  testing::TempDir dir_;
};

TEST_P(ManagerPyTorchFormatTest, SavesRetentionResumeAndFallback) {
  auto o = opts();
  o.keep.last = 2;
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    EXPECT_EQ(m.resume(), 0);
    train(m, *s, 1, 30);
    m.wait();
  }
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{20, 30}));
  const std::string step30 = o.dir + "/" + CheckpointManager::step_dir_name(30);
  EXPECT_EQ(checkpoint_format(step30), "PyTorch DCP");
  EXPECT_TRUE(fs::exists(step30 + "/.metadata.dcp"));
  EXPECT_EQ(read_metadata(step30).state_dict_metadata.count("state.w"), 1u);
  {
    CheckpointManager m(o);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    EXPECT_EQ(m.resume(), 30);
    EXPECT_EQ(s->step, 30);
    EXPECT_TRUE(s->consistent());
  }
  // A flipped byte in step 30's largest data file: the resume falls back to 20.
  std::string largest;
  for (const auto& f : testing::data_files(step30))
    if (largest.empty() || fs::file_size(f) > fs::file_size(largest)) largest = f;
  std::string data = testing::read_file(largest);
  data[data.size() / 2] ^= 1;
  testing::write_file(largest, data);
  CheckpointManager m(o);
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  EXPECT_EQ(m.resume(), 20);
  EXPECT_TRUE(s->consistent());
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{20}));  // 30 moved aside
  train(m, *s, 21, 30);
  m.wait();
  EXPECT_EQ(steps_in(o.dir), (std::vector<int64_t>{20, 30}));
}

TEST_P(ManagerPyTorchFormatTest, ARunMayChangeFormat) {
  auto o = opts();
  o.keep.last = 0;
  auto native = o;
  native.storage.format = StorageFormat::kDcp;
  {
    CheckpointManager m(native);
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    train(m, *s, 1, 10);
    m.wait();
  }
  {
    CheckpointManager m(o);  // resumes from dcp++'s format, saves PyTorch's
    auto s = std::make_shared<State>();
    m.register_stateful("state", s);
    EXPECT_EQ(m.resume(), 10);
    train(m, *s, 11, 20);
    m.wait();
  }
  EXPECT_EQ(checkpoint_format(o.dir + "/" + CheckpointManager::step_dir_name(10)), "dcp++");
  EXPECT_EQ(checkpoint_format(o.dir + "/" + CheckpointManager::step_dir_name(20)), "PyTorch DCP");
  CheckpointManager m(native);  // and back
  auto s = std::make_shared<State>();
  m.register_stateful("state", s);
  EXPECT_EQ(m.resume(), 20);
  EXPECT_TRUE(s->consistent());
}

INSTANTIATE_TEST_SUITE_P(Formats, ManagerPyTorchFormatTest,
                         ::testing::Values(std::make_tuple(false, "1.13"),
                                           std::make_tuple(true, "2")),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "async_" : "sync_") +
                                  (std::string(std::get<1>(info.param)) == "2" ? "torch2"
                                                                               : "torch113");
                         });

}  // namespace
}  // namespace manager
}  // namespace dcp
