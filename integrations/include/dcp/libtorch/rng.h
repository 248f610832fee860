// The state of LibTorch's default random generators as a dcp::Stateful, so
// that dropout masks, random initialisation and anything else drawn from
// the global generators continue after a resume exactly as they would have.
//
//   dcp::StateDict sd{..., {"rng", std::make_shared<dcp::libtorch::RngState>()}};
//
// What is saved is the generators' state at the moment state_dict() is called
// (the start of dcp::save, or of dcp::AsyncSaver::save): save at a step
// boundary and a resumed run draws the same numbers as the uninterrupted one.
// Generators the program creates itself (at::make_generator) are not
// included; save those with a Stateful of your own.
#pragma once

#include "dcp/export.h"
#include "dcp/value.h"

namespace dcp {
namespace libtorch {

struct DCP_LIBTORCH_EXPORT RngStateOptions {
  // Include the default generator of every CUDA device when CUDA is
  // available (at::hasCUDA()). Default true. On a CPU-only build there are
  // none. The number of devices must be the same on load.
  bool cuda = true;

  // Ranks that each have their own generator state. With world_size > 1 each
  // state is saved as row `rank` of a ShardedTensor [world_size, state
  // bytes], so all ranks' states go into one checkpoint under one key (a
  // plain tensor saved by every rank would be written once, as if replicated).
  // A checkpoint saved at one world size then loads only at the same one:
  // at another, dcp::load reports the global shape mismatch of "<key>.cpu"
  // (there is no meaningful mapping of random streams between world sizes;
  // leave the RngState out of the state dict, or load non-strict, to resume
  // at another world size with fresh streams). Default 0 of 1: a plain tensor.
  int rank = 0;
  int world_size = 1;
};

// State dict layout:
//   "cpu":         uint8 tensor [N]  (CPUGeneratorImpl::get_state(): the
//                  mt19937 state and the cached normal samples; N = 5056 in
//                  LibTorch 1.13), or ShardedTensor [world_size, N], row rank
//   "cuda<i>":     uint8 tensor, device i's generator state (only with CUDA)
//
// load_state_dict() sets the generators' states (under each generator's
// mutex). A state of another size is a PlanMismatchError.
class DCP_LIBTORCH_EXPORT RngState : public Stateful {
 public:
  // Throws InvalidArgumentError for a rank outside [0, world_size).
  explicit RngState(RngStateOptions options = {});

  StateDict state_dict() override;
  void load_state_dict(const StateDict& state_dict) override;

 private:
  RngStateOptions options_;
};

}  // namespace libtorch
}  // namespace dcp
