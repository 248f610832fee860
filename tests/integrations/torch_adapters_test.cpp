// dcp::torch adapters against LibTorch itself: modules load in place,
// optimizer state of every supported optimizer round-trips so that a step
// after resume equals a step without interruption, LR schedulers, the RNG,
// and sharded parameters over two real ranks. Every checkpoint goes through
// dcp::save / dcp::load on disk.
//
// The only test source that includes <torch/torch.h> (slow to compile).
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <functional>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/torch/adapters.h"

namespace {

using dcp::lt::LRSchedulerState;
using dcp::lt::ModuleState;
using dcp::lt::OptimizerState;
using dcp::lt::RngState;
using dcp::testing::TempDir;
using torch::optim::OptimizerParamGroup;

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// Parameters and buffers (BatchNorm), and a layer `aux` that takes part only
// when asked: until then it has no gradient, so no optimizer state.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t hidden = 16, double dropout = 0.0) {
    fc1 = register_module("fc1", torch::nn::Linear(8, hidden));
    bn = register_module("bn", torch::nn::BatchNorm1d(hidden));
    drop = register_module("drop", torch::nn::Dropout(dropout));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 4));
    aux = register_module("aux", torch::nn::Linear(8, 4));
  }
  torch::Tensor forward(const torch::Tensor& x, bool use_aux) {
    torch::Tensor y = fc2(drop(torch::relu(bn(fc1(x)))));
    return use_aux ? y + aux(x) : y;
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, aux{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Dropout drop{nullptr};
};

std::shared_ptr<NetImpl> make_net(uint64_t seed, int64_t hidden = 16, double dropout = 0.0) {
  torch::manual_seed(seed);
  return std::make_shared<NetImpl>(hidden, dropout);
}

// The data of step i depends only on i.
std::pair<torch::Tensor, torch::Tensor> batch(int64_t i) {
  at::Generator gen = at::detail::createCPUGenerator(1000 + i);
  return {at::randn({16, 8}, gen), at::randn({16, 4}, gen)};
}

void train_step(NetImpl& net, torch::optim::Optimizer& opt, int64_t i, bool use_aux) {
  auto [x, y] = batch(i);
  opt.zero_grad();
  torch::mse_loss(net.forward(x, use_aux), y).backward();
  opt.step();
}

// Every parameter and buffer of `a` equals `b`'s bit for bit; the first
// difference is reported by name.
::testing::AssertionResult same_tensors(const torch::nn::Module& a, const torch::nn::Module& b) {
  const auto ta = dcp::lt::named_tensors(a), tb = dcp::lt::named_tensors(b);
  if (ta.size() != tb.size()) return ::testing::AssertionFailure() << "different tensor counts";
  for (size_t i = 0; i < ta.size(); ++i) {
    if (ta[i].first != tb[i].first)
      return ::testing::AssertionFailure() << ta[i].first << " vs " << tb[i].first;
    if (!torch::equal(ta[i].second, tb[i].second))
      return ::testing::AssertionFailure() << "'" << ta[i].first << "' differs";
  }
  return ::testing::AssertionSuccess();
}

void save_to(const dcp::StateDict& sd, const std::string& dir) { dcp::save(sd, dir); }
void load_from(dcp::StateDict sd, const std::string& dir) { dcp::load(sd, dir); }

// ---------------------------------------------------------------------------
// Module

TEST(TorchModuleState, LoadsInPlaceAndTheOptimizerStaysBound) {
  TempDir dir;
  auto a = make_net(1);
  save_to({{"model", std::make_shared<ModuleState>(a)}}, dir.sub("ckpt"));

  auto b = make_net(2);
  torch::optim::SGD opt(b->parameters(), torch::optim::SGDOptions(0.1));
  ASSERT_FALSE(same_tensors(*a, *b));
  std::vector<void*> ptrs;
  std::vector<c10::TensorImpl*> impls;
  for (const auto& [name, t] : dcp::lt::named_tensors(*b)) {
    ptrs.push_back(t.data_ptr());
    impls.push_back(t.unsafeGetTensorImpl());
  }
  load_from({{"model", std::make_shared<ModuleState>(*b)}}, dir.sub("ckpt"));
  EXPECT_TRUE(same_tensors(*a, *b));
  const auto after = dcp::lt::named_tensors(*b);
  ASSERT_EQ(after.size(), ptrs.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].second.data_ptr(), ptrs[i]) << after[i].first;
    EXPECT_EQ(after[i].second.unsafeGetTensorImpl(), impls[i]) << after[i].first;
  }
  // The optimizer built before the load steps the loaded tensors.
  const torch::Tensor before = b->fc1->weight.clone();
  train_step(*b, opt, 0, false);
  EXPECT_FALSE(torch::equal(before, b->fc1->weight));
}

