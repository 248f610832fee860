// dcp::libtorch::OptimizerState against LibTorch's optimizers: the state of every
// supported optimizer round-trips through dcp::save / dcp::load on disk so
// that a step after resume equals a step without interruption; the layout
// is keyed by parameter name; mismatches and unsupported optimizers are
// refused.
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

struct OptimizerCase {
  std::string name;
  // The optimizer over two groups (fc1's parameters; the rest), with every
  // learning rate multiplied by `lr_scale`.
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<OptimizerParamGroup>,
                                                         double lr_scale)>
      make;
};

void PrintTo(const OptimizerCase& c, std::ostream* os) { *os << c.name; }

// Gives group 1 half the learning rate of group 0.
template <typename Options>
std::vector<OptimizerParamGroup> with_options(std::vector<OptimizerParamGroup> groups,
                                              Options options) {
  std::vector<OptimizerParamGroup> out;
  for (size_t g = 0; g < groups.size(); ++g) {
    auto o = std::make_unique<Options>(options);
    o->lr(options.lr() / (g + 1));
    out.emplace_back(groups[g].params(), std::move(o));
  }
  return out;
}

template <typename Opt, typename Options>
OptimizerCase make_case(std::string name, Options options) {
  return {std::move(name), [options](std::vector<OptimizerParamGroup> groups, double scale) {
            Options o = options;
            o.lr(o.lr() * scale);
            return std::unique_ptr<torch::optim::Optimizer>(
                std::make_unique<Opt>(with_options(std::move(groups), o), o));
          }};
}

std::vector<OptimizerCase> optimizer_cases() {
  namespace o = torch::optim;
  return {
      make_case<o::SGD>("SGD_momentum_dampening",
                        o::SGDOptions(0.05).momentum(0.9).dampening(0.1).weight_decay(1e-3)),
      make_case<o::SGD>("SGD_nesterov", o::SGDOptions(0.05).momentum(0.9).nesterov(true)),
      make_case<o::SGD>("SGD_plain", o::SGDOptions(0.05)),
      make_case<o::Adam>("Adam", o::AdamOptions(1e-2).weight_decay(1e-3)),
      make_case<o::Adam>("Adam_amsgrad", o::AdamOptions(1e-2).amsgrad(true)),
      make_case<o::AdamW>("AdamW", o::AdamWOptions(1e-2)),
      make_case<o::AdamW>("AdamW_amsgrad", o::AdamWOptions(1e-2).amsgrad(true)),
      make_case<o::RMSprop>("RMSprop", o::RMSpropOptions(1e-2)),
      make_case<o::RMSprop>("RMSprop_centered_momentum",
                            o::RMSpropOptions(1e-2).centered(true).momentum(0.5)),
      make_case<o::Adagrad>("Adagrad",
                            o::AdagradOptions(0.05).lr_decay(0.01).initial_accumulator_value(0.1)),
  };
}

// The optimizer state of `opt` as the adapter sees it, for comparisons.
::testing::AssertionResult same_optimizer_state(torch::optim::Optimizer& a, NetImpl& na,
                                                torch::optim::Optimizer& b, NetImpl& nb) {
  const dcp::StateDict sa = OptimizerState(a, na).state_dict();
  const dcp::StateDict sb = OptimizerState(b, nb).state_dict();
  for (const char* key : {"kind", "state", "params_with_state", "param_groups"})
    if (!sa.at(key).equals(sb.at(key)))
      return ::testing::AssertionFailure()
             << "'" << key << "' differs: " << dcp::describe(sa.at(key)) << " vs "
             << dcp::describe(sb.at(key));
  return ::testing::AssertionSuccess();
}

class TorchOptimizerState : public ::testing::TestWithParam<OptimizerCase> {};

// Train k steps, save {model, optim}; a fresh model and optimizer (another
// init, other learning rates, and `b_steps` steps of their own) load it;
// then every further step of the restored pair equals the uninterrupted one,
// bit for bit, including the first steps of `aux`, which had no state yet.
void resume_and_compare(const OptimizerCase& c, int b_steps) {
  TempDir dir;
  const int k = 3;
  auto a = make_net(1);
  auto opt_a = c.make(two_groups(*a), 1.0);
  for (int i = 0; i < k; ++i) train_step(*a, *opt_a, i, false);
  save_to({{"model", std::make_shared<ModuleState>(a)},
           {"optim", std::make_shared<OptimizerState>(*opt_a, *a)}},
          dir.sub("ckpt"));

  auto b = make_net(2);
  auto opt_b = c.make(two_groups(*b), 3.0);
  for (int i = 0; i < b_steps; ++i) train_step(*b, *opt_b, 100 + i, true);
  load_from({{"model", std::make_shared<ModuleState>(b)},
             {"optim", std::make_shared<OptimizerState>(*opt_b, *b)}},
            dir.sub("ckpt"));
  ASSERT_TRUE(same_tensors(*a, *b));
  ASSERT_TRUE(same_optimizer_state(*opt_a, *a, *opt_b, *b));
  EXPECT_DOUBLE_EQ(opt_b->param_groups()[1].options().get_lr(),
                   opt_a->param_groups()[1].options().get_lr());

  for (int i = k; i < k + 3; ++i) {
    train_step(*a, *opt_a, i, true);
    train_step(*b, *opt_b, i, true);
    ASSERT_TRUE(same_tensors(*a, *b)) << "after step " << i;
  }
  EXPECT_TRUE(same_optimizer_state(*opt_a, *a, *opt_b, *b));
}

