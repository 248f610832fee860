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
// PyTorch's layout (OptimizerLayout::kPyTorch): what Python's
// torch.optim.Optimizer.state_dict() returns (PyTorch 1.13), so a checkpoint
// of a Python optimizer loads into the equivalent LibTorch one, and back:
//   "state":  { "<index>": { per-parameter state } }
//   "param_groups": [ {hyper-parameters..., Python-only options...,
//                      "params": [indices]} ]
// A parameter's index is its position counted across the param groups in
// order (as torch.optim numbers them: group 0's first parameter is 0, group
// 1's first is the size of group 0, ...; a parameter listed again keeps its
// index from the first group that has it, and within one group takes its
// last position there, as Python's own numbering does), so a Python
// optimizer over the equivalent module's parameters (model.parameters():
// the same order as named_parameters() here) matches index for index.
// Loaded under "optim", Python's dict arrives as "optim.state.0.exp_avg",
// ..., and "optim.param_groups" (one plain value: Python's tuples are
// lists, its None a none Value).
//   - Per-parameter state, as Python 1.13 names and types it:
//       SGD      "momentum_buffer": T, or none when momentum == 0 (Python
//                keeps a None buffer; LibTorch keeps no state)
//       Adam(W)  "step": float32 0-d tensor, "exp_avg", "exp_avg_sq": T,
//                "max_exp_avg_sq": T               (only when amsgrad)
//       RMSprop  "step": int (1.13's RMSprop keeps a plain int), "square_avg",
//                "momentum_buffer" (momentum > 0), "grad_avg" (centered)
//       Adagrad  "step": float32 0-d tensor, "sum": T
//     LibTorch keeps every step as an int64: state_dict() offers a 0-d
//     float32 tensor (exact up to 2^24 steps, as Python's own) or an int,
//     as 1.13 does, so dcp::load reads Python's values; load_state_dict()
//     takes an int, an integral double or any one-element tensor holding an
//     integral value >= 0, and refuses anything else (PlanMismatchError
//     naming "<index>.step"). A file of a PyTorch whose RMSprop keeps a
//     tensor step (2.x) does not load through dcp::load (the destination is
//     an int); give its dict to load_state_dict() directly.
//   - Hyper-parameters: the same keys and values as in dcp++'s layout.
//     Python's param groups also hold options LibTorch 1.13 does not have:
//     "maximize", "foreach", "capturable", "differentiable", "fused" (the
//     ones 1.13 lists for each optimizer, docs/INTEGRATIONS.md; state_dict()
//     writes them as LibTorch behaves: False, foreach None).
//     load_state_dict() accepts these, and any other key it does not know,
//     only at False or None, and otherwise refuses the load naming the
//     group and the key ("param group 0: 'maximize' is True; LibTorch
//     1.13's Adam has no such option"). One exception: "initial_lr", which
//     Python's LR schedulers add to every group, does not change what the
//     optimizer does and is accepted at any value (and not kept: LibTorch's
//     schedulers have no use for it).
//   - Which parameters have state. Python's state_dict() has entries only
//     for parameters that have state (not yet stepped: none), and
//     load_state_dict() given such a dict directly installs state exactly
//     for those with an entry (Adagrad, whose every parameter has state
//     from its constructor on, in LibTorch and Python: a parameter without
//     an entry gets the initial one, step 0 and the group's
//     initial_accumulator_value). dcp::load, though, needs a destination
//     for each key, so state_dict() offers an entry for EVERY parameter: the
//     optimizer's own state, or for a parameter without state what a fresh
//     state holds (step 0, zeros; Adagrad's sum the initial value), which
//     Python and LibTorch step exactly as no state. So
//       * dcp::load of a Python file that lacks some parameters (their
//         gradient never existed) needs LoadOptions::strict = false: the
//         missing keys are theirs (LoadResult::missing_keys); the entries
//         the file lacks are left as state_dict() offered them;
//       * an entry that says its parameter never stepped means no state:
//         step 0 (Adam, AdamW, RMSprop: Python writes no such entry), a
//         none or all-zero momentum buffer (SGD). So a parameter whose
//         entry the file lacks gets no state when it had none before the
//         load; one that had state keeps it as it was (its destinations are
//         the optimizer's own tensors; Adagrad: the state its constructor
//         gave). Load into an optimizer that has not stepped, as a resumed
//         process does, to get Python's semantics exactly.
//       * SGD with dampening != 0 is the one case where an all-zero buffer
//         steps differently from no buffer; a real buffer that is exactly
//         zero everywhere (on this rank's piece, when sharded) is taken for
//         none there.
//     A kPyTorch save, loaded with kPyTorch, gives back the same state.
//   - Python's layout does not name the optimizer's class: a file of
//     another kind fails on its keys (SGD's "momentum_buffer" where Adam
//     wants "exp_avg"; a group without "betas"), but Adam's and AdamW's
//     have the same keys, so an AdamW file loads into an Adam (as weight
//     decay of the other kind): build the optimizer the file was saved with.
//   - Keyed by position, not name: the optimizer must list the parameters
//     in the order the Python one did (load checks each group's indices).
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

