// Data-parallel training on N ranks over Gloo, with one layer sharded across
// the ranks, checkpointed by a CheckpointManager. Start it with the launcher:
//
//   scripts/launch.sh 4 -- build/examples/train_dist [--config configs/example.yaml]
//       [--dir DIR] [--steps 200] [--seed 0] [--stop-after -1] [--print-every 20]
//
// The model is the MLP of train_mlp (16 -> 64 -> 64 -> 1, dropout). Its first
// layer, fc1, is sharded by rows: rank r holds rows [r0, r1) of fc1.weight
// [64, 16] and fc1.bias [64] (uneven when 64 % N != 0), and the Adam state of
// those rows; for each step the ranks all-gather the full layer, run forward
// and backward on their part of the global batch of 64 samples (rounded up
// to a multiple of N), all-reduce (average)
// every gradient, and each updates its own rows. The other layers are
// replicated. In the checkpoint fc1 and its optimizer state are ShardedTensors
// (each rank writes its rows), the replicated tensors are written once.
//
// The checkpoint loads at another world size: trained at 4 ranks, it resumes
// at 2 or at 1 (fc1 and its Adam state are resharded to the new rows; the
// sampler continues at the same sample of the same epoch, split among the
// ranks there are now). Each rank's RNG state is saved per rank and means
// nothing at another world size, so the example leaves it out of the load
// then (resume.exclude: [rng]) and says so.
//
// Rank 0 prints, after a resume, loaded_params_sha256=<hex> and
// loaded_optim_sha256=<hex> (the full parameters and Adam state as loaded)
// and at the end final_optim_sha256 and final_params_sha256: the same at
// every world size for the same values. SIGTERM to the ranks (the
// launcher forwards it) or --stop-after S (rank 0 sends itself SIGTERM after
// S steps of this run) makes every rank agree, save the step and exit 0.
// The checkpoint directory is --dir, else $DCP_CHECKPOINT_DIR, else
// checkpoints/train_dist.
#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "dcp/dist/process_group.h"
#include "dcp/error.h"
#include "dcp/libtorch/adapters.h"
#include "dcp/manager/manager.h"
#include "dcp/manager/options.h"
#include "dcp/trainer/trainer.h"
#include "example_common.h"

namespace {

constexpr int64_t kIn = 16, kHidden = 64, kGlobalBatch = 64;

// Rows [begin, end) of fc1 that `rank` of `world` holds: an even split, the
// first ranks one row more when it does not divide.
std::pair<int64_t, int64_t> rows_of(int rank, int world) {
  const int64_t base = kHidden / world, extra = kHidden % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

// fc1's rows of this rank as the module's own parameters "weight" and "bias".
struct ShardedLinear : torch::nn::Module {
  ShardedLinear(const torch::nn::Linear& full, int64_t begin, int64_t end) {
    weight = register_parameter("weight", full->weight.detach().slice(0, begin, end).clone());
    bias = register_parameter("bias", full->bias.detach().slice(0, begin, end).clone());
  }
  torch::Tensor weight, bias;
};

// The MLP of train_mlp with fc1 sharded. Initialised from the same seed on
// every rank (the full layer, then this rank's rows): the same model at any
// world size.
struct DistMlp : torch::nn::Module {
  DistMlp(int rank, int world) {
    torch::nn::Linear full_fc1(kIn, kHidden);
    std::tie(begin, end) = rows_of(rank, world);
    fc1 = register_module("fc1", std::make_shared<ShardedLinear>(full_fc1, begin, end));
    fc2 = register_module("fc2", torch::nn::Linear(kHidden, kHidden));
    out = register_module("out", torch::nn::Linear(kHidden, 1));
    drop = register_module("drop", torch::nn::Dropout(0.1));
  }
  // The forward pass with the gathered full fc1 (w1 [64, 16], b1 [64]).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1) {
    torch::Tensor h = torch::relu(torch::nn::functional::linear(x, w1, b1));
    h = drop(torch::relu(fc2(h)));
    return out(h);
  }
  int64_t begin = 0, end = 0;
  std::shared_ptr<ShardedLinear> fc1;
  torch::nn::Linear fc2{nullptr}, out{nullptr};
  torch::nn::Dropout drop{nullptr};
};

class Trainer {
 public:
  Trainer(dcp::dist::DistContext& ctx, std::shared_ptr<DistMlp> model)
      : ctx_(ctx), model_(std::move(model)) {}

