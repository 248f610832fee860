#include "dcp/libtorch/optimizer.h"

#include <c10/util/string_utils.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/version.h>

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

// The checkpoint's param groups, after checking that it has as many as the
// optimizer.
const List& saved_groups(const StateDict& sd, size_t n_groups) {
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

// kDcp: the checkpoint holds the state of the optimizer's kind.
void check_kind(const StateDict& sd, const OptimizerKind& kind) {
  if (!sd.count("kind") && sd.count("state") && sd.count("param_groups"))
    throw PlanMismatchError(
        "OptimizerState: the state dict has no 'kind': it looks like PyTorch's "
        "optimizer.state_dict(), which OptimizerStateOptions::layout = "
        "OptimizerLayout::kPyTorch reads");
  const std::string saved_kind = field(sd, "kind", "the state dict").to_string();
  if (saved_kind != kind.name)
    throw PlanMismatchError("OptimizerState: the checkpoint holds the state of " + saved_kind +
                            ", the optimizer is " + kind.name);
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

// --- PyTorch's layout (kPyTorch) ---------------------------------------------------

// Each parameter's index in PyTorch's layout, group by group, numbered as
// torch.optim.Optimizer.state_dict() does: group g's parameters from the
// sum of the sizes of the groups before it; a parameter of an earlier group
// keeps its index there, and one listed twice in a group gets its last
// position (Python builds each group's mapping before adding it).
std::vector<std::vector<int64_t>> python_indices(const optim::Optimizer& opt) {
  std::unordered_map<const c10::TensorImpl*, int64_t> index;
  std::vector<std::vector<int64_t>> out;
  int64_t start = 0;
  for (const auto& group : opt.param_groups()) {
    const auto& params = group.params();
    std::unordered_map<const c10::TensorImpl*, int64_t> fresh;
    for (size_t i = 0; i < params.size(); ++i)
      if (!index.count(params[i].unsafeGetTensorImpl()))
        fresh[params[i].unsafeGetTensorImpl()] = start + static_cast<int64_t>(i);
    index.insert(fresh.begin(), fresh.end());
    std::vector<int64_t> ids;
    for (const auto& p : params) ids.push_back(index.at(p.unsafeGetTensorImpl()));
    start += static_cast<int64_t>(params.size());
    out.push_back(std::move(ids));
  }
  return out;
}

std::string indices_string(const std::vector<int64_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size() && i < 16; ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  if (ids.size() > 16) s += ", ... (" + std::to_string(ids.size()) + " in all)";
  return s + "]";
}

// The saved group `gd` lists the indices `ids`, in this order.
void check_group_indices(const Dict& gd, const std::vector<int64_t>& ids,
                         const std::string& where) {
  const Value& v = field(gd, "params", where);
  std::vector<int64_t> saved;
  bool ints = v.is_list();
  if (ints)
    for (const Value& e : v.list()) {
      if (e.kind() != Value::Kind::kInt) {
        ints = false;
        break;
      }
      saved.push_back(e.to_int());
    }
  if (!ints)
    throw PlanMismatchError("OptimizerState: " + where + " 'params' is " + describe(v) +
                            ", not a list of parameter indices (PyTorch's layout)");
  if (saved != ids)
    throw PlanMismatchError("OptimizerState: " + where + " holds parameters " +
                            indices_string(saved) + " in the checkpoint, " + indices_string(ids) +
                            " in the optimizer");
}

// The keys of the saved group `gd` that LibTorch's options do not have
// (Python's "maximize", "foreach", ...) are at False or None, as LibTorch
// behaves; "initial_lr" (Python's LR schedulers) does not change the
// optimizer and is taken at any value.
void check_python_options(const Dict& gd, const OptimizerKind& kind,
                          const optim::OptimizerOptions& options, const std::string& where) {
  const Dict known = kind.save_options(options, OptimizerLayout::kDcp);
  for (const auto& [key, v] : gd) {
    if (key == "params" || key == "initial_lr" || known.count(key)) continue;
    if (v.is_none() || (v.kind() == Value::Kind::kBool && !v.to_bool())) continue;
    throw PlanMismatchError("OptimizerState: " + where + ": '" + key + "' is " + python_repr(v) +
                            "; LibTorch " + std::to_string(TORCH_VERSION_MAJOR) + "." +
                            std::to_string(TORCH_VERSION_MINOR) + "'s " + kind.name +
                            " has no such option");
  }
}

// kPyTorch's "state" keys are the decimal indices ("0", "12").
bool is_index(const std::string& key) {
  if (key.empty() || key.size() > 18 || (key[0] == '0' && key.size() > 1)) return false;
  return std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
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

namespace {

// What a load installs, built before anything is changed: a mismatch leaves
// the optimizer as it was.
struct NewState {
  std::vector<std::unique_ptr<optim::OptimizerOptions>> options;  // each group's
  std::vector<std::pair<std::string, std::unique_ptr<optim::OptimizerParamState>>> states;
  std::vector<std::string> erase;  // state keys of parameters to have no state

  void install(optim::Optimizer& opt) {
    for (size_t g = 0; g < options.size(); ++g)
      opt.param_groups()[g].set_options(std::move(options[g]));
    for (const auto& key : erase) opt.state().erase(key);
    for (auto& [key, s] : states) opt.state()[key] = std::move(s);
  }
};

// The state of parameter `p` in `opt` (null: none).
const optim::OptimizerParamState* state_of(const optim::Optimizer& opt, const at::Tensor& p) {
  auto it = opt.state().find(state_key(p));
  return it == opt.state().end() ? nullptr : it->second.get();
}

StateDict python_state_dict(const optim::Optimizer& opt, const OptimizerKind& kind,
                            const std::vector<std::vector<std::string>>& names,
                            const OptimizerStateOptions& options) {
  const auto ids = python_indices(opt);
  Dict state;
  List groups;
  for (size_t g = 0; g < ids.size(); ++g) {
    const auto& group = opt.param_groups()[g];
    Dict gd = kind.save_options(group.options(), OptimizerLayout::kPyTorch);
    List params;
    for (size_t i = 0; i < ids[g].size(); ++i) {
      params.emplace_back(ids[g][i]);
      const std::string key = std::to_string(ids[g][i]);
      if (state.count(key)) continue;  // listed before
      const at::Tensor& p = group.params()[i];
      state.emplace(
          key, kind.save_state(group.options(), state_of(opt, p), p, shard_of(options, names[g][i]),
                               OptimizerLayout::kPyTorch));
    }
    gd.emplace("params", std::move(params));
    groups.emplace_back(std::move(gd));
  }
  return {{"state", std::move(state)}, {"param_groups", std::move(groups)}};
}

void load_python_state_dict(optim::Optimizer& opt, const OptimizerKind& kind,
                            const std::vector<std::vector<std::string>>& names,
                            const OptimizerStateOptions& options, const StateDict& sd) {
  if (sd.count("kind") || sd.count("params_with_state"))
    throw PlanMismatchError(
        "OptimizerState: the state dict is in dcp++'s layout ('kind', 'params_with_state'), the "
        "adapter reads PyTorch's (OptimizerLayout::kPyTorch)");
  const auto ids = python_indices(opt);
  const List& groups = saved_groups(sd, ids.size());
  const Value& state_v = field(sd, "state", "the state dict");
  if (!state_v.is_dict())
    throw PlanMismatchError("OptimizerState: 'state' is a " + std::string(state_v.kind_name()) +
                            ", not a dict");
  const Dict& state = state_v.dict();

  NewState out;
  std::vector<std::string> problems;
  std::set<std::string> done;  // the indices handled
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string where = "param group " + std::to_string(g);
    if (!groups[g].is_dict()) throw PlanMismatchError("OptimizerState: " + where + " is no dict");
    const Dict& gd = groups[g].dict();
    check_group_indices(gd, ids[g], where);
    check_python_options(gd, kind, opt.param_groups()[g].options(), where);
    out.options.push_back(kind.load_options(gd, where));

    const auto& params = opt.param_groups()[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string key = std::to_string(ids[g][i]);
      if (!done.insert(key).second) continue;
      const Dict* entry = nullptr;
      auto it = state.find(key);
      if (it != state.end() && !it->second.is_dict()) {
        problems.push_back("'" + key + "': a " + describe(it->second) + ", not a dict");
        continue;
      }
      if (it != state.end()) entry = &it->second.dict();
      LoadedState s =
          kind.load_state(*out.options.back(), entry, key, params[i],
                          shard_of(options, names[g][i]), OptimizerLayout::kPyTorch, problems);
      if (!s.ok) continue;
      if (s.state)
        out.states.emplace_back(state_key(params[i]), std::move(s.state));
      else
        out.erase.push_back(state_key(params[i]));
    }
  }
  for (const auto& kv : state)
    if (!done.count(kv.first))
      problems.push_back("'" + kv.first + "': " +
                         (is_index(kv.first) ? "no parameter of the optimizer has this index"
                                             : "not a parameter index"));
  if (!problems.empty()) throw PlanMismatchError(mismatch_message("OptimizerState", problems));
  out.install(opt);
}

}  // namespace

StateDict OptimizerState::state_dict() {
  const optim::Optimizer& opt = *optimizer_;
  const OptimizerKind& kind = optimizer_kind(opt);
  const auto names = group_names(opt, parameter_names());
  if (options_.layout == OptimizerLayout::kPyTorch)
    return python_state_dict(opt, kind, names, options_);

  Dict state;
  List with_state;
  List groups;
  for (size_t g = 0; g < names.size(); ++g) {
    const auto& group = opt.param_groups()[g];
    Dict gd = kind.save_options(group.options(), OptimizerLayout::kDcp);
    List param_names;
    for (size_t i = 0; i < names[g].size(); ++i) {
      const std::string& name = names[g][i];
      param_names.emplace_back(name);
      const at::Tensor& p = group.params()[i];
      const optim::OptimizerParamState* s = state_of(opt, p);
      if (s) with_state.emplace_back(name);
      Dict entry =
          kind.save_state(group.options(), s, p, shard_of(options_, name), OptimizerLayout::kDcp);
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
  if (options_.layout == OptimizerLayout::kPyTorch)
    return load_python_state_dict(opt, kind, names, options_, sd);
  check_kind(sd, kind);
  const List& groups = saved_groups(sd, names.size());

  std::set<std::string> with_state;
  for (const Value& v : field(sd, "params_with_state", "the state dict").list())
    with_state.insert(v.to_string());
  const Value& state_v = field(sd, "state", "the state dict");
  static const Dict kNoState;
  const Dict& state = state_v.is_dict() ? state_v.dict() : kNoState;

  NewState out;
  std::vector<std::string> problems;
  std::set<std::string> done;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string where = "param group " + std::to_string(g);
    if (!groups[g].is_dict()) throw PlanMismatchError("OptimizerState: " + where + " is no dict");
    const Dict& gd = groups[g].dict();
    check_group_names(gd, names[g], where);
    out.options.push_back(kind.load_options(gd, where));

    const auto& params = opt.param_groups()[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = names[g][i];
      const at::Tensor& p = params[i];
      if (!done.insert(name).second) continue;
      if (!with_state.count(name)) {
        out.erase.push_back(state_key(p));
        continue;
      }
      auto it = state.find(name);
      const Dict* entry = it != state.end() && it->second.is_dict() ? &it->second.dict() : nullptr;
      LoadedState s = kind.load_state(*out.options.back(), entry, name, p, shard_of(options_, name),
                                      OptimizerLayout::kDcp, problems);
      if (s.ok) out.states.emplace_back(state_key(p), std::move(s.state));
    }
  }
  if (!problems.empty()) throw PlanMismatchError(mismatch_message("OptimizerState", problems));
  out.install(opt);
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
