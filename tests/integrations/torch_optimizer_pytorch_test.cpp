// dcp::libtorch::OptimizerState in PyTorch's layout (OptimizerLayout::kPyTorch):
// for each supported optimizer, a Python optimizer.state_dict() built here
// by hand, flat as the interop readers give it ("optim.state.0.exp_avg",
// "optim.param_groups"), saved as a dcp++ checkpoint and loaded through
// dcp::load; the steps Python keeps as tensors or ints; Python-only group
// options; group and index checks; what the adapter saves; and a load that
// fails changes nothing. (torch_optimizer_python_test.cpp checks the same
// against Python itself.)
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/libtorch/adapters.h"
#include "torch_test_net.h"

namespace {

using namespace dcp_torch_test;
using dcp::libtorch::OptimizerLayout;
using dcp::libtorch::OptimizerState;
using dcp::libtorch::OptimizerStateOptions;
using dcp::testing::TempDir;
using torch::optim::OptimizerParamGroup;

OptimizerStateOptions pytorch_layout() {
  OptimizerStateOptions o;
  o.layout = OptimizerLayout::kPyTorch;
  return o;
}

std::shared_ptr<OptimizerState> python_adapter(torch::optim::Optimizer& opt, NetImpl& net) {
  return std::make_shared<OptimizerState>(opt, net, pytorch_layout());
}

// The net's parameters in Python's order (model.parameters()): index i.
std::vector<torch::Tensor> params_of(NetImpl& net) { return net.parameters(); }

dcp::List indices(int64_t from, int64_t to) {
  dcp::List l;
  for (int64_t i = from; i < to; ++i) l.emplace_back(i);
  return l;
}

// A state tensor for parameter `index`: values that tell fields and
// parameters apart.
at::Tensor state_value(const at::Tensor& p, int64_t index, int field) {
  return torch::arange(p.numel(), torch::kFloat32).reshape(p.sizes()) * 1e-3 + index + 0.1 * field;
}

// LibTorch's own state of parameter `p`: its step (-1 where the optimizer
// keeps none) and its defined tensors, by Python's field names.
struct LibTorchState {
  bool has = false;
  int64_t step = -1;
  std::map<std::string, at::Tensor> tensors;
};

LibTorchState libtorch_state(const torch::optim::Optimizer& opt, const at::Tensor& p) {
  namespace o = torch::optim;
  LibTorchState out;
  auto it = opt.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
  if (it == opt.state().end()) return out;
  out.has = true;
  const o::OptimizerParamState* s = it->second.get();
  auto put = [&](const char* key, const at::Tensor& t) {
    if (t.defined()) out.tensors[key] = t;
  };
  if (auto* sgd = dynamic_cast<const o::SGDParamState*>(s)) {
    put("momentum_buffer", sgd->momentum_buffer());
  } else if (auto* adam = dynamic_cast<const o::AdamParamState*>(s)) {
    out.step = adam->step();
    put("exp_avg", adam->exp_avg());
    put("exp_avg_sq", adam->exp_avg_sq());
    put("max_exp_avg_sq", adam->max_exp_avg_sq());
  } else if (auto* adamw = dynamic_cast<const o::AdamWParamState*>(s)) {
    out.step = adamw->step();
    put("exp_avg", adamw->exp_avg());
    put("exp_avg_sq", adamw->exp_avg_sq());
    put("max_exp_avg_sq", adamw->max_exp_avg_sq());
  } else if (auto* rms = dynamic_cast<const o::RMSpropParamState*>(s)) {
    out.step = rms->step();
    put("square_avg", rms->square_avg());
    put("momentum_buffer", rms->momentum_buffer());
    put("grad_avg", rms->grad_avg());
  } else if (auto* ada = dynamic_cast<const o::AdagradParamState*>(s)) {
    out.step = ada->step();
    put("sum", ada->sum());
  }
  return out;
}

// --- Python 1.13's param groups, as its optimizer.state_dict() has them ---------
// (Its defaults are Python ints where they are 0: 'weight_decay': 0.)

dcp::Dict py_sgd_group(double lr, double momentum, double dampening, dcp::List params) {
  return {{"lr", lr},           {"momentum", momentum},    {"dampening", dampening},
          {"weight_decay", 0},  {"nesterov", false},       {"maximize", false},
          {"foreach", nullptr}, {"differentiable", false}, {"params", std::move(params)}};
}

dcp::Dict py_adam_group(double lr, bool amsgrad, dcp::List params) {
  return {{"lr", lr},
          {"betas", dcp::List{0.8, 0.99}},
          {"eps", 1e-08},
          {"weight_decay", 0},
          {"amsgrad", amsgrad},
          {"maximize", false},
          {"foreach", nullptr},
          {"capturable", false},
          {"differentiable", false},
          {"fused", false},
          {"params", std::move(params)}};
}

dcp::Dict py_adamw_group(double lr, dcp::List params) {
  return {{"lr", lr},
          {"betas", dcp::List{0.9, 0.999}},
          {"eps", 1e-08},
          {"weight_decay", 0.01},
          {"amsgrad", false},
          {"foreach", nullptr},
          {"maximize", false},
          {"capturable", false},
          {"params", std::move(params)}};
}

dcp::Dict py_rmsprop_group(double lr, dcp::List params) {
  return {{"lr", lr},
          {"momentum", 0.5},
          {"alpha", 0.9},
          {"eps", 1e-08},
          {"centered", true},
          {"weight_decay", 0},
          {"foreach", nullptr},
          {"maximize", false},
          {"differentiable", false},
          {"params", std::move(params)}};
}

dcp::Dict py_adagrad_group(double lr, double initial, dcp::List params) {
  return {{"lr", lr},
          {"lr_decay", 0},
          {"eps", 1e-10},
          {"weight_decay", 0},
          {"initial_accumulator_value", initial},
          {"foreach", nullptr},
          {"maximize", false},
          {"params", std::move(params)}};
}

// --- one case per optimizer --------------------------------------------------------

enum class Step { kNone, kTensor, kInt };

struct PythonCase {
  std::string name;
  // A fresh optimizer over two groups (fc1's parameters; the rest), of
  // other hyper-parameter values than the Python dict's, the same kinds of
  // state.
  std::function<std::unique_ptr<torch::optim::Optimizer>(NetImpl&)> make;
  std::function<dcp::Dict(size_t group, dcp::List params)> group;
  Step step;
  std::vector<std::string> fields;  // state tensors of each parameter
  std::set<int64_t> absent;         // indices without an entry (never had a gradient)
  // The hyper-parameters after the load equal the dict's.
  std::function<void(torch::optim::Optimizer&)> check_options;
  bool adagrad = false;  // parameters without an entry get the initial state
  double initial = 0;    // Adagrad's initial_accumulator_value
};

void PrintTo(const PythonCase& c, std::ostream* os) { *os << c.name; }

constexpr int64_t kStep = 3;

template <typename Opt, typename Options>
std::function<std::unique_ptr<torch::optim::Optimizer>(NetImpl&)> two_group_maker(Options o) {
  return [o](NetImpl& net) {
    return std::unique_ptr<torch::optim::Optimizer>(std::make_unique<Opt>(two_groups(net), o));
  };
}

std::vector<PythonCase> python_cases() {
  namespace o = torch::optim;
  auto lr = [](const torch::optim::Optimizer& opt, size_t g) {
    return opt.param_groups()[g].options().get_lr();
  };
  return {
      {"SGD_momentum",
       two_group_maker<o::SGD>(o::SGDOptions(1.0).momentum(0.2)),
       [](size_t g, dcp::List p) { return py_sgd_group(0.05 / (g + 1), 0.9, 0.1, std::move(p)); },
       Step::kNone,
       {"momentum_buffer"},
       {6, 7},
       [lr](torch::optim::Optimizer& opt) {
         for (size_t g = 0; g < 2; ++g) {
           const auto& so = static_cast<const o::SGDOptions&>(opt.param_groups()[g].options());
           EXPECT_DOUBLE_EQ(lr(opt, g), 0.05 / (g + 1));
           EXPECT_DOUBLE_EQ(so.momentum(), 0.9);
           EXPECT_DOUBLE_EQ(so.dampening(), 0.1);
           EXPECT_EQ(so.weight_decay(), 0.0);
         }
       }},
      {"Adam_amsgrad",
       two_group_maker<o::Adam>(o::AdamOptions(1.0).amsgrad(true)),
       [](size_t g, dcp::List p) { return py_adam_group(0.01 / (g + 1), true, std::move(p)); },
       Step::kTensor,
       {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
       {6, 7},
       [lr](torch::optim::Optimizer& opt) {
         const auto& ao = static_cast<const o::AdamOptions&>(opt.param_groups()[1].options());
         EXPECT_DOUBLE_EQ(lr(opt, 1), 0.005);
         EXPECT_EQ(ao.betas(), std::make_tuple(0.8, 0.99));
         EXPECT_EQ(ao.eps(), 1e-08);
         EXPECT_TRUE(ao.amsgrad());
       }},
      {"AdamW",
       two_group_maker<o::AdamW>(o::AdamWOptions(1.0).weight_decay(0.5)),
       [](size_t g, dcp::List p) { return py_adamw_group(0.02 / (g + 1), std::move(p)); },
       Step::kTensor,
       {"exp_avg", "exp_avg_sq"},
       {7},
       [lr](torch::optim::Optimizer& opt) {
         const auto& ao = static_cast<const o::AdamWOptions&>(opt.param_groups()[0].options());
         EXPECT_DOUBLE_EQ(lr(opt, 0), 0.02);
         EXPECT_DOUBLE_EQ(ao.weight_decay(), 0.01);
       }},
      {"RMSprop_centered_momentum",
       two_group_maker<o::RMSprop>(o::RMSpropOptions(1.0).centered(true).momentum(0.1)),
       [](size_t g, dcp::List p) { return py_rmsprop_group(0.01 / (g + 1), std::move(p)); },
       Step::kInt,
       {"square_avg", "momentum_buffer", "grad_avg"},
       {6, 7},
       [lr](torch::optim::Optimizer& opt) {
         const auto& ro = static_cast<const o::RMSpropOptions&>(opt.param_groups()[1].options());
         EXPECT_DOUBLE_EQ(lr(opt, 1), 0.005);
         EXPECT_DOUBLE_EQ(ro.alpha(), 0.9);
         EXPECT_DOUBLE_EQ(ro.momentum(), 0.5);
       }},
      {"Adagrad",
       two_group_maker<o::Adagrad>(o::AdagradOptions(1.0)),
       [](size_t g, dcp::List p) { return py_adagrad_group(0.05 / (g + 1), 0.25, std::move(p)); },
       Step::kTensor,
       {"sum"},
       {7},
       [lr](torch::optim::Optimizer& opt) {
         const auto& ao = static_cast<const o::AdagradOptions&>(opt.param_groups()[1].options());
         EXPECT_DOUBLE_EQ(lr(opt, 1), 0.025);
         EXPECT_DOUBLE_EQ(ao.initial_accumulator_value(), 0.25);
         EXPECT_DOUBLE_EQ(ao.eps(), 1e-10);
       },
       true,
       0.25},
  };
}

// The case's Python state dict, flat under "optim." as the interop readers
// give it.
dcp::StateDict flat_python_dict(const PythonCase& c, NetImpl& net) {
  const auto params = params_of(net);
  dcp::StateDict flat;
  for (int64_t i = 0; i < static_cast<int64_t>(params.size()); ++i) {
    if (c.absent.count(i)) continue;
    const std::string prefix = "optim.state." + std::to_string(i) + ".";
    if (c.step == Step::kTensor) flat[prefix + "step"] = torch::scalar_tensor(3.0, torch::kFloat32);
    if (c.step == Step::kInt) flat[prefix + "step"] = kStep;
    for (size_t f = 0; f < c.fields.size(); ++f)
      flat[prefix + c.fields[f]] = state_value(params[i], i, static_cast<int>(f));
  }
  flat["optim.param_groups"] = dcp::List{c.group(0, indices(0, 2)), c.group(1, indices(2, 8))};
  return flat;
}

// The flat dict nested, as dcp::load hands it to load_state_dict().
dcp::StateDict nested(const dcp::StateDict& flat) {
  dcp::StateDict out{{"state", dcp::Dict{}}};
  for (const auto& [key, v] : flat) {
    if (key == "optim.param_groups") {
      out["param_groups"] = v;
      continue;
    }
    const std::string rest = key.substr(std::string("optim.state.").size());
    const size_t dot = rest.find('.');
    auto& entry = out["state"].dict()[rest.substr(0, dot)];
    if (entry.is_none()) entry = dcp::Dict{};
    entry.dict()[rest.substr(dot + 1)] = v;
  }
  return out;
}

std::vector<std::string> missing_keys_of(const PythonCase& c) {
  std::vector<std::string> keys;
  for (int64_t i : c.absent) {
    const std::string prefix = "optim.state." + std::to_string(i) + ".";
    if (c.step != Step::kNone) keys.push_back(prefix + "step");
    for (const auto& f : c.fields) keys.push_back(prefix + f);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

dcp::LoadResult load_with(dcp::StateDict sd, const std::string& dir, bool strict) {
  dcp::LoadOptions o;
  o.checkpoint_id = dir;
  o.strict = strict;
  return dcp::load(sd, o);
}

class TorchOptimizerPythonLayout : public ::testing::TestWithParam<PythonCase> {};

// A dcp++ checkpoint of a Python optimizer.state_dict() loads through the
// adapter: each parameter with an entry gets its step and tensors, one
// without gets none (Adagrad: the initial state), the hyper-parameters are
// the dict's; a strict load names the keys of the entries Python left out.
TEST_P(TorchOptimizerPythonLayout, LoadsPythonsStateDict) {
  const PythonCase& c = GetParam();
  TempDir dir;
  auto net = make_net(1);
  save_to(flat_python_dict(c, *net), dir.sub("ckpt"));

  auto opt = c.make(*net);
  const dcp::LoadResult r = load_with({{"optim", python_adapter(*opt, *net)}}, dir.sub("ckpt"),
                                      /*strict=*/false);
  std::vector<std::string> missing = r.missing_keys;
  std::sort(missing.begin(), missing.end());
  EXPECT_EQ(missing, missing_keys_of(c));
  EXPECT_TRUE(r.unexpected_keys.empty());
  c.check_options(*opt);

  const auto params = params_of(*net);
  for (int64_t i = 0; i < static_cast<int64_t>(params.size()); ++i) {
    const LibTorchState s = libtorch_state(*opt, params[i]);
    if (c.absent.count(i) && !c.adagrad) {
      EXPECT_FALSE(s.has) << "parameter " << i;
      continue;
    }
    ASSERT_TRUE(s.has) << "parameter " << i;
    if (c.absent.count(i)) {  // Adagrad: the state its constructor gave (initial value 0)
      EXPECT_EQ(s.step, 0);
      EXPECT_TRUE(torch::equal(s.tensors.at("sum"), torch::zeros_like(params[i])));
      continue;
    }
    EXPECT_EQ(s.step, c.step == Step::kNone ? -1 : kStep) << "parameter " << i;
    ASSERT_EQ(s.tensors.size(), c.fields.size()) << "parameter " << i;
    for (size_t f = 0; f < c.fields.size(); ++f)
      EXPECT_TRUE(
          torch::equal(s.tensors.at(c.fields[f]), state_value(params[i], i, static_cast<int>(f))))
          << i << "." << c.fields[f];
  }

  // Given directly, the dict's absent entries get no state (Adagrad: the
  // initial one of the dict's group).
  auto direct = c.make(*net);
  train_step(*net, *direct, 0, true);  // every parameter has state
  OptimizerState(*direct, *net, pytorch_layout())
      .load_state_dict(nested(flat_python_dict(c, *net)));
  for (int64_t i : c.absent) {
    const LibTorchState s = libtorch_state(*direct, params[i]);
    EXPECT_EQ(s.has, c.adagrad) << "parameter " << i;
    if (c.adagrad) {
      EXPECT_EQ(s.step, 0);
      EXPECT_TRUE(torch::equal(s.tensors.at("sum"), torch::full_like(params[i], c.initial)));
    }
  }

  // Strict: the entries Python left out are missing keys.
  auto fresh = c.make(*net);
  try {
    load_with({{"optim", python_adapter(*fresh, *net)}}, dir.sub("ckpt"), /*strict=*/true);
    ADD_FAILURE() << "strict load accepted";
  } catch (const dcp::CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), missing_keys_of(c).front())) << e.what();
  }
}

// Trained, saved with kPyTorch, loaded with kPyTorch into an optimizer that
// stepped on other data: the same state (no state where the saver had
// none), and the steps after it equal uninterrupted ones bit for bit.
TEST_P(TorchOptimizerPythonLayout, RoundTripsItsOwnSave) {
  const PythonCase& c = GetParam();
  TempDir dir;
  auto a = make_net(1);
  auto opt_a = c.make(*a);
  for (int i = 0; i < 3; ++i) train_step(*a, *opt_a, i, false);
  save_to({{"model", std::make_shared<dcp::libtorch::ModuleState>(a)},
           {"optim", python_adapter(*opt_a, *a)}},
          dir.sub("ckpt"));

  auto b = make_net(2);
  auto opt_b = c.make(*b);
  for (int i = 0; i < 2; ++i) train_step(*b, *opt_b, 50 + i, true);
  load_from({{"model", std::make_shared<dcp::libtorch::ModuleState>(b)},
             {"optim", python_adapter(*opt_b, *b)}},
            dir.sub("ckpt"));  // strict: a kPyTorch save has every entry
  EXPECT_EQ(opt_b->state().size(), opt_a->state().size());
  const dcp::StateDict sa = OptimizerState(*opt_a, *a).state_dict();
  const dcp::StateDict sb = OptimizerState(*opt_b, *b).state_dict();
  for (const char* key : {"state", "params_with_state", "param_groups"})
    EXPECT_TRUE(sa.at(key).equals(sb.at(key))) << key;
  for (int i = 3; i < 6; ++i) {
    train_step(*a, *opt_a, i, true);
    train_step(*b, *opt_b, i, true);
    ASSERT_TRUE(same_tensors(*a, *b)) << "after step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(All, TorchOptimizerPythonLayout, ::testing::ValuesIn(python_cases()),
                         [](const auto& info) { return info.param.name; });

// What state_dict() gives with kPyTorch: Python's keys, indices and kinds.
TEST(TorchOptimizerPythonLayoutSave, StateDictIsPythons) {
  namespace o = torch::optim;
  auto net = make_net(1);
  const auto params = params_of(*net);
  {
    o::Adam adam(two_groups(*net), o::AdamOptions(1e-2));
    for (int i = 0; i < 2; ++i) train_step(*net, adam, i, false);
    const dcp::StateDict sd = OptimizerState(adam, *net, pytorch_layout()).state_dict();
    std::vector<std::string> top;
    for (const auto& kv : sd) top.push_back(kv.first);
    EXPECT_EQ(top, (std::vector<std::string>{"param_groups", "state"}));
    const dcp::Dict& state = sd.at("state").dict();
    ASSERT_EQ(state.size(), 8u);  // every parameter: a destination for each
    for (int64_t i = 0; i < 8; ++i) {
      const dcp::Dict& e = state.at(std::to_string(i)).dict();
      const at::Tensor& step = e.at("step").tensor();
      EXPECT_EQ(step.dim(), 0);
      EXPECT_EQ(step.scalar_type(), torch::kFloat32);
      EXPECT_EQ(step.item<float>(), i < 6 ? 2.f : 0.f) << i;  // aux never stepped
      EXPECT_TRUE(e.at("exp_avg").tensor().sizes().equals(params[i].sizes()));
      EXPECT_FALSE(e.count("max_exp_avg_sq"));
    }
    const dcp::List& groups = sd.at("param_groups").list();
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_TRUE(groups[0].dict().at("params").equals(indices(0, 2)));
    EXPECT_TRUE(groups[1].dict().at("params").equals(indices(2, 8)));
    std::vector<std::string> keys;
    for (const auto& kv : groups[1].dict()) keys.push_back(kv.first);
    EXPECT_EQ(keys, (std::vector<std::string>{"amsgrad", "betas", "capturable", "differentiable",
                                              "eps", "foreach", "fused", "lr", "maximize", "params",
                                              "weight_decay"}));
    EXPECT_TRUE(groups[1].dict().at("foreach").is_none());
    EXPECT_FALSE(groups[1].dict().at("maximize").to_bool());
    EXPECT_DOUBLE_EQ(groups[1].dict().at("lr").to_double(), 1e-2);
  }
  {
    o::RMSprop rms(params, o::RMSpropOptions(1e-2));
    train_step(*net, rms, 0, false);
    const dcp::StateDict sd = OptimizerState(rms, *net, pytorch_layout()).state_dict();
    const dcp::Value& step = sd.at("state").dict().at("0").dict().at("step");
    EXPECT_EQ(step.kind(), dcp::Value::Kind::kInt);  // 1.13's RMSprop: a Python int
    EXPECT_EQ(step.to_int(), 1);
  }
  {
    o::SGD sgd(params, o::SGDOptions(0.1));
    train_step(*net, sgd, 0, false);
    const dcp::StateDict sd = OptimizerState(sgd, *net, pytorch_layout()).state_dict();
    const dcp::Dict& e = sd.at("state").dict().at("3").dict();
    ASSERT_EQ(e.size(), 1u);
    EXPECT_TRUE(e.at("momentum_buffer").is_none());  // Python's None buffer
  }
}

// torch.optim's numbering: counted across the groups; a parameter listed
// twice in a group takes its last position there.
TEST(TorchOptimizerPythonLayoutSave, IndicesNumberAsTorchOptimDoes) {
  namespace o = torch::optim;
  auto net = make_net(1);
  std::vector<OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<torch::Tensor>{net->fc2->weight, net->fc1->bias, net->fc2->weight});
  groups.emplace_back(std::vector<torch::Tensor>{net->aux->bias});
  o::SGD sgd(std::move(groups), o::SGDOptions(0.1).momentum(0.9));
  const dcp::StateDict sd = OptimizerState(sgd, *net, pytorch_layout()).state_dict();
  const dcp::List& g = sd.at("param_groups").list();
  EXPECT_TRUE(g[0].dict().at("params").equals(dcp::List{2, 1, 2})) << dcp::describe(g[0]);
  EXPECT_TRUE(g[1].dict().at("params").equals(dcp::List{3}));
  std::vector<std::string> keys;
  for (const auto& kv : sd.at("state").dict()) keys.push_back(kv.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"1", "2", "3"}));
}

