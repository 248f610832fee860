// All LibTorch adapters of dcp::torch (namespace dcp::lt): a module, an
// optimizer and its LR scheduler, a resumable sampler, the RNG state and
// training progress, each a dcp::Stateful to put into a state dict.
//
//   #include <dcp/torch/adapters.h>   // target dcp::torch
//
//   dcp::StateDict sd{
//       {"model", std::make_shared<dcp::lt::ModuleState>(model)},
//       {"optim", std::make_shared<dcp::lt::OptimizerState>(optim, *model)},
//       {"sched", std::make_shared<dcp::lt::LRSchedulerState>(sched)},
//       {"sampler", sampler},    // std::shared_ptr<dcp::lt::ResumableSampler>
//       {"rng", std::make_shared<dcp::lt::RngState>()},
//       {"progress", progress}}; // std::shared_ptr<dcp::lt::Progress>
//   dcp::save(sd, dir);   // or a CheckpointManager
//   dcp::load(sd, dir);   // everything in place, training continues
//
// See docs/INTEGRATIONS.md for the layouts and the guarantees.
#pragma once

#include "dcp/torch/data.h"
#include "dcp/torch/module.h"
#include "dcp/torch/optimizer.h"
#include "dcp/torch/progress.h"
#include "dcp/torch/rng.h"
