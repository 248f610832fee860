// The key mapping of a load (LoadOptions::rename): checkpoint names onto the
// destination's, with exclude applied after it, in load and load_all, over
// dcp++'s own checkpoints (PyTorch's are in tests/interop).
#include <gtest/gtest.h>

#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

struct Saved {
  testing::TempDir dir;
  at::Tensor w = testing::make_tensor(at::kFloat, {3, 2}, 1);
  at::Tensor b = testing::make_tensor(at::kFloat, {2}, 2);
  std::string path() const { return dir.sub("ck"); }
  Saved() {
    save({{"module", Dict{{"fc1", Dict{{"weight", w}, {"bias", b}}}}}, {"step", 7}}, path());
  }
};

TEST(RenameTest, APrefixIsReplacedStrippedOrAdded) {
  Saved s;
  for (const auto& [rule, wkey] :
       std::vector<std::pair<KeyRename, std::string>>{{{"module.", "net."}, "net.fc1.weight"},
                                                      {{"module.", ""}, "fc1.weight"},
                                                      {{"", "run."}, "run.module.fc1.weight"}}) {
    StateDict dst;
    const std::string prefix = wkey.substr(0, wkey.size() - std::string("fc1.weight").size());
    dst[prefix + "fc1.weight"] = at::zeros({3, 2});
    dst[prefix + "fc1.bias"] = at::zeros({2});
    dst[rule.from.empty() ? "run.step" : "step"] = 0;
    LoadOptions lo;
    lo.checkpoint_id = s.path();
    lo.rename = {rule};
    const LoadResult r = load(dst, lo);
    EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty()) << wkey;
    EXPECT_TRUE(dst.at(wkey).tensor().equal(s.w)) << wkey;
    EXPECT_EQ(dst.at(rule.from.empty() ? "run.step" : "step").to_int(), 7) << wkey;
  }
}

TEST(RenameTest, ExcludeNamesDestinationKeysAfterTheMapping) {
  Saved s;
  StateDict dst{{"net", Dict{{"fc1", Dict{{"weight", at::zeros({3, 2})}}}}}, {"step", 0}};
  LoadOptions lo;
  lo.checkpoint_id = s.path();
  lo.rename = {{"module.", "net."}};
  lo.exclude = {"net.fc1.bias"};  // the destination's name; "module.fc1.bias" would not match
  const LoadResult r = load(dst, lo);
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  EXPECT_TRUE(dst.at("net").dict().at("fc1").dict().at("weight").tensor().equal(s.w));

  lo.exclude = {"module.fc1.bias"};
  try {
    load(dst, lo);
    FAIL() << "an exclude of a checkpoint name took effect";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'module.fc1.bias'"), std::string::npos) << e.what();
  }
}

TEST(RenameTest, LoadAllNestsRenamedKeysWhereThePrefixesFallOnDots) {
  Saved s;
  LoadOptions lo;
  lo.checkpoint_id = s.path();
  lo.rename = {{"module.fc1.", "net.layer_one."}, {"module.", "x_"}};
  const StateDict all = load_all(lo);
  ASSERT_TRUE(all.count("net")) << describe(Value(all));
  EXPECT_TRUE(all.at("net").dict().at("layer_one").dict().at("weight").tensor().equal(s.w));
  EXPECT_EQ(all.at("step").to_int(), 7);
}

TEST(RenameTest, TwoCheckpointKeysOntoOneNameIsAnError) {
  Saved s;
  StateDict dst{{"fc1.weight", at::zeros({3, 2})}};
  LoadOptions lo;
  lo.checkpoint_id = s.path();
  lo.rename = {{"module.fc1.weight", "w"}, {"module.fc1.bias", "w"}};
  try {
    load(dst, lo);
    FAIL() << "two keys mapped onto one name";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("the same name 'w'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(renamed_key("module.fc1.weight", {{"module.", ""}, {"", "m."}}), "fc1.weight");
  EXPECT_EQ(renamed_key("step", {{"module.", ""}, {"", "m."}}), "m.step");
  EXPECT_EQ(renamed_key("step", {}), "step");
}

}  // namespace
}  // namespace dcp
