// torch::optim optimizers and LR schedulers as dcp::Stateful objects.
//
//   auto model = std::make_shared<Net>();
//   torch::optim::Adam optim(model->parameters(), torch::optim::AdamOptions(1e-3));
//   dcp::StateDict sd{
//       {"model", std::make_shared<dcp::libtorch::ModuleState>(model)},
//       {"optim", std::make_shared<dcp::libtorch::OptimizerState>(optim, *model)}};
//   dcp::save(sd, dir);  ...  dcp::load(sd, dir);
//
// Supported: SGD, Adam, AdamW, RMSprop, Adagrad (LibTorch 1.13's set minus
// LBFGS, whose state is a closure history rather than per-parameter tensors).
// Per-parameter state is keyed by the parameter's name, not by its address
// (LibTorch's own key) or its index, so a checkpoint loads into a fresh
// process's new model and optimizer, and survives reordered parameters.
//
// State dict layout (T: tensor like the parameter; int/double/bool: plain):
//   "kind":   "SGD" | "Adam" | "AdamW" | "RMSprop" | "Adagrad"
//   "state":  { <param name>: { per-parameter state } }, one entry for every
//             parameter of every group, but none in a group of SGD without
//             momentum, which keeps no state (T is a ShardedTensor for a
//             parameter in OptimizerStateOptions::sharded):
//       SGD      "momentum_buffer": T                (only when momentum != 0)
//       Adam(W)  "step": int, "exp_avg": T, "exp_avg_sq": T,
//                "max_exp_avg_sq": T                 (only when amsgrad)
//       RMSprop  "step": int, "square_avg": T,
//                "momentum_buffer": T                (only when momentum > 0)
//                "grad_avg": T                       (only when centered)
//       Adagrad  "step": int, "sum": T
//   "params_with_state": [names]: the parameters that have optimizer state.
//             The others (never stepped) are saved as zeros with step 0 and
//             get no state on load, so their first step after resume is a
//             first step, as it would have been (SGD's first momentum step
//             differs from a step on a zero buffer).
//   "param_groups": [ {hyper-parameters..., "params": [names]} ], one plain
//             value; the hyper-parameters of each group:
//       SGD      lr, momentum, dampening, weight_decay, nesterov
//       Adam(W)  lr, betas ([beta1, beta2]), eps, weight_decay, amsgrad
//       RMSprop  lr, alpha, eps, weight_decay, momentum, centered
//       Adagrad  lr, lr_decay, weight_decay, initial_accumulator_value, eps
//
// Which state tensors exist depends on the optimizer's options (amsgrad,
// momentum, centered), so a checkpoint loads into an optimizer built with
// the same kind of options: otherwise dcp::load fails naming the keys that
// differ. The hyper-parameter values themselves are restored from the
// checkpoint, as PyTorch's load_state_dict does (set an lr after the load to
// change it).
//
// This header forward-declares the LibTorch classes; include
// <torch/optim.h> (or the optimizer's header) to build the optimizer.
#pragma once

#include <memory>
#include <string>

#include "dcp/export.h"
#include "dcp/libtorch/module.h"
#include "dcp/value.h"

namespace torch {
namespace optim {
class Optimizer;
class LRScheduler;
}  // namespace optim
}  // namespace torch

namespace dcp {
namespace libtorch {

struct DCP_LIBTORCH_EXPORT OptimizerStateOptions {
  // Parameters sharded across ranks: give the same map as to the ModuleState
  // (ModuleStateOptions::sharded). Their state tensors, shaped like the local
  // parameter, are then saved as ShardedTensors with the parameter's global
  // size and offsets, so every rank's piece is kept and reshards on load like
  // the parameter. Without it, the pieces different ranks save under one name
  // would be taken for replicas of one tensor and written once. Default
  // empty: every parameter is whole (replicated).
  std::map<std::string, ShardSpec> sharded;
};

// Contract:
// - Every parameter of every param group must have a name (from the module's
//   named_parameters(), or the list given); state_dict() throws
//   InvalidArgumentError naming the group and index of one that has none.
// - state_dict() returns the optimizer's own state tensors (aliases) for the
//   parameters that have state, and new zero tensors for those that have
//   none; it does not change the optimizer.
// - load_state_dict(sd), called by dcp::load after the tensors of
//   state_dict() were filled: checks the kind, the number of param groups
//   and that each holds the same parameter names, in any order
//   (PlanMismatchError naming the group otherwise), restores every group's
//   hyper-parameters, and installs the state: each parameter listed with
//   state gets a new ParamState holding the loaded tensors (under dcp::load,
//   the ones state_dict() returned: the optimizer's own where it had
//   state), so an optimizer that has not stepped yet loads too; one listed
//   without state loses its state. Each state tensor is checked against its
//   parameter's shape (PlanMismatchError naming "<param>.<field>") and, as
//   in PyTorch, converted to the parameter's dtype and device when they
//   differ (dcp::load gives them equal). Nothing is changed unless all of it
//   checks out.
// - Works after the module was loaded in place (same tensors) and in a new
//   process (new tensors, new optimizer).
// - The optimizer (and the module, when given by reference) must outlive
//   this object. Not thread-safe: do not step while a save copies or a load
//   runs.
class DCP_LIBTORCH_EXPORT OptimizerState : public Stateful {
 public:
  // Each constructor throws InvalidArgumentError, naming its type, for an
  // optimizer other than SGD, Adam, AdamW, RMSprop or Adagrad (a subclass of
  // one of them is taken for it: state of its own is not saved).
  //
  // Parameters named by `module`'s named_parameters(), read at each call.
  OptimizerState(torch::optim::Optimizer& optimizer, const torch::nn::Module& module,
                 OptimizerStateOptions options = {});
  OptimizerState(std::shared_ptr<torch::optim::Optimizer> optimizer,
                 std::shared_ptr<const torch::nn::Module> module,
                 OptimizerStateOptions options = {});
  // Parameters named by an explicit list (a parameter's tensor, by identity,
  // to its name); for optimizers over tensors that are not in one module.
  OptimizerState(torch::optim::Optimizer& optimizer, NamedTensors named_parameters,
                 OptimizerStateOptions options = {});

  StateDict state_dict() override;
  void load_state_dict(const StateDict& state_dict) override;

  // "SGD", "Adam", "AdamW", "RMSprop" or "Adagrad".
  std::string kind() const;
  torch::optim::Optimizer& optimizer() const { return *optimizer_; }

 private:
  NamedTensors parameter_names() const;

  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::shared_ptr<const torch::nn::Module> module_;  // null: names_ is the list
  NamedTensors names_;
  OptimizerStateOptions options_;
};

// An LR scheduler (torch::optim::LRScheduler: StepLR, or a subclass of your
// own) as a Stateful. LibTorch's schedulers keep one piece of state, the
// number of step() calls; the learning rates they set live in the
// optimizer's param groups, which OptimizerState saves. Save both.
//
// Layout: {"step_count": int}. A subclass with more state than step_count_
// needs an adapter of its own.
class DCP_LIBTORCH_EXPORT LRSchedulerState : public Stateful {
 public:
  // The scheduler must outlive this object.
  explicit LRSchedulerState(torch::optim::LRScheduler& scheduler);
  explicit LRSchedulerState(std::shared_ptr<torch::optim::LRScheduler> scheduler);

  StateDict state_dict() override;
  void load_state_dict(const StateDict& state_dict) override;

  // The scheduler's step count (LRScheduler::step_count_, protected there).
  int64_t step_count() const;

 private:
  std::shared_ptr<torch::optim::LRScheduler> scheduler_;
};

}  // namespace libtorch
}  // namespace dcp