// --- what load_state_dict() refuses, and that a refusal changes nothing -------------

class TorchOptimizerPythonLayoutLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    net = make_net(1);
    adam = std::make_unique<torch::optim::Adam>(two_groups(*net), torch::optim::AdamOptions(0.1));
    train_step(*net, *adam, 0, false);  // aux has no state
    before = OptimizerState(*adam, *net).state_dict();
    PythonCase c = python_cases().at(1);
    c.absent = {6, 7};
    good = nested(flat_python_dict(c, *net));
  }

  dcp::Dict& group(dcp::StateDict& sd, size_t g) {
    return sd.at("param_groups").list().at(g).dict();
  }
  dcp::Dict& entry(dcp::StateDict& sd, const std::string& i) {
    return sd.at("state").dict().at(i).dict();
  }

  // `change` of the good dict is refused naming every one of `expected`,
  // and the optimizer is as it was.
  void refused(const std::function<void(dcp::StateDict&)>& change,
               const std::vector<std::string>& expected) {
    dcp::StateDict sd = good;
    change(sd);
    try {
      OptimizerState(*adam, *net, pytorch_layout()).load_state_dict(sd);
      ADD_FAILURE() << "accepted; expected " << expected.at(0);
    } catch (const dcp::PlanMismatchError& e) {
      for (const auto& x : expected) EXPECT_TRUE(contains(e.what(), x)) << e.what();
    }
    const dcp::StateDict now = OptimizerState(*adam, *net).state_dict();
    for (const auto& [key, v] : before)
      EXPECT_TRUE(v.equals(now.at(key))) << key << " changed; expected " << expected.at(0);
  }

  // `change` of the good dict loads; returns fc1.weight's (index 0) state.
  LibTorchState accepted(const std::function<void(dcp::StateDict&)>& change) {
    dcp::StateDict sd = good;
    change(sd);
    auto fresh = std::make_unique<torch::optim::Adam>(two_groups(*net));
    OptimizerState(*fresh, *net, pytorch_layout()).load_state_dict(sd);
    return libtorch_state(*fresh, net->fc1->weight);
  }

  std::shared_ptr<NetImpl> net;
  std::unique_ptr<torch::optim::Adam> adam;
  dcp::StateDict before, good;
};