  // The full fc1 (weight [64, 16], bias [64]), all-gathered from the ranks'
  // rows (padded to the largest piece: Gloo gathers equal sizes).
  std::pair<torch::Tensor, torch::Tensor> gather_fc1() {
    return gather_rows(model_->fc1->weight, model_->fc1->bias);
  }

  // The same for any pair of tensors shaped like this rank's fc1 rows (its
  // optimizer state, say).
  std::pair<torch::Tensor, torch::Tensor> gather_rows(const torch::Tensor& w,
                                                      const torch::Tensor& b) {
    const int world = ctx_.world_size();
    const int64_t max_rows = (kHidden + world - 1) / world;
    torch::Tensor mine = torch::zeros({max_rows, kIn + 1});
    const int64_t rows = model_->end - model_->begin;
    mine.slice(0, 0, rows).copy_(torch::cat({w.detach(), b.detach().unsqueeze(1)}, 1));
    std::vector<at::Tensor> in{mine};
    std::vector<std::vector<at::Tensor>> outs(1);
    for (int r = 0; r < world; ++r) outs[0].push_back(torch::empty_like(mine));
    ctx_.process_group()->allgather(outs, in)->wait();
    std::vector<torch::Tensor> pieces;
    for (int r = 0; r < world; ++r) {
      auto [begin, end] = rows_of(r, world);
      pieces.push_back(outs[0][r].slice(0, 0, end - begin));
    }
    torch::Tensor full = torch::cat(pieces, 0);
    return {full.slice(1, 0, kIn).contiguous(), full.select(1, kIn).contiguous()};
  }

  // Adam's state of every parameter, full (fc1's gathered), by name:
  // "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step".
  std::map<std::string, torch::Tensor> full_adam_state(torch::optim::Adam& optim) {
    auto state_of = [&](const torch::Tensor& p) -> torch::optim::AdamParamState& {
      auto it = optim.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
      if (it == optim.state().end())
        throw std::runtime_error("train_dist: a parameter has no Adam state");
      return static_cast<torch::optim::AdamParamState&>(*it->second);
    };
    std::map<std::string, torch::Tensor> all;
    for (auto& p : model_->named_parameters()) {
      auto& s = state_of(p.value());
      all[p.key() + ".step"] = torch::tensor(s.step(), torch::kLong);
      if (p.key().rfind("fc1.", 0) == 0) continue;
      all[p.key() + ".exp_avg"] = s.exp_avg();
      all[p.key() + ".exp_avg_sq"] = s.exp_avg_sq();
    }
    auto& w = state_of(model_->fc1->weight);
    auto& b = state_of(model_->fc1->bias);
    std::tie(all["fc1.weight.exp_avg"], all["fc1.bias.exp_avg"]) =
        gather_rows(w.exp_avg(), b.exp_avg());
    std::tie(all["fc1.weight.exp_avg_sq"], all["fc1.bias.exp_avg_sq"]) =
        gather_rows(w.exp_avg_sq(), b.exp_avg_sq());
    return all;
  }

  // The full parameters by name, as one model on one process would have them.
  std::map<std::string, torch::Tensor> full_parameters() {
    std::map<std::string, torch::Tensor> all;
    for (auto& p : model_->named_parameters())
      if (p.key().rfind("fc1.", 0) != 0) all[p.key()] = p.value().detach();
    std::tie(all["fc1.weight"], all["fc1.bias"]) = gather_fc1();
    return all;
  }

