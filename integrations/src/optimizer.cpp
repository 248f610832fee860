#include "dcp/libtorch/optimizer.h"

#include <c10/util/string_utils.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <algorithm>
#include <climits>
#include <set>
#include <unordered_map>

#include "dcp/error.h"
#include "optimizer_traits.h"
#include "tensor_util.h"

namespace dcp {
namespace libtorch {

using namespace internal;

namespace {

namespace optim = torch::optim;

// LibTorch 1.13 keys optimizer state by the parameter's TensorImpl address,
// printed; this must be the same expression as in its optimizers.
std::string state_key(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// The piece of the parameter `name` this rank holds; null: the whole.
const ShardSpec* shard_of(const OptimizerStateOptions& options, const std::string& name) {
  auto it = options.sharded.find(name);
  return it == options.sharded.end() ? nullptr : &it->second;
}

std::string names_string(const std::vector<std::string>& names) {
  std::string s = "[";
  for (size_t i = 0; i < names.size() && i < 8; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > 8) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s + "]";
}

// Each parameter of each group by name, in group order.
std::vector<std::vector<std::string>> group_names(const optim::Optimizer& opt,
                                                  const NamedTensors& named) {
  std::unordered_map<const c10::TensorImpl*, const std::string*> by_impl;
  for (const auto& [name, t] : named) by_impl.emplace(t.unsafeGetTensorImpl(), &name);
  std::vector<std::vector<std::string>> out;
  for (size_t g = 0; g < opt.param_groups().size(); ++g) {
    const auto& params = opt.param_groups()[g].params();
    std::vector<std::string> names;
    for (size_t i = 0; i < params.size(); ++i) {
      auto it = by_impl.find(params[i].unsafeGetTensorImpl());
      if (it == by_impl.end())
        throw InvalidArgumentError("OptimizerState: parameter " + std::to_string(i) +
                                   " of param group " + std::to_string(g) + " (" +
                                   describe_tensor(params[i]) +
                                   ") has no name: it is not a parameter of the module (or of "
                                   "the named list) the adapter was given");
      names.push_back(*it->second);
    }
    out.push_back(std::move(names));
  }
  return out;
}

// The checkpoint's param groups, after checking its kind and that it has as
// many groups as the optimizer.
const List& saved_groups(const StateDict& sd, const OptimizerKind& kind, size_t n_groups) {
  const std::string saved_kind = field(sd, "kind", "the state dict").to_string();
  if (saved_kind != kind.name)
    throw PlanMismatchError("OptimizerState: the checkpoint holds the state of " + saved_kind +
                            ", the optimizer is " + kind.name);
  const Value& groups_v = field(sd, "param_groups", "the state dict");
  if (!groups_v.is_list())
    throw PlanMismatchError("OptimizerState: 'param_groups' is a " +
                            std::string(groups_v.kind_name()) + ", not a list");
  const List& groups = groups_v.list();
  if (groups.size() != n_groups)
    throw PlanMismatchError("OptimizerState: the checkpoint has " + std::to_string(groups.size()) +
                            " param group(s), the optimizer " + std::to_string(n_groups));
  return groups;
}

// The saved group `gd` holds the parameters `names`, in any order (state is
// keyed by name).
void check_group_names(const Dict& gd, const std::vector<std::string>& names,
                       const std::string& where) {
  std::vector<std::string> saved_names;
  for (const Value& v : field(gd, "params", where).list()) saved_names.push_back(v.to_string());
  std::vector<std::string> have = names;
  std::sort(saved_names.begin(), saved_names.end());
  std::sort(have.begin(), have.end());
  if (saved_names != have)
    throw PlanMismatchError("OptimizerState: " + where + " holds " + names_string(saved_names) +
                            " in the checkpoint, " + names_string(names) + " in the optimizer");
}

}  // namespace

// --- OptimizerState --------------------------------------------------------------

OptimizerState::OptimizerState(torch::optim::Optimizer& optimizer, const torch::nn::Module& module,
                               OptimizerStateOptions options)
    : OptimizerState(std::shared_ptr<torch::optim::Optimizer>(
                         std::shared_ptr<torch::optim::Optimizer>(), &optimizer),
                     std::shared_ptr<const torch::nn::Module>(
                         std::shared_ptr<const torch::nn::Module>(), &module),
                     std::move(options)) {}

OptimizerState::OptimizerState(std::shared_ptr<torch::optim::Optimizer> optimizer,
                               std::shared_ptr<const torch::nn::Module> module,
                               OptimizerStateOptions options)
    : optimizer_(std::move(optimizer)), module_(std::move(module)), options_(std::move(options)) {
  if (!optimizer_ || !module_)
    throw InvalidArgumentError("OptimizerState: the optimizer or the module is null");
  optimizer_kind(*optimizer_);
}

OptimizerState::OptimizerState(torch::optim::Optimizer& optimizer, NamedTensors named_parameters,
                               OptimizerStateOptions options)
    : optimizer_(std::shared_ptr<torch::optim::Optimizer>(
          std::shared_ptr<torch::optim::Optimizer>(), &optimizer)),
      names_(std::move(named_parameters)),
      options_(std::move(options)) {
  optimizer_kind(*optimizer_);
}

std::string OptimizerState::kind() const { return optimizer_kind(*optimizer_).name; }

NamedTensors OptimizerState::parameter_names() const {
  return module_ ? named_tensors(*module_, /*buffers=*/false) : names_;
}

StateDict OptimizerState::state_dict() {
  const optim::Optimizer& opt = *optimizer_;
  const OptimizerKind& kind = optimizer_kind(opt);
  const auto names = group_names(opt, parameter_names());

  Dict state;
  List with_state;
  List groups;
  for (size_t g = 0; g < names.size(); ++g) {
    const auto& group = opt.param_groups()[g];
    Dict gd = kind.save_options(group.options());
    List param_names;
    for (size_t i = 0; i < names[g].size(); ++i) {
      const std::string& name = names[g][i];
      param_names.emplace_back(name);
      const at::Tensor& p = group.params()[i];
      auto it = opt.state().find(state_key(p));
      const optim::OptimizerParamState* s = it == opt.state().end() ? nullptr : it->second.get();
      if (s) with_state.emplace_back(name);
      Dict entry = kind.save_state(group.options(), s, p, shard_of(options_, name));
      if (!entry.empty()) state.emplace(name, std::move(entry));
    }
    gd.emplace("params", std::move(param_names));
    groups.emplace_back(std::move(gd));
  }
  return {{"kind", kind.name},
          {"state", std::move(state)},
          {"params_with_state", std::move(with_state)},
          {"param_groups", std::move(groups)}};
}

void OptimizerState::load_state_dict(const StateDict& sd) {
  optim::Optimizer& opt = *optimizer_;
  const OptimizerKind& kind = optimizer_kind(opt);
  const auto names = group_names(opt, parameter_names());
  const List& groups = saved_groups(sd, kind, names.size());

  std::set<std::string> with_state;
  for (const Value& v : field(sd, "params_with_state", "the state dict").list())
    with_state.insert(v.to_string());
  const Value& state_v = field(sd, "state", "the state dict");
  static const Dict kNoState;
  const Dict& state = state_v.is_dict() ? state_v.dict() : kNoState;

  // Check everything and build the new options and states first, so that a
  // mismatch leaves the optimizer as it was.
  std::vector<std::unique_ptr<optim::OptimizerOptions>> new_options;
  std::vector<std::pair<std::string, std::unique_ptr<optim::OptimizerParamState>>> new_states;
  std::vector<std::string> erase;
  std::vector<std::string> problems;
  std::set<std::string> done;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string where = "param group " + std::to_string(g);
    if (!groups[g].is_dict()) throw PlanMismatchError("OptimizerState: " + where + " is no dict");
    const Dict& gd = groups[g].dict();
    check_group_names(gd, names[g], where);
    new_options.push_back(kind.load_options(gd, where));

    const auto& params = opt.param_groups()[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = names[g][i];
      const at::Tensor& p = params[i];
      if (!done.insert(name).second) continue;
      if (!with_state.count(name)) {
        erase.push_back(state_key(p));
        continue;
      }
      auto s =
          kind.load_state(*new_options.back(), state, name, p, shard_of(options_, name), problems);
      if (s) new_states.emplace_back(state_key(p), std::move(s));
    }
  }
  if (!problems.empty()) throw PlanMismatchError(mismatch_message("OptimizerState", problems));

