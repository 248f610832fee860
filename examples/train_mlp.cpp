// The main example: a single-process training loop that checkpoints with a
// CheckpointManager configured in YAML and, started again, resumes where the
// last committed checkpoint left it.
//
//   train_mlp [--config configs/example.yaml] [--dir DIR] [--steps 300]
//             [--seed 0] [--stop-after -1] [--print-every 20]
//
// Everything that decides the next step is checkpointed: the model (an MLP
// with dropout), the Adam optimizer, its StepLR schedule, the position of a
// shuffling sampler over a generated data set, the RNG (dropout masks) and
// the progress counters. So a run that is killed at any moment (SIGKILL
// included) and started again ends with exactly the parameters of a run that
// was never interrupted; the last line prints their SHA-256:
//
//   final_params_sha256=<hex>
//
// SIGTERM or SIGUSR1 (the config's save.on_signals) make it save a checkpoint
// of the current step and exit 0; --stop-after S sends itself SIGTERM after S
// steps of this run, as a preemption would. The checkpoint directory is
// --dir, else $DCP_CHECKPOINT_DIR, else the config's dir.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <csignal>
#include <cstdio>
#include <memory>

#include "dcp/error.h"
#include "dcp/libtorch/adapters.h"
#include "dcp/manager/manager.h"
#include "dcp/manager/options.h"
#include "dcp/trainer/trainer.h"
#include "example_common.h"

namespace {

// Prints a line for each committed checkpoint, and every N steps one of
// progress.
class PrintCallback : public dcp::trainer::TrainerCallback {
 public:
  explicit PrintCallback(int64_t every) : every_(every) {}
  void on_step_end(dcp::trainer::TrainState& s) override {
    if (every_ > 0 && s.step % every_ == 0)
      std::printf("step %5lld  epoch %lld  loss %.5f  lr %.2e\n", (long long)s.step,
                  (long long)s.epoch, s.metrics["loss"], s.metrics["lr"]);
  }

 private:
  int64_t every_;
};

int run(int argc, char** argv) {
  const example::TrainArgs args = example::parse_train_args(
      argc, argv, "", 300,
      "Trains a small MLP, checkpointing with a CheckpointManager; started again, it resumes\n"
      "from the newest committed checkpoint. SIGTERM/SIGUSR1: save and exit 0.");
  const int64_t steps = args.steps, seed = args.seed, stop_after = args.stop_after;

  // One intra-op thread: the same arithmetic, in the same order, every run.
  at::set_num_threads(1);
  torch::manual_seed(seed);

  auto model = std::make_shared<example::Mlp>();
  auto optim =
      std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(2e-3));
  auto sched = std::make_shared<torch::optim::StepLR>(*optim, /*step_size=*/100, /*gamma=*/0.5);
  const example::Dataset data(/*n=*/2048, seed + 1);

  dcp::libtorch::SamplerOptions so;
  so.dataset_size = data.x.size(0);
  so.batch_size = 32;
  so.seed = static_cast<uint64_t>(seed);
  auto sampler = std::make_shared<dcp::libtorch::ResumableSampler>(so);
  auto progress = std::make_shared<dcp::libtorch::Progress>();

  dcp::manager::CheckpointManagerOptions options = dcp::manager::load_manager_options(args.config);
  if (!args.dir.empty()) options.dir = args.dir;

  auto manager = std::make_shared<dcp::manager::CheckpointManager>(options);
  manager->register_stateful("model", std::make_shared<dcp::libtorch::ModuleState>(model));
  manager->register_stateful("optim",
                             std::make_shared<dcp::libtorch::OptimizerState>(
                                 optim, std::static_pointer_cast<const torch::nn::Module>(model)));
  manager->register_stateful("sched", std::make_shared<dcp::libtorch::LRSchedulerState>(sched));
  manager->register_stateful("sampler", sampler);
  manager->register_stateful("rng", std::make_shared<dcp::libtorch::RngState>());
  manager->register_stateful("progress", progress);
  auto checkpointing = std::make_shared<dcp::trainer::CheckpointCallback>(manager);
  dcp::trainer::Callbacks callbacks;
  callbacks.add(checkpointing);
  callbacks.add(std::make_shared<PrintCallback>(args.print_every));

  dcp::trainer::TrainState state;
  callbacks.train_begin(state);  // resume
  if (state.step > 0) {
    std::printf("resumed from %s/%s at step %lld (epoch %lld, sample %lld of the epoch)\n",
                options.dir.c_str(),
                dcp::manager::CheckpointManager::step_dir_name(state.step).c_str(),
                (long long)state.step, (long long)sampler->epoch(), (long long)sampler->position());
    if (progress->step() != state.step)
      throw std::runtime_error("the checkpoint's progress.step " +
                               std::to_string(progress->step()) + " is not its step " +
                               std::to_string(state.step));
  } else {
    std::printf("no checkpoint in %s: starting from scratch\n", options.dir.c_str());
  }

  model->train();
  int64_t this_run = 0;
  while (state.step < steps) {
    torch::Tensor idx = example::next_batch(*sampler);
    optim->zero_grad();
    torch::Tensor loss =
        torch::mse_loss(model->forward(data.x.index_select(0, idx)), data.y.index_select(0, idx));
    loss.backward();
    optim->step();
    sched->step();

    progress->advance(idx.size(0));
    progress->set_epoch(sampler->epoch());
    ++state.step;
    state.epoch = sampler->epoch();
    state.metrics["loss"] = loss.item<double>();
    state.metrics["lr"] = optim->param_groups()[0].options().get_lr();
    if (stop_after >= 0 && ++this_run == stop_after && state.step < steps) {
      std::printf(
          "step %lld: sending SIGTERM to myself (--stop-after %lld), as a preemption would\n",
          (long long)state.step, (long long)stop_after);
      std::raise(SIGTERM);
    }
    if (callbacks.step_end(state)) {
      callbacks.train_end(state);
      example::print_save_summary(manager->statistics());
      std::printf("preempted: checkpoint of step %lld saved; run again to resume\n",
                  (long long)state.step);
      return 0;
    }
  }
  callbacks.train_end(state);
  example::print_save_summary(manager->statistics());
  std::printf("trained to step %lld\n", (long long)state.step);
  std::printf("final_params_sha256=%s\n", example::params_sha256(*model).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach a pipe as they are printed
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_mlp: %s\n", e.what());
    return 1;
  }
}
