#include "optimizer_traits.h"

#include <ATen/ATen.h>
#include <c10/util/Type.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
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
// For PyTorch's layout (kPyTorch), as Python 1.13's optimizer keeps it:
//   kPyStep                         the kind of its "step"
//   kNoState                        which entry means "never stepped"
//   kPythonOptions                  the options of Python's param groups
//                                   that LibTorch has not, each at the value
//                                   LibTorch behaves as (false or none)
//   none_tensors(options, f)        f(key) for each state "tensor" Python
//                                   keeps as None under `options`
//   initial(options, key, param)    what a fresh state's tensor starts from
// (TraitsBase has the common ones.) Adding an optimizer is adding its traits
// and a line to kKinds (below).

// Python's "step": none, a float32 0-d tensor, or a plain int.
enum class PyStep { kNone, kTensor, kInt };

// When an entry of kPyTorch's "state" means the parameter never stepped, so
// gets no state: at step 0 (Python writes none such: its state begins at
// the first step, which counts it), at a none or all-zero momentum buffer
// (SGD), or never (Adagrad: every parameter has state from the start).
enum class NoStateAt { kStepZero, kZeroBuffer, kNever };

// A Python-only option of a param group and the value LibTorch behaves as.
struct PythonOption {
  const char* key;
  bool none;  // true: None (foreach); false: False
};

struct TraitsBase {
  template <typename O, typename F>
  static void none_tensors(const O&, F&&) {}
  template <typename O>
  static at::Tensor initial(const O&, const char*, const at::Tensor& p) {
    return at::zeros_like(p, at::MemoryFormat::Preserve);
  }
};

struct SGDTraits : TraitsBase {
  using Optimizer = optim::SGD;
  using Options = optim::SGDOptions;
  using ParamState = optim::SGDParamState;
  static constexpr const char* kName = "SGD";
  static constexpr bool kStep = false;
  static constexpr PyStep kPyStep = PyStep::kNone;
  static constexpr NoStateAt kNoState = NoStateAt::kZeroBuffer;
  static constexpr PythonOption kPythonOptions[] = {
      {"maximize", false}, {"foreach", true}, {"differentiable", false}};

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
  template <typename F>
  static void none_tensors(const Options& o, F&& f) {
    if (o.momentum() == 0) f("momentum_buffer");
  }
};

// Adam and AdamW have the same hyper-parameters and state, in types of their own.
template <typename Opt, typename Opts, typename State>
struct AdamFamilyTraits : TraitsBase {
  using Optimizer = Opt;
  using Options = Opts;
  using ParamState = State;
  static constexpr bool kStep = true;
  static constexpr PyStep kPyStep = PyStep::kTensor;
  static constexpr NoStateAt kNoState = NoStateAt::kStepZero;

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
  static constexpr PythonOption kPythonOptions[] = {{"maximize", false},
                                                    {"foreach", true},
                                                    {"capturable", false},
                                                    {"differentiable", false},
                                                    {"fused", false}};
};

// 1.13's AdamW has neither "differentiable" nor "fused".
struct AdamWTraits : AdamFamilyTraits<optim::AdamW, optim::AdamWOptions, optim::AdamWParamState> {
  static constexpr const char* kName = "AdamW";
  static constexpr PythonOption kPythonOptions[] = {
      {"foreach", true}, {"maximize", false}, {"capturable", false}};
};