TEST_P(TorchOptimizerState, StepAfterResumeEqualsUninterruptedFreshOptimizer) {
  resume_and_compare(GetParam(), 0);
}

TEST_P(TorchOptimizerState, StepAfterResumeEqualsUninterruptedSteppedOptimizer) {
  resume_and_compare(GetParam(), 2);
}

// A checkpoint of an optimizer that never stepped loads into one that did:
// the state the checkpoint does not have is dropped.
TEST_P(TorchOptimizerState, SavedBeforeTheFirstStep) {
  TempDir dir;
  auto a = make_net(1);
  auto opt_a = GetParam().make(two_groups(*a), 1.0);
  save_to({{"model", std::make_shared<ModuleState>(a)},
           {"optim", std::make_shared<OptimizerState>(*opt_a, *a)}},
          dir.sub("ckpt"));
  auto b = make_net(2);
  auto opt_b = GetParam().make(two_groups(*b), 1.0);
  train_step(*b, *opt_b, 50, true);
  load_from({{"model", std::make_shared<ModuleState>(b)},
             {"optim", std::make_shared<OptimizerState>(*opt_b, *b)}},
            dir.sub("ckpt"));
  EXPECT_EQ(opt_b->state().size(), opt_a->state().size());
  for (int i = 0; i < 2; ++i) {
    train_step(*a, *opt_a, i, true);
    train_step(*b, *opt_b, i, true);
  }
  EXPECT_TRUE(same_tensors(*a, *b));
  EXPECT_TRUE(same_optimizer_state(*opt_a, *a, *opt_b, *b));
}