TEST(TorchModuleState, IncludesBuffersByName) {
  auto net = make_net(1);
  ModuleState with(net), without(net, dcp::lt::ModuleStateOptions{false, {}, true});
  const dcp::StateDict sd = with.state_dict();
  for (const char* key : {"fc1.weight", "fc1.bias", "bn.weight", "bn.running_mean",
                          "bn.running_var", "bn.num_batches_tracked", "aux.bias"})
    EXPECT_TRUE(sd.count(key)) << key;
  EXPECT_TRUE(sd.at("fc1.weight").tensor().is_same(net->fc1->weight));
  EXPECT_EQ(sd.at("bn.num_batches_tracked").tensor().scalar_type(), at::kLong);
  EXPECT_FALSE(without.state_dict().count("bn.running_mean"));
  EXPECT_EQ(without.state_dict().size(), net->parameters().size());
}

TEST(TorchModuleState, ShapeMismatchNamesTheKey) {
  TempDir dir;
  save_to({{"model", std::make_shared<ModuleState>(make_net(1, 16))}}, dir.sub("ckpt"));
  auto other = make_net(2, 12);  // fc1 [12, 8] instead of [16, 8], ...
  try {
    load_from({{"model", std::make_shared<ModuleState>(other)}}, dir.sub("ckpt"));
    FAIL() << "loaded a checkpoint of another shape";
  } catch (const dcp::CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), "'model.fc1.weight': shape mismatch")) << e.what();
    EXPECT_EQ(e.root_code(), dcp::ErrorCode::kPlanMismatch) << e.what();
  }

  // load_state_dict() itself checks what it is given.
  ModuleState state(other);
  dcp::StateDict sd = ModuleState(make_net(3, 16)).state_dict();
  try {
    state.load_state_dict(sd);
    FAIL() << "accepted tensors of another shape";
  } catch (const dcp::PlanMismatchError& e) {
    EXPECT_TRUE(contains(e.what(), "'fc1.weight': shape mismatch")) << e.what();
  }
  sd = ModuleState(other).state_dict();
  sd["fc2.bias"] = sd["fc2.bias"].tensor().to(at::kDouble);
  sd.erase("aux.weight");
  sd["extra"] = at::zeros({1});
  try {
    state.load_state_dict(sd);
    FAIL() << "accepted a wrong dtype, a missing and an unexpected key";
  } catch (const dcp::PlanMismatchError& e) {
    EXPECT_TRUE(contains(e.what(), "'fc2.bias': dtype mismatch")) << e.what();
    EXPECT_TRUE(contains(e.what(), "'aux.weight': missing")) << e.what();
    EXPECT_TRUE(contains(e.what(), "'extra': not a parameter")) << e.what();
  }
}

TEST(TorchModuleState, LoadStateDictCopiesTensorsFromElsewhere) {
  TempDir dir;
  auto a = make_net(1);
  save_to({{"model", std::make_shared<ModuleState>(a)}}, dir.sub("ckpt"));
  // A dict that load_all allocated: its tensors are copied into the module.
  dcp::StateDict all = dcp::load_all(dir.sub("ckpt"));
  auto b = make_net(2);
  void* ptr = b->fc2->weight.data_ptr();
  ModuleState(b).load_state_dict(all.at("model").dict());
  EXPECT_TRUE(same_tensors(*a, *b));
  EXPECT_EQ(b->fc2->weight.data_ptr(), ptr);
  EXPECT_TRUE(b->fc2->weight.requires_grad());
}

// ---------------------------------------------------------------------------
// Optimizers

struct OptimizerCase {
  std::string name;
  // The optimizer over two groups (fc1's parameters; the rest), with every
  // learning rate multiplied by `lr_scale`.
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<OptimizerParamGroup>,
                                                         double lr_scale)>
      make;
};