// The step: Python 1.13 keeps a float32 0-d tensor, older ones an int; any
// integral number loads exactly, anything else is refused naming "<index>.step".
TEST_F(TorchOptimizerPythonLayoutLoad, StepsConvertExactlyOrAreRefused) {
  using dcp::Value;
  auto with_step = [&](Value v) {
    return [v](dcp::StateDict& sd) { sd.at("state").dict().at("0").dict()["step"] = v; };
  };
  EXPECT_EQ(accepted([](dcp::StateDict&) {}).step, 3);
  EXPECT_EQ(accepted(with_step(int64_t{7})).step, 7);
  EXPECT_EQ(accepted(with_step(12.0)).step, 12);
  EXPECT_EQ(accepted(with_step(torch::scalar_tensor(16777216.0, torch::kFloat32))).step, 16777216);
  EXPECT_EQ(accepted(with_step(torch::scalar_tensor(5.0, torch::kFloat64))).step, 5);
  EXPECT_EQ(accepted(with_step(torch::tensor({int64_t{9}}))).step, 9);  // one element
  EXPECT_EQ(accepted(with_step(torch::scalar_tensor(int64_t{1} << 40, torch::kInt64))).step,
            int64_t{1} << 40);

  refused(with_step(torch::scalar_tensor(2.5, torch::kFloat32)),
          {"'0.step': 2.5 is not a step count"});
  refused(with_step(-1.0), {"'0.step': -1 is not a step count"});
  refused(with_step(int64_t{-3}), {"'0.step': -3 is negative"});
  refused(with_step(std::nan("")), {"'0.step': nan is not a step count"});
  refused(with_step(1e19), {"'0.step': 1e+19 is not a step count"});
  refused(with_step(torch::zeros({2})), {"'0.step': a tensor float32[2], not one number"});
  refused(with_step(torch::tensor(true)), {"'0.step': a tensor bool[], not a real number"});
  refused(with_step("3"), {"'0.step': a "});
  refused([](dcp::StateDict& sd) { sd.at("state").dict().at("1").dict().erase("step"); },
          {"'1.step': missing"});
}

