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

// One supported optimizer. Each function takes the options and state of
// this optimizer's types only (the entry that matched the optimizer).
struct OptimizerKind {
  const char* name;  // "kind" in the state dict: "SGD", "Adam", ...
  bool (*matches)(const torch::optim::Optimizer& optimizer);

  // A param group's hyper-parameters, as plain values.
  Dict (*save_options)(const torch::optim::OptimizerOptions& options);
  // New options holding the hyper-parameters of `group` (a group of the
  // state dict; `where`: "param group <g>"); throws PlanMismatchError naming
  // a missing or mistyped one.
  std::unique_ptr<torch::optim::OptimizerOptions> (*load_options)(const Dict& group,
                                                                  const std::string& where);

  // The state entry of `param` ("step" and the tensors its group's options
  // keep): the optimizer's own tensors, or zeros where `state` is null or
  // lacks one; each tensor as the piece `shard` (null: whole). Empty when the
  // options keep no state (SGD without momentum): the parameter has no entry.
  Dict (*save_state)(const torch::optim::OptimizerOptions& options,
                     const torch::optim::OptimizerParamState* state, const at::Tensor& param,
                     const ShardSpec* shard);
  // A new ParamState for `param` from its entry `name` in `state` (the state
  // dict's "state"), as the group's new `options` keep it; or null, after
  // adding what is wrong (naming "<name>.<field>") to `problems`.
  std::unique_ptr<torch::optim::OptimizerParamState> (*load_state)(
      const torch::optim::OptimizerOptions& options, const Dict& state, const std::string& name,
      const at::Tensor& param, const ShardSpec* shard, std::vector<std::string>& problems);
};

// The entry of `optimizer`'s type (the first that matches: a subclass of a
// supported optimizer is taken for it); throws InvalidArgumentError naming
// the type of an unsupported one, and the supported ones.
const OptimizerKind& optimizer_kind(const torch::optim::Optimizer& optimizer);

// d[key]; throws PlanMismatchError "OptimizerState: <where> has no '<key>'".
const Value& field(const Dict& d, const std::string& key, const std::string& where);

}  // namespace libtorch
}  // namespace dcp
