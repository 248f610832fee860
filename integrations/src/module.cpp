#include "dcp/libtorch/module.h"

#include <torch/nn/module.h>

#include <set>

#include "dcp/error.h"
#include "dcp/metadata.h"
#include "tensor_util.h"

namespace dcp {
namespace libtorch {

using namespace internal;

NamedTensors named_tensors(const torch::nn::Module& module, bool buffers) {
  NamedTensors out;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    if (item.value().defined()) out.emplace_back(item.key(), item.value());
  if (buffers)
    for (const auto& item : module.named_buffers(/*recurse=*/true))
      if (item.value().defined()) out.emplace_back(item.key(), item.value());
  return out;
}

ModuleState::ModuleState(std::shared_ptr<torch::nn::Module> module, ModuleStateOptions options)
    : module_(std::move(module)), options_(std::move(options)) {
  if (!module_) throw InvalidArgumentError("ModuleState: the module is null");
}

// The aliasing constructor gives a pointer that owns nothing; it leaves the
// module's enable_shared_from_this alone.
ModuleState::ModuleState(torch::nn::Module& module, ModuleStateOptions options)
    : ModuleState(std::shared_ptr<torch::nn::Module>(std::shared_ptr<torch::nn::Module>(), &module),
                  std::move(options)) {}

StateDict ModuleState::state_dict() {
  const NamedTensors tensors = named_tensors(*module_, options_.buffers);
  StateDict sd;
  for (const auto& [name, t] : tensors) {
    auto spec = options_.sharded.find(name);
    if (spec == options_.sharded.end()) {
      sd.emplace(name, t);
      continue;
    }
    const ShardSpec& s = spec->second;
    if (s.global_size.size() != static_cast<size_t>(t.dim()) ||
        s.offsets.size() != static_cast<size_t>(t.dim()))
      throw InvalidArgumentError("ModuleState: sharded tensor '" + name + "' of shape " +
                                 shape_string(t.sizes()) + " has global size " +
                                 shape_string(s.global_size) + " and offsets " +
                                 shape_string(s.offsets) + " of other ranks");
    sd.emplace(name, as_piece(t, &s));
  }
  for (const auto& kv : options_.sharded) {
    if (!sd.count(kv.first))
      throw InvalidArgumentError("ModuleState: sharded tensor '" + kv.first +
                                 "' is not a parameter or buffer of the module");
  }
  return sd;
}

void ModuleState::load_state_dict(const StateDict& state_dict) {
  const NamedTensors tensors = named_tensors(*module_, options_.buffers);
  std::vector<std::string> problems;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // destination, source
  std::set<std::string> names;

  for (const auto& [name, dest] : tensors) {
    names.insert(name);
    auto it = state_dict.find(name);
    if (it == state_dict.end()) {
      if (options_.strict) problems.push_back("'" + name + "': missing from the state dict");
      continue;
    }
    auto spec = options_.sharded.find(name);
    std::string problem;
    const at::Tensor src = local_piece(
        it->second, spec == options_.sharded.end() ? nullptr : &spec->second, dest, name, problem);
    if (!src.defined()) {
      problems.push_back(problem);
      continue;
    }
    if (src.scalar_type() != dest.scalar_type() || !src.sizes().equals(dest.sizes())) {
      problems.push_back(
          "'" + name + "': " + (src.scalar_type() != dest.scalar_type() ? "dtype" : "shape") +
          " mismatch: state dict " + describe_tensor(src) + ", module " + describe_tensor(dest));
      continue;
    }
    if (!src.is_same(dest)) copies.emplace_back(dest, src);
  }
  if (options_.strict) {
    for (const auto& kv : state_dict)
      if (!names.count(kv.first))
        problems.push_back("'" + kv.first + "': not a parameter or buffer of the module");
  }
  if (!problems.empty()) throw PlanMismatchError(mismatch_message("ModuleState", problems));

  // Everything checked: now copy (dcp::load already wrote into the module's
  // own tensors, so this runs only for dicts that came from elsewhere).
  at::NoGradGuard no_grad;
  for (auto& [dest, src] : copies) dest.copy_(src);
}

}  // namespace libtorch
}  // namespace dcp