  // One step on this rank's samples: gather fc1, forward, backward, average
  // every gradient over the ranks, update. Returns the global mean loss.
  double step(const torch::Tensor& x, const torch::Tensor& y, torch::optim::Optimizer& optim) {
    auto [w1, b1] = gather_fc1();
    w1.requires_grad_(true);
    b1.requires_grad_(true);
    optim.zero_grad();
    torch::Tensor loss = torch::mse_loss(model_->forward(x, w1, b1), y);
    loss.backward();

    // Every gradient (the replicated layers', the full fc1's) and the loss in
    // one buffer, all-reduced once.
    std::vector<torch::Tensor> replicated;
    for (auto& p : model_->named_parameters())
      if (p.key().rfind("fc1.", 0) != 0) replicated.push_back(p.value());
    std::vector<torch::Tensor> flat_parts;
    for (auto& p : replicated) flat_parts.push_back(p.grad().flatten());
    flat_parts.push_back(w1.grad().flatten());
    flat_parts.push_back(b1.grad().flatten());
    flat_parts.push_back(loss.detach().reshape({1}));
    std::vector<at::Tensor> flat{torch::cat(flat_parts)};
    ctx_.process_group()->allreduce(flat)->wait();
    torch::Tensor avg = flat[0].div_(ctx_.world_size());

    int64_t offset = 0;
    auto take = [&](const torch::Tensor& like) {
      torch::Tensor t = avg.slice(0, offset, offset + like.numel()).view(like.sizes());
      offset += like.numel();
      return t;
    };
    for (auto& p : replicated) p.mutable_grad().copy_(take(p));
    torch::Tensor gw = take(w1), gb = take(b1);
    model_->fc1->weight.mutable_grad() = gw.slice(0, model_->begin, model_->end).clone();
    model_->fc1->bias.mutable_grad() = gb.slice(0, model_->begin, model_->end).clone();
    const double global_loss = avg[offset].item<double>();
    optim.step();
    return global_loss;
  }

 private:
  dcp::dist::DistContext& ctx_;
  std::shared_ptr<DistMlp> model_;
};

int run(int argc, char** argv) {
  const example::TrainArgs args = example::parse_train_args(
      argc, argv, /*default_dir=*/"", 200,
      "Data-parallel training on N ranks over Gloo (fc1 sharded), checkpointed by a\n"
      "CheckpointManager; start it with scripts/launch.sh N -- train_dist [options].\n"
      "The checkpoint directory defaults to checkpoints/train_dist.");
  const int64_t steps = args.steps, seed = args.seed, stop_after = args.stop_after;

  std::unique_ptr<dcp::dist::DistContext> ctx =
      dcp::dist::DistContext::init(dcp::dist::detect_environment());
  const int rank = ctx->rank(), world = ctx->world_size();
  auto say = [rank](const std::string& line) {
    if (rank == 0) std::printf("%s\n", line.c_str());
  };

  at::set_num_threads(1);
  torch::manual_seed(seed);  // the same model on every rank, at every world size
  auto model = std::make_shared<DistMlp>(rank, world);
  torch::manual_seed(seed * 1000 + 1 + rank);  // each rank its own dropout masks
  auto optim =
      std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(2e-3));
  const example::Dataset data(/*n=*/2048, seed + 1);

  dcp::libtorch::SamplerOptions so;
  so.dataset_size = data.x.size(0);
  // The global batch is 64 samples split over the ranks (rounded up: 66 at 3).
  so.batch_size = (kGlobalBatch + world - 1) / world;
  so.seed = static_cast<uint64_t>(seed);
  so.drop_last = true;
  so.rank = rank;
  so.world_size = world;
  auto sampler = std::make_shared<dcp::libtorch::ResumableSampler>(so);
  auto progress = std::make_shared<dcp::libtorch::Progress>();

  dcp::manager::CheckpointManagerOptions options = dcp::manager::load_manager_options(args.config);
  // --dir, else $DCP_CHECKPOINT_DIR (load_manager_options applied it), else
  // checkpoints/train_dist: not the config's dir, which is train_mlp's.
  if (!args.dir.empty())
    options.dir = args.dir;
  else if (std::getenv("DCP_CHECKPOINT_DIR") == nullptr)
    options.dir = "checkpoints/train_dist";

  // At another world size the per-rank RNG states do not map onto the ranks.
  const auto committed = dcp::manager::list_committed(options.dir);
  if (options.resume.from == "latest" && !committed.empty() &&
      committed.back().world_size != world) {
    say("the newest checkpoint was saved by " + std::to_string(committed.back().world_size) +
        " ranks, this run has " + std::to_string(world) +
        ": resuming without the per-rank RNG states (fresh dropout streams)");
    options.resume.exclude.push_back("rng");
  }

