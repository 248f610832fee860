// dcp::libtorch::OptimizerState for every supported optimizer over param groups
// of different hyper-parameters, and of different state (momentum, amsgrad,
// centered in one group only): the round trip compared by LibTorch itself,
// the saved layout key by key, and malformed state dicts refused.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <functional>

#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/libtorch/adapters.h"
#include "torch_test_net.h"

namespace {

using namespace dcp_torch_test;
using dcp::libtorch::ModuleState;
using dcp::libtorch::OptimizerState;
using dcp::testing::TempDir;
using torch::optim::OptimizerParamGroup;

// One optimizer over two param groups (fc1's parameters; the rest).
struct MixedGroupsCase {
  std::string kind;  // OptimizerState::kind()
  // The optimizer that saves, and a fresh one that loads: other
  // hyper-parameters in each group, the same kinds of state kept.
  std::function<std::unique_ptr<torch::optim::Optimizer>(NetImpl&)> saved, fresh;
  // LibTorch's own comparisons (operator==) of two options and two states
  // of this optimizer, independent of the adapter.
  std::function<bool(const torch::optim::OptimizerOptions&, const torch::optim::OptimizerOptions&)>
      same_options;
  std::function<bool(const torch::optim::OptimizerParamState&,
                     const torch::optim::OptimizerParamState&)>
      same_state;
  std::vector<std::string> hyper_parameters;         // of each group
  std::vector<std::vector<std::string>> state_keys;  // of a parameter of group 0, 1
};

void PrintTo(const MixedGroupsCase& c, std::ostream* os) { *os << c.kind; }

template <typename Opt, typename Options, typename ParamState>
MixedGroupsCase mixed_case(std::string kind, std::vector<Options> saved, std::vector<Options> fresh,
                           std::vector<std::string> hyper_parameters,
                           std::vector<std::vector<std::string>> state_keys) {
  auto make = [](std::vector<Options> options) {
    return [options](NetImpl& net) {
      std::vector<OptimizerParamGroup> groups;
      auto two = two_groups(net);
      for (size_t g = 0; g < two.size(); ++g)
        groups.emplace_back(two[g].params(), std::make_unique<Options>(options.at(g)));
      return std::unique_ptr<torch::optim::Optimizer>(
          std::make_unique<Opt>(std::move(groups), options.at(0)));
    };
  };
  return {std::move(kind),
          make(std::move(saved)),
          make(std::move(fresh)),
          [](const auto& a, const auto& b) {
            return static_cast<const Options&>(a) == static_cast<const Options&>(b);
          },
          [](const auto& a, const auto& b) {
            return static_cast<const ParamState&>(a) == static_cast<const ParamState&>(b);
          },
          std::move(hyper_parameters),
          std::move(state_keys)};
}

std::vector<MixedGroupsCase> mixed_group_cases() {
  namespace o = torch::optim;
  return {
      mixed_case<o::SGD, o::SGDOptions, o::SGDParamState>(
          "SGD",
          {o::SGDOptions(0.05).momentum(0.9).dampening(0.1).weight_decay(1e-3),
           o::SGDOptions(0.02).weight_decay(1e-2)},
          {o::SGDOptions(0.5).momentum(0.3).nesterov(true), o::SGDOptions(0.1)},
          {"lr", "momentum", "dampening", "weight_decay", "nesterov"}, {{"momentum_buffer"}, {}}),
      mixed_case<o::Adam, o::AdamOptions, o::AdamParamState>(
          "Adam",
          {o::AdamOptions(1e-2)
               .betas(std::make_tuple(0.8, 0.99))
               .eps(1e-6)
               .weight_decay(1e-3)
               .amsgrad(true),
           o::AdamOptions(5e-3).betas(std::make_tuple(0.95, 0.9))},
          {o::AdamOptions().amsgrad(true), o::AdamOptions(0.1).eps(1e-3).weight_decay(0.5)},
          {"lr", "betas", "eps", "weight_decay", "amsgrad"},
          {{"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, {"step", "exp_avg", "exp_avg_sq"}}),
      mixed_case<o::AdamW, o::AdamWOptions, o::AdamWParamState>(
          "AdamW",
          {o::AdamWOptions(1e-2).betas(std::make_tuple(0.85, 0.995)).weight_decay(0.05),
           o::AdamWOptions(3e-3).eps(1e-7).weight_decay(0).amsgrad(true)},
          {o::AdamWOptions(), o::AdamWOptions(0.2).amsgrad(true)},
          {"lr", "betas", "eps", "weight_decay", "amsgrad"},
          {{"step", "exp_avg", "exp_avg_sq"}, {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}}),
      mixed_case<o::RMSprop, o::RMSpropOptions, o::RMSpropParamState>(
          "RMSprop",
          {o::RMSpropOptions(1e-2).alpha(0.9).momentum(0.5),
           o::RMSpropOptions(5e-3).eps(1e-6).weight_decay(1e-3).centered(true)},
          {o::RMSpropOptions(0.1).momentum(0.2), o::RMSpropOptions().alpha(0.5).centered(true)},
          {"lr", "alpha", "eps", "weight_decay", "momentum", "centered"},
          {{"step", "square_avg", "momentum_buffer"}, {"step", "square_avg", "grad_avg"}}),
      mixed_case<o::Adagrad, o::AdagradOptions, o::AdagradParamState>(
          "Adagrad",
          {o::AdagradOptions(0.05).lr_decay(0.01).initial_accumulator_value(0.1),
           o::AdagradOptions(0.02).eps(1e-6).weight_decay(1e-3)},
          {o::AdagradOptions(0.5), o::AdagradOptions(0.1).lr_decay(0.5)},
          {"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"},
          {{"step", "sum"}, {"step", "sum"}}),
  };
}

class TorchOptimizerStateGroups : public ::testing::TestWithParam<MixedGroupsCase> {};

// Every parameter's LibTorch state in `b` equals `a`'s (operator==), or
// neither has one.
::testing::AssertionResult same_libtorch_state(const MixedGroupsCase& c, torch::optim::Optimizer& a,
                                               torch::optim::Optimizer& b) {
  for (size_t g = 0; g < a.param_groups().size(); ++g) {
    const auto& pa = a.param_groups()[g].params();
    const auto& pb = b.param_groups()[g].params();
    for (size_t i = 0; i < pa.size(); ++i) {
      auto sa = a.state().find(c10::guts::to_string(pa[i].unsafeGetTensorImpl()));
      auto sb = b.state().find(c10::guts::to_string(pb[i].unsafeGetTensorImpl()));
      const bool has_a = sa != a.state().end(), has_b = sb != b.state().end();
      if (has_a != has_b || (has_a && !c.same_state(*sa->second, *sb->second)))
        return ::testing::AssertionFailure() << "parameter " << i << " of group " << g;
    }
  }
  return ::testing::AssertionSuccess();
}

// Saved after 3 steps, loaded into a fresh optimizer of other values: every
// group gets its own hyper-parameters and every parameter its state back
// (compared by LibTorch, not through the adapter), and training goes on as
// if uninterrupted, bit for bit. In either layout.
void round_trip(const MixedGroupsCase& c, dcp::libtorch::OptimizerLayout layout) {
  dcp::libtorch::OptimizerStateOptions options;
  options.layout = layout;
  TempDir dir;
  auto a = make_net(1);
  auto opt_a = c.saved(*a);
  for (int i = 0; i < 3; ++i) train_step(*a, *opt_a, i, false);
  save_to({{"model", std::make_shared<ModuleState>(a)},
           {"optim", std::make_shared<OptimizerState>(*opt_a, *a, options)}},
          dir.sub("ckpt"));

  auto b = make_net(2);
  auto opt_b = c.fresh(*b);
  train_step(*b, *opt_b, 100, true);
  ASSERT_EQ(opt_b->param_groups().size(), 2u);
  for (size_t g = 0; g < 2; ++g)
    ASSERT_FALSE(
        c.same_options(opt_a->param_groups()[g].options(), opt_b->param_groups()[g].options()))
        << "group " << g;
  load_from({{"model", std::make_shared<ModuleState>(b)},
             {"optim", std::make_shared<OptimizerState>(*opt_b, *b, options)}},
            dir.sub("ckpt"));
  for (size_t g = 0; g < 2; ++g)
    EXPECT_TRUE(
        c.same_options(opt_a->param_groups()[g].options(), opt_b->param_groups()[g].options()))
        << "group " << g;
  EXPECT_FALSE(
      c.same_options(opt_b->param_groups()[0].options(), opt_b->param_groups()[1].options()));
  EXPECT_TRUE(same_libtorch_state(c, *opt_a, *opt_b));

  for (int i = 3; i < 6; ++i) {
    train_step(*a, *opt_a, i, true);
    train_step(*b, *opt_b, i, true);
    ASSERT_TRUE(same_tensors(*a, *b)) << "after step " << i;
  }
  EXPECT_TRUE(same_libtorch_state(c, *opt_a, *opt_b));
}

TEST_P(TorchOptimizerStateGroups, EveryGroupsHyperParametersAndStateRoundTrip) {
  round_trip(GetParam(), dcp::libtorch::OptimizerLayout::kDcp);
}

TEST_P(TorchOptimizerStateGroups, EveryGroupsHyperParametersAndStateRoundTripInPyTorchLayout) {
  round_trip(GetParam(), dcp::libtorch::OptimizerLayout::kPyTorch);
}

// The keys and kinds of values documented in dcp/libtorch/optimizer.h: each
// group's hyper-parameters, and for each parameter exactly the state its
// group's options keep (no entry when they keep none), tensors of the
// parameter's dtype and shape.
TEST_P(TorchOptimizerStateGroups, SavesTheDocumentedLayout) {
  const MixedGroupsCase& c = GetParam();
  auto net = make_net(1);
  auto opt = c.saved(*net);
  train_step(*net, *opt, 0, false);  // aux: no state yet, saved as zeros
  OptimizerState adapter(*opt, *net);
  EXPECT_EQ(adapter.kind(), c.kind);
  const dcp::StateDict sd = adapter.state_dict();
  std::vector<std::string> top;
  for (const auto& [key, v] : sd) top.push_back(key);
  EXPECT_EQ(top, (std::vector<std::string>{"kind", "param_groups", "params_with_state", "state"}));
  EXPECT_EQ(sd.at("kind").to_string(), c.kind);

  const dcp::List& groups = sd.at("param_groups").list();
  ASSERT_EQ(groups.size(), 2u);
  const auto named = dcp::libtorch::named_tensors(*net, false);
  size_t entries = 0;
  for (size_t g = 0; g < 2; ++g) {
    const dcp::Dict& gd = groups[g].dict();
    std::vector<std::string> keys = c.hyper_parameters;
    keys.push_back("params");
    std::sort(keys.begin(), keys.end());
    std::vector<std::string> have;
    for (const auto& [key, v] : gd) have.push_back(key);
    EXPECT_EQ(have, keys) << "group " << g;
    for (const auto& [key, v] : gd) {
      if (key == "params") continue;
      const bool flag = key == "nesterov" || key == "amsgrad" || key == "centered";
      if (key == "betas") {
        ASSERT_TRUE(v.is_list()) << key;
        ASSERT_EQ(v.list().size(), 2u);
        for (const auto& b : v.list()) EXPECT_EQ(b.kind(), dcp::Value::Kind::kDouble);
      } else {
        EXPECT_EQ(v.kind(), flag ? dcp::Value::Kind::kBool : dcp::Value::Kind::kDouble) << key;
      }
    }
    EXPECT_DOUBLE_EQ(gd.at("lr").to_double(), opt->param_groups()[g].options().get_lr());

    std::vector<std::string> fields = c.state_keys[g];
    std::sort(fields.begin(), fields.end());
    for (const auto& nv : gd.at("params").list()) {
      const std::string name = nv.to_string();
      const auto it =
          std::find_if(named.begin(), named.end(), [&](const auto& n) { return n.first == name; });
      ASSERT_NE(it, named.end()) << name;
      const at::Tensor& p = it->second;
      const auto entry = sd.at("state").dict().find(name);
      if (fields.empty()) {
        EXPECT_EQ(entry, sd.at("state").dict().end()) << name << " has state saved";
        continue;
      }
      ASSERT_NE(entry, sd.at("state").dict().end()) << name;
      ++entries;
      std::vector<std::string> saved;
      for (const auto& [key, v] : entry->second.dict()) {
        saved.push_back(key);
        if (key == "step") {
          EXPECT_EQ(v.kind(), dcp::Value::Kind::kInt) << name;
          continue;
        }
        ASSERT_TRUE(v.is_tensor()) << name << "." << key;
        EXPECT_EQ(v.tensor().scalar_type(), p.scalar_type()) << name << "." << key;
        EXPECT_TRUE(v.tensor().sizes().equals(p.sizes())) << name << "." << key;
      }
      EXPECT_EQ(saved, fields) << name;
    }
  }
  EXPECT_EQ(sd.at("state").dict().size(), entries);
}

INSTANTIATE_TEST_SUITE_P(All, TorchOptimizerStateGroups, ::testing::ValuesIn(mixed_group_cases()),
                         [](const auto& info) { return info.param.kind; });

// A state dict that is wrong in one place is refused with a
// PlanMismatchError naming that place, and leaves the optimizer as it was.
TEST(TorchOptimizerStateLayout, MalformedStateDictsNameWhatIsWrong) {
  const MixedGroupsCase adam = mixed_group_cases().at(1);
  auto net = make_net(1);
  auto opt = adam.saved(*net);
  train_step(*net, *opt, 0, false);  // aux has no state
  OptimizerState adapter(*opt, *net);
  const dcp::StateDict good = adapter.state_dict();
  std::map<std::string, const torch::optim::OptimizerParamState*> states;
  for (const auto& [key, s] : opt->state()) states.emplace(key, s.get());
  const auto* options0 = &opt->param_groups()[0].options();

  auto refused = [&](const std::function<void(dcp::StateDict&)>& change,
                     const std::vector<std::string>& expected) {
    dcp::StateDict sd = good;
    change(sd);
    try {
      adapter.load_state_dict(sd);
      ADD_FAILURE() << "accepted; expected " << expected.at(0);
    } catch (const dcp::PlanMismatchError& e) {
      for (const auto& x : expected) EXPECT_TRUE(contains(e.what(), x)) << e.what();
    }
    std::map<std::string, const torch::optim::OptimizerParamState*> now;
    for (const auto& [key, s] : opt->state()) now.emplace(key, s.get());
    EXPECT_EQ(now, states) << expected.at(0);
    EXPECT_EQ(&opt->param_groups()[0].options(), options0) << expected.at(0);
  };
  auto group = [](dcp::StateDict& sd, size_t g) -> dcp::Dict& {
    return sd.at("param_groups").list().at(g).dict();
  };
  auto entry = [](dcp::StateDict& sd, const std::string& name) -> dcp::Dict& {
    return sd.at("state").dict().at(name).dict();
  };

  refused([](dcp::StateDict& sd) { sd["kind"] = "SGD"; },
          {"OptimizerState: the checkpoint holds the state of SGD, the optimizer is Adam"});
  refused([](dcp::StateDict& sd) { sd.erase("params_with_state"); },
          {"OptimizerState: the state dict has no 'params_with_state'"});
  refused([](dcp::StateDict& sd) { sd["param_groups"] = dcp::Dict{}; },
          {"OptimizerState: 'param_groups' is a dict, not a list"});
  refused([](dcp::StateDict& sd) { sd.at("param_groups").list().pop_back(); },
          {"OptimizerState: the checkpoint has 1 param group(s), the optimizer 2"});
  refused([&](dcp::StateDict& sd) { group(sd, 0).erase("eps"); },
          {"OptimizerState: param group 0 has no 'eps'"});
  refused([&](dcp::StateDict& sd) { group(sd, 1)["lr"] = "fast"; },
          {"OptimizerState: param group 1 'lr': "});
  refused([&](dcp::StateDict& sd) { group(sd, 0)["amsgrad"] = 1.0; },
          {"OptimizerState: param group 0 'amsgrad': "});
  refused([&](dcp::StateDict& sd) { group(sd, 1)["betas"] = dcp::List{0.9}; },
          {"OptimizerState: param group 1 'betas' is not a list of 2 numbers"});
  // Every problem with the parameters' state at once.
  refused(
      [&](dcp::StateDict& sd) {
        entry(sd, "fc1.weight")["step"] = 1.5;
        entry(sd, "fc1.bias").erase("max_exp_avg_sq");
        entry(sd, "fc2.weight")["exp_avg"] = at::zeros({3});
        sd.at("state").dict().erase("fc2.bias");
      },
      {"OptimizerState: 4 key(s) do not match", "'fc1.weight.step': missing or not an int",
       "'fc1.bias.max_exp_avg_sq': missing", "'fc2.weight.exp_avg': shape mismatch",
       "'fc2.bias': no state in the state dict"});

  // The unchanged state dict loads, and replaces every state object.
  adapter.load_state_dict(good);
  for (const auto& [key, s] : opt->state()) EXPECT_NE(s.get(), states.at(key)) << key;
}

}  // namespace
