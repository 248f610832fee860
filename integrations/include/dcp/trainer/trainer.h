// Trainer hooks: a small callback interface for programs that have a
// training loop of their own, and a checkpoint callback built on the
// CheckpointManager.
//
//   auto manager = std::make_shared<dcp::manager::CheckpointManager>(options);
//   manager->register_stateful("model", std::make_shared<dcp::libtorch::ModuleState>(model));
//   ...
//   dcp::trainer::Callbacks callbacks;
//   callbacks.add(std::make_shared<dcp::trainer::CheckpointCallback>(manager));
//   callbacks.add(my_logger);
//
//   dcp::trainer::TrainState state;
//   callbacks.train_begin(state);          // resumes: state.step = the step to start from
//   while (state.step < steps) {
//     state.metrics["loss"] = train_one_step();
//     ++state.step;
//     if (callbacks.step_end(state)) break; // preempted: the checkpoint is saved, stop
//   }
//   callbacks.train_end(state);            // final save, waits for saves in flight
//
// Target dcp::trainer (links dcp::manager). No LibTorch types: the hooks see
// only steps and metrics, the manager only Stateful objects.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dcp/export.h"

namespace dcp {
namespace manager {
class CheckpointManager;
}  // namespace manager

namespace trainer {

// What the training loop tells its callbacks, and what they tell it back.
struct DCP_TRAINER_EXPORT TrainState {
  // The number of steps done: the loop increments it before step_end().
  // train_begin() callbacks may set it (a resume does).
  int64_t step = 0;
  // Free for the loop: the epoch, for callbacks that want it.
  int64_t epoch = 0;
  // The metrics of the step just done ("loss", ...), as the loop sets them.
  std::map<std::string, double> metrics;
  // Set by a callback to ask the loop to stop after this step.
  bool stop = false;
};

// Override what you need; every hook does nothing by default. Hooks run on
// the training thread, in the order the callbacks were added.
class DCP_TRAINER_EXPORT TrainerCallback {
 public:
  virtual ~TrainerCallback() = default;
  virtual void on_train_begin(TrainState& /*state*/) {}
  virtual void on_step_end(TrainState& /*state*/) {}
  virtual void on_train_end(TrainState& /*state*/) {}
};

// An ordered list of callbacks, called one after another. An exception from
// a callback propagates to the loop (the callbacks after it are not called).
class DCP_TRAINER_EXPORT Callbacks {
 public:
  void add(std::shared_ptr<TrainerCallback> callback);
  void train_begin(TrainState& state);
  // Runs every callback's on_step_end (all of them, even after one asked to
  // stop) and returns state.stop.
  bool step_end(TrainState& state);
  void train_end(TrainState& state);
  size_t size() const { return callbacks_.size(); }

 private:
  std::vector<std::shared_ptr<TrainerCallback>> callbacks_;
};

// The CheckpointManager as a callback:
// - on_train_begin: state.step = manager->resume() (0 when starting fresh);
// - on_step_end: manager->on_step(state.step, state.metrics), which saves by
//   the policy; when it says stop (a preemption signal, agreed by every rank,
//   and a checkpoint of this step committed) it sets state.stop;
// - on_train_end: manager->on_train_end(state.step, state.metrics), unless
//   the loop stopped for a preemption (the checkpoint is already saved; the
//   manager has waited for every save).
// Errors of the manager (an async save that failed, with on_error: raise)
// propagate from the hook that surfaces them.
class DCP_TRAINER_EXPORT CheckpointCallback : public TrainerCallback {
 public:
  explicit CheckpointCallback(std::shared_ptr<manager::CheckpointManager> manager);
  void on_train_begin(TrainState& state) override;
  void on_step_end(TrainState& state) override;
  void on_train_end(TrainState& state) override;

  // The step resume() returned (-1 before on_train_begin).
  int64_t resumed_step() const { return resumed_step_; }
  // on_step_end() has asked the loop to stop for a preemption signal.
  bool preempted() const { return preempted_; }
  manager::CheckpointManager& manager() const { return *manager_; }

 private:
  std::shared_ptr<manager::CheckpointManager> manager_;
  int64_t resumed_step_ = -1;
  bool preempted_ = false;
};

}  // namespace trainer
}  // namespace dcp