struct RMSpropTraits : TraitsBase {
  using Optimizer = optim::RMSprop;
  using Options = optim::RMSpropOptions;
  using ParamState = optim::RMSpropParamState;
  static constexpr const char* kName = "RMSprop";
  static constexpr bool kStep = true;
  static constexpr PyStep kPyStep = PyStep::kInt;  // 1.13's RMSprop: a Python int
  static constexpr NoStateAt kNoState = NoStateAt::kStepZero;
  static constexpr PythonOption kPythonOptions[] = {
      {"foreach", true}, {"maximize", false}, {"differentiable", false}};

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

struct AdagradTraits : TraitsBase {
  using Optimizer = optim::Adagrad;
  using Options = optim::AdagradOptions;
  using ParamState = optim::AdagradParamState;
  static constexpr const char* kName = "Adagrad";
  static constexpr bool kStep = true;
  static constexpr PyStep kPyStep = PyStep::kTensor;
  static constexpr NoStateAt kNoState = NoStateAt::kNever;
  static constexpr PythonOption kPythonOptions[] = {{"foreach", true}, {"maximize", false}};

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
  // As its constructor (LibTorch's and Python's) fills it.
  static at::Tensor initial(const Options& o, const char*, const at::Tensor& p) {
    return at::full_like(p, o.initial_accumulator_value(), at::MemoryFormat::Preserve);
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
Dict save_options(const optim::OptimizerOptions& o, OptimizerLayout layout) {
  Dict group;
  T::hyper_parameters(static_cast<const typename T::Options&>(o), SaveHyperParameter{group});
  if (layout == OptimizerLayout::kPyTorch)
    for (const PythonOption& po : T::kPythonOptions)
      group.emplace(po.key, po.none ? Value() : Value(false));
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
                const at::Tensor& p, const ShardSpec* shard, OptimizerLayout layout) {
  using State = typename T::ParamState;
  const auto& options = static_cast<const typename T::Options&>(o);
  const State none{};
  const State& state = s ? static_cast<const State&>(*s) : none;
  const bool python = layout == OptimizerLayout::kPyTorch;
  Dict entry;
  if constexpr (T::kStep) {
    const int64_t step = s ? state.step() : 0;
    if (python && T::kPyStep == PyStep::kTensor)
      entry.emplace("step", at::scalar_tensor(static_cast<double>(step), at::kFloat));
    else
      entry.emplace("step", step);
  }
  T::tensors(options, state, [&](const char* key, const at::Tensor& t) {
    // No state yet (or amsgrad switched on later): what a fresh state starts
    // from, a destination on load.
    at::Tensor value = t.defined() ? t : T::initial(options, key, p);
    entry.emplace(key, as_piece(value, shard));
  });
  if (python) T::none_tensors(options, [&](const char* key) { entry.emplace(key, Value()); });
  return entry;
}

// The shortest "%.*g" of `d` that reads back as `d` (0.1, not 0.10000000000000001).
std::string number_string(double d) {
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

// A step count from `v` (an int, a double or a one-element tensor of a real
// dtype) into `step`: "" when it is an integral value from 0 to 2^63 - 1,
// else why not.
std::string integral_step(const Value& v, int64_t& step) {
  double d = 0;
  switch (v.kind()) {
    case Value::Kind::kInt:
      step = v.to_int();
      return step < 0 ? std::to_string(step) + " is negative" : "";
    case Value::Kind::kDouble:
      d = v.to_double();
      break;
    case Value::Kind::kTensor: {
      const at::Tensor& t = v.tensor();
      if (!t.defined()) return "the tensor is undefined";
      if (t.numel() != 1) return "a tensor " + describe_tensor(t) + ", not one number";
      const at::ScalarType dt = t.scalar_type();
      if (at::isIntegralType(dt, /*includeBool=*/false)) {
        step = t.item<int64_t>();
        return step < 0 ? std::to_string(step) + " is negative" : "";
      }
      if (!at::isFloatingType(dt)) return "a tensor " + describe_tensor(t) + ", not a real number";
      d = t.item<double>();
      break;
    }
    default:
      return "a " + describe(v) + ", not a number";
  }
  // 2^63 is the first double beyond int64_t.
  if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d >= 9223372036854775808.0)
    return number_string(d) + " is not a step count (an integer from 0 to 2^63 - 1)";
  step = static_cast<int64_t>(d);
  return "";
}

// entry["step"] into `step`; false after noting the problem. kDcp: an int;
// kPyTorch: an int, an integral double or a one-element tensor holding one.
bool load_step(const Dict& entry, const std::string& key, OptimizerLayout layout, int64_t& step,
               std::vector<std::string>& problems) {
  auto st = entry.find("step");
  if (layout == OptimizerLayout::kDcp) {
    if (st == entry.end() || st->second.kind() != Value::Kind::kInt) {
      problems.push_back("'" + key + ".step': missing or not an int");
      return false;
    }
    step = st->second.to_int();
    return true;
  }
  if (st == entry.end()) {
    problems.push_back("'" + key + ".step': missing");
    return false;
  }
  const std::string why = integral_step(st->second, step);
  if (!why.empty()) problems.push_back("'" + key + ".step': " + why);
  return why.empty();
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

// kPyTorch: whether a loaded entry (its step, its tensors) says the
// parameter never stepped. SGD's buffer is judged on this rank's piece.
template <typename T>
bool never_stepped(const typename T::Options& options, const typename T::ParamState& s,
                   int64_t step, bool none_tensor) {
  switch (T::kNoState) {
    case NoStateAt::kStepZero:
      return step == 0;
    case NoStateAt::kZeroBuffer: {
      if (none_tensor) return true;
      bool zero = true;
      T::tensors(options, s, [&](const char*, const at::Tensor& t) {
        zero = zero && t.count_nonzero().template item<int64_t>() == 0;
      });
      return zero;
    }
    case NoStateAt::kNever:
      return false;
  }
  return false;
}

template <typename T>
LoadedState load_state(const optim::OptimizerOptions& o, const Dict* entry, const std::string& key,
                       const at::Tensor& p, const ShardSpec* shard, OptimizerLayout layout,
                       std::vector<std::string>& problems) {
  const auto& options = static_cast<const typename T::Options&>(o);
  const bool python = layout == OptimizerLayout::kPyTorch;
  auto s = std::make_unique<typename T::ParamState>();
  bool kept = T::kStep;
  T::tensors(options, *s, [&](const char*, at::Tensor&) { kept = true; });
  // Nothing saved for it (SGD without momentum; kPyTorch: a none buffer,
  // and LibTorch keeps no state).
  if (!kept) return {true, python ? nullptr : std::move(s)};

  if (!entry && python) {
    if (T::kNoState != NoStateAt::kNever) return {true, nullptr};
    T::tensors(options, *s,
               [&](const char* field, at::Tensor& t) { t = T::initial(options, field, p); });
    return {true, std::move(s)};  // step 0
  }
  if (!entry) {
    problems.push_back("'" + key + "': no state in the state dict");
    return {};
  }
  int64_t step = 0;
  if constexpr (T::kStep) {
    if (!load_step(*entry, key, layout, step, problems)) return {};
    s->step(step);
  }
  bool ok = true;
  bool none_tensor = false;  // kPyTorch: Python's None buffer (SGD)
  T::tensors(options, *s, [&](const char* field, at::Tensor& t) {
    auto it = entry->find(field);
    if (python && T::kNoState == NoStateAt::kZeroBuffer && it != entry->end() &&
        it->second.is_none()) {
      none_tensor = true;
      return;
    }
    t = load_tensor(*entry, key, field, p, shard, problems);
    ok = ok && t.defined();
  });
  if (!ok) return {};
  if (python && never_stepped<T>(options, *s, step, none_tensor)) return {true, nullptr};
  return {true, std::move(s)};
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

std::string python_repr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.to_bool() ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.to_int());
    case Value::Kind::kDouble:
      return number_string(v.to_double());
    case Value::Kind::kString:
      return "'" + v.to_string() + "'";
    default:
      return describe(v);
  }
}

const Value& field(const Dict& d, const std::string& key, const std::string& where) {
  auto it = d.find(key);
  if (it == d.end()) throw PlanMismatchError("OptimizerState: " + where + " has no '" + key + "'");
  return it->second;
}

}  // namespace libtorch
}  // namespace dcp