void PrintTo(const OptimizerCase& c, std::ostream* os) { *os << c.name; }

std::vector<OptimizerParamGroup> two_groups(NetImpl& net) {
  std::vector<torch::Tensor> first, rest;
  for (const auto& p : net.named_parameters())
    (p.key().rfind("fc1.", 0) == 0 ? first : rest).push_back(p.value());
  return {OptimizerParamGroup(first), OptimizerParamGroup(rest)};
}

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
  load_from(
      {{"model", std::make_shared<ModuleState>(b)},
       {"optim", std::make_shared<OptimizerState>(*opt_b, dcp::lt::named_tensors(*b, false))}},
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

// ---------------------------------------------------------------------------
// LR scheduler

TEST(TorchLRSchedulerState, StepLRContinuesItsSchedule) {
  TempDir dir;
  auto make = [](NetImpl& net) {
    return std::make_unique<torch::optim::SGD>(net.parameters(),
                                               torch::optim::SGDOptions(0.1).momentum(0.9));
  };
  auto a = make_net(1);
  auto opt_a = make(*a);
  torch::optim::StepLR sched_a(*opt_a, /*step_size=*/3, /*gamma=*/0.5);
  int64_t i = 0;
  for (; i < 4; ++i) {
    train_step(*a, *opt_a, i, false);
    sched_a.step();
  }
  EXPECT_EQ(LRSchedulerState(sched_a).step_count(), 4);
  save_to({{"model", std::make_shared<ModuleState>(a)},
           {"optim", std::make_shared<OptimizerState>(*opt_a, *a)},
           {"sched", std::make_shared<LRSchedulerState>(sched_a)}},
          dir.sub("ckpt"));

  auto b = make_net(2);
  auto opt_b = make(*b);
  torch::optim::StepLR sched_b(*opt_b, 3, 0.5);
  load_from({{"model", std::make_shared<ModuleState>(b)},
             {"optim", std::make_shared<OptimizerState>(*opt_b, *b)},
             {"sched", std::make_shared<LRSchedulerState>(sched_b)}},
            dir.sub("ckpt"));
  EXPECT_EQ(LRSchedulerState(sched_b).step_count(), 4);
  for (; i < 10; ++i) {
    train_step(*a, *opt_a, i, false);
    sched_a.step();
    train_step(*b, *opt_b, i, false);
    sched_b.step();
    ASSERT_EQ(opt_a->param_groups()[0].options().get_lr(),
              opt_b->param_groups()[0].options().get_lr())
        << "step " << i;
    ASSERT_TRUE(same_tensors(*a, *b)) << "step " << i;
  }
  // The schedule did decay on the way (0.1 -> 0.05 at 3 -> 0.025 at 6 -> 0.0125 at 9).
  EXPECT_DOUBLE_EQ(opt_b->param_groups()[0].options().get_lr(), 0.0125);
}

// ---------------------------------------------------------------------------
// RNG

TEST(TorchRngState, RandomStreamsContinueAfterLoad) {
  TempDir dir;
  torch::manual_seed(7);
  torch::randn({3});  // leaves a cached normal sample in the generator
  save_to({{"rng", std::make_shared<RngState>()}}, dir.sub("ckpt"));
  const torch::Tensor rand = torch::rand({5});
  const torch::Tensor randn = torch::randn({5});
  const torch::Tensor normal1 = torch::randn({1});
  const torch::Tensor mask = torch::dropout(torch::ones({64}), 0.5, /*train=*/true);
  const torch::Tensor perm = torch::randperm(20);

  torch::manual_seed(99);
  torch::rand({17});
  load_from({{"rng", std::make_shared<RngState>()}}, dir.sub("ckpt"));
  EXPECT_TRUE(torch::equal(torch::rand({5}), rand));
  EXPECT_TRUE(torch::equal(torch::randn({5}), randn));
  EXPECT_TRUE(torch::equal(torch::randn({1}), normal1));
  EXPECT_TRUE(torch::equal(torch::dropout(torch::ones({64}), 0.5, true), mask));
  EXPECT_TRUE(torch::equal(torch::randperm(20), perm));
}

TEST(TorchRngState, Layout) {
  const dcp::StateDict sd = RngState().state_dict();
  ASSERT_TRUE(sd.count("cpu"));
  EXPECT_EQ(sd.at("cpu").tensor().scalar_type(), at::kByte);
  EXPECT_EQ(sd.at("cpu").tensor().numel(), 5056);  // LibTorch 1.13's CPU generator
  EXPECT_EQ(sd.size(), 1u);                        // no CUDA in this build

  RngState r;
  dcp::StateDict bad{{"cpu", at::zeros({10}, at::kByte)}};
  EXPECT_THROW(r.load_state_dict(bad), dcp::PlanMismatchError);
}

// ---------------------------------------------------------------------------
// Everything together: dropout, sampler-driven data, scheduler, progress.

TEST(TorchAdapters, WholeTrainingStateResumesBitIdentically) {
  TempDir dir;
  struct Run {
    std::shared_ptr<NetImpl> net;
    std::unique_ptr<torch::optim::Adam> opt;
    std::unique_ptr<torch::optim::StepLR> sched;
    std::shared_ptr<dcp::lt::ResumableSampler> sampler;
    std::shared_ptr<dcp::lt::Progress> progress = std::make_shared<dcp::lt::Progress>();
    dcp::StateDict sd;
    Run(uint64_t seed) {
      net = make_net(seed, 16, /*dropout=*/0.3);
      opt =
          std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(1e-2));
      sched = std::make_unique<torch::optim::StepLR>(*opt, 4, 0.7);
      dcp::lt::SamplerOptions so;
      so.dataset_size = 40;
      so.batch_size = 8;
      so.seed = seed;
      sampler = std::make_shared<dcp::lt::ResumableSampler>(so);
      sd = {{"model", std::make_shared<ModuleState>(net)},
            {"optim", std::make_shared<OptimizerState>(*opt, *net)},
            {"sched", std::make_shared<LRSchedulerState>(*sched)},
            {"sampler", sampler},
            {"rng", std::make_shared<RngState>()},
            {"progress", progress}};
    }
    // One step on the samples the sampler gives (rows of a fixed dataset).
    void step() {
      auto idx = sampler->next_batch();
      if (!idx) {
        sampler->next_epoch();
        progress->set_epoch(sampler->epoch());
        idx = sampler->next_batch();
      }
      at::Generator gen = at::detail::createCPUGenerator(5);
      const torch::Tensor data_x = at::randn({40, 8}, gen), data_y = at::randn({40, 4}, gen);
      const torch::Tensor rows = torch::tensor(*idx, torch::kLong);
      opt->zero_grad();
      torch::mse_loss(net->forward(data_x.index_select(0, rows), true),
                      data_y.index_select(0, rows))
          .backward();
      opt->step();
      sched->step();
      progress->advance(static_cast<int64_t>(idx->size()));
    }
  };

  Run a(1);
  for (int i = 0; i < 7; ++i) a.step();  // 5 batches per epoch: into epoch 1
  a.progress->set("best", 0.25);
  save_to(a.sd, dir.sub("ckpt"));
  for (int i = 0; i < 6; ++i) a.step();

  Run b(2);
  b.step();  // some unrelated history
  load_from(b.sd, dir.sub("ckpt"));
  EXPECT_EQ(b.progress->step(), 7);
  EXPECT_EQ(b.progress->epoch(), 1);
  EXPECT_EQ(b.progress->get("best").to_double(), 0.25);
  EXPECT_EQ(b.sampler->position(), 16);
  for (int i = 0; i < 6; ++i) b.step();
  EXPECT_TRUE(same_tensors(*a.net, *b.net));
  EXPECT_EQ(a.progress->samples_seen(), b.progress->samples_seen());
}