  dcp::libtorch::ShardSpec w_spec{{kHidden, kIn}, {model->begin, 0}};
  dcp::libtorch::ShardSpec b_spec{{kHidden}, {model->begin}};
  dcp::libtorch::ModuleStateOptions mo;
  mo.sharded = {{"fc1.weight", w_spec}, {"fc1.bias", b_spec}};
  dcp::libtorch::OptimizerStateOptions oo;
  oo.sharded = mo.sharded;
  dcp::libtorch::RngStateOptions ro;
  ro.rank = rank;
  ro.world_size = world;

  auto manager = std::make_shared<dcp::manager::CheckpointManager>(
      options, ctx->collectives(std::chrono::seconds(60)),
      ctx->new_collectives("async_save", std::chrono::seconds(60)));
  manager->register_stateful("model", std::make_shared<dcp::libtorch::ModuleState>(model, mo));
  manager->register_stateful(
      "optim", std::make_shared<dcp::libtorch::OptimizerState>(
                   optim, std::static_pointer_cast<const torch::nn::Module>(model), oo));
  manager->register_stateful("sampler", sampler);
  manager->register_stateful("rng", std::make_shared<dcp::libtorch::RngState>(ro));
  manager->register_stateful("progress", progress);
  dcp::trainer::Callbacks callbacks;
  callbacks.add(std::make_shared<dcp::trainer::CheckpointCallback>(manager));
  Trainer trainer(*ctx, model);

  dcp::trainer::TrainState state;
  say("training on " + std::to_string(world) + " ranks; fc1 rows of rank 0: [" +
      std::to_string(model->begin) + ", " + std::to_string(model->end) + ")");
  callbacks.train_begin(state);
  if (state.step > 0) {
    say("resumed from " + options.dir + "/" +
        dcp::manager::CheckpointManager::step_dir_name(state.step) + " at step " +
        std::to_string(state.step) + " (epoch " + std::to_string(sampler->epoch()) + ", sample " +
        std::to_string(sampler->position()) + " of the epoch)");
    const std::string sha = example::sha256_hex(trainer.full_parameters());
    say("loaded_params_sha256=" + sha);
    const std::string osha = example::sha256_hex(trainer.full_adam_state(*optim));
    say("loaded_optim_sha256=" + osha);
  } else {
    say("no checkpoint in " + options.dir + ": starting from scratch");
  }

  model->train();
  int64_t this_run = 0;
  while (state.step < steps) {
    torch::Tensor idx = example::next_batch(*sampler);
    const double loss =
        trainer.step(data.x.index_select(0, idx), data.y.index_select(0, idx), *optim);
    progress->advance(so.batch_size * world);
    progress->set_epoch(sampler->epoch());
    ++state.step;
    state.epoch = sampler->epoch();
    state.metrics["loss"] = loss;
    const int64_t every = args.print_every;
    if (rank == 0 && every > 0 && state.step % every == 0)
      std::printf("step %5lld  epoch %lld  loss %.5f\n", (long long)state.step,
                  (long long)state.epoch, loss);
    if (rank == 0 && stop_after >= 0 && ++this_run == stop_after && state.step < steps) {
      std::printf("step %lld: rank 0 sends itself SIGTERM (--stop-after %lld)\n",
                  (long long)state.step, (long long)stop_after);
      std::raise(SIGTERM);
    }
    if (callbacks.step_end(state)) {
      callbacks.train_end(state);
      say("preempted: checkpoint of step " + std::to_string(state.step) +
          " saved on every rank; run again to resume");
      return 0;
    }
  }
  callbacks.train_end(state);
  if (rank == 0) example::print_save_summary(manager->statistics());
  const std::string sha = example::sha256_hex(trainer.full_parameters());
  const std::string osha = example::sha256_hex(trainer.full_adam_state(*optim));
  say("trained to step " + std::to_string(state.step));
  say("final_optim_sha256=" + osha);
  say("final_params_sha256=" + sha);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_dist: %s\n", e.what());
    return 1;
  }
}