// State is keyed by name, not position: the new optimizer lists each
// group's parameters in reverse order, and the adapter names them from a list
// rather than the module.
TEST_P(TorchOptimizerState, NamesNotPositionsMatch) {
  TempDir dir;
  auto a = make_net(1);
  auto opt_a = GetParam().make(two_groups(*a), 1.0);
  for (int i = 0; i < 2; ++i) train_step(*a, *opt_a, i, true);
  save_to({{"model", std::make_shared<ModuleState>(a)},
           {"optim", std::make_shared<OptimizerState>(*opt_a, *a)}},
          dir.sub("ckpt"));

  auto b = make_net(2);
  auto groups = two_groups(*b);
  for (auto& g : groups) std::reverse(g.params().begin(), g.params().end());
  auto opt_b = GetParam().make(std::move(groups), 1.0);
  load_from({{"model", std::make_shared<ModuleState>(b)},
             {"optim",
              std::make_shared<OptimizerState>(*opt_b, dcp::libtorch::named_tensors(*b, false))}},
            dir.sub("ckpt"));
  // Equal state, but each group lists its names in its own order.
  EXPECT_FALSE(same_optimizer_state(*opt_a, *a, *opt_b, *b));
  for (int i = 2; i < 4; ++i) {
    train_step(*a, *opt_a, i, true);
    train_step(*b, *opt_b, i, true);
    ASSERT_TRUE(same_tensors(*a, *b)) << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(All, TorchOptimizerState, ::testing::ValuesIn(optimizer_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(TorchOptimizerStateLayout, KeysAreParameterNames) {
  auto net = make_net(1);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3).amsgrad(true));
  train_step(*net, opt, 0, false);
  const dcp::StateDict sd = OptimizerState(opt, *net).state_dict();
  EXPECT_EQ(sd.at("kind").to_string(), "Adam");
  const dcp::Dict& state = sd.at("state").dict();
  ASSERT_TRUE(state.count("fc1.weight"));
  const dcp::Dict& fc1 = state.at("fc1.weight").dict();
  EXPECT_EQ(fc1.at("step").to_int(), 1);
  for (const char* f : {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"})
    EXPECT_TRUE(fc1.at(f).tensor().sizes().equals(net->fc1->weight.sizes())) << f;
  // The state tensors are the optimizer's own.
  const auto& own = static_cast<torch::optim::AdamParamState&>(
      *opt.state().at(c10::guts::to_string(net->fc1->weight.unsafeGetTensorImpl())));
  EXPECT_TRUE(fc1.at("exp_avg").tensor().is_same(own.exp_avg()));
  // aux took no step: listed in state (zeros), not in params_with_state.
  EXPECT_EQ(state.at("aux.weight").dict().at("step").to_int(), 0);
  std::vector<std::string> with;
  for (const auto& v : sd.at("params_with_state").list()) with.push_back(v.to_string());
  EXPECT_EQ(std::count(with.begin(), with.end(), "aux.weight"), 0);
  EXPECT_EQ(std::count(with.begin(), with.end(), "fc2.bias"), 1);
  const dcp::Dict& group = sd.at("param_groups").list().at(0).dict();
  EXPECT_DOUBLE_EQ(group.at("lr").to_double(), 1e-3);
  EXPECT_TRUE(group.at("amsgrad").to_bool());
  EXPECT_DOUBLE_EQ(group.at("betas").list().at(1).to_double(), 0.999);
  EXPECT_EQ(group.at("params").list().size(), net->parameters().size());
  EXPECT_EQ(group.at("params").list().at(0).to_string(), "fc1.weight");
}

TEST(TorchOptimizerStateLayout, Mismatches) {
  TempDir dir;
  auto net = make_net(1);
  torch::optim::Adam adam(net->parameters());
  train_step(*net, adam, 0, false);
  save_to({{"optim", std::make_shared<OptimizerState>(adam, *net)}}, dir.sub("adam"));

  // Another kind: dcp::load's key check names the keys; load_state_dict the kinds.
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  EXPECT_THROW(load_from({{"optim", std::make_shared<OptimizerState>(sgd, *net)}}, dir.sub("adam")),
               dcp::CheckpointError);
  try {
    OptimizerState(sgd, *net).load_state_dict(OptimizerState(adam, *net).state_dict());
    FAIL();
  } catch (const dcp::PlanMismatchError& e) {
    EXPECT_TRUE(contains(e.what(), "the state of Adam, the optimizer is SGD")) << e.what();
  }

  // amsgrad on one side only: the keys differ, and the error names them.
  torch::optim::Adam ams(net->parameters(), torch::optim::AdamOptions().amsgrad(true));
  try {
    load_from({{"optim", std::make_shared<OptimizerState>(ams, *net)}}, dir.sub("adam"));
    FAIL();
  } catch (const dcp::CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), "optim.state.fc1.weight.max_exp_avg_sq")) << e.what();
  }

  // Other parameters in a group.
  torch::optim::Adam partial(net->fc1->parameters());
  try {
    OptimizerState(partial, *net).load_state_dict(OptimizerState(adam, *net).state_dict());
    FAIL();
  } catch (const dcp::PlanMismatchError& e) {
    EXPECT_TRUE(contains(e.what(), "param group 0 holds")) << e.what();
  }

  // A parameter the adapter cannot name.
  torch::Tensor stray = torch::zeros({3}, torch::requires_grad());
  torch::optim::Adam with_stray(std::vector<torch::Tensor>{net->fc1->weight, stray});
  try {
    OptimizerState(with_stray, *net).state_dict();
    FAIL();
  } catch (const dcp::InvalidArgumentError& e) {
    EXPECT_TRUE(contains(e.what(), "parameter 1 of param group 0 (float32[3]) has no name"))
        << e.what();
  }

  // LBFGS is not supported.
  torch::optim::LBFGS lbfgs(net->parameters());
  EXPECT_THROW(OptimizerState(lbfgs, *net), dcp::InvalidArgumentError);
}

TEST(TorchOptimizerStateLayout, NullOptimizerOrModuleIsRefused) {
  auto net = make_net(1);
  auto opt = std::make_shared<torch::optim::Adam>(net->parameters());
  EXPECT_THROW(OptimizerState(nullptr, net), dcp::InvalidArgumentError);
  EXPECT_THROW(OptimizerState(opt, nullptr), dcp::InvalidArgumentError);
  EXPECT_EQ(OptimizerState(opt, net).kind(), "Adam");
}

// An optimizer of the user's own: not supported.
struct MyOptimizer : torch::optim::Optimizer {
  explicit MyOptimizer(std::vector<torch::Tensor> params)
      : Optimizer({OptimizerParamGroup(std::move(params))},
                  std::make_unique<torch::optim::SGDOptions>(0.1)) {}
  torch::Tensor step(LossClosure) override { return {}; }
};

// Every constructor refuses an unsupported optimizer, naming its type and
// the supported ones.
TEST(TorchOptimizerStateLayout, UnsupportedOptimizersAreRefusedByName) {
  auto net = make_net(1);
  auto lbfgs = std::make_shared<torch::optim::LBFGS>(net->parameters());
  MyOptimizer mine(net->parameters());
  auto refused = [](const std::function<void()>& make, const std::string& type) {
    try {
      make();
      ADD_FAILURE() << "accepted " << type;
    } catch (const dcp::InvalidArgumentError& e) {
      EXPECT_TRUE(contains(e.what(), "OptimizerState: unsupported optimizer type " + type +
                                         " (supported: SGD, Adam, AdamW, RMSprop, Adagrad)"))
          << e.what();
    }
  };
  refused([&] { OptimizerState(*lbfgs, *net); }, "torch::optim::LBFGS");
  refused([&] { OptimizerState(lbfgs, net); }, "torch::optim::LBFGS");
  refused([&] { OptimizerState(*lbfgs, dcp::libtorch::named_tensors(*net, false)); },
          "torch::optim::LBFGS");
  refused([&] { OptimizerState(mine, *net); }, "(anonymous namespace)::MyOptimizer");
}

}  // namespace
