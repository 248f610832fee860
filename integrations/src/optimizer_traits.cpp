#include "optimizer_traits.h"

#include <c10/util/Type.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <tuple>
#include <typeinfo>

#include "dcp/error.h"
#include "tensor_util.h"

namespace dcp {
namespace libtorch {

using namespace internal;

namespace {

namespace optim = torch::optim;

// --- the optimizers ------------------------------------------------------------
//
// One traits struct per optimizer:
//   Optimizer, Options, ParamState  its LibTorch types
//   kName                           "kind" in the state dict
//   kStep                           whether its state has "step" (an int)
//   hyper_parameters(options, f)    f(key, field) for each hyper-parameter of
//                                   a param group (double, bool or a pair of
//                                   doubles), lr first
//   tensors(options, state, f)      f(key, tensor) for each tensor of a
//                                   parameter's state that `options` keep
// Both take const or mutable objects: LibTorch's TORCH_ARG accessors return
// a const or a mutable reference, so one list serves saving and loading.
// Adding an optimizer is adding its traits and a line to kKinds (below).

struct SGDTraits {
  using Optimizer = optim::SGD;
  using Options = optim::SGDOptions;
  using ParamState = optim::SGDParamState;
  static constexpr const char* kName = "SGD";
  static constexpr bool kStep = false;

  template <typename O, typename F>
  static void hyper_parameters(O& o, F&& f) {
    f("lr", o.lr());
    f("momentum", o.momentum());
    f("dampening", o.dampening());
    f("weight_decay", o.weight_decay());
    f("nesterov", o.nesterov());
  }
  template <typename S, typename F>
  static void tensors(const Options& o, S& s, F&& f) {
    if (o.momentum() != 0) f("momentum_buffer", s.momentum_buffer());
  }
};

// Adam and AdamW have the same hyper-parameters and state, in types of their own.
template <typename Opt, typename Opts, typename State>
struct AdamFamilyTraits {
  using Optimizer = Opt;
  using Options = Opts;
  using ParamState = State;
  static constexpr bool kStep = true;

  template <typename O, typename F>
  static void hyper_parameters(O& o, F&& f) {
    f("lr", o.lr());
    f("betas", o.betas());
    f("eps", o.eps());
    f("weight_decay", o.weight_decay());
    f("amsgrad", o.amsgrad());
  }
  template <typename S, typename F>
  static void tensors(const Options& o, S& s, F&& f) {
    f("exp_avg", s.exp_avg());
    f("exp_avg_sq", s.exp_avg_sq());
    if (o.amsgrad()) f("max_exp_avg_sq", s.max_exp_avg_sq());
  }
};

struct AdamTraits : AdamFamilyTraits<optim::Adam, optim::AdamOptions, optim::AdamParamState> {
  static constexpr const char* kName = "Adam";
};

struct AdamWTraits : AdamFamilyTraits<optim::AdamW, optim::AdamWOptions, optim::AdamWParamState> {
  static constexpr const char* kName = "AdamW";
};

struct RMSpropTraits {
  using Optimizer = optim::RMSprop;
  using Options = optim::RMSpropOptions;
  using ParamState = optim::RMSpropParamState;
  static constexpr const char* kName = "RMSprop";
  static constexpr bool kStep = true;

  template <typename O, typename F>
  static void hyper_parameters(O& o, F&& f) {
    f("lr", o.lr());
    f("alpha", o.alpha());
    f("eps", o.eps());
    f("weight_decay", o.weight_decay());
    f("momentum", o.momentum());
    f("centered", o.centered());
  }
  template <typename S, typename F>
  static void tensors(const Options& o, S& s, F&& f) {
    f("square_avg", s.square_avg());
    if (o.momentum() > 0) f("momentum_buffer", s.momentum_buffer());
    if (o.centered()) f("grad_avg", s.grad_avg());
  }
};

struct AdagradTraits {
  using Optimizer = optim::Adagrad;
  using Options = optim::AdagradOptions;
  using ParamState = optim::AdagradParamState;
  static constexpr const char* kName = "Adagrad";
  static constexpr bool kStep = true;

