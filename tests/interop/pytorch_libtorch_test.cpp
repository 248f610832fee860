// Python weights into LibTorch objects: a torch.save(model.state_dict())
// file into the ModuleState of the equivalent LibTorch module, through
// dcp::load with a key mapping and through the CheckpointManager's warm
// start (resume.from, resume.rename in YAML).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/layouts.h"
#include "common/python_fixtures.h"
#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/libtorch/module.h"
#include "dcp/manager/manager.h"
#include "dcp/manager/options.h"

namespace dcp {
namespace {

// make_fixtures.py's module (NET_CPP): the same names, the same order.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(4, 8))),
        bn(register_module("bn", torch::nn::BatchNorm1d(8))),
        fc2(register_module("fc2", torch::nn::Linear(8, 3))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(bn(fc1(x)))); }
  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Net);

const testing::FixtureManifest& model_fixture() {
  static const testing::FixtureManifest m =
      testing::load_fixture_manifest(testing::shared_python_fixture("torchsave_model"));
  return m;
}

// Every parameter and buffer of `net` is the fixture's.
void expect_python_weights(Net& net) {
  const auto& ck = model_fixture().main();
  size_t n = 0;
  for (const auto& p : net->named_parameters()) {
    EXPECT_TRUE(testing::same_bits(p.value(), ck.leaf(p.key()).tensor)) << p.key();
    ++n;
  }
  for (const auto& b : net->named_buffers()) {
    EXPECT_TRUE(testing::same_bits(b.value(), ck.leaf(b.key()).tensor)) << b.key();
    ++n;
  }
  EXPECT_EQ(n, ck.leaves.size());
}

TEST(PyTorchIntoLibTorch, ATorchSaveStateDictLoadsIntoTheModuleAdapter) {
  Net net;
  StateDict sd{{"model", std::make_shared<libtorch::ModuleState>(*net)}};
  LoadOptions lo;
  lo.checkpoint_id = model_fixture().main().path;
  lo.rename = {{"", "model."}};
  const LoadResult r = load(sd, lo);
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  expect_python_weights(net);
  // The module computes what Python's did: eval mode uses the running stats.
  net->eval();
  EXPECT_EQ(net->forward(torch::ones({2, 4})).sizes(), (std::vector<int64_t>{2, 3}));
}

TEST(PyTorchIntoLibTorch, WithoutTheMappingTheKeysDifferAndTheErrorSaysWhich) {
  Net net;
  StateDict sd{{"model", std::make_shared<libtorch::ModuleState>(*net)}};
  try {
    load(sd, model_fixture().main().path);
    FAIL() << "loaded without a mapping";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'model.fc1.weight'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'fc1.weight'"), std::string::npos) << e.what();
  }
}

TEST(PyTorchIntoLibTorch, TheManagerWarmStartsFromATorchSaveFileWithARenameFromYaml) {
  testing::TempDir d;
  const std::string yaml =
      "checkpoint:\n  dir: " + d.sub("run") +
      "\n  async: {enabled: false}\n  resume:\n    from: " + model_fixture().main().path +
      "\n    rename: [{from: \"\", to: \"model.\"}]\n";
  manager::CheckpointManagerOptions o = manager::parse_manager_options(yaml, "test.yaml");
  ASSERT_EQ(o.resume.rename.size(), 1u);
  Net net;
  manager::CheckpointManager m(o);
  m.register_stateful("model", std::make_shared<libtorch::ModuleState>(*net));
  EXPECT_EQ(m.resume(), 0);  // a warm start: the run begins at step 0
  expect_python_weights(net);
  // The run's own checkpoints then load without the mapping.
  m.save(5);
  m.close();
  Net again;
  manager::CheckpointManager m2(o);
  m2.register_stateful("model", std::make_shared<libtorch::ModuleState>(*again));
  EXPECT_EQ(m2.resume(), 5);
  expect_python_weights(again);
}

TEST(PyTorchIntoLibTorch, RenameRulesThatCannotApplyAreConfigErrors) {
  const std::string base = "checkpoint:\n  resume:\n    rename: ";
  for (const char* rules :
       {"[{from: \"a.\", to: \"a.\"}]", "[{from: \"\", to: \"m.\"}, {from: \"x.\", to: \"y.\"}]",
        "[{from: \"x.\"}]", "[{from: \"x.\", to: \"y.\", too: 1}]"}) {
    try {
      manager::parse_manager_options(base + rules + "\n", "test.yaml");
      ADD_FAILURE() << rules << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("rename"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace dcp