// An async save copies the adapters' tensors before it returns: training on
// right away (changing parameters and optimizer state in place) does not
// change what the checkpoint holds.
TEST(TorchAdapters, AsyncSaveHoldsTheStateAtTheCall) {
  TempDir dir;
  auto a = make_net(1);
  torch::optim::Adam opt_a(a->parameters(), torch::optim::AdamOptions(1e-2));
  for (int i = 0; i < 2; ++i) train_step(*a, opt_a, i, false);
  dcp::AsyncSaver saver;
  dcp::SaveOptions so;
  so.checkpoint_id = dir.sub("ckpt");
  dcp::AsyncSaveHandle h = saver.save({{"model", std::make_shared<ModuleState>(a)},
                                       {"optim", std::make_shared<OptimizerState>(opt_a, *a)}},
                                      so);
  for (int i = 2; i < 5; ++i) train_step(*a, opt_a, i, true);
  h.get();

  auto b = make_net(2);
  torch::optim::Adam opt_b(b->parameters(), torch::optim::AdamOptions(1e-2));
  load_from({{"model", std::make_shared<ModuleState>(b)},
             {"optim", std::make_shared<OptimizerState>(opt_b, *b)}},
            dir.sub("ckpt"));
  for (int i = 2; i < 5; ++i) train_step(*b, opt_b, i, true);
  EXPECT_TRUE(same_tensors(*a, *b));
}