  template <typename O, typename F>
  static void hyper_parameters(O& o, F&& f) {
    f("lr", o.lr());
    f("lr_decay", o.lr_decay());
    f("weight_decay", o.weight_decay());
    f("initial_accumulator_value", o.initial_accumulator_value());
    f("eps", o.eps());
  }
  template <typename S, typename F>
  static void tensors(const Options&, S& s, F&& f) {
    f("sum", s.sum());
  }
};

// --- hyper-parameters ------------------------------------------------------------

// Puts each hyper-parameter into a group's dict.
struct SaveHyperParameter {
  Dict& group;
  void operator()(const char* key, double v) const { group.emplace(key, v); }
  void operator()(const char* key, bool v) const { group.emplace(key, v); }
  void operator()(const char* key, const std::tuple<double, double>& v) const {
    group.emplace(key, List{std::get<0>(v), std::get<1>(v)});
  }
};

// Sets each hyper-parameter from a group's dict.
struct LoadHyperParameter {
  const Dict& group;
  const std::string& where;

  template <typename T>
  T get(const char* key, T (Value::*to)() const) const {
    try {
      return (field(group, key, where).*to)();
    } catch (const PlanMismatchError&) {
      throw;
    } catch (const Error& e) {
      throw PlanMismatchError("OptimizerState: " + where + " '" + key + "': " + e.what());
    }
  }
  void operator()(const char* key, double& v) const { v = get(key, &Value::to_double); }
  void operator()(const char* key, bool& v) const { v = get(key, &Value::to_bool); }
  void operator()(const char* key, std::tuple<double, double>& v) const {
    const Value& pair = field(group, key, where);
    if (!pair.is_list() || pair.list().size() != 2)
      throw PlanMismatchError("OptimizerState: " + where + " '" + key +
                              "' is not a list of 2 numbers");
    v = std::make_tuple(pair.list()[0].to_double(), pair.list()[1].to_double());
  }
};

template <typename T>
bool matches(const optim::Optimizer& o) {
  return dynamic_cast<const typename T::Optimizer*>(&o) != nullptr;
}

template <typename T>
Dict save_options(const optim::OptimizerOptions& o) {
  Dict group;
  T::hyper_parameters(static_cast<const typename T::Options&>(o), SaveHyperParameter{group});
  return group;
}

template <typename T>
std::unique_ptr<optim::OptimizerOptions> load_options(const Dict& group, const std::string& where) {
  auto o = std::make_unique<typename T::Options>(/*lr=*/0.0);  // every field is set from `group`
  T::hyper_parameters(*o, LoadHyperParameter{group, where});
  return o;
}

// --- per-parameter state -----------------------------------------------------------

template <typename T>
Dict save_state(const optim::OptimizerOptions& o, const optim::OptimizerParamState* s,
                const at::Tensor& p, const ShardSpec* shard) {
  using State = typename T::ParamState;
  const auto& options = static_cast<const typename T::Options&>(o);
  const State none{};
  const State& state = s ? static_cast<const State&>(*s) : none;
  Dict entry;
  if constexpr (T::kStep) entry.emplace("step", s ? state.step() : int64_t{0});
  T::tensors(options, state, [&](const char* key, const at::Tensor& t) {
    // No state yet (or amsgrad switched on later): zeros, a destination on
    // load and the value a fresh state would start from.
    at::Tensor value = t.defined() ? t : at::zeros_like(p, at::MemoryFormat::Preserve);
    entry.emplace(key, as_piece(value, shard));
  });
  return entry;
}

// The entry of `name` in the state dict's "state", or null after noting the problem.
const Dict* state_entry(const Dict& state, const std::string& name,
                        std::vector<std::string>& problems) {
  auto it = state.find(name);
  if (it == state.end() || !it->second.is_dict()) {
    problems.push_back("'" + name + "': no state in the state dict");
    return nullptr;
  }
  return &it->second.dict();
}

// entry["step"] into `step`; false after noting the problem.
bool load_step(const Dict& entry, const std::string& name, int64_t& step,
               std::vector<std::string>& problems) {
  auto st = entry.find("step");
  if (st == entry.end() || st->second.kind() != Value::Kind::kInt) {
    problems.push_back("'" + name + ".step': missing or not an int");
    return false;
  }
  step = st->second.to_int();
  return true;
}

// entry[field] as state of `p`; undefined after noting the problem.
at::Tensor load_tensor(const Dict& entry, const std::string& name, const char* field,
                       const at::Tensor& p, const ShardSpec* shard,
                       std::vector<std::string>& problems) {
  auto ft = entry.find(field);
  const std::string key = name + "." + field;
  if (ft == entry.end()) {
    problems.push_back("'" + key + "': missing");
    return {};
  }
  std::string problem;
  const at::Tensor t = local_piece(ft->second, shard, p, key, problem);
  if (!t.defined()) {
    problems.push_back(problem);
    return {};
  }
  if (!t.sizes().equals(p.sizes())) {
    problems.push_back("'" + key + "': shape mismatch: state dict " + describe_tensor(t) +
                       ", parameter " + describe_tensor(p));
    return {};
  }
  // As PyTorch's load_state_dict: state follows its parameter's dtype and
  // device (no copy when they already agree). A slice of a larger tensor (a
  // whole tensor given for a sharded parameter) is copied, so the state does
  // not keep the whole alive.
  at::Tensor own = t.to(p.device(), p.scalar_type());
  if (own.storage().nbytes() != own.nbytes()) own = own.clone();
  return own;
}

template <typename T>
std::unique_ptr<optim::OptimizerParamState> load_state(const optim::OptimizerOptions& o,
                                                       const Dict& state, const std::string& name,
                                                       const at::Tensor& p, const ShardSpec* shard,
                                                       std::vector<std::string>& problems) {
  const auto& options = static_cast<const typename T::Options&>(o);
  auto s = std::make_unique<typename T::ParamState>();
  bool kept = T::kStep;
  T::tensors(options, *s, [&](const char*, at::Tensor&) { kept = true; });
  if (!kept) return s;  // nothing saved for it (SGD without momentum)

  const Dict* entry = state_entry(state, name, problems);
  if (!entry) return nullptr;
  if constexpr (T::kStep) {
    int64_t step = 0;
    if (!load_step(*entry, name, step, problems)) return nullptr;
    s->step(step);
  }
  bool ok = true;
  T::tensors(options, *s, [&](const char* key, at::Tensor& t) {
    t = load_tensor(*entry, name, key, p, shard, problems);
    ok = ok && t.defined();
  });
  if (!ok) return nullptr;
  return s;
}

template <typename T>
constexpr OptimizerKind kind_of() {
  return {T::kName,         &matches<T>,    &save_options<T>,
          &load_options<T>, &save_state<T>, &load_state<T>};
}

// Every supported optimizer, in the order they are tried.
constexpr OptimizerKind kKinds[] = {
    kind_of<SGDTraits>(),     kind_of<AdamTraits>(),    kind_of<AdamWTraits>(),
    kind_of<RMSpropTraits>(), kind_of<AdagradTraits>(),
};

}  // namespace

const OptimizerKind& optimizer_kind(const optim::Optimizer& optimizer) {
  for (const OptimizerKind& k : kKinds)
    if (k.matches(optimizer)) return k;
  std::string supported;
  for (const OptimizerKind& k : kKinds)
    supported += (supported.empty() ? "" : ", ") + std::string(k.name);
  throw InvalidArgumentError("OptimizerState: unsupported optimizer type " +
                             c10::demangle(typeid(optimizer).name()) + " (supported: " + supported +
                             ")");
}

const Value& field(const Dict& d, const std::string& key, const std::string& where) {
  auto it = d.find(key);
  if (it == d.end()) throw PlanMismatchError("OptimizerState: " + where + " has no '" + key + "'");
  return it->second;
}

}  // namespace libtorch
}  // namespace dcp
