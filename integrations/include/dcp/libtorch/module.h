// A torch::nn::Module as a dcp::Stateful: its parameters and buffers by
// their dotted names, loaded in place.
//
//   auto model = std::make_shared<Net>();
//   torch::optim::Adam optim(model->parameters());
//   dcp::StateDict sd{{"model", std::make_shared<dcp::libtorch::ModuleState>(model)}};
//   dcp::load(sd, "/ckpt/step_100");  // fills model's own tensors; optim still points at them
//
// Namespace dcp::libtorch ("LibTorch"), library dcp::libtorch. The namespace is not
// dcp::libtorch: that would shadow ::torch for all code inside namespace dcp.
//
// This header does not include the LibTorch C++ API (<torch/torch.h> costs
// ~20 s per translation unit): it forward-declares torch::nn::Module.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dcp/export.h"
#include "dcp/value.h"

namespace torch {
namespace nn {
class Module;
}  // namespace nn
}  // namespace torch

namespace dcp {
namespace libtorch {

// Tensors by name, in a fixed order.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The module's parameters (recursively, dotted names as named_parameters()
// gives them: "fc1.weight"), then its buffers when `buffers` is set.
// Undefined tensors (a Linear without bias registers none) are left out.
DCP_LIBTORCH_EXPORT NamedTensors named_tensors(const torch::nn::Module& module,
                                               bool buffers = true);

// Which piece of a global tensor a local parameter holds: the parameter
// tensor of this rank is the box of its own shape that starts at `offsets`
// in a tensor of `global_size`.
struct DCP_LIBTORCH_EXPORT ShardSpec {
  std::vector<int64_t> global_size;
  std::vector<int64_t> offsets;
};

struct DCP_LIBTORCH_EXPORT ModuleStateOptions {
  // Include the module's buffers (BatchNorm running statistics, ...) as well
  // as its parameters. Default true.
  bool buffers = true;

  // Parameters (or buffers) saved as a dcp::ShardedTensor: name -> the piece
  // this rank's tensor is. Every rank lists the same names, each with its
  // own offsets; the pieces of all ranks must tile the global tensor (checked
  // at save). A checkpoint loads at another world size or another split:
  // each rank reads the overlap of its piece with the saved ones. Default
  // empty: every tensor is saved whole (and a tensor that every rank holds
  // is written once).
  std::map<std::string, ShardSpec> sharded;

  // load_state_dict(): a name the module has and the given state dict lacks,
  // or the reverse, is an error (true, default); false ignores both.
  // dcp::load's own strictness (LoadOptions::strict) is separate.
  bool strict = true;
};

// Contract:
// - state_dict() returns the module's own tensors (aliases, not copies), or
//   ShardedTensors whose single local shard is the module's tensor. dcp::save
//   reads them; dcp::load writes the saved values into them in place, so the
//   tensors keep their identity (same TensorImpl, same data_ptr) and an
//   optimizer built on the module's parameters stays bound to them.
// - load_state_dict(sd) checks every tensor against the module's: the same
//   name set (when strict), dtype and shape (for sharded names the global
//   shape), and throws PlanMismatchError naming the key otherwise. A tensor
//   of `sd` that is not the module's own (a dict from dcp::load_all, say) is
//   copied into the module's tensor; a full tensor given for a sharded name
//   is sliced at this rank's offsets.
// - Names are read from the module at each call, so parameters registered
//   after construction are included. The module must outlive this object
//   when constructed from a reference.
// - Not thread-safe: do not train while state_dict() or a load runs (an
//   async save copies the tensors before it returns).
class DCP_LIBTORCH_EXPORT ModuleState : public Stateful {
 public:
  // Shares ownership of the module.
  explicit ModuleState(std::shared_ptr<torch::nn::Module> module, ModuleStateOptions options = {});
  // Refers to the module without owning it.
  explicit ModuleState(torch::nn::Module& module, ModuleStateOptions options = {});

  StateDict state_dict() override;
  void load_state_dict(const StateDict& state_dict) override;

  torch::nn::Module& module() const { return *module_; }
  const ModuleStateOptions& options() const { return options_; }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  ModuleStateOptions options_;
};

}  // namespace libtorch
}  // namespace dcp
