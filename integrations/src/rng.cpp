#include "dcp/libtorch/rng.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

#include <mutex>

#include "dcp/error.h"
#include "tensor_util.h"

namespace dcp {
namespace libtorch {

using namespace internal;

namespace {

at::Tensor get_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

// Sets `gen` from a loaded state; `key` names it in errors.
void set_state(at::Generator gen, at::Tensor state, const std::string& key) {
  const at::Tensor current = get_state(gen);
  if (state.scalar_type() != at::kByte || state.numel() != current.numel())
    throw PlanMismatchError("RngState: '" + key + "': the state is " + describe_tensor(state) +
                            ", the generator's " + describe_tensor(current));
  state = state.reshape({-1}).contiguous();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

std::vector<at::Generator> cuda_generators() {
  std::vector<at::Generator> out;
  if (!at::hasCUDA()) return out;
  for (size_t i = 0; i < at::getNumGPUs(); ++i)
    out.push_back(at::globalContext().defaultGenerator(
        at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i))));
  return out;
}

}  // namespace

RngState::RngState(RngStateOptions options) : options_(options) {
  if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size)
    throw InvalidArgumentError("RngState: rank " + std::to_string(options_.rank) +
                               " is not in a world of " + std::to_string(options_.world_size));
}

StateDict RngState::state_dict() {
  StateDict sd;
  at::Tensor cpu = get_state(at::detail::getDefaultCPUGenerator());
  if (options_.world_size > 1) {
    sd.emplace("cpu", ShardedTensor{{options_.world_size, cpu.numel()},
                                    {Shard{cpu.unsqueeze(0), {options_.rank, 0}}}});
  } else {
    sd.emplace("cpu", cpu);
  }
  if (options_.cuda) {
    const auto gens = cuda_generators();
    for (size_t i = 0; i < gens.size(); ++i)
      sd.emplace("cuda" + std::to_string(i), get_state(gens[i]));
  }
  return sd;
}

void RngState::load_state_dict(const StateDict& sd) {
  auto cpu = sd.find("cpu");
  if (cpu == sd.end()) throw PlanMismatchError("RngState: no 'cpu' state");
  at::Tensor state;
  if (cpu->second.is_tensor()) {
    state = cpu->second.tensor();
  } else if (cpu->second.is_sharded()) {
    const std::vector<int64_t> want{options_.rank, 0};
    for (const Shard& s : cpu->second.sharded().local_shards)
      if (s.offsets == want) state = s.tensor;
    if (!state.defined())
      throw PlanMismatchError("RngState: 'cpu' has no row for rank " +
                              std::to_string(options_.rank));
  } else {
    throw PlanMismatchError("RngState: 'cpu' is a " + std::string(cpu->second.kind_name()) +
                            ", not a tensor");
  }
  // Check every state before setting any.
  std::vector<std::pair<at::Generator, at::Tensor>> todo;
  todo.emplace_back(at::detail::getDefaultCPUGenerator(), state);
  if (options_.cuda) {
    const auto gens = cuda_generators();
    for (size_t i = 0; i < gens.size(); ++i) {
      const std::string key = "cuda" + std::to_string(i);
      auto it = sd.find(key);
      if (it == sd.end() || !it->second.is_tensor())
        throw PlanMismatchError("RngState: no tensor '" + key + "'");
      todo.emplace_back(gens[i], it->second.tensor());
    }
  }
  for (size_t i = 0; i < todo.size(); ++i)
    set_state(todo[i].first, todo[i].second, i == 0 ? "cpu" : "cuda" + std::to_string(i - 1));
}

}  // namespace libtorch
}  // namespace dcp
