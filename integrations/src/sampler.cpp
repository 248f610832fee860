#include <algorithm>
#include <numeric>
#include <random>

#include "dcp/error.h"
#include "dcp/libtorch/sampler.h"

namespace dcp {
namespace libtorch {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A uniform integer in [0, bound) from `gen`, by rejection: the standard's
// uniform_int_distribution is implementation-defined, this is not.
uint64_t uniform_below(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do {
    x = gen();
  } while (x >= limit);
  return x % bound;
}

const Value& field(const StateDict& sd, const char* key) {
  auto it = sd.find(key);
  if (it == sd.end()) throw PlanMismatchError(std::string("ResumableSampler: no '") + key + "'");
  return it->second;
}

int64_t int_field(const StateDict& sd, const char* key) {
  const Value& v = field(sd, key);
  if (v.kind() != Value::Kind::kInt)
    throw PlanMismatchError(std::string("ResumableSampler: '") + key + "' is a " + v.kind_name() +
                            ", not an int");
  return v.to_int();
}

}  // namespace

ResumableSampler::ResumableSampler(SamplerOptions options) : options_(options) {
  if (options_.dataset_size < 1)
    throw InvalidArgumentError("ResumableSampler: dataset_size " +
                               std::to_string(options_.dataset_size) + " is below 1");
  if (options_.batch_size < 1)
    throw InvalidArgumentError("ResumableSampler: batch_size " +
                               std::to_string(options_.batch_size) + " is below 1");
  if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size)
    throw InvalidArgumentError("ResumableSampler: rank " + std::to_string(options_.rank) +
                               " is not in a world of " + std::to_string(options_.world_size));
}

int64_t ResumableSampler::global_batch() const { return options_.batch_size * options_.world_size; }

std::vector<int64_t> ResumableSampler::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(options_.dataset_size));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!options_.shuffle) return order;
  // Fisher-Yates; the stream depends on (seed, epoch) only.
  std::mt19937_64 gen(splitmix64(options_.seed ^ splitmix64(static_cast<uint64_t>(epoch))));
  for (size_t i = order.size() - 1; i > 0; --i)
    std::swap(order[i], order[uniform_below(gen, i + 1)]);
  return order;
}

const std::vector<int64_t>& ResumableSampler::order() {
  if (order_epoch_ != epoch_) {
    order_ = epoch_order(epoch_);
    order_epoch_ = epoch_;
  }
  return order_;
}

int64_t ResumableSampler::batches_left() const {
  const int64_t left = options_.dataset_size - position_;
  if (left <= 0) return 0;
  const int64_t g = global_batch();
  return options_.drop_last ? left / g : (left + g - 1) / g;
}

int64_t ResumableSampler::batches_per_epoch() const {
  const int64_t g = global_batch();
  return options_.drop_last ? options_.dataset_size / g : (options_.dataset_size + g - 1) / g;
}

std::optional<std::vector<int64_t>> ResumableSampler::next_batch() {
  if (batches_left() == 0) return std::nullopt;
  const int64_t n = std::min(global_batch(), options_.dataset_size - position_);
  // Split the n samples of this global batch into world_size contiguous
  // slices, the first n % world_size one sample longer: for a full batch,
  // batch_size each.
  const int64_t w = options_.world_size, r = options_.rank;
  const int64_t base = n / w, extra = n % w;
  const int64_t begin = position_ + r * base + std::min(r, extra);
  const int64_t count = base + (r < extra ? 1 : 0);
  const auto& ord = order();
  std::vector<int64_t> out(ord.begin() + begin, ord.begin() + begin + count);
  position_ += n;
  return out;
}

void ResumableSampler::next_epoch() { set_epoch(epoch_ + 1); }

void ResumableSampler::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
}

StateDict ResumableSampler::state_dict() {
  return {{"epoch", epoch_},
          {"position", position_},
          {"seed", static_cast<int64_t>(options_.seed)},
          {"shuffle", options_.shuffle},
          {"dataset_size", options_.dataset_size}};
}

void ResumableSampler::load_state_dict(const StateDict& sd) {
  const int64_t size = int_field(sd, "dataset_size");
  if (size != options_.dataset_size)
    throw PlanMismatchError("ResumableSampler: the checkpoint's dataset has " +
                            std::to_string(size) + " samples, this sampler's " +
                            std::to_string(options_.dataset_size));
  const int64_t epoch = int_field(sd, "epoch");
  const int64_t position = int_field(sd, "position");
  if (epoch < 0 || position < 0 || position > size)
    throw PlanMismatchError("ResumableSampler: epoch " + std::to_string(epoch) + " position " +
                            std::to_string(position) + " is not a place in a dataset of " +
                            std::to_string(size));
  const Value& shuffle = field(sd, "shuffle");
  if (shuffle.kind() != Value::Kind::kBool)
    throw PlanMismatchError("ResumableSampler: 'shuffle' is not a bool");
  options_.seed = static_cast<uint64_t>(int_field(sd, "seed"));
  options_.shuffle = shuffle.to_bool();
  epoch_ = epoch;
  position_ = position;
  order_epoch_ = -1;  // seed or shuffle may have changed
}

}  // namespace libtorch
}  // namespace dcp