// ---------------------------------------------------------------------------
// Sharded parameters over two real ranks: each rank holds half the rows of
// a Linear(8 -> 4) and Adam state for them, and saves both as ShardedTensors
// with its own RNG state; both ranks load it back; one process loads the
// whole layer and its whole Adam state; two ranks load a whole checkpoint.

torch::Tensor global_weight() { return torch::arange(32, torch::kFloat).reshape({4, 8}); }
torch::Tensor global_bias() { return torch::arange(4, torch::kFloat) * 10; }

std::map<std::string, dcp::lt::ShardSpec> row_shards(int rank) {
  return {{"weight", {{4, 8}, {2 * rank, 0}}}, {"bias", {{4}, {2 * rank}}}};
}

// Rank r's half of the layer after one Adam step on data of its own.
struct RankPiece {
  std::shared_ptr<torch::nn::LinearImpl> lin;
  std::unique_ptr<torch::optim::Adam> opt;
  dcp::StateDict state_dict(int rank) {
    return {{"model", std::make_shared<ModuleState>(
                          lin, dcp::lt::ModuleStateOptions{true, row_shards(rank), true})},
            {"optim", std::make_shared<OptimizerState>(
                          *opt, *lin, dcp::lt::OptimizerStateOptions{row_shards(rank)})}};
  }
};

RankPiece rank_piece(int rank) {
  RankPiece r{std::make_shared<torch::nn::LinearImpl>(8, 2), nullptr};
  {
    torch::NoGradGuard no_grad;
    r.lin->weight.copy_(global_weight().narrow(0, 2 * rank, 2));
    r.lin->bias.copy_(global_bias().narrow(0, 2 * rank, 2));
  }
  r.opt = std::make_unique<torch::optim::Adam>(r.lin->parameters(), torch::optim::AdamOptions(0.1));
  r.lin->forward(torch::full({3, 8}, 0.5 + rank)).pow(2).sum().backward();
  r.opt->step();
  return r;
}

at::Tensor adam_state(torch::optim::Optimizer& opt, const at::Tensor& p, const char* field) {
  const auto& s = static_cast<torch::optim::AdamParamState&>(
      *opt.state().at(c10::guts::to_string(p.unsafeGetTensorImpl())));
  return std::string(field) == "exp_avg" ? s.exp_avg() : s.exp_avg_sq();
}

DCP_REGISTER_WORKER(torch_sharded_save) {
  const int r = ctx.rank();
  RankPiece piece = rank_piece(r);
  const torch::Tensor weight = piece.lin->weight.clone();
  const torch::Tensor exp_avg = adam_state(*piece.opt, piece.lin->weight, "exp_avg").clone();
  dcp::lt::RngStateOptions ro;
  ro.rank = r;
  ro.world_size = ctx.world_size();
  torch::manual_seed(100 + r);
  dcp::StateDict sd = piece.state_dict(r);
  sd.emplace("rng", std::make_shared<RngState>(ro));
  dcp::SaveOptions so;
  so.checkpoint_id = args.at(0);
  so.collectives = ctx.collectives();
  dcp::save(sd, so);
  const torch::Tensor expected = torch::rand({4});

  torch::manual_seed(5);
  RankPiece fresh{std::make_shared<torch::nn::LinearImpl>(8, 2), nullptr};
  fresh.opt = std::make_unique<torch::optim::Adam>(fresh.lin->parameters());
  sd = fresh.state_dict(r);
  sd.emplace("rng", std::make_shared<RngState>(ro));
  dcp::LoadOptions lo;
  lo.checkpoint_id = args.at(0);
  lo.collectives = ctx.collectives();
  dcp::load(sd, lo);
  EXPECT_TRUE(torch::equal(fresh.lin->weight, weight));
  EXPECT_TRUE(torch::equal(adam_state(*fresh.opt, fresh.lin->weight, "exp_avg"), exp_avg));
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected)) << "rank " << r << "'s own stream";
  return 0;
}

