// Trainer hooks (dcp::trainer): the callback list, and the checkpoint
// callback over a real CheckpointManager on a real directory.
#include <gtest/gtest.h>

#include <csignal>

#include "common/test_util.h"
#include "dcp/manager/manager.h"
#include "dcp/trainer/trainer.h"

namespace dcp {
namespace trainer {
namespace {

// A weight that is a function of the step, and the step.
class Weights : public Stateful {
 public:
  at::Tensor w = at::zeros({8, 8});
  int64_t step = 0;
  void train_to(int64_t s) {
    step = s;
    w.fill_(static_cast<float>(s));
  }
  StateDict state_dict() override { return {{"w", w}, {"step", step}}; }
  void load_state_dict(const StateDict& sd) override { step = sd.at("step").to_int(); }
};

// Records the hooks it sees, as "<hook>@<step>".
class Recorder : public TrainerCallback {
 public:
  explicit Recorder(std::vector<std::string>& log, std::string name, int64_t stop_at = -1)
      : log_(log), name_(std::move(name)), stop_at_(stop_at) {}
  void on_train_begin(TrainState& s) override { add("begin", s); }
  void on_step_end(TrainState& s) override {
    add("step", s);
    if (s.step == stop_at_) s.stop = true;
  }
  void on_train_end(TrainState& s) override { add("end", s); }

 private:
  void add(const char* hook, const TrainState& s) {
    log_.push_back(name_ + "." + hook + "@" + std::to_string(s.step));
  }
  std::vector<std::string>& log_;
  std::string name_;
  int64_t stop_at_;
};

// The loop of trainer.h's comment; returns the last step.
int64_t train_loop(Callbacks& cbs, Weights& weights, int64_t steps) {
  TrainState state;
  cbs.train_begin(state);
  while (state.step < steps) {
    weights.train_to(state.step + 1);
    ++state.step;
    state.metrics["loss"] = 1.0 / state.step;
    if (cbs.step_end(state)) break;
  }
  cbs.train_end(state);
  return state.step;
}

manager::CheckpointManagerOptions options(const std::string& dir, bool async) {
  manager::CheckpointManagerOptions o;
  o.dir = dir;
  o.save.every_steps = 4;
  o.save.on_signals = {SIGUSR2};
  o.async.enabled = async;
  o.keep.last = 2;
  o.storage.fsync = false;
  return o;
}

TEST(TrainerCallbacks, CalledInOrderAndEveryStepEndRunsAfterAStopRequest) {
  std::vector<std::string> log;
  Callbacks cbs;
  cbs.add(std::make_shared<Recorder>(log, "a", /*stop_at=*/2));
  cbs.add(std::make_shared<Recorder>(log, "b"));
  Weights w;
  EXPECT_EQ(train_loop(cbs, w, 5), 2);
  EXPECT_EQ(log, (std::vector<std::string>{"a.begin@0", "b.begin@0", "a.step@1", "b.step@1",
                                           "a.step@2", "b.step@2", "a.end@2", "b.end@2"}));
  EXPECT_THROW(cbs.add(nullptr), InvalidArgumentError);
}

// One run: a manager on `dir` with a Weights registered, and the callbacks.
struct TrainRun {
  TrainRun(const std::string& dir, bool async)
      : manager(std::make_shared<manager::CheckpointManager>(options(dir, async))),
        weights(std::make_shared<Weights>()) {
    manager->register_stateful("weights", weights);
    checkpoint = std::make_shared<CheckpointCallback>(manager);
    callbacks.add(checkpoint);
  }
  std::vector<int64_t> committed() const {
    std::vector<int64_t> steps;
    for (auto& c : manager->committed()) steps.push_back(c.step);
    return steps;
  }
  std::shared_ptr<manager::CheckpointManager> manager;
  std::shared_ptr<Weights> weights;
  std::shared_ptr<CheckpointCallback> checkpoint;
  Callbacks callbacks;
};

// Records the weights' first value when training begins (after a resume).
class AtBegin : public TrainerCallback {
 public:
  explicit AtBegin(std::shared_ptr<Weights> w) : w_(std::move(w)) {}
  void on_train_begin(TrainState&) override { value = w_->w[0][0].item<float>(); }
  float value = -1;

 private:
  std::shared_ptr<Weights> w_;
};

class CheckpointCallbackTest : public ::testing::TestWithParam<bool> {  // async
 protected:
  testing::TempDir dir_;
};

TEST_P(CheckpointCallbackTest, SavesByPolicyThenResumesWhereTheLastRunStopped) {
  const std::string dir = dir_.sub("run");
  {
    TrainRun run(dir, GetParam());
    EXPECT_EQ(train_loop(run.callbacks, *run.weights, 10), 10);
    EXPECT_EQ(run.checkpoint->resumed_step(), 0);
    EXPECT_FALSE(run.checkpoint->preempted());
    // every 4 steps (4, 8) and at the end (10); the newest two kept.
    EXPECT_EQ(run.committed(), (std::vector<int64_t>{8, 10}));
    EXPECT_EQ(run.manager->committed().back().metrics.at("loss"), 0.1);
  }
  {
    TrainRun run(dir, GetParam());
    auto at_begin = std::make_shared<AtBegin>(run.weights);
    run.callbacks.add(at_begin);
    EXPECT_EQ(train_loop(run.callbacks, *run.weights, 13), 13);
    EXPECT_EQ(run.checkpoint->resumed_step(), 10);
    EXPECT_EQ(at_begin->value, 10.0f);  // step 10's weights, loaded in place
    EXPECT_EQ(run.committed(), (std::vector<int64_t>{12, 13}));
  }
  TrainRun run(dir, GetParam());
  EXPECT_EQ(run.manager->resume(), 13);
  EXPECT_TRUE(at::equal(run.weights->w, at::full({8, 8}, 13.0f)));
}

TEST_P(CheckpointCallbackTest, ASignalStopsTheLoopWithTheStepCommitted) {
  const std::string dir = dir_.sub("run");
  {
    TrainRun run(dir, GetParam());
    std::vector<std::string> log;
    run.callbacks.add(std::make_shared<Recorder>(log, "r"));
    TrainState state;
    run.callbacks.train_begin(state);
    bool stopped = false;
    while (state.step < 100 && !stopped) {
      run.weights->train_to(++state.step);
      if (state.step == 7) std::raise(SIGUSR2);  // the manager's handler sets a flag
      stopped = run.callbacks.step_end(state);
    }
    run.callbacks.train_end(state);
    EXPECT_TRUE(stopped);
    EXPECT_TRUE(run.checkpoint->preempted());
    EXPECT_EQ(state.step, 7);
    EXPECT_EQ(run.committed().back(), 7);
    EXPECT_EQ(run.manager->statistics().size(), 2u);  // steps 4 and 7: the end saves nothing more
    EXPECT_EQ(log.back(), "r.end@7");
  }
  TrainRun run(dir, GetParam());
  EXPECT_EQ(run.manager->resume(), 7);
  EXPECT_TRUE(at::equal(run.weights->w, at::full({8, 8}, 7.0f)));
}

TEST(CheckpointCallback, NullManagerIsRefused) {
  EXPECT_THROW(CheckpointCallback(nullptr), InvalidArgumentError);
}

INSTANTIATE_TEST_SUITE_P(, CheckpointCallbackTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "async" : "sync"; });

}  // namespace
}  // namespace trainer
}  // namespace dcp
