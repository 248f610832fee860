// dcp::libtorch adapters against LibTorch itself: modules load in place, LR
// schedulers, the RNG, the whole training state, and sharded parameters over
// two real ranks. Every checkpoint goes through dcp::save / dcp::load on
// disk. The optimizers' tests are in torch_optimizer_test.cpp and
// torch_optimizer_groups_test.cpp; the network and helpers they share in
// torch_test_net.h.
//
// With those two, the only test sources that include <torch/torch.h> (slow
// to compile).
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/libtorch/adapters.h"
#include "torch_test_net.h"

namespace {

using namespace dcp_torch_test;
using dcp::libtorch::LRSchedulerState;
using dcp::libtorch::ModuleState;
using dcp::libtorch::OptimizerState;
using dcp::libtorch::RngState;
using dcp::testing::TempDir;

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
  for (const auto& [name, t] : dcp::libtorch::named_tensors(*b)) {
    ptrs.push_back(t.data_ptr());
    impls.push_back(t.unsafeGetTensorImpl());
  }
  load_from({{"model", std::make_shared<ModuleState>(*b)}}, dir.sub("ckpt"));
  EXPECT_TRUE(same_tensors(*a, *b));
  const auto after = dcp::libtorch::named_tensors(*b);
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
  ModuleState with(net), without(net, dcp::libtorch::ModuleStateOptions{false, {}, true});
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
    std::shared_ptr<dcp::libtorch::ResumableSampler> sampler;
    std::shared_ptr<dcp::libtorch::Progress> progress = std::make_shared<dcp::libtorch::Progress>();
    dcp::StateDict sd;
    Run(uint64_t seed) {
      net = make_net(seed, 16, /*dropout=*/0.3);
      opt =
          std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(1e-2));
      sched = std::make_unique<torch::optim::StepLR>(*opt, 4, 0.7);
      dcp::libtorch::SamplerOptions so;
      so.dataset_size = 40;
      so.batch_size = 8;
      so.seed = seed;
      sampler = std::make_shared<dcp::libtorch::ResumableSampler>(so);
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

std::map<std::string, dcp::libtorch::ShardSpec> row_shards(int rank) {
  return {{"weight", {{4, 8}, {2 * rank, 0}}}, {"bias", {{4}, {2 * rank}}}};
}

// Rank r's half of the layer after one Adam step on data of its own.
struct RankPiece {
  std::shared_ptr<torch::nn::LinearImpl> lin;
  std::unique_ptr<torch::optim::Adam> opt;
  dcp::StateDict state_dict(int rank) {
    return {{"model", std::make_shared<ModuleState>(
                          lin, dcp::libtorch::ModuleStateOptions{true, row_shards(rank), true})},
            {"optim", std::make_shared<OptimizerState>(
                          *opt, *lin, dcp::libtorch::OptimizerStateOptions{row_shards(rank)})}};
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
  dcp::libtorch::RngStateOptions ro;
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
  dcp::StateDict sd{{"model", std::make_shared<ModuleState>(lin, dcp::libtorch::ModuleStateOptions{
                                                                     true, row_shards(r), true})}};
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
  ModuleState(half, dcp::libtorch::ModuleStateOptions{true, row_shards(1), true})
      .load_state_dict(all.at("model").dict());
  EXPECT_TRUE(torch::equal(half->weight, global_weight().narrow(0, 2, 2)));
}

}  // namespace