DCP_REGISTER_WORKER(torch_sharded_load) {
  const int r = ctx.rank();
  auto lin = std::make_shared<torch::nn::LinearImpl>(8, 2);
  dcp::StateDict sd{{"model", std::make_shared<ModuleState>(
                                  lin, dcp::lt::ModuleStateOptions{true, row_shards(r), true})}};
  dcp::LoadOptions lo;
  lo.checkpoint_id = args.at(0);
  lo.collectives = ctx.collectives();
  dcp::load(sd, lo);
  EXPECT_TRUE(torch::equal(lin->weight, global_weight().narrow(0, 2 * r, 2)));
  EXPECT_TRUE(torch::equal(lin->bias, global_bias().narrow(0, 2 * r, 2)));
  return 0;
}

TEST(TorchModuleStateSharded, TwoRanksSaveOneProcessLoadsAndBack) {
  TempDir dir;
  const std::string sharded = dir.sub("sharded");
  auto run = dcp::testing::run_ranks(
      2, "torch_sharded_save",
      dcp::testing::RunOptions{
          std::chrono::seconds(60), std::chrono::milliseconds(20000), {sharded}});
  ASSERT_TRUE(run.ok()) << run.summary();

  // The whole layer and its whole Adam state in one process: each rank's rows.
  auto full = std::make_shared<torch::nn::LinearImpl>(8, 4);
  torch::optim::Adam adam(full->parameters());
  dcp::LoadOptions lo;
  lo.checkpoint_id = sharded;
  lo.strict = false;  // leave the per-rank RNG states alone
  dcp::StateDict sd{{"model", std::make_shared<ModuleState>(full)},
                    {"optim", std::make_shared<OptimizerState>(adam, *full)}};
  const dcp::LoadResult result = dcp::load(sd, lo);
  EXPECT_EQ(result.unexpected_keys, std::vector<std::string>{"rng.cpu"});
  EXPECT_TRUE(result.missing_keys.empty());
  for (int r = 0; r < 2; ++r) {
    RankPiece piece = rank_piece(r);
    EXPECT_TRUE(torch::equal(full->weight.narrow(0, 2 * r, 2), piece.lin->weight)) << r;
    EXPECT_TRUE(torch::equal(full->bias.narrow(0, 2 * r, 2), piece.lin->bias)) << r;
    for (const char* f : {"exp_avg", "exp_avg_sq"}) {
      EXPECT_TRUE(torch::equal(adam_state(adam, full->weight, f).narrow(0, 2 * r, 2),
                               adam_state(*piece.opt, piece.lin->weight, f)))
          << f << " of rank " << r;
    }
  }

  // Per-rank RNG state saved at 2 ranks does not load into one process.
  try {
    load_from({{"rng", std::make_shared<RngState>()}}, sharded);
    FAIL();
  } catch (const dcp::CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), "'rng.cpu': shape mismatch")) << e.what();
  }

  // One process saves the whole layer; two ranks load their rows.
  const std::string whole = dir.sub("whole");
  {
    torch::NoGradGuard no_grad;
    full->weight.copy_(global_weight());
    full->bias.copy_(global_bias());
  }
  save_to({{"model", std::make_shared<ModuleState>(full)}}, whole);
  EXPECT_EQ(dcp::testing::run_ranks(2, "torch_sharded_load", std::chrono::seconds(60), {whole}), 0);

  // A whole state dict (from load_all) into one rank's sharded adapters:
  // each takes its slice.
  dcp::StateDict all = dcp::load_all(whole);
  auto half = std::make_shared<torch::nn::LinearImpl>(8, 2);
  ModuleState(half, dcp::lt::ModuleStateOptions{true, row_shards(1), true})
      .load_state_dict(all.at("model").dict());
  EXPECT_TRUE(torch::equal(half->weight, global_weight().narrow(0, 2, 2)));
}

}  // namespace