// Python-only options: at False or None they load; otherwise the load is
// refused naming the group and the key. initial_lr (Python's schedulers)
// loads at any value.
TEST_F(TorchOptimizerPythonLayoutLoad, PythonOnlyOptionsLoadOnlyAtLibTorchsBehaviour) {
  accepted([&](dcp::StateDict& sd) {
    group(sd, 0)["foreach"] = false;
    group(sd, 1)["initial_lr"] = 0.01;
    group(sd, 1)["some_future_option"] = nullptr;
    group(sd, 0).erase("fused");  // absent: Python's default
  });
  refused([&](dcp::StateDict& sd) { group(sd, 0)["maximize"] = true; },
          {"OptimizerState: param group 0: 'maximize' is True; LibTorch 1.13's Adam has no such "
           "option"});
  refused([&](dcp::StateDict& sd) { group(sd, 1)["foreach"] = true; },
          {"param group 1: 'foreach' is True"});
  refused([&](dcp::StateDict& sd) { group(sd, 1)["capturable"] = true; },
          {"param group 1: 'capturable' is True"});
  refused([&](dcp::StateDict& sd) { group(sd, 0)["some_future_option"] = 0.5; },
          {"param group 0: 'some_future_option' is 0.5; LibTorch 1.13's Adam"});
  refused([&](dcp::StateDict& sd) { group(sd, 0)["mode"] = "max"; },
          {"param group 0: 'mode' is 'max'"});
}

