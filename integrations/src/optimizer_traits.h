// The optimizers OptimizerState supports, one entry each (optimizer_traits.cpp):
// how an optimizer's hyper-parameters and per-parameter state map to the
// state dict laid out in dcp/libtorch/optimizer.h. optimizer.cpp does the
// rest (names, param groups, checks, installing a load) the same way for all.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "dcp/libtorch/module.h"
#include "dcp/libtorch/optimizer.h"
#include "dcp/value.h"

namespace torch {
namespace optim {
class Optimizer;
class OptimizerOptions;
class OptimizerParamState;
}  // namespace optim
}  // namespace torch

namespace dcp {
namespace libtorch {

// A ParamState loaded from the state dict: `ok` false when something was
// wrong (noted in the problems); otherwise `state`, or null for no state.
struct LoadedState {
  bool ok = false;
  std::unique_ptr<torch::optim::OptimizerParamState> state;
};

// One supported optimizer. Each function takes the options and state of
// this optimizer's types only (the entry that matched the optimizer), and
// the layout (dcp/libtorch/optimizer.h) where the two differ.
struct OptimizerKind {
  const char* name;  // "kind" in the state dict: "SGD", "Adam", ...
  bool (*matches)(const torch::optim::Optimizer& optimizer);

  // A param group's hyper-parameters, as plain values; with kPyTorch also
  // the options Python 1.13 keeps in this optimizer's groups and LibTorch
  // has not ("maximize": false, "foreach": none, ...).
  Dict (*save_options)(const torch::optim::OptimizerOptions& options, OptimizerLayout layout);
  // New options holding the hyper-parameters of `group` (a group of the
  // state dict; `where`: "param group <g>"); throws PlanMismatchError naming
  // a missing or mistyped one. Other keys of `group` are not looked at.
  std::unique_ptr<torch::optim::OptimizerOptions> (*load_options)(const Dict& group,
                                                                  const std::string& where);

  // The state entry of `param` ("step" and the tensors its group's options
  // keep): the optimizer's own tensors, or what a fresh state starts from
  // (zeros; Adagrad's sum: initial_accumulator_value) where `state` is null
  // or lacks one; each tensor as the piece `shard` (null: whole). kDcp: the
  // step an int; empty when the options keep no state (SGD without
  // momentum: the parameter has no entry). kPyTorch: the step as Python 1.13
  // keeps it (a float32 0-d tensor, or an int for RMSprop); SGD without
  // momentum has {"momentum_buffer": none}.
  Dict (*save_state)(const torch::optim::OptimizerOptions& options,
                     const torch::optim::OptimizerParamState* state, const at::Tensor& param,
                     const ShardSpec* shard, OptimizerLayout layout);
  // A new ParamState for `param` from its `entry` in the state dict's
  // "state" (null: it has none) under the key `key` (the parameter's name,
  // or index), as the group's new `options` keep it. Problems are added
  // naming "<key>.<field>". kDcp: an entry is required (the caller asks
  // only for parameters that have state). kPyTorch: no entry, or one that
  // never stepped (step 0; SGD: a none or all-zero buffer), is no state
  // (Adagrad: the initial state); the step may be any integral number.
  LoadedState (*load_state)(const torch::optim::OptimizerOptions& options, const Dict* entry,
                            const std::string& key, const at::Tensor& param, const ShardSpec* shard,
                            OptimizerLayout layout, std::vector<std::string>& problems);
};

// The entry of `optimizer`'s type (the first that matches: a subclass of a
// supported optimizer is taken for it); throws InvalidArgumentError naming
// the type of an unsupported one, and the supported ones.
const OptimizerKind& optimizer_kind(const torch::optim::Optimizer& optimizer);

// A plain value as Python prints it, for messages: True, None, 3, 0.5, 'x'
// (other kinds as dcp::describe gives them).
std::string python_repr(const Value& v);

// d[key]; throws PlanMismatchError "OptimizerState: <where> has no '<key>'".
const Value& field(const Dict& d, const std::string& key, const std::string& where);

}  // namespace libtorch
}  // namespace dcp
