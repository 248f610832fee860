#include "dcp/trainer/trainer.h"

#include <utility>

#include "dcp/error.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace trainer {

void Callbacks::add(std::shared_ptr<TrainerCallback> callback) {
  if (!callback) throw InvalidArgumentError("Callbacks::add: null callback");
  callbacks_.push_back(std::move(callback));
}

void Callbacks::train_begin(TrainState& state) {
  for (auto& c : callbacks_) c->on_train_begin(state);
}

bool Callbacks::step_end(TrainState& state) {
  for (auto& c : callbacks_) c->on_step_end(state);
  return state.stop;
}

void Callbacks::train_end(TrainState& state) {
  for (auto& c : callbacks_) c->on_train_end(state);
}

CheckpointCallback::CheckpointCallback(std::shared_ptr<manager::CheckpointManager> manager)
    : manager_(std::move(manager)) {
  if (!manager_) throw InvalidArgumentError("CheckpointCallback: null CheckpointManager");
}

void CheckpointCallback::on_train_begin(TrainState& state) {
  resumed_step_ = manager_->resume();
  state.step = resumed_step_;
}

void CheckpointCallback::on_step_end(TrainState& state) {
  if (manager_->on_step(state.step, state.metrics)) {
    preempted_ = true;
    state.stop = true;
  }
}

void CheckpointCallback::on_train_end(TrainState& state) {
  if (preempted_) {
    manager_->wait();
    return;
  }
  manager_->on_train_end(state.step, state.metrics);
}

}  // namespace trainer
}  // namespace dcp