// Groups and indices must be the optimizer's; state keys must be its indices.
TEST_F(TorchOptimizerPythonLayoutLoad, GroupsAndIndicesMustMatch) {
  refused([](dcp::StateDict& sd) { sd.at("param_groups").list().pop_back(); },
          {"OptimizerState: the checkpoint has 1 param group(s), the optimizer 2"});
  refused([&](dcp::StateDict& sd) { group(sd, 1)["params"] = indices(2, 7); },
          {"OptimizerState: param group 1 holds parameters [2, 3, 4, 5, 6] in the checkpoint, "
           "[2, 3, 4, 5, 6, 7] in the optimizer"});
  refused(
      [&](dcp::StateDict& sd) {
        group(sd, 0)["params"] = dcp::List{1, 0};
      },
      {"param group 0 holds parameters [1, 0] in the checkpoint, [0, 1] in the optimizer"});
  refused(
      [&](dcp::StateDict& sd) {
        group(sd, 0)["params"] = dcp::List{"fc1.weight", "fc1.bias"};
      },
      {"param group 0 'params' is", "not a list of parameter indices"});
  refused([&](dcp::StateDict& sd) { group(sd, 1).erase("betas"); },
          {"OptimizerState: param group 1 has no 'betas'"});
  refused([&](dcp::StateDict& sd) { sd.at("state").dict()["8"] = dcp::Dict{}; },
          {"'8': no parameter of the optimizer has this index"});
  refused([&](dcp::StateDict& sd) { sd.at("state").dict()["fc1.weight"] = dcp::Dict{}; },
          {"'fc1.weight': not a parameter index"});
  refused([](dcp::StateDict& sd) { sd["kind"] = "Adam"; }, {"dcp++'s layout"});
  // Every problem with the entries at once.
  refused(
      [&](dcp::StateDict& sd) {
        entry(sd, "0").erase("max_exp_avg_sq");
        entry(sd, "2")["exp_avg"] = torch::zeros({3});
        sd.at("state").dict()["4"] = 1;
      },
      {"OptimizerState: 3 key(s) do not match", "'0.max_exp_avg_sq': missing",
       "'2.exp_avg': shape mismatch", "'4': a int"});
  // kDcp's adapter given Python's dict says so.
  try {
    OptimizerState(*adam, *net).load_state_dict(good);
    ADD_FAILURE();
  } catch (const dcp::PlanMismatchError& e) {
    EXPECT_TRUE(contains(e.what(), "OptimizerLayout::kPyTorch")) << e.what();
  }
}