  for (size_t g = 0; g < new_options.size(); ++g)
    opt.param_groups()[g].set_options(std::move(new_options[g]));
  for (const auto& key : erase) opt.state().erase(key);
  for (auto& [key, s] : new_states) opt.state()[key] = std::move(s);
}

// --- LRSchedulerState ------------------------------------------------------------

namespace {

// LRScheduler::step_count_ is protected and has no accessor. A pointer to it
// formed in a derived class has type `unsigned LRScheduler::*` and applies to
// any scheduler.
struct SchedulerAccess : optim::LRScheduler {
  static unsigned optim::LRScheduler::*step_count() { return &SchedulerAccess::step_count_; }
};

}  // namespace

LRSchedulerState::LRSchedulerState(torch::optim::LRScheduler& scheduler)
    : scheduler_(std::shared_ptr<torch::optim::LRScheduler>(
          std::shared_ptr<torch::optim::LRScheduler>(), &scheduler)) {}

LRSchedulerState::LRSchedulerState(std::shared_ptr<torch::optim::LRScheduler> scheduler)
    : scheduler_(std::move(scheduler)) {
  if (!scheduler_) throw InvalidArgumentError("LRSchedulerState: the scheduler is null");
}

int64_t LRSchedulerState::step_count() const {
  return static_cast<int64_t>((*scheduler_).*SchedulerAccess::step_count());
}

StateDict LRSchedulerState::state_dict() { return {{"step_count", step_count()}}; }

void LRSchedulerState::load_state_dict(const StateDict& sd) {
  auto it = sd.find("step_count");
  if (it == sd.end() || it->second.kind() != Value::Kind::kInt)
    throw PlanMismatchError("LRSchedulerState: 'step_count' is missing or not an int");
  const int64_t n = it->second.to_int();
  if (n < 0 || n > static_cast<int64_t>(UINT_MAX))
    throw PlanMismatchError("LRSchedulerState: 'step_count' " + std::to_string(n) +
                            " is out of range");
  (*scheduler_).*SchedulerAccess::step_count() = static_cast<unsigned>(n);
}

}  // namespace libtorch
}  // namespace dcp
