#include "dcp/torch/optimizer.h"

#include <c10/util/string_utils.h>
#include <torch/nn/module.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <climits>
#include <set>
#include <unordered_map>

#include "dcp/error.h"
#include "tensor_util.h"

namespace dcp {
namespace lt {

using namespace internal;

namespace {

namespace optim = torch::optim;

enum class Kind { kSGD, kAdam, kAdamW, kRMSprop, kAdagrad };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kSGD:
      return "SGD";
    case Kind::kAdam:
      return "Adam";
    case Kind::kAdamW:
      return "AdamW";
    case Kind::kRMSprop:
      return "RMSprop";
    case Kind::kAdagrad:
      return "Adagrad";
  }
  return "?";
}

Kind kind_of(const optim::Optimizer& o) {
  if (dynamic_cast<const optim::SGD*>(&o)) return Kind::kSGD;
  if (dynamic_cast<const optim::Adam*>(&o)) return Kind::kAdam;
  if (dynamic_cast<const optim::AdamW*>(&o)) return Kind::kAdamW;
  if (dynamic_cast<const optim::RMSprop*>(&o)) return Kind::kRMSprop;
  if (dynamic_cast<const optim::Adagrad*>(&o)) return Kind::kAdagrad;
  throw InvalidArgumentError(
      "OptimizerState: unsupported optimizer type (supported: SGD, Adam, AdamW, RMSprop, "
      "Adagrad)");
}

// LibTorch 1.13 keys optimizer state by the parameter's TensorImpl address,
// printed; this must be the same expression as in its optimizers.
std::string state_key(const at::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// --- hyper-parameters --------------------------------------------------------

const Value& field(const Dict& d, const std::string& key, const std::string& where) {
  auto it = d.find(key);
  if (it == d.end()) throw PlanMismatchError("OptimizerState: " + where + " has no '" + key + "'");
  return it->second;
}

Dict hyper_parameters(Kind kind, const optim::OptimizerOptions& o) {
  switch (kind) {
    case Kind::kSGD: {
      const auto& s = static_cast<const optim::SGDOptions&>(o);
      return {{"lr", s.lr()},
              {"momentum", s.momentum()},
              {"dampening", s.dampening()},
              {"weight_decay", s.weight_decay()},
              {"nesterov", s.nesterov()}};
    }
    case Kind::kAdam: {
      const auto& s = static_cast<const optim::AdamOptions&>(o);
      return {{"lr", s.lr()},
              {"betas", List{std::get<0>(s.betas()), std::get<1>(s.betas())}},
              {"eps", s.eps()},
              {"weight_decay", s.weight_decay()},
              {"amsgrad", s.amsgrad()}};
    }
    case Kind::kAdamW: {
      const auto& s = static_cast<const optim::AdamWOptions&>(o);
      return {{"lr", s.lr()},
              {"betas", List{std::get<0>(s.betas()), std::get<1>(s.betas())}},
              {"eps", s.eps()},
              {"weight_decay", s.weight_decay()},
              {"amsgrad", s.amsgrad()}};
    }
    case Kind::kRMSprop: {
      const auto& s = static_cast<const optim::RMSpropOptions&>(o);
      return {{"lr", s.lr()},
              {"alpha", s.alpha()},
              {"eps", s.eps()},
              {"weight_decay", s.weight_decay()},
              {"momentum", s.momentum()},
              {"centered", s.centered()}};
    }
    case Kind::kAdagrad: {
      const auto& s = static_cast<const optim::AdagradOptions&>(o);
      return {{"lr", s.lr()},
              {"lr_decay", s.lr_decay()},
              {"weight_decay", s.weight_decay()},
              {"initial_accumulator_value", s.initial_accumulator_value()},
              {"eps", s.eps()}};
    }
  }
  return {};
}

// New options of `kind` holding the hyper-parameters of `d` (a group of the
// state dict); throws PlanMismatchError naming a missing or mistyped one.
std::unique_ptr<optim::OptimizerOptions> options_from(Kind kind, const Dict& d,
                                                      const std::string& where) {
  auto num = [&](const char* k) {
    try {
      return field(d, k, where).to_double();
    } catch (const PlanMismatchError&) {
      throw;
    } catch (const Error& e) {
      throw PlanMismatchError("OptimizerState: " + where + " '" + k + "': " + e.what());
    }
  };
  auto flag = [&](const char* k) {
    try {
      return field(d, k, where).to_bool();
    } catch (const PlanMismatchError&) {
      throw;
    } catch (const Error& e) {
      throw PlanMismatchError("OptimizerState: " + where + " '" + k + "': " + e.what());
    }
  };
  auto betas = [&]() {
    const Value& v = field(d, "betas", where);
    if (!v.is_list() || v.list().size() != 2)
      throw PlanMismatchError("OptimizerState: " + where + " 'betas' is not a list of 2 numbers");
    return std::make_tuple(v.list()[0].to_double(), v.list()[1].to_double());
  };
  switch (kind) {
    case Kind::kSGD: {
      auto o = std::make_unique<optim::SGDOptions>(num("lr"));
      o->momentum(num("momentum"))
          .dampening(num("dampening"))
          .weight_decay(num("weight_decay"))
          .nesterov(flag("nesterov"));
      return o;
    }
    case Kind::kAdam: {
      auto o = std::make_unique<optim::AdamOptions>(num("lr"));
      o->betas(betas()).eps(num("eps")).weight_decay(num("weight_decay")).amsgrad(flag("amsgrad"));
      return o;
    }
    case Kind::kAdamW: {
      auto o = std::make_unique<optim::AdamWOptions>(num("lr"));
      o->betas(betas()).eps(num("eps")).weight_decay(num("weight_decay")).amsgrad(flag("amsgrad"));
      return o;
    }
    case Kind::kRMSprop: {
      auto o = std::make_unique<optim::RMSpropOptions>(num("lr"));
      o->alpha(num("alpha"))
          .eps(num("eps"))
          .weight_decay(num("weight_decay"))
          .momentum(num("momentum"))
          .centered(flag("centered"));
      return o;
    }
    case Kind::kAdagrad: {
      auto o = std::make_unique<optim::AdagradOptions>(num("lr"));
      o->lr_decay(num("lr_decay"))
          .weight_decay(num("weight_decay"))
          .initial_accumulator_value(num("initial_accumulator_value"))
          .eps(num("eps"));
      return o;
    }
  }
  return nullptr;
}

// --- per-parameter state -------------------------------------------------------

// The tensor fields of a parameter's state under `options`, in a fixed order,
// and whether the state has a step counter.
struct Layout {
  std::vector<const char*> tensors;
  bool step = false;
};

Layout layout_of(Kind kind, const optim::OptimizerOptions& o) {
  switch (kind) {
    case Kind::kSGD:
      if (static_cast<const optim::SGDOptions&>(o).momentum() != 0) return {{"momentum_buffer"}};
      return {};
    case Kind::kAdam:
    case Kind::kAdamW: {
      const bool amsgrad = kind == Kind::kAdam
                               ? static_cast<const optim::AdamOptions&>(o).amsgrad()
                               : static_cast<const optim::AdamWOptions&>(o).amsgrad();
      Layout l{{"exp_avg", "exp_avg_sq"}, true};
      if (amsgrad) l.tensors.push_back("max_exp_avg_sq");
      return l;
    }
    case Kind::kRMSprop: {
      const auto& r = static_cast<const optim::RMSpropOptions&>(o);
      Layout l{{"square_avg"}, true};
      if (r.momentum() > 0) l.tensors.push_back("momentum_buffer");
      if (r.centered()) l.tensors.push_back("grad_avg");
      return l;
    }
    case Kind::kAdagrad:
      return {{"sum"}, true};
  }
  return {};
}

// A field of a ParamState: its tensor (undefined when the state has none).
at::Tensor get_tensor(Kind kind, const optim::OptimizerParamState& s, const std::string& f) {
  switch (kind) {
    case Kind::kSGD:
      return static_cast<const optim::SGDParamState&>(s).momentum_buffer();
    case Kind::kAdam: {
      const auto& a = static_cast<const optim::AdamParamState&>(s);
      return f == "exp_avg" ? a.exp_avg() : f == "exp_avg_sq" ? a.exp_avg_sq() : a.max_exp_avg_sq();
    }
    case Kind::kAdamW: {
      const auto& a = static_cast<const optim::AdamWParamState&>(s);
      return f == "exp_avg" ? a.exp_avg() : f == "exp_avg_sq" ? a.exp_avg_sq() : a.max_exp_avg_sq();
    }
    case Kind::kRMSprop: {
      const auto& r = static_cast<const optim::RMSpropParamState&>(s);
      return f == "square_avg"        ? r.square_avg()
             : f == "momentum_buffer" ? r.momentum_buffer()
                                      : r.grad_avg();
    }
    case Kind::kAdagrad:
      return static_cast<const optim::AdagradParamState&>(s).sum();
  }
  return {};
}

int64_t get_step(Kind kind, const optim::OptimizerParamState& s) {
  switch (kind) {
    case Kind::kSGD:
      return 0;
    case Kind::kAdam:
      return static_cast<const optim::AdamParamState&>(s).step();
    case Kind::kAdamW:
      return static_cast<const optim::AdamWParamState&>(s).step();
    case Kind::kRMSprop:
      return static_cast<const optim::RMSpropParamState&>(s).step();
    case Kind::kAdagrad:
      return static_cast<const optim::AdagradParamState&>(s).step();
  }
  return 0;
}

// A new ParamState of `kind` from loaded fields.
std::unique_ptr<optim::OptimizerParamState> make_state(Kind kind,
                                                       const std::map<std::string, at::Tensor>& t,
                                                       int64_t step) {
  auto get = [&](const char* f) {
    auto it = t.find(f);
    return it == t.end() ? at::Tensor() : it->second;
  };
  switch (kind) {
    case Kind::kSGD: {
      auto s = std::make_unique<optim::SGDParamState>();
      s->momentum_buffer(get("momentum_buffer"));
      return s;
    }
    case Kind::kAdam: {
      auto s = std::make_unique<optim::AdamParamState>();
      s->step(step).exp_avg(get("exp_avg")).exp_avg_sq(get("exp_avg_sq"));
      s->max_exp_avg_sq(get("max_exp_avg_sq"));
      return s;
    }
    case Kind::kAdamW: {
      auto s = std::make_unique<optim::AdamWParamState>();
      s->step(step).exp_avg(get("exp_avg")).exp_avg_sq(get("exp_avg_sq"));
      s->max_exp_avg_sq(get("max_exp_avg_sq"));
      return s;
    }
    case Kind::kRMSprop: {
      auto s = std::make_unique<optim::RMSpropParamState>();
      s->step(step).square_avg(get("square_avg"));
      s->momentum_buffer(get("momentum_buffer")).grad_avg(get("grad_avg"));
      return s;
    }
    case Kind::kAdagrad: {
      auto s = std::make_unique<optim::AdagradParamState>();
      s->step(step).sum(get("sum"));
      return s;
    }
  }
  return nullptr;
}

std::string names_string(const std::vector<std::string>& names) {
  std::string s = "[";
  for (size_t i = 0; i < names.size() && i < 8; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > 8) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s + "]";
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
  kind_of(*optimizer_);
}

OptimizerState::OptimizerState(torch::optim::Optimizer& optimizer, NamedTensors named_parameters,
                               OptimizerStateOptions options)
    : optimizer_(std::shared_ptr<torch::optim::Optimizer>(
          std::shared_ptr<torch::optim::Optimizer>(), &optimizer)),
      names_(std::move(named_parameters)),
      options_(std::move(options)) {
  kind_of(*optimizer_);
}

std::string OptimizerState::kind() const { return kind_name(kind_of(*optimizer_)); }

NamedTensors OptimizerState::parameter_names() const {
  return module_ ? named_tensors(*module_, /*buffers=*/false) : names_;
}

namespace {

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

}  // namespace

StateDict OptimizerState::state_dict() {
  const optim::Optimizer& opt = *optimizer_;
  const Kind kind = kind_of(opt);
  const auto names = group_names(opt, parameter_names());

  Dict state;
  List with_state;
  List groups;
  for (size_t g = 0; g < names.size(); ++g) {
    const auto& group = opt.param_groups()[g];
    const Layout layout = layout_of(kind, group.options());
    Dict gd = hyper_parameters(kind, group.options());
    List param_names;
    for (size_t i = 0; i < names[g].size(); ++i) {
      const std::string& name = names[g][i];
      param_names.emplace_back(name);
      const at::Tensor& p = group.params()[i];
      auto it = opt.state().find(state_key(p));
      const optim::OptimizerParamState* s = it == opt.state().end() ? nullptr : it->second.get();
      if (s) with_state.emplace_back(name);
      if (layout.tensors.empty() && !layout.step) continue;
      auto spec = options_.sharded.find(name);
      const ShardSpec* piece = spec == options_.sharded.end() ? nullptr : &spec->second;
      Dict ps;
      if (layout.step) ps.emplace("step", s ? get_step(kind, *s) : int64_t{0});
      for (const char* f : layout.tensors) {
        at::Tensor t = s ? get_tensor(kind, *s, f) : at::Tensor();
        // No state yet (or amsgrad switched on later): zeros, a destination
        // on load and the value a fresh state would start from.
        if (!t.defined()) t = at::zeros_like(p, at::MemoryFormat::Preserve);
        ps.emplace(f, as_piece(t, piece));
      }
      state.emplace(name, std::move(ps));
    }
    gd.emplace("params", std::move(param_names));
    groups.emplace_back(std::move(gd));
  }
  return {{"kind", kind_name(kind)},
          {"state", std::move(state)},
          {"params_with_state", std::move(with_state)},
          {"param_groups", std::move(groups)}};
}

void OptimizerState::load_state_dict(const StateDict& sd) {
  optim::Optimizer& opt = *optimizer_;
  const Kind kind = kind_of(opt);
  const auto names = group_names(opt, parameter_names());

  const std::string saved_kind = field(sd, "kind", "the state dict").to_string();
  if (saved_kind != kind_name(kind))
    throw PlanMismatchError("OptimizerState: the checkpoint holds the state of " + saved_kind +
                            ", the optimizer is " + kind_name(kind));
  const Value& groups_v = field(sd, "param_groups", "the state dict");
  if (!groups_v.is_list())
    throw PlanMismatchError("OptimizerState: 'param_groups' is a " +
                            std::string(groups_v.kind_name()) + ", not a list");
  const List& groups = groups_v.list();
  if (groups.size() != names.size())
    throw PlanMismatchError("OptimizerState: the checkpoint has " + std::to_string(groups.size()) +
                            " param group(s), the optimizer " + std::to_string(names.size()));

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
    std::vector<std::string> saved_names;
    for (const Value& v : field(gd, "params", where).list()) saved_names.push_back(v.to_string());
    // The same parameters, in any order (state is keyed by name).
    std::vector<std::string> have = names[g];
    std::sort(saved_names.begin(), saved_names.end());
    std::sort(have.begin(), have.end());
    if (saved_names != have)
      throw PlanMismatchError("OptimizerState: " + where + " holds " + names_string(saved_names) +
                              " in the checkpoint, " + names_string(names[g]) +
                              " in the optimizer");
    new_options.push_back(options_from(kind, gd, where));
    const Layout layout = layout_of(kind, *new_options.back());

    const auto& params = opt.param_groups()[g].params();
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = names[g][i];
      const at::Tensor& p = params[i];
      if (!done.insert(name).second) continue;
      if (!with_state.count(name)) {
        erase.push_back(state_key(p));
        continue;
      }
      std::map<std::string, at::Tensor> tensors;
      int64_t step = 0;
      if (layout.step || !layout.tensors.empty()) {
        auto it = state.find(name);
        if (it == state.end() || !it->second.is_dict()) {
          problems.push_back("'" + name + "': no state in the state dict");
          continue;
        }
        const Dict& ps = it->second.dict();
        if (layout.step) {
          auto st = ps.find("step");
          if (st == ps.end() || st->second.kind() != Value::Kind::kInt) {
            problems.push_back("'" + name + ".step': missing or not an int");
            continue;
          }
          step = st->second.to_int();
        }
        auto spec = options_.sharded.find(name);
        const ShardSpec* piece = spec == options_.sharded.end() ? nullptr : &spec->second;
        for (const char* f : layout.tensors) {
          auto ft = ps.find(f);
          const std::string key = name + "." + f;
          if (ft == ps.end()) {
            problems.push_back("'" + key + "': missing");
            continue;
          }
          std::string problem;
          const at::Tensor t = local_piece(ft->second, piece, p, key, problem);
          if (!t.defined()) {
            problems.push_back(problem);
            continue;
          }
          if (!t.sizes().equals(p.sizes())) {
            problems.push_back("'" + key + "': shape mismatch: state dict " + describe_tensor(t) +
                               ", parameter " + describe_tensor(p));
            continue;
          }
          // As PyTorch's load_state_dict: state follows its parameter's
          // dtype and device (no copy when they already agree). A slice of a
          // larger tensor (a whole tensor given for a sharded parameter) is
          // copied, so the state does not keep the whole alive.
          at::Tensor own = t.to(p.device(), p.scalar_type());
          if (own.storage().nbytes() != own.nbytes()) own = own.clone();
          tensors.emplace(f, std::move(own));
        }
      }
      new_states.emplace_back(state_key(p), make_state(kind, tensors, step));
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

}  // namespace lt
}  // namespace dcp
