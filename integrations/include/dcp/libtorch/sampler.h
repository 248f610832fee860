// A resumable sampler: which samples each rank trains on, batch by batch,
// epoch by epoch, with its position as a dcp::Stateful so that a resumed run
// sees exactly the batches the uninterrupted run would have.
//
//   dcp::libtorch::SamplerOptions so;
//   so.dataset_size = dataset.size().value();
//   so.batch_size = 32;  so.seed = 1234;
//   so.rank = ctx->rank();  so.world_size = ctx->world_size();
//   auto sampler = std::make_shared<dcp::libtorch::ResumableSampler>(so);
//   dcp::StateDict sd{..., {"sampler", sampler}};   // restored by dcp::load
//   for (; sampler->epoch() < epochs; sampler->next_epoch())
//     while (auto indices = sampler->next_batch()) {
//       auto batch = dataset.get_batch(*indices);  ... train, save ...
//     }
//
// Order: in each epoch the samples are visited in a permutation that depends
// only on (seed, epoch) -- Fisher-Yates over std::mt19937_64, the same on
// every platform and LibTorch version, and independent of the global RNG --
// or in order when shuffle is off. The position is the number of samples of
// the epoch that all ranks together have taken. A batch of the whole world
// (a "global batch") is the next world_size * batch_size samples of the
// permutation; rank r takes the r-th contiguous slice of it. The last global
// batch of an epoch may be shorter: it is split as evenly as possible (the
// first ranks get one more), so a rank may get fewer than batch_size samples
// or none (an empty batch, not the end of the epoch: every rank takes the
// same number of steps). With drop_last a short last global batch is skipped.
//
// World size changes: the position is kept in global samples and the rest of
// the epoch is re-split among the ranks there are now. A checkpoint saved at
// 4 ranks and resumed at 2 (or 1, or 8) continues at the same place of the
// same permutation: within the epoch no sample is skipped or seen twice, and
// later epochs use the same permutations. The batches differ from those an
// uninterrupted 4-rank run would have had (fewer, larger global batches), as
// they must. The batch size may change on resume the same way.
//
// Not a torch::data::samplers::Sampler: LibTorch's data loader calls next()
// ahead of the training loop (its workers prefetch batches), so a sampler
// inside it is ahead of what was trained on and cannot say where to resume.
// Drive the dataset from next_batch() instead, as above.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "dcp/export.h"
#include "dcp/value.h"

namespace dcp {
namespace libtorch {

struct DCP_LIBTORCH_EXPORT SamplerOptions {
  // Samples in the dataset (indices 0 .. dataset_size-1). Required, > 0.
  int64_t dataset_size = 0;
  // Samples per rank per batch. Default 1.
  int64_t batch_size = 1;
  // Visit samples in a new random order each epoch (true, default) or in
  // index order.
  bool shuffle = true;
  // Seed of the per-epoch permutations; every rank must use the same.
  uint64_t seed = 0;
  // Skip the last global batch of an epoch when it is shorter than
  // world_size * batch_size. Default false.
  bool drop_last = false;
  // This rank and the number of ranks sharing the dataset. Default 0 of 1.
  int rank = 0;
  int world_size = 1;
};

// State dict layout (plain values; the same on every rank, so a multi-rank
// save writes it once):
//   "epoch": int, "position": int (samples of the epoch taken by all ranks),
//   "seed": int (the uint64 seed's bits), "shuffle": bool,
//   "dataset_size": int
// load_state_dict() restores epoch, position, seed and shuffle; a different
// dataset_size, or a position beyond it, is a PlanMismatchError (the
// permutation would be another one). Batch size, drop_last, rank and world
// size are this run's options and are not restored.
//
// Not thread-safe.
class DCP_LIBTORCH_EXPORT ResumableSampler : public Stateful {
 public:
  // Throws InvalidArgumentError for a dataset_size or batch_size below 1 or
  // a rank outside [0, world_size).
  explicit ResumableSampler(SamplerOptions options);

  // This rank's sample indices of the next batch of the current epoch, and
  // advances the position by one global batch; nullopt when the epoch has no
  // batch left (the position stays; call next_epoch()). The vector may be
  // empty at the end of an epoch (see above).
  std::optional<std::vector<int64_t>> next_batch();

  // Starts the next epoch: epoch + 1, position 0.
  void next_epoch();
  // Starts `epoch` at position 0.
  void set_epoch(int64_t epoch);

  int64_t epoch() const { return epoch_; }
  // Samples of this epoch taken so far by all ranks together.
  int64_t position() const { return position_; }
  // Global batches left in this epoch (next_batch() calls that return one).
  int64_t batches_left() const;
  // Global batches in a whole epoch.
  int64_t batches_per_epoch() const;
  const SamplerOptions& options() const { return options_; }

  // The visiting order of `epoch` over the whole dataset (a permutation, or
  // 0..n-1 without shuffle), as next_batch() uses it.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  StateDict state_dict() override;
  void load_state_dict(const StateDict& state_dict) override;

 private:
  int64_t global_batch() const;
  const std::vector<int64_t>& order();

  SamplerOptions options_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  // The permutation of order_epoch_, computed on first use in an epoch.
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
};

}  // namespace libtorch
}  // namespace dcp