// The layout of the state dict the adapter gives and takes.
enum class OptimizerLayout {
  // dcp++'s own (above): state keyed by parameter name, the optimizer's kind
  // and the parameters that have state recorded. Survives reordered
  // parameters; refuses a checkpoint of another optimizer by its kind.
  kDcp,
  // Python's optimizer.state_dict() of PyTorch 1.13 (above): state keyed by
  // the parameter's index; loads Python's checkpoints (a torch.save file, a
  // DCP directory) and saves what Python's load_state_dict takes.
  kPyTorch,
};

struct DCP_LIBTORCH_EXPORT OptimizerStateOptions {
  // Parameters sharded across ranks: give the same map as to the ModuleState
  // (ModuleStateOptions::sharded). Their state tensors, shaped like the local
  // parameter, are then saved as ShardedTensors with the parameter's global
  // size and offsets, so every rank's piece is kept and reshards on load like
  // the parameter. Without it, the pieces different ranks save under one name
  // would be taken for replicas of one tensor and written once. Default
  // empty: every parameter is whole (replicated).
  std::map<std::string, ShardSpec> sharded;

  // The state dict's layout (both state_dict() and load_state_dict()).
  // Default kDcp; kPyTorch to load or write Python's optimizer.state_dict().
  OptimizerLayout layout = OptimizerLayout::kDcp;
};

// Contract:
// - Every parameter of every param group must have a name (from the module's
//   named_parameters(), or the list given); state_dict() throws
//   InvalidArgumentError naming the group and index of one that has none.
// - state_dict() returns the optimizer's own state tensors (aliases) for the
//   parameters that have state, and new zero tensors for those that have
//   none (Adagrad's sum: the initial value); it does not change the
//   optimizer. (kPyTorch: the step is a new tensor or an int, as above.)
// - load_state_dict(sd), called by dcp::load after the tensors of
//   state_dict() were filled: checks the kind, the number of param groups
//   and that each holds the same parameter names, in any order (kPyTorch:
//   the number of groups, each group's "params" indices, in order, and the
//   Python-only options), PlanMismatchError naming the group otherwise;
//   restores every group's hyper-parameters, and installs the state: each
//   parameter listed with state (kPyTorch: with an entry that has stepped)
//   gets a new ParamState holding the loaded tensors (under dcp::load,
//   the ones state_dict() returned: the optimizer's own where it had
//   state), so an optimizer that has not stepped yet loads too; one listed
//   without state loses its state. Each state tensor is checked against its
//   parameter's shape (PlanMismatchError naming "<param>.<field>", kPyTorch
//   "<index>.<field>") and, as in PyTorch, converted to the parameter's
//   dtype and device when they differ (dcp::load gives them equal). Nothing
//   is changed unless all of it checks out.
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
