#include <gtest/gtest.h>

#include "common/test_util.h"

namespace dcp {
namespace {

TEST(FlattenTest, NestedDictsAndListsWithTensors) {
  at::Tensor a = at::ones({2}), b = at::zeros({3});
  StateDict sd{
      {"model", Dict{{"layer1", Dict{{"weight", a}}}, {"bias", b}}},
      {"opt", Dict{{"groups", List{Dict{{"lr", 0.1}}, Dict{{"lr", 0.2}}}}, {"state", List{a, b}}}},
      {"step", 7},
      {"empty", Dict{}}};
  auto [flat, mapping] = flatten_state_dict(sd);
  EXPECT_TRUE(flat.count("model.layer1.weight"));
  EXPECT_TRUE(flat.count("model.bias"));
  EXPECT_TRUE(flat.count("opt.state.0"));
  EXPECT_TRUE(flat.count("opt.state.1"));
  // A list of plain values is one leaf.
  EXPECT_TRUE(flat.count("opt.groups"));
  EXPECT_TRUE(flat.count("step"));
  EXPECT_TRUE(flat.count("empty"));
  StateDict back = unflatten_state_dict(flat, mapping);
  EXPECT_TRUE(Value(back).equals(Value(sd)));
  // The mapping survives its encoding.
  EXPECT_EQ(decode_flatten_mapping(encode_flatten_mapping(mapping)), mapping);
}

TEST(FlattenTest, DottedKeysKeepTheirPath) {
  StateDict sd{{"a.b", Dict{{"c", at::ones({1})}}}, {"x", Dict{{"y.z", 1}}}};
  auto [flat, mapping] = flatten_state_dict(sd);
  StateDict back = unflatten_state_dict(flat, mapping);
  EXPECT_TRUE(Value(back).equals(Value(sd)));
}

TEST(FlattenTest, CollisionIsAnError) {
  StateDict sd{{"a.b", 1}, {"a", Dict{{"b", 2}}}};
  try {
    flatten_state_dict(sd);
    FAIL();
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("'a.b'"), std::string::npos) << e.what();
  }
}

TEST(PlainValueTest, RoundTrip) {
  List values{Value(),
              true,
              false,
              0,
              -1,
              int64_t{1} << 62,
              3.25,
              -0.0,
              "",
              "text",
              Bytes{std::string("\0\xff", 2)},
              List{1, List{2, "x"}},
              Dict{{"k", Dict{{"n", 1.5}}}, {"l", List{}}}};
  for (const auto& v : values) {
    Bytes b = encode_plain_value(v);
    EXPECT_TRUE(decode_plain_value(b.data, "v").equals(v)) << describe(v);
  }
  EXPECT_THROW(encode_plain_value(Value(at::ones({1}))), InvalidArgumentError);
  EXPECT_THROW(decode_plain_value("\xd1\x09", "v"), CorruptionError);
  EXPECT_THROW(decode_plain_value("\xd1\x05\x7f", "v"), CorruptionError);
}

}  // namespace
}  // namespace dcp