// Entries that say "never stepped" mean no state: step 0 (Adam), a none or
// zero buffer (SGD). A parameter without an entry loses its state when the
// dict is given directly; through dcp::load it keeps what state_dict()
// offered (its own state: documented).
TEST_F(TorchOptimizerPythonLayoutLoad, NeverSteppedEntriesAndAbsentOnes) {
  EXPECT_FALSE(accepted([](dcp::StateDict& sd) {
                 sd.at("state").dict().at("0").dict()["step"] = torch::scalar_tensor(0.0);
               }).has);
  EXPECT_FALSE(accepted([](dcp::StateDict& sd) { sd.at("state").dict().erase("0"); }).has);

  // The stepped optimizer: loaded directly, a parameter without an entry
  // has no state afterwards.
  dcp::StateDict sd = good;
  sd.at("state").dict().erase("1");
  OptimizerState(*adam, *net, pytorch_layout()).load_state_dict(sd);
  EXPECT_FALSE(libtorch_state(*adam, net->fc1->bias).has);
  EXPECT_TRUE(libtorch_state(*adam, net->fc1->weight).has);

  // Through dcp::load, non-strict, a stepped parameter without an entry keeps its state.
  namespace o = torch::optim;
  TempDir dir;
  o::SGD saver(two_groups(*net), o::SGDOptions(0.1).momentum(0.9).dampening(0.5));
  train_step(*net, saver, 0, false);
  dcp::StateDict flat{
      {"optim.param_groups", dcp::List{py_sgd_group(0.1, 0.9, 0.5, indices(0, 2)),
                                       py_sgd_group(0.1, 0.9, 0.5, indices(2, 8))}}};
  flat["optim.state.0.momentum_buffer"] = torch::ones_like(net->fc1->weight);
  flat["optim.state.1.momentum_buffer"] = torch::zeros_like(net->fc1->bias);  // zero: none
  save_to(flat, dir.sub("ckpt"));
  o::SGD sgd(two_groups(*net), o::SGDOptions(0.1).momentum(0.9).dampening(0.5));
  train_step(*net, sgd, 0, true);  // every parameter has a buffer
  const at::Tensor fc2_buffer = libtorch_state(sgd, net->fc2->weight).tensors.at("momentum_buffer");
  const at::Tensor fc2_before = fc2_buffer.clone();
  load_with({{"optim", python_adapter(sgd, *net)}}, dir.sub("ckpt"), false);
  EXPECT_TRUE(torch::equal(libtorch_state(sgd, net->fc1->weight).tensors.at("momentum_buffer"),
                           torch::ones_like(net->fc1->weight)));
  EXPECT_FALSE(libtorch_state(sgd, net->fc1->bias).has);
  const LibTorchState fc2 = libtorch_state(sgd, net->fc2->weight);
  ASSERT_TRUE(fc2.has);
  EXPECT_TRUE(torch::equal(fc2.tensors.at("momentum_buffer"), fc2_before));

  // Python's SGD without momentum keeps None buffers: no state in LibTorch.
  o::SGD plain(two_groups(*net), o::SGDOptions(0.3));
  dcp::StateDict none_buffers{{"param_groups", dcp::List{py_sgd_group(0.2, 0, 0, indices(0, 2)),
                                                         py_sgd_group(0.1, 0, 0, indices(2, 8))}},
                              {"state", dcp::Dict{{"0", dcp::Dict{{"momentum_buffer", nullptr}}}}}};
  OptimizerState(plain, *net, pytorch_layout()).load_state_dict(none_buffers);
  EXPECT_TRUE(plain.state().empty());
  EXPECT_DOUBLE_EQ(plain.param_groups()[0].options().get_lr(), 0.2);
}

}  // namespace
