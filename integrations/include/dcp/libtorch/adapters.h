// All LibTorch adapters of dcp::libtorch (namespace dcp::libtorch): a module, an
// optimizer and its LR scheduler, a resumable sampler, the RNG state and
// training progress, each a dcp::Stateful to put into a state dict.
//
//   #include <dcp/libtorch/adapters.h>   // target dcp::libtorch
//
//   dcp::StateDict sd{
//       {"model", std::make_shared<dcp::libtorch::ModuleState>(model)},
//       {"optim", std::make_shared<dcp::libtorch::OptimizerState>(optim, *model)},
//       {"sched", std::make_shared<dcp::libtorch::LRSchedulerState>(sched)},
//       {"sampler", sampler},    // std::shared_ptr<dcp::libtorch::ResumableSampler>
//       {"rng", std::make_shared<dcp::libtorch::RngState>()},
//       {"progress", progress}}; // std::shared_ptr<dcp::libtorch::Progress>
//   dcp::save(sd, dir);   // or a CheckpointManager
//   dcp::load(sd, dir);   // everything in place, training continues
//
// See docs/INTEGRATIONS.md for the layouts and the guarantees.
#pragma once

#include "dcp/libtorch/module.h"
#include "dcp/libtorch/optimizer.h"
#include "dcp/libtorch/progress.h"
#include "dcp/libtorch/rng.h"
#include "dcp/libtorch/sampler.h"
